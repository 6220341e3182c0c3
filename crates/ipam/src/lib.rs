//! Address management for hns networks.
//!
//! A network's subnet becomes a [`Pool`]: the spec ([`PoolSpec`]) is checked
//! once, then the pool hands out addresses next-fit (so a just-released
//! address is not reused while neighbours may still cache its old MAC) and
//! records static ones. The [`mod@mac`] module names the endpoints' Ethernet
//! addresses, and [`pick_default_subnet`] chooses a default NAT subnet that
//! does not collide with what the host already uses, and [`check_usable`]
//! refuses prefixes no network may have (special-purpose ranges, too wide).
//!
//! Everything here is pure computation with no I/O, so the daemon decides
//! what is persisted and when. IPv4 and IPv6 go through the same code: the
//! arithmetic is done on `u128` values.

mod addr;
mod defaults;
mod error;
pub mod mac;
mod overlap;
mod pool;
mod spec;
mod usable;

pub use defaults::{pick_default_subnet, pick_default_subnet_v6};
pub use error::{IpamError, IpamErrorKind, SpecialAddress};
pub use mac::{Mac, MacError};
pub use overlap::overlaps;
pub use pool::Pool;
pub use spec::PoolSpec;
pub use usable::{SpecialRange, Unusable, check_usable};

/// Parsers the unit tests of every module share.
#[cfg(test)]
mod test_util {
    use std::net::IpAddr;

    use ipnet::IpNet;

    pub fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    pub fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
}
