//! Package chain's daemon side: where a Nix installation lives (the same variables and
//! `nix.conf` files nix-daemon honours), who may connect (`SO_PEERCRED`, `trusted-users`,
//! `allowed-users`), the daemon socket, and the worker-protocol server.
//!
//! Binaries: `pkgchain-daemon` (`src/bin/pkgchain-daemon.rs`), the daemon that replaces
//! `nix-daemon`; `pkgchain` (`src/bin/pkgchain.rs`), the command-line tool over the store.

pub mod auth;
pub mod build;
pub mod cache_server;
mod channel_writer;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc_socket;
pub mod listener;
pub mod locations;
pub mod memory;
pub mod nix_conf;
pub mod process;
pub mod server;
