//! The read-only views of package chain's store.
//!
//! Two ways to show one truth (architecture decision 5):
//!
//! * [`fuse`]: a FUSE file system at the store directory (`/nix/store`) and at `/ipfs/store`
//!   (`/ipfs/store/<cid>/...`), served from blocks, verified, with passthrough for files stored
//!   as one block.
//! * [`materialise`]: real read-only files written into the store directory, for where FUSE
//!   cannot be mounted.
//!
//! [`ViewMode::Auto`] picks FUSE when `/dev/fuse` can be opened and this process may mount
//! (it is root, or `fusermount3` is installed), and the materialised view otherwise.

pub mod fuse;
pub mod materialise;
pub mod orphan_unmount;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fuser::{Config, MountOption, SessionACL};
use pkgchain_store::Store;
use thiserror::Error;
use tokio::runtime::Handle;
use tracing::{info, warn};

pub use crate::fuse::{OpenMode, RootKind, ViewFs};
pub use crate::materialise::{MaterialiseError, SyncReport, materialise_path, sync_store_dir};

/// Which view to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewMode {
    /// FUSE where possible, else materialised.
    #[default]
    Auto,
    /// FUSE only (an error where it cannot be mounted).
    Fuse,
    /// Materialised files only.
    Materialised,
}

impl FromStr for OpenMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "passthrough" => Ok(OpenMode::Passthrough),
            "kernel-cache" => Ok(OpenMode::KernelCache),
            other => Err(format!(
                "unknown FUSE open mode '{other}' (expected passthrough or kernel-cache)"
            )),
        }
    }
}

impl FromStr for ViewMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ViewMode::Auto),
            "fuse" => Ok(ViewMode::Fuse),
            "materialised" | "materialized" => Ok(ViewMode::Materialised),
            other => Err(format!(
                "unknown store view '{other}' (expected auto, fuse or materialised)"
            )),
        }
    }
}

/// Why a view could not be set up.
#[derive(Debug, Error)]
pub enum ViewError {
    /// Mounting failed.
    #[error("mounting the FUSE view at '{path}': {source}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// FUSE was required but is unavailable.
    #[error("FUSE view requested but unavailable: {0}")]
    FuseUnavailable(String),
    /// The materialised view failed.
    #[error(transparent)]
    Materialise(#[from] MaterialiseError),
}

/// Whether this process can mount FUSE; `Err` says why not.
pub fn fuse_available() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
    if rustix::process::geteuid().is_root() || find_fusermount().is_some() {
        Ok(())
    } else {
        Err("not root and no fusermount3 in PATH".into())
    }
}

fn find_fusermount() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("fusermount3"))
        .find(|p| p.is_file())
}

/// Resolves [`ViewMode::Auto`].
pub fn resolve_mode(mode: ViewMode) -> Result<ViewMode, ViewError> {
    match mode {
        ViewMode::Materialised => Ok(ViewMode::Materialised),
        ViewMode::Fuse => fuse_available()
            .map(|()| ViewMode::Fuse)
            .map_err(ViewError::FuseUnavailable),
        ViewMode::Auto => match fuse_available() {
            Ok(()) => Ok(ViewMode::Fuse),
            Err(why) => {
                info!(reason = %why, "FUSE unavailable; using the materialised view");
                Ok(ViewMode::Materialised)
            }
        },
    }
}

/// How long [`FuseMounts::unmount`] waits for a view's session to end.
const UNMOUNT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Mounted FUSE views; dropping this (or calling [`FuseMounts::unmount`]) unmounts them.
pub struct FuseMounts {
    sessions: Vec<(PathBuf, fuser::BackgroundSession)>,
    stop: Arc<AtomicBool>,
    watchers: Vec<std::thread::JoinHandle<()>>,
    /// The process that detaches the views if this one dies without unmounting them.
    orphan_unmounter: Option<std::process::Child>,
}

impl FuseMounts {
    /// Mount points served.
    pub fn mount_points(&self) -> Vec<&Path> {
        self.sessions.iter().map(|(p, _)| p.as_path()).collect()
    }

    /// Unmounts every view and waits for their threads.
    ///
    /// The mount is detached first (directly as root, else with `fusermount3 -u -z`): the
    /// auto-unmount helper only acts once this process has exited, so waiting for it here
    /// would never end.
    pub fn unmount(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.watchers {
            let _ = w.join();
        }
        if let Some(mut unmounter) = self.orphan_unmounter {
            // The views are unmounted here: its work is not needed.
            let _ = unmounter.kill();
            let _ = unmounter.wait();
        }
        for (path, session) in self.sessions {
            if let Err(e) = detach(&path) {
                warn!(mount = %path.display(), error = %e, "detaching the mount failed");
            }
            // The session ends when the kernel drops its last mount; a bind mount of the view
            // elsewhere keeps it alive. Wait a bounded time, then let the process exit, which
            // aborts the connection (remaining mounts then fail with ENOTCONN).
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let waiter = std::thread::Builder::new()
                .name("pkgchain-unmount".into())
                .spawn(move || {
                    let _ = done_tx.send(session.umount_and_join());
                });
            if waiter.is_err() {
                warn!(mount = %path.display(), "no thread to wait for the unmount");
                continue;
            }
            match done_rx.recv_timeout(UNMOUNT_WAIT) {
                Ok(Ok(())) => info!(mount = %path.display(), "unmounted"),
                // Detached above already (as root, where no fusermount3 helper runs).
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    info!(mount = %path.display(), "unmounted");
                }
                Ok(Err(e)) => warn!(mount = %path.display(), error = %e, "unmount failed"),
                Err(_) => warn!(
                    mount = %path.display(),
                    "the view is still mounted elsewhere (a bind mount?); it ends with this process"
                ),
            }
        }
    }
}

/// The kernel keeps the store directory's listing (zero-message opendir); this drops it
/// whenever the set of valid paths changes, checking once a second. Lookups of new paths never
/// wait for it: negative lookups are not cached.
fn watch_store_dir(store: &Store, rt: &Handle, notifier: &fuser::Notifier, stop: &AtomicBool) {
    let mut last = None;
    while !stop.load(Ordering::Relaxed) {
        match rt.block_on(store.db().paths_marker()) {
            Ok(marker) => {
                if last.is_some_and(|l| l != marker)
                    && let Err(e) = notifier.inval_inode(fuser::INodeNo(fuse::ROOT_INO), 0, 0)
                {
                    warn!(error = %e, "cannot invalidate the store directory's listing");
                }
                last = Some(marker);
            }
            Err(e) => warn!(error = %e, "cannot check for new store paths"),
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn detach(path: &Path) -> std::io::Result<()> {
    if rustix::process::geteuid().is_root() {
        rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH)?;
        return Ok(());
    }
    let status = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(path)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "fusermount3 -u exited with {status}"
        )))
    }
}

/// Mounts the store view at `store_dir` and, if given, the CID view at `ipfs_store_dir`.
pub fn mount_fuse(
    store: &Store,
    rt: Handle,
    store_dir: &Path,
    ipfs_store_dir: Option<&Path>,
    open_mode: OpenMode,
) -> Result<FuseMounts, ViewError> {
    let mut mounts = FuseMounts {
        sessions: Vec::new(),
        stop: Arc::new(AtomicBool::new(false)),
        watchers: Vec::new(),
        orphan_unmounter: None,
    };
    // Root detaches the views itself if this process dies (see `orphan_unmount` for why not
    // fusermount3's auto_unmount); anyone else mounts through fusermount3 and relies on it.
    let as_root = rustix::process::geteuid().is_root();
    let mut watched = Vec::new();
    let targets = std::iter::once((store_dir, RootKind::StorePaths))
        .chain(ipfs_store_dir.map(|d| (d, RootKind::Cids)));
    for (dir, kind) in targets {
        std::fs::create_dir_all(dir).map_err(|source| ViewError::Mount {
            path: dir.to_owned(),
            source,
        })?;
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("pkgchain".into()),
            MountOption::Subtype("pkgchain".into()),
            MountOption::RO,
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoAtime,
            MountOption::DefaultPermissions,
        ];
        if as_root {
            // Watched below.
        } else if find_fusermount().is_some() {
            // fusermount3 watches the session and unmounts when this process dies, even by
            // SIGKILL, so a crash never leaves a stale mount.
            config.mount_options.push(MountOption::AutoUnmount);
        } else {
            warn!(
                "fusermount3 not found: a crash of this process leaves the mount stale until unmounted"
            );
        }
        config.acl = SessionACL::All;
        config.n_threads = Some(
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8)
                * 2,
        );
        config.clone_fd = true;
        let fs = ViewFs::new(store.clone(), rt.clone(), kind, open_mode);
        let session = fuser::spawn_mount(fs, dir, &config).map_err(|source| ViewError::Mount {
            path: dir.to_owned(),
            source,
        })?;
        info!(mount = %dir.display(), ?kind, "FUSE view mounted");
        if as_root {
            let device = rustix::fs::stat(dir)
                .map_err(|e| ViewError::Mount {
                    path: dir.to_owned(),
                    source: e.into(),
                })?
                .st_dev;
            watched.push(orphan_unmount::WatchedMount {
                path: dir.to_owned(),
                device,
            });
        }
        if kind == RootKind::StorePaths {
            let notifier = session.notifier();
            let (store, rt, stop) = (store.clone(), rt.clone(), mounts.stop.clone());
            mounts.watchers.push(
                std::thread::Builder::new()
                    .name("pkgchain-view-watch".into())
                    .spawn(move || watch_store_dir(&store, &rt, &notifier, &stop))
                    .map_err(|source| ViewError::Mount {
                        path: dir.to_owned(),
                        source,
                    })?,
            );
        }
        mounts.sessions.push((dir.to_owned(), session));
    }
    if !watched.is_empty() {
        match orphan_unmount::spawn(&watched) {
            Ok(child) => mounts.orphan_unmounter = Some(child),
            Err(e) => warn!(
                error = %e,
                "cannot start the unmount watcher: a crash of this process leaves the views mounted"
            ),
        }
    }
    Ok(mounts)
}
