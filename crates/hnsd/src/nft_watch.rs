//! Listens to the nf_tables notifications of the daemon's namespace: when another process
//! changes an hns table (a firewall reload flushing the ruleset, a hand edit), the reconcile
//! pass runs at once instead of at its next tick, so port mappings, ACLs and load balancers
//! are back within that pass's time, not up to `--reconcile-interval` later.
//!
//! hnsd's own writes (its threads' netlink batches, the `nft` programs it runs) are told apart
//! by the process the kernel names for each transaction (`hns_kernel::nft_events`), so the
//! changes every attach makes never start a pass.

use std::sync::Arc;

use hns_kernel::nft_events::{NftEvents, NftReceived, is_own_writer};
use tokio::sync::Notify;

/// Subscribes and starts the listener's thread, which notifies `rescan` for each foreign change.
pub fn start(rescan: Arc<Notify>) -> anyhow::Result<()> {
    let mut events = NftEvents::open()?;
    std::thread::Builder::new().name("hns-nft-events".into()).spawn(move || {
        loop {
            match events.recv() {
                Ok(NftReceived::Changes(changes)) => {
                    for c in changes.iter().filter(|c| !is_own_writer(c.pid)) {
                        let tables: Vec<String> = c.tables.iter().map(|(family, name)| format!("{} {name}", family_name(*family))).collect();
                        tracing::warn!(process = %c.process, pid = c.pid, tables = %tables.join(", "), "another process changed hns's nft tables; reconciling now");
                        rescan.notify_one();
                    }
                }
                Ok(NftReceived::Lost) => {
                    tracing::warn!("nf_tables notifications were dropped (the kernel's queue was full); reconciling now");
                    rescan.notify_one();
                }
                Err(e) => {
                    tracing::error!(error = %e, "nf_tables notifications stopped; hns's tables are checked by the periodic pass only");
                    return;
                }
            }
        }
    })?;
    Ok(())
}

/// nft's name of a table family (NFPROTO_*).
fn family_name(family: u8) -> &'static str {
    match family {
        1 => "inet",
        2 => "ip",
        7 => "bridge",
        10 => "ip6",
        _ => "?",
    }
}
