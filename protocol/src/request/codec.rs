//! The arguments of every request, per version: [`Request::encode_args`] and
//! [`Request::decode`].

use std::collections::{BTreeMap, BTreeSet};

use pkgchain_store_model::store_path::StorePath;

use super::{
    AddBuildLog, AddMultipleToStore, AddTextToStore, AddToStore, AddToStoreNar, AddToStoreOld,
    BasicDerivation, BuildDerivation, ClientSettings, CollectGarbage, DrvOutputKey,
    QueryValidPaths, RegisterDrvOutput, Request, RequestError,
};
use crate::context::WireContext;
use crate::opcode::Opcode;
use crate::types::BuildMode;
use crate::wire::read::{read_bool, read_bytes, read_len, read_string, read_u64};
use crate::wire::{ByteString, Decode, Encode, WireError, WireRead, WireWriter};

/// A byte string with the limit of text strings (paths, link names).
pub(crate) async fn read_short_bytes<R: WireRead>(
    r: &mut R,
    cx: &WireContext,
    what: &'static str,
) -> Result<ByteString, WireError> {
    read_bytes(r, cx.limits.max_string_len, what)
        .await
        .map(ByteString)
}

async fn read_path<R: WireRead>(
    r: &mut R,
    cx: &WireContext,
    what: &'static str,
) -> Result<StorePath, WireError> {
    StorePath::decode(r, cx, what).await
}

fn put_mode(w: &mut WireWriter, mode: BuildMode, cx: &WireContext) -> Result<(), WireError> {
    if cx.at_least(15) {
        w.put_u64(mode.to_wire());
    } else if mode != BuildMode::Normal {
        return Err(WireError::not_representable(
            "BuildPaths build mode",
            "repairing or checking needs protocol 1.15",
        ));
    }
    Ok(())
}

impl Request {
    /// Appends the arguments only (what [`Request::decode`] reads).
    pub fn encode_args(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        match self {
            Request::IsValidPath(p)
            | Request::HasSubstitutes(p)
            | Request::QueryPathHash(p)
            | Request::QueryReferences(p)
            | Request::QueryReferrers(p)
            | Request::EnsurePath(p)
            | Request::AddTempRoot(p)
            | Request::QueryDeriver(p)
            | Request::QuerySubstitutablePathInfo(p)
            | Request::QueryDerivationOutputs(p)
            | Request::QueryPathInfo(p)
            | Request::QueryDerivationOutputNames(p)
            | Request::QueryValidDerivers(p)
            | Request::NarFromPath(p)
            | Request::QueryDerivationOutputMap(p) => p.encode(w, cx)?,
            Request::SyncWithGC
            | Request::FindRoots
            | Request::QueryAllValidPaths
            | Request::ImportPaths
            | Request::OptimiseStore => {}
            Request::AddToStoreOld(req) => {
                if cx.at_least(25) {
                    return Err(WireError::not_representable(
                        "AddToStore",
                        "the old form is not read from protocol 1.25 on",
                    ));
                }
                req.encode(w);
            }
            Request::AddToStore(req) => {
                if !cx.at_least(25) {
                    return Err(WireError::not_representable(
                        "AddToStore",
                        "the content-address form needs protocol 1.25",
                    ));
                }
                req.encode(w, cx)?;
            }
            Request::AddTextToStore(req) => req.encode(w, cx)?,
            Request::BuildPaths { paths, mode } => {
                paths.encode(w, cx)?;
                put_mode(w, *mode, cx)?;
            }
            Request::AddIndirectRoot(path) => path.encode(w, cx)?,
            Request::ExportPath { path, obsolete } => {
                path.encode(w, cx)?;
                w.put_u64(*obsolete);
            }
            Request::SetOptions(settings) => settings.encode(w, cx)?,
            Request::CollectGarbage(req) => req.encode(w, cx)?,
            Request::QueryPathFromHashPart(hash_part) => w.put_str(hash_part),
            Request::QuerySubstitutablePathInfos(map) => {
                if cx.at_least(22) {
                    map.encode(w, cx)?;
                } else {
                    // Older daemons take only the paths; Nix drops the content addresses too.
                    w.put_u64(map.len() as u64);
                    for path in map.keys() {
                        path.encode(w, cx)?;
                    }
                }
            }
            Request::QueryValidPaths(req) => {
                req.paths.encode(w, cx)?;
                if cx.at_least(27) {
                    w.put_bool(req.substitute);
                }
            }
            Request::QuerySubstitutablePaths(paths) => paths.encode(w, cx)?,
            Request::VerifyStore {
                check_contents,
                repair,
            } => {
                w.put_bool(*check_contents);
                w.put_bool(*repair);
            }
            Request::BuildDerivation(req) => {
                req.drv_path.encode(w, cx)?;
                req.drv.encode(w, cx)?;
                req.mode.encode(w, cx)?;
            }
            Request::AddSignatures { path, sigs } => {
                path.encode(w, cx)?;
                sigs.encode(w, cx)?;
            }
            Request::AddToStoreNar(req) => req.encode(w, cx)?,
            Request::QueryMissing(paths) => paths.encode(w, cx)?,
            Request::RegisterDrvOutput(req) => req.encode(w, cx)?,
            Request::QueryRealisation(key) => key.encode(w, cx)?,
            Request::AddMultipleToStore(req) => {
                w.put_bool(req.repair);
                w.put_bool(req.dont_check_sigs);
            }
            Request::AddBuildLog(req) => req.encode(w),
            Request::BuildPathsWithResults { paths, mode } => {
                paths.encode(w, cx)?;
                mode.encode(w, cx)?;
            }
            Request::AddPermRoot { path, gc_root } => {
                path.encode(w, cx)?;
                gc_root.encode(w, cx)?;
            }
        }
        Ok(())
    }

    /// Reads the arguments of operation `op` (the u64 the request started with, already
    /// read). Unknown numbers give [`RequestError::UnknownOpcode`]; known operations that are
    /// not requests in scope give [`RequestError::NotServed`].
    pub async fn decode<R: WireRead>(
        op: u64,
        r: &mut R,
        cx: &WireContext,
    ) -> Result<Request, RequestError> {
        let opcode = Opcode::try_from(op)?;
        let path = "store path";
        Ok(match opcode {
            Opcode::IsValidPath => Request::IsValidPath(read_path(r, cx, path).await?),
            Opcode::HasSubstitutes => Request::HasSubstitutes(read_path(r, cx, path).await?),
            Opcode::QueryPathHash => Request::QueryPathHash(read_path(r, cx, path).await?),
            Opcode::QueryReferences => Request::QueryReferences(read_path(r, cx, path).await?),
            Opcode::QueryReferrers => Request::QueryReferrers(read_path(r, cx, path).await?),
            Opcode::AddToStore if cx.at_least(25) => {
                Request::AddToStore(AddToStore::decode(r, cx).await?)
            }
            Opcode::AddToStore => Request::AddToStoreOld(AddToStoreOld::decode(r, cx).await?),
            Opcode::AddTextToStore => Request::AddTextToStore(AddTextToStore::decode(r, cx).await?),
            Opcode::BuildPaths => {
                let paths = Vec::decode(r, cx, "BuildPaths derived path").await?;
                let mode = if cx.at_least(15) {
                    BuildMode::decode(r, cx, "BuildPaths build mode").await?
                } else {
                    BuildMode::Normal
                };
                Request::BuildPaths { paths, mode }
            }
            Opcode::EnsurePath => Request::EnsurePath(read_path(r, cx, path).await?),
            Opcode::AddTempRoot => Request::AddTempRoot(read_path(r, cx, path).await?),
            Opcode::AddIndirectRoot => {
                Request::AddIndirectRoot(read_short_bytes(r, cx, "AddIndirectRoot path").await?)
            }
            Opcode::SyncWithGC => Request::SyncWithGC,
            Opcode::FindRoots => Request::FindRoots,
            Opcode::ExportPath => Request::ExportPath {
                path: read_path(r, cx, path).await?,
                obsolete: read_u64(r, "ExportPath obsolete flag").await?,
            },
            Opcode::QueryDeriver => Request::QueryDeriver(read_path(r, cx, path).await?),
            Opcode::SetOptions => Request::SetOptions(ClientSettings::decode(r, cx).await?),
            Opcode::CollectGarbage => Request::CollectGarbage(CollectGarbage::decode(r, cx).await?),
            Opcode::QuerySubstitutablePathInfo => {
                Request::QuerySubstitutablePathInfo(read_path(r, cx, path).await?)
            }
            Opcode::QueryDerivationOutputs => {
                Request::QueryDerivationOutputs(read_path(r, cx, path).await?)
            }
            Opcode::QueryAllValidPaths => Request::QueryAllValidPaths,
            Opcode::QueryPathInfo => Request::QueryPathInfo(read_path(r, cx, path).await?),
            Opcode::ImportPaths => Request::ImportPaths,
            Opcode::QueryDerivationOutputNames => {
                Request::QueryDerivationOutputNames(read_path(r, cx, path).await?)
            }
            Opcode::QueryPathFromHashPart => Request::QueryPathFromHashPart(
                read_string(
                    r,
                    cx.limits.max_string_len,
                    "QueryPathFromHashPart hash part",
                )
                .await?,
            ),
            Opcode::QuerySubstitutablePathInfos => {
                let what = "QuerySubstitutablePathInfos paths";
                let map = if cx.at_least(22) {
                    BTreeMap::decode(r, cx, what).await?
                } else {
                    let len = read_len(r, cx.limits.max_list_len, what).await?;
                    let mut map = BTreeMap::new();
                    for _ in 0..len {
                        map.insert(read_path(r, cx, what).await?, None);
                    }
                    map
                };
                Request::QuerySubstitutablePathInfos(map)
            }
            Opcode::QueryValidPaths => {
                let paths = BTreeSet::decode(r, cx, "QueryValidPaths paths").await?;
                let substitute = if cx.at_least(27) {
                    read_bool(r, "QueryValidPaths substitute").await?
                } else {
                    false
                };
                Request::QueryValidPaths(QueryValidPaths { paths, substitute })
            }
            Opcode::QuerySubstitutablePaths => Request::QuerySubstitutablePaths(
                BTreeSet::decode(r, cx, "QuerySubstitutablePaths paths").await?,
            ),
            Opcode::QueryValidDerivers => {
                Request::QueryValidDerivers(read_path(r, cx, path).await?)
            }
            Opcode::OptimiseStore => Request::OptimiseStore,
            Opcode::VerifyStore => Request::VerifyStore {
                check_contents: read_bool(r, "VerifyStore checkContents").await?,
                repair: read_bool(r, "VerifyStore repair").await?,
            },
            Opcode::BuildDerivation => {
                let drv_path = read_path(r, cx, "BuildDerivation derivation path").await?;
                let drv = BasicDerivation::decode(r, cx, "BuildDerivation derivation")
                    .await
                    .map_err(|e| e.context("BuildDerivation"))?;
                let mode = BuildMode::decode(r, cx, "BuildDerivation build mode").await?;
                Request::BuildDerivation(BuildDerivation {
                    drv_path,
                    drv,
                    mode,
                })
            }
            Opcode::AddSignatures => Request::AddSignatures {
                path: read_path(r, cx, path).await?,
                sigs: BTreeSet::decode(r, cx, "AddSignatures signatures").await?,
            },
            Opcode::NarFromPath => Request::NarFromPath(read_path(r, cx, path).await?),
            Opcode::AddToStoreNar => Request::AddToStoreNar(AddToStoreNar::decode(r, cx).await?),
            Opcode::QueryMissing => {
                Request::QueryMissing(Vec::decode(r, cx, "QueryMissing derived path").await?)
            }
            Opcode::QueryDerivationOutputMap => {
                Request::QueryDerivationOutputMap(read_path(r, cx, path).await?)
            }
            Opcode::RegisterDrvOutput => {
                Request::RegisterDrvOutput(RegisterDrvOutput::decode(r, cx).await?)
            }
            Opcode::QueryRealisation => {
                Request::QueryRealisation(DrvOutputKey::decode(r, cx).await?)
            }
            Opcode::AddMultipleToStore => Request::AddMultipleToStore(AddMultipleToStore {
                repair: read_bool(r, "AddMultipleToStore repair").await?,
                dont_check_sigs: read_bool(r, "AddMultipleToStore dontCheckSigs").await?,
            }),
            Opcode::AddBuildLog => Request::AddBuildLog(AddBuildLog::decode(r, cx).await?),
            Opcode::BuildPathsWithResults => Request::BuildPathsWithResults {
                paths: Vec::decode(r, cx, "BuildPathsWithResults derived path").await?,
                mode: BuildMode::decode(r, cx, "BuildPathsWithResults build mode").await?,
            },
            Opcode::AddPermRoot => Request::AddPermRoot {
                path: read_path(r, cx, path).await?,
                gc_root: read_short_bytes(r, cx, "AddPermRoot root path").await?,
            },
            Opcode::QueryFailedPaths
            | Opcode::ClearFailedPaths
            | Opcode::QueryActiveBuilds
            | Opcode::AddTempRoots
            | Opcode::QueryPathInfos
            | Opcode::SubmitOutput
            | Opcode::AddToStoreScanning => return Err(RequestError::NotServed(opcode)),
        })
    }
}
