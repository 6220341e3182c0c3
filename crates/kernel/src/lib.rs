//! The kernel layer of hns: everything that touches the Linux kernel, behind small typed
//! functions. Nothing above this crate calls netlink, setns or nft directly.
//!
//! - [`netns`]: network namespaces ("compartments"): create, bind-mount, adopt, remove, and run
//!   a closure inside one on a dedicated thread (never on a runtime worker);
//! - [`netlink`]: rtnetlink requests (bridges, veths created straight into a namespace,
//!   addresses, routes, link dumps) with errors that name the object;
//! - [`nft`]: the hns nftables table: a pure compiler from desired state to one atomic nft
//!   program, and the thin layer that applies and inspects it;
//! - [`nft_elements`]: port-mapping elements written over nfnetlink, one batch per change;
//! - [`nft_outbound`], [`policy_routes`], [`qos`]: the OutBoundNAT table, policy routes and
//!   the tc rate caps of endpoints;
//! - [`nft_batch`]: a general nfnetlink transaction writer (chains, rules, sets, elements),
//!   used by [`nft_acl`];
//! - [`nft_lb`]: the load-balancer table (one map lookup per packet); [`conntrack`] clears a
//!   removed backend's tracked connections;
//! - [`uplink`]: macvlan children, proxy ARP, host routes, VLAN and bond links of the
//!   external-switch drivers;
//! - [`sysctl`]: write-if-different sysctls;
//! - [`names`]: the names of every kernel object hns owns, so garbage collection is exact;
//! - [`timing`]: per-request stage timing (a debug log line says where an attach's time goes).

pub mod acl_boxes;
pub mod conntrack;
pub mod error;
// Links handed to another owner (the Docker plugin).
pub mod hairpin;
pub mod lb_routes;
pub mod link_events;
pub mod handoff;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod nft_acl;
pub mod nft_batch;
pub mod nft_elements;
pub mod nft_events;
pub mod nft_outbound;
pub mod policy_routes;
pub mod qos;
pub mod nft_lb;
pub mod nft_lb_batch;
pub mod sysctl;
pub mod timing;
pub mod uplink;
pub mod vxlan;

pub use error::KernelError;
