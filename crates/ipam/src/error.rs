//! Errors of address management.
//!
//! Each variant carries the concrete address or prefix involved, and its
//! message names that value, the rule that was broken, and what the user can
//! do about it: these strings end up verbatim in API responses and CLI output,
//! so they have to make sense to someone who never read this code.
//!
//! The daemon maps errors to API status codes through [`IpamError::kind`],
//! which is deliberately coarser than the variants so that new, more precise
//! variants can be added without touching that mapping.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Addresses of a subnet that can never be given to an endpoint because the
/// protocol itself uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialAddress {
    /// The first address of the subnet (all host bits zero). For IPv6 this is
    /// the subnet-router anycast address.
    Network,
    /// The last address of an IPv4 subnet (all host bits one).
    Broadcast,
}

impl fmt::Display for SpecialAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecialAddress::Network => f.write_str("network address"),
            SpecialAddress::Broadcast => f.write_str("broadcast address"),
        }
    }
}

/// Coarse classification of an [`IpamError`], meant for mapping to API codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpamErrorKind {
    /// The subnet itself is malformed or too small.
    InvalidSubnet,
    /// The requested gateway cannot be used.
    InvalidGateway,
    /// The requested dynamic range (`--ip-range`) cannot be used.
    InvalidRange,
    /// A requested auxiliary (never handed out) address cannot be used.
    InvalidAux,
    /// An address was requested that lies outside the pool's subnet.
    OutOfSubnet,
    /// An address was requested that the pool keeps for itself (network,
    /// broadcast, gateway or an auxiliary address).
    Reserved,
    /// An address was requested that an endpoint already holds.
    InUse,
    /// Dynamic allocation found no free address.
    Exhausted,
}

/// Everything that can go wrong when building a pool or taking addresses
/// from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The subnet was written with host bits set (e.g. `172.20.1.0/16`).
    #[error("subnet {given} has host bits set; did you mean {canonical}?")]
    SubnetHostBitsSet { given: IpNet, canonical: IpNet },

    /// The prefix is too long to leave two usable host addresses.
    #[error(
        "subnet {subnet} is too small: a /{} leaves fewer than 2 usable host addresses; \
         use a prefix of /{max_prefix_len} or shorter",
        subnet.prefix_len()
    )]
    SubnetTooSmall { subnet: IpNet, max_prefix_len: u8 },

    /// The gateway is not inside the subnet (or is of the other family).
    #[error(
        "gateway {gateway} is outside subnet {subnet}; choose an address inside the subnet \
         or omit the gateway to use the first host address"
    )]
    GatewayOutsideSubnet { gateway: IpAddr, subnet: IpNet },

    /// The gateway is the network or broadcast address.
    #[error(
        "gateway {gateway} is the {what} of {subnet}; choose a host address of the subnet \
         or omit the gateway to use the first host address"
    )]
    GatewayNotHost {
        gateway: IpAddr,
        subnet: IpNet,
        what: SpecialAddress,
    },

    /// The range was written with host bits set.
    #[error("ip range {given} has host bits set; did you mean {canonical}?")]
    RangeHostBitsSet { given: IpNet, canonical: IpNet },

    /// The range is not entirely inside the subnet (or is of the other family).
    #[error("ip range {range} is not inside subnet {subnet}; choose a range within the subnet")]
    RangeOutsideSubnet { range: IpNet, subnet: IpNet },

    /// An auxiliary address is not inside the subnet.
    #[error(
        "auxiliary address {address} is outside subnet {subnet}; \
         choose an address inside the subnet or remove it"
    )]
    AuxOutsideSubnet { address: IpAddr, subnet: IpNet },

    /// An auxiliary address is the gateway, which is never handed out anyway.
    #[error(
        "auxiliary address {address} is the gateway of {subnet}; \
         remove it from the auxiliary addresses or choose another gateway"
    )]
    AuxIsGateway { address: IpAddr, subnet: IpNet },

    /// An auxiliary address is the network or broadcast address.
    #[error(
        "auxiliary address {address} is the {what} of {subnet}, which is never handed out; \
         remove it from the auxiliary addresses"
    )]
    AuxNotHost {
        address: IpAddr,
        subnet: IpNet,
        what: SpecialAddress,
    },

    /// A requested address is not inside the subnet (or is of the other family).
    #[error("address {address} is outside subnet {subnet}; choose an address inside the subnet")]
    OutOfSubnet { address: IpAddr, subnet: IpNet },

    /// A requested address is the network or broadcast address.
    #[error("address {address} is the {what} of {subnet}; choose another address")]
    NotHost {
        address: IpAddr,
        subnet: IpNet,
        what: SpecialAddress,
    },

    /// A requested address is the gateway.
    #[error("address {address} is the gateway of {subnet}; choose another address")]
    IsGateway { address: IpAddr, subnet: IpNet },

    /// A requested address is one of the auxiliary addresses.
    #[error(
        "address {address} is a reserved auxiliary address of {subnet}; choose another address"
    )]
    IsAux { address: IpAddr, subnet: IpNet },

    /// A requested address is already held by an endpoint.
    #[error(
        "address {address} is already in use on this network; \
         choose another address or omit it to get a free one"
    )]
    InUse { address: IpAddr },

    /// No free address is left for dynamic allocation. `range` is the
    /// allocation window: the `--ip-range` if one was given, else the subnet.
    #[error("no free address left in {subnet} (range {range}); use a larger subnet or --ip-range")]
    Exhausted { subnet: IpNet, range: IpNet },
}

impl IpamError {
    /// The coarse class of this error.
    pub fn kind(&self) -> IpamErrorKind {
        match self {
            IpamError::SubnetHostBitsSet { .. } | IpamError::SubnetTooSmall { .. } => {
                IpamErrorKind::InvalidSubnet
            }
            IpamError::GatewayOutsideSubnet { .. } | IpamError::GatewayNotHost { .. } => {
                IpamErrorKind::InvalidGateway
            }
            IpamError::RangeHostBitsSet { .. } | IpamError::RangeOutsideSubnet { .. } => {
                IpamErrorKind::InvalidRange
            }
            IpamError::AuxOutsideSubnet { .. }
            | IpamError::AuxIsGateway { .. }
            | IpamError::AuxNotHost { .. } => IpamErrorKind::InvalidAux,
            IpamError::OutOfSubnet { .. } => IpamErrorKind::OutOfSubnet,
            IpamError::NotHost { .. } | IpamError::IsGateway { .. } | IpamError::IsAux { .. } => {
                IpamErrorKind::Reserved
            }
            IpamError::InUse { .. } => IpamErrorKind::InUse,
            IpamError::Exhausted { .. } => IpamErrorKind::Exhausted,
        }
    }
}
