//! What the privileged side hands the sandbox's helper stages: a plain, serialisable
//! description of one builder run. It carries no policy; [`crate::root`] builds it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The largest spec a stage accepts on its control channel.
pub const MAX_SPEC_BYTES: u64 = 64 << 20;

/// One bind mount into the sandbox root. The mount point exists already (made by
/// [`crate::root::prepare`], as a directory or an empty file like the source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// The path outside the sandbox.
    pub source: PathBuf,
    /// The absolute path inside the sandbox.
    pub target: PathBuf,
    /// Mounted read-only (inputs and host paths always are).
    pub read_only: bool,
}

/// How the builder's user namespace maps ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdMapping {
    /// The daemon is root: inside ids `0..=1000` map to `base..=base+1000` outside, the
    /// builder runs as uid 1000 / gid 100 inside (Nix's sandbox ids), unprivileged outside.
    Range {
        /// First outside uid and gid of this build slot.
        base: u32,
    },
    /// The daemon is an ordinary user: only its own ids can be mapped, to 0 inside, and the
    /// builder runs as that (as Nix does without a build user: no privilege outside).
    Own {
        /// The daemon's uid.
        uid: u32,
        /// The daemon's gid.
        gid: u32,
    },
}

impl IdMapping {
    /// The builder's uid and gid inside the namespace.
    pub fn builder_ids_inside(self) -> (u32, u32) {
        match self {
            IdMapping::Range { .. } => (1000, 100),
            IdMapping::Own { .. } => (0, 0),
        }
    }

    /// The builder's uid and gid as seen outside.
    pub fn builder_ids_outside(self) -> (u32, u32) {
        match self {
            IdMapping::Range { base } => (base + 1000, base + 100),
            IdMapping::Own { uid, gid } => (uid, gid),
        }
    }

    /// The `uid_map` and `gid_map` contents.
    pub fn maps(self) -> (String, String) {
        match self {
            IdMapping::Range { base } => (format!("0 {base} 1001\n"), format!("0 {base} 1001\n")),
            IdMapping::Own { uid, gid } => (format!("0 {uid} 1\n"), format!("0 {gid} 1\n")),
        }
    }
}

/// Everything the stages need to set up the sandbox and start the builder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The prepared root directory, outside path.
    pub root: PathBuf,
    /// Read-only inputs and host paths, and writable ones, in mount order.
    pub binds: Vec<Bind>,
    /// The builder program (absolute path inside the sandbox).
    pub builder: Vec<u8>,
    /// Its arguments (without argv\[0\], which is the builder's base name, as in Nix).
    pub args: Vec<Vec<u8>>,
    /// The whole environment.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// The working directory inside (the build directory).
    pub work_dir: PathBuf,
    /// A private network namespace with only loopback (false for fixed-output builds).
    pub private_network: bool,
    /// The user namespace's id mapping.
    pub ids: IdMapping,
    /// Paths inside the sandbox the builder may write beneath (Landlock's second wall).
    pub writable: Vec<PathBuf>,
}
