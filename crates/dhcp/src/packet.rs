//! A packet socket on the uplink, and the Ethernet/IPv4/UDP framing around DHCP messages.
//!
//! Used for the exchanges mozim cannot do in proxy mode (renew.rs) and to learn the DHCP
//! server's MAC while mozim runs (exchange.rs). Everything is sent with the container's MAC
//! as the Ethernet source, so switches and servers see the same station as in chaddr.
//!
//! Why `ETH_P_ALL` and not `ETH_P_IP`: a reply to the container's MAC is taken over by the
//! macvlan's rx handler and re-delivered on the macvlan, which lives in the container's
//! namespace; protocol-specific packet sockets are served after that hand-over with the
//! macvlan as device and the kernel drops the frame for a socket of another namespace.
//! `ETH_P_ALL` taps run before rx handlers, while the frame still belongs to the uplink.
//!
//! Why promiscuous: before the macvlan exists (or on a NIC whose filter does not know the
//! MAC) frames to the container's MAC would be dropped by the NIC.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

pub(crate) const BROADCAST_MAC: [u8; 6] = [0xff; 6];
pub(crate) const CLIENT_PORT: u16 = 68;
pub(crate) const SERVER_PORT: u16 = 67;

const ETH_HDR: usize = 14;
const IP_HDR: usize = 20;
const UDP_HDR: usize = 8;
const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;

pub(crate) struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
}

impl PacketSocket {
    /// Opens a socket bound to interface `ifindex` (of the calling thread's namespace) that
    /// receives IPv4 UDP datagrams to port 68, unfragmented, from any MAC.
    pub(crate) fn open(ifindex: u32) -> io::Result<PacketSocket> {
        // Protocol 0: the socket receives nothing until bind() names a protocol, so no
        // unfiltered frame from another interface can be queued before the filter is in.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        attach_filter(&fd)?;

        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }

        let mut mreq: libc::packet_mreq = unsafe { zeroed() };
        mreq.mr_ifindex = ifindex as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;

        // SAFETY: `fd` is an open socket owned by the AsyncFd for its whole life.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(PacketSocket { fd })
    }

    pub(crate) async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut ready = self.fd.writable().await?;
            let sent = ready.try_io(|fd| {
                let n =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match sent {
                Ok(Ok(n)) if n == frame.len() => return Ok(()),
                Ok(Ok(n)) => {
                    return Err(io::Error::other(format!(
                        "short send: {n} of {} bytes",
                        frame.len()
                    )));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Next frame that arrived on the wire (our own outgoing frames are skipped).
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| recv_incoming(fd.get_ref(), buf)) {
                Ok(Ok(Some(n))) => return Ok(n),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// A frame already queued, without waiting; `None` when the queue is empty.
    pub(crate) fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match recv_incoming(self.fd.get_ref(), buf) {
                Ok(Some(n)) => return Ok(Some(n)),
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

/// One recvfrom; `Ok(None)` for a frame we sent ourselves.
fn recv_incoming(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut from: libc::sockaddr_ll = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut from as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((from.sll_pkttype != libc::PACKET_OUTGOING).then_some(n as usize))
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as u32,
        )
    };
    if rc != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Classic BPF for "IPv4, UDP, not a later fragment, destination port 68" (tcpdump's
/// `ip and udp dst port 68 and ip[6:2] & 0x1fff = 0`), so the kernel drops the rest of the
/// uplink's traffic before it reaches this socket. Jump offsets count from the next
/// instruction.
fn attach_filter(fd: &OwnedFd) -> io::Result<()> {
    const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
    const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const LD_H_IND: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_IND) as u16;
    const LDX_MSH: u16 = (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let program = [
        op(LD_H_ABS, 0, 0, 12),                   // 0: ethertype
        op(JEQ, 0, 7, u32::from(ETHERTYPE_IPV4)), // 1: IPv4, else drop
        op(LD_B_ABS, 0, 0, 23),                   // 2: IP protocol
        op(JEQ, 0, 5, u32::from(IPPROTO_UDP)),    // 3: UDP, else drop
        op(LD_H_ABS, 0, 0, 20),                   // 4: flags + fragment offset
        op(JSET, 3, 0, 0x1fff),                   // 5: a later fragment: drop
        op(LDX_MSH, 0, 0, ETH_HDR as u32),        // 6: X = IP header length
        op(LD_H_IND, 0, 0, ETH_HDR as u32 + 2),   // 7: UDP destination port
        op(JEQ, 1, 0, u32::from(CLIENT_PORT)),    // 8: port 68: accept
        op(RET, 0, 0, 0),                         // 9: drop
        op(RET, 0, 0, u32::MAX),                  // 10: accept whole frame
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut _,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

/// Addresses of one UDP datagram in an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Endpoints {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Ethernet + IPv4 (no options, TTL 64) + UDP around `payload`, both checksums filled in.
pub(crate) fn build_frame(ep: &Endpoints, payload: &[u8]) -> Vec<u8> {
    let udp_len = UDP_HDR + payload.len();
    let ip_len = IP_HDR + udp_len;
    let mut f = Vec::with_capacity(ETH_HDR + ip_len);
    f.extend_from_slice(&ep.dst_mac);
    f.extend_from_slice(&ep.src_mac);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

    let mut ip = [0u8; IP_HDR];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&ep.src_ip.octets());
    ip[16..20].copy_from_slice(&ep.dst_ip.octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);

    let mut udp = [0u8; UDP_HDR];
    udp[0..2].copy_from_slice(&ep.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&ep.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&ep.src_ip.octets());
    pseudo[4..8].copy_from_slice(&ep.dst_ip.octets());
    pseudo[9] = IPPROTO_UDP;
    pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
    // 0 means "no checksum" in UDP over IPv4, so a computed 0 is sent as all ones.
    let sum = match checksum(&[&pseudo, &udp, payload]) {
        0 => 0xffff,
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&udp);
    f.extend_from_slice(payload);
    f
}

/// The UDP payload of an IPv4 frame and its addresses; `None` for anything else or a
/// truncated frame. Checksums are not verified: the kernel already dropped frames with a
/// bad Ethernet FCS, and a DHCP message that fails to decode is ignored anyway.
pub(crate) fn parse_frame(f: &[u8]) -> Option<(Endpoints, &[u8])> {
    if f.len() < ETH_HDR + IP_HDR + UDP_HDR || u16::from_be_bytes([f[12], f[13]]) != ETHERTYPE_IPV4
    {
        return None;
    }
    let ip = &f[ETH_HDR..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < IP_HDR || ip[9] != IPPROTO_UDP {
        return None;
    }
    let ip_len = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let udp = ip.get(ihl..ip_len)?;
    if udp.len() < UDP_HDR {
        return None;
    }
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let payload = udp.get(UDP_HDR..udp_len.max(UDP_HDR))?;
    let mac = |s: &[u8]| <[u8; 6]>::try_from(s).ok();
    let ep = Endpoints {
        dst_mac: mac(&f[0..6])?,
        src_mac: mac(&f[6..12])?,
        src_ip: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst_ip: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
    };
    Some((ep, payload))
}

/// Internet checksum (RFC 1071) over the concatenation of `parts`; each part but the last
/// must have even length (true for the headers above).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for w in &mut words {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoints {
        Endpoints {
            src_mac: [2, 0, 0x5e, 0x10, 0, 1],
            dst_mac: BROADCAST_MAC,
            src_ip: Ipv4Addr::new(198, 51, 100, 76),
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: CLIENT_PORT,
            dst_port: SERVER_PORT,
        }
    }

    #[test]
    fn frames_round_trip_and_checksums_verify() {
        let payload = b"odd-length payload!";
        let f = build_frame(&ep(), payload);
        assert_eq!(f.len(), 14 + 20 + 8 + payload.len());
        // A correct header sums to zero (all ones before the final complement).
        assert_eq!(checksum(&[&f[14..34]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&f[26..30]);
        pseudo[4..8].copy_from_slice(&f[30..34]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&f[38..40]);
        assert_eq!(checksum(&[&pseudo, &f[34..]]), 0);

        let (got, body) = parse_frame(&f).unwrap();
        assert_eq!(got, ep());
        assert_eq!(body, payload);
    }

    #[test]
    fn non_udp_and_truncated_frames_are_ignored() {
        let mut f = build_frame(&ep(), b"x");
        assert!(parse_frame(&f[..40]).is_none());
        f[23] = 6; // TCP
        assert!(parse_frame(&f).is_none());
        let mut f = build_frame(&ep(), b"x");
        f[12] = 0x86; // IPv6 ethertype
        assert!(parse_frame(&f).is_none());
    }

    #[test]
    fn known_checksum() {
        // RFC 1071 example bytes.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), !0xddf2);
    }
}
