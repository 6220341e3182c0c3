//! What the store holds for each object: the API object as clients see it, plus the few
//! internal facts the daemon needs to rebuild kernel state and allocations after a restart.

use std::net::IpAddr;
use std::sync::Arc;

use hns_api::{HostComputeEndpoint, HostComputeNamespace, HostComputeNetwork, IpConfig};
use hns_ipam::Mac;
use hns_kernel::netns::NsIdentity;
use hns_store::{Kind, Migration, Txn};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub net: HostComputeNetwork,
    /// IPAM next-fit cursor of each subnet, in `net.subnets()` order; written in the same
    /// transaction as each endpoint that allocates from it.
    #[serde(default)]
    pub cursors: Vec<u128>,
    /// Created by the daemon itself as the default network.
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Shared with the read model: the view of an endpoint without policies of its own (most
    /// of them) is this object itself, not a copy (`Engine::endpoint_view`). Changed through
    /// [`EndpointRecord::ep_mut`], its addresses and MAC through [`EndpointRecord::set_addresses`]
    /// and [`EndpointRecord::set_mac`] (never assigned whole: `addrs` and `mac` follow it).
    #[serde(with = "shared")]
    pub ep: Arc<HostComputeEndpoint>,
    /// `ep.ip_configurations`, parsed once when the record is made or its addresses change
    /// (store format 2). No `serde(default)`: a record without them is corrupt, not empty.
    addrs: Vec<IpNet>,
    /// `ep.mac_address`, parsed likewise (`None`: empty).
    #[serde(with = "opt_mac")]
    mac: Option<Mac>,
    /// Network ID (the API field may have named the network by name).
    pub network_id: String,
    /// The DHCP lease of an endpoint on a DHCP network, kept so a restarted hnsd renews the
    /// same address instead of asking for a new one. Boxed, as `lease6`: most endpoints have
    /// none, and inline the two took 288 of a record's 448 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Box<hns_dhcp::Lease>>,
    /// The DHCPv6 lease of such an endpoint, once the LAN's server gave one (see `dhcp6.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease6: Option<Box<hns_dhcp::Lease6>>,
    /// The `InterfaceName` the endpoint was created with: its interface's name in every
    /// compartment it is attached to. Empty: the lowest free `ethN` there.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub requested_ifname: String,
    /// The endpoint's own `ACL` policies, parsed (its network's are in the network's
    /// `Policies`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<hns_kernel::nft_acl::Rule>,
    /// The endpoint's OutBoundNAT, SDNRoute and QOS policies, parsed.
    #[serde(default, skip_serializing_if = "super::epolicies::EndpointPolicies::is_empty")]
    pub policies: super::epolicies::EndpointPolicies,
}

/// An `Arc` stored as the value it holds (serde's `rc` feature, for one field, would rebuild
/// every crate that uses serde).
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
        (**v).serialize(s)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Arc<T>, D::Error> {
        T::deserialize(d).map(Arc::new)
    }
}

/// A MAC in the record as the API writes it (`00-15-5D-AA-BB-CC`). Through `with`, so a
/// record without the field is refused instead of read as `None`.
mod opt_mac {
    use hns_ipam::Mac;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Mac>, s: S) -> Result<S::Ok, S::Error> {
        v.map(|m| m.to_windows_string()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mac>, D::Error> {
        Option::<String>::deserialize(d)?.map(|s| Mac::parse(&s).map_err(serde::de::Error::custom)).transpose()
    }
}

/// A wire address or MAC of an endpoint that does not parse: the API field and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadField {
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl std::fmt::Display for BadField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}: {}", self.field, self.value, self.reason)
    }
}

/// The typed addresses and MAC of a wire endpoint. The one place their strings are parsed.
fn parse_wire(ep: &HostComputeEndpoint) -> Result<(Vec<IpNet>, Option<Mac>), BadField> {
    let mut addrs = Vec::with_capacity(ep.ip_configurations.len());
    for (i, c) in ep.ip_configurations.iter().enumerate() {
        let ip: IpAddr = c.ip_address.parse().map_err(|e: std::net::AddrParseError| BadField { field: format!("IpConfigurations[{i}].IpAddress"), value: c.ip_address.clone(), reason: e.to_string() })?;
        let net = IpNet::new(ip, c.prefix_length).map_err(|e| BadField { field: format!("IpConfigurations[{i}].PrefixLength"), value: c.prefix_length.to_string(), reason: e.to_string() })?;
        addrs.push(net);
    }
    let mac = if ep.mac_address.is_empty() {
        None
    } else {
        Some(Mac::parse(&ep.mac_address).map_err(|e| BadField { field: "MacAddress".into(), value: ep.mac_address.clone(), reason: e.to_string() })?)
    };
    Ok((addrs, mac))
}

impl EndpointRecord {
    /// A record of `ep` on network `network_id` with addresses `addrs` and MAC `mac` (written
    /// into `ep` too, over what it held); no lease, interface name, ACLs or policies yet.
    pub fn new(ep: HostComputeEndpoint, network_id: String, addrs: Vec<IpNet>, mac: Option<Mac>) -> EndpointRecord {
        let mut rec = EndpointRecord {
            ep: Arc::new(ep),
            network_id,
            addrs: Vec::new(),
            mac: None,
            lease: None,
            lease6: None,
            requested_ifname: String::new(),
            acls: Vec::new(),
            policies: Default::default(),
        };
        rec.set_addresses(addrs);
        rec.set_mac(mac);
        rec
    }

    /// The endpoint, to change: a copy of it if the read model still shares it. Not its
    /// addresses or MAC (see [`EndpointRecord::set_addresses`]); debug builds check that on
    /// every change.
    pub fn ep_mut(&mut self) -> EpMut<'_> {
        EpMut { ep: Arc::make_mut(&mut self.ep), addrs: &self.addrs, mac: self.mac }
    }

    /// A copy of the record with other policies (what it was before a change).
    pub fn with_policies(&self, policies: super::epolicies::EndpointPolicies) -> EndpointRecord {
        EndpointRecord { policies, ..self.clone() }
    }

    /// The endpoint's addresses with their prefix lengths, in `IpConfigurations` order.
    pub fn addresses(&self) -> &[IpNet] {
        &self.addrs
    }

    /// The endpoint's addresses, in `IpConfigurations` order.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.iter().map(IpNet::addr)
    }

    /// The endpoint's first IPv4 address.
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.ips().find(IpAddr::is_ipv4)
    }

    /// The endpoint's first IPv6 address.
    pub fn ipv6(&self) -> Option<IpAddr> {
        self.ips().find(IpAddr::is_ipv6)
    }

    /// The endpoint's MAC (`None`: it has none).
    pub fn mac(&self) -> Option<Mac> {
        self.mac
    }

    /// Sets the endpoint's addresses: the typed ones and the API object's `IpConfigurations`.
    pub fn set_addresses(&mut self, addrs: Vec<IpNet>) {
        Arc::make_mut(&mut self.ep).ip_configurations = addrs.iter().map(|a| IpConfig { ip_address: a.addr().to_string(), prefix_length: a.prefix_len(), ip_subnet_id: String::new() }).collect();
        self.addrs = addrs;
    }

    /// Sets the endpoint's MAC: the typed one and the API object's `MacAddress`.
    pub fn set_mac(&mut self, mac: Option<Mac>) {
        Arc::make_mut(&mut self.ep).mac_address = mac.map(|m| m.to_windows_string()).unwrap_or_default();
        self.mac = mac;
    }

    /// Whether the typed addresses and MAC are those the API object shows.
    fn in_step(ep: &HostComputeEndpoint, addrs: &[IpNet], mac: Option<Mac>) -> bool {
        parse_wire(ep).is_ok_and(|(a, m)| a == addrs && m == mac)
    }
}

/// The endpoint of a record being changed ([`EndpointRecord::ep_mut`]).
pub struct EpMut<'a> {
    ep: &'a mut HostComputeEndpoint,
    addrs: &'a [IpNet],
    mac: Option<Mac>,
}

impl std::ops::Deref for EpMut<'_> {
    type Target = HostComputeEndpoint;
    fn deref(&self) -> &HostComputeEndpoint {
        self.ep
    }
}

impl std::ops::DerefMut for EpMut<'_> {
    fn deref_mut(&mut self) -> &mut HostComputeEndpoint {
        self.ep
    }
}

impl Drop for EpMut<'_> {
    fn drop(&mut self) {
        // Not while unwinding: a second panic would abort the test that shows the first.
        debug_assert!(
            std::thread::panicking() || EndpointRecord::in_step(self.ep, self.addrs, self.mac),
            "endpoint {}: IpConfigurations or MacAddress changed through ep_mut, not set_addresses/set_mac",
            self.ep.id
        );
    }
}

/// The daemon's steps of the store format (see `hns_store::FORMAT_VERSION`).
pub const MIGRATIONS: &[Migration] = &[Migration { from: 1, run: typed_endpoints }];

/// Format 1 to 2: every endpoint record gets its typed addresses and MAC, parsed from its API
/// object. One that does not parse fails the whole migration, named with the field and value:
/// the daemon of format 1 skipped such values silently at every use, and guessing now would
/// hide a damaged record.
fn typed_endpoints(txn: &mut Txn) -> Result<(), String> {
    for (key, mut v) in txn.load_all::<serde_json::Value>(Kind::Endpoint).map_err(|e| e.to_string())? {
        let id = v.pointer("/ep/ID").and_then(|i| i.as_str()).unwrap_or(&key).to_owned();
        let ep: HostComputeEndpoint = serde_json::from_value(v.get("ep").cloned().unwrap_or_default()).map_err(|e| format!("endpoint {id}: its API object does not load: {e}"))?;
        let (addrs, mac) = parse_wire(&ep).map_err(|e| format!("endpoint {id}: {e}"))?;
        let Some(obj) = v.as_object_mut() else { return Err(format!("endpoint {id}: the record is not an object")) };
        obj.insert("addrs".into(), serde_json::to_value(&addrs).map_err(|e| e.to_string())?);
        obj.insert("mac".into(), serde_json::to_value(mac.map(|m| m.to_windows_string())).map_err(|e| e.to_string())?);
        // Written as format 2 writes it, and so checked to load.
        let rec: EndpointRecord = serde_json::from_value(v).map_err(|e| format!("endpoint {id}: the migrated record does not load: {e}"))?;
        txn.put(Kind::Endpoint, &key, &rec).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// Shared with the read model's view of the compartment. Changed through
    /// [`NamespaceRecord::ns_mut`].
    #[serde(with = "shared")]
    pub ns: Arc<HostComputeNamespace>,
    /// Created (and kept alive) by hnsd under its run dir, as opposed to adopted by path.
    pub managed: bool,
    /// The namespace's identity when it was created or adopted; a path that now names another
    /// namespace (a reused PID) means the compartment is gone.
    pub identity: Option<NsIdentity>,
}

impl NamespaceRecord {
    /// The compartment, to change: a copy of it if the read model still shares it.
    pub fn ns_mut(&mut self) -> &mut HostComputeNamespace {
        Arc::make_mut(&mut self.ns)
    }
}

/// One port mapping of an endpoint, with its host port chosen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MappingRecord {
    pub endpoint_id: String,
    pub settings: hns_api::PortMappingSettings,
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use hns_store::{FORMAT_VERSION, Store, StoreError};

    use super::*;

    fn wire(id: &str, addrs: &[(&str, u8)], mac: &str) -> HostComputeEndpoint {
        HostComputeEndpoint {
            id: id.into(),
            name: format!("name-{id}"),
            host_compute_network: "net1".into(),
            ip_configurations: addrs.iter().map(|(a, p)| IpConfig { ip_address: (*a).into(), prefix_length: *p, ip_subnet_id: String::new() }).collect(),
            mac_address: mac.into(),
            version: 3,
            ..Default::default()
        }
    }

    /// A record as hnsd of format 1 wrote it: the record's fields without `addrs` and `mac`.
    fn v1_json(ep: HostComputeEndpoint) -> serde_json::Value {
        let rec = EndpointRecord { ep: Arc::new(ep), network_id: "net1".into(), addrs: Vec::new(), mac: None, lease: None, lease6: None, requested_ifname: "eth7".into(), acls: Vec::new(), policies: Default::default() };
        let mut v = serde_json::to_value(&rec).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("addrs").unwrap();
        obj.remove("mac").unwrap();
        v
    }

    /// A store at format 1 holding `eps`.
    fn v1_store(name: &str, eps: Vec<HostComputeEndpoint>) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("hnsd-records-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("hns.redb");
        let s = Store::open(&path, &[]).unwrap();
        let mut t = s.begin().unwrap();
        t.put(Kind::Meta, "format_version", &1u32).unwrap();
        for ep in eps {
            t.put(Kind::Endpoint, &ep.id.clone(), &v1_json(ep)).unwrap();
        }
        t.commit().unwrap();
        (dir, path)
    }

    fn version(path: &Path) -> Option<u32> {
        Store::open(path, MIGRATIONS).unwrap().get(Kind::Meta, "format_version").unwrap()
    }

    #[test]
    fn a_v1_store_is_migrated_with_typed_addresses_and_macs() {
        let a = wire("a", &[("10.0.0.5", 24), ("fd00::5", 64)], "00-15-5D-0A-00-00");
        let b = wire("b", &[], ""); // a DHCP endpoint before its lease
        let (dir, path) = v1_store("migrate", vec![a.clone(), b.clone()]);
        let s = Store::open(&path, MIGRATIONS).unwrap();
        assert_eq!(s.get::<u32>(Kind::Meta, "format_version").unwrap(), Some(2));
        assert_eq!(FORMAT_VERSION, 2);
        let recs: Vec<EndpointRecord> = s.load_all(Kind::Endpoint).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(*recs[0].ep, a, "the API object is kept as it was");
        assert_eq!(recs[0].addresses(), ["10.0.0.5/24".parse::<IpNet>().unwrap(), "fd00::5/64".parse().unwrap()]);
        assert_eq!(recs[0].ipv4(), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(recs[0].ipv6(), Some("fd00::5".parse().unwrap()));
        assert_eq!(recs[0].mac(), Some(Mac([0x00, 0x15, 0x5d, 0x0a, 0x00, 0x00])));
        assert_eq!(recs[0].requested_ifname, "eth7");
        assert_eq!(*recs[1].ep, b);
        assert!(recs[1].addresses().is_empty() && recs[1].mac().is_none());
        // Stored with the typed fields: a second open has nothing to do.
        let raw: Vec<serde_json::Value> = s.load_all(Kind::Endpoint).unwrap();
        assert_eq!(raw[0]["addrs"], serde_json::json!(["10.0.0.5/24", "fd00::5/64"]));
        assert_eq!(raw[0]["mac"], serde_json::json!("00-15-5D-0A-00-00"));
        drop(s);
        assert_eq!(version(&path), Some(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A value format 1 skipped at every use fails the migration, named; the store's records
    /// stay those of format 1 byte for byte.
    #[test]
    fn a_bad_v1_record_fails_the_migration_and_changes_nothing() {
        let good = wire("a-good", &[("10.0.0.5", 24)], "00-15-5D-0A-00-05");
        for (bad, field, value) in [
            (wire("b-bad", &[("10.0.0.6", 24), ("10.0.0.300", 24)], "00-15-5D-0A-00-06"), "IpConfigurations[1].IpAddress", "10.0.0.300"),
            (wire("b-bad", &[("10.0.0.6", 24)], "00-15-5D-0A-00"), "MacAddress", "00-15-5D-0A-00"),
            (wire("b-bad", &[("10.0.0.6", 40)], "00-15-5D-0A-00-06"), "IpConfigurations[0].PrefixLength", "40"),
        ] {
            let (dir, path) = v1_store("bad", vec![good.clone(), bad]);
            let before = Store::snapshot(&path).unwrap();
            let err = Store::open(&path, MIGRATIONS).err().expect("must fail");
            let msg = err.to_string();
            assert!(matches!(err, StoreError::Migrate { from: 1, to: 2, .. }), "{msg}");
            assert!(msg.contains("endpoint b-bad") && msg.contains(field) && msg.contains(&format!("{value:?}")), "{msg}");
            assert!(Store::snapshot(&path).unwrap() == before, "the failed migration wrote to the store");
            assert!(before.iter().any(|(k, key, v)| *k == Kind::Meta && key == "format_version" && v == b"1"), "still format 1");
            // Still refused the same way: nothing of the good record was committed either.
            assert!(Store::open(&path, MIGRATIONS).err().expect("must fail").to_string().contains(field));
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_newer_store_is_refused() {
        let (dir, path) = v1_store("newer", vec![]);
        let s = Store::open(&path, &[]).err();
        assert!(s.is_some(), "format 1 without its migration must not open");
        {
            let s = Store::open(&path, MIGRATIONS).unwrap();
            let mut t = s.begin().unwrap();
            t.put(Kind::Meta, "format_version", &3u32).unwrap();
            t.commit().unwrap();
        }
        let err = Store::open(&path, MIGRATIONS).err().expect("must refuse");
        assert!(matches!(err, StoreError::TooNew { found: 3, .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Format 2 needs the typed fields: a record without them is corrupt, not empty.
    #[test]
    fn a_v2_record_without_typed_fields_does_not_load() {
        let v = v1_json(wire("a", &[("10.0.0.5", 24)], "00-15-5D-0A-00-05"));
        let err = serde_json::from_value::<EndpointRecord>(v.clone()).unwrap_err().to_string();
        assert!(err.contains("missing field `addrs`"), "{err}");
        let mut v = v;
        v["addrs"] = serde_json::json!(["10.0.0.5/24"]);
        let err = serde_json::from_value::<EndpointRecord>(v).unwrap_err().to_string();
        assert!(err.contains("missing field `mac`"), "{err}");
    }

    #[test]
    fn the_setters_keep_the_api_object_in_step() {
        let mut rec = EndpointRecord::new(wire("a", &[], ""), "net1".into(), vec!["10.0.0.5/24".parse().unwrap()], Some(Mac([0, 0x15, 0x5d, 1, 2, 3])));
        assert_eq!(rec.ep.ip_configurations, [IpConfig { ip_address: "10.0.0.5".into(), prefix_length: 24, ip_subnet_id: String::new() }]);
        assert_eq!(rec.ep.mac_address, "00-15-5D-01-02-03");
        rec.set_addresses(Vec::new());
        rec.set_mac(None);
        assert!(rec.ep.ip_configurations.is_empty() && rec.ep.mac_address.is_empty());
        rec.ep_mut().version += 1; // other fields: no complaint
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "changed through ep_mut")]
    fn ep_mut_may_not_change_addresses() {
        let mut rec = EndpointRecord::new(wire("a", &[], ""), "net1".into(), vec!["10.0.0.5/24".parse().unwrap()], None);
        rec.ep_mut().ip_configurations.clear();
    }
}
