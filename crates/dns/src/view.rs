//! The name table of one network, built from a [`NetworkView`].
//!
//! Everything a query can ask is precomputed into one hash map keyed by the
//! fully qualified name: each endpoint name bare (`web.`) and with the
//! network's suffix (`web.corp.example.`), and the reverse name of every
//! address (`4.0.77.10.in-addr.arpa.`, ip6.arpa nibbles for IPv6). A lookup is
//! then one case-insensitive hash probe (hickory's `Name` hashes and compares
//! without case), with no string building on the query path. Building is
//! linear in the view, which keeps `update_view` in the microseconds for
//! networks of realistic size.
//!
//! The table is immutable once built; a change of the view builds a new one
//! that replaces it atomically (see `DnsService::update_view`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_server::proto::rr::Name;
use tracing::warn;

use crate::{DnsError, NetworkView};

/// What the network knows about one name.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Entry {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    /// Names pointing at this address, when the name is a reverse name.
    pub ptr: Vec<Name>,
}

#[derive(Debug, Default)]
pub(crate) struct NameTable {
    names: HashMap<Name, Entry>,
    suffix: Option<Name>,
    /// Shared with the cache key, so networks with the same forwarders share
    /// cached answers and networks with different ones never do.
    pub upstreams: Arc<[SocketAddr]>,
}

impl NameTable {
    /// Builds the table. Only an invalid suffix is an error (it concerns the
    /// whole network); a record whose name is not a valid DNS name (a label
    /// over 63 bytes, say a 64-character container id) is skipped with a
    /// warning so that one odd endpoint cannot take name resolution away from
    /// all the others.
    pub fn build(net_id: &str, view: &NetworkView) -> Result<NameTable, DnsError> {
        let suffix = match view.suffix.as_deref().map(|s| s.trim_matches('.')) {
            None | Some("") => None,
            Some(s) => Some(fqdn(s).map_err(|reason| DnsError::InvalidSuffix {
                net_id: net_id.into(),
                suffix: s.into(),
                reason,
            })?),
        };

        let mut names: HashMap<Name, Entry> = HashMap::with_capacity(view.records.len() * 3);
        for record in &view.records {
            let bare = match fqdn(record.name.trim_end_matches('.')) {
                Ok(name) => name,
                Err(reason) => {
                    warn!(net_id, name = %record.name, %reason, "DNS: skipping endpoint name that is not a valid DNS name");
                    continue;
                }
            };
            // With a suffix, reverse lookups return the qualified name: it is
            // the one that resolves from anywhere the suffix is searched.
            let qualified = suffix
                .as_ref()
                .and_then(|s| bare.clone().append_domain(s).ok());
            let ptr_target = qualified.clone().unwrap_or_else(|| bare.clone());

            for key in std::iter::once(bare).chain(qualified) {
                let entry = names.entry(key).or_default();
                for addr in &record.addrs {
                    match addr {
                        IpAddr::V4(a) => push_unique(&mut entry.v4, *a),
                        IpAddr::V6(a) => push_unique(&mut entry.v6, *a),
                    }
                }
            }
            for addr in &record.addrs {
                push_unique(
                    &mut names.entry(reverse_name(*addr)).or_default().ptr,
                    ptr_target.clone(),
                );
            }
        }

        Ok(NameTable {
            names,
            suffix,
            upstreams: view.upstreams.clone().into(),
        })
    }

    /// The entry for a fully qualified query name, if the name is local.
    pub fn lookup(&self, name: &Name) -> Option<&Entry> {
        self.names.get(name)
    }

    /// Names this network could own later: single labels and names under
    /// its suffix. A negative upstream answer for such a name must not be
    /// cached by clients, or a container started a moment later would not
    /// resolve until the negative TTL runs out.
    pub fn could_become_local(&self, name: &Name) -> bool {
        name.num_labels() == 1 || self.suffix.as_ref().is_some_and(|s| s.zone_of(name))
    }
}

/// `name` as an absolute DNS name, or why it is not one.
fn fqdn(name: &str) -> Result<Name, String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    let mut parsed = Name::from_ascii(name).map_err(|e| e.to_string())?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// The reverse-lookup name of an address: `d.c.b.a.in-addr.arpa.` or the 32
/// nibbles of an IPv6 address under `ip6.arpa.` (hickory builds both).
fn reverse_name(addr: IpAddr) -> Name {
    match addr {
        IpAddr::V4(a) => Name::from(a),
        IpAddr::V6(a) => Name::from(a),
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
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
        }
    }

    #[test]
    fn names_resolve_bare_and_with_suffix_in_any_case() {
        let t = NameTable::build(
            "n",
            &view(Some(".Corp.Example."), &[("Web", &["10.0.0.2", "fd00::2"])]),
        )
        .unwrap();
        for q in ["web.", "WEB.", "web.corp.example.", "Web.CORP.example."] {
            let e = t
                .lookup(&name(q))
                .unwrap_or_else(|| panic!("{q} should be local"));
            assert_eq!(e.v4, vec!["10.0.0.2".parse::<Ipv4Addr>().unwrap()]);
            assert_eq!(e.v6, vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]);
        }
        assert!(t.lookup(&name("web.other.example.")).is_none());
        assert!(t.lookup(&name("corp.example.")).is_none());
    }

    #[test]
    fn aliases_merge_and_reverse_names_list_every_name() {
        let t = NameTable::build(
            "n",
            &view(
                None,
                &[
                    ("db", &["10.0.0.3"]),
                    ("db", &["10.0.0.4"]),
                    ("postgres", &["10.0.0.3"]),
                    ("db", &["10.0.0.3"]),
                ],
            ),
        )
        .unwrap();
        let db = t.lookup(&name("db.")).unwrap();
        assert_eq!(db.v4.len(), 2, "duplicates removed, both addresses kept");
        let ptr = &t.lookup(&name("3.0.0.10.in-addr.arpa.")).unwrap().ptr;
        assert_eq!(ptr, &vec![name("db."), name("postgres.")]);
        let v6 = NameTable::build("n", &view(Some("s"), &[("x", &["2001:db8::1"])])).unwrap();
        let rev = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
        assert_eq!(v6.lookup(&name(rev)).unwrap().ptr, vec![name("x.s.")]);
    }

    #[test]
    fn invalid_names_are_skipped_and_invalid_suffix_is_an_error() {
        let long = "a".repeat(64);
        let t = NameTable::build(
            "n",
            &view(
                None,
                &[
                    (&long, &["10.0.0.9"]),
                    ("", &["10.0.0.8"]),
                    ("ok", &["10.0.0.7"]),
                ],
            ),
        )
        .unwrap();
        assert!(t.lookup(&name("ok.")).is_some());
        assert_eq!(
            t.names.len(),
            2,
            "only ok. and its reverse name: {:?}",
            t.names.keys().collect::<Vec<_>>()
        );
        let err = NameTable::build("n", &view(Some(&format!("{long}.example")), &[])).unwrap_err();
        assert!(matches!(err, DnsError::InvalidSuffix { .. }), "{err}");
    }

    #[test]
    fn names_the_network_could_own_later() {
        let t = NameTable::build("n", &view(Some("corp.example"), &[])).unwrap();
        assert!(t.could_become_local(&name("newbox.")));
        assert!(t.could_become_local(&name("newbox.corp.example.")));
        assert!(!t.could_become_local(&name("www.example.org.")));
    }
}
