//! DHCPv6 (stateful, IA_NA) for a container on a transparent network, beside SLAAC.
//!
//! ## Why inside the compartment, unlike DHCPv4
//!
//! mozim 0.3.4's DHCPv6 client has no proxy mode: it talks over a UDP socket bound to
//! `[link-local]:546` of one interface. Run in the host namespace it would send from the host's
//! link-local address, servers would answer the host, and every container would want the
//! same port 546 on the uplink. DHCPv6 needs no proxy, though: the server identifies a client
//! by its DUID, not by the frame's source. So the client runs where the container's
//! interface is, in its compartment: the macvlan child there has the container's MAC and
//! link-local address and port 546 is free, and the DUID is DUID-LL of the container's MAC, so
//! the lease is the container's and nothing about the exchange differs from a DHCPv6 client
//! inside the container.
//!
//! mozim opens its sockets lazily from whichever thread polls it, so each keeper owns an OS
//! thread that joined the compartment and runs a current-thread tokio runtime; the compartment
//! namespace is held open by that thread until the keeper stops.
//!
//! ## What the keeper does
//!
//! It waits for the interface's link-local address to be usable (DAD done), then lets mozim
//! Solicit/Request, Renew at T1, Rebind at T2, and Solicit again once the lease expired —
//! all in the background, so an attach never waits for a DHCPv6 server (a LAN without one
//! just gets Solicits, backed off to one an hour by mozim, RFC 8415 SOL_MAX_RT). Every change
//! is published as a [`Lease6State`]; the caller configures the address (a /128).
//! [`Lease6Keeper::release`] sends a Release; dropping the keeper stops it silently.

mod lease;
mod link;

use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime};

use mozim::{DhcpV6Client, DhcpV6Config, DhcpV6Lease, DhcpV6Mode, DhcpV6State};
use nix::sched::{CloneFlags, setns};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::error::{DhcpError, MacAddr, Result};
pub use lease::{Lease6, iaid};

/// What a [`Lease6Keeper`] holds, as published on [`Lease6Keeper::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Lease6State {
    /// No lease yet: waiting for the link-local address, or soliciting.
    Soliciting,
    /// A lease: the first, a renewal (same address, later `obtained_at`) or a new one.
    Bound { lease: Lease6 },
    /// The lease expired without a renewal; its address must no longer be used. The keeper
    /// goes on soliciting.
    Lost { previous: Lease6, reason: String },
}

/// How often the link-local address is looked for while it is missing or tentative.
const LINK_POLL: Duration = Duration::from_millis(200);
/// How often a running client checks that its interface is still the one it was given.
const LINK_WATCH: Duration = Duration::from_secs(2);
/// Pause before starting over after mozim gave up with an error.
const RETRY_PAUSE: Duration = Duration::from_secs(5);
/// A Release expects a Reply that mozim does not wait for; this bounds sending it.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

type ReleaseRequest = oneshot::Sender<Result<()>>;

/// Owns the DHCPv6 client of one container interface. Dropping it stops the client without
/// a Release (an hnsd restart must not give the address away).
#[derive(Debug)]
pub struct Lease6Keeper {
    target: Target6,
    state: watch::Receiver<Lease6State>,
    release: Option<oneshot::Sender<ReleaseRequest>>,
}

/// Starts the DHCPv6 client of the container interface `ifname` (MAC `mac`) in the network
/// namespace `ns`. Returns at once; the lease arrives on [`Lease6Keeper::subscribe`].
pub fn start(ns: OwnedFd, ifname: &str, mac: [u8; 6]) -> Result<Lease6Keeper> {
    let target = Target6 { ifname: ifname.to_string(), mac: MacAddr(mac) };
    crate::exchange::check_mac(target.mac)?;
    let (state_tx, state_rx) = watch::channel(Lease6State::Soliciting);
    let (release_tx, release_rx) = oneshot::channel();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let t = target.clone();
    std::thread::Builder::new()
        .name(format!("dhcp6-{ifname}"))
        .spawn(move || {
            let entered = setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| t.err("enter the compartment", e));
            drop(ns);
            let rt = entered.and_then(|()| {
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| t.err("start its runtime", e))
            });
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => return drop(started_tx.send(Err(e))),
            };
            let _ = started_tx.send(Ok(()));
            let session = Session { target: t, held: None, state: state_tx };
            rt.block_on(session.run(release_rx));
        })
        .map_err(|e| target.err("spawn its thread", e))?;
    started_rx.recv().map_err(|_| target.err("start", "its thread ended"))??;
    Ok(Lease6Keeper { target, state: state_rx, release: Some(release_tx) })
}

impl Lease6Keeper {
    pub fn state(&self) -> Lease6State {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change; it errs once the keeper is released or dropped.
    pub fn subscribe(&self) -> watch::Receiver<Lease6State> {
        self.state.clone()
    }

    /// Stops the client and sends a Release for the lease held (nothing while there is none).
    /// `Ok` means sent, not acknowledged.
    pub async fn release(mut self) -> Result<()> {
        let gone = || self.target.err("release", "the DHCPv6 client is no longer running");
        let (reply_tx, reply_rx) = oneshot::channel();
        self.release.take().ok_or_else(gone)?.send(reply_tx).map_err(|_| gone())?;
        reply_rx.await.map_err(|_| gone())?
    }
}

/// One container interface.
#[derive(Debug, Clone)]
struct Target6 {
    ifname: String,
    mac: MacAddr,
}

impl Target6 {
    fn err(&self, op: &'static str, reason: impl std::fmt::Display) -> DhcpError {
        DhcpError::V6 { mac: self.mac, ifname: self.ifname.clone(), op, reason: reason.to_string() }
    }

    fn config(&self, index: u32, link_local: std::net::Ipv6Addr) -> DhcpV6Config {
        let mut c = DhcpV6Config::new(&self.ifname, DhcpV6Mode::NonTemporaryAddresses);
        c.set_iface_index(index)
            .set_link_local_ip(link_local)
            .set_duid(lease::duid(self.mac.0))
            .set_iaid(iaid(self.mac.0));
        c
    }

    /// Returns once the interface no longer has this index and link-local address.
    async fn link_changed(&self, index: u32, link_local: std::net::Ipv6Addr) {
        while link::usable_link_local(&link::read_if_inet6(), &self.ifname) == Some((index, link_local)) {
            tokio::time::sleep(LINK_WATCH).await;
        }
    }

    /// Waits until the interface has a usable link-local address (see `link.rs`).
    async fn link_local(&self) -> (u32, std::net::Ipv6Addr) {
        loop {
            if let Some(found) = link::usable_link_local(&link::read_if_inet6(), &self.ifname) {
                return found;
            }
            tokio::time::sleep(LINK_POLL).await;
        }
    }
}

/// The thread's state. `held` changes only when mozim reports, so stopping anywhere is safe.
struct Session {
    target: Target6,
    /// mozim's record of the lease held, for the Release.
    held: Option<DhcpV6Lease>,
    state: watch::Sender<Lease6State>,
}

impl Session {
    async fn run(mut self, release: oneshot::Receiver<ReleaseRequest>) {
        let request = tokio::select! {
            never = self.keep() => match never {},
            request = release => request,
        };
        // The keeper was dropped without asking: stop quietly.
        let Ok(reply) = request else { return };
        let _ = reply.send(self.release().await);
    }

    async fn keep(&mut self) -> Infallible {
        loop {
            let (index, link_local) = self.target.link_local().await;
            let mut client = match DhcpV6Client::init(self.target.config(index, link_local), None).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(mac = %self.target.mac, ifname = %self.target.ifname, "DHCPv6 client: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            loop {
                let step = tokio::select! {
                    step = client.run() => step,
                    // mozim keeps the index and address it was given and retries forever on
                    // a link re-created by the reconciler: start over with the new ones.
                    () = self.target.link_changed(index, link_local) => break,
                };
                match step {
                    Ok(DhcpV6State::Done(lease)) => self.bind(*lease),
                    // mozim solicits again once a lease ran out in Rebind.
                    Ok(DhcpV6State::Solicit) => self.lose("the lease expired without a renewal"),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(mac = %self.target.mac, ifname = %self.target.ifname, "DHCPv6: {e}; starting over");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        break;
                    }
                }
            }
        }
    }

    fn bind(&mut self, lease: DhcpV6Lease) {
        let mine = Lease6::from_mozim(&lease, SystemTime::now());
        tracing::debug!(mac = %self.target.mac, address = %mine.address, "DHCPv6 lease bound");
        self.state.send_replace(Lease6State::Bound { lease: mine });
        self.held = Some(lease);
    }

    fn lose(&mut self, reason: &str) {
        let Lease6State::Bound { lease } = self.state.borrow().clone() else { return };
        tracing::warn!(mac = %self.target.mac, address = %lease.address, "DHCPv6 lease lost: {reason}");
        self.held = None;
        self.state.send_replace(Lease6State::Lost { previous: lease, reason: reason.to_string() });
    }

    async fn release(&mut self) -> Result<()> {
        let Some(held) = self.held.take() else { return Ok(()) };
        let t = &self.target;
        let (index, link_local) =
            link::usable_link_local(&link::read_if_inet6(), &t.ifname).ok_or_else(|| t.err("release", "the interface has no usable link-local address"))?;
        let send = async {
            let mut client = DhcpV6Client::init(t.config(index, link_local), None).await?;
            client.release(&held).await
        };
        match tokio::time::timeout(RELEASE_TIMEOUT, send).await {
            Ok(Ok(())) => {
                tracing::info!(mac = %t.mac, address = %held.address, "DHCPv6 lease released");
                Ok(())
            }
            Ok(Err(e)) => Err(t.err("release", e)),
            Err(_) => Err(t.err("release", format!("sending took over {}", crate::error::secs(&RELEASE_TIMEOUT)))),
        }
    }
}
