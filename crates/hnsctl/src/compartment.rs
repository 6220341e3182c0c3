//! Entering a compartment (a network namespace managed by hnsd) and starting a program in it.
//!
//! The entry sequence is the one `ip netns exec` uses: join the network namespace, take a
//! private mount namespace whose `/` only receives mounts from the host (slave), show the
//! namespace's own interfaces under `/sys`, bind the compartment's resolv.conf over
//! `/etc/resolv.conf`, then exec.
//!
//! [`enter_and_exec`] runs between fork and exec, so it only makes raw system calls on data
//! prepared beforehand ([`Compartment`] and [`Program`] hold C strings built before the fork);
//! it neither allocates nor locks. Errors are returned as a [`Failure`] (stage + errno) that
//! the child can hand to its parent through a pipe as plain integers.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use hns_api::HostComputeNamespace;

use crate::error::{CliError, Result};

/// Where to go: a network namespace and the resolv.conf to show in it.
#[derive(Debug)]
pub struct Compartment {
    netns: CString,
    resolv: Option<CString>,
}

impl Compartment {
    pub fn new(netns_path: &str, resolv_conf_path: &str) -> Result<Self> {
        if netns_path.is_empty() {
            return Err(CliError::Protocol("the compartment has no NetNsPath; hnsd did not say where its network namespace is".into()));
        }
        let netns = cstring(netns_path, "NetNsPath")?;
        // Bind only what exists: a missing file would fail the mount after the fork, where the
        // error is harder to explain. A dangling /etc/resolv.conf symlink cannot be bound over.
        let resolv = if !resolv_conf_path.is_empty() && Path::new(resolv_conf_path).is_file() && Path::new("/etc/resolv.conf").exists() {
            Some(cstring(resolv_conf_path, "ResolvConfPath")?)
        } else {
            None
        };
        Ok(Compartment { netns, resolv })
    }

    pub fn from_namespace(ns: &HostComputeNamespace) -> Result<Self> {
        Compartment::new(&ns.net_ns_path, &ns.resolv_conf_path).map_err(|e| match e {
            CliError::Protocol(_) => CliError::Protocol(format!(
                "namespace {} has no NetNsPath; hnsd did not say where its network namespace is",
                if ns.name.is_empty() { &ns.id } else { &ns.name }
            )),
            other => other,
        })
    }

    pub fn netns_path(&self) -> String {
        self.netns.to_string_lossy().into_owned()
    }

    pub fn resolv_conf(&self) -> Option<String> {
        self.resolv.as_ref().map(|r| r.to_string_lossy().into_owned())
    }
}

/// A command line ready for `execvp`.
#[derive(Debug)]
pub struct Program {
    args: Vec<String>,
    // The pointers point into the heap buffers of `_argv`, which never move or change.
    _argv: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

impl Program {
    pub fn new(args: &[String]) -> Result<Self> {
        if args.is_empty() {
            return Err(CliError::invalid("no command given"));
        }
        let argv = args.iter().map(|a| cstring(a, "the command")).collect::<Result<Vec<_>>>()?;
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(Program { args: args.to_vec(), _argv: argv, ptrs })
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn name(&self) -> &str {
        &self.args[0]
    }
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(Path::new(s).as_os_str().as_bytes()).map_err(|_| CliError::invalid(format!("{what} contains a NUL byte: {s:?}")))
}

/// The step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Stage {
    OpenNetns = 1,
    Setns = 2,
    Unshare = 3,
    MakeSlave = 4,
    BindResolv = 5,
    Exec = 6,
    /// Forking the program's process (in the intermediate process of a detached run).
    Fork = 7,
}

impl Stage {
    pub fn from_i32(n: i32) -> Option<Stage> {
        Some(match n {
            1 => Stage::OpenNetns,
            2 => Stage::Setns,
            3 => Stage::Unshare,
            4 => Stage::MakeSlave,
            5 => Stage::BindResolv,
            6 => Stage::Exec,
            7 => Stage::Fork,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    pub errno: i32,
}

impl Failure {
    /// Docker's codes: 127 command not found, 126 command cannot be run, 125 setup failed.
    pub fn exit_code(&self) -> i32 {
        match (self.stage, self.errno) {
            (Stage::Exec, libc::ENOENT) => 127,
            (Stage::Exec, _) => 126,
            _ => 125,
        }
    }

    pub fn message(&self, comp: Option<&Compartment>, prog: &Program) -> String {
        let err = std::io::Error::from_raw_os_error(self.errno);
        let netns = comp.map(Compartment::netns_path).unwrap_or_default();
        let root_hint = if self.errno == libc::EPERM { " (entering a compartment needs root: CAP_SYS_ADMIN)" } else { "" };
        match self.stage {
            Stage::OpenNetns => format!("cannot open the compartment's network namespace {netns}: {err}{root_hint}"),
            Stage::Setns => format!("cannot enter the network namespace {netns}: {err}{root_hint}"),
            Stage::Unshare => format!("cannot create a private mount namespace: {err}{root_hint}"),
            Stage::MakeSlave => format!("cannot make / a slave mount in the new mount namespace: {err}"),
            Stage::BindResolv => format!(
                "cannot bind {} over /etc/resolv.conf: {err}",
                comp.and_then(Compartment::resolv_conf).unwrap_or_default()
            ),
            Stage::Exec if self.errno == libc::ENOENT => format!("{}: command not found", prog.name()),
            Stage::Exec => format!("cannot run {}: {err}", prog.name()),
            Stage::Fork => format!("cannot start a process for {}: {err}", prog.name()),
        }
    }

    pub fn into_error(self, comp: Option<&Compartment>, prog: &Program) -> CliError {
        CliError::Exit { code: self.exit_code(), message: self.message(comp, prog) }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

const ROOT: &CStr = c"/";
const SYS: &CStr = c"/sys";
const SYSFS: &CStr = c"sysfs";
const ETC_RESOLV: &CStr = c"/etc/resolv.conf";

/// Enters `comp` (when given) and execs `prog`. Returns only on failure.
///
/// # Safety
/// Changes the namespaces of the calling process: call it in a forked child or in a
/// single-threaded process that is about to become the program. Only async-signal-safe calls
/// are made.
pub unsafe fn enter_and_exec(comp: Option<&Compartment>, prog: &Program) -> Failure {
    let fail = |stage| Failure { stage, errno: errno() };
    // SAFETY: raw system calls on NUL-terminated strings owned by `comp` and `prog`.
    unsafe {
        if let Some(c) = comp {
            let fd = libc::open(c.netns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return fail(Stage::OpenNetns);
            }
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return fail(Stage::Setns);
            }
            libc::close(fd);
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail(Stage::Unshare);
            }
            if libc::mount(std::ptr::null(), ROOT.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_SLAVE, std::ptr::null()) != 0 {
                return fail(Stage::MakeSlave);
            }
            // A sysfs mounted from inside the namespace lists its interfaces under
            // /sys/class/net. Best effort: a read-only or absent /sys keeps the host's view.
            libc::mount(
                SYSFS.as_ptr(),
                SYS.as_ptr(),
                SYSFS.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            );
            if let Some(r) = &c.resolv
                && libc::mount(r.as_ptr(), ETC_RESOLV.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0
            {
                return fail(Stage::BindResolv);
            }
        }
        libc::execvp(prog.ptrs[0], prog.ptrs.as_ptr());
    }
    fail(Stage::Exec)
}

/// What a child tells its parent through the status pipe: 3 native-endian i32s, written in
/// one `write` (smaller than PIPE_BUF, so never interleaved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The program's process exists (sent by the intermediate process of a detached run).
    Started(i32),
    /// Entering or exec failed.
    Failed(Failure),
}

const REPORT_LEN: usize = 12;

impl Report {
    fn encode(self) -> [u8; REPORT_LEN] {
        let (kind, a, b) = match self {
            Report::Started(pid) => (1i32, pid, 0i32),
            Report::Failed(f) => (2, f.stage as i32, f.errno),
        };
        let mut buf = [0u8; REPORT_LEN];
        buf[0..4].copy_from_slice(&kind.to_ne_bytes());
        buf[4..8].copy_from_slice(&a.to_ne_bytes());
        buf[8..12].copy_from_slice(&b.to_ne_bytes());
        buf
    }

    fn decode(buf: &[u8]) -> Option<Report> {
        let int = |i: usize| i32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        if buf.len() != REPORT_LEN {
            return None;
        }
        match int(0) {
            1 => Some(Report::Started(int(4))),
            2 => Some(Report::Failed(Failure { stage: Stage::from_i32(int(4))?, errno: int(8) })),
            _ => None,
        }
    }

    /// Writes the report on `fd`; async-signal-safe.
    pub fn send(self, fd: libc::c_int) {
        let buf = self.encode();
        // SAFETY: writes a stack buffer.
        unsafe {
            libc::write(fd, buf.as_ptr().cast(), buf.len());
        }
    }
}

/// Reads reports until every writer has closed the pipe.
pub fn read_reports(mut reader: impl std::io::Read) -> std::io::Result<Vec<Report>> {
    let mut bytes = Vec::new();
    loop {
        match reader.read_to_end(&mut bytes) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(bytes.chunks(REPORT_LEN).filter_map(Report::decode).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let reports = [
            Report::Started(4242),
            Report::Failed(Failure { stage: Stage::Exec, errno: libc::ENOENT }),
            Report::Failed(Failure { stage: Stage::Setns, errno: libc::EPERM }),
        ];
        let bytes: Vec<u8> = reports.iter().flat_map(|r| r.encode()).collect();
        assert_eq!(read_reports(&bytes[..]).unwrap(), reports);
        assert!(read_reports(&[][..]).unwrap().is_empty());
    }

    #[test]
    fn failures_explain_themselves() {
        let prog = Program::new(&["nosuchcmd".into(), "-x".into()]).unwrap();
        let comp = Compartment::new("/run/hns/netns/abc", "").unwrap();
        let f = Failure { stage: Stage::Exec, errno: libc::ENOENT };
        assert_eq!(f.exit_code(), 127);
        assert_eq!(f.message(Some(&comp), &prog), "nosuchcmd: command not found");
        let f = Failure { stage: Stage::Exec, errno: libc::EACCES };
        assert_eq!(f.exit_code(), 126);
        let f = Failure { stage: Stage::Setns, errno: libc::EPERM };
        assert_eq!(f.exit_code(), 125);
        let m = f.message(Some(&comp), &prog);
        assert!(m.contains("/run/hns/netns/abc") && m.contains("root"), "{m}");
    }

    #[test]
    fn program_and_compartment_checks() {
        assert!(Program::new(&[]).is_err());
        assert!(Program::new(&["a\0b".into()]).is_err());
        let p = Program::new(&["echo".into(), "hi".into()]).unwrap();
        assert_eq!(p.ptrs.len(), 3);
        assert!(p.ptrs[2].is_null());
        assert!(Compartment::new("", "").is_err());
        // A resolv.conf that does not exist is not bound.
        let c = Compartment::new("/x", "/nonexistent/resolv.conf").unwrap();
        assert!(c.resolv_conf().is_none());
    }

    #[test]
    fn exec_failure_in_a_child_is_reported() {
        // Host mode (no compartment) needs no privileges: exec a missing program in a child
        // and read its report.
        let prog = Program::new(&["/nonexistent/hnsctl-test-program".into()]).unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        use std::os::fd::AsRawFd;
        let wfd = w.as_raw_fd();
        // SAFETY: the child only calls enter_and_exec, write and _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => unsafe {
                let f = enter_and_exec(None, &prog);
                Report::Failed(f).send(wfd);
                libc::_exit(f.exit_code());
            },
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let reports = read_reports(std::fs::File::from(r)).unwrap();
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(reports, vec![Report::Failed(Failure { stage: Stage::Exec, errno: libc::ENOENT })]);
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 127));
            }
        }
    }
}
