//! The `hns` IPAM driver (`docker network create --ipam-driver hns`): hns chooses the pool when
//! none is given (the way it chooses the default `nat` subnet: the first private prefix that
//! overlaps nothing on the host or in another network), the gateway, and the endpoint
//! addresses (next-fit, honouring `--ip-range`, `--aux-address` and addresses that endpoints
//! outside Docker already hold on the network).
//!
//! Pools and their addresses are one store record, rewritten on every change: Docker does not
//! replay its requests after a restart (`RequiresRequestReplay: false`), so hns must remember.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hns_api::{ApiError, ErrorCode};
use hns_ipam::{Pool, PoolSpec, overlaps};
use hns_kernel::netlink::HostPrefix;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::options::PoolHint;
use super::protocol::{RequestAddress, RequestAddressReply, RequestPool, RequestPoolReply, keys};
use crate::engine::Engine;

/// Store key of the pools.
const RECORD: &str = "docker/ipam";
pub const LOCAL_SPACE: &str = "hns-local";
pub const GLOBAL_SPACE: &str = "hns-global";

/// One pool handed to Docker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolRec {
    pub pool: IpNet,
    /// `--ip-range`.
    pub sub_pool: Option<IpNet>,
    /// hns chose it (no `--subnet`).
    pub picked: bool,
    /// Identical requests share the pool (Docker's contract): released at zero.
    pub refs: u32,
    pub gateway: Option<IpAddr>,
    /// Addresses handed out (endpoints and auxiliary addresses; not the gateway).
    pub addresses: BTreeSet<IpAddr>,
    /// Next-fit cursor, so a released address is not handed out again at once.
    pub cursor: u128,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pools {
    pub pools: BTreeMap<String, PoolRec>,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ApiError {
    ApiError::new(code, msg)
}

/// A pool's ID: stable, readable, and the same for identical requests.
pub fn pool_id(pool: &IpNet) -> String {
    format!("hns:{pool}")
}

fn cidr(ip: IpAddr, pool: &IpNet) -> String {
    format!("{ip}/{}", pool.prefix_len())
}

impl Pools {
    pub fn load(engine: &Engine) -> Pools {
        match engine.ext_get::<Pools>(RECORD) {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the hns IPAM pools; starting with none");
                Pools::default()
            }
        }
    }

    fn save(&self, engine: &Engine) -> Result<(), ApiError> {
        engine.ext_put(RECORD, self)
    }

    /// What the network driver needs to know about a pool it is given.
    pub fn hints(&self) -> BTreeMap<String, PoolHint> {
        self.pools.values().map(|p| (p.pool.to_string(), PoolHint { ip_range: p.sub_pool.map(|s| s.to_string()), picked: p.picked })).collect()
    }

    /// Checks a requested pool and sub-pool; pure.
    pub fn check_request(&self, req: &RequestPool) -> Result<(Option<IpNet>, Option<IpNet>), ApiError> {
        let parse = |s: &str, what: &str| -> Result<Option<IpNet>, ApiError> {
            if s.is_empty() {
                return Ok(None);
            }
            let n: IpNet = s.parse().map_err(|_| err(ErrorCode::InvalidSubnet, format!("{what} {s:?} is not a CIDR prefix such as 172.20.0.0/16")))?;
            if n.trunc() != n {
                return Err(err(ErrorCode::InvalidSubnet, format!("{what} {s} has host bits set; did you mean {}?", n.trunc())));
            }
            Ok(Some(n))
        };
        let pool = parse(&req.pool, "--subnet")?;
        let sub = parse(&req.sub_pool, "--ip-range")?;
        if let Some(p) = pool
            && p.addr().is_ipv6() != req.v6
        {
            return Err(err(ErrorCode::InvalidSubnet, format!("pool {p} is not of the requested family ({})", if req.v6 { "IPv6" } else { "IPv4" })));
        }
        match (pool, sub) {
            (None, Some(s)) => Err(err(ErrorCode::InvalidSubnet, format!("--ip-range {s} needs a --subnet to lie in"))),
            (Some(p), Some(s)) if !p.contains(&s) => Err(err(ErrorCode::InvalidSubnet, format!("--ip-range {s} is not inside --subnet {p}"))),
            other => Ok(other),
        }
    }

    /// `IpamDriver.RequestPool`.
    /// `host`: the host's addresses and routes (read only when a pool is to be picked).
    pub async fn request_pool(&mut self, engine: &Engine, req: &RequestPool, host: &[HostPrefix]) -> Result<RequestPoolReply, ApiError> {
        let (pool, sub_pool) = self.check_request(req)?;
        let (pool, picked) = match pool {
            Some(p) => (p, false),
            None => {
                let handed: Vec<IpNet> = self.pools.values().map(|p| p.pool).collect();
                (engine.free_subnet(req.v6, &handed, host)?, true)
            }
        };
        let id = pool_id(&pool);
        if let Some(rec) = self.pools.get_mut(&id) {
            if rec.sub_pool != sub_pool {
                return Err(err(ErrorCode::SubnetInUse, format!("pool {pool} is already in use with another --ip-range ({:?})", rec.sub_pool.map(|s| s.to_string()))));
            }
            rec.refs += 1;
        } else {
            if let Some(other) = self.pools.values().find(|p| overlaps(&p.pool, &pool)) {
                return Err(err(ErrorCode::SubnetInUse, format!("pool {pool} overlaps pool {} already given to Docker; choose another --subnet", other.pool)));
            }
            for n in engine.list_networks() {
                for s in n.subnets() {
                    if s.ip_address_prefix.parse::<IpNet>().is_ok_and(|p| overlaps(&p, &pool)) {
                        // The usual way here is a second host joining an overlay network
                        // with the hns IPAM, which hnsoverlay refuses anyway: say that.
                        let overlay = if n.network_type() == hns_api::NetworkType::Overlay {
                            " (to join that overlay network from this host, use Docker's default IPAM: docker network create -d hnsoverlay --subnet with its own --ip-range, without --ipam-driver hns)"
                        } else {
                            ""
                        };
                        return Err(err(ErrorCode::SubnetInUse, format!("pool {pool} overlaps subnet {} of hns network {:?}; choose another --subnet{overlay}", s.ip_address_prefix, n.name)));
                    }
                }
            }
            let rec = PoolRec { pool, sub_pool, picked, refs: 1, gateway: None, addresses: BTreeSet::new(), cursor: 0 };
            self.pools.insert(id.clone(), rec);
        }
        self.save(engine)?;
        Ok(RequestPoolReply { pool_id: id, pool: pool.to_string(), data: BTreeMap::new() })
    }

    /// `IpamDriver.ReleasePool`: unknown pools are fine (Docker may repeat a release).
    pub fn release_pool(&mut self, engine: &Engine, id: &str) -> Result<(), ApiError> {
        let Some(rec) = self.pools.get_mut(id) else { return Ok(()) };
        rec.refs = rec.refs.saturating_sub(1);
        if rec.refs == 0 {
            self.pools.remove(id);
        }
        self.save(engine)
    }

    /// `IpamDriver.RequestAddress`: the gateway, an auxiliary address, or an endpoint's.
    pub fn request_address(&mut self, engine: &Engine, req: &RequestAddress) -> Result<RequestAddressReply, ApiError> {
        let held_elsewhere = |pool: &IpNet| -> Vec<IpAddr> {
            engine
                .list_endpoints()
                .iter()
                .flat_map(|e| e.ip_configurations.iter().filter_map(|c| c.ip_address.parse::<IpAddr>().ok()))
                .filter(|ip| pool.contains(ip))
                .collect()
        };
        let rec = self.pools.get_mut(&req.pool_id).ok_or_else(|| err(ErrorCode::InvalidSubnet, format!("no hns pool {:?}; was the network created with --ipam-driver hns?", req.pool_id)))?;
        let preferred = if req.address.is_empty() {
            None
        } else {
            // Docker sends a bare address (sometimes with a prefix).
            let bare = req.address.split('/').next().unwrap_or_default();
            Some(bare.parse::<IpAddr>().map_err(|_| err(ErrorCode::InvalidIp, format!("{:?} is not an IP address", req.address)))?)
        };
        let gateway_request = req.options.get(keys::REQUEST_ADDRESS_TYPE).is_some_and(|t| t == keys::GATEWAY_REQUEST);
        let held = held_elsewhere(&rec.pool);
        let ip = allocate(rec, preferred, gateway_request, &held)?;
        let out = cidr(ip, &rec.pool);
        self.save(engine)?;
        Ok(RequestAddressReply { address: out, data: BTreeMap::new() })
    }

    /// `IpamDriver.ReleaseAddress`.
    pub fn release_address(&mut self, engine: &Engine, id: &str, address: &str) -> Result<(), ApiError> {
        let Some(rec) = self.pools.get_mut(id) else { return Ok(()) };
        let Ok(ip) = address.split('/').next().unwrap_or_default().parse::<IpAddr>() else { return Ok(()) };
        if rec.gateway == Some(ip) {
            rec.gateway = None;
        }
        rec.addresses.remove(&ip);
        self.save(engine)
    }
}

/// Picks (or checks) an address of a pool; pure. The gateway defaults to the subnet's first
/// host address, like hns networks' own.
pub fn allocate(rec: &mut PoolRec, preferred: Option<IpAddr>, gateway: bool, held_elsewhere: &[IpAddr]) -> Result<IpAddr, ApiError> {
    let addr_err = |e: hns_ipam::IpamError| err(ErrorCode::AddrInvalidOrReserved, e.to_string());
    if gateway {
        let gw = match preferred {
            Some(ip) => ip,
            None => Pool::new(&PoolSpec::new(rec.pool)).map_err(addr_err)?.gateway(),
        };
        // Checks the address is a usable host address of the pool.
        Pool::new(&PoolSpec { gateway: Some(gw), ..PoolSpec::new(rec.pool) }).map_err(addr_err)?;
        rec.gateway = Some(gw);
        return Ok(gw);
    }
    let mut pool = Pool::new(&PoolSpec { subnet: rec.pool, gateway: rec.gateway, range: rec.sub_pool, reserved: vec![] }).map_err(addr_err)?;
    pool.set_cursor(rec.cursor);
    for ip in rec.addresses.iter().chain(held_elsewhere) {
        let _ = pool.reserve(*ip);
    }
    let ip = match preferred {
        Some(ip) => {
            if rec.addresses.contains(&ip) || held_elsewhere.contains(&ip) {
                return Err(err(ErrorCode::AddrInUse, format!("address {ip} is already in use on {}; choose another --ip", rec.pool)));
            }
            pool.reserve(ip).map_err(addr_err)?;
            ip
        }
        None => pool.allocate().map_err(|e| err(ErrorCode::AddressPoolExhausted, e.to_string()))?,
    };
    rec.cursor = pool.cursor();
    rec.addresses.insert(ip);
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pool: &str, sub: Option<&str>) -> PoolRec {
        PoolRec { pool: pool.parse().unwrap(), sub_pool: sub.map(|s| s.parse().unwrap()), picked: false, refs: 1, gateway: None, addresses: BTreeSet::new(), cursor: 0 }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_then_next_fit_addresses() {
        let mut r = rec("10.9.0.0/24", None);
        assert_eq!(allocate(&mut r, None, true, &[]).unwrap(), ip("10.9.0.1"));
        let a = allocate(&mut r, None, false, &[ip("10.9.0.2")]).unwrap();
        assert_eq!(a, ip("10.9.0.3"), "the gateway and an address held outside Docker are skipped");
        assert_eq!(allocate(&mut r, Some(ip("10.9.0.50")), false, &[]).unwrap(), ip("10.9.0.50"));
        let e = allocate(&mut r, Some(ip("10.9.0.50")), false, &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::AddrInUse);
        assert!(allocate(&mut r, Some(ip("10.9.1.5")), false, &[]).is_err(), "outside the pool");
        r.addresses.remove(&a);
        assert_ne!(allocate(&mut r, None, false, &[]).unwrap(), a, "a released address is not reused at once");
    }

    #[test]
    fn ranges_and_requests_are_checked() {
        let mut r = rec("10.9.0.0/16", Some("10.9.8.0/24"));
        allocate(&mut r, None, true, &[]).unwrap();
        assert!(allocate(&mut r, None, false, &[]).unwrap().to_string().starts_with("10.9.8."));
        let p = Pools::default();
        let req = |pool: &str, sub: &str, v6: bool| RequestPool { pool: pool.into(), sub_pool: sub.into(), v6, ..Default::default() };
        assert!(p.check_request(&req("", "10.1.0.0/24", false)).unwrap_err().message.contains("needs a --subnet"));
        assert!(p.check_request(&req("10.1.0.0/24", "10.2.0.0/24", false)).unwrap_err().message.contains("not inside"));
        assert!(p.check_request(&req("10.1.0.1/24", "", false)).unwrap_err().message.contains("host bits"));
        assert!(p.check_request(&req("fd00::/64", "", false)).is_err());
        assert_eq!(p.check_request(&req("fd00::/64", "", true)).unwrap().0.unwrap().to_string(), "fd00::/64");
        assert_eq!(pool_id(&"10.1.0.0/24".parse().unwrap()), "hns:10.1.0.0/24");
    }
}
