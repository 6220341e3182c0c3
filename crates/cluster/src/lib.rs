//! # hns-cluster: the cluster layer of overlay networks, kept in etcd
//!
//! Overlay networks span hosts, so their state cannot live in one daemon's store. This crate
//! keeps it in etcd (Debian's 3.4 and later) and gives every host the same view:
//!
//! - **nodes** ([`Cluster::register_node`]): each host's name and VTEP under an etcd lease kept
//!   alive by a background task; a dead host's node and endpoints vanish with its lease;
//! - **overlay networks** ([`Cluster::create_network`]): cluster objects with a cluster-wide VNI,
//!   unique names and non-overlapping subnets, decided in one transaction;
//! - **cluster IPAM** ([`Cluster::allocate_addresses`]): one key per address, created only if
//!   absent, so concurrent hosts never get the same address; a dual-stack network (one IPv4
//!   and one IPv6 subnet) gives each endpoint one address of each family;
//! - **endpoints** ([`Cluster::put_endpoint`]): what peers need to program VXLAN FDB and
//!   neighbour entries (IP, MAC, VTEP), attached to the owning node's lease;
//! - **watch** ([`Cluster::watch`]): a snapshot then incremental events, with a fresh snapshot
//!   after every outage, so a host converges without restarts.
//!
//! Every operation is bounded by the configured request timeout and fails with a
//! [`ClusterError`] that names what failed; [`ClusterError::is_unreachable`] tells an etcd
//! outage (keep local state, retry later) from a decision (conflict, not found, in use).
//!
//! The key layout is documented in [`keys`]; the pure allocation rules in [`alloc`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), hns_cluster::ClusterError> {
//! use hns_cluster::*;
//! let cluster = Cluster::connect(ClusterConfig::new(["10.0.0.10:2379"])).await?;
//! let me = NodeInfo { name: "host-a".into(), vtep: "10.0.0.1".parse().unwrap() };
//! let reg = cluster.register_node(me.clone(), None, 15).await?; // persist reg.lease_id()
//! let net = cluster
//!     .create_network(OverlayNetworkSpec {
//!         id: "n1".into(),
//!         name: "web".into(),
//!         subnets: vec![
//!             OverlaySubnet { subnet: "10.200.0.0/16".parse().unwrap(), gateway: "10.200.0.1".parse().unwrap() },
//!             OverlaySubnet { subnet: "fd00:200::/64".parse().unwrap(), gateway: "fd00:200::1".parse().unwrap() },
//!         ],
//!         vni: None,
//!         vxlan_port: 4789,
//!         outbound_nat: false,
//!     })
//!     .await?;
//! let ips = cluster.allocate_addresses(&net.id, "ep1", &me.name, &[]).await?; // [IPv4, IPv6]
//! cluster
//!     .put_endpoint(ClusterEndpoint {
//!         id: "ep1".into(),
//!         network_id: net.id.clone(),
//!         node: me.name.clone(),
//!         name: "web-1".into(),
//!         ip: ips[0],
//!         more_ips: ips[1..].to_vec(),
//!         mac: [0x02, 0x42, 10, 200, 0, 2],
//!         vtep: me.vtep,
//!     })
//!     .await?;
//! let mut view = cluster.watch();
//! while let Some(event) = view.next().await {
//!     // Snapshot: replace the kernel's FDB/neighbour entries; EndpointPut/Deleted: one entry.
//!     let _ = event;
//! }
//! # drop(reg);
//! # Ok(())
//! # }
//! ```

pub mod alloc;
mod client;
mod config;
mod endpoints;
mod error;
mod ipam;
pub mod keys;
mod model;
mod networks;
mod nodes;
mod watch;

pub use client::Cluster;
pub use config::{ClusterConfig, TlsFiles};
pub use error::{ClusterError, Result, etcd_errors};
pub use model::{AddressOwner, ClusterEndpoint, NodeInfo, OverlayNetwork, OverlayNetworkSpec, OverlaySubnet, format_mac, parse_mac};
pub use nodes::{NodeRegistration, RemovedNode};
pub use watch::{ClusterEvent, ClusterWatch, Snapshot};
