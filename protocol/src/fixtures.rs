//! Sample values for the tests: one of every request and reply, valid at a given version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pkgchain_store_model::content_address::{ContentAddress, ContentAddressMethod};
use pkgchain_store_model::hash::{Hash, HashAlgo};
use pkgchain_store_model::path_info::{PathInfo, ValidPathInfo};
use pkgchain_store_model::signature::Signature;
use pkgchain_store_model::store_path::{StoreDir, StorePath};

use crate::WireContext;
use crate::opcode::Opcode;
use crate::reply::{GcResults, Missing, RealisationReply, Reply, Roots, SubstitutablePathInfo};
use crate::request::{
    AddBuildLog, AddMultipleToStore, AddTextToStore, AddToStore, AddToStoreNar, AddToStoreOld,
    BasicDerivation, BuildDerivation, ClientSettings, CollectGarbage, DrvOutputKey, GcAction,
    GcPaths, QueryValidPaths, RegisterDrvOutput, Request, WireDerivationOutput,
};
use crate::types::{
    BuildMode, BuildResult, BuildStatus, BuiltOutput, DerivedPath, DrvOutput, KeyedBuildResult,
    LegacyDrvOutput, LegacyRealisation, OutputsSpec, Realisation, UnkeyedRealisation,
};
use crate::version::{
    FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS, FEATURE_REALISATION_WITH_PATH_NOT_HASH, ProtocolVersion,
};
use crate::wire::ByteString;

/// The versions every request and reply is tested at; the last two have features.
pub fn contexts() -> Vec<WireContext> {
    let mut all: Vec<WireContext> = [21, 25, 30, 34, 37, 38]
        .into_iter()
        .map(|minor| WireContext::new(ProtocolVersion::new(1, minor)))
        .collect();
    all.push(
        WireContext::new(ProtocolVersion::LATEST)
            .with_features([FEATURE_REALISATION_WITH_PATH_NOT_HASH]),
    );
    all.push(WireContext::new(ProtocolVersion::LATEST).with_features([
        FEATURE_REALISATION_WITH_PATH_NOT_HASH,
        FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS,
    ]));
    all
}

/// A context at `1.minor` with `features`.
pub fn cx_with(minor: u8, features: &[&str]) -> WireContext {
    WireContext::new(ProtocolVersion::new(1, minor)).with_features(features.iter().copied())
}

/// A store path with a fixed hash part.
pub fn path(name: &str) -> StorePath {
    StorePath::from_base_name(&format!("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-{name}")).unwrap()
}

/// A second store path, with another hash part.
pub fn other(name: &str) -> StorePath {
    StorePath::from_base_name(&format!("00bgd045z0d4icpbc2yyz4gx48ak44la-{name}")).unwrap()
}

/// A signature.
pub fn sig(key: &str, byte: u8) -> Signature {
    Signature::new(key, [byte; 64]).unwrap()
}

/// Path info with every field set.
pub fn info() -> PathInfo {
    let mut info = PathInfo::new(StoreDir::default(), Hash::sha256([7; 32]), 4096);
    info.deriver = Some(path("hello.drv"));
    info.references = [path("hello"), other("glibc")].into();
    info.registration_time = Some(1_700_000_000);
    info.ultimate = true;
    info.sigs = [sig("cache.example.org-1", 1), sig("k2", 2)].into();
    info.ca = Some(ContentAddress::new(
        ContentAddressMethod::NixArchive,
        Hash::sha256([3; 32]),
    ));
    info
}

/// Path info that survives every version (no 1.16 fields).
pub fn info_for(cx: &WireContext) -> PathInfo {
    let mut info = info();
    if !cx.at_least(16) {
        info.ultimate = false;
        info.sigs.clear();
        info.ca = None;
    }
    info
}

/// Derived paths representable at the version.
pub fn derived_paths(cx: &WireContext) -> Vec<DerivedPath> {
    let names = OutputsSpec::Names(["dev".to_owned(), "out".to_owned()].into());
    if cx.at_least(30) {
        vec![
            DerivedPath::Opaque(path("hello.drv")),
            DerivedPath::built(path("hello.drv"), OutputsSpec::All),
            DerivedPath::built(other("x.drv"), names),
        ]
    } else {
        vec![
            DerivedPath::Opaque(path("hello")),
            DerivedPath::built(path("hello.drv"), OutputsSpec::All),
            DerivedPath::built(other("x.drv"), names),
        ]
    }
}

/// A basic derivation with one output of each kind.
pub fn basic_derivation() -> BasicDerivation {
    let out = |path: Option<StorePath>, algo: &str, hash: &str| WireDerivationOutput {
        path,
        hash_algo: algo.to_owned(),
        hash: hash.to_owned(),
    };
    BasicDerivation {
        outputs: [
            ("out".to_owned(), out(Some(path("hello")), "", "")),
            ("dev".to_owned(), out(None, "r:sha256", "")),
            ("doc".to_owned(), out(None, "", "")),
        ]
        .into(),
        input_srcs: [other("builder.sh")].into(),
        platform: "x86_64-linux".into(),
        builder: "/bin/sh".into(),
        args: vec!["-e".into(), ByteString(vec![0xff, 0])],
        env: [
            ("out".into(), "/nix/store/x".into()),
            ("__json".into(), r#"{"a":1}"#.into()),
        ]
        .into(),
    }
}

fn legacy_id() -> LegacyDrvOutput {
    LegacyDrvOutput {
        drv_hash: Hash::sha256([9; 32]),
        output_name: "out".to_owned(),
    }
}

fn has_realisation_feature(cx: &WireContext) -> bool {
    cx.has_feature(FEATURE_REALISATION_WITH_PATH_NOT_HASH)
}

/// One of every request the version can carry (both `AddToStore` forms across versions).
pub fn requests(cx: &WireContext) -> Vec<Request> {
    let p = path("hello");
    let mut settings = ClientSettings {
        keep_going: true,
        verbosity: 5,
        max_build_jobs: 8,
        max_silent_time: 3600,
        verbose_build: true,
        build_cores: 4,
        ..ClientSettings::default()
    };
    settings.overrides.insert(
        "substituters".to_owned(),
        "https://cache.nixos.org/".to_owned(),
    );
    settings
        .overrides
        .insert("sandbox".to_owned(), "relaxed".to_owned());
    let gc_paths = if cx.has_feature(FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS) {
        GcPaths::Specific {
            paths: [p.clone()].into(),
            delete_referrers: true,
        }
    } else {
        GcPaths::Specific {
            paths: [p.clone(), other("a")].into(),
            delete_referrers: false,
        }
    };
    let substitutable: BTreeMap<StorePath, Option<ContentAddress>> = if cx.at_least(22) {
        [(p.clone(), info().ca), (other("b"), None)].into()
    } else {
        [(p.clone(), None), (other("b"), None)].into()
    };
    let mut all = vec![
        Request::IsValidPath(p.clone()),
        Request::HasSubstitutes(p.clone()),
        Request::QueryPathHash(p.clone()),
        Request::QueryReferences(p.clone()),
        Request::QueryReferrers(p.clone()),
        Request::AddTextToStore(AddTextToStore {
            name: "builder.sh".to_owned(),
            text: ByteString(b"echo hi\n\0\xff".to_vec()),
            references: [other("bash")].into(),
        }),
        Request::BuildPaths {
            paths: derived_paths(cx),
            mode: BuildMode::Repair,
        },
        Request::EnsurePath(p.clone()),
        Request::AddTempRoot(p.clone()),
        Request::AddIndirectRoot(ByteString(b"/home/u/result\xff".to_vec())),
        Request::SyncWithGC,
        Request::FindRoots,
        Request::ExportPath {
            path: p.clone(),
            obsolete: 0,
        },
        Request::QueryDeriver(p.clone()),
        Request::SetOptions(settings),
        Request::CollectGarbage(CollectGarbage {
            action: GcAction::DeleteSpecific,
            paths: gc_paths,
            ignore_liveness: false,
            max_freed: u64::MAX,
        }),
        Request::CollectGarbage(CollectGarbage {
            action: GcAction::DeleteDead,
            paths: GcPaths::WholeStore,
            ignore_liveness: true,
            max_freed: 1 << 30,
        }),
        Request::QuerySubstitutablePathInfo(p.clone()),
        Request::QueryDerivationOutputs(path("hello.drv")),
        Request::QueryAllValidPaths,
        Request::QueryPathInfo(p.clone()),
        Request::ImportPaths,
        Request::QueryDerivationOutputNames(path("hello.drv")),
        Request::QueryPathFromHashPart("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q".to_owned()),
        Request::QuerySubstitutablePathInfos(substitutable),
        Request::QueryValidPaths(QueryValidPaths {
            paths: [p.clone(), other("c")].into(),
            substitute: cx.at_least(27),
        }),
        Request::QuerySubstitutablePaths([p.clone()].into()),
        Request::QueryValidDerivers(p.clone()),
        Request::OptimiseStore,
        Request::VerifyStore {
            check_contents: true,
            repair: false,
        },
        Request::BuildDerivation(BuildDerivation {
            drv_path: path("hello.drv"),
            drv: basic_derivation(),
            mode: BuildMode::Check,
        }),
        Request::AddSignatures {
            path: p.clone(),
            sigs: [sig("k1", 4), sig("k2", 5)].into(),
        },
        Request::NarFromPath(p.clone()),
        Request::AddToStoreNar(AddToStoreNar {
            info: ValidPathInfo {
                path: p.clone(),
                info: info(),
            },
            repair: true,
            dont_check_sigs: true,
        }),
        Request::QueryMissing(derived_paths(cx)),
        Request::QueryDerivationOutputMap(path("hello.drv")),
        Request::AddMultipleToStore(AddMultipleToStore {
            repair: false,
            dont_check_sigs: true,
        }),
        Request::AddBuildLog(AddBuildLog {
            drv_path: path("hello.drv"),
        }),
        Request::BuildPathsWithResults {
            paths: derived_paths(cx),
            mode: BuildMode::Normal,
        },
        Request::AddPermRoot {
            path: p.clone(),
            gc_root: "/home/u/root".into(),
        },
    ];
    if cx.at_least(25) {
        all.push(Request::AddToStore(AddToStore {
            name: "source".to_owned(),
            method: ContentAddressMethod::NixArchive,
            hash_algo: HashAlgo::Sha256,
            references: [other("dep")].into(),
            repair: true,
        }));
        all.push(Request::AddToStore(AddToStore {
            name: "hello.drv".to_owned(),
            method: ContentAddressMethod::Text,
            hash_algo: HashAlgo::Sha256,
            references: BTreeSet::new(),
            repair: false,
        }));
    } else {
        all.push(Request::AddToStoreOld(AddToStoreOld {
            name: "source".to_owned(),
            fixed: true,
            recursive: false,
            hash_algo: "sha1".to_owned(),
        }));
    }
    let realisation = UnkeyedRealisation {
        out_path: p.clone(),
        signatures: [sig("k1", 6)].into(),
    };
    if has_realisation_feature(cx) {
        all.push(Request::RegisterDrvOutput(RegisterDrvOutput::Realisation(
            Realisation {
                id: DrvOutput {
                    drv_path: path("hello.drv"),
                    output_name: "out".to_owned(),
                },
                value: realisation,
            },
        )));
        all.push(Request::QueryRealisation(DrvOutputKey::Path(DrvOutput {
            drv_path: path("hello.drv"),
            output_name: "dev".to_owned(),
        })));
    } else {
        all.push(Request::QueryRealisation(DrvOutputKey::Legacy(legacy_id())));
        all.push(Request::RegisterDrvOutput(if cx.at_least(31) {
            RegisterDrvOutput::Legacy(LegacyRealisation {
                id: legacy_id(),
                out_path: p.clone(),
                signatures: BTreeSet::new(),
                dependent_realisations: BTreeMap::new(),
            })
        } else {
            RegisterDrvOutput::Pre1_31 {
                id: legacy_id(),
                out_path: p,
            }
        }));
    }
    all
}

/// A build result with what the version carries.
pub fn build_result(cx: &WireContext) -> BuildResult {
    let mut res = BuildResult::new(BuildStatus::Built);
    if cx.at_least(28) || has_realisation_feature(cx) {
        res.built_outputs
            .insert("out".to_owned(), BuiltOutput::new(path("hello")));
    }
    if cx.at_least(29) {
        res.times_built = 2;
        res.start_time = 1_700_000_000;
        res.stop_time = 1_700_000_060;
    }
    if cx.at_least(37) {
        res.cpu_user = Some(Duration::from_micros(1_500_000));
    }
    res
}

/// One of every reply the version can carry, with the operation it answers.
pub fn replies(cx: &WireContext) -> Vec<(Opcode, Reply)> {
    let p = path("hello");
    let set: BTreeSet<StorePath> = [p.clone(), other("glibc")].into();
    let sub = SubstitutablePathInfo {
        deriver: Some(path("hello.drv")),
        references: set.clone(),
        download_size: 100,
        nar_size: 400,
    };
    let mut roots = Roots::default();
    roots.0.insert(
        p.clone(),
        ["/home/u/result".into(), "{censored}".into()].into(),
    );
    roots.0.insert(other("x"), ["{temp:42}".into()].into());
    let mut failed = BuildResult::new(BuildStatus::PermanentFailure);
    failed.error_msg = "builder failed with exit code 1".to_owned();
    let mut all = vec![
        (Opcode::SetOptions, Reply::Nothing),
        (Opcode::AddToStoreNar, Reply::Nothing),
        (Opcode::AddMultipleToStore, Reply::Nothing),
        (Opcode::RegisterDrvOutput, Reply::Nothing),
        (Opcode::NarFromPath, Reply::NarFollows),
        (Opcode::IsValidPath, Reply::IsValidPath(true)),
        (Opcode::HasSubstitutes, Reply::HasSubstitutes(false)),
        (
            Opcode::QueryPathHash,
            Reply::QueryPathHash(Hash::sha256([5; 32])),
        ),
        (Opcode::QueryReferences, Reply::QueryReferences(set.clone())),
        (
            Opcode::QueryReferrers,
            Reply::QueryReferrers(BTreeSet::new()),
        ),
        (Opcode::AddTextToStore, Reply::AddTextToStore(p.clone())),
        (Opcode::FindRoots, Reply::FindRoots(roots)),
        (Opcode::QueryDeriver, Reply::QueryDeriver(None)),
        (
            Opcode::CollectGarbage,
            Reply::CollectGarbage(GcResults {
                paths: vec!["/nix/store/a".to_owned(), "/nix/store/b".to_owned()],
                bytes_freed: 12345,
            }),
        ),
        (
            Opcode::QuerySubstitutablePathInfo,
            Reply::QuerySubstitutablePathInfo(Some(sub.clone())),
        ),
        (
            Opcode::QuerySubstitutablePathInfo,
            Reply::QuerySubstitutablePathInfo(None),
        ),
        (
            Opcode::QueryDerivationOutputs,
            Reply::QueryDerivationOutputs(set.clone()),
        ),
        (
            Opcode::QueryAllValidPaths,
            Reply::QueryAllValidPaths(set.clone()),
        ),
        (
            Opcode::QueryPathInfo,
            Reply::QueryPathInfo(Some(info_for(cx))),
        ),
        (
            Opcode::ImportPaths,
            Reply::ImportPaths(vec![other("z"), p.clone()]),
        ),
        (
            Opcode::QueryDerivationOutputNames,
            Reply::QueryDerivationOutputNames(["dev".to_owned(), "out".to_owned()].into()),
        ),
        (
            Opcode::QueryPathFromHashPart,
            Reply::QueryPathFromHashPart(Some(p.clone())),
        ),
        (
            Opcode::QuerySubstitutablePathInfos,
            Reply::QuerySubstitutablePathInfos([(p.clone(), sub)].into()),
        ),
        (Opcode::QueryValidPaths, Reply::QueryValidPaths(set.clone())),
        (
            Opcode::QuerySubstitutablePaths,
            Reply::QuerySubstitutablePaths(set.clone()),
        ),
        (Opcode::QueryValidDerivers, Reply::QueryValidDerivers(set)),
        (Opcode::VerifyStore, Reply::VerifyStore(true)),
        (
            Opcode::BuildDerivation,
            Reply::BuildDerivation(build_result(cx)),
        ),
        (
            Opcode::BuildDerivation,
            Reply::BuildDerivation(failed.clone()),
        ),
        (
            Opcode::QueryMissing,
            Reply::QueryMissing(Missing {
                will_build: [path("hello.drv")].into(),
                will_substitute: [other("glibc")].into(),
                unknown: BTreeSet::new(),
                download_size: 1 << 20,
                nar_size: 4 << 20,
            }),
        ),
        (
            Opcode::QueryDerivationOutputMap,
            Reply::QueryDerivationOutputMap(
                [
                    ("out".to_owned(), Some(p.clone())),
                    ("dev".to_owned(), None),
                ]
                .into(),
            ),
        ),
        (
            Opcode::BuildPathsWithResults,
            Reply::BuildPathsWithResults(
                derived_paths(cx)
                    .into_iter()
                    .zip([build_result(cx), failed.clone(), failed])
                    .map(|(path, result)| KeyedBuildResult { path, result })
                    .collect(),
            ),
        ),
        (
            Opcode::AddPermRoot,
            Reply::AddPermRoot("/home/u/root".into()),
        ),
    ];
    for op in crate::reply::ACK_OPS {
        all.push((*op, Reply::Ack));
    }
    if cx.at_least(25) {
        all.push((
            Opcode::AddToStore,
            Reply::AddToStore(ValidPathInfo {
                path: p.clone(),
                info: info_for(cx),
            }),
        ));
    } else {
        all.push((Opcode::AddToStore, Reply::AddToStoreOld(p.clone())));
    }
    if cx.at_least(17) {
        all.push((Opcode::QueryPathInfo, Reply::QueryPathInfo(None)));
    }
    let realisations = if has_realisation_feature(cx) {
        vec![
            RealisationReply::Realisation(None),
            RealisationReply::Realisation(Some(UnkeyedRealisation {
                out_path: p,
                signatures: [sig("k1", 6)].into(),
            })),
        ]
    } else if cx.at_least(31) {
        vec![
            RealisationReply::Legacy(None),
            RealisationReply::Legacy(Some(LegacyRealisation {
                id: legacy_id(),
                out_path: p,
                signatures: BTreeSet::new(),
                dependent_realisations: BTreeMap::new(),
            })),
        ]
    } else {
        vec![
            RealisationReply::OutPath(None),
            RealisationReply::OutPath(Some(p)),
        ]
    };
    for r in realisations {
        all.push((Opcode::QueryRealisation, Reply::QueryRealisation(r)));
    }
    all
}
