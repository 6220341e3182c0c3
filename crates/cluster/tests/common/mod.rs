//! A lab for cluster tests: a fresh network namespace with `lo` up, a real etcd listening on
//! 127.0.0.1 inside it, and a way to run async test code inside that namespace (a thread that
//! joins it and builds its own tokio runtime; every runtime thread inherits the namespace).

#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hns_cluster::{Cluster, ClusterConfig, ClusterEvent, ClusterWatch};
use hns_lab::Holder;
use hns_lab::etcd::EtcdServer;

pub const ETCD_PORT: u16 = 2379;

pub struct EtcdLab {
    pub holder: Holder,
    etcd: Mutex<EtcdServer>,
    netns: OwnedFd,
}

impl EtcdLab {
    pub fn start() -> EtcdLab {
        let holder = Holder::new_net().expect("namespace holder (tests need root)");
        holder.ip(&["link", "set", "lo", "up"]).unwrap();
        let etcd = EtcdServer::start(&holder, "127.0.0.1".parse().unwrap(), ETCD_PORT).expect("start etcd");
        let netns = hns_kernel::netns::open(&holder.netns_path()).unwrap();
        EtcdLab { holder, etcd: Mutex::new(etcd), netns }
    }

    pub fn etcd(&self) -> MutexGuard<'_, EtcdServer> {
        self.etcd.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn url(&self) -> String {
        self.etcd().client_url()
    }

    pub fn config(&self) -> ClusterConfig {
        let mut cfg = ClusterConfig::new([self.url()]);
        cfg.request_timeout = Duration::from_secs(3);
        cfg
    }

    pub fn stop_etcd(&self) {
        self.etcd().stop().unwrap();
    }

    pub fn restart_etcd(&self) {
        self.etcd().restart(&self.holder).unwrap();
    }

    /// Runs `f` on a runtime whose threads live in the lab's namespace.
    pub fn run<T: Send>(&self, f: impl AsyncFnOnce() -> T + Send) -> T {
        in_netns(&self.netns, f)
    }
}

pub fn in_netns<T: Send>(ns: &OwnedFd, f: impl AsyncFnOnce() -> T + Send) -> T {
    hns_kernel::netns::run_in(ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(f())
    })
    .expect("enter the lab namespace")
}

pub async fn connect(lab_cfg: &ClusterConfig) -> Cluster {
    Cluster::connect(lab_cfg.clone()).await.expect("connect to the lab etcd")
}

/// The next watch event within `within`, or a panic naming what was awaited.
pub async fn next_event(w: &mut ClusterWatch, within: Duration, what: &str) -> ClusterEvent {
    match tokio::time::timeout(within, w.next()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("watch ended while waiting for {what}"),
        Err(_) => panic!("no watch event within {within:?} while waiting for {what}"),
    }
}

/// Skips events until `pred` matches; panics after `within`.
pub async fn wait_for(w: &mut ClusterWatch, within: Duration, what: &str, mut pred: impl FnMut(&ClusterEvent) -> bool) -> ClusterEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let e = next_event(w, left, what).await;
        if pred(&e) {
            return e;
        }
    }
}
