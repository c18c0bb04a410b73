//! Runs one Nix builder isolated, the way the architecture's decision 7 describes: user,
//! mount, pid, net, ipc and uts namespaces; a fresh minimal root holding only the input
//! closure (bound read-only), the build directory and the store directory the outputs are
//! written to; `/proc`, a minimal `/dev` and Nix's synthesized `/etc`; loopback only, unless
//! the build is fixed-output; the builder unprivileged; Landlock and seccomp as second walls;
//! the whole process tree killed at the end; `timeout`, `max-silent-time` and
//! `max-build-log-size`.
//!
//! [`root::prepare`] makes the root (the privileged side, in a fresh directory), [`run::run`]
//! starts the helper stages ([`stages`]) and streams the log. Nothing here knows about
//! derivations or the store: the daemon decides what goes in.

pub mod loopback;
pub mod root;
pub mod run;
pub mod spec;
pub mod stages;
pub mod walls;

/// What can go wrong around a build (never the build's own failure, which is a
/// [`run::Ended`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Preparing the root directory failed.
    #[error("preparing the sandbox: {0}")]
    Prepare(String),
    /// Setting up the namespaces or mounts failed; the builder never ran.
    #[error("setting up the sandbox: {0}")]
    Setup(String),
    /// The helper process misbehaved or could not be started.
    #[error("sandbox helper: {0}")]
    Helper(String),
}
