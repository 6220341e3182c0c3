//! # hns-dhcp: DHCP for containers on a `transparent` network
//!
//! DHCPv4 runs from the host, as described below; DHCPv6 runs inside the container's
//! compartment, see [`v6`].
//!
//! A transparent network puts each container on the physical LAN through a macvlan (bridge
//! mode) of the host's uplink, living in the container's namespace with the container's MAC.
//! The container runs no DHCP client. hnsd does it for it, in **proxy mode**: frames leave
//! from the uplink (the macvlan's parent) with the container's MAC as Ethernet source and as
//! `chaddr`, so the DHCP server sees the container; hnsd then configures the lease on the
//! container side itself.
//!
//! ```no_run
//! # async fn f() -> Result<(), hns_dhcp::DhcpError> {
//! use std::time::Duration;
//! let mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
//! let (keeper, lease) = hns_dhcp::acquire("eth1", mac, Some("web"), Duration::from_secs(10)).await?;
//! // configure lease.address/lease.prefix_len, lease.gateway, DNS in the container; store `lease`
//! let mut updates = keeper.subscribe();
//! while updates.changed().await.is_ok() {
//!     match &*updates.borrow() {
//!         hns_dhcp::LeaseState::Bound { lease: new } => { /* store; reprogram if !new.same_config(&lease) */ }
//!         hns_dhcp::LeaseState::Lost { .. } => { /* address must not be used any more */ }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! * [`acquire`] gets a new lease (DISCOVER), [`resume`] re-requests a stored one after an
//!   hnsd restart (INIT-REBOOT); both return a [`LeaseKeeper`] whose task renews at T1
//!   (unicast), rebinds at T2 (broadcast) and, if the lease is lost, keeps asking for a new
//!   one, publishing every change as a [`LeaseState`].
//! * [`LeaseKeeper::release`] sends DHCPRELEASE; dropping the keeper stops renewing and sends
//!   nothing (an hnsd restart must not give the address away).
//!
//! ## Who does what
//!
//! mozim 0.3.4 (`default-features = false`, so no second rtnetlink) does DISCOVER/OFFER/
//! REQUEST/ACK, INIT-REBOOT and RELEASE in its proxy mode. Where it falls short:
//!
//! * It cannot renew in proxy mode: its RENEWING binds a UDP socket to the container's
//!   address in the host's namespace, which fails, so it waits for T2 and rebinds by
//!   broadcast. RENEWING/REBINDING are therefore sent here, with dhcproto-encoded messages
//!   over a packet socket of our own (`renew.rs`, `packet.rs`).
//! * Its lease keeps the server's MAC private, and unicast renewals need it: our packet
//!   socket watches mozim's exchange and takes it from the DHCPACK (`exchange.rs`).
//! * Its lease type is `#[non_exhaustive]` with that MAC private, so a stored lease can only
//!   be rebuilt without it: a RELEASE for a lease mozim did not itself get (resumed while no
//!   server answered, or rebound by another server) goes out as a broadcast frame to the
//!   server's IP, which Linux servers accept (RFC 1122 3.3.6 says hosts SHOULD drop it).
//! * Its own timeout leaves the client in an error state; timeouts are applied outside it.
//! * Without its `netlink` feature it cannot look up the uplink's index; done here.
//!
//! ## Namespaces and privileges
//!
//! Needs `CAP_NET_RAW` (packet sockets). The uplink name is resolved, and every socket
//! opened, by whichever thread runs the call or the keeper task, so run them on a runtime
//! whose threads are all in the uplink's namespace (hnsd's host namespace). Renewal answers
//! are unicast by the server to the leased address, so the container must hold that
//! address (and answer ARP for it) by T1 — which it does once hnsd has configured it.

mod error;
mod exchange;
mod keeper;
mod lease;
mod packet;
mod renew;
pub mod v6;

pub use error::{DhcpError, MacAddr, Result};
pub use keeper::{LeaseKeeper, LeaseState, acquire, resume};
pub use lease::Lease;
pub use v6::{Lease6, Lease6Keeper, Lease6State};
