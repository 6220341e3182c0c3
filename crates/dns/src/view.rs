//! The name table of one network, built from a [`NetworkView`].
//!
//! Two hash maps: lowercase endpoint name → addresses, and address → names
//! (for PTR). Building is linear in the view and cheap per endpoint (one
//! lowercase copy of the name, no DNS name objects), because it runs on
//! every attach/detach. The work that is only needed by some queries is
//! done at query time: stripping the suffix off the question, parsing a
//! reverse name back to an address, and building PTR targets.
//!
//! The table is immutable once built; a change of the view builds a new one
//! that replaces it atomically (see `DnsService::update_view`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_server::proto::rr::{LowerName, Name};
use ipnet::IpNet;
use tracing::warn;

use crate::{DnsError, NetworkView};

/// The addresses of one local name.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Entry {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// A local name found by [`NameTable::lookup`].
#[derive(Debug, PartialEq)]
pub(crate) enum Local<'t> {
    /// An endpoint name (bare or with the suffix).
    Name(&'t Entry),
    /// The reverse name of a local address, with the names pointing at it.
    Reverse(Vec<Name>),
}

#[derive(Debug, Default)]
pub(crate) struct NameTable {
    /// Lowercase names without a trailing dot.
    names: HashMap<String, Entry>,
    /// Every local address and the (lowercase) names that have it.
    reverse: HashMap<IpAddr, Vec<String>>,
    /// Lowercase, without leading or trailing dots.
    suffix: Option<String>,
    /// Shared with the cache key, so networks with the same forwarders share
    /// cached answers and networks with different ones never do.
    pub upstreams: Arc<[SocketAddr]>,
    /// Source prefixes served (see [`NetworkView::clients`]).
    clients: Vec<IpNet>,
}

impl NameTable {
    /// Builds the table. Only an invalid suffix is an error (it concerns the
    /// whole network); a record whose name is not a usable DNS name (a label
    /// over 63 bytes, say a 64-character container id) is skipped with a
    /// warning, so that one odd endpoint cannot take name resolution away
    /// from all the others.
    pub fn build(net_id: &str, view: &NetworkView) -> Result<NameTable, DnsError> {
        let suffix = match view.suffix.as_deref().map(|s| s.trim_matches('.')) {
            None | Some("") => None,
            Some(s) => {
                check_name(s).map_err(|reason| DnsError::InvalidSuffix {
                    net_id: net_id.into(),
                    suffix: s.into(),
                    reason: reason.into(),
                })?;
                Some(s.to_ascii_lowercase())
            }
        };

        let mut names: HashMap<String, Entry> = HashMap::with_capacity(view.records.len());
        let mut reverse: HashMap<IpAddr, Vec<String>> =
            HashMap::with_capacity(view.records.len() * 2);
        for record in &view.records {
            let name = record.name.strip_suffix('.').unwrap_or(&record.name);
            if let Err(reason) = check_name(name) {
                warn!(net_id, name = %record.name, reason, "DNS: skipping an endpoint name that is not a usable DNS name");
                continue;
            }
            let name = name.to_ascii_lowercase();
            for addr in &record.addrs {
                push_unique(reverse.entry(*addr).or_default(), &name);
            }
            let entry = names.entry(name).or_default();
            for addr in &record.addrs {
                match addr {
                    IpAddr::V4(a) => push_unique(&mut entry.v4, a),
                    IpAddr::V6(a) => push_unique(&mut entry.v6, a),
                }
            }
        }

        Ok(NameTable {
            names,
            reverse,
            suffix,
            upstreams: view.upstreams.clone().into(),
            clients: view.clients.clone(),
        })
    }

    /// Whether a query from `src` is served: its source lies in one of the
    /// network's subnets. (IPv4-mapped sources count as IPv4.)
    pub fn serves(&self, src: IpAddr) -> bool {
        let src = src.to_canonical();
        self.clients.iter().any(|net| net.contains(&src))
    }

    /// The local data for a query name, if the name is local. `LowerName` is
    /// hickory's lowercased name, so comparisons here are case-insensitive.
    pub fn lookup(&self, qname: &LowerName) -> Option<Local<'_>> {
        let text = qname.to_ascii();
        let text = text.strip_suffix('.').unwrap_or(&text);
        if text.ends_with(".in-addr.arpa") || text.ends_with(".ip6.arpa") {
            return self.lookup_reverse(qname).map(Local::Reverse);
        }
        if let Some(entry) = self.names.get(text) {
            return Some(Local::Name(entry));
        }
        let bare = text
            .strip_suffix(self.suffix.as_deref()?)?
            .strip_suffix('.')?;
        self.names.get(bare).map(Local::Name)
    }

    fn lookup_reverse(&self, qname: &Name) -> Option<Vec<Name>> {
        let net = qname.parse_arpa_name().ok()?;
        let addr = net.addr();
        // Only a whole address, and only in its canonical spelling
        // (hickory's parser would also take "010" for an octet).
        if net.prefix_len() != net.max_prefix_len() || reverse_name(addr) != *qname {
            return None;
        }
        let names = self.reverse.get(&addr)?;
        // With a suffix, reverse lookups return the qualified name: it is the
        // one that resolves from anywhere the suffix is searched.
        let targets = names.iter().filter_map(|name| {
            let fqdn = match &self.suffix {
                Some(suffix) => format!("{name}.{suffix}."),
                None => format!("{name}."),
            };
            Name::from_ascii(fqdn).ok()
        });
        Some(targets.collect())
    }

    /// Names this network could own later: single labels and names under
    /// its suffix. A negative upstream answer for such a name must not be
    /// cached by clients, or a container started a moment later would not
    /// resolve until the negative TTL runs out.
    pub fn could_become_local(&self, qname: &LowerName) -> bool {
        let text = qname.to_ascii();
        let text = text.strip_suffix('.').unwrap_or(&text);
        !text.contains('.')
            || self
                .suffix
                .as_deref()
                .is_some_and(|s| text.strip_suffix(s).is_some_and(|rest| rest.ends_with('.')))
    }
}

/// Accepts what hostnames and container names are made of: labels of 1 to
/// 63 letters, digits, '-' or '_', at most 253 bytes in all. Anything else
/// would need escaping in DNS presentation form and could never be matched
/// reliably.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > 253 {
        return Err("the name is longer than 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("the name has an empty label (two dots in a row)");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' are allowed in a label");
        }
    }
    Ok(())
}

/// The reverse-lookup name of an address: `d.c.b.a.in-addr.arpa.` or the 32
/// nibbles of an IPv6 address under `ip6.arpa.` (hickory builds both).
fn reverse_name(addr: IpAddr) -> Name {
    match addr {
        IpAddr::V4(a) => Name::from(a),
        IpAddr::V6(a) => Name::from(a),
    }
}

fn push_unique<T: PartialEq + Clone>(list: &mut Vec<T>, item: &T) {
    if !list.contains(item) {
        list.push(item.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    fn q(s: &str) -> LowerName {
        LowerName::from(Name::from_ascii(s).unwrap())
    }

    fn view(suffix: Option<&str>, records: &[(&str, &[&str])]) -> NetworkView {
        NetworkView {
            suffix: suffix.map(String::from),
            records: records
                .iter()
                .map(|(n, addrs)| Record {
                    name: n.to_string(),
                    addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                })
                .collect(),
            upstreams: vec![],
            clients: vec![],
        }
    }

    fn addrs_of<'t>(t: &'t NameTable, name: &str) -> Option<&'t Entry> {
        match t.lookup(&q(name)) {
            Some(Local::Name(e)) => Some(e),
            Some(other) => panic!("{name}: {other:?}"),
            None => None,
        }
    }

    fn ptr_of(t: &NameTable, name: &str) -> Option<Vec<String>> {
        match t.lookup(&q(name)) {
            Some(Local::Reverse(names)) => Some(names.iter().map(|n| n.to_ascii()).collect()),
            Some(other) => panic!("{name}: {other:?}"),
            None => None,
        }
    }

    #[test]
    fn names_resolve_bare_and_with_suffix_in_any_case() {
        let t = NameTable::build(
            "n",
            &view(Some(".Corp.Example."), &[("Web", &["10.0.0.2", "fd00::2"])]),
        )
        .unwrap();
        for name in ["web.", "WEB.", "web.corp.example.", "Web.CORP.example."] {
            let e = addrs_of(&t, name).unwrap_or_else(|| panic!("{name} should be local"));
            assert_eq!(e.v4, vec!["10.0.0.2".parse::<Ipv4Addr>().unwrap()]);
            assert_eq!(e.v6, vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]);
        }
        for name in [
            "web.other.example.",
            "corp.example.",
            "webcorp.example.",
            "x.web.corp.example.",
        ] {
            assert!(t.lookup(&q(name)).is_none(), "{name}");
        }
    }

    #[test]
    fn aliases_merge_and_reverse_names_list_every_name() {
        let records: &[(&str, &[&str])] = &[
            ("db", &["10.0.0.3"]),
            ("db", &["10.0.0.4"]),
            ("postgres", &["10.0.0.3"]),
            ("db", &["10.0.0.3"]),
        ];
        let t = NameTable::build("n", &view(None, records)).unwrap();
        assert_eq!(
            addrs_of(&t, "db.").unwrap().v4.len(),
            2,
            "duplicates removed, both addresses kept"
        );
        assert_eq!(
            ptr_of(&t, "3.0.0.10.IN-ADDR.arpa.").unwrap(),
            vec!["db.", "postgres."]
        );
        assert_eq!(
            ptr_of(&t, "9.0.0.10.in-addr.arpa."),
            None,
            "not a local address"
        );
        assert_eq!(
            ptr_of(&t, "3.0.0.010.in-addr.arpa."),
            None,
            "not the canonical spelling"
        );
        assert_eq!(
            ptr_of(&t, "0.0.10.in-addr.arpa."),
            None,
            "not a whole address"
        );

        let t = NameTable::build("n", &view(Some("s"), &[("x", &["2001:db8::1"])])).unwrap();
        let rev = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6.arpa.";
        assert_eq!(ptr_of(&t, rev).unwrap(), vec!["x.s."]);
    }

    #[test]
    fn unusable_names_are_skipped_and_an_invalid_suffix_is_an_error() {
        let long = "a".repeat(64);
        let records: &[(&str, &[&str])] = &[
            (&long, &["10.0.0.9"]),
            ("", &["10.0.0.8"]),
            ("a b", &["10.0.0.6"]),
            ("x..y", &["10.0.0.5"]),
            ("ok", &["10.0.0.7"]),
        ];
        let t = NameTable::build("n", &view(None, records)).unwrap();
        assert!(addrs_of(&t, "ok.").is_some());
        assert_eq!(t.names.len(), 1, "{:?}", t.names.keys().collect::<Vec<_>>());
        assert_eq!(t.reverse.len(), 1);
        let err = NameTable::build("n", &view(Some(&format!("{long}.example")), &[])).unwrap_err();
        assert!(matches!(err, DnsError::InvalidSuffix { .. }), "{err}");
    }

    #[test]
    fn names_the_network_could_own_later() {
        let t = NameTable::build("n", &view(Some("corp.example"), &[])).unwrap();
        assert!(t.could_become_local(&q("newbox.")));
        assert!(t.could_become_local(&q("NewBox.Corp.Example.")));
        assert!(!t.could_become_local(&q("www.example.org.")));
        assert!(!t.could_become_local(&q("xcorp.example.")));
    }

    #[test]
    fn only_sources_inside_the_networks_subnets_are_served() {
        let v = NetworkView {
            clients: vec!["10.1.0.0/24".parse().unwrap(), "fd00:1::/64".parse().unwrap()],
            ..view(None, &[])
        };
        let t = NameTable::build("n", &v).unwrap();
        for ok in ["10.1.0.2", "10.1.0.255", "fd00:1::5", "::ffff:10.1.0.7"] {
            assert!(t.serves(ok.parse().unwrap()), "{ok}");
        }
        for no in ["10.1.1.2", "198.51.100.1", "127.0.0.1", "fd00:2::5", "fe80::1", "::1"] {
            assert!(!t.serves(no.parse().unwrap()), "{no}");
        }
        let nobody = NameTable::build("n", &view(None, &[])).unwrap();
        assert!(!nobody.serves("10.1.0.2".parse().unwrap()), "no clients: nobody is served");
    }
}
