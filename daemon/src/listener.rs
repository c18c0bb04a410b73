//! The daemon's socket: inherited from systemd (`LISTEN_FDS`) or bound at the path Nix
//! clients connect to.
//!
//! The path is `$NIX_DAEMON_SOCKET_PATH` or `<state dir>/daemon-socket/socket`. A socket file
//! left by an earlier run is replaced; the socket is made mode 0666 (access is decided per peer
//! with `trusted-users`/`allowed-users`, as nix-daemon does).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The socket could not be set up.
#[derive(Debug, Error)]
pub enum ListenerError {
    /// Binding or preparing the socket path failed.
    #[error("cannot listen on '{path}': {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `LISTEN_FDS` is set but unusable.
    #[error("socket activation: {0}")]
    Activation(String),
}

/// Where clients find the daemon.
pub fn socket_path(state_dir: &Path, var: impl Fn(&str) -> Option<String>) -> PathBuf {
    var("NIX_DAEMON_SOCKET_PATH")
        .filter(|p| !p.is_empty())
        .map_or_else(|| state_dir.join("daemon-socket/socket"), PathBuf::from)
}

/// The listening socket systemd handed over, if this process was socket-activated
/// (`LISTEN_PID` names this process and `LISTEN_FDS` is 1, as for `nix-daemon.socket`).
pub fn from_activation() -> Result<Option<UnixListener>, ListenerError> {
    let mut fds = listenfd::ListenFd::from_env();
    match fds.len() {
        0 => Ok(None),
        1 => fds
            .take_unix_listener(0)
            .map_err(|e| ListenerError::Activation(format!("descriptor 3: {e}"))),
        n => Err(ListenerError::Activation(format!(
            "expected exactly one socket in LISTEN_FDS, got {n}"
        ))),
    }
}

/// Binds the socket at `path` (creating its directory, replacing a stale socket file).
pub fn bind(path: &Path) -> Result<UnixListener, ListenerError> {
    let err = |source| ListenerError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}
