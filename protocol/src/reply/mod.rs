//! The reply of each worker operation: what the daemon sends after `STDERR_LAST`.
//!
//! [`Reply::encode`] is the daemon side, [`Reply::decode`] the client side (it needs the
//! operation the request was, since the wire does not say). Version gates:
//!
//! | op | gate |
//! |---|---|
//! | 7 AddToStore | below 1.25 `StorePath`; from 1.25 `ValidPathInfo` |
//! | 26 QueryPathInfo | from 1.17 `bool valid` then the info if valid; below 1.17 the info (an invalid path is an error instead) |
//! | 36, 46 | [`BuildResult`] fields by version (see [`crate::types::build_result`]) |
//! | 43 QueryRealisation | see [`RealisationReply`] |
//! | 7, 26 | path info: `ultimate`, `sigs`, `ca` from 1.16 |
//!
//! Operations that answer `u64 1` are listed in [`ACK_OPS`] ([`Reply::Ack`]); those that
//! answer nothing after `STDERR_LAST` in [`NO_REPLY_OPS`] ([`Reply::Nothing`]). `NarFromPath`
//! answers with a raw NAR ([`Reply::NarFollows`]), which the caller moves itself (see
//! [`crate::nar_copy`]).

pub mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use pkgchain_store_model::hash::{Hash, HashAlgo, HashEncoding};
use pkgchain_store_model::path_info::{PathInfo, ValidPathInfo};
use pkgchain_store_model::store_path::StorePath;

pub use types::{GcResults, Missing, RealisationReply, Roots, SubstitutablePathInfo};

use crate::context::WireContext;
use crate::opcode::Opcode;
use crate::request::read_short_bytes;
use crate::types::store::read_parsed;
use crate::types::{BuildResult, KeyedBuildResult};
use crate::wire::read::{read_bool, read_u64};
use crate::wire::{
    ByteString, Decode, Encode, SyncReader, WireError, WireRead, WireWriter, run_ready,
};

/// Operations whose reply is the number 1 (clients read and ignore it).
pub const ACK_OPS: &[Opcode] = &[
    Opcode::BuildPaths,
    Opcode::EnsurePath,
    Opcode::AddTempRoot,
    Opcode::AddIndirectRoot,
    Opcode::SyncWithGC,
    Opcode::ExportPath,
    Opcode::OptimiseStore,
    Opcode::AddSignatures,
    Opcode::AddBuildLog,
];

/// Operations with no reply after `STDERR_LAST`.
pub const NO_REPLY_OPS: &[Opcode] = &[
    Opcode::SetOptions,
    Opcode::AddToStoreNar,
    Opcode::RegisterDrvOutput,
    Opcode::AddMultipleToStore,
];

/// Whether `op` replies with `u64 1`.
pub fn replies_with_one(op: Opcode) -> bool {
    ACK_OPS.contains(&op)
}

/// The reply to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// No payload ([`NO_REPLY_OPS`]).
    Nothing,
    /// `u64 1` ([`ACK_OPS`]).
    Ack,
    /// `NarFromPath`: a raw NAR follows, which is not part of the reply.
    NarFollows,
    /// 1: whether the path is valid.
    IsValidPath(bool),
    /// 3: whether the path has substitutes.
    HasSubstitutes(bool),
    /// 4: the NAR hash (base16, no algorithm).
    QueryPathHash(Hash),
    /// 5: references.
    QueryReferences(BTreeSet<StorePath>),
    /// 6: referrers.
    QueryReferrers(BTreeSet<StorePath>),
    /// 7 below 1.25: the new path.
    AddToStoreOld(StorePath),
    /// 7 from 1.25: the new path with its metadata.
    AddToStore(ValidPathInfo),
    /// 8: the new path.
    AddTextToStore(StorePath),
    /// 14: the roots.
    FindRoots(Roots),
    /// 18: the deriver.
    QueryDeriver(Option<StorePath>),
    /// 20: what was collected.
    CollectGarbage(GcResults),
    /// 21: the path's substitute info, if any substituter has it.
    QuerySubstitutablePathInfo(Option<SubstitutablePathInfo>),
    /// 22: output paths.
    QueryDerivationOutputs(BTreeSet<StorePath>),
    /// 23: every valid path.
    QueryAllValidPaths(BTreeSet<StorePath>),
    /// 26: the path's metadata, `None` if invalid (from 1.17; below, an invalid path is
    /// answered with an error and `None` cannot be encoded).
    QueryPathInfo(Option<PathInfo>),
    /// 27: the imported paths.
    ImportPaths(Vec<StorePath>),
    /// 28: output names.
    QueryDerivationOutputNames(BTreeSet<String>),
    /// 29: the path with this hash part, if valid.
    QueryPathFromHashPart(Option<StorePath>),
    /// 30: substitute info by path.
    QuerySubstitutablePathInfos(BTreeMap<StorePath, SubstitutablePathInfo>),
    /// 31: the valid paths.
    QueryValidPaths(BTreeSet<StorePath>),
    /// 32: the substitutable paths.
    QuerySubstitutablePaths(BTreeSet<StorePath>),
    /// 33: valid derivations producing the path.
    QueryValidDerivers(BTreeSet<StorePath>),
    /// 35: whether errors were found.
    VerifyStore(bool),
    /// 36: the build result.
    BuildDerivation(BuildResult),
    /// 40: what would be built and substituted.
    QueryMissing(Missing),
    /// 41: output name to path (`None`: not known yet).
    QueryDerivationOutputMap(BTreeMap<String, Option<StorePath>>),
    /// 43: the realisation, in the connection's form.
    QueryRealisation(RealisationReply),
    /// 46: one result per derived path.
    BuildPathsWithResults(Vec<KeyedBuildResult>),
    /// 47: the root's canonical path.
    AddPermRoot(ByteString),
}

impl Reply {
    /// Whether this reply has the shape of an answer to `op` at the negotiated version.
    pub fn fits(&self, op: Opcode, cx: &WireContext) -> bool {
        match self {
            Reply::Nothing => NO_REPLY_OPS.contains(&op),
            Reply::Ack => replies_with_one(op),
            Reply::NarFollows => op == Opcode::NarFromPath,
            Reply::AddToStoreOld(_) => op == Opcode::AddToStore && !cx.at_least(25),
            Reply::AddToStore(_) => op == Opcode::AddToStore && cx.at_least(25),
            _ => self.opcode() == Some(op),
        }
    }

    /// The one operation this variant answers (`None` for the shared variants).
    fn opcode(&self) -> Option<Opcode> {
        Some(match self {
            Reply::Nothing | Reply::Ack | Reply::NarFollows => return None,
            Reply::IsValidPath(_) => Opcode::IsValidPath,
            Reply::HasSubstitutes(_) => Opcode::HasSubstitutes,
            Reply::QueryPathHash(_) => Opcode::QueryPathHash,
            Reply::QueryReferences(_) => Opcode::QueryReferences,
            Reply::QueryReferrers(_) => Opcode::QueryReferrers,
            Reply::AddToStoreOld(_) | Reply::AddToStore(_) => Opcode::AddToStore,
            Reply::AddTextToStore(_) => Opcode::AddTextToStore,
            Reply::FindRoots(_) => Opcode::FindRoots,
            Reply::QueryDeriver(_) => Opcode::QueryDeriver,
            Reply::CollectGarbage(_) => Opcode::CollectGarbage,
            Reply::QuerySubstitutablePathInfo(_) => Opcode::QuerySubstitutablePathInfo,
            Reply::QueryDerivationOutputs(_) => Opcode::QueryDerivationOutputs,
            Reply::QueryAllValidPaths(_) => Opcode::QueryAllValidPaths,
            Reply::QueryPathInfo(_) => Opcode::QueryPathInfo,
            Reply::ImportPaths(_) => Opcode::ImportPaths,
            Reply::QueryDerivationOutputNames(_) => Opcode::QueryDerivationOutputNames,
            Reply::QueryPathFromHashPart(_) => Opcode::QueryPathFromHashPart,
            Reply::QuerySubstitutablePathInfos(_) => Opcode::QuerySubstitutablePathInfos,
            Reply::QueryValidPaths(_) => Opcode::QueryValidPaths,
            Reply::QuerySubstitutablePaths(_) => Opcode::QuerySubstitutablePaths,
            Reply::QueryValidDerivers(_) => Opcode::QueryValidDerivers,
            Reply::VerifyStore(_) => Opcode::VerifyStore,
            Reply::BuildDerivation(_) => Opcode::BuildDerivation,
            Reply::QueryMissing(_) => Opcode::QueryMissing,
            Reply::QueryDerivationOutputMap(_) => Opcode::QueryDerivationOutputMap,
            Reply::QueryRealisation(_) => Opcode::QueryRealisation,
            Reply::BuildPathsWithResults(_) => Opcode::BuildPathsWithResults,
            Reply::AddPermRoot(_) => Opcode::AddPermRoot,
        })
    }

    /// Reads the reply to `op`.
    pub async fn decode<R: WireRead>(
        op: Opcode,
        r: &mut R,
        cx: &WireContext,
    ) -> Result<Reply, WireError> {
        if replies_with_one(op) {
            read_u64(r, "reply").await?;
            return Ok(Reply::Ack);
        }
        if NO_REPLY_OPS.contains(&op) {
            return Ok(Reply::Nothing);
        }
        Ok(match op {
            Opcode::NarFromPath => Reply::NarFollows,
            Opcode::IsValidPath => Reply::IsValidPath(read_bool(r, "IsValidPath reply").await?),
            Opcode::HasSubstitutes => {
                Reply::HasSubstitutes(read_bool(r, "HasSubstitutes reply").await?)
            }
            Opcode::QueryPathHash => Reply::QueryPathHash(
                read_parsed(r, cx, "QueryPathHash reply", |s| {
                    Hash::parse_any(s, Some(HashAlgo::Sha256))
                })
                .await?,
            ),
            Opcode::QueryReferences => {
                Reply::QueryReferences(BTreeSet::decode(r, cx, "QueryReferences reply").await?)
            }
            Opcode::QueryReferrers => {
                Reply::QueryReferrers(BTreeSet::decode(r, cx, "QueryReferrers reply").await?)
            }
            Opcode::AddToStore if cx.at_least(25) => Reply::AddToStore(
                ValidPathInfo::decode(r, cx, "AddToStore reply")
                    .await
                    .map_err(|e| e.context("AddToStore reply"))?,
            ),
            Opcode::AddToStore => {
                Reply::AddToStoreOld(StorePath::decode(r, cx, "AddToStore reply").await?)
            }
            Opcode::AddTextToStore => {
                Reply::AddTextToStore(StorePath::decode(r, cx, "AddTextToStore reply").await?)
            }
            Opcode::FindRoots => Reply::FindRoots(Roots::decode(r, cx, "FindRoots reply").await?),
            Opcode::QueryDeriver => {
                Reply::QueryDeriver(Option::<StorePath>::decode(r, cx, "QueryDeriver reply").await?)
            }
            Opcode::CollectGarbage => {
                Reply::CollectGarbage(GcResults::decode(r, cx, "CollectGarbage reply").await?)
            }
            Opcode::QuerySubstitutablePathInfo => Reply::QuerySubstitutablePathInfo(
                if read_bool(r, "QuerySubstitutablePathInfo found").await? {
                    Some(SubstitutablePathInfo::decode(r, cx, "QuerySubstitutablePathInfo").await?)
                } else {
                    None
                },
            ),
            Opcode::QueryDerivationOutputs => Reply::QueryDerivationOutputs(
                BTreeSet::decode(r, cx, "QueryDerivationOutputs reply").await?,
            ),
            Opcode::QueryAllValidPaths => Reply::QueryAllValidPaths(
                BTreeSet::decode(r, cx, "QueryAllValidPaths reply").await?,
            ),
            Opcode::QueryPathInfo => {
                let valid = if cx.at_least(17) {
                    read_bool(r, "QueryPathInfo valid").await?
                } else {
                    true
                };
                Reply::QueryPathInfo(if valid {
                    Some(
                        PathInfo::decode(r, cx, "QueryPathInfo reply")
                            .await
                            .map_err(|e| e.context("QueryPathInfo reply"))?,
                    )
                } else {
                    None
                })
            }
            Opcode::ImportPaths => {
                Reply::ImportPaths(Vec::decode(r, cx, "ImportPaths reply").await?)
            }
            Opcode::QueryDerivationOutputNames => Reply::QueryDerivationOutputNames(
                BTreeSet::decode(r, cx, "QueryDerivationOutputNames reply").await?,
            ),
            Opcode::QueryPathFromHashPart => Reply::QueryPathFromHashPart(
                Option::<StorePath>::decode(r, cx, "QueryPathFromHashPart reply").await?,
            ),
            Opcode::QuerySubstitutablePathInfos => Reply::QuerySubstitutablePathInfos(
                BTreeMap::decode(r, cx, "QuerySubstitutablePathInfos reply").await?,
            ),
            Opcode::QueryValidPaths => {
                Reply::QueryValidPaths(BTreeSet::decode(r, cx, "QueryValidPaths reply").await?)
            }
            Opcode::QuerySubstitutablePaths => Reply::QuerySubstitutablePaths(
                BTreeSet::decode(r, cx, "QuerySubstitutablePaths reply").await?,
            ),
            Opcode::QueryValidDerivers => Reply::QueryValidDerivers(
                BTreeSet::decode(r, cx, "QueryValidDerivers reply").await?,
            ),
            Opcode::VerifyStore => Reply::VerifyStore(read_bool(r, "VerifyStore reply").await?),
            Opcode::BuildDerivation => Reply::BuildDerivation(
                BuildResult::decode(r, cx, "BuildDerivation reply")
                    .await
                    .map_err(|e| e.context("BuildDerivation reply"))?,
            ),
            Opcode::QueryMissing => {
                Reply::QueryMissing(Missing::decode(r, cx, "QueryMissing reply").await?)
            }
            Opcode::QueryDerivationOutputMap => Reply::QueryDerivationOutputMap(
                BTreeMap::decode(r, cx, "QueryDerivationOutputMap reply").await?,
            ),
            Opcode::QueryRealisation => Reply::QueryRealisation(
                RealisationReply::decode(r, cx, "QueryRealisation reply").await?,
            ),
            Opcode::BuildPathsWithResults => Reply::BuildPathsWithResults(
                Vec::decode(r, cx, "BuildPathsWithResults reply")
                    .await
                    .map_err(|e| e.context("BuildPathsWithResults reply"))?,
            ),
            Opcode::AddPermRoot => {
                Reply::AddPermRoot(read_short_bytes(r, cx, "AddPermRoot reply").await?)
            }
            other => {
                return Err(WireError::not_representable(
                    "reply",
                    format!("{other} has no reply in the protocol served"),
                ));
            }
        })
    }

    /// [`Reply::decode`] over a blocking reader.
    pub fn decode_sync<R: std::io::Read + Send>(
        op: Opcode,
        r: &mut SyncReader<R>,
        cx: &WireContext,
    ) -> Result<Reply, WireError> {
        run_ready(Reply::decode(op, r, cx))
    }
}

impl Encode for Reply {
    /// Appends the reply. Fails for a value with no encoding at the negotiated version (a
    /// missing path info below 1.17, a realisation in another form than the connection's).
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        match self {
            Reply::Nothing | Reply::NarFollows => {}
            Reply::Ack => w.put_u64(1),
            Reply::IsValidPath(b) | Reply::HasSubstitutes(b) | Reply::VerifyStore(b) => {
                w.put_bool(*b)
            }
            Reply::QueryPathHash(hash) => w.put_str(&hash.encode(HashEncoding::Base16)),
            Reply::QueryReferences(paths)
            | Reply::QueryReferrers(paths)
            | Reply::QueryDerivationOutputs(paths)
            | Reply::QueryAllValidPaths(paths)
            | Reply::QueryValidPaths(paths)
            | Reply::QuerySubstitutablePaths(paths)
            | Reply::QueryValidDerivers(paths) => paths.encode(w, cx)?,
            Reply::AddToStoreOld(path) | Reply::AddTextToStore(path) => path.encode(w, cx)?,
            Reply::AddToStore(info) => info.encode(w, cx)?,
            Reply::FindRoots(roots) => roots.encode(w, cx)?,
            Reply::QueryDeriver(path) | Reply::QueryPathFromHashPart(path) => path.encode(w, cx)?,
            Reply::CollectGarbage(results) => results.encode(w, cx)?,
            Reply::QuerySubstitutablePathInfo(info) => {
                w.put_bool(info.is_some());
                if let Some(info) = info {
                    info.encode(w, cx)?;
                }
            }
            Reply::QueryPathInfo(info) => match info {
                Some(info) => {
                    if cx.at_least(17) {
                        w.put_u64(1);
                    }
                    info.encode(w, cx)?;
                }
                None if cx.at_least(17) => w.put_u64(0),
                None => {
                    return Err(WireError::not_representable(
                        "QueryPathInfo reply",
                        "below protocol 1.17 an invalid path is answered with an error",
                    ));
                }
            },
            Reply::ImportPaths(paths) => paths.encode(w, cx)?,
            Reply::QueryDerivationOutputNames(names) => names.encode(w, cx)?,
            Reply::QuerySubstitutablePathInfos(infos) => infos.encode(w, cx)?,
            Reply::BuildDerivation(result) => result.encode(w, cx)?,
            Reply::QueryMissing(missing) => missing.encode(w, cx)?,
            Reply::QueryDerivationOutputMap(map) => map.encode(w, cx)?,
            Reply::QueryRealisation(reply) => reply.encode(w, cx)?,
            Reply::BuildPathsWithResults(results) => results.encode(w, cx)?,
            Reply::AddPermRoot(path) => path.encode(w, cx)?,
        }
        Ok(())
    }
}
