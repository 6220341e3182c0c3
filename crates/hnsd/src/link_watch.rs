//! Listens to the host's link notifications and starts the repairs they call for
//! (`engine::link_repair`): a bridge or veth someone deletes, downs or unplugs comes back in
//! about a tenth of a second, not at the next periodic pass (10 s by default).
//!
//! A thread of its own reads the notifications (blocking reads, off the async workers that also
//! serve the API and DNS). Only the latest notification of each link counts, and a link is
//! looked at only once it has stayed broken for a moment ([`SETTLE`]): an attach's own steps
//! (its veth created down, then plugged in and brought up) end as a link that is fine well
//! before that and cost nothing, not even the engine's lock, and a user's few commands are
//! repaired together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hns_kernel::link_events::{LinkEvent, LinkEvents, Received};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::api::AppState;
use crate::engine::link_repair;

/// How long a link must stay broken, with no notification that shows it fine again, before
/// the engine looks at it: an attach's or detach's own steps take a few milliseconds at most,
/// and under many concurrent requests there is nearly always one in progress.
const SETTLE: Duration = Duration::from_millis(100);

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
        // By interface index, not name: a detach sets its veth down, then renames it out of
        // hns's names and group in a second step; the rename is that link's latest
        // notification, and the link drops out. With the moment it was first seen broken.
        let mut broken = HashMap::<u32, (LinkEvent, Instant)>::new();
        loop {
            // The next notifications, or the moment the oldest broken link is due.
            let due = broken.values().map(|(_, since)| *since + SETTLE).min();
            let got = match due {
                None => rx.recv().await,
                Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                    Ok(got) => got,
                    // Nothing new: only the due links are looked at below.
                    Err(_) => Some(Received::Events(Vec::new())),
                },
            };
            match got {
                None => return,
                Some(Received::Lost) => {
                    tracing::warn!("link notifications were dropped (the kernel's queue was full); running a reconcile pass");
                    broken.clear();
                    rescan.notify_one();
                    continue;
                }
                Some(Received::Events(events)) => {
                    let now = Instant::now();
                    for e in events {
                        // The latest notification of a link decides: one that is fine again
                        // drops out.
                        if link_repair::looks_broken(&e) {
                            broken.entry(e.link.index).and_modify(|(last, _)| *last = e.clone()).or_insert((e, now));
                        } else {
                            broken.remove(&e.link.index);
                        }
                    }
                }
            }
            let now = Instant::now();
            let due: HashMap<String, LinkEvent> = broken.extract_if(|_, (_, since)| now >= *since + SETTLE).map(|(_, (e, _))| (e.link.name.clone(), e)).collect();
            if due.is_empty() {
                continue;
            }
            let start = Instant::now();
            let report = link_repair::repair(&state.engine, &due).await;
            tracing::debug!(links = due.len(), took_us = start.elapsed().as_micros() as u64, repaired = report.repaired.len(), "link notifications looked at");
            state.metrics.found(&report);
            state.events.reconciled(&report);
            crate::log_report("link notification", &report);
        }
    }))
}
