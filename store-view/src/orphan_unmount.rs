//! Detaching the FUSE views when the process that serves them dies, even by `SIGKILL`.
//!
//! `fusermount3`'s `auto_unmount` is woken when its socket to the server closes and then
//! checks that the mount is dead (opening it fails with `ENOTCONN`). A killed process closes
//! its descriptors one by one, so the socket can close before the last `/dev/fuse`
//! descriptor: the check then finds a live mount, and `fusermount3` leaves it mounted for
//! good (CI saw `/nix/store` stale after a `SIGKILL`, about one run in twenty under load).
//!
//! This watcher is a small process (the server's own program, started with [`WATCHER_ARG`]
//! first) whose standard input is a pidfd of the server. A pidfd becomes readable only once
//! every thread of the process has exited, which is after all its descriptors are closed and
//! so after the kernel has aborted the FUSE connection. The watcher then detaches each view
//! that is still the server's: one that answers `ENOTCONN`, or whose device number is the one
//! recorded at mount. It needs the right to unmount, so it is used when the server runs as
//! root; an ordinary user keeps `fusermount3`'s `auto_unmount`.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

/// The first argument that makes a program run as the unmount watcher.
pub const WATCHER_ARG: &str = "__pkgchain-fuse-unmount-watcher";

/// A view to detach once its server is gone: the mount point and the device number its root
/// had while the server ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedMount {
    /// The mount point.
    pub path: PathBuf,
    /// `st_dev` of the mounted root.
    pub device: u64,
}

/// Starts the watcher for `mounts`, as a child of this process in its own process group (a
/// terminal's Ctrl-C does not reach it). It exits once this process has exited.
pub fn spawn(mounts: &[WatchedMount]) -> std::io::Result<Child> {
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )?;
    let mut command = Command::new("/proc/self/exe");
    command.arg(WATCHER_ARG);
    for m in mounts {
        command.arg(m.device.to_string()).arg(&m.path);
    }
    command
        .stdin(Stdio::from(me))
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
}

/// Runs the watcher if the program was started as one; `None` otherwise. A program that
/// mounts the views calls this first thing in `main`.
pub fn run_if_requested() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != WATCHER_ARG {
        return None;
    }
    Some(match parse_args(args).and_then(|mounts| watch(&mounts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pkgchain FUSE unmount watcher: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Parses `<device> <mount point>` pairs.
fn parse_args(args: impl Iterator<Item = OsString>) -> Result<Vec<WatchedMount>, String> {
    let args: Vec<OsString> = args.collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err("expected pairs of <device> <mount point>".into());
    }
    args.chunks(2)
        .map(|pair| {
            let device = pair[0]
                .to_str()
                .and_then(|d| d.parse::<u64>().ok())
                .ok_or_else(|| format!("device number {:?} is not a number", pair[0]))?;
            Ok(WatchedMount {
                path: PathBuf::from(&pair[1]),
                device,
            })
        })
        .collect()
}

/// Waits until the process whose pidfd is standard input has exited, then detaches each view
/// still left mounted.
fn watch(mounts: &[WatchedMount]) -> Result<(), String> {
    // Signals meant for the server's group or session (SIGTERM, SIGHUP, SIGINT) must not end
    // the watcher before the server is gone.
    nix::sys::signal::SigSet::all()
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let stdin = std::io::stdin();
    let pidfd = stdin.as_fd();
    loop {
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(format!("waiting for the server to exit: {e}")),
        }
    }
    let mut failures = Vec::new();
    for m in mounts {
        if still_the_servers(&m.path, m.device)
            && let Err(e) = rustix::mount::unmount(&m.path, rustix::mount::UnmountFlags::DETACH)
        {
            failures.push(format!("detaching '{}': {e}", m.path.display()));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Whether `path` is still the view the (now exited) server mounted: a FUSE mount whose
/// connection is gone answers `ENOTCONN`; a view whose connection somehow lives on still has
/// the recorded device. Anything else (the view was unmounted cleanly, or something else was
/// mounted there since) is left alone.
fn still_the_servers(path: &Path, device: u64) -> bool {
    match rustix::fs::stat(path) {
        Err(Errno::NOTCONN) => true,
        Ok(st) => st.st_dev == device,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> impl Iterator<Item = OsString> {
        args.iter()
            .map(OsString::from)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn arguments_are_device_and_path_pairs() {
        let mounts = parse_args(os(&["42", "/nix/store", "7", "/ipfs/store"])).expect("parses");
        assert_eq!(
            mounts,
            vec![
                WatchedMount {
                    path: "/nix/store".into(),
                    device: 42
                },
                WatchedMount {
                    path: "/ipfs/store".into(),
                    device: 7
                }
            ]
        );
    }

    #[test]
    fn malformed_arguments_are_refused() {
        assert!(parse_args(os(&[])).is_err());
        assert!(parse_args(os(&["42"])).is_err());
        let err = parse_args(os(&["x", "/nix/store"])).expect_err("not a number");
        assert!(err.contains("\"x\""), "{err}");
    }

    #[test]
    fn a_plain_directory_is_not_taken_for_the_view() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = rustix::fs::stat(dir.path()).expect("stat").st_dev;
        // Same device: counted as the view (the watcher would detach it).
        assert!(still_the_servers(dir.path(), dev));
        // Another device, or a path that is gone: left alone.
        assert!(!still_the_servers(dir.path(), dev.wrapping_add(1)));
        assert!(!still_the_servers(&dir.path().join("missing"), dev));
    }
}
