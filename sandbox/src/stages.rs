//! The two helper stages that put a builder into its sandbox. The daemon is multi-threaded
//! and may not `unshare` a user namespace, so it starts a helper program (itself, re-executed
//! with [`STAGE1_ARG`]):
//!
//! 1. Stage 1 creates the user namespace and waits while the daemon, outside, writes its id
//!    maps (only a process outside may map ids other than its own). It then becomes root of
//!    that namespace, creates the mount, pid, ipc, uts (and unless the build is fixed-output,
//!    network) namespaces, and forks stage 2, which is the new pid namespace's init. (Stage 1
//!    is single-threaded, so a plain fork is safe, and it costs less than executing the
//!    daemon's large binary a second time.)
//! 2. Stage 2 mounts the root (binds, `/proc`, devpts, shm), brings loopback up, pivots into
//!    the root, drops to the builder's ids, raises the second walls (Landlock and seccomp) and
//!    executes the builder, which stays pid 1: when it exits, the kernel kills every process
//!    left in its namespace.
//!
//! Stage 1 reports to the daemon on its stdout, a line per event (see [`Event`]); the daemon
//! writes the spec, then `G` (maps written) and, to stop the build, `K` or end of file.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use nix::sched::CloneFlags;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::spec::{IdMapping, MAX_SPEC_BYTES, SandboxSpec};

/// The first argument that makes a program run stage 1 (which forks stage 2).
pub const STAGE1_ARG: &str = "__pkgchain-sandbox-stage1";

/// Runs a stage if the program was started as one; `None` otherwise. A program that hosts
/// the sandbox calls this first thing in `main`, before it starts any thread.
pub fn run_stage_if_requested() -> Option<ExitCode> {
    let arg = std::env::args_os().nth(1)?;
    (arg == STAGE1_ARG).then(|| report_failure("stage 1", stage1()))
}

fn report_failure(stage: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(
                io::stdout(),
                "failed {}",
                one_line(&format!("{stage}: {e}"))
            );
            ExitCode::FAILURE
        }
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// Reads a length-prefixed frame (8 bytes little-endian, then the bytes).
pub(crate) fn read_frame(r: &mut impl Read, limit: u64) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)
        .map_err(|e| format!("reading the spec length: {e}"))?;
    let len = u64::from_le_bytes(len);
    if len > limit {
        return Err(format!("spec of {len} bytes exceeds the limit of {limit}"));
    }
    let mut buf = Vec::new();
    r.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the spec: {e}"))?;
    if buf.len() as u64 != len {
        return Err("the spec ended early".into());
    }
    Ok(buf)
}

/// Writes a frame for [`read_frame`] (the daemon writes its own; this one is for the tests).
#[cfg(test)]
pub(crate) fn write_frame(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    w.write_all(&(data.len() as u64).to_le_bytes())?;
    w.write_all(data)?;
    w.flush()
}

fn stage1() -> Result<(), String> {
    let stdin = io::stdin();
    let mut control = stdin.lock();
    let mut out = io::stdout();
    let frame = read_frame(&mut control, MAX_SPEC_BYTES)?;
    let spec: SandboxSpec =
        serde_json::from_slice(&frame).map_err(|e| format!("the spec is malformed: {e}"))?;

    nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("creating the user namespace: {e}"))?;
    writeln!(out, "userns").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    drop(control);
    // Unbuffered from here: the poll loop below reads the same descriptor.
    let mut go = [0u8; 1];
    let n = rustix::io::read(io::stdin(), &mut go)
        .map_err(|e| format!("waiting for the id maps: {e}"))?;
    if n != 1 {
        return Err("the daemon closed the control channel".into());
    }
    if go[0] != b'G' {
        return Err("the daemon did not write the id maps".into());
    }
    // Root of the namespace (mapped to an unprivileged id outside), so stage 2 keeps its
    // capabilities across exec.
    if let IdMapping::Range { .. } = spec.ids {
        rustix::thread::set_thread_groups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    }
    let zero_gid = rustix::process::Gid::from_raw(0);
    let zero_uid = rustix::process::Uid::from_raw(0);
    rustix::thread::set_thread_res_gid(zero_gid, zero_gid, zero_gid)
        .map_err(|e| format!("setresgid: {e}"))?;
    rustix::thread::set_thread_res_uid(zero_uid, zero_uid, zero_uid)
        .map_err(|e| format!("setresuid: {e}"))?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if spec.private_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags).map_err(|e| format!("creating the namespaces: {e}"))?;

    // Stage 2 reports why it failed on this socket; its end closes on a successful exec
    // (close-on-exec), which is how stage 1 learns that the builder runs.
    let (mut from_stage2, stage2_report) =
        UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    out.flush().map_err(|e| e.to_string())?;
    // SAFETY: stage 1 is a freshly executed program that starts no thread, so the child of
    // this fork may do whatever the parent could (no lock can be held by a thread that is
    // not copied).
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() }.map_err(|e| format!("starting stage 2: {e}"))?;
    let child = match forked {
        nix::unistd::ForkResult::Child => {
            drop(from_stage2);
            let error = match stage2(&spec) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let _ = (&stage2_report).write_all(error.as_bytes());
            // Stage 1's stdout was flushed before the fork: nothing of its is written twice.
            std::process::exit(1);
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(stage2_report);
    let pid = rustix::process::Pid::from_raw(child.as_raw())
        .ok_or_else(|| "fork returned no pid".to_owned())?;
    // Not reaped before `waitpid` below, so the pid is this child's.
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| format!("pidfd_open: {e}"))?;
    let mut failure = Vec::new();
    let _ = (&mut from_stage2).take(64 << 10).read_to_end(&mut failure);
    if failure.is_empty() {
        writeln!(out, "started").map_err(|e| e.to_string())?;
    } else {
        writeln!(
            out,
            "failed {}",
            one_line(&String::from_utf8_lossy(&failure))
        )
        .map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;

    // `K` or the end of the control channel (the daemon is gone) kills the builder, which
    // takes its whole pid namespace with it. (No thread: a process that unshared its pid
    // namespace cannot create one.) The pidfd becomes readable when stage 2 exits.
    let stdin_fd = io::stdin();
    let mut killed = false;
    loop {
        let mut fds = [
            rustix::event::PollFd::new(&pidfd, rustix::event::PollFlags::IN),
            rustix::event::PollFd::new(&stdin_fd, rustix::event::PollFlags::IN),
        ];
        let watch = if killed { &mut fds[..1] } else { &mut fds[..] };
        match rustix::event::poll(watch, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        if !fds[0].revents().is_empty() {
            break;
        }
        if !killed && !fds[1].revents().is_empty() {
            let mut byte = [0u8; 1];
            let n = rustix::io::read(&stdin_fd, &mut byte).unwrap_or(0);
            if n == 0 || byte[0] == b'K' {
                let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                killed = true;
            }
        }
    }
    let status = loop {
        match nix::sys::wait::waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(|e| format!("waiting for the builder: {e}"))?,
        }
    };
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map_err(|e| format!("getrusage: {e}"))?;
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
    let (user, system) = (micros(usage.user_time()), micros(usage.system_time()));
    match status {
        nix::sys::wait::WaitStatus::Exited(_, code) => writeln!(out, "exit {code} {user} {system}"),
        nix::sys::wait::WaitStatus::Signaled(_, sig, _) => {
            writeln!(out, "signal {} {user} {system}", sig as i32)
        }
        _ => writeln!(out, "signal 0 {user} {system}"),
    }
    .and_then(|()| out.flush())
    .map_err(|e| e.to_string())
}

enum Never {}

/// Stage 2, in the child stage 1 forked: returns only if the builder could not be started.
fn stage2(spec: &SandboxSpec) -> Result<Never, String> {
    // Stage 1's stdin and stdout are its control channel with the daemon: the builder gets
    // /dev/null and the log (stage 1's stderr) instead.
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    rustix::stdio::dup2_stdin(&null).map_err(|e| format!("dup2: {e}"))?;
    rustix::stdio::dup2_stdout(io::stderr()).map_err(|e| format!("dup2: {e}"))?;
    // A session of its own: the log terminal is not its controlling terminal.
    rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
    mount_root(spec)?;
    enter_root(spec)?;
    drop_privileges(spec.ids)?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    let writable: Vec<PathBuf> = spec.writable.clone();
    crate::walls::apply(&writable).map_err(|e| format!("raising the second walls: {e}"))?;

    let builder = Path::new(OsStr::from_bytes(&spec.builder));
    let arg0 = builder.file_name().unwrap_or(builder.as_os_str());
    let mut command = Command::new(builder);
    command
        .arg0(arg0)
        .args(spec.args.iter().map(|a| OsStr::from_bytes(a)))
        .env_clear()
        .envs(
            spec.env
                .iter()
                .map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v))),
        );
    let e = command.exec();
    Err(format!(
        "executing the builder {}: {e}",
        String::from_utf8_lossy(&spec.builder)
    ))
}

fn under(root: &Path, inner: &Path) -> PathBuf {
    root.join(inner.strip_prefix("/").unwrap_or(inner))
}

fn mount_root(spec: &SandboxSpec) -> Result<(), String> {
    let root = &spec.root;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("making mounts private: {e}"))?;
    rustix::mount::mount_bind(root, root)
        .map_err(|e| format!("binding the root {}: {e}", root.display()))?;
    for bind in &spec.binds {
        let target = under(root, &bind.target);
        rustix::mount::mount_bind_recursive(&bind.source, &target).map_err(|e| {
            format!(
                "binding {} at {}: {e}",
                bind.source.display(),
                bind.target.display()
            )
        })?;
        if bind.read_only {
            // A remount must repeat the flags the source's mount locks (nosuid, nodev...).
            let kept = locked_flags(&target)?;
            rustix::mount::mount_remount(&target, MountFlags::BIND | MountFlags::RDONLY | kept, "")
                .map_err(|e| format!("making {} read-only: {e}", bind.target.display()))?;
        }
    }
    rustix::mount::mount(
        "proc",
        root.join("proc"),
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(|e| format!("mounting /proc: {e}"))?;
    rustix::mount::mount(
        "devpts",
        root.join("dev/pts"),
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| format!("mounting /dev/pts: {e}"))?;
    rustix::mount::mount(
        "none",
        root.join("dev/shm"),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=1777,size=50%"),
    )
    .map_err(|e| format!("mounting /dev/shm: {e}"))?;
    Ok(())
}

fn locked_flags(target: &Path) -> Result<MountFlags, String> {
    use rustix::fs::StatVfsMountFlags as S;
    let st =
        rustix::fs::statvfs(target).map_err(|e| format!("statvfs {}: {e}", target.display()))?;
    let mut flags = MountFlags::empty();
    for (from, to) in [
        (S::NOSUID, MountFlags::NOSUID),
        (S::NODEV, MountFlags::NODEV),
        (S::NOEXEC, MountFlags::NOEXEC),
        (S::NOATIME, MountFlags::NOATIME),
        (S::NODIRATIME, MountFlags::NODIRATIME),
        (S::RELATIME, MountFlags::RELATIME),
    ] {
        if st.f_flag.contains(from) {
            flags |= to;
        }
    }
    Ok(flags)
}

fn enter_root(spec: &SandboxSpec) -> Result<(), String> {
    rustix::system::sethostname(b"localhost").map_err(|e| format!("sethostname: {e}"))?;
    rustix::system::setdomainname(b"(none)").map_err(|e| format!("setdomainname: {e}"))?;
    if spec.private_network {
        crate::loopback::bring_up_loopback().map_err(|e| format!("loopback: {e}"))?;
    }
    rustix::process::chdir(&spec.root).map_err(|e| format!("chdir to the root: {e}"))?;
    rustix::process::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(|e| format!("detaching the old root: {e}"))?;
    rustix::process::chdir(&spec.work_dir)
        .map_err(|e| format!("chdir to {}: {e}", spec.work_dir.display()))?;
    Ok(())
}

/// Processes (and threads) the builder's uid may have at once: a fork bomb stops here. Each
/// build slot has its own uid, so builds do not share the count; a parallel `make` or a test
/// suite with many threads stays far below it.
pub const MAX_BUILDER_PROCESSES: u64 = 4096;

fn drop_privileges(ids: IdMapping) -> Result<(), String> {
    let (uid, gid) = ids.builder_ids_inside();
    if let IdMapping::Range { .. } = ids {
        rustix::thread::set_thread_groups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        // Counted per real uid; only meaningful where the builder's uid is its own (an
        // ordinary user's daemon shares its uid with the builder).
        let limit = rustix::process::Rlimit {
            current: Some(MAX_BUILDER_PROCESSES),
            maximum: Some(MAX_BUILDER_PROCESSES),
        };
        rustix::process::setrlimit(rustix::process::Resource::Nproc, limit)
            .map_err(|e| format!("setrlimit(RLIMIT_NPROC): {e}"))?;
    }
    let gid = rustix::process::Gid::from_raw(gid);
    let uid = rustix::process::Uid::from_raw(uid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    Ok(())
}

/// One line stage 1 writes to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The user namespace exists: write the id maps, then `G`.
    UserNamespace,
    /// The builder has been executed.
    Started,
    /// Set-up failed; the builder never ran.
    Failed(String),
    /// The builder exited with a code (user and system CPU microseconds of its tree).
    Exited(i32, u64, u64),
    /// The builder was killed by a signal.
    Signaled(i32, u64, u64),
}

impl Event {
    /// Parses one line.
    pub fn parse(line: &str) -> Option<Event> {
        let line = line.trim_end_matches('\n');
        if line == "userns" {
            return Some(Event::UserNamespace);
        }
        if line == "started" {
            return Some(Event::Started);
        }
        if let Some(why) = line.strip_prefix("failed ") {
            return Some(Event::Failed(why.to_owned()));
        }
        let mut words = line.split(' ');
        let kind = words.next()?;
        let n: i32 = words.next()?.parse().ok()?;
        let user: u64 = words.next()?.parse().ok()?;
        let system: u64 = words.next()?.parse().ok()?;
        match kind {
            "exit" => Some(Event::Exited(n, user, system)),
            "signal" => Some(Event::Signaled(n, user, system)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        assert_eq!(Event::parse("userns\n"), Some(Event::UserNamespace));
        assert_eq!(
            Event::parse("exit 3 10 20\n"),
            Some(Event::Exited(3, 10, 20))
        );
        assert_eq!(Event::parse("signal 9 1 2"), Some(Event::Signaled(9, 1, 2)));
        assert_eq!(
            Event::parse("failed stage 2: no"),
            Some(Event::Failed("stage 2: no".into()))
        );
        assert_eq!(Event::parse("exit x 1 2"), None);
        assert_eq!(Event::parse("bogus"), None);
    }

    #[test]
    fn frames_are_bounded() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").expect("write");
        assert_eq!(read_frame(&mut &buf[..], 10).expect("read"), b"hello");
        assert!(read_frame(&mut &buf[..], 4).is_err());
        assert!(read_frame(&mut &buf[..buf.len() - 1], 10).is_err());
    }
}
