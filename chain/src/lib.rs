//! The authority chain: derivations published, built by VRF-chosen substituters, commit-reveal of output hashes. Comes with the chain layer.
//!
//! Not written yet: this crate exists so the workspace has the layout of the architecture.
