//! The wire contract of hns: HNS v2 ("HCN") objects with their Windows field names, the
//! modify-request shapes, and the error body every API failure carries.
//!
//! Map of the crate:
//! - [`enums`]: enums that accept Windows' string form in any case or its integer form and are
//!   always emitted in canonical form;
//! - [`schema`]: HostComputeNetwork, HostComputeEndpoint, HostComputeNamespace and their parts;
//! - [`modify`]: the `{ResourceType, RequestType, Settings}` modify requests;
//! - [`loadbalancer`]: HostComputeLoadBalancer, its port mappings and flags;
//! - [`portmap`]: the `PortMapping` endpoint policy and the mapping listing;
//! - [`error`]: [`ApiError`] with stable HCN-style codes, mapped to HTTP statuses;
//! - [`decode`]: JSON decoding that names the offending field;
//! - [`cluster`]: the hosts of an overlay cluster (`/nodes`, an extension);
//! - [`events`]: what hnsd did, as `GET /events` streams it (an extension).
//!
//! Extensions beyond the HNS schema are plain top-level fields, documented on the field.

pub mod cluster;
pub mod decode;
pub mod enums;
pub mod events;
pub mod error;
pub mod loadbalancer;
pub mod modify;
pub mod portmap;
pub mod schema;
pub mod windowsshim;

pub use cluster::*;
pub use enums::*;
pub use events::*;
pub use loadbalancer::*;
pub use error::{ApiError, ErrorCode};
pub use modify::*;
pub use portmap::*;
pub use schema::*;

/// The HNS service version this daemon reports at `GET /globals/version`.
pub const HNS_VERSION: Version = Version { major: 15, minor: 4 };
/// The schema version stamped on every object.
pub const SCHEMA_VERSION: Version = Version { major: 2, minor: 0 };
