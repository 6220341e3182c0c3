//! Ethernet (MAC) addresses of endpoints.
//!
//! The API speaks the Windows notation (`00-15-5D-AA-BB-CC`) because that is
//! what HNS clients parse; the kernel speaks the Linux notation
//! (`00:15:5d:aa:bb:cc`). Both are accepted on input.
//!
//! Addresses given by users are checked for being usable as a NIC address:
//! multicast, broadcast and all-zero addresses are refused, because the
//! kernel either rejects them or the endpoint silently gets no traffic.
//!
//! Generated addresses come in two kinds: [`Mac::from_ip`] derives a stable
//! address from the endpoint's IP under the Hyper-V OUI, so Windows users see
//! the familiar `00-15-5D` prefix and the MAC survives re-creation of the
//! endpoint; [`Mac::random`] gives a locally administered address when no IP
//! is known.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rand::RngCore;

/// The Hyper-V organisationally unique identifier, `00-15-5D`.
pub const HYPERV_OUI: [u8; 3] = [0x00, 0x15, 0x5d];

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

/// Why a MAC address string was refused. Each variant carries the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six pairs of hex digits separated by `:` or `-`.
    #[error(
        "MAC address {value:?} is malformed: expected six pairs of hex digits separated by \
         '-' or ':', such as 00-15-5D-AA-BB-CC"
    )]
    Format { value: String },
    /// The group bit (low bit of the first octet) is set.
    #[error("MAC address {value} is a multicast address; a NIC needs a unicast MAC")]
    Multicast { value: String },
    /// All six octets are zero.
    #[error("MAC address {value} is all zeros, which no NIC can use; choose another MAC")]
    Zero { value: String },
    /// All six octets are 0xff.
    #[error("MAC address {value} is the broadcast address; a NIC needs a unicast MAC")]
    Broadcast { value: String },
}

impl Mac {
    /// Parses `00:15:5d:aa:bb:cc` or `00-15-5D-AA-BB-CC` (any case, one kind
    /// of separator throughout) and checks that the address is usable by a
    /// NIC: not multicast, not all-zero, not broadcast.
    pub fn parse(s: &str) -> Result<Mac, MacError> {
        let format = || MacError::Format {
            value: s.to_string(),
        };
        let sep = match s.as_bytes().get(2) {
            Some(b':') => ':',
            Some(b'-') => '-',
            _ => return Err(format()),
        };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(format)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| format())?;
        }
        if parts.next().is_some() {
            return Err(format());
        }

        let mac = Mac(octets);
        let value = s.to_string();
        if octets == [0; 6] {
            Err(MacError::Zero { value })
        } else if octets == [0xff; 6] {
            Err(MacError::Broadcast { value })
        } else if mac.is_multicast() {
            Err(MacError::Multicast { value })
        } else {
            Ok(mac)
        }
    }

    /// Windows form, `00-15-5D-AA-BB-CC`: what the API emits.
    pub fn to_windows_string(&self) -> String {
        self.join('-', true)
    }

    /// Linux form, `00:15:5d:aa:bb:cc`: what the kernel and `ip link` use.
    pub fn to_linux_string(&self) -> String {
        self.join(':', false)
    }

    /// A deterministic MAC for an endpoint: the Hyper-V OUI `00-15-5D`
    /// followed by the low three bytes of the address (IPv4 or IPv6).
    pub fn from_ip(ip: IpAddr) -> Mac {
        let low: [u8; 3] = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                [o[1], o[2], o[3]]
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                [o[13], o[14], o[15]]
            }
        };
        let [a, b, c] = HYPERV_OUI;
        Mac([a, b, c, low[0], low[1], low[2]])
    }

    /// A random locally administered unicast MAC: bit 1 of the first octet
    /// set (locally administered), bit 0 clear (unicast).
    pub fn random() -> Mac {
        let mut octets = [0u8; 6];
        rand::rng().fill_bytes(&mut octets);
        octets[0] = (octets[0] | 0x02) & !0x01;
        Mac(octets)
    }

    /// The group bit: set for multicast (and broadcast) addresses.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// The locally-administered bit.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    fn join(&self, sep: char, upper: bool) -> String {
        let mut out = String::with_capacity(17);
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(sep);
            }
            if upper {
                out.push_str(&format!("{b:02X}"));
            } else {
                out.push_str(&format!("{b:02x}"));
            }
        }
        out
    }
}

/// Displays the Windows form, `00-15-5D-AA-BB-CC`.
impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_windows_string())
    }
}

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Mac, MacError> {
        Mac::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Mac = Mac([0x00, 0x15, 0x5d, 0xaa, 0xbb, 0xcc]);

    #[test]
    fn parses_both_notations_any_case() {
        for s in [
            "00:15:5d:aa:bb:cc",
            "00-15-5D-AA-BB-CC",
            "00-15-5d-Aa-bB-cc",
            "00:15:5D:AA:BB:CC",
        ] {
            assert_eq!(Mac::parse(s), Ok(M), "{s}");
        }
        assert_eq!("00-15-5D-AA-BB-CC".parse::<Mac>(), Ok(M));
    }

    #[test]
    fn malformed_strings_are_refused() {
        for s in [
            "",
            "00:15:5d:aa:bb",
            "00:15:5d:aa:bb:cc:dd",
            "00:15:5d-aa:bb:cc",
            "0:15:5d:aa:bb:cc",
            "000:15:5d:aa:bb:cc",
            "00:15:5d:aa:bb:cg",
            "00155daabbcc",
            "00.15.5d.aa.bb.cc",
            "00:15:5d:aa:bb:+c",
            " 00:15:5d:aa:bb:cc",
            "00:15:5d:aa:bb:cc:",
            "é0:15:5d:aa:bb:cc",
        ] {
            let e = Mac::parse(s).unwrap_err();
            assert!(matches!(e, MacError::Format { .. }), "{s:?}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("{s:?}")), "{msg}");
            assert!(msg.contains("00-15-5D-AA-BB-CC"), "{msg}");
        }
    }

    #[test]
    fn multicast_is_refused() {
        let e = Mac::parse("01:00:5e:00:00:01").unwrap_err();
        assert_eq!(
            e.to_string(),
            "MAC address 01:00:5e:00:00:01 is a multicast address; a NIC needs a unicast MAC"
        );
        assert!(matches!(
            Mac::parse("33-33-00-00-00-01"),
            Err(MacError::Multicast { .. })
        ));
    }

    #[test]
    fn zero_and_broadcast_are_refused() {
        let e = Mac::parse("00:00:00:00:00:00").unwrap_err();
        assert!(matches!(e, MacError::Zero { .. }));
        assert!(
            e.to_string().contains("00:00:00:00:00:00 is all zeros"),
            "{e}"
        );
        let e = Mac::parse("FF-FF-FF-FF-FF-FF").unwrap_err();
        assert!(matches!(e, MacError::Broadcast { .. }));
        assert!(
            e.to_string()
                .contains("FF-FF-FF-FF-FF-FF is the broadcast address"),
            "{e}"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(M.to_windows_string(), "00-15-5D-AA-BB-CC");
        assert_eq!(M.to_linux_string(), "00:15:5d:aa:bb:cc");
        assert_eq!(M.to_string(), "00-15-5D-AA-BB-CC");
        assert_eq!(Mac::parse(&M.to_linux_string()), Ok(M));
    }

    #[test]
    fn from_ip_uses_hyperv_oui_and_low_bytes() {
        let v4 = Mac::from_ip("172.20.3.4".parse().unwrap());
        assert_eq!(v4.to_windows_string(), "00-15-5D-14-03-04");
        let v6 = Mac::from_ip("fd00:1::ab:cdef".parse().unwrap());
        assert_eq!(v6.to_windows_string(), "00-15-5D-AB-CD-EF");
        assert!(!v4.is_multicast() && !v4.is_local());
        assert_eq!(Mac::parse(&v4.to_string()), Ok(v4));
    }

    #[test]
    fn random_is_local_unicast_and_varies() {
        let macs: Vec<Mac> = (0..64).map(|_| Mac::random()).collect();
        for m in &macs {
            assert!(m.is_local(), "{m}");
            assert!(!m.is_multicast(), "{m}");
            assert_eq!(Mac::parse(&m.to_string()), Ok(*m));
        }
        let distinct: std::collections::HashSet<_> = macs.iter().collect();
        assert!(distinct.len() > 60, "random MACs repeat too often");
    }
}
