//! The materialised view: real read-only files in the store directory, written from blocks.
//!
//! Used where FUSE cannot be mounted (an ordinary user without `fusermount3`, a container
//! without `/dev/fuse`). Each valid path is written into a hidden staging name in the store
//! directory and renamed into place when complete, so a path is either absent or whole. Files
//! get Nix's modes (`0444`, `0555` when executable, directories `0555`) and mtime 1. A
//! non-executable file stored as one block is hard-linked to its block file (which already has
//! mode `0444` and mtime 1), so it costs no space; across file systems it is copied.
//!
//! Every block is checked against its CID while the path is written. Once written, files are
//! plain files: later corruption of a hard-linked block shows in the file and is found by
//! `pkgchain store verify`, not by reads (no read path runs through this process).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pkgchain_blockstore::BlockError;
use pkgchain_dag::Cid;
use pkgchain_dag::walk::{DagWalker, WalkError, WalkEvent};
use pkgchain_store::Store;
use pkgchain_store_model::store_path::StorePath;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use thiserror::Error;
use tracing::{debug, info, info_span, warn};

/// Prefix of staging names in the store directory.
const STAGING_PREFIX: &str = ".pkgchain-staging-";

/// Why materialising failed.
#[derive(Debug, Error)]
pub enum MaterialiseError {
    /// A file system operation on the store directory failed.
    #[error("{op} '{path}': {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Reading the DAG failed.
    #[error("path '{path}': {source}")]
    Dag {
        /// The store path.
        path: String,
        /// Why.
        source: WalkError<BlockError>,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] pkgchain_store::StoreError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] pkgchain_store_db::DbError),
}

fn io(op: &'static str, path: &Path, e: impl Into<std::io::Error>) -> MaterialiseError {
    MaterialiseError::Io {
        op,
        path: path.to_owned(),
        source: e.into(),
    }
}

const STORE_TIMES: Timestamps = Timestamps {
    last_access: Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    },
    last_modification: Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    },
};

fn cname(name: &[u8], at: &Path) -> Result<CString, MaterialiseError> {
    CString::new(name).map_err(|e| io("naming", at, std::io::Error::other(e)))
}

/// Writes one valid path (DAG rooted at `root`) into `store_dir` as `base_name`.
/// Does nothing if it is already there.
pub fn materialise_path(
    store: &Store,
    store_dir: &Path,
    base_name: &str,
    root: &Cid,
) -> Result<bool, MaterialiseError> {
    let final_path = store_dir.join(base_name);
    if final_path.symlink_metadata().is_ok() {
        return Ok(false);
    }
    let span = info_span!("materialise", path = %base_name);
    let _enter = span.enter();
    let dir_fd = rustix::fs::open(
        store_dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("opening", store_dir, e))?;
    // Unique per call: two connections of one daemon may materialise the same path at once.
    static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = format!("{STAGING_PREFIX}{}-{n}-{base_name}", std::process::id());
    let staging_path = store_dir.join(&staging);
    if staging_path.symlink_metadata().is_ok() {
        remove_tree(&staging_path)?;
    }
    let result = write_tree(store, &dir_fd, store_dir, &staging, root, base_name);
    if let Err(e) = result {
        // Leave nothing half-written behind.
        if let Err(cleanup) = remove_tree(&staging_path) {
            warn!(error = %cleanup, "cannot remove staging after a failed materialisation");
        }
        return Err(e);
    }
    match rustix::fs::renameat(&dir_fd, staging.as_str(), &dir_fd, base_name) {
        Ok(()) => {}
        // Someone else put the same path in place first (a directory is not replaced): theirs
        // has the same contents.
        Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST)
            if final_path.symlink_metadata().is_ok() =>
        {
            remove_tree(&staging_path)?;
            return Ok(false);
        }
        Err(e) => return Err(io("renaming into place", &final_path, e)),
    }
    debug!("materialised");
    Ok(true)
}

/// Writes the DAG rooted at `root` as `staging` inside the store directory.
fn write_tree(
    store: &Store,
    dir_fd: &OwnedFd,
    store_dir: &Path,
    staging: &str,
    root: &Cid,
    base_name: &str,
) -> Result<(), MaterialiseError> {
    let mut walker = DagWalker::new(store.blocks(), *root, pkgchain_store::export::MAX_DAG_DEPTH);
    // (directory fd, path) of every open directory; the root's parent is the store dir.
    let mut dirs: Vec<(OwnedFd, PathBuf)> = Vec::new();
    let mut file: Option<(File, PathBuf)> = None;
    let mut skipping_linked = false;
    let dag_err = |source| MaterialiseError::Dag {
        path: base_name.to_owned(),
        source,
    };
    while let Some(event) = walker.next_event().map_err(dag_err)? {
        let (parent_fd, parent_path) = match dirs.last() {
            Some((fd, p)) => (fd, p.clone()),
            None => (dir_fd, store_dir.to_owned()),
        };
        let entry = |name: Option<&[u8]>| -> Vec<u8> {
            name.map_or_else(|| staging.as_bytes().to_vec(), <[u8]>::to_vec)
        };
        match event {
            WalkEvent::File {
                name,
                executable,
                single_block,
                ..
            } => {
                let n = entry(name);
                let path = parent_path.join(OsStr::from_bytes(&n));
                let c = cname(&n, &path)?;
                if let (Some(block), false) = (single_block, executable) {
                    let block_path = store.blocks().path_of(&block);
                    // Store files have mtime 1; the block file is the same inode once linked.
                    let stamped = rustix::fs::utimensat(
                        rustix::fs::CWD,
                        &block_path,
                        &STORE_TIMES,
                        AtFlags::empty(),
                    );
                    match stamped.and_then(|()| {
                        rustix::fs::linkat(
                            rustix::fs::CWD,
                            &block_path,
                            parent_fd,
                            c.as_c_str(),
                            AtFlags::empty(),
                        )
                    }) {
                        Ok(()) => {
                            skipping_linked = true;
                            continue;
                        }
                        Err(e) => debug!(error = %e, "hard link impossible; copying"),
                    }
                }
                let fd = rustix::fs::openat(
                    parent_fd,
                    c.as_c_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::CLOEXEC
                        | OFlags::NOFOLLOW,
                    Mode::from_raw_mode(if executable { 0o555 } else { 0o444 }),
                )
                .map_err(|e| io("creating", &path, e))?;
                file = Some((File::from(fd), path));
            }
            WalkEvent::FileChunk(data) => {
                if let Some((f, path)) = file.as_mut() {
                    f.write_all(data).map_err(|e| io("writing", path, e))?;
                }
            }
            WalkEvent::ChunkRef { cid, .. } => {
                // Only a deferring walker hands out chunk references; this one reads them.
                return Err(MaterialiseError::Dag {
                    path: base_name.to_owned(),
                    source: WalkError::Structure {
                        cid,
                        reason: "unexpected chunk reference".into(),
                    },
                });
            }
            WalkEvent::FileEnd => {
                if skipping_linked {
                    skipping_linked = false;
                } else if let Some((f, path)) = file.take() {
                    rustix::fs::futimens(&f, &STORE_TIMES)
                        .map_err(|e| io("setting times of", &path, e))?;
                }
            }
            WalkEvent::Symlink { name, target } => {
                let n = entry(name);
                let path = parent_path.join(OsStr::from_bytes(&n));
                let c = cname(&n, &path)?;
                let t = cname(target, &path)?;
                rustix::fs::symlinkat(t.as_c_str(), parent_fd, c.as_c_str())
                    .map_err(|e| io("creating symlink", &path, e))?;
                rustix::fs::utimensat(
                    parent_fd,
                    c.as_c_str(),
                    &STORE_TIMES,
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io("setting times of", &path, e))?;
            }
            WalkEvent::DirectoryStart { name } => {
                let n = entry(name);
                let path = parent_path.join(OsStr::from_bytes(&n));
                let c = cname(&n, &path)?;
                rustix::fs::mkdirat(parent_fd, c.as_c_str(), Mode::from_raw_mode(0o755))
                    .map_err(|e| io("creating directory", &path, e))?;
                let fd = rustix::fs::openat(
                    parent_fd,
                    c.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io("opening", &path, e))?;
                dirs.push((fd, path));
            }
            WalkEvent::DirectoryEnd => {
                if let Some((fd, path)) = dirs.pop() {
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o555))
                        .map_err(|e| io("setting mode of", &path, e))?;
                    rustix::fs::futimens(&fd, &STORE_TIMES)
                        .map_err(|e| io("setting times of", &path, e))?;
                }
            }
        }
    }
    Ok(())
}

/// Makes a tree writable again and removes it (staging leftovers, paths no longer valid).
pub fn remove_tree(path: &Path) -> Result<(), MaterialiseError> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("inspecting", path, e)),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path).map_err(|e| io("removing", path, e));
    }
    // Iteratively grant write permission on every directory, then delete.
    let mut pending = vec![path.to_owned()];
    while let Some(dir) = pending.pop() {
        rustix::fs::chmod(&dir, Mode::from_raw_mode(0o755))
            .map_err(|e| io("setting mode of", &dir, e))?;
        for entry in std::fs::read_dir(&dir).map_err(|e| io("listing", &dir, e))? {
            let entry = entry.map_err(|e| io("listing", &dir, e))?;
            if entry
                .file_type()
                .map_err(|e| io("inspecting", &entry.path(), e))?
                .is_dir()
            {
                pending.push(entry.path());
            }
        }
    }
    std::fs::remove_dir_all(path).map_err(|e| io("removing", path, e))
}

/// What [`sync_store_dir`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Paths written.
    pub added: u64,
    /// Entries removed (staging leftovers and paths that are no longer valid).
    pub removed: u64,
    /// Valid paths that could not be written (each logged with its error).
    pub failed: u64,
}

/// Brings the store directory in line with the database: writes missing valid paths, removes
/// staging leftovers and store-path entries that are not valid.
pub async fn sync_store_dir(
    store: &Store,
    store_dir: &Path,
) -> Result<SyncReport, MaterialiseError> {
    std::fs::create_dir_all(store_dir).map_err(|e| io("creating", store_dir, e))?;
    let roots = store.db().all_roots().await?;
    let valid: std::collections::HashSet<&str> = roots.iter().map(|(n, _)| n.as_str()).collect();
    let mut report = SyncReport::default();
    for entry in std::fs::read_dir(store_dir).map_err(|e| io("listing", store_dir, e))? {
        let entry = entry.map_err(|e| io("listing", store_dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale_staging = name.starts_with(STAGING_PREFIX)
            && name[STAGING_PREFIX.len()..]
                .split('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        let invalid_path = StorePath::from_base_name(name).is_ok() && !valid.contains(name);
        if stale_staging || invalid_path {
            remove_tree(&entry.path())?;
            report.removed += 1;
        }
    }
    for (name, root) in &roots {
        let store2 = store.clone();
        let dir = store_dir.to_owned();
        let name2 = name.clone();
        let root = *root;
        let added =
            tokio::task::spawn_blocking(move || materialise_path(&store2, &dir, &name2, &root))
                .await
                .map_err(|e| pkgchain_store::StoreError::Task(e.to_string()))?;
        match added {
            Ok(true) => report.added += 1,
            Ok(false) => {}
            Err(e) => {
                warn!(path = %name, error = %e, "cannot materialise");
                report.failed += 1;
            }
        }
    }
    if report != SyncReport::default() {
        info!(
            added = report.added,
            removed = report.removed,
            failed = report.failed,
            "materialised view updated"
        );
    }
    Ok(report)
}
