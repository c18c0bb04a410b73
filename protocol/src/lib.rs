//! The Nix worker protocol (what `nix-daemon` speaks on its socket), as pure code: wire
//! primitives, the handshake, operation numbers, the stderr channel and the serializers of the
//! protocol's value types. No sockets: decoding works over any `std::io::Read` or
//! `tokio::io::AsyncRead`, encoding appends to a buffer.
//!
//! Versions 1.21 (Nix 2.3) to 1.38 (Nix 2.24 to 2.35, with 2.35's features) are in scope; every
//! version-dependent encoding takes the negotiated version and features from a
//! [`WireContext`]. The protocol reference is `shared/docs/worker-protocol.md`; the encodings
//! are tested byte for byte against Nix 2.35.2's golden files
//! (`testdata/nix-2.35.2/libstore-tests/data/{worker,common}-protocol/`).
//!
//! # Modules
//!
//! * [`wire`]: integers, booleans, padded strings, lists, sets, maps; [`wire::Limits`];
//!   [`wire::WireError`]; the synchronous ([`wire::SyncReader`]) and tokio
//!   ([`wire::AsyncReader`]) readers that share every decoder.
//! * [`framed`]: framed streams (chunked uploads), bounded readers and writers.
//! * [`version`]: [`ProtocolVersion`] and feature names.
//! * [`handshake`]: magic numbers, hellos, version negotiation, the 1.38 feature exchange and
//!   the post-handshake [`handshake::ClientHandshakeInfo`].
//! * [`opcode`]: [`opcode::Opcode`], every worker operation number.
//! * [`stderr`], [`activity`]: the log channel (`STDERR_*` messages, activities, results,
//!   both error forms).
//! * [`types`]: store paths, content addresses, path info, derived paths, realisations (binary
//!   and legacy JSON forms), build modes and results, the trusted flag.
//! * [`request`]: [`request::Request`], the arguments of every operation a client from Nix 2.3
//!   to 2.35 sends, per version, and which data follows them ([`request::Payload`]).
//! * [`reply`]: [`reply::Reply`], what the daemon answers after `STDERR_LAST`, per operation
//!   and version.
//! * [`nar_copy`]: copying one raw NAR off the wire, stopping at its last byte (old
//!   `AddToStore`, `AddToStoreNar` below 1.21).
//! * [`tunnel`]: the `STDERR_READ` exchange (`AddToStoreNar` at 1.21 and 1.22).
//!
//! # Example
//!
//! ```
//! use pkgchain_protocol::{ProtocolVersion, WireContext};
//! use pkgchain_protocol::types::BuildMode;
//! use pkgchain_protocol::wire::{SyncReader, encode_to_vec};
//!
//! let cx = WireContext::new(ProtocolVersion::LATEST);
//! let bytes = encode_to_vec(&vec![BuildMode::Repair], &cx).unwrap();
//! assert_eq!(bytes.len(), 16);
//! let back: Vec<BuildMode> = SyncReader::new(&bytes[..]).decode(&cx, "modes").unwrap();
//! assert_eq!(back, [BuildMode::Repair]);
//! ```
//!
//! # Not here
//!
//! Sockets and the daemon's request loop (the `daemon` crate drives these pure steps), and the
//! `serve` protocol (out of scope).
#![deny(missing_docs)]

pub mod activity;
pub mod context;
#[cfg(test)]
mod fixtures;
pub mod framed;
pub mod handshake;
pub mod nar_copy;
pub mod opcode;
pub mod reply;
pub mod request;
pub mod stderr;
pub mod tunnel;
pub mod types;
pub mod version;
pub mod wire;

pub use context::WireContext;
pub use version::{FeatureSet, ProtocolVersion};
