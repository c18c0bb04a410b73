#![allow(clippy::unwrap_used)]

use pkgchain_store_model::store_path::StoreDir;

use super::*;
use crate::fixtures::{self, contexts, cx_with, path};
use crate::request::Request;
use crate::version::FEATURE_REALISATION_WITH_PATH_NOT_HASH;
use crate::wire::SyncReader;

fn encode(reply: &Reply, cx: &WireContext) -> Vec<u8> {
    let mut w = WireWriter::new();
    reply.encode(&mut w, cx).unwrap();
    w.into_inner()
}

fn decode_all(op: Opcode, bytes: &[u8], cx: &WireContext) -> Result<Reply, WireError> {
    let mut r = SyncReader::new(bytes);
    let reply = Reply::decode_sync(op, &mut r, cx)?;
    assert_eq!(
        r.position(),
        bytes.len() as u64,
        "trailing bytes after {reply:?}"
    );
    Ok(reply)
}

#[test]
fn every_reply_round_trips_at_every_version() {
    for cx in contexts() {
        for (op, reply) in fixtures::replies(&cx) {
            assert!(reply.fits(op, &cx), "{reply:?} does not fit {op}");
            let bytes = encode(&reply, &cx);
            let back = decode_all(op, &bytes, &cx)
                .unwrap_or_else(|e| panic!("{op} {reply:?} at {:?}: {e}", cx.version));
            assert_eq!(back, reply, "{op} at {:?} {:?}", cx.version, cx.features);
            for len in 0..bytes.len() {
                let e = decode_all(op, &bytes[..len], &cx).unwrap_err();
                assert!(e.is_eof(), "{op} cut at {len}: {e}");
            }
        }
    }
}

#[test]
fn every_request_has_a_reply() {
    for cx in contexts() {
        let answered: Vec<Opcode> = fixtures::replies(&cx).iter().map(|(op, _)| *op).collect();
        for req in fixtures::requests(&cx) {
            assert!(answered.contains(&req.opcode()), "{:?}", req.opcode());
        }
    }
}

#[test]
fn ack_ops_reply_one() {
    let cx = cx_with(38, &[]);
    for &op in ACK_OPS {
        assert!(replies_with_one(op));
        assert_eq!(encode(&Reply::Ack, &cx), 1u64.to_le_bytes());
        // Clients ignore the value.
        assert_eq!(
            decode_all(op, &7u64.to_le_bytes(), &cx).unwrap(),
            Reply::Ack
        );
    }
    for op in [
        Opcode::IsValidPath,
        Opcode::SetOptions,
        Opcode::QueryMissing,
    ] {
        assert!(!replies_with_one(op));
    }
    assert_eq!(
        ACK_OPS.len(),
        9,
        "BuildPaths, EnsurePath, AddTempRoot, AddIndirectRoot, SyncWithGC, ExportPath, \
         OptimiseStore, AddSignatures, AddBuildLog"
    );
    assert!(!Reply::Ack.fits(Opcode::QueryPathInfo, &cx));
    assert!(Reply::Nothing.fits(Opcode::SetOptions, &cx));
}

#[test]
fn query_path_info_validity_flag_from_1_17() {
    let info = fixtures::info();
    let reply = Reply::QueryPathInfo(Some(info.clone()));
    let old = encode(&reply, &cx_with(16, &[]));
    let new = encode(&reply, &cx_with(17, &[]));
    assert_eq!(new[..8], 1u64.to_le_bytes());
    assert_eq!(new[8..], old[..]);
    assert_eq!(
        encode(&Reply::QueryPathInfo(None), &cx_with(17, &[])),
        0u64.to_le_bytes()
    );
    let err = Reply::QueryPathInfo(None)
        .encode(&mut WireWriter::new(), &cx_with(16, &[]))
        .unwrap_err();
    assert!(err.to_string().contains("answered with an error"), "{err}");
    // 1.15: no ultimate/sigs/ca.
    let v15 = encode(
        &Reply::QueryPathInfo(Some(fixtures::info_for(&cx_with(15, &[])))),
        &cx_with(15, &[]),
    );
    assert!(v15.len() < old.len());
}

#[test]
fn add_to_store_reply_changes_at_1_25() {
    let p = path("source");
    let old = Reply::AddToStoreOld(p.clone());
    assert!(old.fits(Opcode::AddToStore, &cx_with(24, &[])));
    assert!(!old.fits(Opcode::AddToStore, &cx_with(25, &[])));
    let bytes = encode(&old, &cx_with(24, &[]));
    let mut expected = WireWriter::new();
    expected.put_str(&StoreDir::default().display(&p));
    assert_eq!(bytes, expected.into_inner());
    // The same bytes at 1.25 start a ValidPathInfo and then end too early.
    assert!(
        decode_all(Opcode::AddToStore, &bytes, &cx_with(25, &[]))
            .unwrap_err()
            .is_eof()
    );
}

#[test]
fn find_roots_wire_form() {
    let dir = StoreDir::default();
    let mut w = WireWriter::new();
    w.put_u64(3);
    for (link, target) in [
        ("/home/u/result", path("a")),
        ("{censored}", path("a")),
        ("{temp:1}", path("b")),
    ] {
        w.put_str(link);
        w.put_str(&dir.display(&target));
    }
    let cx = cx_with(38, &[]);
    let reply = decode_all(Opcode::FindRoots, w.as_slice(), &cx).unwrap();
    let Reply::FindRoots(roots) = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(roots.0.len(), 2);
    assert_eq!(roots.0[&path("a")].len(), 2);
    assert_eq!(encode(&reply, &cx), w.into_inner());
    let e = decode_all(Opcode::FindRoots, &u64::MAX.to_le_bytes(), &cx).unwrap_err();
    assert_eq!(
        e.to_string(),
        "FindRoots roots (at byte 0): length 18446744073709551615 exceeds limit 1048576"
    );
}

#[test]
fn query_missing_and_gc_field_order() {
    let dir = StoreDir::default();
    let cx = cx_with(21, &[]);
    let mut w = WireWriter::new();
    w.put_u64(1);
    w.put_str(&dir.display(&path("build.drv")));
    w.put_u64(0);
    w.put_u64(1);
    w.put_str(&dir.display(&path("unknown")));
    w.put_u64(11);
    w.put_u64(22);
    let reply = decode_all(Opcode::QueryMissing, w.as_slice(), &cx).unwrap();
    assert_eq!(
        reply,
        Reply::QueryMissing(Missing {
            will_build: [path("build.drv")].into(),
            will_substitute: Default::default(),
            unknown: [path("unknown")].into(),
            download_size: 11,
            nar_size: 22,
        })
    );
    let gc = Reply::CollectGarbage(GcResults {
        paths: vec!["/nix/store/x".to_owned()],
        bytes_freed: 99,
    });
    let bytes = encode(&gc, &cx);
    assert_eq!(
        bytes[bytes.len() - 16..bytes.len() - 8],
        99u64.to_le_bytes()
    );
    assert_eq!(bytes[bytes.len() - 8..], 0u64.to_le_bytes());
}

#[test]
fn query_realisation_forms() {
    let pre = cx_with(30, &[]);
    let json = cx_with(31, &[]);
    let binary = cx_with(38, &[FEATURE_REALISATION_WITH_PATH_NOT_HASH]);
    let forms = [
        RealisationReply::OutPath(Some(path("a"))),
        RealisationReply::Legacy(None),
        RealisationReply::Realisation(None),
    ];
    for (i, cx) in [&pre, &json, &binary].into_iter().enumerate() {
        for (j, form) in forms.iter().enumerate() {
            let ok = form.encode(&mut WireWriter::new(), cx).is_ok();
            assert_eq!(ok, i == j, "{form:?} at {:?}", cx.version);
        }
    }
    // More than one realisation in the legacy list is refused.
    let mut w = WireWriter::new();
    w.put_u64(2);
    let e = decode_all(Opcode::QueryRealisation, w.as_slice(), &json).unwrap_err();
    assert_eq!(
        e.to_string(),
        "QueryRealisation reply (at byte 0): length 2 exceeds limit 1"
    );
    let e = decode_all(Opcode::QueryRealisation, &2u64.to_le_bytes(), &binary).unwrap_err();
    assert_eq!(
        e.to_string(),
        "QueryRealisation reply (at byte 0): unknown value 2"
    );
}

#[test]
fn operations_without_replies_are_refused() {
    let cx = cx_with(38, &[]);
    let e = Reply::decode_sync(Opcode::QueryFailedPaths, &mut SyncReader::new(&[][..]), &cx)
        .unwrap_err();
    assert!(e.to_string().contains("has no reply"), "{e}");
    // Sanity: the request side agrees that 24 is not served.
    assert!(Request::decode_sync(24, &mut SyncReader::new(&[][..]), &cx).is_err());
}
