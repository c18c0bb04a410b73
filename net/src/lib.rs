//! The libp2p node: identity, DHT, mDNS and a Bitswap-compatible block exchange. Comes with the network layer.
//!
//! Not written yet: this crate exists so the workspace has the layout of the architecture.
