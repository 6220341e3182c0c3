//! The hook point of drivers with cluster-wide state.
//!
//! Most drivers (nat, transparent, l2bridge, l2tunnel) are of this host alone: the generic
//! paths (`api::requests`, `endpoints`, `networks`, `reconcile`) do all their work, and the
//! kernel side is `hns_drivers`. A driver whose networks are cluster objects (today overlay:
//! networks, VNIs, addresses and endpoints in etcd, see [`super::overlay`]) has more to do
//! at fixed points of those paths. The paths call the hooks below by the network's kind and
//! never name the driver; [`ClusterDriver::of`] says which driver, if any, a kind has, and
//! every hook is a `match` on [`ClusterDriver`] that hands the work to the driver's module.
//! A kind without a cluster driver passes every hook untouched (nothing is done).
//!
//! The phases, and what runs with the engine lock held or released:
//!
//! | phase | hook | lock |
//! |---|---|---|
//! | endpoint create: plan (validate, reserve the ID, pick the cluster handle) | [`Engine::plan_endpoint`] | held |
//! | endpoint create: the cluster steps and the local create between them | [`create_endpoint_staged`] | released around the cluster's I/O |
//! | endpoint create under the caller's lock (`create_endpoint_begin`, when the network became a cluster driver's after the plan) | [`Engine::cluster_prepare_endpoint`], [`Engine::cluster_finish_endpoint`] | held |
//! | endpoint delete: what to withdraw from the cluster | [`Engine::cluster_withdrawal`] | held |
//! | endpoint delete: withdrawn, deleted here, released | [`delete_endpoint_staged`] | released around the cluster's I/O |
//! | network create | [`create_network_staged`] | released around the cluster's I/O and the kernel step |
//! | network delete: taken out of the cluster before the local delete | [`Engine::cluster_network_withdrawal`], [`withdraw_network_staged`] | released around the cluster's I/O |
//! | reconcile pass: the kernel's share | [`Engine::reconcile_clusters`] | held |
//! | reconcile pass and after a watch snapshot: this host's cluster records | [`sync_clusters`] | released around the cluster's I/O |
//! | compartment collected by the reconciler with its endpoints | [`Engine::cluster_endpoints_collected`] | held |
//!
//! A new clustered driver adds a variant to [`ClusterDriver`], maps its kind in
//! [`ClusterDriver::of`], and fills in each `match` here with its module's functions (the
//! compiler lists the ones left). The staged hooks are free functions on the
//! [`EngineLock`]: they take and release the lock themselves, and must run in a task of their
//! own (`api::requests::uncut`) so a client going away cannot cut them short between steps.

use hns_api::{HostComputeEndpoint, HostComputeNetwork, NetworkType};

use super::overlay;
use super::reconcile::Report;
use super::{Engine, EngineGuard, EngineLock, Result};

/// A driver whose networks have cluster-wide state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClusterDriver {
    /// `overlay` ([`super::overlay`]): one VXLAN segment across hosts, its state in etcd.
    Overlay,
}

impl ClusterDriver {
    /// Every cluster driver, for the hooks that run for all of them (reconcile).
    const ALL: [ClusterDriver; 1] = [ClusterDriver::Overlay];

    /// The cluster driver of networks of `kind`; `None`: a driver of this host alone, which
    /// the generic paths handle entirely.
    pub(crate) fn of(kind: NetworkType) -> Option<Self> {
        match kind {
            NetworkType::Overlay => Some(Self::Overlay),
            NetworkType::Nat
            | NetworkType::Ics
            | NetworkType::Transparent
            | NetworkType::L2Bridge
            | NetworkType::L2Tunnel
            | NetworkType::Private
            | NetworkType::Internal
            | NetworkType::Mirrored
            | NetworkType::Infiniband
            | NetworkType::ConstrainedIcs => None,
        }
    }
}

/// Where an endpoint create goes after [`Engine::plan_endpoint`].
pub(crate) enum EndpointCreate {
    /// A network of this host alone (or one not found, which the generic path reports): the
    /// ordinary path, the request unchanged.
    Local(HostComputeEndpoint),
    /// A cluster driver's: [`create_endpoint_staged`].
    Cluster(ClusterCreate),
}

/// A cluster driver's endpoint create, planned under the lock.
pub(crate) enum ClusterCreate {
    Overlay(overlay::Allocation),
}

/// What a cluster driver holds for an endpoint created under the caller's lock, between
/// [`Engine::cluster_prepare_endpoint`] and [`Engine::cluster_finish_endpoint`].
pub(crate) enum ClusterReserved {
    Overlay(overlay::Reserved),
}

/// What a cluster driver does at a network's delete, before the local delete: found under the
/// lock by [`Engine::cluster_network_withdrawal`], run by [`withdraw_network_staged`].
pub(crate) enum ClusterNetworkWithdrawal {
    Overlay(overlay::NetworkWithdrawal),
}

/// What a cluster driver does at an endpoint's delete, found under the lock by
/// [`Engine::cluster_withdrawal`] and run by [`delete_endpoint_staged`].
pub(crate) enum ClusterWithdrawal {
    Overlay(overlay::Withdrawal),
}

impl Engine {
    /// The cluster driver of a network (by ID or name), if it has one.
    fn cluster_driver_of(&self, net_key: &str) -> Option<ClusterDriver> {
        let id = self.network_id(net_key)?;
        ClusterDriver::of(self.networks[&id].plan.kind)
    }

    /// Endpoint create, first step (under the lock, nothing slow): on a cluster driver's
    /// network, the request is checked and what the cluster steps need is taken.
    pub(crate) fn plan_endpoint(&mut self, req: HostComputeEndpoint) -> Result<EndpointCreate> {
        match self.cluster_driver_of(&req.host_compute_network) {
            None => Ok(EndpointCreate::Local(req)),
            Some(ClusterDriver::Overlay) => Ok(match self.overlay_plan_endpoint(req)? {
                overlay::Planned::Local(req) => EndpointCreate::Local(req),
                overlay::Planned::Overlay(a) => EndpointCreate::Cluster(ClusterCreate::Overlay(a)),
            }),
        }
    }

    /// Endpoint create under the caller's lock, before the local create: a cluster driver
    /// may rewrite the request (the overlay's cluster address as a static one) and hold
    /// something until [`Engine::cluster_finish_endpoint`].
    pub(crate) async fn cluster_prepare_endpoint(&mut self, req: HostComputeEndpoint) -> Result<(HostComputeEndpoint, Option<ClusterReserved>)> {
        match self.cluster_driver_of(&req.host_compute_network) {
            None => Ok((req, None)),
            Some(ClusterDriver::Overlay) => {
                let (req, reserved) = self.overlay_prepare_endpoint(req).await?;
                Ok((req, reserved.map(ClusterReserved::Overlay)))
            }
        }
    }

    /// Endpoint create under the caller's lock, after the local create (`created`): a
    /// cluster driver publishes the endpoint, or undoes what it held when the create failed.
    pub(crate) async fn cluster_finish_endpoint(&mut self, reserved: Option<ClusterReserved>, created: Result<HostComputeEndpoint>) -> Result<HostComputeEndpoint> {
        match reserved {
            None => created,
            Some(ClusterReserved::Overlay(r)) => self.overlay_finish_endpoint(Some(r), created).await,
        }
    }

    /// Endpoint delete (under the lock): what a cluster driver must do around the local
    /// delete; `None`: an endpoint of a local network, deleted by the ordinary path.
    pub(crate) fn cluster_withdrawal(&self, ep_id: &str) -> Option<ClusterWithdrawal> {
        let net_id = &self.endpoints.get(ep_id)?.network_id;
        match ClusterDriver::of(self.networks.get(net_id)?.plan.kind)? {
            ClusterDriver::Overlay => self.overlay_withdrawal(ep_id).map(ClusterWithdrawal::Overlay),
        }
    }

    /// Network delete (API path, under the lock, the network checked to have no endpoints
    /// here): what a cluster driver must do before the local delete; the network is in flight
    /// until it is done. `None`: a network of this host alone.
    pub(crate) fn cluster_network_withdrawal(&mut self, id: &str) -> Result<Option<ClusterNetworkWithdrawal>> {
        match self.networks.get(id).and_then(|n| ClusterDriver::of(n.plan.kind)) {
            None => Ok(None),
            Some(ClusterDriver::Overlay) => Ok(Some(ClusterNetworkWithdrawal::Overlay(self.overlay_network_withdrawal(id)?))),
        }
    }

    /// Every cluster driver's share of a reconcile pass.
    pub(crate) async fn reconcile_clusters(&mut self, r: &mut Report) {
        for driver in ClusterDriver::ALL {
            match driver {
                ClusterDriver::Overlay => self.reconcile_overlay(r).await,
            }
        }
    }

    /// The reconciler removed the endpoints `eps` of a compartment that vanished (with no
    /// cluster step): each cluster driver notes what it must catch up on.
    pub(crate) fn cluster_endpoints_collected(&mut self, eps: &[String]) {
        for driver in ClusterDriver::ALL {
            match driver {
                ClusterDriver::Overlay => self.overlay_endpoints_collected(eps),
            }
        }
    }
}

/// Endpoint create (API path), a cluster driver's: its cluster steps run while the engine lock
/// is free, the local create between them under it.
pub(crate) async fn create_endpoint_staged(engine: &EngineLock, c: ClusterCreate) -> Result<HostComputeEndpoint> {
    match c {
        ClusterCreate::Overlay(a) => overlay::create_staged(engine, a).await,
    }
}

/// Endpoint delete (API path), a cluster driver's: withdrawn from the cluster, deleted here,
/// its cluster state released; the cluster steps run while the engine lock is free.
pub(crate) async fn delete_endpoint_staged(engine: &EngineLock, w: ClusterWithdrawal) -> Result<()> {
    match w {
        ClusterWithdrawal::Overlay(w) => overlay::delete_staged(engine, w).await,
    }
}

/// Network create (API path) for a kind with a cluster driver: validated under the lock,
/// created in the cluster without it, built here under it.
pub(crate) async fn create_network_staged(driver: ClusterDriver, engine: &EngineLock, req: HostComputeNetwork) -> Result<HostComputeNetwork> {
    match driver {
        ClusterDriver::Overlay => overlay::create_network_staged(engine, req).await,
    }
}

/// Network delete (API path): the cluster step of [`Engine::cluster_network_withdrawal`], run
/// while the engine lock is free; an error refuses the delete. Returns the lock, held again,
/// for the local delete.
pub(crate) async fn withdraw_network_staged(engine: &EngineLock, w: ClusterNetworkWithdrawal) -> Result<EngineGuard<'_>> {
    match w {
        ClusterNetworkWithdrawal::Overlay(w) => overlay::withdraw_network_staged(engine, w).await,
    }
}

/// Every cluster driver's sync of this host's records in the cluster with its store, when they
/// may differ; the cluster's I/O runs while the engine lock is free. Returns what it repaired.
pub(crate) async fn sync_clusters(engine: &EngineLock) -> Vec<String> {
    let mut repaired = Vec::new();
    for driver in ClusterDriver::ALL {
        match driver {
            ClusterDriver::Overlay => {
                if overlay::sync_own(engine).await {
                    repaired.push("cluster records of this host's overlay endpoints brought up to date".into());
                }
            }
        }
    }
    repaired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_overlay_networks_have_a_cluster_driver() {
        assert_eq!(ClusterDriver::of(NetworkType::Overlay), Some(ClusterDriver::Overlay));
        for kind in [NetworkType::Nat, NetworkType::Transparent, NetworkType::L2Bridge, NetworkType::L2Tunnel] {
            assert_eq!(ClusterDriver::of(kind), None, "{kind}");
        }
        // The hooks that run for every driver (reconcile) reach the overlay's.
        assert!(ClusterDriver::ALL.contains(&ClusterDriver::Overlay));
    }
}
