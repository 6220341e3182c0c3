//! [`LeaseKeeper`]: the task that keeps one container's lease alive, and the entry points
//! [`acquire`] and [`resume`] that start it.
//!
//! Lifecycle of the task (RFC 2131 4.4.5):
//!
//! ```text
//!  BOUND --T1--> RENEWING (unicast to the server) --T2--> REBINDING (broadcast) --expiry--+
//!    ^               | ACK                                 | ACK                         |
//!    +---------------+-------------------------------------+                             |
//!    |                                                  DHCPNAK from either, or expiry:  v
//!    +----------- new lease <-- DISCOVER, retried until it works <-- LOST (reported) ----+
//! ```
//!
//! Every bound lease (the first, each renewal, each replacement) and every loss is published
//! on a `watch` channel. The task owns all its state, so stopping it is just dropping it:
//! [`Drop`] aborts it (nothing is sent: an hnsd restart must keep the lease), and
//! [`LeaseKeeper::release`] asks it to stop and send DHCPRELEASE.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{DhcpError, MacAddr, Result};
use crate::exchange::{self, Held, Reboot, Target};
use crate::lease::Lease;
use crate::renew::{self, Dest, Reply};

/// What the keeper currently holds, as published on [`LeaseKeeper::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LeaseState {
    /// A valid lease: the first one, a renewal (same configuration, later `obtained_at`) or
    /// a replacement after a loss (compare with [`Lease::same_config`] to see whether the
    /// container must be reprogrammed). Store it: it is what [`resume`] takes.
    Bound { lease: Lease },
    /// The lease expired without renewal or a server refused it (DHCPNAK); RFC 2131 says
    /// the address must no longer be used. The keeper keeps trying to get a new lease and
    /// publishes `Bound` when it does.
    Lost { previous: Lease, reason: String },
}

/// Retry timing, gathered in one place.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// First wait for an answer in RENEWING/REBINDING; doubles per retransmission up to
    /// `max_wait`, so a lost datagram costs seconds, not hours.
    first_wait: Duration,
    /// After that, RFC 2131 4.4.5's pace: half the time left in the phase, at least this.
    max_wait: Duration,
    /// How long one DISCOVER attempt runs after a loss before backing off.
    discover_attempt: Duration,
    /// Pause between DISCOVER attempts after a loss.
    discover_pause: Duration,
}

const TIMING: Timing = Timing {
    first_wait: Duration::from_secs(4),
    max_wait: Duration::from_secs(64),
    discover_attempt: Duration::from_secs(30),
    discover_pause: Duration::from_secs(10),
};

/// Gets a new lease for `mac` (DHCPDISCOVER), sending from `uplink` with `mac` as source and
/// chaddr, and starts a [`LeaseKeeper`] that renews it.
///
/// Must be called from a tokio runtime (the keeper is a `tokio::spawn`ed task) whose threads
/// are in the network namespace where `uplink` lives: the uplink name is resolved and every
/// packet socket is opened by the calling/running thread. `timeout` bounds the whole
/// exchange; mozim retransmits DHCPDISCOVER within it (after 3-5 s, then 7-9 s later, ...).
pub async fn acquire(
    uplink: &str,
    mac: [u8; 6],
    hostname: Option<&str>,
    timeout: Duration,
) -> Result<(LeaseKeeper, Lease)> {
    let target = Target::new(uplink, mac, hostname)?;
    let held = exchange::discover(&target, timeout).await?;
    tracing::info!(mac = %target.mac, uplink, address = %held.lease.address, server = %held.lease.server, "DHCP lease acquired");
    let lease = held.lease.clone();
    Ok((LeaseKeeper::spawn(target, held, TIMING), lease))
}

/// After an hnsd restart: asks to keep `previous` (INIT-REBOOT, a broadcast DHCPREQUEST for
/// the stored address) instead of starting over with DHCPDISCOVER, then keeps the lease
/// like [`acquire`].
///
/// * The server confirms: the returned lease has the same address and fresh times.
/// * The server refuses (DHCPNAK, e.g. the address was given away): a new lease is
///   requested within the same `timeout`; the returned address then differs.
/// * Nobody answers within `timeout`: if `previous` has not expired it is kept
///   provisionally (RFC 2131 3.7) and returned as is, and the keeper renews it on its
///   schedule; if it has expired, [`DhcpError::ResumeUnanswered`].
pub async fn resume(
    uplink: &str,
    mac: [u8; 6],
    hostname: Option<&str>,
    previous: Lease,
    timeout: Duration,
) -> Result<(LeaseKeeper, Lease)> {
    let target = Target::new(uplink, mac, hostname)?;
    let held = match exchange::reboot(&target, &previous, timeout).await? {
        Reboot::Bound(held) => {
            tracing::info!(mac = %target.mac, uplink, previous = %previous.address, address = %held.lease.address, "DHCP lease resumed");
            *held
        }
        Reboot::Unanswered if !previous.is_expired(SystemTime::now()) => {
            tracing::warn!(mac = %target.mac, uplink, address = %previous.address, "no DHCP server answered; keeping the stored lease until it expires");
            Held::unconfirmed(previous)
        }
        Reboot::Unanswered => {
            return Err(DhcpError::ResumeUnanswered {
                mac: target.mac,
                uplink: target.uplink,
                address: previous.address,
                timeout,
                expired_at: previous.expires_at(),
            });
        }
    };
    let lease = held.lease.clone();
    Ok((LeaseKeeper::spawn(target, held, TIMING), lease))
}

type ReleaseRequest = oneshot::Sender<Result<()>>;

/// Owns the renewal task of one lease. Dropping it stops the task without releasing.
#[derive(Debug)]
pub struct LeaseKeeper {
    mac: MacAddr,
    uplink: String,
    state: watch::Receiver<LeaseState>,
    release: Option<oneshot::Sender<ReleaseRequest>>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    fn spawn(target: Target, held: Held, timing: Timing) -> LeaseKeeper {
        let (tx, rx) = watch::channel(LeaseState::Bound {
            lease: held.lease.clone(),
        });
        let (release_tx, release_rx) = oneshot::channel();
        let (mac, uplink) = (target.mac, target.uplink.clone());
        let session = Session {
            target,
            held: Some(held),
            state: tx,
            timing,
        };
        let task = tokio::spawn(session.run(release_rx));
        LeaseKeeper {
            mac,
            uplink,
            state: rx,
            release: Some(release_tx),
            task,
        }
    }

    /// The container MAC this keeper works for.
    pub fn mac(&self) -> [u8; 6] {
        self.mac.0
    }

    pub fn uplink(&self) -> &str {
        &self.uplink
    }

    /// The latest state.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change (`changed().await`). It reports an error once the
    /// keeper is released or dropped.
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Stops renewing and sends DHCPRELEASE for the lease currently held (nothing is sent
    /// while the lease is lost). Releasing is a courtesy to the server (RFC 2131 4.4.6
    /// expects no answer), so an `Ok` means "sent", not "acknowledged".
    pub async fn release(mut self) -> Result<()> {
        let gone = || DhcpError::KeeperGone {
            mac: self.mac,
            uplink: self.uplink.clone(),
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let sender = self.release.take().ok_or_else(gone)?;
        sender.send(reply_tx).map_err(|_| gone())?;
        reply_rx.await.map_err(|_| gone())?
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        // After a release the task has finished and this is a no-op.
        self.task.abort();
    }
}

/// The task's state. Only `held` matters across await points, and it changes only once an
/// exchange has completed, so cancelling the task anywhere loses nothing.
struct Session {
    target: Target,
    /// `None` while the lease is lost.
    held: Option<Held>,
    state: watch::Sender<LeaseState>,
    timing: Timing,
}

impl Session {
    async fn run(mut self, release: oneshot::Receiver<ReleaseRequest>) {
        let request = tokio::select! {
            never = self.keep() => match never {},
            request = release => request,
        };
        // The keeper dropped its end without asking: nothing to do.
        let Ok(reply) = request else { return };
        let result = match &self.held {
            Some(held) => {
                let r = exchange::release(&self.target, held).await;
                if r.is_ok() {
                    tracing::info!(mac = %self.target.mac, uplink = %self.target.uplink, address = %held.lease.address, "DHCP lease released");
                }
                r
            }
            None => Ok(()),
        };
        let _ = reply.send(result);
    }

    /// Renews forever; replaces the lease when it is lost.
    async fn keep(&mut self) -> std::convert::Infallible {
        loop {
            match self.held.clone() {
                Some(held) => {
                    if let Err(reason) = self.extend(held).await {
                        self.lose(reason);
                    }
                }
                None => self.reacquire().await,
            }
        }
    }

    fn bind(&mut self, held: Held) {
        self.state.send_replace(LeaseState::Bound {
            lease: held.lease.clone(),
        });
        self.held = Some(held);
    }

    fn lose(&mut self, reason: String) {
        if let Some(held) = self.held.take() {
            tracing::warn!(mac = %self.target.mac, uplink = %self.target.uplink, address = %held.lease.address, "DHCP lease lost: {reason}");
            self.state.send_replace(LeaseState::Lost {
                previous: held.lease,
                reason,
            });
        }
    }

    /// Waits for T1, then renews (unicast) until T2, then rebinds (broadcast) until expiry.
    /// `Ok` once a new lease is bound, `Err(reason)` when it is lost.
    async fn extend(&mut self, held: Held) -> std::result::Result<(), String> {
        let lease = &held.lease;
        sleep_until_wall(lease.renew_at()).await;
        // Without the server's MAC the renewal can only be broadcast, which any server may
        // answer — i.e. rebinding early. That is allowed, and better than waiting for T2.
        let renew_dest = match held.server_mac {
            Some(mac) => Dest::Server {
                ip: lease.server,
                mac,
            },
            None => Dest::Broadcast,
        };
        let phases = [
            ("renewed", renew_dest, lease.rebind_at()),
            ("rebound", Dest::Broadcast, lease.expires_at()),
        ];
        for (what, dest, until) in phases {
            match self.retransmit(&held, dest, until).await {
                Some(Ok(mut renewed)) => {
                    tracing::debug!(mac = %self.target.mac, address = %renewed.lease.address, "DHCP lease {what}");
                    // mozim's record (which alone carries the server's MAC for its RELEASE)
                    // stays valid only while the binding is the same; otherwise it is
                    // rebuilt and RELEASE goes to the new server by broadcast frame.
                    if renewed.lease.server != lease.server
                        || renewed.lease.address != lease.address
                    {
                        renewed.mozim = renewed.lease.to_mozim();
                    }
                    self.bind(renewed);
                    return Ok(());
                }
                Some(Err(reason)) => return Err(reason),
                None => {}
            }
        }
        Err(format!(
            "lease expired at {} without a renewal",
            humantime::format_rfc3339_seconds(lease.expires_at())
        ))
    }

    /// Sends the request to `dest`, retransmitting (see [`Timing`]) until `until` (wall clock).
    /// `Some(Ok)`: DHCPACK; `Some(Err)`: DHCPNAK; `None`: no answer before `until`.
    async fn retransmit(
        &self,
        held: &Held,
        dest: Dest,
        until: SystemTime,
    ) -> Option<std::result::Result<Held, String>> {
        let t = &self.target;
        let mut backoff = self.timing.first_wait;
        loop {
            let left = until
                .duration_since(SystemTime::now())
                .ok()
                .filter(|d| !d.is_zero())?;
            let this_wait = if backoff < self.timing.max_wait {
                backoff
            } else {
                (left / 2).max(backoff)
            }
            .min(left);
            backoff = (backoff * 2).min(self.timing.max_wait);
            // A fresh socket per attempt follows an uplink that was re-created meanwhile.
            let sock = match t.open_socket() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(mac = %t.mac, "cannot renew now: {e}");
                    tokio::time::sleep(this_wait).await;
                    continue;
                }
            };
            match renew::extend(&sock, t, &held.lease, dest, this_wait).await {
                Ok(Some(Reply::Ack { lease, server_mac })) => {
                    let mozim = held.mozim.clone();
                    return Some(Ok(Held {
                        lease,
                        mozim,
                        server_mac: Some(server_mac),
                    }));
                }
                Ok(Some(Reply::Nak { server, message })) => {
                    let why = message.map(|m| format!(": {m}")).unwrap_or_default();
                    return Some(Err(format!(
                        "DHCP server {server} refused the renewal (DHCPNAK{why})"
                    )));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(mac = %t.mac, "DHCP renewal send/receive failed: {e}");
                    tokio::time::sleep(this_wait).await;
                }
            }
        }
    }

    /// DISCOVER until a lease is bound.
    async fn reacquire(&mut self) {
        loop {
            match exchange::discover(&self.target, self.timing.discover_attempt).await {
                Ok(held) => {
                    tracing::info!(mac = %self.target.mac, uplink = %self.target.uplink, address = %held.lease.address, "new DHCP lease after a loss");
                    self.bind(held);
                    return;
                }
                Err(e) => {
                    tracing::warn!("{e}; retrying in {:?}", self.timing.discover_pause);
                    tokio::time::sleep(self.timing.discover_pause).await;
                }
            }
        }
    }
}

/// Sleeps until wall-clock time `t`. Sleeps in slices of at most an hour so that a lease of
/// days (or "infinite") never asks tokio for an absurd deadline, and a changed clock is
/// noticed within the hour.
async fn sleep_until_wall(t: SystemTime) {
    loop {
        let Ok(left) = t.duration_since(SystemTime::now()) else {
            return;
        };
        if left.is_zero() {
            return;
        }
        tokio::time::sleep_until(Instant::now() + left.min(Duration::from_secs(3600))).await;
    }
}
