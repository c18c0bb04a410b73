//! Export: a DAG back into the NAR it was made from, byte for byte.
//!
//! The structure (directory, file and symlink nodes) is walked on one thread with
//! [`DagWalker::deferring_chunks`]; the raw chunks it names are read and checked against their
//! CIDs (and their stated length) by [`FETCHERS`] threads, ahead of the caller's thread, which
//! writes the NAR in order with [`NarWriter`]. At most [`CHUNKS_AHEAD`] chunks (1 MiB each at
//! most) are in flight, so memory stays bounded. Reading ahead in parallel is what makes export
//! keep up with `nix-store --dump` reading plain files (measured: 1.27x its time when chunks
//! were read one after another on the writing thread).
//!
//! A missing or corrupt block ends the export with an error naming the block.

use std::collections::BTreeMap;
use std::io::Write;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use pkgchain_blockstore::{BlockError, BlockStore};
use pkgchain_dag::Cid;
use pkgchain_dag::walk::{DagWalker, WalkError, WalkEvent};
use pkgchain_store_model::nar::{NarError, NarEvent, NarWriter};
use thiserror::Error;

/// Deepest DAG exported: directory nesting plus file tree height.
pub const MAX_DAG_DEPTH: usize = 2048;
/// Threads reading chunks ahead of the writer.
pub const FETCHERS: usize = 2;
/// Chunks read ahead of the writer at most.
pub const CHUNKS_AHEAD: usize = 32;

/// Why an export failed.
#[derive(Debug, Error)]
pub enum ExportError {
    /// A block is missing, corrupt or malformed.
    #[error("{0}")]
    Dag(#[from] WalkError<BlockError>),
    /// Writing the NAR failed (or the DAG described something a NAR cannot hold).
    #[error(transparent)]
    Nar(#[from] NarError),
    /// The threads reading chunks ended before every chunk was delivered.
    #[error("the threads reading blocks stopped early")]
    FetchersStopped,
    /// A chunk does not have the length its file node states.
    #[error("block {cid} holds {actual} bytes, its file node says {expected}")]
    ChunkLength {
        /// The chunk.
        cid: Cid,
        /// Stated length.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
}

/// One step for the writer, in NAR order.
enum Item {
    File {
        name: Option<Vec<u8>>,
        executable: bool,
        size: u64,
    },
    /// Content already at hand (inline data, or a root file read by the walker).
    Data(Vec<u8>),
    /// Content fetched by the fetchers: the `seq`th chunk.
    Chunk(u64),
    FileEnd,
    Symlink {
        name: Option<Vec<u8>>,
        target: Vec<u8>,
    },
    DirectoryStart {
        name: Option<Vec<u8>>,
    },
    DirectoryEnd,
    Failed(ExportError),
}

/// Writes the NAR of the DAG rooted at `root` to `out`; returns the NAR's length.
pub fn export_nar(blocks: &BlockStore, root: &Cid, out: impl Write) -> Result<u64, ExportError> {
    let (item_tx, item_rx) = bounded::<Item>(1024);
    let (job_tx, job_rx) = bounded::<(u64, Cid, u64)>(CHUNKS_AHEAD);
    let (result_tx, result_rx) = unbounded::<(u64, Result<Vec<u8>, ExportError>)>();
    // One token per chunk in flight: taken by the walker, returned when the chunk is written.
    let (permit_tx, permit_rx) = bounded::<()>(CHUNKS_AHEAD);
    std::thread::scope(|scope| {
        scope.spawn(move || plan(blocks, *root, item_tx, job_tx, permit_tx));
        for _ in 0..FETCHERS {
            let (jobs, results) = (job_rx.clone(), result_tx.clone());
            scope.spawn(move || fetch(blocks, jobs, results));
        }
        drop((job_rx, result_tx));
        write(out, item_rx, result_rx, permit_rx)
    })
}

/// The walking thread.
fn plan(
    blocks: &BlockStore,
    root: Cid,
    items: Sender<Item>,
    jobs: Sender<(u64, Cid, u64)>,
    permits: Sender<()>,
) {
    let mut walker = DagWalker::deferring_chunks(blocks, root, MAX_DAG_DEPTH);
    let mut seq = 0u64;
    loop {
        let item = match walker.next_event() {
            Ok(None) => return,
            Err(e) => Item::Failed(e.into()),
            Ok(Some(event)) => match event {
                WalkEvent::File {
                    name,
                    executable,
                    size,
                    ..
                } => Item::File {
                    name: name.map(<[u8]>::to_vec),
                    executable,
                    size,
                },
                WalkEvent::FileChunk(data) => Item::Data(data.to_vec()),
                WalkEvent::ChunkRef { cid, size } => {
                    // Blocks while CHUNKS_AHEAD chunks wait to be written.
                    if permits.send(()).is_err() || jobs.send((seq, cid, size)).is_err() {
                        return;
                    }
                    seq += 1;
                    Item::Chunk(seq - 1)
                }
                WalkEvent::FileEnd => Item::FileEnd,
                WalkEvent::Symlink { name, target } => Item::Symlink {
                    name: name.map(<[u8]>::to_vec),
                    target: target.to_vec(),
                },
                WalkEvent::DirectoryStart { name } => Item::DirectoryStart {
                    name: name.map(<[u8]>::to_vec),
                },
                WalkEvent::DirectoryEnd => Item::DirectoryEnd,
            },
        };
        let failed = matches!(item, Item::Failed(_));
        if items.send(item).is_err() || failed {
            return;
        }
    }
}

/// A fetching thread: reads, verifies and length-checks chunks.
fn fetch(
    blocks: &BlockStore,
    jobs: Receiver<(u64, Cid, u64)>,
    results: Sender<(u64, Result<Vec<u8>, ExportError>)>,
) {
    for (seq, cid, expected) in jobs {
        let result = blocks
            .read(&cid)
            .map_err(|e| ExportError::Dag(WalkError::Get(e)))
            .and_then(|data| {
                if data.len() as u64 == expected {
                    Ok(data)
                } else {
                    Err(ExportError::ChunkLength {
                        cid,
                        expected,
                        actual: data.len() as u64,
                    })
                }
            });
        if results.send((seq, result)).is_err() {
            return;
        }
    }
}

/// The caller's thread: writes the NAR in order.
fn write(
    out: impl Write,
    items: Receiver<Item>,
    results: Receiver<(u64, Result<Vec<u8>, ExportError>)>,
    permits: Receiver<()>,
) -> Result<u64, ExportError> {
    let mut writer = NarWriter::new(out);
    let mut arrived: BTreeMap<u64, Result<Vec<u8>, ExportError>> = BTreeMap::new();
    for item in items {
        let event_data;
        let event = match item {
            Item::File {
                ref name,
                executable,
                size,
            } => NarEvent::File {
                name: name.as_deref(),
                executable,
                size,
            },
            Item::Data(data) => {
                event_data = data;
                NarEvent::FileChunk(&event_data)
            }
            Item::Chunk(seq) => {
                let data = loop {
                    if let Some(r) = arrived.remove(&seq) {
                        break r?;
                    }
                    let (s, r) = results.recv().map_err(|_| ExportError::FetchersStopped)?;
                    arrived.insert(s, r);
                };
                writer.write_event(&NarEvent::FileChunk(&data))?;
                // The chunk is written: let the walker schedule another.
                let _ = permits.recv();
                continue;
            }
            Item::FileEnd => NarEvent::FileEnd,
            Item::Symlink {
                ref name,
                ref target,
            } => NarEvent::Symlink {
                name: name.as_deref(),
                target,
            },
            Item::DirectoryStart { ref name } => NarEvent::DirectoryStart {
                name: name.as_deref(),
            },
            Item::DirectoryEnd => NarEvent::DirectoryEnd,
            Item::Failed(e) => return Err(e),
        };
        writer.write_event(&event)?;
    }
    let written = writer.bytes_written();
    writer.finish()?;
    Ok(written)
}
