//! Listens to the host's link notifications and starts the repairs they call for
//! (`engine::link_repair`): a bridge or veth someone deletes, downs or unplugs comes back in
//! tens of milliseconds, not at the next periodic pass (10 s by default).
//!
//! A thread of its own reads the notifications (blocking reads, off the async workers that also
//! serve the API and DNS). Notifications are taken in bursts: the first one opens a short
//! window, every one that arrives within it joins, and only the latest of each link counts; so
//! an attach's own steps (its veth created down, then plugged in and brought up) end as a
//! link that is fine and cost nothing, and a user's few commands are repaired together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hns_kernel::link_events::{LinkEvent, LinkEvents, Received};
use tokio::sync::{Notify, mpsc};

use crate::api::AppState;
use crate::engine::link_repair;

/// How long a burst of notifications is gathered before it is looked at.
const WINDOW: Duration = Duration::from_millis(30);

/// Subscribes in the daemon's namespace and starts the listener. `rescan` is notified when the
/// kernel dropped notifications (its queue overflowed): the periodic pass then runs at once.
pub fn start(state: Arc<AppState>, rescan: Arc<Notify>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut events = LinkEvents::open()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Received>();
    std::thread::Builder::new().name("hns-link-events".into()).spawn(move || {
        loop {
            let got = match events.recv() {
                Ok(got) => got,
                Err(e) => {
                    tracing::error!(error = %e, "link notifications stopped; drift is repaired by the periodic pass only");
                    return;
                }
            };
            if tx.send(got).is_err() {
                return;
            }
        }
    })?;
    Ok(tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // By interface index, not name: a detach sets its veth down, then renames it out
            // of hns's names and group in a second step; the rename is that link's latest
            // notification, and the link drops out.
            let mut broken = HashMap::<u32, LinkEvent>::new();
            let mut lost = false;
            let mut take = |got: Received| match got {
                Received::Lost => lost = true,
                Received::Events(events) => {
                    for e in events {
                        // The latest notification of a link decides: one that is fine again
                        // drops out.
                        if link_repair::looks_broken(&e) {
                            broken.insert(e.link.index, e);
                        } else {
                            broken.remove(&e.link.index);
                        }
                    }
                }
            };
            take(first);
            let until = tokio::time::Instant::now() + WINDOW;
            while let Ok(Some(got)) = tokio::time::timeout_at(until, rx.recv()).await {
                take(got);
            }
            if lost {
                tracing::warn!("link notifications were dropped (the kernel's queue was full); running a reconcile pass");
                rescan.notify_one();
                continue;
            }
            if broken.is_empty() {
                continue;
            }
            let broken = broken.into_values().map(|e| (e.link.name.clone(), e)).collect();
            let report = link_repair::repair(&state.engine, &broken).await;
            state.metrics.found(&report);
            state.events.reconciled(&report);
            crate::log_report("link notification", &report);
        }
    }))
}
