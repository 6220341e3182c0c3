//! hnsd: the Host Networking Service for Linux.
//!
//! Map: [`config`] (flags and TOML), [`api`] (HTTP routes on the unix socket), [`engine`]
//! (the single owner of state: validation, store transactions, kernel steps, reconcile).
//! Drivers, the kernel layer, the store and IPAM are crates of their own.

mod api;
mod cluster;
mod config;
mod docker;
mod engine;
mod events;
mod instance;
mod link_watch;
mod metrics;
mod nft_watch;
mod serve;
mod systemd;
mod web;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use config::{Args, Config};
use engine::{Engine, EngineConfig};

fn main() -> anyhow::Result<()> {
    // glibc gives each thread that allocates (tokio workers, the blocking pool's threads) an
    // arena of its own, up to eight per core, and each keeps what it freed: two arenas hold
    // the daemon's memory with no measurable contention at its request rate.
    // SAFETY: mallopt only sets a malloc tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let args = Args::parse();
    if args.man {
        use clap::CommandFactory;
        use std::io::Write;
        let mut page = Vec::new();
        clap_mangen::Man::new(Args::command()).section("8").render(&mut page)?;
        // A closed pipe (`| head`) is not an error worth reporting.
        let _ = std::io::stdout().lock().write_all(&page);
        return Ok(());
    }
    if args.sandbox {
        return exec_sandbox(&args);
    }
    let cfg = Config::load(&args)?;
    // The DNS library logs every query at info; only its warnings belong in hnsd's log.
    let filter = format!("hickory_server=warn,{}", cfg.log);
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).with_target(false).init();
    // 8 MiB stacks: the nested request futures (attach inside a namespace modify inside the
    // API handler) overflowed tokio's 2 MiB in debug builds under 100 concurrent clients
    // (tests/concurrency.rs). Untouched stack pages cost no memory.
    let rt = tokio::runtime::Builder::new_multi_thread().thread_stack_size(8 << 20).enable_all().build()?;
    if args.cleanup {
        // Refused while an hnsd serves this namespace or these directories: it would pull the
        // compartments and the API socket from under a live daemon.
        let dirs: Vec<&Path> = [&cfg.state_dir, &cfg.run_dir].into_iter().filter(|d| d.is_dir()).map(|d| d.as_path()).collect();
        let _lock = instance::acquire(&dirs, "clean up")?;
        return rt.block_on(async {
            let host = hns_kernel::netlink::Netlink::current()?;
            for line in engine::reconcile::cleanup_all(&host, &cfg.run_dir).await {
                println!("{line}");
            }
            // Docker plugin sockets left by an hnsd that was killed.
            if let Some(dir) = &cfg.docker_plugin_dir {
                for line in docker::server::remove_stale(dir) {
                    println!("{line}");
                }
            }
            if std::fs::remove_file(&cfg.socket).is_ok() {
                println!("removed stale API socket {}", cfg.socket.display());
            }
            Ok(())
        });
    }
    let nofile = raise_nofile_limit();
    rt.block_on(run(cfg, nofile))
}

/// Raises the soft limit of open files to the hard one. Each compartment handle in use, API
/// connection and DNS listener is a descriptor, and the soft limit is often 1024 (systemd's
/// default): past it, accept, netns opens and netlink sockets fail with EMFILE.
/// Returns the soft limit in force.
fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "raised the open-files limit");
                hard
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "could not raise the open-files limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the open-files limit; assuming 1024");
            1024
        }
    }
}

async fn run(cfg: Config, nofile: u64) -> anyhow::Result<()> {
    for dir in [&cfg.run_dir, &cfg.state_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("chmod {}", dir.display()))?;
    }
    // Before anything touches the kernel, the store or the socket.
    let _lock = instance::acquire(&[&cfg.state_dir, &cfg.run_dir], "serve")?;
    let ecfg = EngineConfig { run_dir: cfg.run_dir.clone(), state_dir: cfg.state_dir.clone(), port_range: cfg.port_range, dns_port: 53, open_compartments: engine::open_compartments(nofile) };
    hns_kernel::netns::prepare_dir(&ecfg.netns_dir())?;
    let listener = bind_socket(&cfg.socket)?;
    let host = hns_kernel::netlink::Netlink::current()?;
    let metrics = Arc::new(metrics::Metrics::new(host.clone()));
    let events = events::Bus::new();
    let mut engine = Engine::open(ecfg, host)?;
    metrics.watch_store(engine.store());
    tracing::info!(store = %engine.store_path().display(), "store opened");
    if let Some(c) = &cfg.cluster {
        cluster::prepare(&mut engine, c).await?;
    }
    log_report("start", &reconcile(&mut engine, true, &metrics, &events).await);
    serve::trim_heap();
    if !cfg.no_default_network {
        match engine.ensure_default_network().await {
            Ok(Some(n)) => tracing::info!(name = %n.name, subnet = ?n.subnets().next().map(|s| s.ip_address_prefix.clone()), "created the default network"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "could not create the default network"),
        }
    }
    let lease6_events = engine.take_lease6_events();
    let state = Arc::new(api::AppState { engine: engine::EngineLock::new(engine, metrics.lock_timing()), metrics, events: events.clone() });
    let metrics_tcp = match cfg.metrics_listen {
        Some(addr) => Some(metrics::listen(addr, state.clone()).await?),
        None => None,
    };
    let web = match cfg.web_listen {
        Some(addr) => Some(web::listen(addr, state.clone(), cfg.limits).await?),
        None => None,
    };
    // DHCPv6 leases arrive in the background (engine/dhcp6.rs): apply each change as it comes.
    if let Some(mut events) = lease6_events {
        let state = state.clone();
        tokio::spawn(async move {
            while let Some(id) = events.recv().await {
                state.engine.lock().await.apply_lease6(&id).await;
            }
        });
    }
    let cluster_link = cfg.cluster.clone().map(|c| tokio::spawn(cluster::run(state.clone(), c)));
    // Woken early when link notifications were lost (link_watch) and when another process
    // changed hns's nft tables (nft_watch).
    let rescan = Arc::new(tokio::sync::Notify::new());
    // Subscribed before the first periodic pass, so no change after that pass goes unseen.
    let mut link_watch = None;
    if cfg.repair_on_notice {
        if let Err(e) = nft_watch::start(rescan.clone()) {
            tracing::error!(error = format!("{e:#}"), "no nf_tables notifications: hns's tables are checked by the periodic pass only");
        }
        match link_watch::start(state.clone(), rescan.clone()) {
            Ok(t) => link_watch = Some(t),
            Err(e) => tracing::error!(error = format!("{e:#}"), "no link notifications: drift is repaired by the periodic pass only"),
        }
    }
    let periodic = {
        let state = state.clone();
        let every = cfg.reconcile_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate: a pass right after start checks what the start-up
            // pass leaves out (the default routes inside the compartments).
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = rescan.notified() => tick.reset(),
                }
                // Not under one lock for the whole pass: see engine::periodic.
                let start = std::time::Instant::now();
                let report = engine::periodic::periodic(&state.engine).await;
                state.metrics.reconciled(&report, start.elapsed());
                state.events.reconciled(&report);
                state.events.track_leases(&*state.engine.lock().await);
                log_report("periodic", &report);
                let _ = tokio::task::spawn_blocking(serve::trim_heap).await;
            }
        })
    };
    // Docker plugins (network drivers and the hns IPAM): optional, so a failure is logged.
    let docker = match &cfg.docker_plugin_dir {
        Some(dir) => docker::start(state.clone(), dir, cfg.limits).await.map_err(|e| tracing::error!(error = format!("{e:#}"), "the docker plugins are not served")).ok(),
        None => None,
    };
    tracing::info!(socket = %cfg.socket.display(), "serving the HNS API");
    // The socket has listened since bind_socket (clients queue until served) and the first
    // reconcile pass is done: units ordered after hnsd may start now.
    systemd::ready();
    let watchdog = systemd::spawn_watchdog();
    // At shutdown the event streams end first: a subscriber must not hold the exit.
    let stop = async {
        shutdown_signal().await;
        events.close();
    };
    serve::Server::new(cfg.limits).serve(listener, api::router(state), stop).await;
    if let Some(d) = docker {
        d.stop().await;
    }
    periodic.abort();
    if let Some(t) = link_watch {
        t.abort();
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(t) = metrics_tcp {
        t.abort();
    }
    if let Some(t) = web {
        t.abort();
    }
    // Without revoking the lease: peers keep this host's endpoints until it expires.
    if let Some(link) = cluster_link {
        link.abort();
    }
    let _ = std::fs::remove_file(&cfg.socket);
    tracing::info!("stopped; networks and compartments keep running");
    Ok(())
}

/// `hnsd --sandbox`: hands over to `hns-sandbox` (built beside hnsd), which builds the lab and runs
/// this hnsd inside it. Everything but the sandbox's own flags goes to the hnsd inside. The lab lives
/// in a binary of its own so that the daemon does not ship the test lab.
fn exec_sandbox(args: &Args) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut hnsd_args = Vec::new();
    let mut skip_value = false;
    for a in std::env::args().skip(1) {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match a.as_str() {
            "--sandbox" => {}
            "--sandbox-dir" => skip_value = true,
            _ if a.starts_with("--sandbox-dir=") => {}
            _ => hnsd_args.push(a),
        }
    }
    let hnsd = std::env::current_exe().context("locating the hnsd executable")?;
    let sandbox = hnsd.with_file_name("hns-sandbox");
    if !sandbox.exists() {
        anyhow::bail!(
            "--sandbox needs {} beside hnsd (build it with `cargo build --release --bin hns-sandbox`, or run ./scripts/sandbox)",
            sandbox.display()
        );
    }
    let mut cmd = std::process::Command::new(&sandbox);
    cmd.arg("--hnsd").arg(&hnsd);
    if let Some(dir) = &args.sandbox_dir {
        cmd.arg("--dir").arg(dir);
    }
    cmd.arg("--").args(hnsd_args);
    Err(anyhow::Error::new(cmd.exec()).context(format!("running {}", sandbox.display())))
}

/// Binds the API socket, refusing to steal it from a running hnsd.
fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another hnsd is already serving {}; stop it first or pass --socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let l = serve::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// One reconcile pass, counted in the metrics, its findings published as events.
async fn reconcile(engine: &mut Engine, full: bool, metrics: &metrics::Metrics, events: &Arc<events::Bus>) -> engine::reconcile::Report {
    let start = std::time::Instant::now();
    let report = engine.reconcile(full).await;
    metrics.reconciled(&report, start.elapsed());
    events.reconciled(&report);
    // Leases resumed after a restart, DHCPv6 clients started again.
    events.track_leases(engine);
    report
}

fn log_report(when: &str, r: &engine::reconcile::Report) {
    for x in &r.repaired {
        tracing::warn!(when, "repaired: {x}");
    }
    for x in &r.removed {
        tracing::warn!(when, "removed orphan: {x}");
    }
    for x in &r.collected {
        tracing::warn!(when, "garbage-collected: {x}");
    }
    for x in &r.errors {
        tracing::error!(when, "reconcile: {x}");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Before the requests in flight finish, so systemd knows the stop has begun.
    systemd::stopping();
}
