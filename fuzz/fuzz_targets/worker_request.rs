#![no_main]
//! Fuzzes the worker protocol's per-operation decoders: requests (daemon side) and replies
//! (client side), and the raw-NAR copier behind the old `AddToStore`.
//!
//! Input layout: an 8-byte header, then the message.
//! * byte 0: the opcode (0-255; numbers that name no operation are tested too);
//! * byte 1: index into `VERSIONS` (modulo its length);
//! * byte 2: feature bits, applied at 1.38 only: bit 0 `realisation-with-path-not-hash`,
//!   bit 1 `delete-dead-specific-referrers`;
//! * byte 3: bit 0 clear decodes a request, set decodes a reply;
//! * bytes 4-7: unused.
//!
//! (`protocol/src/request/seeds.rs` writes seeds in this layout; keep the two in sync.)
//!
//! Properties checked:
//! * decoding never panics;
//! * whatever decodes re-encodes at the same version, and decodes back to the same value;
//! * when a request is followed by a raw NAR, the copier and the store model's `NarReader`
//!   accept the same inputs and stop at the same byte, and the copy is that prefix.
use libfuzzer_sys::fuzz_target;
use pkgchain_protocol::nar_copy::{NarCopyLimits, copy_nar_sync};
use pkgchain_protocol::opcode::Opcode;
use pkgchain_protocol::reply::Reply;
use pkgchain_protocol::request::{Payload, Request};
use pkgchain_protocol::types::LegacyRealisationJson;
use pkgchain_protocol::version::{
    FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS, FEATURE_REALISATION_WITH_PATH_NOT_HASH,
};
use pkgchain_protocol::wire::{Encode, Limits, SyncReader, WireRead, WireWriter};
use pkgchain_protocol::{ProtocolVersion, WireContext};
use pkgchain_store_model::nar::{NarLimits, NarReader};

const VERSIONS: &[u8] = &[
    11, 14, 16, 17, 21, 22, 23, 25, 27, 28, 29, 30, 31, 34, 37, 38,
];

fn context(header: &[u8]) -> WireContext {
    let minor = VERSIONS[usize::from(header[1]) % VERSIONS.len()];
    let mut cx = WireContext::new(ProtocolVersion::new(1, minor));
    if minor >= 38 {
        let mut features = Vec::new();
        if header[2] & 1 != 0 {
            features.push(FEATURE_REALISATION_WITH_PATH_NOT_HASH);
        }
        if header[2] & 2 != 0 {
            features.push(FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS);
        }
        cx = cx.with_features(features);
    }
    // The JSON form that keeps every field, so that re-encoding loses nothing.
    cx.legacy_realisation_json = LegacyRealisationJson::FullStringSignatures;
    // Small limits: reach the bounds checks with small inputs.
    cx.limits = Limits {
        max_string_len: 4096,
        max_bytes_len: 1 << 16,
        max_list_len: 1024,
        max_fields: 64,
        max_frame_len: 1 << 16,
        max_nar_len: 1 << 20,
    };
    cx
}

fn encode<T: Encode + std::fmt::Debug>(value: &T, cx: &WireContext) -> Vec<u8> {
    let mut w = WireWriter::new();
    if let Err(e) = value.encode(&mut w, cx) {
        panic!("decoded {value:?} does not re-encode: {e}");
    }
    w.into_inner()
}

fn check_raw_nar(rest: &[u8]) {
    let nar = NarLimits {
        max_name_len: 64,
        max_depth: 16,
        max_nodes: 1000,
        max_file_size: 1 << 16,
        max_symlink_target_len: 256,
    };
    let limits = NarCopyLimits {
        nar,
        max_total_len: 1 << 20,
    };
    let mut r = SyncReader::new(rest);
    let mut copy = Vec::new();
    let copied = copy_nar_sync(&mut r, &mut copy, &limits);
    let mut reader = NarReader::with_limits(rest, nar);
    let expected = loop {
        match reader.next_event() {
            Ok(Some(_)) => {}
            Ok(None) => break Some(reader.bytes_read()),
            Err(_) => break None,
        }
    };
    match (expected, copied) {
        (Some(len), Ok(n)) => {
            assert_eq!(n, len, "copier and reader disagree on the NAR's end");
            assert_eq!(r.position(), len);
            assert_eq!(&copy[..], &rest[..copy.len()]);
            assert_eq!(copy.len() as u64, len);
        }
        (None, Err(_)) => {}
        (expected, copied) => {
            panic!("reader says {expected:?}, copier says {copied:?}")
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (header, body) = data.split_at(8);
    let cx = context(header);
    let op = u64::from(header[0]);
    let mut r = SyncReader::new(body);
    if header[3] & 1 == 0 {
        let Ok(req) = Request::decode_sync(op, &mut r, &cx) else {
            return;
        };
        assert_eq!(u64::from(req.opcode()), op);
        let bytes = encode(&req, &cx);
        let mut again = SyncReader::new(&bytes[8..]);
        match Request::decode_sync(op, &mut again, &cx) {
            Ok(back) => assert_eq!(back, req),
            Err(e) => panic!("{req:?} re-encoded does not decode: {e}"),
        }
        assert_eq!(again.position() as usize, bytes.len() - 8);
        if req.payload(&cx) == Payload::RawNar {
            let used = usize::try_from(r.position()).unwrap_or(body.len());
            check_raw_nar(&body[used..]);
        }
    } else {
        let Ok(op) = Opcode::try_from(op) else {
            return;
        };
        let Ok(reply) = Reply::decode_sync(op, &mut r, &cx) else {
            return;
        };
        assert!(
            reply.fits(op, &cx),
            "{reply:?} decoded for {op} does not fit it"
        );
        let bytes = encode(&reply, &cx);
        let mut again = SyncReader::new(&bytes[..]);
        match Reply::decode_sync(op, &mut again, &cx) {
            Ok(back) => assert_eq!(back, reply),
            Err(e) => panic!("{reply:?} re-encoded does not decode: {e}"),
        }
        assert_eq!(again.position() as usize, bytes.len());
    }
});
