//! Export: a DAG back into the NAR it was made from, byte for byte.
//!
//! The walk ([`pkgchain_dag::walk`]) reads every block through [`BlockStore::read`], which
//! checks it against its CID, and checks the structure as it goes; the events are written by
//! [`NarWriter`]. A missing or corrupt block ends the export with an error naming the block.

use std::io::Write;

use pkgchain_blockstore::{BlockError, BlockStore};
use pkgchain_dag::Cid;
use pkgchain_dag::walk::{DagWalker, WalkError, WalkEvent};
use pkgchain_store_model::nar::{NarError, NarEvent, NarWriter};
use thiserror::Error;

/// Deepest DAG exported: directory nesting plus file tree height.
pub const MAX_DAG_DEPTH: usize = 2048;

/// Why an export failed.
#[derive(Debug, Error)]
pub enum ExportError {
    /// A block is missing, corrupt or malformed.
    #[error("{0}")]
    Dag(#[from] WalkError<BlockError>),
    /// Writing the NAR failed (or the DAG described something a NAR cannot hold).
    #[error(transparent)]
    Nar(#[from] NarError),
}

/// Writes the NAR of the DAG rooted at `root` to `out`; returns the NAR's length.
pub fn export_nar(blocks: &BlockStore, root: &Cid, out: impl Write) -> Result<u64, ExportError> {
    let mut walker = DagWalker::new(blocks, *root, MAX_DAG_DEPTH);
    let mut writer = NarWriter::new(out);
    while let Some(event) = walker.next_event()? {
        let event = match event {
            WalkEvent::File {
                name,
                executable,
                size,
                ..
            } => NarEvent::File {
                name,
                executable,
                size,
            },
            WalkEvent::FileChunk(data) => NarEvent::FileChunk(data),
            WalkEvent::FileEnd => NarEvent::FileEnd,
            WalkEvent::Symlink { name, target } => NarEvent::Symlink { name, target },
            WalkEvent::DirectoryStart { name } => NarEvent::DirectoryStart { name },
            WalkEvent::DirectoryEnd => NarEvent::DirectoryEnd,
        };
        writer.write_event(&event)?;
    }
    let written = writer.bytes_written();
    writer.finish()?;
    Ok(written)
}
