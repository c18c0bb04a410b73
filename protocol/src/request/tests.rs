#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use pkgchain_store_model::store_path::StoreDir;

use super::*;
use crate::fixtures::{self, contexts, cx_with, path};
use crate::types::OutputsSpec;
use crate::version::{
    FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS, FEATURE_REALISATION_WITH_PATH_NOT_HASH,
};
use crate::wire::{SyncReader, WireRead, WireWriter};

/// The variant's name; the match is exhaustive so that a new variant must be added here, and
/// [`every_variant_is_tested`] then fails until the fixtures have one.
fn variant(req: &Request) -> &'static str {
    match req {
        Request::IsValidPath(_) => "IsValidPath",
        Request::HasSubstitutes(_) => "HasSubstitutes",
        Request::QueryPathHash(_) => "QueryPathHash",
        Request::QueryReferences(_) => "QueryReferences",
        Request::QueryReferrers(_) => "QueryReferrers",
        Request::AddToStoreOld(_) => "AddToStoreOld",
        Request::AddToStore(_) => "AddToStore",
        Request::AddTextToStore(_) => "AddTextToStore",
        Request::BuildPaths { .. } => "BuildPaths",
        Request::EnsurePath(_) => "EnsurePath",
        Request::AddTempRoot(_) => "AddTempRoot",
        Request::AddIndirectRoot(_) => "AddIndirectRoot",
        Request::SyncWithGC => "SyncWithGC",
        Request::FindRoots => "FindRoots",
        Request::ExportPath { .. } => "ExportPath",
        Request::QueryDeriver(_) => "QueryDeriver",
        Request::SetOptions(_) => "SetOptions",
        Request::CollectGarbage(_) => "CollectGarbage",
        Request::QuerySubstitutablePathInfo(_) => "QuerySubstitutablePathInfo",
        Request::QueryDerivationOutputs(_) => "QueryDerivationOutputs",
        Request::QueryAllValidPaths => "QueryAllValidPaths",
        Request::QueryPathInfo(_) => "QueryPathInfo",
        Request::ImportPaths => "ImportPaths",
        Request::QueryDerivationOutputNames(_) => "QueryDerivationOutputNames",
        Request::QueryPathFromHashPart(_) => "QueryPathFromHashPart",
        Request::QuerySubstitutablePathInfos(_) => "QuerySubstitutablePathInfos",
        Request::QueryValidPaths(_) => "QueryValidPaths",
        Request::QuerySubstitutablePaths(_) => "QuerySubstitutablePaths",
        Request::QueryValidDerivers(_) => "QueryValidDerivers",
        Request::OptimiseStore => "OptimiseStore",
        Request::VerifyStore { .. } => "VerifyStore",
        Request::BuildDerivation(_) => "BuildDerivation",
        Request::AddSignatures { .. } => "AddSignatures",
        Request::NarFromPath(_) => "NarFromPath",
        Request::AddToStoreNar(_) => "AddToStoreNar",
        Request::QueryMissing(_) => "QueryMissing",
        Request::QueryDerivationOutputMap(_) => "QueryDerivationOutputMap",
        Request::RegisterDrvOutput(RegisterDrvOutput::Pre1_31 { .. }) => "RegisterDrvOutput<1.31",
        Request::RegisterDrvOutput(RegisterDrvOutput::Legacy(_)) => "RegisterDrvOutput JSON",
        Request::RegisterDrvOutput(RegisterDrvOutput::Realisation(_)) => "RegisterDrvOutput binary",
        Request::QueryRealisation(DrvOutputKey::Legacy(_)) => "QueryRealisation legacy",
        Request::QueryRealisation(DrvOutputKey::Path(_)) => "QueryRealisation binary",
        Request::AddMultipleToStore(_) => "AddMultipleToStore",
        Request::AddBuildLog(_) => "AddBuildLog",
        Request::BuildPathsWithResults { .. } => "BuildPathsWithResults",
        Request::AddPermRoot { .. } => "AddPermRoot",
    }
}

fn encode(req: &Request, cx: &WireContext) -> Vec<u8> {
    let mut w = WireWriter::new();
    req.encode(&mut w, cx).unwrap();
    w.into_inner()
}

/// Reads the opcode and the arguments; checks that exactly the bytes were used.
fn decode_all(bytes: &[u8], cx: &WireContext) -> Result<Request, RequestError> {
    let mut r = SyncReader::new(bytes);
    let op = r.decode::<u64>(cx, "opcode")?;
    let req = Request::decode_sync(op, &mut r, cx)?;
    assert_eq!(
        r.position(),
        bytes.len() as u64,
        "trailing bytes after {req:?}"
    );
    Ok(req)
}

fn args_error(op: Opcode, args: &[u8], cx: &WireContext) -> String {
    Request::decode_sync(u64::from(op), &mut SyncReader::new(args), cx)
        .unwrap_err()
        .to_string()
}

#[test]
fn every_request_round_trips_at_every_version() {
    for cx in contexts() {
        for req in fixtures::requests(&cx) {
            let bytes = encode(&req, &cx);
            let back = decode_all(&bytes, &cx)
                .unwrap_or_else(|e| panic!("{req:?} at {:?}: {e}", cx.version));
            assert_eq!(back, req, "at {:?} {:?}", cx.version, cx.features);
            assert_eq!(back.opcode(), req.opcode());
        }
    }
}

#[test]
fn every_variant_is_tested() {
    let tested: BTreeSet<&str> = contexts()
        .iter()
        .flat_map(fixtures::requests)
        .map(|r| variant(&r))
        .collect();
    assert_eq!(tested.len(), 46, "{tested:?}");
    // Every operation that has a request form appears.
    let ops: BTreeSet<Opcode> = contexts()
        .iter()
        .flat_map(fixtures::requests)
        .map(|r| r.opcode())
        .collect();
    for &op in Opcode::ALL {
        let served = !matches!(
            Request::decode_sync(u64::from(op), &mut SyncReader::new(&[][..]), &contexts()[0]),
            Err(RequestError::NotServed(_))
        );
        assert_eq!(ops.contains(&op), served, "{op}");
    }
}

#[test]
fn every_truncation_is_end_of_input() {
    for cx in contexts() {
        for req in fixtures::requests(&cx) {
            let bytes = encode(&req, &cx);
            for len in 8..bytes.len() {
                match decode_all(&bytes[..len], &cx) {
                    Err(RequestError::Wire(e)) if e.is_eof() => {}
                    other => panic!("{req:?} cut at {len}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn unknown_and_unserved_operations() {
    let cx = WireContext::new(ProtocolVersion::LATEST);
    let err = |op| {
        Request::decode_sync(op, &mut SyncReader::new(&[][..]), &cx)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(err(2), "invalid operation 2");
    assert_eq!(err(u64::MAX), "invalid operation 18446744073709551615");
    assert_eq!(
        err(24),
        "invalid operation 24 (QueryFailedPaths is not served)"
    );
    assert_eq!(
        err(1001),
        "invalid operation 1001 (AddToStoreScanning is not served)"
    );
}

/// SetOptions' twelve fixed fields, in the reference's order, each with its own value.
#[test]
fn set_options_field_order() {
    for minor in [11u8, 12, 21, 38] {
        let cx = cx_with(minor, &[]);
        let mut w = WireWriter::new();
        for value in [
            1u64, // keepFailed
            0,    // keepGoing
            1,    // tryFallback
            5,    // verbosity
            7,    // maxBuildJobs
            300,  // maxSilentTime
            1,    // useBuildHook (obsolete)
            0,    // verboseBuild: lvlError = verbose
            0,    // logType (obsolete)
            0,    // printBuildTrace (obsolete)
            3,    // buildCores
            0,    // useSubstitutes
        ] {
            w.put_u64(value);
        }
        if minor >= 12 {
            w.put_u64(1);
            w.put_str("sandbox");
            w.put_str("false");
        }
        let settings =
            match decode_all(&[&19u64.to_le_bytes()[..], w.as_slice()].concat(), &cx).unwrap() {
                Request::SetOptions(s) => s,
                other => panic!("{other:?}"),
            };
        let mut expected = ClientSettings {
            keep_failed: true,
            keep_going: false,
            try_fallback: true,
            verbosity: 5,
            max_build_jobs: 7,
            max_silent_time: 300,
            verbose_build: true,
            build_cores: 3,
            use_substitutes: false,
            overrides: BTreeMap::new(),
        };
        if minor >= 12 {
            expected
                .overrides
                .insert("sandbox".to_owned(), "false".to_owned());
        }
        assert_eq!(settings, expected, "1.{minor}");
        // Encoding writes the same bytes (the obsolete fields as clients send them).
        assert_eq!(
            encode(&Request::SetOptions(expected), &cx)[8..],
            *w.as_slice()
        );
    }
    // A quiet client sends lvlVomit (7 from Nix 2.4, 6 in 2.3): not verbose.
    let mut w = WireWriter::new();
    for value in [0u64, 0, 0, 3, 1, 0, 1, 6, 0, 0, 0, 1, 0] {
        w.put_u64(value);
    }
    let cx = cx_with(21, &[]);
    match Request::decode_sync(19, &mut SyncReader::new(w.as_slice()), &cx).unwrap() {
        Request::SetOptions(s) => assert_eq!(s, ClientSettings::default()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn set_options_bounds() {
    let cx = cx_with(38, &[]);
    let mut w = WireWriter::new();
    w.put_u64(0);
    w.put_u64(0);
    w.put_u64(0);
    w.put_u64(3);
    w.put_u64(1 << 32); // maxBuildJobs: Nix reads an unsigned int
    assert_eq!(
        args_error(Opcode::SetOptions, w.as_slice(), &cx),
        "SetOptions maxBuildJobs (at byte 32): integer 4294967296 is too large (maximum 4294967295)"
    );
    let mut w = WireWriter::new();
    for _ in 0..12 {
        w.put_u64(0);
    }
    w.put_u64(u64::MAX);
    assert_eq!(
        args_error(Opcode::SetOptions, w.as_slice(), &cx),
        "SetOptions overrides (at byte 96): length 18446744073709551615 exceeds limit 1048576"
    );
    let mut with_overrides = ClientSettings::default();
    with_overrides.overrides.insert("a".into(), "b".into());
    let err = Request::SetOptions(with_overrides)
        .encode(&mut WireWriter::new(), &cx_with(11, &[]))
        .unwrap_err();
    assert!(err.to_string().contains("need protocol 1.12"), "{err}");
}

#[test]
fn query_valid_paths_substitute_flag_from_1_27() {
    let req = Request::QueryValidPaths(QueryValidPaths {
        paths: [path("a")].into(),
        substitute: true,
    });
    let old = encode(&req, &cx_with(26, &[]));
    let new = encode(&req, &cx_with(27, &[]));
    assert_eq!(new.len(), old.len() + 8);
    assert_eq!(new[..old.len()], old[..]);
    assert_eq!(new[old.len()..], 1u64.to_le_bytes());
    match decode_all(&old, &cx_with(26, &[])).unwrap() {
        Request::QueryValidPaths(q) => assert!(!q.substitute),
        other => panic!("{other:?}"),
    }
}

#[test]
fn build_mode_from_1_15() {
    let req = Request::BuildPaths {
        paths: vec![DerivedPath::Opaque(path("a"))],
        mode: BuildMode::Normal,
    };
    let old = encode(&req, &cx_with(14, &[]));
    let new = encode(&req, &cx_with(15, &[]));
    assert_eq!(new.len(), old.len() + 8);
    assert_eq!(decode_all(&old, &cx_with(14, &[])).unwrap(), req);
    let repair = Request::BuildPaths {
        paths: vec![],
        mode: BuildMode::Repair,
    };
    let err = repair
        .encode(&mut WireWriter::new(), &cx_with(14, &[]))
        .unwrap_err();
    assert!(err.to_string().contains("needs protocol 1.15"), "{err}");
    // BuildDerivation always carries it.
    let mut w = WireWriter::new();
    w.put_u64(3);
    let e = args_error(
        Opcode::BuildPaths,
        &[&0u64.to_le_bytes()[..], w.as_slice()].concat(),
        &cx_with(21, &[]),
    );
    assert_eq!(e, "BuildPaths build mode (at byte 8): unknown value 3");
}

#[test]
fn derived_path_text_form_changes_at_1_30() {
    let bare_drv = StoreDir::default().display(&path("x.drv"));
    let mut w = WireWriter::new();
    w.put_u64(1);
    w.put_str(&bare_drv);
    for (minor, expected) in [
        (29, DerivedPath::built(path("x.drv"), OutputsSpec::All)),
        (30, DerivedPath::Opaque(path("x.drv"))),
    ] {
        match Request::decode_sync(40, &mut SyncReader::new(w.as_slice()), &cx_with(minor, &[]))
            .unwrap()
        {
            Request::QueryMissing(paths) => assert_eq!(paths, [expected], "1.{minor}"),
            other => panic!("{other:?}"),
        }
    }
    let err = Request::QueryMissing(vec![DerivedPath::Opaque(path("x.drv"))])
        .encode(&mut WireWriter::new(), &cx_with(29, &[]))
        .unwrap_err();
    assert!(err.to_string().contains("below protocol 1.30"), "{err}");
}

#[test]
fn add_to_store_form_changes_at_1_25() {
    for cx in contexts() {
        let old = fixtures::requests(&cx_with(21, &[]))
            .into_iter()
            .find(|r| matches!(r, Request::AddToStoreOld(_)))
            .unwrap();
        let new = fixtures::requests(&cx_with(25, &[]))
            .into_iter()
            .find(|r| matches!(r, Request::AddToStore(_)))
            .unwrap();
        let (ok, bad) = if cx.at_least(25) {
            (new, old)
        } else {
            (old, new)
        };
        assert!(ok.encode(&mut WireWriter::new(), &cx).is_ok());
        assert!(bad.encode(&mut WireWriter::new(), &cx).is_err());
    }
    // Hand-built old form: name, fixed, recursive, algo.
    let mut w = WireWriter::new();
    w.put_str("src");
    w.put_u64(0);
    w.put_u64(1);
    w.put_str("nonsense");
    let req = match Request::decode_sync(7, &mut SyncReader::new(w.as_slice()), &cx_with(24, &[]))
        .unwrap()
    {
        Request::AddToStoreOld(req) => req,
        other => panic!("{other:?}"),
    };
    // fixed = 0: NAR + SHA-256, whatever the algorithm says.
    assert_eq!(
        req.method_and_algo().unwrap(),
        (
            pkgchain_store_model::content_address::ContentAddressMethod::NixArchive,
            pkgchain_store_model::hash::HashAlgo::Sha256
        )
    );
    let mut w = WireWriter::new();
    w.put_str("src");
    w.put_u64(1);
    w.put_u64(2);
    assert_eq!(
        args_error(Opcode::AddToStore, w.as_slice(), &cx_with(21, &[])),
        "AddToStore recursive (at byte 24): unsupported file ingestion method 2 (0 is flat, 1 is NAR)"
    );
    let mut w = WireWriter::new();
    w.put_str("src");
    w.put_str("fixed:r:sha257");
    let e = args_error(Opcode::AddToStore, w.as_slice(), &cx_with(25, &[]));
    assert!(
        e.starts_with("AddToStore content-address method (at byte 16): "),
        "{e}"
    );
}

#[test]
fn payload_per_version() {
    let nar = fixtures::requests(&cx_with(38, &[]))
        .into_iter()
        .find(|r| matches!(r, Request::AddToStoreNar(_)))
        .unwrap();
    for (minor, payload) in [
        (20, Payload::RawNar),
        (21, Payload::StderrRead),
        (22, Payload::StderrRead),
        (23, Payload::Framed),
        (38, Payload::Framed),
    ] {
        assert_eq!(nar.payload(&cx_with(minor, &[])), payload, "1.{minor}");
    }
    for cx in contexts() {
        for req in fixtures::requests(&cx) {
            let expected = match req {
                Request::AddToStoreOld(_) => Payload::RawNar,
                Request::AddToStore(_)
                | Request::AddMultipleToStore(_)
                | Request::AddBuildLog(_) => Payload::Framed,
                Request::AddToStoreNar(_) if cx.at_least(23) => Payload::Framed,
                Request::AddToStoreNar(_) | Request::ImportPaths => Payload::StderrRead,
                _ => Payload::None,
            };
            assert_eq!(req.payload(&cx), expected, "{req:?}");
        }
    }
}

#[test]
fn substitutable_path_infos_list_before_1_22() {
    let mut w = WireWriter::new();
    w.put_u64(1);
    w.put_str(&StoreDir::default().display(&path("a")));
    match Request::decode_sync(30, &mut SyncReader::new(w.as_slice()), &cx_with(21, &[])).unwrap() {
        Request::QuerySubstitutablePathInfos(map) => {
            assert_eq!(map, [(path("a"), None)].into())
        }
        other => panic!("{other:?}"),
    }
    // The same bytes from 1.22 lack the content address after the path.
    let e = args_error(
        Opcode::QuerySubstitutablePathInfos,
        w.as_slice(),
        &cx_with(22, &[]),
    );
    assert!(e.contains("unexpected end of input"), "{e}");
}

#[test]
fn collect_garbage_forms() {
    let dir = StoreDir::default();
    // Without the feature: action, [paths], ignoreLiveness, maxFreed, three obsolete fields.
    let mut w = WireWriter::new();
    w.put_u64(3);
    w.put_u64(1);
    w.put_str(&dir.display(&path("a")));
    w.put_u64(0);
    w.put_u64(u64::MAX);
    for _ in 0..3 {
        w.put_u64(0);
    }
    let expected = Request::CollectGarbage(CollectGarbage {
        action: GcAction::DeleteSpecific,
        paths: GcPaths::Specific {
            paths: [path("a")].into(),
            delete_referrers: false,
        },
        ignore_liveness: false,
        max_freed: u64::MAX,
    });
    let cx = cx_with(38, &[]);
    assert_eq!(
        Request::decode_sync(20, &mut SyncReader::new(w.as_slice()), &cx).unwrap(),
        expected
    );
    assert_eq!(encode(&expected, &cx)[8..], *w.as_slice());

    // With the feature: tag 0, [paths], deleteReferrers.
    let fcx = cx_with(38, &[FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS]);
    let mut w = WireWriter::new();
    w.put_u64(3);
    w.put_u64(0);
    w.put_u64(1);
    w.put_str(&dir.display(&path("a")));
    w.put_u64(1);
    w.put_u64(0);
    w.put_u64(u64::MAX);
    for _ in 0..3 {
        w.put_u64(0);
    }
    let with_referrers = Request::CollectGarbage(CollectGarbage {
        action: GcAction::DeleteSpecific,
        paths: GcPaths::Specific {
            paths: [path("a")].into(),
            delete_referrers: true,
        },
        ignore_liveness: false,
        max_freed: u64::MAX,
    });
    assert_eq!(
        Request::decode_sync(20, &mut SyncReader::new(w.as_slice()), &fcx).unwrap(),
        with_referrers
    );
    let err = with_referrers
        .encode(&mut WireWriter::new(), &cx)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS),
        "{err}"
    );

    // Whole store: tag 1 with the feature, an empty list without.
    let whole = Request::CollectGarbage(CollectGarbage {
        action: GcAction::DeleteDead,
        paths: GcPaths::WholeStore,
        ignore_liveness: false,
        max_freed: 0,
    });
    assert_eq!(encode(&whole, &fcx)[16..24], 1u64.to_le_bytes());
    assert_eq!(encode(&whole, &cx)[16..24], 0u64.to_le_bytes());

    let e = args_error(Opcode::CollectGarbage, &4u64.to_le_bytes(), &cx);
    assert_eq!(e, "CollectGarbage action (at byte 0): unknown value 4");
    let e = args_error(
        Opcode::CollectGarbage,
        &[&2u64.to_le_bytes()[..], &2u64.to_le_bytes()].concat(),
        &fcx,
    );
    assert_eq!(
        e,
        "CollectGarbage whole-store tag (at byte 8): unknown value 2"
    );
}

#[test]
fn realisation_forms() {
    let pre = cx_with(30, &[]);
    let json = cx_with(31, &[]);
    let binary = cx_with(38, &[FEATURE_REALISATION_WITH_PATH_NOT_HASH]);
    for (cx, forms) in [(&pre, 1usize), (&json, 1), (&binary, 1)] {
        let regs: Vec<Request> = fixtures::requests(cx)
            .into_iter()
            .filter(|r| r.opcode() == Opcode::RegisterDrvOutput)
            .collect();
        assert_eq!(regs.len(), forms);
        for other in [&pre, &json, &binary] {
            if !std::ptr::eq(other, cx) {
                assert!(regs[0].encode(&mut WireWriter::new(), other).is_err());
            }
        }
    }
    // Below 1.31 the output path is a base name.
    let reg = fixtures::requests(&pre)
        .into_iter()
        .find(|r| r.opcode() == Opcode::RegisterDrvOutput)
        .unwrap();
    let bytes = encode(&reg, &pre);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-hello"));
    assert!(!text.contains("/nix/store/"));
    // The feature's DrvOutput is refused without the feature.
    let mut w = WireWriter::new();
    w.put_str("sha256:bad");
    let e = args_error(Opcode::QueryRealisation, w.as_slice(), &json);
    assert!(
        e.starts_with("QueryRealisation output (at byte 0): "),
        "{e}"
    );
}

#[test]
fn bounds_name_the_field() {
    let cx = cx_with(38, &[]);
    let max = u64::MAX.to_le_bytes();
    assert_eq!(
        args_error(Opcode::BuildPaths, &max, &cx),
        "BuildPaths derived path (at byte 0): length 18446744073709551615 exceeds limit 1048576"
    );
    assert_eq!(
        args_error(Opcode::QueryValidPaths, &max, &cx),
        "QueryValidPaths paths (at byte 0): length 18446744073709551615 exceeds limit 1048576"
    );
    assert_eq!(
        args_error(Opcode::AddTextToStore, &max, &cx),
        "AddTextToStore name (at byte 0): length 18446744073709551615 exceeds limit 1048576"
    );
    // BuildDerivation: a huge environment, after a valid start.
    let mut w = WireWriter::new();
    w.put_str(&StoreDir::default().display(&path("x.drv")));
    w.put_u64(0); // outputs
    w.put_u64(0); // inputSrcs
    w.put_str("x86_64-linux");
    w.put_str("/bin/sh");
    w.put_u64(0); // args
    w.put_u64(1 << 40); // env
    let e = args_error(Opcode::BuildDerivation, w.as_slice(), &cx);
    assert!(
        e.starts_with("BuildDerivation: derivation environment (at byte "),
        "{e}"
    );
    assert!(
        e.ends_with("length 1099511627776 exceeds limit 1048576"),
        "{e}"
    );
    // A bad output name.
    let mut w = WireWriter::new();
    w.put_str(&StoreDir::default().display(&path("x.drv")));
    w.put_u64(1);
    w.put_str("o/ut");
    let e = args_error(Opcode::BuildDerivation, w.as_slice(), &cx);
    assert!(
        e.starts_with("BuildDerivation: derivation output name (at byte 72)"),
        "{e}"
    );
    // AddToStoreNar: a bad NAR hash.
    let mut w = WireWriter::new();
    w.put_str(&StoreDir::default().display(&path("a")));
    w.put_str("");
    w.put_str("zz");
    let e = args_error(Opcode::AddToStoreNar, w.as_slice(), &cx);
    assert!(
        e.starts_with("AddToStoreNar: path info NAR hash (at byte 64)"),
        "{e}"
    );
}

#[test]
fn bad_store_paths_are_named() {
    let cx = cx_with(38, &[]);
    let mut w = WireWriter::new();
    w.put_str("/tmp/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-x");
    let e = args_error(Opcode::IsValidPath, w.as_slice(), &cx);
    assert!(e.starts_with("store path (at byte 0): "), "{e}");
    let e = args_error(Opcode::AddSignatures, w.as_slice(), &cx);
    assert!(e.starts_with("store path (at byte 0): "), "{e}");
    let mut w = WireWriter::new();
    w.put_str("/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-x.drv");
    let e = args_error(Opcode::AddBuildLog, w.as_slice(), &cx);
    assert!(e.starts_with("AddBuildLog derivation (at byte 0): "), "{e}");
    let mut w = WireWriter::new();
    w.put_str("x");
    let e = args_error(Opcode::BuildDerivation, w.as_slice(), &cx);
    assert!(
        e.starts_with("BuildDerivation derivation path (at byte 0): "),
        "{e}"
    );
}

#[test]
fn basic_derivation_model_round_trip() {
    let store_dir = StoreDir::default();
    let drv = fixtures::basic_derivation()
        .to_derivation("hello", &store_dir)
        .unwrap();
    assert_eq!(drv.outputs.len(), 3);
    let back = BasicDerivation::from_derivation(&drv, &store_dir).unwrap();
    assert_eq!(back, fixtures::basic_derivation());

    let mut bad = fixtures::basic_derivation();
    bad.outputs.insert(
        "fixed".into(),
        WireDerivationOutput {
            path: Some(path("wrong")),
            hash_algo: "r:sha256".into(),
            hash: "00".repeat(32),
        },
    );
    let e = bad.to_derivation("hello", &store_dir).unwrap_err();
    assert!(
        e.starts_with("derivation output 'fixed': fixed output has path"),
        "{e}"
    );
    bad.outputs.insert(
        "fixed".into(),
        WireDerivationOutput {
            path: Some(path("x")),
            hash_algo: "r:sha256".into(),
            hash: "impure".into(),
        },
    );
    assert!(bad.to_derivation("hello", &store_dir).is_err());
}

#[test]
fn add_multiple_to_store_entries() {
    let cx = cx_with(38, &[]);
    let info = pkgchain_store_model::path_info::ValidPathInfo {
        path: path("a"),
        info: fixtures::info(),
    };
    let mut w = WireWriter::new();
    add::multiple::encode_count(&mut w, 1);
    add::multiple::encode_info(&mut w, &info, &cx).unwrap();
    w.put_raw(b"NAR");
    let mut r = SyncReader::new(w.as_slice());
    assert_eq!(run_ready(add::multiple::decode_count(&mut r)).unwrap(), 1);
    assert_eq!(
        run_ready(add::multiple::decode_info(&mut r, &cx)).unwrap(),
        info
    );
    assert_eq!(r.into_inner(), b"NAR");
}

#[test]
fn introduced_versions() {
    assert_eq!(
        introduced_in(Opcode::AddMultipleToStore),
        Some(ProtocolVersion::new(1, 32))
    );
    assert_eq!(introduced_in(Opcode::IsValidPath), None);
}

/// The daemon runs these futures in spawned tokio tasks: they must be `Send`.
#[test]
fn async_decoders_are_send() {
    fn send<T: Send>(_: &T) {}
    let cx = cx_with(38, &[]);
    let (_client, server) = tokio::io::duplex(8);
    let mut r = crate::wire::AsyncReader::new(server);
    let fut = Request::decode(1, &mut r, &cx);
    send(&fut);
    drop(fut);
    let fut = crate::reply::Reply::decode(Opcode::QueryPathInfo, &mut r, &cx);
    send(&fut);
    drop(fut);
    let mut sink = Vec::new();
    let limits = crate::nar_copy::NarCopyLimits::default();
    let fut = crate::nar_copy::copy_nar(&mut r, &mut sink, &limits);
    send(&fut);
    drop(fut);
    let mut source = crate::tunnel::StderrReadSource::new(Some(1), 1);
    let fut = source.read_answer(&mut r, 1);
    send(&fut);
}
