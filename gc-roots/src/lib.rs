//! Garbage-collector roots on disk, laid out as Nix lays them out under its state directory
//! (`/nix/var/nix`), so the roots Nix clients create (`result` links, profiles, `nix-env`
//! generations) are the roots our collector honours:
//!
//! * `gcroots/` (searched recursively; as in Nix, a symlink to a directory is not followed,
//!   which is why `profiles/` is searched on its own), with `gcroots/auto/<nix32(sha1(link))>`
//!   for indirect roots (a link outside the state directory, such as `./result`, that points
//!   into the store);
//! * `profiles/`, with `per-user/<user>` for clients from Nix 2.3 to 2.13;
//! * `temproots/<pid>-<n>`: one file per daemon connection, NUL-terminated store paths, held
//!   under a write `flock` while the connection lives; `gc.lock` taken shared while appending,
//!   and `gc-socket/socket` to tell a running collector about a new root ([`TempRootsFile`]);
//! * runtime roots: store paths that running processes use (`/proc/<pid>/{exe,cwd,fd/*}`, paths
//!   in `/proc/<pid>/{maps,environ}`, a few kernel settings).
//!
//! [`find_roots`] collects all of them without recursion. It returns candidates: the caller
//! keeps those that are valid store paths in its database (this crate does no database I/O).

mod find;
mod links;
pub mod pins;
mod temp;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pkgchain_store_model::store_path::{StoreDir, StorePath};

pub use find::{find_roots, find_runtime_roots};
pub use links::{add_indirect_root, add_perm_root, create_user_dirs, indirect_root_link};
pub use temp::{TempRootsFile, read_temp_roots};

/// Each rooted store path with the places that root it (link paths, `/proc/...` files,
/// `{temp:<file>}`, or `{censored}`).
pub type Roots = BTreeMap<StorePath, BTreeSet<String>>;

/// What stands in for a root's location when the asker may not see it.
pub const CENSORED: &str = "{censored}";

/// The directories roots live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootsLayout {
    /// Nix's state directory (`NIX_STATE_DIR`, `/nix/var/nix`).
    pub state_dir: PathBuf,
    /// The store directory, which every root must point into.
    pub store_dir: StoreDir,
}

impl RootsLayout {
    /// The layout under `state_dir` for the store at `store_dir`.
    pub fn new(state_dir: impl Into<PathBuf>, store_dir: StoreDir) -> RootsLayout {
        RootsLayout {
            state_dir: state_dir.into(),
            store_dir,
        }
    }

    /// `gcroots/`.
    pub fn gcroots_dir(&self) -> PathBuf {
        self.state_dir.join("gcroots")
    }

    /// `gcroots/auto/`, where indirect roots are registered.
    pub fn auto_dir(&self) -> PathBuf {
        self.gcroots_dir().join("auto")
    }

    /// `profiles/`.
    pub fn profiles_dir(&self) -> PathBuf {
        self.state_dir.join("profiles")
    }

    /// `temproots/`.
    pub fn temproots_dir(&self) -> PathBuf {
        self.state_dir.join("temproots")
    }

    /// `gc.lock`: held exclusively by a running collector, shared by writers of temp roots.
    pub fn gc_lock(&self) -> PathBuf {
        self.state_dir.join("gc.lock")
    }

    /// Opens (creating it if needed) `gc.lock`, unlocked.
    pub fn open_gc_lock(&self) -> Result<std::fs::File, RootsError> {
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| io_error("creating directory", &self.state_dir, e))?;
        open_lock_file(&self.gc_lock(), "opening")
    }

    /// `gc-socket/socket`: where a running collector hears of new temp roots.
    pub fn gc_socket(&self) -> PathBuf {
        self.state_dir.join("gc-socket").join("socket")
    }

    /// Whether `path` (as text) lies inside the store directory.
    pub fn is_in_store(&self, path: &str) -> bool {
        path.strip_prefix(self.store_dir.as_str())
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
    }

    /// The store path `path` lies in, if it is inside the store and names a well-formed one.
    pub fn store_path_of(&self, path: &str) -> Option<StorePath> {
        self.store_dir.parse_with_subpath(path).ok().map(|(p, _)| p)
    }
}

/// Why a root could not be recorded or read.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    /// A file system operation failed.
    #[error("{action} '{}': {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A root was asked for inside the store itself.
    #[error(
        "creating a garbage collector root ({0}) in the Nix store is forbidden (are you running nix-build inside the store?)"
    )]
    RootInStore(String),
    /// The place for a permanent root holds something that is not a link into the store.
    #[error("cannot create symlink '{0}'; already exists")]
    Exists(String),
    /// A root path that is not absolute, or not valid text.
    #[error("garbage collector root '{0}' is not an absolute path")]
    NotAbsolute(String),
    /// A user or program name for a pin directory that is not one plain path component.
    #[error("'{0}' cannot name a pin directory (it must be one path component)")]
    BadPinName(String),
    /// A temp-roots file with content that is not NUL-terminated store paths.
    #[error("malformed temporary roots file '{}': {reason}", path.display())]
    MalformedTempRoots {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The running collector answered something other than `1`.
    #[error("the garbage collector at '{}' answered {answer:?} instead of '1'", socket.display())]
    CollectorAnswer {
        /// Its socket.
        socket: PathBuf,
        /// What it sent.
        answer: Vec<u8>,
    },
}

/// Opens (creating it, `0600`, never truncating) a file that is locked with `flock`.
pub(crate) fn open_lock_file(
    path: &Path,
    action: &'static str,
) -> Result<std::fs::File, RootsError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(action, path, e))
}

pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> RootsError {
    RootsError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}
