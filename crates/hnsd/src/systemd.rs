//! systemd readiness (`Type=notify`): READY=1 once the first reconcile pass is done and the
//! API socket listens, STOPPING=1 at shutdown, and WATCHDOG=1 pings when the unit sets
//! `WatchdogSec=`. Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use sd_notify::NotifyState;

fn notify(state: NotifyState) {
    // A lost notification is systemd's concern (it times the start out); hnsd keeps serving.
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

pub fn ready() {
    notify(NotifyState::Ready);
}

pub fn stopping() {
    notify(NotifyState::Stopping);
}

/// Pings the watchdog at half its interval while the runtime runs, if systemd asked for it.
/// It proves the runtime schedules tasks, not that every engine operation is quick: an
/// overlay request may wait for etcd far longer than a watchdog interval should be.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let every = sd_notify::watchdog_enabled()? / 2;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            notify(NotifyState::Watchdog);
        }
    }))
}
