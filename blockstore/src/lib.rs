//! Package chain's block store on disk.
//!
//! One block is one read-only file (`0444`, like Nix's store files, so the materialised view
//! can hard-link it) at `<root>/<shard>/<cid>`, where `<shard>` is the
//! next-to-last two characters of the CID's text (1,024 shards, as go-ipfs' flatfs does).
//!
//! Writes go through a [`WriteBatch`]: each new block is written to an unnamed temporary file
//! (`O_TMPFILE`, in `<root>/.tmp/`; a numbered file there where the file system has no unnamed
//! files); [`WriteBatch::commit`] then flushes the file system (`syncfs`), links every staged
//! file under its final name (or renames it) and flushes again. So a block file with its final
//! name always has its full, durable contents: a crash at any moment leaves only staging (which
//! vanishes with the process, or which [`BlockStore::open`] removes) or complete blocks that no
//! path uses yet (which the garbage collector removes). One `syncfs` per batch instead of one
//! `fsync` per file is what makes durable ingest of tens of thousands of small files
//! affordable; unnamed files save a directory entry and a rename per block (measured: the
//! renames were about 5% of ingest time on ext4).
//!
//! That is [`Durability::EachCommit`]. A store opened with [`Durability::Deferred`] (what the
//! daemon does unless `fsync-store-paths = true`, as Nix leaves its store files to writeback)
//! links at commit without waiting for the disk, and [`BlockStore::flush`] syncs later. Before
//! the first such link a marker file, `<root>/.unsynced`, is made durable; `flush` removes it
//! once everything linked before it is on disk. A marker found at open means a crash may have
//! left named blocks with lost contents: [`BlockStore::remove_damaged_since`] checks every block
//! file changed since the marker appeared, and the store above re-checks the paths it
//! registered on such blocks (see `pkgchain-store`). One process at a time may write a store
//! in deferred mode.
//!
//! Blocks an add relies on are pinned for the collector before it looks for them on disk, and
//! the collector moves blocks aside before it deletes them: see [`pins`].
//!
//! Every read through [`BlockStore::read`] or [`BlockStore::open_verified`] is checked against
//! the CID; a mismatch is [`BlockError::Corrupt`], never data.

pub mod pins;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use pkgchain_dag::Cid;
use pkgchain_dag::layout::MAX_BLOCK_SIZE;
use rustix::fs::{AtFlags, Mode, OFlags};
use thiserror::Error;
use tracing::{debug, warn};

/// Staged blocks after which a batch commits on its own.
const BATCH_MAX_BLOCKS: usize = 8192;
/// Staged bytes after which a batch commits on its own.
const BATCH_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Name of the staging directory under the root.
const STAGING_DIR: &str = ".tmp";
/// Name of the directory under the root where the collector moves blocks before deleting them.
/// Where blocks were moved aside before they moved beside their shard (stores made by an
/// older version may still have some after a crash; they are moved back).
const OLD_TRASH_DIR: &str = ".trash";
/// The suffix of a block the collector moved aside: `<shard>/<cid>.trash`, in its own shard
/// directory (a rename within one directory does not take the file system's rename lock).
const TRASH_SUFFIX: &str = ".trash";
/// The collector's list of the blocks it is moving aside, in the pins directory: what a
/// collector that died left there is moved back from it.
const TRASH_JOURNAL: &str = "trashing";
/// The largest trash journal read (a collector lists one batch of blocks, some 300 KiB).
const MAX_TRASH_JOURNAL: u64 = 64 << 20;
/// Name of the marker that says named blocks may not be durable yet (deferred durability).
const UNSYNCED_MARKER: &str = ".unsynced";

/// When the blocks of a committed batch are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// [`WriteBatch::commit`] syncs before and after linking: a named block always has its
    /// contents on disk.
    #[default]
    EachCommit,
    /// [`WriteBatch::commit`] links at once; [`BlockStore::flush`] makes it durable later, and
    /// the `.unsynced` marker tells the next open to check (see the crate documentation).
    Deferred,
}

/// Deferred-durability bookkeeping: whether the marker exists, how many commits marked since
/// the store opened and how many are still linking (a flush removes the marker only if no
/// commit marked during its sync and none is linking).
#[derive(Debug, Default)]
struct Unsynced {
    marked: bool,
    commits: u64,
    /// Deferred commits between their marking and the end of their links.
    linking: u64,
}

/// Why a block operation failed.
#[derive(Debug, Error)]
pub enum BlockError {
    /// The block is not in the store.
    #[error("block {0} is missing")]
    Missing(Cid),
    /// The block's file does not hash to its CID.
    #[error("block {cid} is corrupt: {path} does not match its CID")]
    Corrupt {
        /// The block.
        cid: Cid,
        /// Its file.
        path: PathBuf,
    },
    /// The block's file is larger than any block may be.
    #[error("block {cid} at {path} is larger than {MAX_BLOCK_SIZE} bytes")]
    TooLarge {
        /// The block.
        cid: Cid,
        /// Its file.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A temp-pins file holds something other than CIDs.
    #[error("malformed temp pins file {path}: {reason}")]
    BadPins {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl BlockError {
    fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        BlockError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}

/// The state of one block on disk, as [`BlockStore::check`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// Present and matching its CID.
    Ok,
    /// No file.
    Missing,
    /// A file that does not match its CID.
    Corrupt,
}

/// A deferred commit between marking and the end of its links (also when it fails): while
/// one exists, [`BlockStore::flush`] keeps the marker.
struct Linking<'s>(&'s BlockStore);

impl Drop for Linking<'_> {
    fn drop(&mut self) {
        self.0
            .unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .linking -= 1;
    }
}

/// The block store rooted at one directory.
#[derive(Debug)]
pub struct BlockStore {
    root: PathBuf,
    root_fd: OwnedFd,
    staging: PathBuf,
    staging_fd: OwnedFd,
    durability: Durability,
    unsynced: Mutex<Unsynced>,
    /// This process's staging directory (`<root>/.tmp/<pid>-<time>`), made at the first batch
    /// and shared by all batches: one directory per batch cost a `mkdir` and a `rmdir` per
    /// add, and ext4's inode allocator slowed down on the churn (measured).
    process_staging: std::sync::OnceLock<(PathBuf, OwnedFd)>,
    /// `<root>/../pins`: pins, temp pins and the collector's lock.
    pins_dir: PathBuf,
    /// This process's temp pins.
    temp_pins: Arc<pins::TempPins>,
}

static BATCH_SEQ: AtomicU64 = AtomicU64::new(0);

/// The pins directory of a block store rooted at `root`: `pins` beside it (`/ipfs/pins` for
/// `/ipfs/blocks`).
pub fn pins_dir_of(root: &Path) -> PathBuf {
    root.parent().unwrap_or(root).join("pins")
}

/// The CIDs a trash journal lists. An unfinished or damaged line names nothing moved (lines are
/// written before the moves) and is skipped. Public for the fuzz target.
pub fn parse_trash_journal(text: &[u8]) -> Vec<Cid> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok()?.parse::<Cid>().ok())
        .collect()
}

/// The shard directory and file name of a block, relative to the root.
pub fn relative_path(cid: &Cid) -> String {
    let name = cid.to_string();
    let n = name.len();
    format!("{}/{}", &name[n - 3..n - 1], name)
}

impl BlockStore {
    /// Opens (creating) the store at `root` with [`Durability::EachCommit`] and removes staging
    /// left by dead processes.
    pub fn open(root: &Path) -> Result<BlockStore, BlockError> {
        BlockStore::open_with(root, Durability::EachCommit)
    }

    /// Opens (creating) the store at `root` and removes staging left by dead processes.
    pub fn open_with(root: &Path, durability: Durability) -> Result<BlockStore, BlockError> {
        let staging = root.join(STAGING_DIR);
        std::fs::create_dir_all(&staging).map_err(|e| BlockError::io("creating", &staging, e))?;
        let open_dir = |p: &Path| {
            rustix::fs::open(
                p,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| BlockError::io("opening", p, e))
        };
        let store = BlockStore {
            root_fd: open_dir(root)?,
            staging_fd: open_dir(&staging)?,
            root: root.to_owned(),
            staging,
            durability,
            unsynced: Mutex::new(Unsynced {
                marked: root.join(UNSYNCED_MARKER).exists(),
                commits: 0,
                linking: 0,
            }),
            process_staging: std::sync::OnceLock::new(),
            pins_dir: pins_dir_of(root),
            temp_pins: Arc::new(pins::TempPins::new(&pins_dir_of(root))),
        };
        store.remove_dead_staging();
        store.make_shards()?;
        Ok(store)
    }

    /// Makes the 1,024 shard directories unless the last one exists (they are made in order):
    /// making them as blocks arrive cost a `mkdir` in the first adds' path.
    fn make_shards(&self) -> Result<(), BlockError> {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let last = [ALPHABET[31], ALPHABET[31]];
        if rustix::fs::statat(&self.root_fd, OsStr::from_bytes(&last), AtFlags::empty()).is_ok() {
            return Ok(());
        }
        for a in ALPHABET {
            for b in ALPHABET {
                self.make_shard(&format!("{}{}", char::from(*a), char::from(*b)))?;
            }
        }
        Ok(())
    }

    /// Makes one shard directory if it is missing.
    fn make_shard(&self, name: &str) -> Result<(), BlockError> {
        match rustix::fs::mkdirat(&self.root_fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(BlockError::io("creating", self.root.join(name), e)),
        }
    }

    /// When the `.unsynced` marker appeared, if there is one: blocks linked since then may not
    /// be on disk (before a [`BlockStore::flush`]), or may have lost their contents in a crash
    /// (when found at open).
    pub fn unsynced_since(&self) -> Result<Option<SystemTime>, BlockError> {
        let marker = self.root.join(UNSYNCED_MARKER);
        match std::fs::metadata(&marker) {
            Ok(m) => Ok(Some(
                m.modified()
                    .map_err(|e| BlockError::io("inspecting", &marker, e))?,
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlockError::io("inspecting", &marker, e)),
        }
    }

    /// Whether blocks were linked since the last [`BlockStore::flush`] (or a crash left the
    /// marker): whether a flush has anything to do.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .marked
    }

    /// Makes the marker durable (once) before a deferred commit links blocks.
    fn mark_unsynced(&self) -> Result<Linking<'_>, BlockError> {
        let mut state = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
        // Another process that opened this store may have flushed and removed it.
        let present = state.marked
            && rustix::fs::statat(&self.root_fd, UNSYNCED_MARKER, AtFlags::empty()).is_ok();
        if !present {
            let marker = self.root.join(UNSYNCED_MARKER);
            let fd = rustix::fs::openat(
                &self.root_fd,
                UNSYNCED_MARKER,
                OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(|e| BlockError::io("creating", &marker, e))?;
            rustix::fs::fsync(&fd).map_err(|e| BlockError::io("syncing", &marker, e))?;
            rustix::fs::fsync(&self.root_fd)
                .map_err(|e| BlockError::io("syncing", &self.root, e))?;
            state.marked = true;
        }
        state.commits += 1;
        state.linking += 1;
        Ok(Linking(self))
    }

    /// Makes every block linked so far durable (`syncfs`) and removes the `.unsynced` marker
    /// unless a commit linked more meanwhile. Returns whether there was anything to flush.
    /// Blocking.
    pub fn flush(&self) -> Result<bool, BlockError> {
        let commits = {
            let state = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
            if !state.marked {
                return Ok(false);
            }
            state.commits
        };
        rustix::fs::syncfs(&self.root_fd).map_err(|e| BlockError::io("syncing", &self.root, e))?;
        let mut state = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
        if state.commits == commits && state.linking == 0 {
            match rustix::fs::unlinkat(&self.root_fd, UNSYNCED_MARKER, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => state.marked = false,
                Err(e) => {
                    return Err(BlockError::io(
                        "removing",
                        self.root.join(UNSYNCED_MARKER),
                        e,
                    ));
                }
            }
        }
        Ok(true)
    }

    /// Checks every block file whose inode changed at or after `since` and removes those that
    /// do not match their CID (after a crash in deferred mode: named, but contents lost).
    /// Returns the removed blocks. Blocking; reads all of those blocks.
    pub fn remove_damaged_since(&self, since: SystemTime) -> Result<Vec<Cid>, BlockError> {
        let since = since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut changed: Vec<Cid> = Vec::new();
        self.for_each_block_file(|cid, stat, trashed| {
            if !trashed && stat.st_ctime >= since {
                changed.push(cid);
            }
            Ok(())
        })?;
        let mut removed = Vec::new();
        for cid in changed {
            if self.check(&cid)? != BlockState::Ok {
                warn!(block = %cid, "removing a block whose contents were lost");
                self.remove(&cid)?;
                removed.push(cid);
            }
        }
        Ok(removed)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a block's file is.
    pub fn path_of(&self, cid: &Cid) -> PathBuf {
        self.root.join(relative_path(cid))
    }

    /// Whether the block's file exists (its contents are not checked).
    pub fn contains(&self, cid: &Cid) -> Result<bool, BlockError> {
        match rustix::fs::statat(&self.root_fd, relative_path(cid).as_str(), AtFlags::empty()) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(BlockError::io("looking up", self.path_of(cid), e)),
        }
    }

    fn open_block(&self, cid: &Cid) -> Result<File, BlockError> {
        let open = |name: &str| {
            rustix::fs::openat(
                &self.root_fd,
                name,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )
        };
        match open(relative_path(cid).as_str()) {
            Ok(fd) => Ok(File::from(fd)),
            // A collector may have moved it aside for a moment while it checks again whether
            // anything uses it (see `pins`): it is read from there meanwhile.
            Err(rustix::io::Errno::NOENT) => match open(Self::trash_name(cid).as_str()) {
                Ok(fd) => Ok(File::from(fd)),
                Err(rustix::io::Errno::NOENT) => Err(BlockError::Missing(*cid)),
                Err(e) => Err(BlockError::io(
                    "opening",
                    self.root.join(Self::trash_name(cid)),
                    e,
                )),
            },
            Err(e) => Err(BlockError::io("opening", self.path_of(cid), e)),
        }
    }

    /// Reads a whole block and checks it against its CID.
    pub fn read(&self, cid: &Cid) -> Result<Vec<u8>, BlockError> {
        let file = self.open_block(cid)?;
        // Size the buffer from the file so the block is read in one call (read_to_end on an
        // empty Vec starts small and grows: measured at ~8 reads per block on export).
        let len = file
            .metadata()
            .map_err(|e| BlockError::io("inspecting", self.path_of(cid), e))?
            .len();
        if len > MAX_BLOCK_SIZE as u64 {
            return Err(BlockError::TooLarge {
                cid: *cid,
                path: self.path_of(cid),
            });
        }
        let mut data = Vec::with_capacity(len as usize + 1);
        file.take(MAX_BLOCK_SIZE as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| BlockError::io("reading", self.path_of(cid), e))?;
        if data.len() > MAX_BLOCK_SIZE {
            return Err(BlockError::TooLarge {
                cid: *cid,
                path: self.path_of(cid),
            });
        }
        if !cid.verifies(&data) {
            return Err(BlockError::Corrupt {
                cid: *cid,
                path: self.path_of(cid),
            });
        }
        Ok(data)
    }

    /// Opens a block's file after checking its contents; the file is positioned at 0. This is
    /// what FUSE passthrough hands to the kernel.
    pub fn open_verified(&self, cid: &Cid) -> Result<File, BlockError> {
        let mut file = self.open_block(cid)?;
        let path = || self.path_of(cid);
        let len = file
            .metadata()
            .map_err(|e| BlockError::io("inspecting", path(), e))?
            .len();
        if len > MAX_BLOCK_SIZE as u64 {
            return Err(BlockError::TooLarge {
                cid: *cid,
                path: path(),
            });
        }
        let ok = match cid.hash_fn() {
            pkgchain_dag::cid::HashFn::Blake3 => {
                let mut hasher = blake3::Hasher::new();
                io::copy(&mut (&file).take(len), &mut hasher)
                    .map_err(|e| BlockError::io("reading", path(), e))?;
                hasher.finalize().as_bytes() == cid.digest()
            }
            pkgchain_dag::cid::HashFn::Sha2_256 => {
                let mut data = Vec::with_capacity(len as usize);
                (&file)
                    .take(len)
                    .read_to_end(&mut data)
                    .map_err(|e| BlockError::io("reading", path(), e))?;
                cid.verifies(&data)
            }
        };
        if !ok {
            return Err(BlockError::Corrupt {
                cid: *cid,
                path: path(),
            });
        }
        file.rewind()
            .map_err(|e| BlockError::io("rewinding", path(), e))?;
        Ok(file)
    }

    /// Checks one block without returning its data.
    pub fn check(&self, cid: &Cid) -> Result<BlockState, BlockError> {
        match self.open_verified(cid) {
            Ok(_) => Ok(BlockState::Ok),
            Err(BlockError::Missing(_)) => Ok(BlockState::Missing),
            Err(BlockError::Corrupt { .. } | BlockError::TooLarge { .. }) => {
                Ok(BlockState::Corrupt)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a block's file (for the garbage collector).
    pub fn remove(&self, cid: &Cid) -> Result<(), BlockError> {
        match rustix::fs::unlinkat(&self.root_fd, relative_path(cid).as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(BlockError::io("removing", self.path_of(cid), e)),
        }
    }

    /// The pins directory (`pins` beside the root): pins, temp pins, the collector's lock.
    pub fn pins_dir(&self) -> &Path {
        &self.pins_dir
    }

    fn trash_name(cid: &Cid) -> String {
        format!("{}{TRASH_SUFFIX}", relative_path(cid))
    }

    /// Moves a block into the trash, the collector's first step in deleting it (see [`pins`]).
    /// Returns whether it was there.
    pub fn trash(&self, cid: &Cid) -> Result<bool, BlockError> {
        let moved = rustix::fs::renameat(
            &self.root_fd,
            relative_path(cid).as_str(),
            &self.root_fd,
            Self::trash_name(cid).as_str(),
        );
        match moved {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(BlockError::io("moving to the trash", self.path_of(cid), e)),
        }
    }

    /// Moves a block back from the trash (something came to rely on it meanwhile). If an add
    /// wrote the block again meanwhile, the two are the same bytes.
    pub fn untrash(&self, cid: &Cid) -> Result<(), BlockError> {
        let moved = rustix::fs::renameat(
            &self.root_fd,
            Self::trash_name(cid).as_str(),
            &self.root_fd,
            relative_path(cid).as_str(),
        );
        match moved {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(BlockError::io(
                "moving back from the trash",
                self.path_of(cid),
                e,
            )),
        }
    }

    /// Deletes a block in the trash for good.
    pub fn purge(&self, cid: &Cid) -> Result<(), BlockError> {
        match rustix::fs::unlinkat(
            &self.root_fd,
            Self::trash_name(cid).as_str(),
            AtFlags::empty(),
        ) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(BlockError::io(
                "removing",
                self.root.join(Self::trash_name(cid)),
                e,
            )),
        }
    }

    /// Notes `cids` in the trash journal before they are moved aside, so that a collector
    /// that dies before [`BlockStore::trash_settled`] leaves a list of what to move back.
    pub fn trash_journal_add(&self, cids: &[Cid]) -> Result<(), BlockError> {
        let path = self.pins_dir.join(TRASH_JOURNAL);
        let mut text = String::with_capacity(cids.len() * 64);
        for cid in cids {
            text.push_str(&cid.to_string());
            text.push('\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| BlockError::io("opening", &path, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| BlockError::io("writing", &path, e))
    }

    /// Everything noted in the trash journal is purged or moved back: the journal is
    /// emptied.
    pub fn trash_settled(&self) -> Result<(), BlockError> {
        let path = self.pins_dir.join(TRASH_JOURNAL);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlockError::io("removing", &path, e)),
        }
    }

    /// Moves every block the trash journal lists back: a collector that died between moving
    /// blocks aside and checking them again may have left blocks an add relies on (reads
    /// find them meanwhile). Returns how many came back. A block moved aside whose line did
    /// not reach the journal (a power cut) is left to the next sweep
    /// ([`BlockStore::for_each_block_or_trashed`]).
    pub fn restore_trash(&self) -> Result<usize, BlockError> {
        let mut restored = self.restore_old_trash()?;
        let path = self.pins_dir.join(TRASH_JOURNAL);
        let mut text = Vec::new();
        match File::open(&path) {
            Ok(f) => f
                .take(MAX_TRASH_JOURNAL + 1)
                .read_to_end(&mut text)
                .map_err(|e| BlockError::io("reading", &path, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(restored),
            Err(e) => return Err(BlockError::io("reading", &path, e)),
        };
        if text.len() as u64 > MAX_TRASH_JOURNAL {
            return Err(BlockError::io(
                "reading",
                &path,
                io::Error::other(format!("larger than {MAX_TRASH_JOURNAL} bytes")),
            ));
        }
        for cid in parse_trash_journal(&text) {
            if rustix::fs::statat(
                &self.root_fd,
                Self::trash_name(&cid).as_str(),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .is_ok()
            {
                self.untrash(&cid)?;
                restored += 1;
            }
        }
        self.trash_settled()?;
        Ok(restored)
    }

    /// [`BlockStore::restore_trash`] for the trash directory of older versions.
    fn restore_old_trash(&self) -> Result<usize, BlockError> {
        let dir = self.root.join(OLD_TRASH_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(BlockError::io("listing", &dir, e)),
        };
        let mut restored = 0;
        for entry in entries {
            let entry = entry.map_err(|e| BlockError::io("listing", &dir, e))?;
            let name = entry.file_name();
            let cid = name.to_str().and_then(|n| n.parse::<Cid>().ok());
            let moved = match cid {
                Some(cid) => {
                    let rel = relative_path(&cid);
                    self.make_shard(&rel[..2])?;
                    std::fs::rename(entry.path(), self.root.join(&rel))
                }
                None => {
                    warn!(path = %entry.path().display(), "not a block file; removing it from the trash");
                    std::fs::remove_file(entry.path())
                }
            };
            moved.map_err(|e| BlockError::io("moving back from the trash", entry.path(), e))?;
            restored += usize::from(cid.is_some());
        }
        let _ = std::fs::remove_dir(&dir);
        Ok(restored)
    }

    /// Calls `f` for every block file with its size. Files whose names are not CIDs are skipped
    /// with a warning; blocks in the trash are skipped.
    pub fn for_each_block(
        &self,
        mut f: impl FnMut(Cid, u64) -> Result<(), BlockError>,
    ) -> Result<(), BlockError> {
        self.for_each_block_file(|cid, stat, trashed| {
            if trashed {
                Ok(())
            } else {
                f(cid, stat.st_size as u64)
            }
        })
    }

    /// Calls `f` for every block file with its size and whether it is in the trash (moved
    /// aside by a collector).
    pub fn for_each_block_or_trashed(
        &self,
        mut f: impl FnMut(Cid, u64, bool) -> Result<(), BlockError>,
    ) -> Result<(), BlockError> {
        self.for_each_block_file(|cid, stat, trashed| f(cid, stat.st_size as u64, trashed))
    }

    /// Calls `f` for every block file with its `lstat` and whether it is in the trash, shard
    /// by shard in name order.
    fn for_each_block_file(
        &self,
        mut f: impl FnMut(Cid, &rustix::fs::Stat, bool) -> Result<(), BlockError>,
    ) -> Result<(), BlockError> {
        let entries =
            std::fs::read_dir(&self.root).map_err(|e| BlockError::io("listing", &self.root, e))?;
        let mut shards: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| BlockError::io("listing", &self.root, e))?;
            let name = entry.file_name();
            if name.as_bytes().len() == 2 {
                shards.push(entry.path());
            }
        }
        shards.sort();
        for shard in shards {
            let entries =
                std::fs::read_dir(&shard).map_err(|e| BlockError::io("listing", &shard, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| BlockError::io("listing", &shard, e))?;
                let name = entry.file_name();
                let name = name.to_str().unwrap_or_default();
                let (name, trashed) = match name.strip_suffix(TRASH_SUFFIX) {
                    Some(cid) => (cid, true),
                    None => (name, false),
                };
                let Ok(cid) = name.parse::<Cid>() else {
                    warn!(path = %entry.path().display(), "not a block file");
                    continue;
                };
                let stat = rustix::fs::lstat(entry.path())
                    .map_err(|e| BlockError::io("inspecting", entry.path(), e))?;
                f(cid, &stat, trashed)?;
            }
        }
        Ok(())
    }

    /// This process's staging directory, made on first use.
    fn staging_dir(&self) -> Result<&(PathBuf, OwnedFd), BlockError> {
        if let Some(dir) = self.process_staging.get() {
            return Ok(dir);
        }
        let name = format!("{}-{}", std::process::id(), unique_suffix());
        rustix::fs::mkdirat(&self.staging_fd, name.as_str(), Mode::from_raw_mode(0o700))
            .map_err(|e| BlockError::io("creating", self.staging.join(&name), e))?;
        let dir = self.staging.join(&name);
        let dir_fd = rustix::fs::openat(
            &self.staging_fd,
            name.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| BlockError::io("opening", &dir, e))?;
        // Two threads may race here; the loser's directory is removed again.
        match self.process_staging.set((dir, dir_fd)) {
            Ok(()) => {}
            Err((dir, _)) => {
                let _ = std::fs::remove_dir(&dir);
            }
        }
        self.process_staging
            .get()
            .ok_or_else(|| BlockError::io("creating", &self.staging, io::ErrorKind::Other))
    }

    /// A new write batch.
    pub fn batch(&self) -> Result<WriteBatch<'_>, BlockError> {
        let seq = BATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        self.staging_dir()?;
        // Unnamed files stay open until commit: keep well inside the open-file limit.
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1024);
        let max_blocks = usize::try_from(nofile / 4)
            .unwrap_or(BATCH_MAX_BLOCKS)
            .clamp(16, BATCH_MAX_BLOCKS);
        Ok(WriteBatch {
            store: self,
            seq,
            staged: Vec::new(),
            staged_bytes: 0,
            tmpfile: true,
            max_blocks,
            seen: HashSet::new(),
            relies_on_existing: false,
            replace_corrupt: false,
            written_blocks: 0,
            written_bytes: 0,
            lease: self.temp_pins.lease(),
        })
    }

    /// Removes staging directories of processes that no longer run.
    fn remove_dead_staging(&self) {
        let Ok(entries) = std::fs::read_dir(&self.staging) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<i32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                debug!(path = %entry.path().display(), "removing stale staging");
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    warn!(path = %entry.path().display(), error = %e, "cannot remove stale staging");
                }
            }
        }
    }
}

/// DAG walks read through the store: every block is checked against its CID.
impl pkgchain_dag::walk::BlockGet for BlockStore {
    type Error = BlockError;
    fn get(&self, cid: &Cid) -> Result<Vec<u8>, BlockError> {
        self.read(cid)
    }
}

fn unique_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Blocks being written; see the crate documentation for the durability protocol.
pub struct WriteBatch<'s> {
    store: &'s BlockStore,
    /// Names this batch's numbered staging files apart from other batches'.
    seq: u64,
    /// Written but not yet durable under their names: with the open unnamed file (`O_TMPFILE`)
    /// or, where the file system lacks unnamed files, as a numbered file in the staging dir.
    staged: Vec<(Cid, Option<OwnedFd>)>,
    staged_bytes: u64,
    /// Whether unnamed temporary files work here (cleared at the first refusal).
    tmpfile: bool,
    /// Blocks after which the batch commits on its own (bounded by open-file limits).
    max_blocks: usize,
    /// CIDs staged since the last commit (later ones are found on disk).
    seen: HashSet<Cid>,
    /// A block this batch relies on was already on disk: another writer may have linked it
    /// without having made its name durable yet, so commit must sync even with nothing staged.
    relies_on_existing: bool,
    /// Blocks already on disk are read and checked; corrupt ones are written again (repair).
    replace_corrupt: bool,
    written_blocks: u64,
    written_bytes: u64,
    /// Pins every block put, for as long as the batch or a lease taken from it lives.
    lease: pins::PinLease,
}

impl WriteBatch<'_> {
    /// A lease on the pins of every block this batch was given: hold it until the paths made
    /// of them are registered.
    pub fn lease(&self) -> pins::PinLease {
        self.lease.clone()
    }

    /// From now on, a block already on disk is read and checked against its CID, and written
    /// again if it is corrupt (what repairing a path needs: otherwise a block on disk is
    /// trusted, whatever it holds).
    pub fn replace_corrupt(&mut self) {
        self.replace_corrupt = true;
    }

    /// Adds a block. Returns whether it was new (not on disk and not staged).
    ///
    /// `data` must hash to `cid`; callers compute the CID from the data they pass.
    pub fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<bool, BlockError> {
        debug_assert!(cid.verifies(data));
        if self.seen.contains(cid) {
            return Ok(false);
        }
        // Pinned before it is looked for: see `pins`.
        self.lease.pin(cid)?;
        if self.store.contains(cid)? {
            if !self.replace_corrupt || self.store.check(cid)? == BlockState::Ok {
                self.relies_on_existing = true;
                return Ok(false);
            }
            warn!(%cid, "replacing a corrupt block");
            self.store.remove(cid)?;
        }
        let (fd, kept) = self.create_staging()?;
        let mut file = File::from(fd);
        file.write_all(data)
            .map_err(|e| BlockError::io("writing", self.dir(), e))?;
        // Start writing the block to disk now, without waiting (`POSIX_FADV_DONTNEED` starts
        // writeback of dirty pages; pages still being written stay cached). The disk then works
        // while the next blocks are hashed, and the commit's `syncfs` finds little left to do:
        // measured, it otherwise waited for the whole batch at the end.
        // Deferred durability leaves the pages to writeback, as Nix does with its store files.
        if self.store.durability == Durability::EachCommit {
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        }
        // An unnamed file stays open until it is linked into place at commit.
        let kept = kept.then(|| OwnedFd::from(file));
        self.seen.insert(*cid);
        self.staged.push((*cid, kept));
        self.staged_bytes += data.len() as u64;
        self.written_blocks += 1;
        self.written_bytes += data.len() as u64;
        if self.staged.len() >= self.max_blocks || self.staged_bytes >= BATCH_MAX_BYTES {
            self.commit()?;
        }
        Ok(true)
    }

    /// A file to write the next block into; `true` if it is unnamed (to be linked at commit).
    fn create_staging(&mut self) -> Result<(OwnedFd, bool), BlockError> {
        if self.tmpfile {
            match rustix::fs::openat(
                self.dir_fd(),
                ".",
                OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o444),
            ) {
                Ok(fd) => return Ok((fd, true)),
                Err(
                    rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::ISDIR
                    | rustix::io::Errno::INVAL,
                ) => {
                    debug!("no O_TMPFILE here; staging named files");
                    self.tmpfile = false;
                }
                Err(e) => {
                    return Err(BlockError::io("creating an unnamed file in", self.dir(), e));
                }
            }
        }
        let name = self.staged_name(self.staged.len());
        let fd = rustix::fs::openat(
            self.dir_fd(),
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o444),
        )
        .map_err(|e| BlockError::io("creating", self.dir().join(&name), e))?;
        Ok((fd, false))
    }

    /// Puts every staged block under its final name: durable when this returns with
    /// [`Durability::EachCommit`], at the next [`BlockStore::flush`] with
    /// [`Durability::Deferred`].
    pub fn commit(&mut self) -> Result<(), BlockError> {
        let deferred = self.store.durability == Durability::Deferred;
        if self.staged.is_empty() {
            if deferred {
                if std::mem::take(&mut self.relies_on_existing) {
                    // The block may be another batch's, linked but not synced: the path about
                    // to be registered on it must be covered by the marker too.
                    drop(self.store.mark_unsynced()?);
                }
                return Ok(());
            }
            if std::mem::take(&mut self.relies_on_existing) {
                // Cheap when nothing is dirty; otherwise it is another batch's names, which
                // this batch's caller is about to register paths on.
                rustix::fs::syncfs(&self.store.root_fd)
                    .map_err(|e| BlockError::io("syncing", &self.store.root, e))?;
            }
            return Ok(());
        }
        // With deferred durability: the marker is on disk before any name that may outlive its
        // contents, and a flush keeps it while these are being linked.
        let _linking = if deferred {
            Some(self.store.mark_unsynced()?)
        } else {
            // 1. Contents durable.
            rustix::fs::syncfs(&self.store.root_fd)
                .map_err(|e| BlockError::io("syncing", &self.store.root, e))?;
            None
        };
        // 2. Names appear.
        for (i, (cid, fd)) in self.staged.iter().enumerate() {
            let rel = relative_path(cid);
            let place = || match fd {
                Some(fd) => link_unnamed(fd, &self.store.root_fd, &rel),
                None => rustix::fs::renameat(
                    self.dir_fd(),
                    self.staged_name(i).as_str(),
                    &self.store.root_fd,
                    rel.as_str(),
                ),
            };
            let mut placed = place();
            if placed == Err(rustix::io::Errno::NOENT) {
                // The shard directory is missing (open makes them all; someone removed it).
                self.store.make_shard(&rel[..2])?;
                placed = place();
            }
            match placed {
                // Another writer placed the same block meanwhile: same bytes, nothing to do.
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => {
                    return Err(BlockError::io(
                        "putting into place",
                        self.store.root.join(&rel),
                        e,
                    ));
                }
            }
        }
        // 3. Names durable.
        if !deferred {
            rustix::fs::syncfs(&self.store.root_fd)
                .map_err(|e| BlockError::io("syncing", &self.store.root, e))?;
        }
        debug!(
            blocks = self.staged.len(),
            bytes = self.staged_bytes,
            "committed blocks"
        );
        self.staged.clear();
        self.seen.clear();
        self.relies_on_existing = false;
        self.staged_bytes = 0;
        Ok(())
    }

    /// The process's staging directory (made when the batch was).
    fn dir(&self) -> &Path {
        self.store
            .process_staging
            .get()
            .map_or(self.store.staging.as_path(), |(dir, _)| dir.as_path())
    }

    fn dir_fd(&self) -> &OwnedFd {
        self.store
            .process_staging
            .get()
            .map_or(&self.store.staging_fd, |(_, fd)| fd)
    }

    /// The name of the `i`th staged file where the file system has no unnamed files.
    fn staged_name(&self, i: usize) -> String {
        format!("{}-{i}", self.seq)
    }

    /// Blocks and bytes this batch wrote (new blocks only).
    pub fn written(&self) -> (u64, u64) {
        (self.written_blocks, self.written_bytes)
    }

    /// Stages named files as on a file system without `O_TMPFILE` (for tests of that path).
    #[cfg(test)]
    fn force_named_staging(&mut self) {
        self.tmpfile = false;
    }
}

/// Whether `linkat(AT_EMPTY_PATH)` works here (it needs `CAP_DAC_READ_SEARCH`); cleared at
/// the first refusal.
static EMPTY_PATH_LINKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Gives an unnamed (`O_TMPFILE`) file a name: with `AT_EMPTY_PATH` where the process may (a
/// daemon running as root; no path lookup), else through `/proc/self/fd` (any user).
fn link_unnamed(fd: &OwnedFd, dir: &OwnedFd, name: &str) -> rustix::io::Result<()> {
    use std::os::fd::AsRawFd;
    if EMPTY_PATH_LINKS.load(Ordering::Relaxed) {
        match rustix::fs::linkat(fd, "", dir, name, AtFlags::EMPTY_PATH) {
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::PERM)
                if name.split('/').next().is_some_and(|shard| {
                    rustix::fs::statat(dir, shard, AtFlags::empty()).is_ok()
                }) =>
            {
                // Refused for want of the capability (the directory is there).
                EMPTY_PATH_LINKS.store(false, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )
}

impl Drop for WriteBatch<'_> {
    fn drop(&mut self) {
        // Uncommitted staging is garbage (unnamed files vanish when closed); committed blocks
        // stay (unreferenced until registered).
        for i in 0..self.staged.len() {
            if self.staged[i].1.is_none() {
                let name = self.staged_name(i);
                if let Err(e) = rustix::fs::unlinkat(self.dir_fd(), name.as_str(), AtFlags::empty())
                {
                    warn!(path = %self.dir().join(&name).display(), error = %e, "cannot remove staging");
                }
            }
        }
    }
}

impl Drop for BlockStore {
    fn drop(&mut self) {
        if let Some((dir, _)) = self.process_staging.get()
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            warn!(path = %dir.display(), error = %e, "cannot remove staging directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use pkgchain_dag::Codec;

    use super::*;

    #[test]
    fn trash_moves_aside_restores_and_purges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(&dir.path().join("blocks")).expect("open");
        let data = b"a block the collector looks at";
        let cid = Cid::of(Codec::Raw, data);
        let mut batch = store.batch().expect("batch");
        batch.put(&cid, data).expect("put");
        batch.commit().expect("commit");
        drop(batch);
        assert!(store.trash(&cid).expect("trash"));
        assert!(!store.contains(&cid).expect("contains"));
        assert!(!store.trash(&cid).expect("trash again"));
        // Readers still find it while the collector looks again.
        assert_eq!(store.read(&cid).expect("read from the trash"), data);
        store.untrash(&cid).expect("untrash");
        assert_eq!(store.read(&cid).expect("read"), data);
        // A collector that died with blocks in the trash: those its journal lists come back
        // (an unfinished last line is ignored); the sweep's walk sees the others as trashed.
        let other = Cid::of(Codec::Raw, b"moved aside, its journal line lost");
        let mut batch = store.batch().expect("batch");
        batch
            .put(&other, b"moved aside, its journal line lost")
            .expect("put");
        batch.commit().expect("commit");
        drop(batch);
        store.trash_journal_add(&[cid]).expect("journal");
        std::fs::OpenOptions::new()
            .append(true)
            .open(store.pins_dir().join(TRASH_JOURNAL))
            .and_then(|mut f| f.write_all(b"bafk"))
            .expect("unfinished line");
        store.trash(&cid).expect("trash");
        store.trash(&other).expect("trash");
        assert_eq!(store.restore_trash().expect("restore"), 1);
        assert!(store.contains(&cid).expect("contains"));
        assert!(!store.contains(&other).expect("contains"));
        assert!(!store.pins_dir().join(TRASH_JOURNAL).exists());
        let mut seen = Vec::new();
        store
            .for_each_block_or_trashed(|c, _, trashed| {
                seen.push((c, trashed));
                Ok(())
            })
            .expect("walk");
        seen.sort();
        let mut expected = vec![(cid, false), (other, true)];
        expected.sort();
        assert_eq!(seen, expected);
        let mut plain = Vec::new();
        store
            .for_each_block(|c, _| {
                plain.push(c);
                Ok(())
            })
            .expect("walk");
        assert_eq!(plain, vec![cid]);
        store.purge(&other).expect("purge");
        store.trash(&cid).expect("trash");
        store.purge(&cid).expect("purge");
        assert_eq!(store.restore_trash().expect("restore"), 0);
        assert!(!store.contains(&cid).expect("contains"));
        assert!(matches!(store.read(&cid), Err(BlockError::Missing(_))));
    }

    /// Blocks an older version's collector left in `<root>/.trash` come back too.
    #[test]
    fn old_trash_directory_is_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(&dir.path().join("blocks")).expect("open");
        let data = b"left in the old trash";
        let cid = Cid::of(Codec::Raw, data);
        let old = dir.path().join("blocks").join(OLD_TRASH_DIR);
        std::fs::create_dir(&old).expect("mkdir");
        std::fs::write(old.join(cid.to_string()), data).expect("write");
        std::fs::write(old.join("not-a-cid"), b"x").expect("write");
        assert_eq!(store.restore_trash().expect("restore"), 1);
        assert_eq!(store.read(&cid).expect("read"), data);
        assert!(!old.exists());
    }

    #[test]
    fn a_batch_pins_what_it_puts_while_it_or_its_lease_lives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(&dir.path().join("blocks")).expect("open");
        let (old, new) = (b"already on disk".as_slice(), b"written now".as_slice());
        let (old_cid, new_cid) = (Cid::of(Codec::Raw, old), Cid::of(Codec::Raw, new));
        let mut first = store.batch().expect("batch");
        first.put(&old_cid, old).expect("put");
        first.commit().expect("commit");
        drop(first);
        assert!(
            pins::read_temp_pins(store.pins_dir())
                .expect("pins")
                .is_empty()
        );
        let mut batch = store.batch().expect("batch");
        assert!(!batch.put(&old_cid, old).expect("put"));
        assert!(batch.put(&new_cid, new).expect("put"));
        batch.commit().expect("commit");
        let lease = batch.lease();
        drop(batch);
        let pinned = pins::read_temp_pins(store.pins_dir()).expect("pins");
        assert_eq!(pinned, HashSet::from([old_cid, new_cid]));
        drop(lease);
        assert!(
            pins::read_temp_pins(store.pins_dir())
                .expect("pins")
                .is_empty()
        );
    }

    #[test]
    fn write_read_and_dedup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(&dir.path().join("blocks")).expect("open");
        let cid = Cid::of(Codec::Raw, b"hello");
        assert!(!store.contains(&cid).expect("contains"));
        let mut batch = store.batch().expect("batch");
        assert!(batch.put(&cid, b"hello").expect("put"));
        assert!(!batch.put(&cid, b"hello").expect("put again"));
        // Staged blocks are not visible before commit.
        assert!(!store.contains(&cid).expect("contains"));
        batch.commit().expect("commit");
        assert!(store.contains(&cid).expect("contains"));
        assert_eq!(store.read(&cid).expect("read"), b"hello");
        let meta = std::fs::metadata(store.path_of(&cid)).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        let mut again = store.batch().expect("batch");
        assert!(!again.put(&cid, b"hello").expect("put existing"));
        drop(again);
        drop(batch);
        // The process's staging directory stays while the store is open, empty.
        for entry in std::fs::read_dir(dir.path().join("blocks/.tmp")).expect("staging") {
            let entry = entry.expect("entry");
            let left: Vec<_> = std::fs::read_dir(entry.path()).expect("dir").collect();
            assert!(left.is_empty(), "staging left behind: {left:?}");
        }
        let mut seen = Vec::new();
        store
            .for_each_block(|c, size| {
                seen.push((c, size));
                Ok(())
            })
            .expect("list");
        assert_eq!(seen, vec![(cid, 5)]);
    }

    #[test]
    fn named_staging_and_unnamed_files_give_the_same_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocks: Vec<Vec<u8>> = (0..300u32)
            .map(|i| i.to_le_bytes().repeat(i as usize % 7 + 1))
            .collect();
        let mut listings = Vec::new();
        for named in [false, true] {
            let store = BlockStore::open(&dir.path().join(format!("s{named}"))).expect("open");
            let mut batch = store.batch().expect("batch");
            if named {
                batch.force_named_staging();
            }
            batch.max_blocks = 64; // several commits
            for b in &blocks {
                batch.put(&Cid::of(Codec::Raw, b), b).expect("put");
            }
            batch.commit().expect("commit");
            drop(batch);
            let mut listed = Vec::new();
            store
                .for_each_block(|c, size| {
                    listed.push((c, size));
                    Ok(())
                })
                .expect("list");
            listed.sort();
            for (cid, _) in &listed {
                assert_eq!(store.check(cid).expect("check"), BlockState::Ok);
            }
            listings.push(listed);
        }
        assert_eq!(listings[0], listings[1]);
        assert_eq!(listings[0].len(), blocks.len());
    }

    /// Deferred durability: a commit links at once under a durable marker; a flush removes
    /// it; a store reopened with the marker finds and removes blocks whose contents were lost,
    /// and keeps intact ones.
    #[test]
    fn deferred_commits_leave_a_marker_until_flushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open_with(dir.path(), Durability::Deferred).expect("open");
        assert_eq!(store.unsynced_since().expect("marker"), None);
        assert!(!store.flush().expect("flush"), "nothing to flush yet");
        let kept = Cid::of(Codec::Raw, b"kept");
        let lost = Cid::of(Codec::Raw, b"lost in the crash");
        let mut batch = store.batch().expect("batch");
        batch.put(&kept, b"kept").expect("put");
        batch.put(&lost, b"lost in the crash").expect("put");
        batch.commit().expect("commit");
        drop(batch);
        let since = store.unsynced_since().expect("marker").expect("marked");
        assert!(store.contains(&kept).expect("contains"));
        assert!(store.flush().expect("flush"));
        assert_eq!(store.unsynced_since().expect("marker"), None);

        // As after a crash: a marker, and a named block whose contents did not reach the disk.
        let mut batch = store.batch().expect("batch");
        let third = Cid::of(Codec::Raw, b"third");
        batch.put(&third, b"third").expect("put");
        batch.commit().expect("commit");
        let path = store.path_of(&lost);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::write(&path, b"").expect("truncate");
        drop(batch);
        drop(store);
        let store = BlockStore::open_with(dir.path(), Durability::Deferred).expect("reopen");
        let since_again = store
            .unsynced_since()
            .expect("marker")
            .expect("still marked");
        assert!(since_again >= since);
        let removed = store
            .remove_damaged_since(since - std::time::Duration::from_secs(5))
            .expect("recover");
        assert_eq!(removed, vec![lost]);
        assert_eq!(store.check(&kept).expect("check"), BlockState::Ok);
        assert_eq!(store.check(&third).expect("check"), BlockState::Ok);
        assert_eq!(store.check(&lost).expect("check"), BlockState::Missing);
        assert!(store.flush().expect("flush"));
        assert_eq!(store.unsynced_since().expect("marker"), None);
    }

    /// Opening makes every shard a block can land in, so adds never make directories.
    #[test]
    fn open_makes_every_shard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(dir.path()).expect("open");
        let shards: HashSet<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 2)
            .collect();
        assert_eq!(shards.len(), 1024);
        for i in 0u32..2000 {
            let cid = Cid::of(Codec::Raw, &i.to_le_bytes());
            let rel = relative_path(&cid);
            assert!(shards.contains(&rel[..2]), "{rel}");
        }
        drop(store);
    }

    /// Unnamed files are linked through /proc where `AT_EMPTY_PATH` is not allowed (an
    /// ordinary user); as root both ways work, and this forces the second.
    #[test]
    fn unnamed_files_link_through_proc_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(dir.path()).expect("open");
        let fd = rustix::fs::openat(
            &store.root_fd,
            ".",
            OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o444),
        )
        .expect("tmpfile");
        rustix::io::write(&fd, b"through proc").expect("write");
        let was = EMPTY_PATH_LINKS.swap(false, Ordering::Relaxed);
        let linked = link_unnamed(&fd, &store.root_fd, "aa/linked");
        EMPTY_PATH_LINKS.store(was, Ordering::Relaxed);
        linked.expect("link through /proc");
        assert_eq!(
            std::fs::read(dir.path().join("aa/linked")).expect("read"),
            b"through proc"
        );
    }

    /// A flush while a deferred commit is between marking and linking keeps the marker; the
    /// next flush after the commit removes it.
    #[test]
    fn a_flush_during_a_commit_keeps_the_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open_with(dir.path(), Durability::Deferred).expect("open");
        let linking = store.mark_unsynced().expect("mark");
        assert!(store.flush().expect("flush"));
        assert!(
            store.unsynced_since().expect("marker").is_some(),
            "removed mid-commit"
        );
        drop(linking);
        assert!(store.flush().expect("flush"));
        assert_eq!(store.unsynced_since().expect("marker"), None);
    }

    #[test]
    fn corruption_and_absence_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(dir.path()).expect("open");
        let cid = Cid::of(Codec::Raw, b"precious");
        let mut batch = store.batch().expect("batch");
        batch.put(&cid, b"precious").expect("put");
        batch.commit().expect("commit");
        let path = store.path_of(&cid);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[0] ^= 1;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::write(&path, &bytes).expect("corrupt");
        assert!(matches!(store.read(&cid), Err(BlockError::Corrupt { .. })));
        assert!(matches!(
            store.open_verified(&cid),
            Err(BlockError::Corrupt { .. })
        ));
        assert_eq!(store.check(&cid).expect("check"), BlockState::Corrupt);
        let other = Cid::of(Codec::Raw, b"absent");
        assert!(matches!(store.read(&other), Err(BlockError::Missing(_))));
        assert_eq!(store.check(&other).expect("check"), BlockState::Missing);
        store.remove(&cid).expect("remove");
        assert_eq!(store.check(&cid).expect("check"), BlockState::Missing);
    }

    #[test]
    fn a_repairing_batch_rewrites_corrupt_blocks_and_trusts_sound_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::open(dir.path()).expect("open");
        let bad = Cid::of(Codec::Raw, b"to be damaged");
        let good = Cid::of(Codec::Raw, b"left alone");
        let mut batch = store.batch().expect("batch");
        batch.put(&bad, b"to be damaged").expect("put");
        batch.put(&good, b"left alone").expect("put");
        batch.commit().expect("commit");
        let path = store.path_of(&bad);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::write(&path, b"damaged").expect("corrupt");
        // An ordinary batch trusts what is on disk.
        let mut plain = store.batch().expect("batch");
        assert!(!plain.put(&bad, b"to be damaged").expect("put"));
        plain.commit().expect("commit");
        assert_eq!(store.check(&bad).expect("check"), BlockState::Corrupt);
        // A repairing one checks it and writes the corrupt block again, and only that one.
        let mut repairing = store.batch().expect("batch");
        repairing.replace_corrupt();
        assert!(repairing.put(&bad, b"to be damaged").expect("put"));
        assert!(!repairing.put(&good, b"left alone").expect("put"));
        repairing.commit().expect("commit");
        assert_eq!(store.check(&bad).expect("check"), BlockState::Ok);
        assert_eq!(store.read(&bad).expect("read"), b"to be damaged");
        assert_eq!(store.check(&good).expect("check"), BlockState::Ok);
    }

    #[test]
    fn dead_staging_is_removed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = dir.path().join(".tmp/999999999-0-0");
        std::fs::create_dir_all(&stale).expect("mkdir");
        std::fs::write(stale.join("0"), b"half").expect("write");
        let live = dir.path().join(format!(".tmp/{}-x-0", std::process::id()));
        std::fs::create_dir_all(&live).expect("mkdir");
        BlockStore::open(dir.path()).expect("open");
        assert!(!stale.exists());
        assert!(live.exists(), "a live process's staging must stay");
    }
}
