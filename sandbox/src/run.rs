//! The daemon's side of one sandboxed run: starts stage 1, writes the id maps, streams the
//! builder's log, enforces `timeout`, `max-silent-time` and `max-build-log-size`, and
//! returns how the builder ended with its CPU times. Stopping a build kills the builder,
//! which is its pid namespace's init, so every process it started dies with it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing::debug;

use crate::SandboxError;
use crate::spec::{IdMapping, SandboxSpec};
use crate::stages::{Event, STAGE1_ARG};

/// Limits on one run (Nix's `timeout`, `max-silent-time`, `max-build-log-size`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Wall time.
    pub timeout: Option<Duration>,
    /// Time without output.
    pub max_silent: Option<Duration>,
    /// Bytes of log.
    pub max_log_bytes: Option<u64>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The builder exited with this code.
    Exited(i32),
    /// The builder was killed by this signal.
    Signaled(i32),
    /// Killed after `timeout`.
    TimedOut(Duration),
    /// Killed after `max-silent-time` without output.
    Silent(Duration),
    /// Killed when the log passed `max-build-log-size`.
    LogTooLong(u64),
}

/// The result of one run.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// How it ended.
    pub ended: Ended,
    /// From starting the helper to the builder's `exec`.
    pub setup: Duration,
    /// From the builder's `exec` to the end of its namespace.
    pub running: Duration,
    /// User CPU time of the builder's process tree.
    pub user_cpu: Duration,
    /// System CPU time of the builder's process tree.
    pub system_cpu: Duration,
}

/// Runs `spec` with `helper`, a program that calls
/// [`crate::stages::run_stage_if_requested`] first thing (the daemon passes `/proc/self/exe`).
/// `on_log` receives the builder's output (stdout and stderr) as it comes.
pub async fn run(
    helper: &Path,
    spec: &SandboxSpec,
    limits: &Limits,
    on_log: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<Report, SandboxError> {
    let started = Instant::now();
    let frame = serde_json::to_vec(spec).map_err(|e| SandboxError::Helper(e.to_string()))?;
    // The builder writes to a pseudo-terminal, as under nix-daemon: tools that colour their
    // output when it is a terminal (automake's test driver...) log the same bytes.
    let (mut log, terminal) = log_terminal()?;
    let mut child = tokio::process::Command::new(helper)
        .arg(STAGE1_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(terminal))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SandboxError::Helper(format!("starting {}: {e}", helper.display())))?;
    let (Some(mut control), Some(events)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(SandboxError::Helper(
            "the helper's pipes are missing".into(),
        ));
    };
    let pid = child
        .id()
        .ok_or_else(|| SandboxError::Helper("the helper exited at once".into()))?;
    let mut events = BufReader::new(events);
    let io = |e: std::io::Error| SandboxError::Helper(format!("talking to the helper: {e}"));

    control
        .write_all(&(frame.len() as u64).to_le_bytes())
        .await
        .map_err(io)?;
    control.write_all(&frame).await.map_err(io)?;
    control.flush().await.map_err(io)?;
    match next_event(&mut events).await? {
        Event::UserNamespace => {}
        Event::Failed(why) => return Err(SandboxError::Setup(why)),
        other => return Err(SandboxError::Helper(format!("unexpected {other:?}"))),
    }
    write_id_maps(pid, spec.ids)?;
    control.write_all(b"G").await.map_err(io)?;
    control.flush().await.map_err(io)?;
    match next_event(&mut events).await? {
        Event::Started => {}
        Event::Failed(why) => {
            let mut output = Vec::new();
            let mut chunk = vec![0u8; 4096];
            while output.len() < 64 << 10 {
                match log.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => output.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = child.wait().await;
            let output = String::from_utf8_lossy(&output);
            return Err(SandboxError::Setup(if output.trim().is_empty() {
                why
            } else {
                format!("{why} ({})", output.trim())
            }));
        }
        other => return Err(SandboxError::Helper(format!("unexpected {other:?}"))),
    }
    let exec_at = Instant::now();
    let setup = exec_at - started;
    debug!(?setup, "builder started");

    let deadline = limits.timeout.map(|t| exec_at + t);
    let mut last_output = Instant::now();
    let mut log_bytes = 0u64;
    let mut killed: Option<Ended> = None;
    let mut log_open = true;
    let mut buf = vec![0u8; 64 << 10];
    let mut line = String::new();
    let mut last_output_bytes: Vec<u8> = Vec::new();
    let final_event = loop {
        let now = Instant::now();
        let mut wake = deadline;
        if let Some(silent) = limits.max_silent {
            let at = last_output + silent;
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        let sleep = async {
            match wake {
                Some(at) if killed.is_none() => {
                    tokio::time::sleep(at.saturating_duration_since(now)).await
                }
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            read = log.read(&mut buf), if log_open => {
                match read {
                    Ok(0) | Err(_) => log_open = false,
                    Ok(n) => {
                        last_output = Instant::now();
                        let room = limits.max_log_bytes.map_or(n as u64, |max| max.saturating_sub(log_bytes));
                        let shown = (n as u64).min(room) as usize;
                        if shown > 0 && killed.is_none() {
                            on_log(&buf[..shown]);
                        }
                        last_output_bytes.extend_from_slice(&buf[..n]);
                        let excess = last_output_bytes.len().saturating_sub(4096);
                        last_output_bytes.drain(..excess);
                        log_bytes += n as u64;
                        if let Some(max) = limits.max_log_bytes
                            && log_bytes > max && killed.is_none() {
                            killed = Some(Ended::LogTooLong(max));
                            let _ = control.write_all(b"K").await;
                        }
                    }
                }
            }
            read = events.read_line(&mut line) => {
                let event = match read {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Event::parse(&line),
                };
                line.clear();
                match event {
                    Some(e @ (Event::Exited(..) | Event::Signaled(..))) => break e,
                    Some(Event::Failed(why)) => return Err(SandboxError::Helper(why)),
                    Some(_) => {}
                    None => {
                        let status = child.wait().await.map(|s| s.to_string()).unwrap_or_default();
                        return Err(SandboxError::Helper(format!(
                            "the helper ended without a status ({status}; last output: {:?})",
                            String::from_utf8_lossy(&last_output_bytes)
                        )));
                    }
                }
            }
            () = sleep => {
                let now = Instant::now();
                killed = Some(match (deadline, limits.timeout) {
                    (Some(d), Some(t)) if now >= d => Ended::TimedOut(t),
                    _ => Ended::Silent(limits.max_silent.unwrap_or_default()),
                });
                let _ = control.write_all(b"K").await;
                let _ = control.flush().await;
            }
        }
    };
    let running = exec_at.elapsed();
    // Whatever the builder wrote last.
    while log_open {
        match log.read(&mut buf).await {
            Ok(0) | Err(_) => log_open = false,
            Ok(n) if killed.is_none() => {
                let room = limits
                    .max_log_bytes
                    .map_or(n as u64, |max| max.saturating_sub(log_bytes));
                let shown = (n as u64).min(room) as usize;
                if shown > 0 {
                    on_log(&buf[..shown]);
                }
                log_bytes += n as u64;
            }
            Ok(_) => {}
        }
    }
    drop(control);
    let _ = child.wait().await;
    let (ended, user, system) = match final_event {
        Event::Exited(code, u, s) => (Ended::Exited(code), u, s),
        Event::Signaled(sig, u, s) => (Ended::Signaled(sig), u, s),
        _ => (Ended::Signaled(0), 0, 0),
    };
    Ok(Report {
        ended: killed.unwrap_or(ended),
        setup,
        running,
        user_cpu: Duration::from_micros(user),
        system_cpu: Duration::from_micros(system),
    })
}

async fn next_event(
    events: &mut BufReader<tokio::process::ChildStdout>,
) -> Result<Event, SandboxError> {
    let mut line = String::new();
    let n = (&mut *events)
        .take(64 << 10)
        .read_line(&mut line)
        .await
        .map_err(|e| SandboxError::Helper(format!("reading the helper's events: {e}")))?;
    if n == 0 {
        return Err(SandboxError::Helper(
            "the helper exited during set-up".into(),
        ));
    }
    Event::parse(&line)
        .ok_or_else(|| SandboxError::Helper(format!("unexpected line from the helper: {line:?}")))
}

/// A pseudo-terminal in raw mode (no echo, no line discipline, `\n` kept as is): the side the
/// daemon reads, and the side the builder's stdout and stderr become. When every copy of the
/// builder's side is closed, reading fails with `EIO`: that is the end of the log.
fn log_terminal() -> Result<(LogReader, std::os::fd::OwnedFd), SandboxError> {
    use rustix::pty::OpenptFlags;
    let err = |what: &str, e: rustix::io::Errno| SandboxError::Helper(format!("{what}: {e}"));
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .map_err(|e| err("posix_openpt", e))?;
    rustix::pty::grantpt(&master).map_err(|e| err("grantpt", e))?;
    rustix::pty::unlockpt(&master).map_err(|e| err("unlockpt", e))?;
    let name = rustix::pty::ptsname(&master, Vec::new()).map_err(|e| err("ptsname", e))?;
    let terminal = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| err("opening the terminal", e))?;
    let mut termios = rustix::termios::tcgetattr(&terminal).map_err(|e| err("tcgetattr", e))?;
    termios.make_raw();
    rustix::termios::tcsetattr(&terminal, rustix::termios::OptionalActions::Now, &termios)
        .map_err(|e| err("tcsetattr", e))?;
    rustix::io::ioctl_fionbio(&master, true).map_err(|e| err("non-blocking", e))?;
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(master)
        .map_err(|e| SandboxError::Helper(format!("registering the terminal: {e}")))?;
    Ok((LogReader(reader), terminal))
}

/// The daemon's side of the log terminal: `EIO` (the builder's side is closed) reads as the end.
struct LogReader(tokio::net::unix::pipe::Receiver);

impl LogReader {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf).await {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            other => other,
        }
    }
}

fn write_id_maps(pid: u32, ids: IdMapping) -> Result<(), SandboxError> {
    let (uid_map, gid_map) = ids.maps();
    let proc = Path::new("/proc").join(pid.to_string());
    let write = |name: &str, data: &str| {
        std::fs::write(proc.join(name), data).map_err(|e| {
            SandboxError::Setup(format!(
                "writing {name} ({}) of the builder's user namespace: {e}",
                data.trim()
            ))
        })
    };
    if let IdMapping::Own { .. } = ids {
        write("setgroups", "deny")?;
    }
    write("uid_map", &uid_map)?;
    write("gid_map", &gid_map)
}
