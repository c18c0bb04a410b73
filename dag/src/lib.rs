//! The block format of package chain's store. Pure code: no file or network access.
//!
//! A store path's contents form a DAG of immutable blocks, each named by a [`Cid`]
//! (CIDv1, BLAKE3 multihash):
//!
//! * file contents are cut into chunks ([`chunker`]); each chunk is a **raw** block;
//! * a regular file that is one chunk and not executable *is* its raw block;
//!   any other file is a UnixFS **File** node (dag-pb) linking its chunks, with the
//!   executable bit in the UnixFS `mode` field (`0o755`); files of more than
//!   [`layout::MAX_LINKS_PER_NODE`] chunks get a balanced tree of File nodes;
//! * a directory is a UnixFS **Directory** node whose links are its entries, sorted by name
//!   bytewise (the order of NAR entries), each link's name the entry name;
//! * a symlink is a UnixFS **Symlink** node holding the target.
//!
//! These are the structures IPFS implementations read (`/ipfs/bitswap` peers can fetch and
//! understand them), with one choice of ours: BLAKE3 as the hash. Encoding is strict and
//! canonical ([`pb`], [`unixfs`]), so one tree has exactly one DAG and one root CID.

pub mod builder;
pub mod chunker;
pub mod cid;
pub mod layout;
pub mod pb;
pub mod unixfs;
pub mod walk;

pub use crate::cid::{Cid, CidError, Codec};
pub use crate::unixfs::{DirEntry, FileLink, Node, NodeError};
