//! Hostile and broken input: every failure is an error (never a panic, never a large
//! allocation) whose message names the field and the problem.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use pkgchain_protocol::opcode::Opcode;
use pkgchain_protocol::types::{
    BuildMode, BuildResult, BuildStatus, DerivedPath, DrvOutput, OutputsSpec, TrustedFlag,
};
use pkgchain_protocol::wire::{
    AsyncReader, ByteString, Decode, Limits, SyncReader, WireError, WireWriter, encode_to_vec,
};
use pkgchain_protocol::{ProtocolVersion, WireContext};
use pkgchain_store_model::hash::Hash;
use pkgchain_store_model::path_info::{PathInfo, ValidPathInfo};
use pkgchain_store_model::store_path::{StoreDir, StorePath};

fn cx() -> WireContext {
    WireContext::new(ProtocolVersion::LATEST)
}

fn decode<T: Decode>(bytes: &[u8], cx: &WireContext, what: &'static str) -> Result<T, WireError> {
    SyncReader::new(bytes).decode(cx, what)
}

fn err<T: Decode + std::fmt::Debug>(bytes: &[u8], cx: &WireContext, what: &'static str) -> String {
    decode::<T>(bytes, cx, what).unwrap_err().to_string()
}

fn path(name: &str) -> StorePath {
    StorePath::from_base_name(&format!("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-{name}")).unwrap()
}

#[test]
fn huge_lengths_are_refused_before_allocating() {
    let max = u64::MAX.to_le_bytes();
    assert_eq!(
        err::<Vec<StorePath>>(&max, &cx(), "store path list"),
        "store path list (at byte 0): length 18446744073709551615 exceeds limit 1048576"
    );
    assert_eq!(
        err::<String>(&max, &cx(), "setting name"),
        "setting name (at byte 0): length 18446744073709551615 exceeds limit 1048576"
    );
    assert_eq!(
        err::<ByteString>(&max, &cx(), "file contents"),
        "file contents (at byte 0): length 18446744073709551615 exceeds limit 67108864"
    );
    assert_eq!(
        err::<BTreeMap<String, String>>(&max, &cx(), "overrides"),
        "overrides (at byte 0): length 18446744073709551615 exceeds limit 1048576"
    );

    // Inside a structure, the offset points at the length.
    let mut w = WireWriter::new();
    w.put_str(""); // deriver
    w.put_str(&"0".repeat(64)); // NAR hash
    w.put_u64(1 << 40); // references
    let e = err::<PathInfo>(w.as_slice(), &cx(), "path info");
    assert_eq!(
        e,
        "path info references (at byte 80): length 1099511627776 exceeds limit 1048576"
    );

    // Limits are configurable.
    let mut small = cx();
    small.limits = Limits {
        max_string_len: 4,
        max_list_len: 2,
        ..Limits::default()
    };
    let bytes = encode_to_vec("hello", &small).unwrap();
    assert_eq!(
        err::<String>(&bytes, &small, "name"),
        "name (at byte 0): length 5 exceeds limit 4"
    );
    let bytes = encode_to_vec(&vec![1u64, 2, 3], &small).unwrap();
    assert_eq!(
        err::<Vec<u64>>(&bytes, &small, "numbers"),
        "numbers (at byte 0): length 3 exceeds limit 2"
    );
}

#[test]
fn a_length_within_limits_but_without_data_is_end_of_input() {
    // 64 MiB announced, 3 bytes sent: fails at the end of the data, not at allocation.
    let mut w = WireWriter::new();
    w.put_u64(64 << 20);
    w.put_raw(b"abc");
    let e = decode::<ByteString>(w.as_slice(), &cx(), "log data").unwrap_err();
    assert!(e.is_eof());
    assert_eq!(
        e.to_string(),
        "log data (at byte 8): unexpected end of input"
    );
}

#[test]
fn every_truncation_is_end_of_input() {
    let mut info = PathInfo::new(StoreDir::default(), Hash::sha256([7; 32]), 1234);
    info.deriver = Some(path("foo.drv"));
    info.references = BTreeSet::from([path("a"), path("b")]);
    info.registration_time = Some(1_700_000_000);
    let value = ValidPathInfo {
        path: path("foo"),
        info,
    };
    let bytes = encode_to_vec(&value, &cx()).unwrap();
    assert_eq!(
        decode::<ValidPathInfo>(&bytes, &cx(), "path info").unwrap(),
        value
    );
    for len in 0..bytes.len() {
        let e = decode::<ValidPathInfo>(&bytes[..len], &cx(), "path info").unwrap_err();
        assert!(e.is_eof(), "truncated to {len}: {e}");
        assert!(e.to_string().ends_with("unexpected end of input"), "{e}");
    }
}

#[test]
fn padding_must_be_zero() {
    let mut bytes = encode_to_vec("hi", &cx()).unwrap();
    bytes[13] = 7;
    assert_eq!(
        err::<String>(&bytes, &cx(), "string"),
        "string (at byte 13): non-zero padding byte 0x07"
    );
    assert_eq!(
        err::<ByteString>(&bytes, &cx(), "bytes"),
        "bytes (at byte 13): non-zero padding byte 0x07"
    );
}

#[test]
fn text_must_be_utf8_but_bytes_need_not() {
    let mut w = WireWriter::new();
    w.put_bytes(b"/nix/store/\xff\xfe");
    let bytes = w.into_inner();
    assert_eq!(
        err::<StorePath>(&bytes, &cx(), "store path"),
        "store path (at byte 0): not valid UTF-8 (first bad byte at index 11 of the string)"
    );
    assert_eq!(
        err::<String>(&bytes, &cx(), "output name"),
        "output name (at byte 0): not valid UTF-8 (first bad byte at index 11 of the string)"
    );
    let raw: ByteString = decode(&bytes, &cx(), "env value").unwrap();
    assert_eq!(raw.as_bytes(), b"/nix/store/\xff\xfe");

    // Build-result messages are shown, not parsed: decoded lossily.
    let mut w = WireWriter::new();
    w.put_u64(BuildStatus::PermanentFailure.to_wire());
    w.put_bytes(b"bad \xff byte");
    let r: BuildResult = decode(
        w.as_slice(),
        &WireContext::new(ProtocolVersion::new(1, 27)),
        "r",
    )
    .unwrap();
    assert_eq!(r.error_msg, "bad \u{fffd} byte");
}

#[test]
fn malformed_text_values_are_named() {
    let bytes = encode_to_vec("/tmp/not-a-store-path", &cx()).unwrap();
    assert_eq!(
        err::<StorePath>(&bytes, &cx(), "store path"),
        "store path (at byte 0): path '/tmp/not-a-store-path' is not in the Nix store"
    );
    let bytes = encode_to_vec("fixed:md7:abc", &cx()).unwrap();
    assert!(
        err::<pkgchain_store_model::content_address::ContentAddress>(&bytes, &cx(), "ca")
            .starts_with("ca (at byte 0): ")
    );
    let bytes = encode_to_vec(
        "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv!a,,b",
        &cx(),
    )
    .unwrap();
    assert_eq!(
        err::<DerivedPath>(&bytes, &cx(), "derived path"),
        "derived path (at byte 0): empty output name"
    );
}

#[test]
fn unknown_numbers_are_named() {
    let three = 3u64.to_le_bytes();
    assert_eq!(
        err::<BuildMode>(&three, &cx(), "build mode"),
        "build mode (at byte 0): unknown value 3"
    );
    assert_eq!(
        err::<Option<TrustedFlag>>(&three, &cx(), "trust"),
        "trust (at byte 0): unknown value 3"
    );
    let fifteen = 15u64.to_le_bytes();
    assert_eq!(
        err::<BuildResult>(&fifteen, &cx(), "result"),
        "build result status (at byte 0): unknown value 15"
    );
    let e = Opcode::try_from(0x1234u64).unwrap_err();
    assert_eq!(e.to_string(), "invalid operation 4660");
    assert_eq!(Opcode::try_from(46u64), Ok(Opcode::BuildPathsWithResults));
}

#[test]
fn integers_too_large_for_their_type() {
    let c = WireContext::new(ProtocolVersion::new(1, 29));
    let mut w = WireWriter::new();
    w.put_u64(0);
    w.put_str("");
    w.put_u64(1 << 32); // timesBuilt is an unsigned int in Nix
    let e = err::<BuildResult>(w.as_slice(), &c, "result");
    assert_eq!(
        e,
        "build result times built (at byte 16): integer 4294967296 is too large (maximum 4294967295)"
    );

    let mut w = WireWriter::new();
    w.put_u64(0);
    w.put_str("");
    w.put_u64(1);
    w.put_bool(false);
    w.put_u64(u64::MAX); // start time is a time_t
    let e = err::<BuildResult>(w.as_slice(), &c, "result");
    assert!(
        e.starts_with(
            "build result start time (at byte 32): integer 18446744073709551615 is too large"
        ),
        "{e}"
    );
}

#[test]
fn booleans_accept_any_non_zero() {
    let bytes = 2u64.to_le_bytes();
    assert!(decode::<bool>(&bytes, &cx(), "flag").unwrap());
}

#[test]
fn read_budget() {
    let bytes = encode_to_vec(&vec!["a".to_owned(); 10], &cx()).unwrap();
    let mut r = SyncReader::new(&bytes[..]);
    r.state_mut().set_budget(Some(40));
    let e = r.decode::<Vec<String>>(&cx(), "paths").unwrap_err();
    assert_eq!(
        e.to_string(),
        "paths (at byte 40): read budget of 40 bytes exhausted"
    );
}

#[test]
fn feature_and_version_gates() {
    let no_feature = cx();
    let out = DrvOutput {
        drv_path: path("foo.drv"),
        output_name: "out".into(),
    };
    let e = encode_to_vec(&out, &no_feature).unwrap_err();
    assert_eq!(
        e.to_string(),
        "derivation output: cannot be encoded: the peer did not negotiate the 'realisation-with-path-not-hash' protocol feature"
    );
    assert!(err::<DrvOutput>(&[], &no_feature, "x").contains("did not negotiate"));

    let old = WireContext::new(ProtocolVersion::new(1, 29));
    let e = encode_to_vec(&DerivedPath::Opaque(path("foo.drv")), &old).unwrap_err();
    assert!(e.to_string().contains("below protocol 1.30"), "{e}");
    let ok = encode_to_vec(&DerivedPath::built(path("foo.drv"), OutputsSpec::All), &old).unwrap();
    assert_eq!(
        decode::<String>(&ok, &old, "s").unwrap(),
        "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo.drv"
    );
}

#[test]
fn errors_take_context() {
    let e = decode::<u64>(&[], &cx(), "count")
        .unwrap_err()
        .context("QueryValidPaths request");
    assert_eq!(
        e.to_string(),
        "QueryValidPaths request: count (at byte 0): unexpected end of input"
    );
    assert_eq!(e.offset(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_reader_over_a_trickling_stream_in_a_spawned_task() {
    let paths: Vec<StorePath> = (0..50).map(|i| path(&format!("p{i}"))).collect();
    let bytes = encode_to_vec(&paths, &cx()).unwrap();
    let (mut tx, rx) = tokio::io::duplex(7);
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for chunk in bytes.chunks(5) {
            tx.write_all(chunk).await.unwrap();
        }
    });
    // Spawning proves the decoder future is Send.
    let reader = tokio::spawn(async move {
        let mut r = AsyncReader::new(rx);
        let got: Vec<StorePath> = r.decode(&cx(), "store path list").await.unwrap();
        let end = r.decode::<u64>(&cx(), "after").await.unwrap_err();
        (got, end.is_eof())
    });
    writer.await.unwrap();
    let (got, eof) = reader.await.unwrap();
    assert_eq!(got, paths);
    assert!(eof);
}

/// Decodes `bytes` as every value type at several versions; only a panic fails.
fn decode_everything(bytes: &[u8]) {
    use pkgchain_protocol::handshake::ClientHandshakeInfo;
    use pkgchain_protocol::stderr::StderrMessage;
    use pkgchain_protocol::types::{
        KeyedBuildResult, LegacyRealisation, Realisation, UnkeyedRealisation,
    };
    use pkgchain_protocol::version::FEATURE_REALISATION_WITH_PATH_NOT_HASH;
    for minor in [10, 21, 25, 26, 28, 29, 30, 33, 35, 37, 38] {
        let mut c = WireContext::new(ProtocolVersion::new(1, minor));
        if minor == 38 {
            c = c.with_features([FEATURE_REALISATION_WITH_PATH_NOT_HASH]);
        }
        let _ = decode::<Vec<BuildResult>>(bytes, &c, "x");
        let _ = decode::<Vec<KeyedBuildResult>>(bytes, &c, "x");
        let _ = decode::<Vec<ValidPathInfo>>(bytes, &c, "x");
        let _ = decode::<PathInfo>(bytes, &c, "x");
        let _ = decode::<Vec<DerivedPath>>(bytes, &c, "x");
        let _ = decode::<Vec<LegacyRealisation>>(bytes, &c, "x");
        let _ = decode::<Vec<Realisation>>(bytes, &c, "x");
        let _ = decode::<BTreeMap<String, UnkeyedRealisation>>(bytes, &c, "x");
        let _ = decode::<StderrMessage>(bytes, &c, "x");
        let _ = decode::<ClientHandshakeInfo>(bytes, &c, "x");
        let _ = decode::<BTreeSet<BTreeSet<String>>>(bytes, &c, "x");
    }
}

#[test]
fn corrupted_vectors_never_panic() {
    let base = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/nix-2.35.2/libstore-tests/data/worker-protocol");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for entry in std::fs::read_dir(base).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let original = std::fs::read(&p).unwrap();
        decode_everything(&original);
        for _ in 0..64 {
            let mut bytes = original.clone();
            if bytes.is_empty() {
                break;
            }
            for _ in 0..(next() % 4 + 1) {
                let i = (next() % bytes.len() as u64) as usize;
                bytes[i] = next() as u8;
            }
            decode_everything(&bytes);
        }
    }
    for _ in 0..2000 {
        let len = (next() % 96) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (next() % 4) as u8).collect();
        decode_everything(&bytes);
    }
}
