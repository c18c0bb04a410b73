//! The Nix worker protocol, client and server side: wire primitives, the handshake for protocol
//! versions 1.21 to 1.38, every operation's request and response, framed streams and the
//! stderr/activity channel.
//!
//! Not written yet: this crate is delivered with issue 3. It exists now so the workspace has
//! the layout of the architecture.
