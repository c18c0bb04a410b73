//! Package chain's store: the block store and the metadata database working together.
//!
//! * [`ingest`]: a NAR stream or a file tree becomes blocks in one pass (SHA-256 NAR hash and
//!   BLAKE3 block hashes computed together, memory bounded, references scanned), durable before
//!   anything is registered.
//! * [`export`]: a path's NAR rebuilt from its blocks byte for byte, every block verified.
//! * [`Store`]: the facade used by the daemon and the `pkgchain` tool: add a tree as a source
//!   path (what `nix-store --add` does), register paths, dump, verify, statistics.
//! * [`add`]: what the worker protocol's add operations do: a NAR with client-given metadata
//!   ([`Store::add_nar`]), or file data under a computed content address
//!   ([`Store::add_to_store_ca`]).
//! * [`query`]: what the worker protocol asks: path info, referrers, derivers, derivation
//!   outputs, realisations; signatures added to valid paths.
//! * [`drv`]: `.drv` files in the store and the checks Nix makes when one becomes valid.
//!
//! Invariant: a path is registered only after every block of its DAG is durable; a crash at any
//! point leaves at most blocks that no path uses, never a valid path with a missing block. A
//! `.drv` becomes valid only with its derivation checked and its outputs recorded.

pub mod add;
pub mod collect;
pub mod drv;
pub mod durability;
pub mod export;
pub mod fs_source;
pub mod ingest;
mod locks;
pub mod query;
mod stream;
pub mod tree;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pkgchain_blockstore::{BlockError, BlockStore};
use pkgchain_dag::Cid;
use pkgchain_store_db::{DbError, NewPath, StoreDb};
use pkgchain_store_model::content_address::{
    ContentAddress, ContentAddressError, ContentAddressMethod,
};
use pkgchain_store_model::derivation::{DerivationError, DrvHashes};
use pkgchain_store_model::store_path::{StoreDir, StorePath, StorePathError};
use thiserror::Error;
use tracing::{info, info_span};

pub use crate::add::{CaAddRequest, DumpFormat};
pub use crate::export::ExportError;
pub use crate::ingest::{IngestError, IngestOptions, Ingested};
pub use crate::tree::TreeError;
pub use crate::verify::{Problem, VerifyReport};
pub use pkgchain_blockstore::Durability;
pub use pkgchain_store_db::PathInfo;
pub use pkgchain_store_db::realisation::{DrvHashOutput, RealisationKey, RealisationValue};

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Ingesting failed; nothing was registered.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Exporting failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The block store failed.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The path could not be kept from the garbage collector before it was added.
    #[error("keeping '{0}' from the garbage collector: {1}")]
    Keep(String, String),
    /// A pin names something that cannot be kept.
    #[error("pin: {0}")]
    Pin(String),
    /// A name or path is not a valid store path.
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    /// The path is not valid in this store.
    #[error("path '{0}' is not valid")]
    NotValid(String),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
    /// Writing output failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
    /// Reading inside a path failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// Reading the data to add from the caller's stream failed.
    #[error("reading the data to add: {0}")]
    Read(std::io::Error),
    /// A local file operation failed.
    #[error("{op} '{path}': {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The NAR does not have the hash its metadata states (Nix's words).
    #[error("hash mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}")]
    HashMismatch {
        /// The store path.
        path: String,
        /// The stated NAR hash (SRI).
        specified: String,
        /// The NAR's hash (SRI).
        got: String,
    },
    /// The NAR does not have the size its metadata states (Nix's words).
    #[error("size mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}")]
    SizeMismatch {
        /// The store path.
        path: String,
        /// The stated NAR size.
        specified: u64,
        /// The NAR's size (or "more than N" when it runs past the stated size).
        got: String,
    },
    /// The contents do not have the hash the stated content address names (Nix's words).
    #[error(
        "ca hash mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}"
    )]
    CaHashMismatch {
        /// The store path.
        path: String,
        /// The content address's hash (`algo:nix32`).
        specified: String,
        /// The contents' hash.
        got: String,
    },
    /// The stated content address (with the stated references) does not give the path.
    #[error(
        "cannot add path '{0}' to the Nix store because it claims to be content-addressed but isn't"
    )]
    NotContentAddressed(String),
    /// A content address cannot give a store path (wrong algorithm, references not allowed).
    #[error(transparent)]
    ContentAddress(#[from] ContentAddressError),
    /// A hash part that is not 32 characters long.
    #[error("invalid hash part '{0}'")]
    InvalidHashPart(String),
    /// A `.drv` does not parse (Nix's words).
    #[error("error parsing derivation '{path}': {reason}")]
    DerivationParse {
        /// The `.drv` path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A `.drv` parses but breaks an invariant (wrong output path, ...).
    #[error("derivation '{path}' is invalid: {source}")]
    DerivationInvalid {
        /// The `.drv` path.
        path: String,
        /// What is wrong.
        source: DerivationError,
    },
    /// A regular file was needed.
    #[error("'{0}' is not a regular file")]
    NotRegularFile(String),
    /// A file is larger than this operation reads.
    #[error("'{path}' is {size} bytes, more than the {limit} bytes allowed")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A signature that is not `keyname:base64`.
    #[error("invalid signature '{signature}': {reason}")]
    BadSignature {
        /// The signature as given.
        signature: String,
        /// Why it does not parse.
        reason: String,
    },
    /// Something this store does not do (yet).
    #[error("not supported: {0}")]
    Unsupported(String),
}

/// Where the store keeps its parts.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The store directory clients see (`/nix/store`).
    pub store_dir: StoreDir,
    /// The metadata database file.
    pub db_file: PathBuf,
    /// The block store root (`/ipfs/blocks`).
    pub blocks_dir: PathBuf,
    /// When added paths' blocks reach the disk (see [`durability`]).
    pub durability: Durability,
}

impl StoreConfig {
    /// The standard layout: database under `<state dir>/pkgchain/`, blocks under
    /// `<ipfs dir>/blocks`.
    pub fn from_locations(store_dir: StoreDir, state_dir: &Path, ipfs_dir: &Path) -> StoreConfig {
        StoreConfig {
            store_dir,
            db_file: state_dir.join("pkgchain").join("store.sqlite"),
            blocks_dir: ipfs_dir.join("blocks"),
            durability: Durability::EachCommit,
        }
    }
}

struct Inner {
    config: StoreConfig,
    blocks: BlockStore,
    db: StoreDb,
    /// The runtime the store was opened in; blocking code reaches the database through it.
    runtime: tokio::runtime::Handle,
    /// Memoised modulo hashes of derivations (see [`drv`]).
    drv_hashes: Mutex<DrvHashes>,
    /// Per-path locks for adds.
    locks: locks::PathLocks,
}

/// The store; cheap to clone.
#[derive(Clone)]
pub struct Store(Arc<Inner>);

/// On-disk and database totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// What the database says valid paths use.
    pub db: pkgchain_store_db::Stats,
    /// Block files on disk.
    pub disk_blocks: u64,
    /// Their apparent size.
    pub disk_bytes: u64,
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs blocking work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

impl Store {
    /// Opens the store, creating its directories and database if needed. Must run in a tokio
    /// runtime, which the store keeps using (blocking adds reach the database through it).
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::Task(format!("opening the store: {e}")))?;
        if let Some(parent) = config.db_file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Block(BlockError::Io {
                    op: "creating",
                    path: parent.to_owned(),
                    source: e,
                })
            })?;
        }
        let blocks = BlockStore::open_with(&config.blocks_dir, config.durability)?;
        let db = StoreDb::open(&config.db_file).await?;
        db.set_tracking_unsynced(config.durability == Durability::Deferred);
        let store = Store(Arc::new(Inner {
            config,
            blocks,
            db,
            runtime,
            drv_hashes: Mutex::new(DrvHashes::new()),
            locks: locks::PathLocks::default(),
        }));
        store.recover_unsynced().await?;
        Ok(store)
    }

    /// The runtime the store was opened in.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.0.runtime
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.0.config
    }

    /// The store directory.
    pub fn store_dir(&self) -> &StoreDir {
        &self.0.config.store_dir
    }

    /// The block store.
    pub fn blocks(&self) -> &BlockStore {
        &self.0.blocks
    }

    /// The metadata database.
    pub fn db(&self) -> &StoreDb {
        &self.0.db
    }

    /// Ingests the file tree at `fs_path` (blocks only; nothing registered).
    pub async fn ingest_tree(
        &self,
        fs_path: PathBuf,
        options: IngestOptions,
    ) -> Result<Ingested, StoreError> {
        let store = self.clone();
        let (ingested, ()) = tokio::task::spawn_blocking(move || {
            ingest::ingest(store.blocks(), &options, |p| {
                fs_source::produce_from_path(&fs_path, p)
            })
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(ingested)
    }

    /// Registers an ingested tree as `path`. A `.drv` must pass Nix's derivation checks (see
    /// [`drv`]); its outputs are recorded with it.
    pub async fn register(
        &self,
        path: StorePath,
        ingested: &Ingested,
        references: BTreeSet<StorePath>,
        ca: Option<ContentAddress>,
    ) -> Result<(), StoreError> {
        let info = PathInfo {
            path,
            nar_hash: ingested.nar_hash.clone(),
            nar_size: ingested.nar_size,
            root: ingested.root,
            deriver: None,
            registration_time: now(),
            ultimate: false,
            sigs: BTreeSet::new(),
            ca: ca.map(|c| c.render()),
            references,
        };
        self.register_checked(info, ingested.blocks.clone()).await
    }

    /// Registers one path in one transaction, after the derivation checks when it is a `.drv`.
    pub(crate) async fn register_checked(
        &self,
        info: PathInfo,
        blocks: Vec<(Cid, u64)>,
    ) -> Result<(), StoreError> {
        // One blocking call for the derivation checks and the transaction.
        let store = self.clone();
        blocking(move || store.register_checked_blocking(info, blocks)).await
    }

    /// [`Store::register_checked`] on the calling thread, which it blocks.
    pub(crate) fn register_checked_blocking(
        &self,
        info: PathInfo,
        blocks: Vec<(Cid, u64)>,
    ) -> Result<(), StoreError> {
        let derivation_outputs = if info.path.is_derivation() {
            self.check_new_derivation(&info.path, &info.root)?
        } else {
            BTreeMap::new()
        };
        self.db().register_paths_blocking(&[NewPath {
            info,
            blocks,
            derivation_outputs,
        }])?;
        Ok(())
    }

    /// What `nix-store --add PATH` does: the tree becomes a content-addressed source path
    /// named after its last component (or `name`). Returns the store path.
    pub async fn add_path(
        &self,
        fs_path: &Path,
        name: Option<&str>,
    ) -> Result<StorePath, StoreError> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => fs_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        pkgchain_store_model::store_path::validate_name(&name)?;
        let span = info_span!("add_path", path = %fs_path.display(), name = %name);
        let _enter = span.enter();
        let ingested = self
            .ingest_tree(fs_path.to_owned(), IngestOptions::default())
            .await?;
        let path =
            self.store_dir()
                .make_fixed_output_path(&name, true, &ingested.nar_hash, [], false)?;
        let ca = ContentAddress::new(ContentAddressMethod::NixArchive, ingested.nar_hash.clone());
        self.register(path.clone(), &ingested, BTreeSet::new(), Some(ca))
            .await?;
        info!(
            store_path = %path,
            nar_size = ingested.nar_size,
            new_blocks = ingested.new_blocks,
            new_bytes = ingested.new_bytes,
            "added"
        );
        Ok(path)
    }

    /// Parses an absolute store path of this store.
    pub fn parse_path(&self, path: &str) -> Result<StorePath, StoreError> {
        Ok(self.store_dir().parse(path)?)
    }

    /// The root CID of a valid path.
    pub async fn root_of(&self, path: &StorePath) -> Result<Cid, StoreError> {
        self.db()
            .root_of(path.base_name())
            .await?
            .ok_or_else(|| StoreError::NotValid(self.store_dir().display(path)))
    }

    /// Writes the NAR of a valid path to `out`; returns its length.
    pub async fn dump<W: Write + Send + 'static>(
        &self,
        path: &StorePath,
        out: W,
    ) -> Result<u64, StoreError> {
        let root = self.root_of(path).await?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || export::export_nar(store.blocks(), &root, out))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(StoreError::from)
    }

    /// Checks every valid path; see [`verify`].
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        verify::verify(self, verify::VerifyDepth::Contents).await
    }

    /// Checks one valid path's contents: its blocks against their CIDs and its rebuilt NAR
    /// against the registered hash and size. Empty when the path is sound (or not valid).
    pub async fn verify_path(&self, path: &StorePath) -> Result<Vec<verify::Problem>, StoreError> {
        verify::verify_path(self, path).await
    }

    /// Checks that every block of every valid path is present, reading none of them.
    pub async fn verify_presence(&self) -> Result<VerifyReport, StoreError> {
        verify::verify(self, verify::VerifyDepth::Presence).await
    }

    /// Totals from the database and the block directory.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let db = self.db().stats().await?;
        let store = self.clone();
        let (disk_blocks, disk_bytes) = tokio::task::spawn_blocking(move || {
            let mut n = 0u64;
            let mut bytes = 0u64;
            store.blocks().for_each_block(|_, size| {
                n += 1;
                bytes += size;
                Ok(())
            })?;
            Ok::<_, BlockError>((n, bytes))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(StoreStats {
            db,
            disk_blocks,
            disk_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use pkgchain_store_model::hash::{Hash, HashAlgo};
    use pkgchain_store_model::nar::{NarReader, NarWriter};

    use super::*;

    fn sample_tree(root: &Path) {
        std::fs::create_dir_all(root.join("sub/empty")).expect("dirs");
        std::fs::write(root.join("a.txt"), b"hello").expect("file");
        std::fs::write(root.join("empty"), b"").expect("empty");
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        std::fs::write(root.join("sub/big"), &big).expect("big");
        std::fs::write(root.join("run"), b"#!/bin/sh\n").expect("exe");
        std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        symlink("a.txt", root.join("link")).expect("link");
        std::fs::write(
            root.join("refers"),
            b"uses /nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-dep/bin/x",
        )
        .expect("refers");
    }

    async fn open_store(dir: &Path) -> Store {
        open_store_with(dir, Durability::EachCommit).await
    }

    async fn open_store_with(dir: &Path, durability: Durability) -> Store {
        Store::open(StoreConfig {
            store_dir: StoreDir::default(),
            db_file: dir.join("db/store.sqlite"),
            blocks_dir: dir.join("blocks"),
            durability,
        })
        .await
        .expect("open store")
    }

    /// Deferred durability: a path added after the last flush whose block lost its contents
    /// (as in a power loss) is unregistered when the store is opened again; a path that was
    /// flushed, and one whose blocks survived, stay valid.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_before_the_flush_never_leaves_a_damaged_path_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("input");
        std::fs::create_dir_all(&input).expect("mkdir");
        let file = |name: &str, text: &str| {
            let p = input.join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        let store = open_store_with(dir.path(), Durability::Deferred).await;
        let flushed = store
            .add_path(&file("flushed", "flushed before the crash"), None)
            .await
            .expect("add");
        store.flush_unsynced().await.expect("flush");
        assert_eq!(store.blocks().unsynced_since().expect("marker"), None);
        let survivor = store
            .add_path(&file("survivor", "written, not yet synced, intact"), None)
            .await
            .expect("add");
        let damaged = store
            .add_path(&file("damaged", "written, not yet synced, lost"), None)
            .await
            .expect("add");
        assert!(store.is_valid_path(&damaged).await.expect("valid"));
        let root = store.root_of(&damaged).await.expect("root");
        let block = store.blocks().path_of(&root);
        std::fs::set_permissions(&block, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::write(&block, b"").expect("lose the contents");
        // The crash: no flush.
        store.db().close().await;
        drop(store);
        let store = open_store_with(dir.path(), Durability::Deferred).await;
        assert!(store.is_valid_path(&flushed).await.expect("valid"));
        assert!(store.is_valid_path(&survivor).await.expect("valid"));
        assert!(!store.is_valid_path(&damaged).await.expect("valid"));
        assert!(!store.blocks().contains(&root).expect("contains"));
        assert_eq!(store.blocks().unsynced_since().expect("marker"), None);
        assert!(
            store
                .db()
                .unsynced_paths()
                .await
                .expect("unsynced")
                .is_empty()
        );
        // The lost path can be added again.
        let again = store
            .add_path(&file("damaged", "written, not yet synced, lost"), None)
            .await
            .expect("add again");
        assert_eq!(again, damaged);
        assert!(!store.blocks().read(&root).expect("read").is_empty());
    }

    /// The NAR of a tree as our own walker and writer produce it.
    fn nar_of_tree(store: &Store, tree: &Path) -> Vec<u8> {
        // Ingesting and exporting is one way; a direct NarWriter over the FS walk is another.
        let (ingested, ()) = ingest::ingest(store.blocks(), &IngestOptions::default(), |p| {
            fs_source::produce_from_path(tree, p)
        })
        .expect("ingest");
        let mut out = Vec::new();
        export::export_nar(store.blocks(), &ingested.root, &mut out).expect("export");
        assert_eq!(Hash::digest(HashAlgo::Sha256, &out), ingested.nar_hash);
        assert_eq!(out.len() as u64, ingested.nar_size);
        out
    }

    #[tokio::test]
    async fn tree_and_nar_ingest_agree_and_export_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        sample_tree(&tree);
        let store = open_store(dir.path()).await;
        let nar = nar_of_tree(&store, &tree);
        // Feed that NAR (followed by unrelated bytes) through the NAR path of ingest.
        let mut input = nar.clone();
        input.extend_from_slice(b"TRAILER");
        let (ingested, rest) = ingest::ingest(store.blocks(), &IngestOptions::default(), |p| {
            ingest::produce_from_nar(NarReader::new(Cursor::new(&input[..])), p)
        })
        .expect("ingest NAR");
        assert_eq!(ingested.nar_hash, Hash::digest(HashAlgo::Sha256, &nar));
        assert_eq!(
            &input[rest.position() as usize..],
            b"TRAILER",
            "read past the NAR"
        );
        // Round trip through the NAR writer too.
        let mut reader = NarReader::new(Cursor::new(&nar[..]));
        let mut writer = NarWriter::new(Vec::new());
        while let Some(e) = reader.next_event().expect("read") {
            writer.write_event(&e).expect("write");
        }
        assert_eq!(writer.finish().expect("finish"), nar);
    }

    #[tokio::test]
    async fn add_path_registers_a_source_path_with_its_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        sample_tree(&tree);
        let store = open_store(dir.path()).await;
        let path = store.add_path(&tree, None).await.expect("add");
        let info = store
            .db()
            .path_info(&path)
            .await
            .expect("query")
            .expect("valid");
        assert_eq!(
            path,
            store
                .store_dir()
                .make_fixed_output_path("tree", true, &info.nar_hash, [], false)
                .expect("path")
        );
        assert_eq!(
            info.ca.as_deref(),
            Some(format!("fixed:r:{}", info.nar_hash.to_nix32_prefixed()).as_str())
        );
        let blocks = store.db().path_blocks(&path).await.expect("blocks");
        assert!(blocks.len() > 5);
        for (cid, _) in &blocks {
            assert!(store.blocks().contains(cid).expect("contains"));
        }
        let report = store.verify().await.expect("verify");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        // Adding again writes nothing new.
        let again = store
            .ingest_tree(tree.clone(), IngestOptions::default())
            .await
            .expect("again");
        assert_eq!(again.new_blocks, 0);
    }

    #[tokio::test]
    async fn reference_scanning_finds_candidates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        sample_tree(&tree);
        let store = open_store(dir.path()).await;
        let dep = StorePath::from_base_name("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-dep").expect("dep");
        let other =
            StorePath::from_base_name("00000000000000000000000000000000-other").expect("other");
        let ingested = store
            .ingest_tree(
                tree,
                IngestOptions {
                    reference_candidates: vec![dep.clone(), other],
                    ..IngestOptions::default()
                },
            )
            .await
            .expect("ingest");
        assert_eq!(ingested.references, BTreeSet::from([dep]));
    }

    #[tokio::test]
    async fn bad_input_registers_nothing_and_leaves_no_staging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        sample_tree(&tree);
        let store = open_store(dir.path()).await;
        let nar = nar_of_tree(&store, &tree);
        let before = store.stats().await.expect("stats");
        // A truncated NAR and one that lies about a file's size.
        let truncated = &nar[..nar.len() / 2];
        let err = ingest::ingest(store.blocks(), &IngestOptions::default(), |p| {
            ingest::produce_from_nar(NarReader::new(Cursor::new(truncated)), p)
        })
        .expect_err("truncated NAR");
        assert!(err.to_string().contains("end of"), "{err}");
        let fifo = dir.path().join("with-fifo");
        std::fs::create_dir_all(&fifo).expect("dir");
        let status = std::process::Command::new("mkfifo")
            .arg(fifo.join("pipe"))
            .status()
            .expect("mkfifo");
        assert!(status.success());
        let err = store.add_path(&fifo, None).await.expect_err("fifo");
        assert!(err.to_string().contains("unsupported type"), "{err}");
        assert!(err.to_string().contains("pipe"), "{err}");
        let after = store.stats().await.expect("stats");
        assert_eq!(before.db, after.db, "nothing may be registered");
        // The process's staging directory stays while the store is open, empty.
        for entry in std::fs::read_dir(dir.path().join("blocks/.tmp")).expect("staging") {
            let entry = entry.expect("entry");
            let left = std::fs::read_dir(entry.path()).expect("dir").count();
            assert_eq!(left, 0, "staging left behind in {}", entry.path().display());
        }
    }
}
