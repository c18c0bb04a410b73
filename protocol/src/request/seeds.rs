//! Seeds for the `worker_request` fuzz target (`fuzz/fuzz_targets/worker_request.rs`): every
//! fixture request and reply behind the target's 8-byte header. The header layout and the
//! version table must match the target's.
//!
//! `cargo test -p pkgchain-protocol --release -- --ignored write_fuzz_seeds` writes them to
//! `fuzz/corpus/worker_request/`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use pkgchain_store_model::nar::{NarEvent, NarWriter};

use super::{Payload, Request};
use crate::WireContext;
use crate::fixtures;
use crate::reply::Reply;
use crate::version::{
    FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS, FEATURE_REALISATION_WITH_PATH_NOT_HASH,
};
use crate::wire::{Encode, SyncReader, WireWriter};

/// The fuzz target's version table.
const VERSIONS: &[u8] = &[
    11, 14, 16, 17, 21, 22, 23, 25, 27, 28, 29, 30, 31, 34, 37, 38,
];

fn header(op: u64, cx: &WireContext, reply: bool) -> Option<Vec<u8>> {
    let index = VERSIONS.iter().position(|&m| m == cx.version.minor())?;
    let mut features = 0u8;
    if cx.has_feature(FEATURE_REALISATION_WITH_PATH_NOT_HASH) {
        features |= 1;
    }
    if cx.has_feature(FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS) {
        features |= 2;
    }
    Some(vec![
        u8::try_from(op).ok()?,
        u8::try_from(index).ok()?,
        features,
        u8::from(reply),
        0,
        0,
        0,
        0,
    ])
}

fn small_nar() -> Vec<u8> {
    let mut w = NarWriter::new(Vec::new());
    for e in [
        NarEvent::DirectoryStart { name: None },
        NarEvent::File {
            name: Some(b"a"),
            executable: true,
            size: 3,
        },
        NarEvent::FileChunk(b"abc"),
        NarEvent::FileEnd,
        NarEvent::Symlink {
            name: Some(b"b"),
            target: b"a",
        },
        NarEvent::DirectoryEnd,
    ] {
        w.write_event(&e).unwrap();
    }
    w.finish().unwrap()
}

/// `(file name, contents)` of every seed.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for cx in fixtures::contexts() {
        let tag = format!("1.{}-f{}", cx.version.minor(), cx.features.len());
        for (i, req) in fixtures::requests(&cx).into_iter().enumerate() {
            let op = u64::from(req.opcode());
            let mut w = WireWriter::new();
            req.encode_args(&mut w, &cx).unwrap();
            if req.payload(&cx) == Payload::RawNar {
                w.put_raw(&small_nar());
            }
            let mut seed = header(op, &cx, false).unwrap();
            seed.extend_from_slice(w.as_slice());
            out.push((format!("req-{tag}-op{op}-{i}"), seed));
        }
        for (i, (op, reply)) in fixtures::replies(&cx).into_iter().enumerate() {
            let mut w = WireWriter::new();
            reply.encode(&mut w, &cx).unwrap();
            let mut seed = header(u64::from(op), &cx, true).unwrap();
            seed.extend_from_slice(w.as_slice());
            out.push((format!("reply-{tag}-op{}-{i}", u64::from(op)), seed));
        }
    }
    out
}

/// The seeds decode as the fuzz target decodes them.
#[test]
fn seeds_decode_with_the_target_layout() {
    let all = seeds();
    assert!(all.len() > 500, "{}", all.len());
    for (name, seed) in all {
        let minor = VERSIONS[usize::from(seed[1])];
        let mut features = Vec::new();
        if seed[2] & 1 != 0 {
            features.push(FEATURE_REALISATION_WITH_PATH_NOT_HASH);
        }
        if seed[2] & 2 != 0 {
            features.push(FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS);
        }
        let cx = fixtures::cx_with(minor, &features);
        let mut r = SyncReader::new(&seed[8..]);
        if seed[3] == 0 {
            Request::decode_sync(u64::from(seed[0]), &mut r, &cx)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            let op = crate::opcode::Opcode::try_from(u64::from(seed[0])).unwrap();
            Reply::decode_sync(op, &mut r, &cx).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// Writes the seeds into the fuzz corpus directory.
#[test]
#[ignore = "writes fuzz/corpus/worker_request; run with --ignored"]
fn write_fuzz_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/worker_request");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, seed) in seeds() {
        std::fs::write(dir.join(name), seed).unwrap();
    }
}
