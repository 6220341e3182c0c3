//! Routes of the `SDNRoute` (in a compartment) and `HostRoute` (in the host) policies:
//! add, find and remove one route over rtnetlink, idempotently.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::RouteMessageBuilder;

use crate::error::{KernelError, Result};
use crate::netlink::{HostPrefixKind, Netlink, nl_err};

fn shown(dest: IpNet, via: Option<IpAddr>) -> String {
    match via {
        Some(v) => format!("{dest} via {v}"),
        None => dest.to_string(),
    }
}

impl Netlink {
    /// Adds (or replaces) a route to `dest` via `via`, out of `oif` if given (else the link
    /// the kernel finds for the next hop).
    pub async fn add_policy_route(&self, dest: IpNet, via: Option<IpAddr>, oif: Option<u32>) -> Result<()> {
        let mut b = RouteMessageBuilder::<IpAddr>::new().destination_prefix(dest.addr(), dest.prefix_len()).map_err(|e| KernelError::new("build route", dest.to_string(), e))?;
        if let Some(i) = oif {
            b = b.output_interface(i);
        }
        if let Some(gw) = via {
            b = b.gateway(gw).map_err(|e| KernelError::new("build route", dest.to_string(), e))?;
        }
        self.handle.route().add(b.build()).replace().execute().await.map_err(|e| nl_err("add route", &shown(dest, via), e))
    }

    /// Whether this namespace has a route to `dest` via `via` (in any table but `local`).
    pub async fn has_policy_route(&self, dest: IpNet, via: Option<IpAddr>) -> Result<bool> {
        Ok(self.host_prefixes().await?.iter().any(|p| p.prefix == dest.trunc() && matches!(p.kind, HostPrefixKind::Route { via: v } if v == via)))
    }

    /// Removes the route to `dest` via `via`; a missing one is fine.
    pub async fn del_policy_route(&self, dest: IpNet, via: Option<IpAddr>) -> Result<()> {
        let mut b = RouteMessageBuilder::<IpAddr>::new().destination_prefix(dest.addr(), dest.prefix_len()).map_err(|e| KernelError::new("build route", dest.to_string(), e))?;
        if let Some(gw) = via {
            b = b.gateway(gw).map_err(|e| KernelError::new("build route", dest.to_string(), e))?;
        }
        let mut msg = b.build();
        // The kernel's wildcards for a delete (see `del_host_route`).
        msg.header.scope = netlink_packet_route::route::RouteScope::NoWhere;
        msg.header.protocol = netlink_packet_route::route::RouteProtocol::Unspec;
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_err("delete route", &shown(dest, via), e);
                if e.is_not_found() || e.errno == Some(libc::ESRCH) { Ok(()) } else { Err(e) }
            }
        }
    }
}
