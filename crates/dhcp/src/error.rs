//! Errors of the DHCP client. Each one names the MAC (Windows notation, as the HNS API shows
//! it) and the uplink, so a failed endpoint create says which container and which network.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

/// A MAC in the notation the HNS API uses: `02-00-5E-10-00-01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02X}-{b:02X}-{c:02X}-{d:02X}-{e:02X}-{g:02X}")
    }
}

impl MacAddr {
    /// `02:00:5e:10:00:01`, the notation mozim parses.
    pub(crate) fn colon(&self) -> String {
        let [a, b, c, d, e, g] = self.0;
        format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// "5 s", "2.5 s": how timeouts appear in messages.
pub(crate) fn secs(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn time(t: &SystemTime) -> String {
    humantime::format_rfc3339_seconds(*t).to_string()
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DhcpError {
    /// The uplink name does not resolve in the namespace of the thread that asked.
    #[error("uplink {uplink} does not exist in hnsd's network namespace (DHCP for MAC {mac})")]
    UplinkNotFound { uplink: String, mac: MacAddr },

    /// A MAC no NIC can use: the DHCP server would answer nobody.
    #[error("MAC {mac} cannot get a DHCP lease: {reason}")]
    InvalidMac { mac: MacAddr, reason: &'static str },

    /// DHCPDISCOVER (retransmitted) got no DHCPOFFER.
    #[error("no DHCP offer for MAC {mac} on uplink {uplink} within {}", secs(.timeout))]
    NoOffer {
        mac: MacAddr,
        uplink: String,
        timeout: Duration,
    },

    /// An offer came but the DHCPREQUEST for it got no DHCPACK.
    #[error(
        "DHCP server offered an address to MAC {mac} on uplink {uplink} but did not acknowledge \
         the request within {}", secs(.timeout)
    )]
    NoAck {
        mac: MacAddr,
        uplink: String,
        timeout: Duration,
    },

    /// `resume`: nobody confirmed or refused the stored lease, and it has already expired, so
    /// it cannot be used even provisionally (RFC 2131 section 3.7).
    #[error(
        "no DHCP server confirmed lease {address} of MAC {mac} on uplink {uplink} within {}, and \
         that lease expired at {}", secs(.timeout), time(.expired_at)
    )]
    ResumeUnanswered {
        mac: MacAddr,
        uplink: String,
        address: Ipv4Addr,
        timeout: Duration,
        expired_at: SystemTime,
    },

    /// The server answered with something this client cannot use (no lease time, no mask...).
    #[error("DHCP server {server} gave MAC {mac} on uplink {uplink} an unusable lease: {reason}")]
    BadLease {
        mac: MacAddr,
        uplink: String,
        server: Ipv4Addr,
        reason: String,
    },

    /// Sockets and everything else below DHCP (no CAP_NET_RAW, uplink gone, ...).
    #[error("DHCP for MAC {mac} on uplink {uplink}: {op}: {reason}")]
    Io {
        mac: MacAddr,
        uplink: String,
        op: &'static str,
        reason: String,
    },

    /// DHCPv6, run inside the container's compartment on its interface `ifname`.
    #[error("DHCPv6 for MAC {mac} on {ifname} in its compartment: {op}: {reason}")]
    V6 {
        mac: MacAddr,
        ifname: String,
        op: &'static str,
        reason: String,
    },

    /// The keeper's task is gone (it panicked); nothing was released.
    #[error("DHCP lease keeper for MAC {mac} on uplink {uplink} is no longer running")]
    KeeperGone { mac: MacAddr, uplink: String },
}

pub type Result<T> = std::result::Result<T, DhcpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_mac_uplink_and_timeout() {
        let mac = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a]);
        let e = DhcpError::NoOffer {
            mac,
            uplink: "eth1".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            e.to_string(),
            "no DHCP offer for MAC 02-00-5E-10-00-0A on uplink eth1 within 5 s"
        );
        let e = DhcpError::NoAck {
            mac,
            uplink: "eth1".into(),
            timeout: Duration::from_millis(2500),
        };
        assert!(e.to_string().ends_with("within 2.5 s"), "{e}");
        assert_eq!(mac.colon(), "02:00:5e:10:00:0a");
    }
}
