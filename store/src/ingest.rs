//! Ingest: a tree (as NAR events) becomes blocks in one pass over its bytes.
//!
//! Three threads share the work. The calling thread *produces*: it reads the source (a NAR
//! stream, or a directory tree through [`crate::fs_source`]), serialises every event into the
//! NAR hash (SHA-256) and size, and feeds the reference scanner. A second thread *builds*: it
//! chunks file contents and hashes chunks and nodes with BLAKE3. A third *writes* new blocks
//! through a [`pkgchain_blockstore::WriteBatch`] (file creation is the costliest part of ingest
//! on ext4, measured at about a third of the CPU time of a 1 GiB, 20,000-file tree).
//!
//! Work moves between the threads in batches, each carrying its bytes in one recycled arena:
//! events with file contents from the producer, blocks from the builder. Handing over items
//! one by one, each in its own buffer, was measured at twice the CPU time of the current design
//! (thread wake-ups: 133,000 `sched_yield` calls for 20,000 files) and several hundred MiB of
//! memory (buffers freed on another thread than the one that allocated them). With arenas
//! nothing is allocated per file or per block, and memory is bounded whatever the size of the
//! tree: [`CHANNEL_DEPTH`] + 2 event arenas of about [`BATCH_BYTES`], [`BLOCK_CHANNEL_DEPTH`] + 2
//! block arenas of about [`BLOCK_BATCH_BYTES`], and the chunker's buffer.
//!
//! While as many ingests run as there are CPUs (a daemon substituting many paths at once), a
//! further one does all three parts on its own thread instead, in small batches, with its
//! blocks written straight from the chunker: the CPUs are busy already, and the hand-overs
//! between threads would only cost.
//!
//! When [`ingest`] returns `Ok`, every block of the DAG is durable on disk (the batch has been
//! committed); nothing is registered yet. The caller registers the path afterwards, so a crash
//! in between leaves only unreferenced blocks.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};
use pkgchain_blockstore::pins::PinLease;
use pkgchain_blockstore::{BlockError, BlockStore};
use pkgchain_dag::Cid;
use pkgchain_dag::builder::{BlockSink, BuildError, DagBuilder};
use pkgchain_store_model::hash::{Hash, HashAlgo, Hasher};
use pkgchain_store_model::nar::{NarError, NarEvent, NarWriter};
use pkgchain_store_model::references::StorePathScanner;
use pkgchain_store_model::store_path::StorePath;
use thiserror::Error;
use tracing::{debug, debug_span};

/// Largest piece of file content handed over at once (file reads are this size at most).
pub(crate) const DATA_PIECE: usize = 1024 * 1024;
/// Event batches in flight from the producer to the builder.
const CHANNEL_DEPTH: usize = 8;
/// Events per batch at most.
const BATCH_EVENTS: usize = 512;
/// File bytes per event batch (a batch is sent once it holds this much).
const BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Block batches in flight from the builder to the writer.
const BLOCK_CHANNEL_DEPTH: usize = 8;
/// Blocks per batch at most.
const BLOCK_BATCH: usize = 256;
/// Block bytes per batch (a batch is sent once it holds this much).
const BLOCK_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Why an ingest failed. Nothing was registered.
#[derive(Debug, Error)]
pub enum IngestError {
    /// Reading the source tree failed.
    #[error("{op} '{path}': {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The source tree holds something a NAR cannot.
    #[error("file '{path}' has an unsupported type")]
    UnsupportedType {
        /// The file.
        path: String,
    },
    /// A file changed size while it was read.
    #[error("file '{path}' changed while it was being added")]
    Changed {
        /// The file.
        path: String,
    },
    /// The tree is nested deeper than allowed.
    #[error("'{path}' is nested more than {limit} directories deep")]
    TooDeep {
        /// Where the limit was hit.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// The NAR stream is invalid.
    #[error(transparent)]
    Nar(#[from] NarError),
    /// Building the DAG failed (invalid tree or a block write error).
    #[error("{0}")]
    Build(#[from] BuildError<BlockError>),
    /// The block store failed.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The builder thread stopped before the producer finished (its error follows).
    #[error("block writer stopped")]
    WriterStopped,
}

/// What an ingest produced.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// Root of the DAG.
    pub root: Cid,
    /// SHA-256 of the NAR serialisation.
    pub nar_hash: Hash,
    /// Length of the NAR serialisation.
    pub nar_size: u64,
    /// Every block of the DAG with its size (duplicates possible).
    pub blocks: Vec<(Cid, u64)>,
    /// Candidate store paths whose hash part occurs in the NAR.
    pub references: BTreeSet<StorePath>,
    /// Blocks that were not in the store before.
    pub new_blocks: u64,
    /// Bytes of those blocks.
    pub new_bytes: u64,
    /// Keeps every block of the DAG from the garbage collector until dropped: hold it until
    /// the path is registered.
    pub pins: PinLease,
}

/// One event handed from the producer to the builder thread.
pub(crate) enum Msg {
    File {
        name: Option<Vec<u8>>,
        executable: bool,
        size: u64,
    },
    /// File content: a range of the batch's arena.
    Data(std::ops::Range<usize>),
    FileEnd,
    Symlink {
        name: Option<Vec<u8>>,
        target: Vec<u8>,
    },
    DirectoryStart {
        name: Option<Vec<u8>>,
    },
    DirectoryEnd,
}

/// Events and the file bytes they refer to.
pub(crate) struct EventBatch {
    events: Vec<Msg>,
    /// File contents; its length is the high-water mark (contents past `used` are stale), so
    /// a recycled arena is never zeroed again.
    arena: Vec<u8>,
    used: usize,
}

impl EventBatch {
    fn new() -> EventBatch {
        EventBatch {
            events: Vec::with_capacity(BATCH_EVENTS),
            arena: Vec::new(),
            used: 0,
        }
    }

    fn reset(&mut self) {
        self.events.clear();
        self.used = 0;
    }

    /// `len` bytes of arena to fill, and their range.
    fn slot(&mut self, len: usize) -> (std::ops::Range<usize>, &mut [u8]) {
        let range = self.used..self.used + len;
        if self.arena.len() < range.end {
            self.arena.resize(range.end, 0);
        }
        self.used = range.end;
        (range.clone(), &mut self.arena[range])
    }
}

/// Counts and hashes the NAR serialisation, and scans it for references.
struct NarDigest {
    sha256: Hasher,
    size: u64,
    scanner: Option<StorePathScanner>,
}

impl NarDigest {
    /// A NAR writer into a fresh digest, scanning for `candidates` (none: no scan).
    fn writer(candidates: &[StorePath]) -> NarWriter<NarDigest> {
        NarWriter::new(NarDigest {
            sha256: Hasher::new(HashAlgo::Sha256),
            size: 0,
            scanner: (!candidates.is_empty())
                .then(|| StorePathScanner::new(candidates.iter().cloned())),
        })
    }
}

impl Write for NarDigest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sha256.update(buf);
        self.size += buf.len() as u64;
        if let Some(s) = self.scanner.as_mut() {
            s.update(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The producing side of an ingest: sources call these in NAR order.
pub struct Producer<'s> {
    out: Output<'s>,
    nar: NarWriter<NarDigest>,
    batch: EventBatch,
    /// File bytes gathered before the batch is handed on.
    batch_bytes: usize,
}

/// Where a producer's batches go.
enum Output<'s> {
    /// To the builder thread, which hands blocks to the writer thread.
    Pipeline {
        tx: Sender<EventBatch>,
        free: Receiver<EventBatch>,
    },
    /// Built and written on the producing thread (see [`INLINE_BATCH_BYTES`]).
    Inline(Box<DagBuilder<DirectSink<'s>>>),
}

impl Producer<'_> {
    fn push(&mut self, msg: Msg) -> Result<(), IngestError> {
        self.batch.events.push(msg);
        if self.batch.events.len() >= BATCH_EVENTS || self.batch.used >= self.batch_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the batch gathered so far on: to the builder thread (taking a recycled batch), or
    /// through the builder on this thread.
    fn flush(&mut self) -> Result<(), IngestError> {
        if self.batch.events.is_empty() {
            return Ok(());
        }
        match &mut self.out {
            Output::Pipeline { tx, free } => {
                let mut next = free.try_recv().unwrap_or_else(|_| EventBatch::new());
                next.reset();
                let full = std::mem::replace(&mut self.batch, next);
                tx.send(full).map_err(|_| IngestError::WriterStopped)
            }
            Output::Inline(builder) => {
                build_batch(builder, &self.batch)?;
                self.batch.reset();
                Ok(())
            }
        }
    }

    /// How much file content to hand over at once: [`DATA_PIECE`], or less when each batch
    /// is built as soon as it fills (its bytes then stay in the CPU's cache until built).
    pub fn piece_len(&self) -> usize {
        self.batch_bytes.min(DATA_PIECE)
    }

    /// A file begins.
    pub fn file(
        &mut self,
        name: Option<&[u8]>,
        executable: bool,
        size: u64,
    ) -> Result<(), IngestError> {
        self.nar.write_event(&NarEvent::File {
            name,
            executable,
            size,
        })?;
        self.push(Msg::File {
            name: name.map(<[u8]>::to_vec),
            executable,
            size,
        })
    }

    /// File contents: `fill` writes exactly `len` bytes (at most [`DATA_PIECE`]) into the slot
    /// it is given, straight into the batch's arena.
    pub fn data_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        if len == 0 {
            return Ok(());
        }
        let (range, slot) = self.batch.slot(len);
        fill(slot)?;
        self.nar
            .write_event(&NarEvent::FileChunk(&self.batch.arena[range.clone()]))?;
        self.push(Msg::Data(range))
    }

    /// The current file is complete.
    pub fn file_end(&mut self) -> Result<(), IngestError> {
        self.nar.write_event(&NarEvent::FileEnd)?;
        self.push(Msg::FileEnd)
    }

    /// A symlink.
    pub fn symlink(&mut self, name: Option<&[u8]>, target: &[u8]) -> Result<(), IngestError> {
        self.nar.write_event(&NarEvent::Symlink { name, target })?;
        self.push(Msg::Symlink {
            name: name.map(<[u8]>::to_vec),
            target: target.to_vec(),
        })
    }

    /// A directory begins.
    pub fn directory_start(&mut self, name: Option<&[u8]>) -> Result<(), IngestError> {
        self.nar.write_event(&NarEvent::DirectoryStart { name })?;
        self.push(Msg::DirectoryStart {
            name: name.map(<[u8]>::to_vec),
        })
    }

    /// The current directory is complete.
    pub fn directory_end(&mut self) -> Result<(), IngestError> {
        self.nar.write_event(&NarEvent::DirectoryEnd)?;
        self.push(Msg::DirectoryEnd)
    }
}

/// Options of one ingest.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Store paths to look for in the NAR (reference scanning); empty scans nothing.
    pub reference_candidates: Vec<StorePath>,
    /// Repair: blocks already on disk are checked, and corrupt ones written again.
    pub repair: bool,
}

/// Ingests the tree that `produce` describes. See the module documentation.
///
/// While at least as many ingests run as there are CPUs, a new one runs on the calling thread
/// alone ([`ingest_inline`]): every CPU has an ingest to work on already, and the pipeline's
/// threads would only add hand-overs, copies and thread starts (substituting 16 paths at
/// once on 2 CPUs spent a tenth of its CPU time on those; measured with `perf`).
pub fn ingest<T>(
    blocks: &BlockStore,
    options: &IngestOptions,
    produce: impl FnOnce(&mut Producer) -> Result<T, IngestError>,
) -> Result<(Ingested, T), IngestError> {
    let running = RunningIngest::start();
    let span = debug_span!("ingest", root = %blocks.root().display(), running = running.count);
    let _enter = span.enter();
    if running.count >= cpus() {
        ingest_inline(blocks, options, produce)
    } else {
        ingest_pipelined(blocks, options, produce)
    }
}

/// [`ingest`] on three threads (see the module documentation).
fn ingest_pipelined<T>(
    blocks: &BlockStore,
    options: &IngestOptions,
    produce: impl FnOnce(&mut Producer) -> Result<T, IngestError>,
) -> Result<(Ingested, T), IngestError> {
    let (tx, rx) = bounded::<EventBatch>(CHANNEL_DEPTH);
    // Every arena in flight fits in the pool, so none is ever dropped and reallocated.
    let (free_tx, free_rx) = bounded::<EventBatch>(CHANNEL_DEPTH + 2);
    let (block_tx, block_rx) = bounded::<BlockBatch>(BLOCK_CHANNEL_DEPTH);
    let (pool_tx, pool_rx) = bounded::<BlockBatch>(BLOCK_CHANNEL_DEPTH + 2);
    let sink = ChannelSink {
        tx: block_tx,
        pool: pool_rx,
        blocks: Vec::new(),
        root: blocks.root().to_owned(),
        batch: BlockBatch::new(),
    };
    let spawn_err = |e| IngestError::Io {
        op: "starting ingest threads for",
        path: blocks.root().display().to_string(),
        source: e,
    };
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("pkgchain-write".into())
            .spawn_scoped(scope, move || {
                write_blocks(blocks, block_rx, pool_tx, options.repair)
            })
            .map_err(spawn_err)?;
        let builder = std::thread::Builder::new()
            .name("pkgchain-build".into())
            .spawn_scoped(scope, move || build(rx, free_tx, sink))
            .map_err(spawn_err)?;
        let mut producer = Producer {
            out: Output::Pipeline { tx, free: free_rx },
            nar: NarDigest::writer(&options.reference_candidates),
            batch: EventBatch::new(),
            batch_bytes: BATCH_BYTES,
        };
        let produced = produce(&mut producer).and_then(|v| producer.flush().map(|()| v));
        let Producer { out, nar, .. } = producer;
        drop(out);
        let built = builder.join().unwrap_or(Err(IngestError::WriterStopped));
        let written = writer.join().unwrap_or(Err(IngestError::WriterStopped));
        // The first real failure explains the others (which only saw a closed channel):
        // a write error, then a build error, then the producer's.
        let value = match (produced, built, written) {
            (_, _, Err(e)) => return Err(e),
            (_, Err(e), _) if !is_knock_on(&e) => return Err(e),
            (Err(e), _, _) => return Err(e),
            (_, Err(e), _) => return Err(e),
            (Ok(v), Ok(b), Ok(w)) => (v, b, w),
        };
        let (value, (root, block_list), ((new_blocks, new_bytes), pins)) = value;
        let digest = nar.finish()?;
        let references = digest.scanner.map(|s| s.found()).unwrap_or_default();
        debug!(nar_size = digest.size, new_blocks, "ingested");
        Ok((
            Ingested {
                root,
                nar_hash: digest.sha256.finish(),
                nar_size: digest.size,
                blocks: block_list,
                references,
                new_blocks,
                new_bytes,
                pins,
            },
            value,
        ))
    })
}

/// Whether a builder error only reports that the producer stopped early.
fn is_knock_on(e: &IngestError) -> bool {
    matches!(e, IngestError::Build(BuildError::Sequence(_)))
}

/// Blocks and their bytes, in one arena.
struct BlockBatch {
    blocks: Vec<(Cid, std::ops::Range<usize>)>,
    arena: Vec<u8>,
}

impl BlockBatch {
    fn new() -> BlockBatch {
        BlockBatch {
            blocks: Vec::with_capacity(BLOCK_BATCH),
            arena: Vec::with_capacity(BLOCK_BATCH_BYTES + DATA_PIECE),
        }
    }
}

/// Hands finished blocks to the writer thread and lists them.
struct ChannelSink {
    tx: Sender<BlockBatch>,
    pool: Receiver<BlockBatch>,
    blocks: Vec<(Cid, u64)>,
    root: std::path::PathBuf,
    batch: BlockBatch,
}

impl ChannelSink {
    /// Hands the blocks gathered so far to the writer and takes a recycled batch.
    fn flush(&mut self) -> Result<(), BlockError> {
        if self.batch.blocks.is_empty() {
            return Ok(());
        }
        let mut next = self.pool.try_recv().unwrap_or_else(|_| BlockBatch::new());
        next.blocks.clear();
        next.arena.clear();
        let full = std::mem::replace(&mut self.batch, next);
        self.tx.send(full).map_err(|_| BlockError::Io {
            op: "handing blocks to the writer for",
            path: self.root.clone(),
            source: io::Error::other("block writer stopped"),
        })
    }
}

impl BlockSink for ChannelSink {
    type Error = BlockError;
    fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), BlockError> {
        self.blocks.push((*cid, data.len() as u64));
        let start = self.batch.arena.len();
        self.batch.arena.extend_from_slice(data);
        self.batch.blocks.push((*cid, start..start + data.len()));
        if self.batch.blocks.len() >= BLOCK_BATCH || self.batch.arena.len() >= BLOCK_BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }
}

/// The builder thread: tree events in, blocks out to the writer.
fn build(
    rx: Receiver<EventBatch>,
    free: Sender<EventBatch>,
    sink: ChannelSink,
) -> Result<(Cid, Vec<(Cid, u64)>), IngestError> {
    let mut builder = DagBuilder::new(sink);
    for batch in rx {
        build_batch(&mut builder, &batch)?;
        // The pool holds every arena in flight, so this only fails once the producer is gone.
        let _ = free.try_send(batch);
    }
    let (root, mut sink) = builder.finish()?;
    sink.flush()?;
    Ok((root, sink.blocks))
}

/// Passes one batch of events to `builder`.
fn build_batch<S>(builder: &mut DagBuilder<S>, batch: &EventBatch) -> Result<(), IngestError>
where
    S: BlockSink<Error = BlockError>,
{
    for msg in &batch.events {
        match msg {
            Msg::File {
                name,
                executable,
                size,
            } => builder.file_start(name.as_deref(), *executable, *size)?,
            Msg::Data(range) => builder.file_data(&batch.arena[range.clone()])?,
            Msg::FileEnd => builder.file_end()?,
            Msg::Symlink { name, target } => builder.symlink(name.as_deref(), target)?,
            Msg::DirectoryStart { name } => builder.directory_start(name.as_deref())?,
            Msg::DirectoryEnd => builder.directory_end()?,
        }
    }
    Ok(())
}

/// File bytes gathered before an inline ingest builds them: small enough that the bytes are
/// still in the CPU's cache when they are chunked and hashed after being produced.
const INLINE_BATCH_BYTES: usize = 256 * 1024;

/// [`ingest`] on the calling thread alone: the producer's batches go through the builder and
/// their blocks into the write batch as they fill, with no other thread, channel or copy.
fn ingest_inline<T>(
    blocks: &BlockStore,
    options: &IngestOptions,
    produce: impl FnOnce(&mut Producer) -> Result<T, IngestError>,
) -> Result<(Ingested, T), IngestError> {
    let mut batch = blocks.batch()?;
    if options.repair {
        batch.replace_corrupt();
    }
    let mut producer = Producer {
        out: Output::Inline(Box::new(DagBuilder::new(DirectSink {
            batch,
            blocks: Vec::new(),
        }))),
        nar: NarDigest::writer(&options.reference_candidates),
        batch: EventBatch::new(),
        batch_bytes: INLINE_BATCH_BYTES,
    };
    let value = produce(&mut producer)?;
    producer.flush()?;
    let Producer { out, nar, .. } = producer;
    let Output::Inline(builder) = out else {
        return Err(IngestError::WriterStopped);
    };
    let (root, mut sink) = builder.finish()?;
    sink.batch.commit()?;
    let digest = nar.finish()?;
    let references = digest.scanner.map(|s| s.found()).unwrap_or_default();
    let (new_blocks, new_bytes) = sink.batch.written();
    debug!(nar_size = digest.size, new_blocks, "ingested on one thread");
    Ok((
        Ingested {
            root,
            nar_hash: digest.sha256.finish(),
            nar_size: digest.size,
            blocks: sink.blocks,
            references,
            new_blocks,
            new_bytes,
            pins: sink.batch.lease(),
        },
        value,
    ))
}

/// Ingests under way in this process.
static RUNNING_INGESTS: AtomicUsize = AtomicUsize::new(0);

/// Counts one ingest as running while it lives.
struct RunningIngest {
    /// Ingests running, this one included, when it started.
    count: usize,
}

impl RunningIngest {
    fn start() -> RunningIngest {
        RunningIngest {
            count: RUNNING_INGESTS.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }
}

impl Drop for RunningIngest {
    fn drop(&mut self) {
        RUNNING_INGESTS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// CPUs this process may use (looked up once).
fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The writer thread: every new block durable on disk when it returns `Ok`.
fn write_blocks(
    blocks: &BlockStore,
    rx: Receiver<BlockBatch>,
    pool: Sender<BlockBatch>,
    repair: bool,
) -> Result<((u64, u64), PinLease), IngestError> {
    let mut batch = blocks.batch()?;
    if repair {
        batch.replace_corrupt();
    }
    for arena in rx {
        for (cid, range) in &arena.blocks {
            batch.put(cid, &arena.arena[range.clone()])?;
        }
        let _ = pool.try_send(arena);
    }
    batch.commit()?;
    Ok((batch.written(), batch.lease()))
}

/// Largest file that [`ingest_file_bytes`] is meant for: below this, the threads and channels
/// of [`ingest`] cost more than hashing and writing the file.
pub const SMALL_FILE: u64 = 1024 * 1024;

/// Ingests one regular, non-executable file held in memory, on the calling thread, with the
/// same result as [`ingest`] of that file (for a `.drv` or a `builtins.toFile` text, where
/// starting [`ingest`]'s two threads cost more than the work: measured on instantiating
/// 2,000 derivations).
/// With `repair`, blocks already on disk are checked and corrupt ones written again.
pub fn ingest_file_bytes(
    blocks: &BlockStore,
    data: &[u8],
    repair: bool,
) -> Result<Ingested, IngestError> {
    let size = data.len() as u64;
    let mut nar = NarDigest::writer(&[]);
    nar.write_event(&NarEvent::File {
        name: None,
        executable: false,
        size,
    })?;
    if !data.is_empty() {
        nar.write_event(&NarEvent::FileChunk(data))?;
    }
    nar.write_event(&NarEvent::FileEnd)?;
    let digest = nar.finish()?;
    let mut batch = blocks.batch()?;
    if repair {
        batch.replace_corrupt();
    }
    let mut builder = DagBuilder::new(DirectSink {
        batch,
        blocks: Vec::new(),
    });
    builder.file_start(None, false, size)?;
    for piece in data.chunks(DATA_PIECE) {
        builder.file_data(piece)?;
    }
    builder.file_end()?;
    let (root, mut sink) = builder.finish()?;
    sink.batch.commit()?;
    let (new_blocks, new_bytes) = sink.batch.written();
    Ok(Ingested {
        root,
        nar_hash: digest.sha256.finish(),
        nar_size: digest.size,
        blocks: sink.blocks,
        references: BTreeSet::new(),
        new_blocks,
        new_bytes,
        pins: sink.batch.lease(),
    })
}

/// Puts blocks straight into a write batch and lists them ([`ingest_file_bytes`]).
struct DirectSink<'s> {
    batch: pkgchain_blockstore::WriteBatch<'s>,
    blocks: Vec<(Cid, u64)>,
}

impl BlockSink for DirectSink<'_> {
    type Error = BlockError;
    fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), BlockError> {
        self.blocks.push((*cid, data.len() as u64));
        self.batch.put(cid, data).map(drop)
    }
}

/// Produces events from a NAR stream; returns the reader positioned after the NAR.
pub fn produce_from_nar<R: io::Read>(
    reader: pkgchain_store_model::nar::NarReader<R>,
    producer: &mut Producer,
) -> Result<R, IngestError> {
    let mut reader = reader;
    while let Some(event) = reader.next_event()? {
        match event {
            NarEvent::File {
                name,
                executable,
                size,
            } => {
                producer.file(name, executable, size)?;
                // The contents go straight into the batch: no copy through the reader.
                while let Some(remaining) = reader.file_remaining().filter(|r| *r > 0) {
                    let piece = producer.piece_len();
                    let len = usize::try_from(remaining).map_or(piece, |r| r.min(piece));
                    producer.data_with(len, |slot| Ok(reader.read_file_contents(slot)?))?;
                }
            }
            NarEvent::FileChunk(data) => {
                for piece in data.chunks(DATA_PIECE) {
                    producer.data_with(piece.len(), |slot| {
                        slot.copy_from_slice(piece);
                        Ok(())
                    })?;
                }
            }
            NarEvent::FileEnd => producer.file_end()?,
            NarEvent::Symlink { name, target } => producer.symlink(name, target)?,
            NarEvent::DirectoryStart { name } => producer.directory_start(name)?,
            NarEvent::DirectoryEnd => producer.directory_end()?,
        }
    }
    Ok(reader.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree with every kind of node, and files of every size class (empty, one block, and
    /// several chunks and pieces), as producer calls.
    fn produce_mixed_tree(p: &mut Producer) -> Result<(), IngestError> {
        let file = |p: &mut Producer, name: &[u8], exec: bool, size: usize| {
            p.file(Some(name), exec, size as u64)?;
            let data: Vec<u8> = (0..size)
                .map(|i| (i * 7 % 253) as u8 ^ (i >> 12) as u8)
                .collect();
            for piece in data.chunks(p.piece_len()) {
                p.data_with(piece.len(), |slot| {
                    slot.copy_from_slice(piece);
                    Ok(())
                })?;
            }
            p.file_end()
        };
        p.directory_start(None)?;
        file(p, b"a-empty", false, 0)?;
        file(p, b"b-small", true, 1000)?;
        file(p, b"c-big", false, 3 * DATA_PIECE + 12345)?;
        p.directory_start(Some(b"d-dir"))?;
        file(p, b"inner", false, 300 * 1024)?;
        p.symlink(Some(b"link"), b"../c-big")?;
        p.directory_end()?;
        p.directory_end()
    }

    /// On one thread or three, an ingest gives the same DAG, hashes and blocks.
    #[test]
    fn inline_and_pipelined_ingests_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocks = BlockStore::open(dir.path()).expect("open");
        let (piped, ()) = ingest_pipelined(&blocks, &IngestOptions::default(), produce_mixed_tree)
            .expect("pipelined");
        let other = tempfile::tempdir().expect("tempdir");
        let fresh = BlockStore::open(other.path()).expect("open");
        let (inline, ()) =
            ingest_inline(&fresh, &IngestOptions::default(), produce_mixed_tree).expect("inline");
        assert_eq!(inline.root, piped.root);
        assert_eq!(inline.nar_hash, piped.nar_hash);
        assert_eq!(inline.nar_size, piped.nar_size);
        assert_eq!(inline.blocks, piped.blocks);
        assert_eq!(
            (inline.new_blocks, inline.new_bytes),
            (piped.new_blocks, piped.new_bytes)
        );
        assert!(inline.blocks.len() > 8, "{} blocks", inline.blocks.len());
        for (cid, size) in &inline.blocks {
            let data = fresh.read(cid).expect("inline block on disk");
            assert_eq!(data.len() as u64, *size);
        }
    }

    /// The one-thread path for small files gives exactly what the pipeline gives.
    #[test]
    fn small_files_ingest_the_same_on_one_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocks = BlockStore::open(dir.path()).expect("open");
        let sizes = [
            0usize,
            1,
            4095,
            DATA_PIECE + 7,
            300 * 1024,
            SMALL_FILE as usize,
        ];
        for size in sizes {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let (piped, ()) = ingest(&blocks, &IngestOptions::default(), |p| {
                p.file(None, false, size as u64)?;
                for piece in data.chunks(DATA_PIECE) {
                    p.data_with(piece.len(), |slot| {
                        slot.copy_from_slice(piece);
                        Ok(())
                    })?;
                }
                p.file_end()
            })
            .expect("pipeline");
            let direct = ingest_file_bytes(&blocks, &data, false).expect("direct");
            assert_eq!(direct.root, piped.root, "size {size}");
            assert_eq!(direct.nar_hash, piped.nar_hash, "size {size}");
            assert_eq!(direct.nar_size, piped.nar_size, "size {size}");
            assert_eq!(direct.blocks, piped.blocks, "size {size}");
            assert_eq!(direct.new_blocks, 0, "size {size}: the pipeline wrote them");
            for (cid, _) in &direct.blocks {
                assert!(blocks.read(cid).is_ok(), "size {size}: block {cid}");
            }
        }
    }
}
