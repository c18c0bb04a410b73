//! Package chain's daemon side: where a Nix installation lives (the same variables nix-daemon
//! honours) and, from issue 3, the worker-protocol server.
//!
//! The `pkgchain` binary (`src/bin/pkgchain.rs`) is the command-line tool over the store.

pub mod locations;
