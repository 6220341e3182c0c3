//! The kernel layer of hns: everything that touches the Linux kernel, behind small typed
//! functions. Nothing above this crate calls netlink, setns or nft directly.
//!
//! - [`netns`]: network namespaces ("compartments"): create, bind-mount, adopt, remove, and run
//!   a closure inside one on a dedicated thread (never on a runtime worker);
//! - [`netlink`]: rtnetlink requests (bridges, veths created straight into a namespace,
//!   addresses, routes, link dumps) with errors that name the object;
//! - [`nft`]: the hns nftables table: a pure compiler from desired state to one atomic nft
//!   program, and the thin layer that applies and inspects it;
//! - [`nft_session`]: a long-lived `nft -i` for single element changes;
//! - [`sysctl`]: write-if-different sysctls;
//! - [`names`]: the names of every kernel object hns owns, so garbage collection is exact.

pub mod error;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod nft_session;
pub mod sysctl;
pub mod vxlan;

pub use error::KernelError;
