//! The request of each worker operation: what follows the u64 opcode, per version.
//!
//! [`Request`] has one variant per operation a client from Nix 2.3 to 2.35 may send.
//! [`Request::decode`] is the daemon side (the opcode has been read; it reads the arguments);
//! [`Request::encode`] is the client side (it writes the opcode and the arguments). Neither
//! touches the data some requests are followed by (a NAR, a framed stream, an exchange of
//! `STDERR_READ` messages): [`Request::payload`] says which follows, and the caller moves it
//! (see [`crate::framed`], [`crate::nar_copy`], [`crate::tunnel`]).
//!
//! Version gates (negotiated version; "feature" = 1.38 feature string):
//!
//! | op | gate |
//! |---|---|
//! | 7 AddToStore | below 1.25 [`AddToStoreOld`] + raw NAR; from 1.25 [`AddToStore`] + framed data |
//! | 9 BuildPaths | [`BuildMode`] only from 1.15 |
//! | 9, 40, 46 | [`DerivedPath`] text: below 1.30 the "path!out1,out2" form |
//! | 19 SetOptions | overrides map only from 1.12 |
//! | 20 CollectGarbage | tagged paths with `delete-dead-specific-referrers` |
//! | 30 QuerySubstitutablePathInfos | below 1.22 `[StorePath]`; from 1.22 `{StorePath: str CA}` |
//! | 31 QueryValidPaths | `bool substitute` only from 1.27 |
//! | 39 AddToStoreNar | payload: raw NAR below 1.21, `STDERR_READ` 1.21-1.22, framed from 1.23 |
//! | 42, 43 | see [`realisation`] |
//!
//! Operations are not refused for being sent at a version older than the one that introduced
//! them (Nix does not refuse them either); [`introduced_in`] says which version that is, for
//! clients.
//!
//! A request that fails to decode leaves the stream at an unknown position: the daemon can
//! only report the error (`STDERR_ERROR`) and close the connection, as Nix does. Checks that
//! need the daemon's state (trust, whether a path is valid) are the daemon's; decoding checks
//! only the wire form (store paths parse, tags are known, lengths are within
//! [`Limits`](crate::wire::Limits)).

pub mod add;
pub mod build;
mod codec;
pub mod gc;
pub mod realisation;
pub mod settings;

pub(crate) use codec::read_short_bytes;

#[cfg(test)]
mod seeds;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use pkgchain_store_model::content_address::ContentAddress;
use pkgchain_store_model::signature::Signature;
use pkgchain_store_model::store_path::StorePath;
use thiserror::Error;

pub use add::{
    AddBuildLog, AddMultipleToStore, AddTextToStore, AddToStore, AddToStoreNar, AddToStoreOld,
};
pub use build::{BasicDerivation, WireDerivationOutput};
pub use gc::{CollectGarbage, GcAction, GcPaths};
pub use realisation::{DrvOutputKey, RegisterDrvOutput};
pub use settings::ClientSettings;

use crate::context::WireContext;
use crate::opcode::{Opcode, UnknownOpcode};
use crate::types::{BuildMode, DerivedPath};
use crate::version::ProtocolVersion;
use crate::wire::{ByteString, Encode, SyncReader, WireError, WireWriter, run_ready};

/// Why a request could not be decoded.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The number names no operation ("invalid operation N", as Nix says).
    #[error(transparent)]
    UnknownOpcode(#[from] UnknownOpcode),
    /// An operation no client in scope sends and no daemon in scope serves (24, 25, the
    /// numbers reserved after Nix 2.35).
    #[error("invalid operation {} ({} is not served)", u64::from(*.0), .0.name())]
    NotServed(Opcode),
    /// The arguments are malformed or the input ended.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// What follows a request on the wire, besides the request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Nothing.
    None,
    /// A raw NAR, whose end only the NAR grammar tells (see [`crate::nar_copy`]).
    RawNar,
    /// A framed stream (see [`crate::framed`]); the daemon must read it up to its terminator
    /// even after an error.
    Framed,
    /// Data the daemon pulls after `startWork` with `STDERR_READ` messages (see
    /// [`crate::tunnel`]).
    StderrRead,
}

/// `QueryValidPaths` (31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryValidPaths {
    /// The paths to check.
    pub paths: BTreeSet<StorePath>,
    /// Substitute the missing ones first (sent from 1.27; false below).
    pub substitute: bool,
}

/// `BuildDerivation` (36).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDerivation {
    /// The derivation's store path (not necessarily valid).
    pub drv_path: StorePath,
    /// The derivation.
    pub drv: BasicDerivation,
    /// How to build.
    pub mode: BuildMode,
}

/// One worker request: the operation and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// 1: is the path valid?
    IsValidPath(StorePath),
    /// 3: does the path have substitutes? (obsolete)
    HasSubstitutes(StorePath),
    /// 4: the path's NAR hash (obsolete).
    QueryPathHash(StorePath),
    /// 5: the path's references (obsolete).
    QueryReferences(StorePath),
    /// 6: the paths that refer to the path.
    QueryReferrers(StorePath),
    /// 7 below 1.25; a raw NAR follows.
    AddToStoreOld(AddToStoreOld),
    /// 7 from 1.25; framed data follows.
    AddToStore(AddToStore),
    /// 8: add a text file.
    AddTextToStore(AddTextToStore),
    /// 9: build or substitute.
    BuildPaths {
        /// What to build.
        paths: Vec<DerivedPath>,
        /// How (sent from 1.15; [`BuildMode::Normal`] below).
        mode: BuildMode,
    },
    /// 10: make the path valid.
    EnsurePath(StorePath),
    /// 11: add a temporary root for the connection.
    AddTempRoot(StorePath),
    /// 12: register the symlink at this absolute path as an indirect root.
    AddIndirectRoot(ByteString),
    /// 13: no-op.
    SyncWithGC,
    /// 14: list the GC roots.
    FindRoots,
    /// 16: export a path (obsolete; the u64 is ignored).
    ExportPath {
        /// The path.
        path: StorePath,
        /// Obsolete "sign" flag.
        obsolete: u64,
    },
    /// 18: the path's deriver (obsolete).
    QueryDeriver(StorePath),
    /// 19: the client's settings.
    SetOptions(ClientSettings),
    /// 20: garbage collection.
    CollectGarbage(CollectGarbage),
    /// 21: substitute info of one path.
    QuerySubstitutablePathInfo(StorePath),
    /// 22: the output paths of a derivation.
    QueryDerivationOutputs(StorePath),
    /// 23: every valid path.
    QueryAllValidPaths,
    /// 26: the path's metadata.
    QueryPathInfo(StorePath),
    /// 27: import an export stream pulled with `STDERR_READ` (decoded so that the daemon can
    /// refuse it; no client that negotiates 1.18 or later sends it).
    ImportPaths,
    /// 28: the output names of a derivation.
    QueryDerivationOutputNames(StorePath),
    /// 29: the full path of a hash part.
    QueryPathFromHashPart(String),
    /// 30: substitute info of several paths, each with its content address if known (always
    /// `None` below 1.22, where the wire carries only the paths).
    QuerySubstitutablePathInfos(BTreeMap<StorePath, Option<ContentAddress>>),
    /// 31: which paths are valid.
    QueryValidPaths(QueryValidPaths),
    /// 32: which paths are substitutable.
    QuerySubstitutablePaths(BTreeSet<StorePath>),
    /// 33: valid derivations producing the path.
    QueryValidDerivers(StorePath),
    /// 34: deduplicate the store.
    OptimiseStore,
    /// 35: verify the store.
    VerifyStore {
        /// Hash every path's contents.
        check_contents: bool,
        /// Repair what is wrong.
        repair: bool,
    },
    /// 36: build the derivation sent.
    BuildDerivation(BuildDerivation),
    /// 37: add signatures to a path.
    AddSignatures {
        /// The path.
        path: StorePath,
        /// The signatures.
        sigs: BTreeSet<Signature>,
    },
    /// 38: the NAR of a path (sent after `STDERR_LAST`).
    NarFromPath(StorePath),
    /// 39: add a path with its NAR.
    AddToStoreNar(AddToStoreNar),
    /// 40: what building these would involve.
    QueryMissing(Vec<DerivedPath>),
    /// 41: the outputs of a derivation.
    QueryDerivationOutputMap(StorePath),
    /// 42: register a realisation.
    RegisterDrvOutput(RegisterDrvOutput),
    /// 43: look up a realisation.
    QueryRealisation(DrvOutputKey),
    /// 44: add paths from one framed stream.
    AddMultipleToStore(AddMultipleToStore),
    /// 45: store a build log; framed data follows.
    AddBuildLog(AddBuildLog),
    /// 46: build, with one result per path.
    BuildPathsWithResults {
        /// What to build.
        paths: Vec<DerivedPath>,
        /// How.
        mode: BuildMode,
    },
    /// 47: create a GC root symlink at `gc_root` pointing to `path`.
    AddPermRoot {
        /// The store path.
        path: StorePath,
        /// Where the root symlink goes.
        gc_root: ByteString,
    },
}

/// The version that introduced `op` (for clients deciding what to send; `None` for operations
/// older than every version in scope or never released).
pub fn introduced_in(op: Opcode) -> Option<ProtocolVersion> {
    let minor = match op {
        Opcode::QuerySubstitutablePathInfos
        | Opcode::QueryValidPaths
        | Opcode::QuerySubstitutablePaths => 12,
        Opcode::QueryValidDerivers => 13,
        Opcode::AddToStoreNar => 18,
        Opcode::QueryMissing => 19,
        Opcode::QueryDerivationOutputMap => 22,
        Opcode::RegisterDrvOutput | Opcode::QueryRealisation => 27,
        Opcode::AddMultipleToStore | Opcode::AddBuildLog => 32,
        Opcode::BuildPathsWithResults => 34,
        Opcode::AddPermRoot => 36,
        _ => return None,
    };
    Some(ProtocolVersion::new(1, minor))
}

impl Request {
    /// The operation.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::IsValidPath(_) => Opcode::IsValidPath,
            Request::HasSubstitutes(_) => Opcode::HasSubstitutes,
            Request::QueryPathHash(_) => Opcode::QueryPathHash,
            Request::QueryReferences(_) => Opcode::QueryReferences,
            Request::QueryReferrers(_) => Opcode::QueryReferrers,
            Request::AddToStoreOld(_) | Request::AddToStore(_) => Opcode::AddToStore,
            Request::AddTextToStore(_) => Opcode::AddTextToStore,
            Request::BuildPaths { .. } => Opcode::BuildPaths,
            Request::EnsurePath(_) => Opcode::EnsurePath,
            Request::AddTempRoot(_) => Opcode::AddTempRoot,
            Request::AddIndirectRoot(_) => Opcode::AddIndirectRoot,
            Request::SyncWithGC => Opcode::SyncWithGC,
            Request::FindRoots => Opcode::FindRoots,
            Request::ExportPath { .. } => Opcode::ExportPath,
            Request::QueryDeriver(_) => Opcode::QueryDeriver,
            Request::SetOptions(_) => Opcode::SetOptions,
            Request::CollectGarbage(_) => Opcode::CollectGarbage,
            Request::QuerySubstitutablePathInfo(_) => Opcode::QuerySubstitutablePathInfo,
            Request::QueryDerivationOutputs(_) => Opcode::QueryDerivationOutputs,
            Request::QueryAllValidPaths => Opcode::QueryAllValidPaths,
            Request::QueryPathInfo(_) => Opcode::QueryPathInfo,
            Request::ImportPaths => Opcode::ImportPaths,
            Request::QueryDerivationOutputNames(_) => Opcode::QueryDerivationOutputNames,
            Request::QueryPathFromHashPart(_) => Opcode::QueryPathFromHashPart,
            Request::QuerySubstitutablePathInfos(_) => Opcode::QuerySubstitutablePathInfos,
            Request::QueryValidPaths(_) => Opcode::QueryValidPaths,
            Request::QuerySubstitutablePaths(_) => Opcode::QuerySubstitutablePaths,
            Request::QueryValidDerivers(_) => Opcode::QueryValidDerivers,
            Request::OptimiseStore => Opcode::OptimiseStore,
            Request::VerifyStore { .. } => Opcode::VerifyStore,
            Request::BuildDerivation(_) => Opcode::BuildDerivation,
            Request::AddSignatures { .. } => Opcode::AddSignatures,
            Request::NarFromPath(_) => Opcode::NarFromPath,
            Request::AddToStoreNar(_) => Opcode::AddToStoreNar,
            Request::QueryMissing(_) => Opcode::QueryMissing,
            Request::QueryDerivationOutputMap(_) => Opcode::QueryDerivationOutputMap,
            Request::RegisterDrvOutput(_) => Opcode::RegisterDrvOutput,
            Request::QueryRealisation(_) => Opcode::QueryRealisation,
            Request::AddMultipleToStore(_) => Opcode::AddMultipleToStore,
            Request::AddBuildLog(_) => Opcode::AddBuildLog,
            Request::BuildPathsWithResults { .. } => Opcode::BuildPathsWithResults,
            Request::AddPermRoot { .. } => Opcode::AddPermRoot,
        }
    }

    /// What follows the request on the wire at the negotiated version.
    pub fn payload(&self, cx: &WireContext) -> Payload {
        match self {
            Request::AddToStoreOld(_) => Payload::RawNar,
            Request::AddToStore(_) | Request::AddMultipleToStore(_) | Request::AddBuildLog(_) => {
                Payload::Framed
            }
            Request::AddToStoreNar(_) if cx.at_least(23) => Payload::Framed,
            Request::AddToStoreNar(_) if cx.at_least(21) => Payload::StderrRead,
            Request::AddToStoreNar(_) => Payload::RawNar,
            Request::ImportPaths => Payload::StderrRead,
            _ => Payload::None,
        }
    }

    /// Appends the whole request: the opcode, then the arguments. Fails if a value has no
    /// encoding at the negotiated version (e.g. the old `AddToStore` form from 1.25, a repair
    /// build mode below 1.15, a derivation file as a derived path below 1.30).
    pub fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        w.put_u64(u64::from(self.opcode()));
        self.encode_args(w, cx)
    }

    /// [`Request::decode`] over a blocking reader.
    pub fn decode_sync<R: std::io::Read + Send>(
        op: u64,
        r: &mut SyncReader<R>,
        cx: &WireContext,
    ) -> Result<Request, RequestError> {
        run_ready(Request::decode(op, r, cx))
    }
}

impl Encode for Request {
    /// The whole request, opcode included (see [`Request::encode`]).
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        Request::encode(self, w, cx)
    }
}
