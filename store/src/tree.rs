//! Reading inside a DAG: resolving a path below a root, listing directories, reading files.
//!
//! Used by `pkgchain store ls` and `store cat`. Symlinks inside the path are not followed
//! (they are reported as symlinks), as `nix store ls` and `nix store cat` do.

use std::io::Write;

use pkgchain_blockstore::{BlockError, BlockStore};
use pkgchain_dag::walk::{DagWalker, WalkError, WalkEvent};
use pkgchain_dag::{Cid, Codec, Node};
use thiserror::Error;

/// Why reading inside a DAG failed.
#[derive(Debug, Error)]
pub enum TreeError {
    /// A block failed.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A block is not a valid node.
    #[error("block {cid}: {reason}")]
    Node {
        /// The block.
        cid: Cid,
        /// Why.
        reason: String,
    },
    /// No such entry.
    #[error("'{0}' does not exist")]
    NotFound(String),
    /// A path component is not a directory.
    #[error("'{0}' is not a directory")]
    NotDirectory(String),
    /// Not a regular file.
    #[error("'{0}' is not a regular file")]
    NotFile(String),
    /// Reading the file failed.
    #[error("{0}")]
    Walk(#[from] WalkError<BlockError>),
    /// Writing output failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file.
    File {
        /// Size in bytes.
        size: u64,
        /// Executable bit.
        executable: bool,
    },
    /// A directory.
    Directory,
    /// A symlink.
    Symlink {
        /// Its target.
        target: Vec<u8>,
    },
}

fn decode(blocks: &BlockStore, cid: &Cid) -> Result<Node, TreeError> {
    let block = blocks.read(cid)?;
    Node::decode(&block).map_err(|e| TreeError::Node {
        cid: *cid,
        reason: e.to_string(),
    })
}

/// What the node `cid` is.
pub fn stat(blocks: &BlockStore, cid: &Cid) -> Result<Entry, TreeError> {
    if cid.codec() == Codec::Raw {
        return Ok(Entry::File {
            size: blocks.read(cid)?.len() as u64,
            executable: false,
        });
    }
    Ok(match decode(blocks, cid)? {
        Node::Directory(_) => Entry::Directory,
        Node::Symlink(target) => Entry::Symlink { target },
        Node::File {
            size, executable, ..
        } => Entry::File { size, executable },
    })
}

/// The entries of directory `cid`, sorted by name.
pub fn list(blocks: &BlockStore, cid: &Cid, shown: &str) -> Result<Vec<(Vec<u8>, Cid)>, TreeError> {
    if cid.codec() == Codec::Raw {
        return Err(TreeError::NotDirectory(shown.to_owned()));
    }
    match decode(blocks, cid)? {
        Node::Directory(entries) => Ok(entries.into_iter().map(|e| (e.name, e.cid)).collect()),
        _ => Err(TreeError::NotDirectory(shown.to_owned())),
    }
}

/// The node at `subpath` (`""` or `/a/b`) below `root`.
pub fn resolve(blocks: &BlockStore, root: &Cid, subpath: &str) -> Result<Cid, TreeError> {
    let mut cid = *root;
    let mut walked = String::new();
    for component in subpath.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let entries = list(blocks, &cid, if walked.is_empty() { "/" } else { &walked })?;
        walked.push('/');
        walked.push_str(component);
        let i = entries
            .binary_search_by(|(n, _)| n.as_slice().cmp(component.as_bytes()))
            .map_err(|_| TreeError::NotFound(walked.clone()))?;
        cid = entries[i].1;
    }
    Ok(cid)
}

/// Writes the contents of file `cid` to `out`; returns the byte count.
pub fn cat(
    blocks: &BlockStore,
    cid: &Cid,
    shown: &str,
    mut out: impl Write,
) -> Result<u64, TreeError> {
    let mut walker = DagWalker::new(blocks, *cid, crate::export::MAX_DAG_DEPTH);
    let mut written = 0u64;
    while let Some(event) = walker.next_event()? {
        match event {
            WalkEvent::FileChunk(data) => {
                out.write_all(data).map_err(TreeError::Output)?;
                written += data.len() as u64;
            }
            WalkEvent::File { .. } | WalkEvent::FileEnd => {}
            _ => return Err(TreeError::NotFile(shown.to_owned())),
        }
    }
    out.flush().map_err(TreeError::Output)?;
    Ok(written)
}
