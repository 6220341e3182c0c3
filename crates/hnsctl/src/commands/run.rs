//! `hnsctl run` and `hnsctl exec`: processes in compartments.
//!
//! `run` creates a compartment (a namespace, plus an endpoint on the network), then forks the
//! program into it. The program is hnsctl's child, never hnsd's, so restarting hnsd does not
//! touch it. Before any fork the client (and its runtime) is dropped, so hnsctl is
//! single-threaded when the child enters the network namespace and unshares its mount
//! namespace. The child reports a failure to enter or to exec through a close-on-exec pipe:
//! end of file without a report means the program runs.
//!
//! Foreground: hnsctl waits for the program, forwards the signals sent to hnsctl itself, and
//! exits with the program's code (128+N when killed by signal N). Detached (`-d`): an
//! intermediate process makes a new session with stdio on /dev/null and forks the program;
//! without `--rm` it exits at once (the program is reparented), with `--rm` it stays as the
//! program's parent and removes the compartment when the program ends.

use std::fs::File;
use std::hash::BuildHasher;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2, setsid};

use hns_api::{
    ErrorCode, HostComputeEndpoint, HostComputeNamespace, IpConfig, ModifyRequest, NamespaceContainerRequest, RequestType, ResourceType,
};

use super::ps::remove_compartment;
use super::{Ctx, lookup, object_path, static_addresses};
use crate::client::Client;
use crate::compartment::{Compartment, Failure, Program, Report, Stage, enter_and_exec, read_reports};
use crate::error::{CliError, Result};
use crate::output::{print_json, print_line};
use crate::portspec;
use crate::published::{Families, Published, published_all};
use crate::runpolicy::{check_outbound_nat_list, name_the_flag, run_policies, wants_endpoint_policies};
use crate::{ExecArgs, RunArgs};

/// `--net host`: no compartment, the program shares hnsctl's network namespace.
const NET_HOST: &str = "host";
/// `--net none`: a compartment with only its loopback interface.
const NET_NONE: &str = "none";

pub fn run(ctx: &Ctx, a: &RunArgs) -> Result<i32> {
    let prog = Program::new(&a.program.command)?;
    let has_endpoint = a.net != NET_HOST && a.net != NET_NONE;
    if !has_endpoint && (a.ip.is_some() || a.ip6.is_some() || a.mac_address.is_some() || !a.alias.is_empty()) {
        return Err(CliError::invalid(format!(
            "--ip, --ip6, --mac-address and --alias configure an endpoint; --net {} has none",
            a.net
        )));
    }
    if !has_endpoint && a.max_bandwidth.is_some() {
        return Err(CliError::invalid(format!("--max-bandwidth caps an endpoint's traffic; --net {} has none", a.net)));
    }
    if !has_endpoint && wants_endpoint_policies(a) {
        return Err(CliError::invalid(format!("--acl and --outbound-nat are policies of an endpoint; --net {} has none", a.net)));
    }
    if !has_endpoint && !a.publish.is_empty() {
        return Err(CliError::invalid("-p/--publish: port mappings need a network; --net host uses the host's ports directly"));
    }
    let ip_configurations: Vec<IpConfig> = static_addresses(a.ip.as_deref(), a.ip6.as_deref())?;
    check_outbound_nat_list(a.outbound_nat.as_deref(), &a.program.command).map_err(CliError::invalid)?;
    let policies = run_policies(a).map_err(CliError::invalid)?;

    if a.net == NET_HOST {
        let launch = Launch { ctx, ns: None, comp: None, prog: &prog, rm: false, published: &[] };
        return if a.detach { launch.detached() } else { exec_in_place(None, &prog) };
    }

    let client = ctx.client()?;
    let ns = create_namespace(&client, a.name.as_deref())?;
    // The mappings made, as `docker port` shows them (both families on a dual-stack network).
    let mut published: Vec<String> = Vec::new();
    let connect = || -> Result<Compartment> {
        if has_endpoint {
            let body = HostComputeEndpoint {
                name: ns.name.clone(),
                host_compute_network: a.net.clone(),
                host_compute_namespace: ns.id.clone(),
                ip_configurations,
                mac_address: a.mac_address.clone().unwrap_or_default(),
                aliases: a.alias.clone(),
                policies: policies.iter().map(|l| l.policy.clone()).collect(),
                ..Default::default()
            };
            let flags: Vec<String> = policies.iter().map(|l| l.flag.clone()).collect();
            let ep = client.post::<_, HostComputeEndpoint>("/endpoints", &body).map_err(|e| name_the_flag(e, &flags))?;
            published = published_all(&portspec::mappings_in(&ep.policies), Families::of(&ep)).iter().map(Published::line).collect();
        }
        Compartment::from_namespace(&ns)
    };
    let comp = match connect() {
        Ok(comp) => comp,
        Err(e) => {
            undo(&client, &ns);
            return Err(e);
        }
    };
    drop(client);

    let launch = Launch { ctx, ns: Some(&ns), comp: Some(&comp), prog: &prog, rm: a.rm, published: &published };
    if a.detach {
        launch.detached()
    } else {
        // On stderr, so the command's own output stays clean.
        published.iter().for_each(|line| eprintln!("{line}"));
        launch.foreground()
    }
}

pub fn exec(ctx: &Ctx, a: &ExecArgs) -> Result<i32> {
    let prog = Program::new(&a.program.command)?;
    let ns = {
        let client = ctx.client()?;
        lookup::<HostComputeNamespace>(&client, &a.container)?
    };
    let comp = Compartment::from_namespace(&ns)?;
    exec_in_place(Some(&comp), &prog)
}

/// Becomes the program (hnsctl is single-threaded here: no client is alive).
fn exec_in_place(comp: Option<&Compartment>, prog: &Program) -> Result<i32> {
    flush_stdout();
    // SAFETY: no other thread exists; on success this process is the program.
    let failure = unsafe { enter_and_exec(comp, prog) };
    Err(failure.into_error(comp, prog))
}

/// Creates the namespace; a generated name that is taken is replaced by another.
fn create_namespace(client: &Client, name: Option<&str>) -> Result<HostComputeNamespace> {
    if let Some(name) = name {
        return client.post("/namespaces", &HostComputeNamespace { name: name.to_owned(), ..Default::default() });
    }
    let mut tries = 0;
    loop {
        let body = HostComputeNamespace { name: generate_name(), ..Default::default() };
        match client.post("/namespaces", &body) {
            Err(e) if e.api_code() == Some(ErrorCode::NamespaceAlreadyExists) && tries < 8 => tries += 1,
            other => return other,
        }
    }
}

/// Removes what a failed `run` created, keeping the first error as the one reported.
fn undo(client: &Client, ns: &HostComputeNamespace) {
    if let Err(e) = remove_compartment(client, &ns.id) {
        eprintln!("Warning: could not remove the compartment {}:\n{}", label(ns), e.render());
    }
}

fn label(ns: &HostComputeNamespace) -> &str {
    if ns.name.is_empty() { &ns.id } else { &ns.name }
}

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brisk", "calm", "clever", "cosmic", "dapper", "eager", "fancy", "frosty", "gentle", "golden", "hardy",
    "jolly", "keen", "lively", "lucid", "merry", "nimble", "noble", "plucky", "quiet", "rapid", "serene", "sharp", "sunny",
    "swift", "tidy", "upbeat", "vivid", "witty", "zesty",
];
const NOUNS: &[&str] = &[
    "anchor", "beacon", "bridge", "cable", "canyon", "comet", "delta", "ember", "falcon", "fjord", "gateway", "glacier",
    "harbor", "island", "lantern", "meadow", "mesa", "nebula", "orbit", "packet", "prism", "pylon", "quasar", "relay",
    "router", "signal", "socket", "summit", "switch", "tunnel", "uplink", "vertex",
];

/// A docker-like `adjective_noun` name.
pub fn generate_name() -> String {
    let r = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    let adjective = ADJECTIVES[(r % ADJECTIVES.len() as u64) as usize];
    let noun = NOUNS[((r >> 32) % NOUNS.len() as u64) as usize];
    format!("{adjective}_{noun}")
}

fn flush_stdout() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

fn local(what: &str) -> impl FnOnce(Errno) -> CliError + '_ {
    move |e| CliError::local(format!("{what}: {e}"))
}

/// The PID of the foreground program, for the signal handler (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Passes a signal sent to hnsctl on to the program. Signals from the terminal (Ctrl-C, ...)
/// reached the program already, as it is in the same process group: those are not sent twice.
extern "C" fn forward_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let pid = CHILD.load(Ordering::SeqCst);
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo.
    let from_terminal = !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL;
    if pid > 0 && !from_terminal {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn install_forwarding() -> Result<()> {
    let action = SigAction::new(SigHandler::SigAction(forward_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        // SAFETY: the handler only reads an atomic and calls kill.
        unsafe { sigaction(sig, &action) }.map_err(local("cannot install a signal handler"))?;
    }
    Ok(())
}

/// Waits for a child; its exit code, or 128+N when signal N killed it.
fn wait_child(child: Pid) -> Result<i32> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(CliError::local(format!("cannot wait for process {child}: {e}"))),
        }
    }
}

/// Points stdin, stdout and stderr at /dev/null.
fn detach_stdio() {
    // SAFETY: plain descriptor calls.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

/// In a forked child: enter, exec, or report why not and exit.
fn child_enter_and_exec(comp: Option<&Compartment>, prog: &Program, report_fd: libc::c_int) -> ! {
    // SAFETY: we are a child of a single-threaded process; only raw system calls follow.
    unsafe {
        let failure = enter_and_exec(comp, prog);
        Report::Failed(failure).send(report_fd);
        libc::_exit(failure.exit_code())
    }
}

/// One program to start, in a compartment or (`--net host`) not.
struct Launch<'a> {
    ctx: &'a Ctx,
    ns: Option<&'a HostComputeNamespace>,
    comp: Option<&'a Compartment>,
    prog: &'a Program,
    rm: bool,
    /// The port mappings made, printed on stderr by `run -d` after the ID.
    published: &'a [String],
}

impl Launch<'_> {
    /// Forks with a close-on-exec pipe from child to parent; undoes the compartment if the
    /// fork fails.
    fn fork_with_pipe(&self) -> Result<(ForkResult, OwnedFd, OwnedFd)> {
        flush_stdout();
        let (reader, writer) = pipe2(OFlag::O_CLOEXEC).map_err(local("cannot make a pipe"))?;
        // SAFETY: hnsctl is single-threaded here (the client was dropped).
        match unsafe { fork() } {
            Ok(f) => Ok((f, reader, writer)),
            Err(e) => {
                self.undo();
                Err(CliError::local(format!("cannot fork: {e}")))
            }
        }
    }

    fn foreground(&self) -> Result<i32> {
        install_forwarding()?;
        match self.fork_with_pipe()? {
            (ForkResult::Child, _, writer) => child_enter_and_exec(self.comp, self.prog, writer.as_raw_fd()),
            (ForkResult::Parent { child }, reader, writer) => {
                CHILD.store(child.as_raw(), Ordering::SeqCst);
                drop(writer);
                let reports = read_reports(File::from(reader)).map_err(|e| CliError::local(format!("cannot read the child's status: {e}")));
                if let Some(failure) = reports.as_ref().ok().and_then(|r| first_failure(r)) {
                    let _ = wait_child(child);
                    CHILD.store(0, Ordering::SeqCst);
                    self.undo();
                    return Err(failure.into_error(self.comp, self.prog));
                }
                self.record(child.as_raw());
                let code = wait_child(child);
                CHILD.store(0, Ordering::SeqCst);
                if self.rm {
                    self.remove();
                }
                code
            }
        }
    }

    fn detached(&self) -> Result<i32> {
        match self.fork_with_pipe()? {
            (ForkResult::Child, reader, writer) => {
                drop(reader);
                self.monitor(writer)
            }
            (ForkResult::Parent { child: monitor }, reader, writer) => {
                drop(writer);
                let reports = read_reports(File::from(reader)).map_err(|e| CliError::local(format!("cannot read the child's status: {e}")))?;
                if !self.rm {
                    // It exits as soon as the program is started.
                    let _ = wait_child(monitor);
                }
                if let Some(failure) = first_failure(&reports) {
                    self.undo();
                    return Err(failure.into_error(self.comp, self.prog));
                }
                let Some(pid) = reports.iter().find_map(|r| match r {
                    Report::Started(pid) => Some(*pid),
                    Report::Failed(_) => None,
                }) else {
                    self.undo();
                    return Err(CliError::local("the background process ended before starting the command"));
                };
                self.record(pid);
                self.announce(pid)?;
                Ok(0)
            }
        }
    }

    /// The intermediate process of a detached run: new session, no terminal, then the program.
    fn monitor(&self, writer: OwnedFd) -> ! {
        let _ = setsid();
        detach_stdio();
        let fd = writer.as_raw_fd();
        // SAFETY: this process is single-threaded (a fork of single-threaded hnsctl).
        match unsafe { fork() } {
            Err(e) => {
                Report::Failed(Failure { stage: Stage::Fork, errno: e as i32 }).send(fd);
                // SAFETY: ends this process without running the parent's cleanup.
                unsafe { libc::_exit(125) }
            }
            Ok(ForkResult::Child) => child_enter_and_exec(self.comp, self.prog, fd),
            Ok(ForkResult::Parent { child }) => {
                Report::Started(child.as_raw()).send(fd);
                drop(writer);
                if self.rm {
                    let _ = wait_child(child);
                    self.remove();
                }
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
        }
    }

    /// Records the program's process in the namespace (`ResourceType: Container`).
    fn record(&self, pid: i32) {
        let Some(ns) = self.ns else { return };
        let settings = NamespaceContainerRequest { pid: pid as u32, command: self.prog.args().to_vec(), container_id: String::new() };
        let request = ModifyRequest {
            resource_type: ResourceType::Container,
            request_type: RequestType::Add,
            resource_uri: String::new(),
            settings: serde_json::to_value(settings).unwrap_or_default(),
        };
        let result = Client::new(&self.ctx.socket).and_then(|c| c.modify(&object_path::<HostComputeNamespace>(&ns.id), &request));
        match result {
            // A quick program with --rm may be gone, compartment and all, already.
            Err(e) if !e.is_not_found() => {
                eprintln!("Warning: could not record process {pid} in compartment {}:\n{}", label(ns), e.render())
            }
            _ => {}
        }
    }

    /// What `run -d` prints: the compartment's ID (its object with --format json) on stdout, so
    /// `ID=$(hnsctl run -d ...)` holds the ID only; one line per port mapping on stderr; the PID
    /// for `--net host`.
    fn announce(&self, pid: i32) -> Result<()> {
        let Some(ns) = self.ns else {
            print_line(&pid.to_string());
            return Ok(());
        };
        if self.ctx.json() {
            let fresh = Client::new(&self.ctx.socket).and_then(|c| c.get::<HostComputeNamespace>(&object_path::<HostComputeNamespace>(&ns.id)));
            match fresh {
                Ok(current) => print_json(&current)?,
                Err(_) => print_json(ns)?,
            }
        } else {
            print_line(&ns.id);
        }
        self.published.iter().for_each(|line| eprintln!("{line}"));
        Ok(())
    }

    /// Removes the compartment after a failed start.
    fn undo(&self) {
        if let Some(ns) = self.ns {
            match Client::new(&self.ctx.socket) {
                Ok(client) => undo(&client, ns),
                Err(e) => eprintln!("Warning: could not remove the compartment {}:\n{}", label(ns), e.render()),
            }
        }
    }

    /// `--rm`: removes the endpoints and the namespace once the program ended.
    fn remove(&self) {
        self.undo();
    }
}

fn first_failure(reports: &[Report]) -> Option<Failure> {
    reports.iter().find_map(|r| match r {
        Report::Failed(f) => Some(*f),
        Report::Started(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_look_like_docker_names() {
        for _ in 0..50 {
            let n = generate_name();
            let (adj, noun) = n.split_once('_').unwrap();
            assert!(ADJECTIVES.contains(&adj) && NOUNS.contains(&noun), "{n}");
        }
    }

    #[test]
    fn options_that_need_an_endpoint_are_refused_without_one() {
        let ctx = Ctx { socket: "/nonexistent/hns.sock".into(), format: crate::output::Format::Table };
        for net in ["host", "none"] {
            let a = match <crate::Cli as clap::Parser>::try_parse_from(["hnsctl", "run", "--net", net, "--ip", "10.0.0.2", "true"]).unwrap().command {
                crate::Command::Run(a) => a,
                other => panic!("{other:?}"),
            };
            let e = run(&ctx, &a).unwrap_err().render();
            assert!(e.contains("--net ") && e.contains("has none"), "{e}");
        }
    }

    fn run_args(argv: &[&str]) -> RunArgs {
        match <crate::Cli as clap::Parser>::try_parse_from(argv).unwrap().command {
            crate::Command::Run(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn published_ports_need_a_network_and_valid_specs() {
        // The socket does not exist: each error must come before hnsd is asked anything.
        let ctx = Ctx { socket: "/nonexistent/hns.sock".into(), format: crate::output::Format::Table };
        for net in ["host", "none"] {
            let e = run(&ctx, &run_args(&["hnsctl", "run", "--net", net, "-p", "8080:80", "true"])).unwrap_err();
            assert_eq!(e.exit_code(), 1);
            assert!(e.render().contains("port mappings need a network; --net host uses the host's ports directly"), "{}", e.render());
        }
        let e = run(&ctx, &run_args(&["hnsctl", "run", "--net", "mynat", "-p", "8080:80", "-p", "8000-8002:80-81", "true"])).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.render(),
            "Error: invalid port mapping \"8000-8002:80-81\": host range 8000-8002 has 3 ports but container range 80-81 has 2"
        );
    }

    #[test]
    fn unreachable_daemon_is_reported_before_anything_runs() {
        let ctx = Ctx { socket: "/nonexistent/hns.sock".into(), format: crate::output::Format::Table };
        let a = match <crate::Cli as clap::Parser>::try_parse_from(["hnsctl", "run", "--net", "mynat", "true"]).unwrap().command {
            crate::Command::Run(a) => a,
            other => panic!("{other:?}"),
        };
        let e = run(&ctx, &a).unwrap_err();
        assert!(matches!(e, CliError::Connect { .. }), "{e:?}");
    }
}
