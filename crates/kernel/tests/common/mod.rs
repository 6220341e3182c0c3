//! What the kernel crate's tests share.

/// Runs `f` on a thread of its own inside a fresh network namespace, so nothing it does to
/// nftables reaches the namespace the tests run in; the namespace goes with the thread.
pub fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare a network namespace (run as root)");
            f()
        })
        .join()
        .expect("test thread")
    })
}
