//! The container interface's usable link-local address: DHCPv6 clients send from it
//! (RFC 8415 13.1) and servers answer to it.
//!
//! Read from `/proc/thread-self/net/if_inet6`, which lists the addresses of the calling
//! *thread's* namespace with their flags (`/proc/net` would show the process's). A fresh
//! link-local address is tentative for about a second (DAD) and cannot be bound until then.

use std::net::Ipv6Addr;

/// IFA_F_TENTATIVE and IFA_F_DADFAILED (linux/if_addr.h).
const NOT_USABLE: u32 = 0x40 | 0x08;

/// `(ifindex, address)` of `ifname`'s usable link-local address in `if_inet6` text.
pub(crate) fn usable_link_local(if_inet6: &str, ifname: &str) -> Option<(u32, Ipv6Addr)> {
    if_inet6.lines().find_map(|line| {
        // "fe80000000000000000000fffe100001 03 40 20 80     eth0":
        // address, ifindex, prefix length, scope, flags, name (all hex but the name).
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, index, _, _, flags, name] = f[..] else { return None };
        let addr = Ipv6Addr::from(u128::from_str_radix(addr, 16).ok()?);
        let usable = u32::from_str_radix(flags, 16).ok()? & NOT_USABLE == 0;
        (name == ifname && addr.is_unicast_link_local() && usable).then_some((u32::from_str_radix(index, 16).ok()?, addr))
    })
}

/// The calling thread's view (see the module doc).
pub(crate) fn read_if_inet6() -> String {
    std::fs::read_to_string("/proc/thread-self/net/if_inet6").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000000000000000aa 02 40 20 c0     eth1
20010db8007700000000000000000100 03 80 00 80     eth0
fe800000000000000000000000000001 03 40 20 80     eth0
";

    #[test]
    fn finds_the_link_local_of_the_named_interface() {
        assert_eq!(usable_link_local(TEXT, "eth0"), Some((3, "fe80::1".parse().unwrap())));
    }

    #[test]
    fn a_tentative_or_missing_address_is_not_usable() {
        // eth1's only link-local has flags 0xc0: tentative (DAD not finished).
        assert_eq!(usable_link_local(TEXT, "eth1"), None);
        assert_eq!(usable_link_local(TEXT, "eth2"), None);
        assert_eq!(usable_link_local("", "eth0"), None);
    }
}
