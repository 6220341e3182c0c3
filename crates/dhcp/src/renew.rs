//! RENEWING and REBINDING (RFC 2131 4.4.5), done here because mozim 0.3.4 cannot renew in
//! proxy mode.
//!
//! Why mozim cannot: at T1 its client enters RENEWING and opens a UDP socket bound to
//! `yiaddr:68` on the uplink. In proxy mode that address belongs to the container, not to
//! the host's namespace, so the bind fails (EADDRNOTAVAIL); mozim then sleeps until T2 and
//! only renews by broadcasting in REBINDING. (Even with a non-local bind, the server's
//! unicast answer goes to the container's MAC and never reaches a host UDP socket.) Measured
//! against dnsmasq: a 120 s lease saw no request at T1 = 60 s and the first renewal at
//! T2 = 105 s. mozim's own proxy-mode design note says the same ("we skip renew stage").
//!
//! What is done instead: the DHCPREQUEST of RFC 2131 table 5 for RENEWING/REBINDING
//! (`ciaddr` = leased address, no requested-address, no server identifier), encoded with
//! dhcproto and sent from our packet socket with the container's MAC and the leased address
//! as source. RENEWING unicasts it to the server (its MAC learned from an earlier ACK),
//! REBINDING broadcasts it. The server answers to `ciaddr` (RFC 2131 4.1), i.e. to the
//! container, which must hold the address to answer the server's ARP — the normal state,
//! since hnsd configures the lease right after getting it. The packet socket on the uplink
//! sees that answer before the macvlan takes it (see packet.rs).

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use dhcproto::v4::{self, Decodable, DhcpOption, Encodable, MessageType, OptionCode};
use tokio::time::Instant;

use crate::exchange::Target;
use crate::lease::Lease;
use crate::packet::{self, BROADCAST_MAC, CLIENT_PORT, Endpoints, PacketSocket, SERVER_PORT};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// RENEWING: to the server that granted the lease.
    Server { ip: Ipv4Addr, mac: [u8; 6] },
    /// REBINDING: to any server.
    Broadcast,
}

#[derive(Debug)]
pub(crate) enum Reply {
    Ack {
        lease: Lease,
        server_mac: [u8; 6],
    },
    Nak {
        server: Ipv4Addr,
        message: Option<String>,
    },
}

/// The request message (kept separate from sending so its contents can be unit-tested).
pub(crate) fn request(t: &Target, lease: &Lease, xid: u32) -> v4::Message {
    let mut msg = v4::Message::new_with_id(
        xid,
        lease.address,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &t.mac.0,
    );
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Request));
    // Same identity as mozim's messages (exchange.rs): type 1 (Ethernet) + MAC.
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&t.mac.0);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    if let Some(name) = &t.hostname {
        opts.insert(DhcpOption::Hostname(name.clone()));
    }
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
        OptionCode::ClasslessStaticRoute,
    ]));
    msg
}

/// Sends one request for `lease` to `dest` and waits up to `wait` for the DHCPACK/DHCPNAK
/// answering it. `Ok(None)`: no answer in time.
pub(crate) async fn extend(
    sock: &PacketSocket,
    t: &Target,
    lease: &Lease,
    dest: Dest,
    wait: Duration,
) -> std::io::Result<Option<Reply>> {
    let xid = rand::random::<u32>();
    let payload = request(t, lease, xid)
        .to_vec()
        .map_err(std::io::Error::other)?;
    let (dst_mac, dst_ip) = match dest {
        Dest::Server { ip, mac } => (mac, ip),
        Dest::Broadcast => (BROADCAST_MAC, Ipv4Addr::BROADCAST),
    };
    let ep = Endpoints {
        src_mac: t.mac.0,
        dst_mac,
        src_ip: lease.address,
        dst_ip,
        src_port: CLIENT_PORT,
        dst_port: SERVER_PORT,
    };
    let sent_at = SystemTime::now();
    sock.send(&packet::build_frame(&ep, &payload)).await?;

    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(n) => n?,
            Err(_elapsed) => return Ok(None),
        };
        if let Some(reply) = match_reply(&buf[..n], t.mac.0, xid, sent_at) {
            return Ok(Some(reply));
        }
    }
}

/// The answer to our request `xid` in `frame`, if it is one. A DHCPACK whose lease cannot be
/// used is treated like no answer (and logged): retrying beats binding garbage.
fn match_reply(frame: &[u8], mac: [u8; 6], xid: u32, sent_at: SystemTime) -> Option<Reply> {
    let (ep, payload) = packet::parse_frame(frame)?;
    let msg = v4::Message::from_bytes(payload).ok()?;
    if msg.opcode() != v4::Opcode::BootReply
        || msg.xid() != xid
        || msg.chaddr().get(..6) != Some(&mac[..])
    {
        return None;
    }
    let server = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => ep.src_ip,
    };
    match msg.opts().msg_type()? {
        MessageType::Ack => match Lease::from_ack(&msg, sent_at) {
            Ok(lease) => Some(Reply::Ack {
                lease,
                server_mac: ep.src_mac,
            }),
            Err(reason) => {
                tracing::warn!(%server, "ignoring unusable DHCPACK: {reason}");
                None
            }
        },
        MessageType::Nak => {
            let message = match msg.opts().get(OptionCode::Message) {
                Some(DhcpOption::Message(m)) => Some(m.clone()),
                _ => None,
            };
            Some(Reply::Nak { server, message })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::MacAddr;

    fn target() -> Target {
        Target {
            uplink: "eth1".into(),
            mac: MacAddr([2, 0, 0x5e, 0x10, 0, 1]),
            hostname: Some("web".into()),
        }
    }

    fn lease() -> Lease {
        Lease {
            address: Ipv4Addr::new(198, 51, 100, 76),
            prefix_len: 24,
            gateway: None,
            dns_servers: vec![],
            domain: None,
            server: Ipv4Addr::new(198, 51, 100, 1),
            lease_time: Duration::from_secs(120),
            t1: Duration::from_secs(60),
            t2: Duration::from_secs(105),
            obtained_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn request_follows_rfc2131_table5_for_renewing() {
        let msg = request(&target(), &lease(), 7);
        assert_eq!(msg.xid(), 7);
        assert_eq!(msg.ciaddr(), Ipv4Addr::new(198, 51, 100, 76));
        assert_eq!(msg.chaddr(), &[2, 0, 0x5e, 0x10, 0, 1]);
        let o = msg.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Request));
        // MUST NOT carry these in RENEWING/REBINDING.
        assert!(o.get(OptionCode::ServerIdentifier).is_none());
        assert!(o.get(OptionCode::RequestedIpAddress).is_none());
        assert_eq!(
            o.get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 2, 0, 0x5e, 0x10, 0, 1
            ]))
        );
        assert_eq!(
            o.get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("web".into()))
        );
        // Encodes, and decodes back to the same message.
        let bytes = msg.to_vec().unwrap();
        assert_eq!(v4::Message::from_bytes(&bytes).unwrap(), msg);
    }

    fn reply_frame(kind: MessageType, xid: u32, chaddr: [u8; 6]) -> Vec<u8> {
        let mut m = v4::Message::new_with_id(
            xid,
            Ipv4Addr::new(198, 51, 100, 76),
            Ipv4Addr::new(198, 51, 100, 76),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &chaddr,
        );
        m.set_opcode(v4::Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 51, 100, 1)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::AddressLeaseTime(120));
        if kind == MessageType::Nak {
            o.insert(DhcpOption::Message("wrong network".into()));
        }
        let ep = Endpoints {
            src_mac: [0xaa, 0, 0, 0, 0, 1],
            dst_mac: chaddr,
            src_ip: Ipv4Addr::new(198, 51, 100, 1),
            dst_ip: Ipv4Addr::new(198, 51, 100, 76),
            src_port: SERVER_PORT,
            dst_port: CLIENT_PORT,
        };
        packet::build_frame(&ep, &m.to_vec().unwrap())
    }

    #[test]
    fn replies_match_on_xid_and_chaddr() {
        let mac = [2, 0, 0x5e, 0x10, 0, 1];
        let at = SystemTime::UNIX_EPOCH;
        match match_reply(&reply_frame(MessageType::Ack, 9, mac), mac, 9, at) {
            Some(Reply::Ack { lease, server_mac }) => {
                assert_eq!(lease.address, Ipv4Addr::new(198, 51, 100, 76));
                assert_eq!(server_mac, [0xaa, 0, 0, 0, 0, 1]);
            }
            other => panic!("{other:?}"),
        }
        assert!(match_reply(&reply_frame(MessageType::Ack, 8, mac), mac, 9, at).is_none());
        assert!(
            match_reply(
                &reply_frame(MessageType::Ack, 9, [2, 0, 0x5e, 0x10, 0, 2]),
                mac,
                9,
                at
            )
            .is_none()
        );
        match match_reply(&reply_frame(MessageType::Nak, 9, mac), mac, 9, at) {
            Some(Reply::Nak { server, message }) => {
                assert_eq!(server, Ipv4Addr::new(198, 51, 100, 1));
                assert_eq!(message.as_deref(), Some("wrong network"));
            }
            other => panic!("{other:?}"),
        }
    }
}
