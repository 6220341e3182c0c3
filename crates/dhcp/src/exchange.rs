//! The exchanges mozim does for us in proxy mode: DISCOVER/OFFER/REQUEST/ACK, INIT-REBOOT,
//! and RELEASE.
//!
//! mozim sends from a packet socket on the uplink with the container's MAC as source and
//! chaddr, which is exactly the proxy model. What it does not hand out is the server's MAC
//! (its lease keeps it in a crate-private field), and renew.rs needs that MAC to unicast
//! renewals. So while mozim runs, a second packet socket of ours listens too, and the
//! Ethernet source of the DHCPACK that granted the lease is taken from what it saw.

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use dhcproto::v4::{self, Decodable};
use mozim::{DhcpV4Client, DhcpV4Config, DhcpV4Lease, DhcpV4State};

use crate::error::{DhcpError, MacAddr, Result};
use crate::lease::Lease;
use crate::packet::{self, PacketSocket};

/// Who the client works for and where: one container MAC on one uplink.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub uplink: String,
    pub mac: MacAddr,
    pub hostname: Option<String>,
}

/// A lease together with what is needed to renew and release it.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub lease: Lease,
    /// mozim's own record of the lease, for mozim's DHCPRELEASE. For a lease that mozim did
    /// not get (a stored one resumed without an answer) it is rebuilt by `Lease::to_mozim`.
    pub mozim: DhcpV4Lease,
    /// The server's MAC, when seen; renewals are unicast to it.
    pub server_mac: Option<[u8; 6]>,
}

impl Held {
    pub(crate) fn unconfirmed(lease: Lease) -> Held {
        Held {
            mozim: lease.to_mozim(),
            lease,
            server_mac: None,
        }
    }
}

impl Target {
    pub(crate) fn new(uplink: &str, mac: [u8; 6], hostname: Option<&str>) -> Result<Target> {
        let t = Target {
            uplink: uplink.to_string(),
            mac: MacAddr(mac),
            hostname: hostname.map(str::to_string),
        };
        check_mac(t.mac)?;
        t.ifindex()?;
        Ok(t)
    }

    /// The uplink's index in the calling thread's namespace, looked up on every exchange so a
    /// re-created uplink is followed.
    pub(crate) fn ifindex(&self) -> Result<u32> {
        let name = std::ffi::CString::new(self.uplink.as_str()).map_err(|_| self.no_uplink())?;
        match unsafe { libc::if_nametoindex(name.as_ptr()) } {
            0 => Err(self.no_uplink()),
            i => Ok(i),
        }
    }

    fn no_uplink(&self) -> DhcpError {
        DhcpError::UplinkNotFound {
            uplink: self.uplink.clone(),
            mac: self.mac,
        }
    }

    pub(crate) fn io(&self, op: &'static str, reason: impl std::fmt::Display) -> DhcpError {
        DhcpError::Io {
            mac: self.mac,
            uplink: self.uplink.clone(),
            op,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn open_socket(&self) -> Result<PacketSocket> {
        PacketSocket::open(self.ifindex()?)
            .map_err(|e| self.io("open packet socket on the uplink", e))
    }

    fn mozim_config(&self, ifindex: u32) -> Result<DhcpV4Config> {
        let mut config = DhcpV4Config::new_proxy(&self.uplink, &self.mac.colon())
            .map_err(|e| self.io("configure mozim", e))?;
        // Without the `netlink` feature mozim cannot look the index up itself.
        config.set_iface_index(ifindex);
        // Client identifier 01+MAC (RFC 2132 9.14). renew.rs sends the same, so the server
        // files every message of this client under one identity.
        config.use_mac_as_client_id();
        if let Some(name) = &self.hostname {
            config.set_host_name(name);
        }
        Ok(config)
    }

    fn bad_lease(&self, server: Ipv4Addr, reason: String) -> DhcpError {
        DhcpError::BadLease {
            mac: self.mac,
            uplink: self.uplink.clone(),
            server,
            reason,
        }
    }
}

/// Refuses a MAC no NIC can use: the DHCP server would answer nobody.
pub(crate) fn check_mac(mac: MacAddr) -> Result<()> {
    let reason = if mac.0[0] & 1 == 1 {
        "it is a multicast address"
    } else if mac.0 == [0; 6] {
        "it is all zeros"
    } else {
        return Ok(());
    };
    Err(DhcpError::InvalidMac { mac, reason })
}

/// How far a mozim run got before it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INIT-REBOOT request sent, no answer yet.
    Rebooting,
    /// DHCPDISCOVER sent, no offer yet.
    Discovering,
    /// Offer received, DHCPREQUEST sent, no ACK yet.
    Requesting,
}

/// INIT: DHCPDISCOVER until a lease is bound or `timeout` passes.
pub(crate) async fn discover(t: &Target, timeout: Duration) -> Result<Held> {
    match run_mozim(t, None, timeout).await? {
        Ok(held) => Ok(held),
        Err(phase) => Err(timeout_error(t, phase, timeout)),
    }
}

/// The outcome of [`reboot`].
pub(crate) enum Reboot {
    /// A lease is bound: the stored one confirmed, or (after a DHCPNAK) a new one.
    Bound(Box<Held>),
    /// Nobody answered the INIT-REBOOT request within the timeout.
    Unanswered,
}

/// INIT-REBOOT (RFC 2131 4.4.2): ask to keep `previous.address`. On DHCPNAK mozim goes on
/// with DHCPDISCOVER within the same `timeout`.
pub(crate) async fn reboot(t: &Target, previous: &Lease, timeout: Duration) -> Result<Reboot> {
    match run_mozim(t, Some(previous.to_mozim()), timeout).await? {
        Ok(held) => Ok(Reboot::Bound(Box::new(held))),
        Err(Phase::Rebooting) => Ok(Reboot::Unanswered),
        Err(phase) => Err(timeout_error(t, phase, timeout)),
    }
}

fn timeout_error(t: &Target, phase: Phase, timeout: Duration) -> DhcpError {
    let (mac, uplink) = (t.mac, t.uplink.clone());
    match phase {
        Phase::Requesting => DhcpError::NoAck {
            mac,
            uplink,
            timeout,
        },
        Phase::Rebooting | Phase::Discovering => DhcpError::NoOffer {
            mac,
            uplink,
            timeout,
        },
    }
}

/// Drives one mozim client until it reports a bound lease (`Ok(Ok)`) or `timeout` passes
/// (`Ok(Err(phase reached))`). mozim's own timeout is left off: its expiry poisons the
/// client, while dropping the future here simply closes its sockets.
async fn run_mozim(
    t: &Target,
    cached: Option<DhcpV4Lease>,
    timeout: Duration,
) -> Result<std::result::Result<Held, Phase>> {
    let ifindex = t.ifindex()?;
    let config = t.mozim_config(ifindex)?;
    let watcher = t.open_socket()?;
    let mut acks = Vec::new();
    let mut phase = if cached.is_some() {
        Phase::Rebooting
    } else {
        Phase::Discovering
    };
    let started = SystemTime::now();
    let mut client = DhcpV4Client::init(config, cached)
        .await
        .map_err(|e| t.io("start mozim", e))?;
    let run = async {
        loop {
            match client.run().await {
                Ok(DhcpV4State::Done(lease)) => return Ok(*lease),
                Ok(DhcpV4State::Selecting) => phase = Phase::Requesting,
                // Back at INIT after a DHCPNAK to INIT-REBOOT: now discovering.
                Ok(DhcpV4State::InitReboot) => phase = Phase::Discovering,
                Ok(_) => {}
                Err(e) => return Err(t.io("DHCP exchange", e)),
            }
        }
    };
    // The watcher is read while mozim runs, so a busy LAN cannot fill its queue and crowd
    // out the ACK that matters.
    let run_and_watch = async {
        tokio::select! {
            lease = run => lease,
            never = collect_acks(&watcher, t.mac.0, &mut acks) => match never {},
        }
    };
    let lease = match tokio::time::timeout(timeout, run_and_watch).await {
        Ok(result) => result?,
        Err(_elapsed) => return Ok(Err(phase)),
    };
    // The ACK that completed mozim's run may still be queued.
    drain_acks(&watcher, t.mac.0, &mut acks);
    // Lease times count from the request; mozim does not say when it sent it, so the start
    // of the exchange is used (earlier, hence safe).
    let converted = Lease::from_mozim(&lease, started).map_err(|r| t.bad_lease(lease.srv_id, r))?;
    // The newest ACK granting this address from this server is the binding one.
    let server_mac = acks
        .iter()
        .rev()
        .find(|a| a.address == converted.address && a.server.is_none_or(|s| s == converted.server))
        .map(|a| a.server_mac);
    Ok(Ok(Held {
        lease: converted,
        mozim: lease,
        server_mac,
    }))
}

/// A DHCPACK to our MAC seen on the wire.
struct AckSeen {
    server_mac: [u8; 6],
    address: Ipv4Addr,
    server: Option<Ipv4Addr>,
}

fn ack_for(frame: &[u8], mac: [u8; 6]) -> Option<AckSeen> {
    let (ep, payload) = packet::parse_frame(frame)?;
    let msg = v4::Message::from_bytes(payload).ok()?;
    if msg.opts().msg_type() != Some(v4::MessageType::Ack)
        || msg.chaddr().get(..6) != Some(&mac[..])
    {
        return None;
    }
    let server = match msg.opts().get(v4::OptionCode::ServerIdentifier) {
        Some(v4::DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    };
    Some(AckSeen {
        server_mac: ep.src_mac,
        address: msg.yiaddr(),
        server,
    })
}

async fn collect_acks(sock: &PacketSocket, mac: [u8; 6], acks: &mut Vec<AckSeen>) -> Infallible {
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) => acks.extend(ack_for(&buf[..n], mac)),
            // A broken watcher only costs the server's MAC (renewals are then broadcast).
            Err(_) => std::future::pending::<()>().await,
        }
    }
}

fn drain_acks(sock: &PacketSocket, mac: [u8; 6], acks: &mut Vec<AckSeen>) {
    let mut buf = [0u8; 2048];
    while let Ok(Some(n)) = sock.try_recv(&mut buf) {
        acks.extend(ack_for(&buf[..n], mac));
    }
}

/// DHCPRELEASE through mozim (RFC 2131 4.4.6: unicast to the server, from the leased
/// address; mozim sends it as a frame to the server's MAC, or to broadcast when unknown).
pub(crate) async fn release(t: &Target, held: &Held) -> Result<()> {
    let config = t.mozim_config(t.ifindex()?)?;
    let mut client = DhcpV4Client::init(config, None)
        .await
        .map_err(|e| t.io("start mozim", e))?;
    client
        .release(&held.mozim)
        .await
        .map_err(|e| t.io("send DHCPRELEASE", e))
}
