//! Every golden file of Nix 2.35.2's `worker-protocol/` and `common-protocol/` test data:
//! decoded at the version (and features) Nix's own test wrote it with, compared with the value
//! its `.json` describes, encoded back to identical bytes. The same bytes are also decoded by
//! the tokio reader.
//!
//! [`CASES`] names every file; the test fails when a directory holds a file the table does not
//! name (or the other way round), so new vectors cannot be skipped silently.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use pkgchain_protocol::handshake::{ClientHandshakeInfo, ServerHello};
use pkgchain_protocol::types::{
    BuildMode, BuildResult, BuildStatus, BuiltOutput, DerivedPath, DrvOutput, KeyedBuildResult,
    LegacyDrvOutput, LegacyRealisation, LegacyRealisationJson, OutputsSpec, Realisation,
    SingleDerivedPath, TrustedFlag, UnkeyedRealisation,
};
use pkgchain_protocol::version::FEATURE_REALISATION_WITH_PATH_NOT_HASH;
use pkgchain_protocol::wire::{
    AsyncReader, Decode, Encode, SyncReader, WireRead, WireWriter, run_ready,
};
use pkgchain_protocol::{ProtocolVersion, WireContext};
use pkgchain_store_model::content_address::ContentAddress;
use pkgchain_store_model::path_info::{PathInfo, ValidPathInfo};
use pkgchain_store_model::signature::Signature;
use pkgchain_store_model::store_path::{StoreDir, StorePath};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    Worker,
    Common,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Worker => "worker-protocol",
            Dir::Common => "common-protocol",
        }
    }

    fn path(self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/nix-2.35.2/libstore-tests/data")
            .join(self.name())
    }
}

/// One vector: its directory, stem, whether a `.json` goes with the `.bin`, and the check.
struct Case {
    dir: Dir,
    stem: &'static str,
    json: bool,
    check: fn(&[u8], Option<&Value>),
}

const CASES: &[Case] = &[
    // common-protocol: version-less encodings (checked at 1.10, Nix's oldest test version).
    Case {
        dir: Dir::Common,
        stem: "string",
        json: true,
        check: string,
    },
    Case {
        dir: Dir::Common,
        stem: "store-path",
        json: true,
        check: store_path,
    },
    Case {
        dir: Dir::Common,
        stem: "content-address",
        json: true,
        check: content_address,
    },
    Case {
        dir: Dir::Common,
        stem: "optional-content-address",
        json: true,
        check: optional_content_address,
    },
    Case {
        dir: Dir::Common,
        stem: "optional-store-path",
        json: true,
        check: optional_store_path,
    },
    Case {
        dir: Dir::Common,
        stem: "vector",
        json: true,
        check: vector,
    },
    Case {
        dir: Dir::Common,
        stem: "set",
        json: true,
        check: set,
    },
    Case {
        dir: Dir::Common,
        stem: "drv-output",
        json: true,
        check: legacy_drv_output,
    },
    Case {
        dir: Dir::Common,
        stem: "realisation",
        json: true,
        check: legacy_realisation,
    },
    Case {
        dir: Dir::Common,
        stem: "realisation-with-deps",
        json: true,
        check: legacy_realisation_with_deps,
    },
    // worker-protocol.
    Case {
        dir: Dir::Worker,
        stem: "string",
        json: true,
        check: string,
    },
    Case {
        dir: Dir::Worker,
        stem: "store-path",
        json: true,
        check: store_path,
    },
    Case {
        dir: Dir::Worker,
        stem: "content-address",
        json: true,
        check: content_address,
    },
    Case {
        dir: Dir::Worker,
        stem: "optional-content-address",
        json: true,
        check: optional_content_address,
    },
    Case {
        dir: Dir::Worker,
        stem: "optional-store-path",
        json: true,
        check: optional_store_path,
    },
    Case {
        dir: Dir::Worker,
        stem: "vector",
        json: true,
        check: vector,
    },
    Case {
        dir: Dir::Worker,
        stem: "set",
        json: true,
        check: set,
    },
    Case {
        dir: Dir::Worker,
        stem: "build-mode",
        json: true,
        check: build_mode,
    },
    Case {
        dir: Dir::Worker,
        stem: "optional-trusted-flag",
        json: true,
        check: optional_trusted_flag,
    },
    Case {
        dir: Dir::Worker,
        stem: "drv-output",
        json: true,
        check: legacy_drv_output,
    },
    Case {
        dir: Dir::Worker,
        stem: "realisation",
        json: true,
        check: legacy_realisation,
    },
    Case {
        dir: Dir::Worker,
        stem: "realisation-with-deps",
        json: true,
        check: legacy_realisation_with_deps,
    },
    Case {
        dir: Dir::Worker,
        stem: "drv-output-realisation-with-path-not-hash",
        json: true,
        check: drv_output,
    },
    Case {
        dir: Dir::Worker,
        stem: "unkeyed-realisation-realisation-with-path-not-hash",
        json: true,
        check: unkeyed_realisation,
    },
    Case {
        dir: Dir::Worker,
        stem: "realisation-realisation-with-path-not-hash",
        json: true,
        check: realisation,
    },
    Case {
        dir: Dir::Worker,
        stem: "derived-path-1.29",
        json: true,
        check: derived_path_1_29,
    },
    Case {
        dir: Dir::Worker,
        stem: "derived-path-1.30",
        json: true,
        check: derived_path_1_30,
    },
    Case {
        dir: Dir::Worker,
        stem: "build-result-1.27",
        json: true,
        check: build_result_1_27,
    },
    Case {
        dir: Dir::Worker,
        stem: "build-result-1.28",
        json: true,
        check: build_result_1_28,
    },
    Case {
        dir: Dir::Worker,
        stem: "build-result-1.29",
        json: true,
        check: build_result_1_29,
    },
    Case {
        dir: Dir::Worker,
        stem: "build-result-1.29-compat",
        json: true,
        check: build_result_1_29_compat,
    },
    Case {
        dir: Dir::Worker,
        stem: "build-result-1.37",
        json: true,
        check: build_result_1_37,
    },
    Case {
        dir: Dir::Worker,
        stem: "build-result-realisation-with-path-not-hash",
        json: true,
        check: build_result_feature,
    },
    Case {
        dir: Dir::Worker,
        stem: "keyed-build-result-1.29",
        json: true,
        check: keyed_build_result_1_29,
    },
    Case {
        dir: Dir::Worker,
        stem: "unkeyed-valid-path-info-1.15",
        json: true,
        check: unkeyed_valid_path_info_1_15,
    },
    Case {
        dir: Dir::Worker,
        stem: "valid-path-info-1.15",
        json: true,
        check: valid_path_info_1_15,
    },
    Case {
        dir: Dir::Worker,
        stem: "valid-path-info-1.16",
        json: true,
        check: valid_path_info_1_16,
    },
    Case {
        dir: Dir::Worker,
        stem: "client-handshake-info_1_30",
        json: false,
        check: client_handshake_info_1_30,
    },
    Case {
        dir: Dir::Worker,
        stem: "client-handshake-info_1_33",
        json: false,
        check: client_handshake_info_1_33,
    },
    Case {
        dir: Dir::Worker,
        stem: "client-handshake-info_1_35",
        json: false,
        check: client_handshake_info_1_35,
    },
    Case {
        dir: Dir::Worker,
        stem: "handshake-to-client",
        json: false,
        check: handshake_to_client,
    },
];

#[test]
fn every_vector_file_is_in_the_table() {
    for dir in [Dir::Worker, Dir::Common] {
        let mut on_disk = BTreeSet::new();
        for entry in std::fs::read_dir(dir.path()).expect("vector directory") {
            let name = entry.expect("directory entry").file_name();
            on_disk.insert(name.to_string_lossy().into_owned());
        }
        let mut named = BTreeSet::new();
        for case in CASES.iter().filter(|c| c.dir == dir) {
            assert!(
                named.insert(format!("{}.bin", case.stem)),
                "{} twice in the table",
                case.stem
            );
            if case.json {
                named.insert(format!("{}.json", case.stem));
            }
        }
        assert_eq!(on_disk, named, "files in {} versus the table", dir.name());
    }
}

#[test]
fn every_vector_round_trips() {
    for case in CASES {
        let base = case.dir.path().join(case.stem);
        let bin = std::fs::read(base.with_extension_of(".bin")).expect("vector .bin");
        let json: Option<Value> = case.json.then(|| {
            let text =
                std::fs::read_to_string(base.with_extension_of(".json")).expect("vector .json");
            serde_json::from_str(&text).expect("vector JSON")
        });
        eprintln!("checking {}/{}", case.dir.name(), case.stem);
        (case.check)(&bin, json.as_ref());
    }
}

/// `Path::with_extension` would cut `derived-path-1.29` at its dot.
trait WithExtensionOf {
    fn with_extension_of(&self, ext: &str) -> PathBuf;
}

impl WithExtensionOf for PathBuf {
    fn with_extension_of(&self, ext: &str) -> PathBuf {
        let mut s = self.clone().into_os_string();
        s.push(ext);
        PathBuf::from(s)
    }
}

/// Decodes a sequence of values (a C++ tuple: no count prefix) and re-encodes it.
struct Replay<'a> {
    bin: &'a [u8],
    cx: WireContext,
    reader: SyncReader<&'a [u8]>,
    out: WireWriter,
}

impl<'a> Replay<'a> {
    fn new(bin: &'a [u8], cx: WireContext) -> Replay<'a> {
        Replay {
            bin,
            cx,
            reader: SyncReader::new(bin),
            out: WireWriter::new(),
        }
    }

    fn item<T: Decode + Encode + PartialEq + Debug>(&mut self, expected: &T) {
        let start = self.reader.position() as usize;
        let got: T = self
            .reader
            .decode(&self.cx, "vector item")
            .unwrap_or_else(|e| panic!("decoding {expected:?}: {e}"));
        let end = self.reader.position() as usize;
        assert_eq!(&got, expected);

        let mut async_reader = AsyncReader::new(&self.bin[start..end]);
        let got_async: T = run_ready(async_reader.decode(&self.cx, "vector item"))
            .unwrap_or_else(|e| panic!("async decoding {expected:?}: {e}"));
        assert_eq!(&got_async, expected);

        let mut w = WireWriter::new();
        got.encode(&mut w, &self.cx)
            .unwrap_or_else(|e| panic!("encoding {got:?}: {e}"));
        assert_eq!(w.as_slice(), &self.bin[start..end], "re-encoding {got:?}");
        self.out
            .put(&got, &self.cx)
            .unwrap_or_else(|e| panic!("encoding {got:?}: {e}"));
    }

    fn items<T: Decode + Encode + PartialEq + Debug>(mut self, expected: &[T]) {
        for e in expected {
            self.item(e);
        }
        self.finish();
    }

    fn finish(self) {
        assert_eq!(
            self.reader.position() as usize,
            self.bin.len(),
            "trailing bytes"
        );
        assert_eq!(self.out.as_slice(), self.bin);
    }
}

fn cx(minor: u8) -> WireContext {
    WireContext::new(ProtocolVersion::new(1, minor))
}

fn cx_feature() -> WireContext {
    cx(38).with_features([FEATURE_REALISATION_WITH_PATH_NOT_HASH])
}

fn cx_json(minor: u8, style: LegacyRealisationJson) -> WireContext {
    let mut c = cx(minor);
    c.legacy_realisation_json = style;
    c
}

// ---------------------------------------------------------------------------------------------
// JSON to values (written independently of the crate's own parsers where the crate has one).

fn items(json: Option<&Value>) -> Vec<&Value> {
    match json.expect("JSON file") {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn path(v: &Value) -> StorePath {
    StorePath::from_base_name(str_of(v)).expect("store path in JSON")
}

fn signature(v: &Value) -> Signature {
    match v {
        Value::String(s) => Signature::parse(s),
        Value::Object(o) => {
            Signature::parse(&format!("{}:{}", str_of(&o["keyName"]), str_of(&o["sig"])))
        }
        other => panic!("bad signature {other}"),
    }
    .expect("signature in JSON")
}

fn signatures(v: Option<&Value>) -> BTreeSet<Signature> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(signature).collect())
        .unwrap_or_default()
}

fn legacy_id(v: &Value) -> LegacyDrvOutput {
    let (hash, name) = str_of(v).split_once('!').expect("'!' in a DrvOutput");
    LegacyDrvOutput {
        drv_hash: pkgchain_store_model::hash::Hash::parse_prefixed(hash).expect("hash"),
        output_name: name.to_owned(),
    }
}

fn legacy_deps(v: Option<&Value>) -> BTreeMap<LegacyDrvOutput, StorePath> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, p)| (legacy_id(&Value::String(k.clone())), path(p)))
                .collect()
        })
        .unwrap_or_default()
}

fn legacy_realisation_of(v: &Value) -> LegacyRealisation {
    LegacyRealisation {
        id: legacy_id(&v["id"]),
        out_path: path(&v["outPath"]),
        signatures: signatures(v.get("signatures")),
        dependent_realisations: legacy_deps(v.get("dependentRealisations")),
    }
}

fn drv_output_of(v: &Value) -> DrvOutput {
    DrvOutput {
        drv_path: path(&v["drvPath"]),
        output_name: str_of(&v["outputName"]).to_owned(),
    }
}

fn unkeyed_of(v: &Value) -> UnkeyedRealisation {
    UnkeyedRealisation {
        out_path: path(&v["outPath"]),
        signatures: signatures(v.get("signatures")),
    }
}

fn derived_path_of(v: &Value) -> DerivedPath {
    match v {
        Value::String(_) => DerivedPath::Opaque(path(v)),
        Value::Object(o) => {
            let names: Vec<&str> = o["outputs"]
                .as_array()
                .expect("outputs")
                .iter()
                .map(str_of)
                .collect();
            let outputs = if names == ["*"] {
                OutputsSpec::All
            } else {
                OutputsSpec::Names(names.iter().map(|s| s.to_string()).collect())
            };
            DerivedPath::Built {
                drv_path: SingleDerivedPath::opaque(path(&o["drvPath"])),
                outputs,
            }
        }
        other => panic!("bad derived path {other}"),
    }
}

fn build_result_of(v: &Value) -> BuildResult {
    let status = BuildStatus::from_name(str_of(&v["status"])).expect("status name");
    assert_eq!(v["success"].as_bool(), Some(status.is_success()));
    let u = |key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
    let mut r = BuildResult::new(status);
    r.error_msg = v.get("errorMsg").map(str_of).unwrap_or("").to_owned();
    r.times_built = u32::try_from(u("timesBuilt")).expect("timesBuilt");
    r.is_non_deterministic = v
        .get("isNonDeterministic")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    r.start_time = u("startTime") as i64;
    r.stop_time = u("stopTime") as i64;
    r.cpu_user = v
        .get("cpuUser")
        .and_then(Value::as_u64)
        .map(Duration::from_micros);
    r.cpu_system = v
        .get("cpuSystem")
        .and_then(Value::as_u64)
        .map(Duration::from_micros);
    for (name, o) in v
        .get("builtOutputs")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let mut out = BuiltOutput::new(path(&o["outPath"]));
        out.realisation.signatures = signatures(o.get("signatures"));
        if let Some(id) = o.get("id") {
            let id = legacy_id(id);
            assert_eq!(&id.output_name, name);
            out.legacy_drv_hash = id.drv_hash;
        }
        out.legacy_dependent_realisations = legacy_deps(o.get("dependentRealisations"));
        r.built_outputs.insert(name.clone(), out);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// The checks.

fn string(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<String> = items(json)
        .into_iter()
        .map(|v| str_of(v).to_owned())
        .collect();
    assert_eq!(expected.len(), 5);
    Replay::new(bin, cx(10)).items(&expected);
}

fn store_path(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<StorePath> = items(json).into_iter().map(path).collect();
    Replay::new(bin, cx(10)).items(&expected);
}

fn content_address(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<ContentAddress> = items(json)
        .into_iter()
        .map(|v| ContentAddress::from_json(v).expect("CA JSON"))
        .collect();
    Replay::new(bin, cx(10)).items(&expected);
}

fn optional_content_address(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<Option<ContentAddress>> = items(json)
        .into_iter()
        .map(|v| (!v.is_null()).then(|| ContentAddress::from_json(v).expect("CA JSON")))
        .collect();
    Replay::new(bin, cx(10)).items(&expected);
}

fn optional_store_path(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<Option<StorePath>> = items(json)
        .into_iter()
        .map(|v| (!v.is_null()).then(|| path(v)))
        .collect();
    Replay::new(bin, cx(10)).items(&expected);
}

fn vector(bin: &[u8], json: Option<&Value>) {
    let all = items(json);
    let mut r = Replay::new(bin, cx(10));
    for v in &all[..3] {
        r.item(&serde_json::from_value::<Vec<String>>((*v).clone()).expect("list"));
    }
    r.item(&serde_json::from_value::<Vec<Vec<String>>>(all[3].clone()).expect("nested list"));
    r.finish();
}

fn set(bin: &[u8], json: Option<&Value>) {
    let all = items(json);
    let mut r = Replay::new(bin, cx(10));
    for v in &all[..3] {
        r.item(&serde_json::from_value::<BTreeSet<String>>((*v).clone()).expect("set"));
    }
    r.item(
        &serde_json::from_value::<BTreeSet<BTreeSet<String>>>(all[3].clone()).expect("nested set"),
    );
    r.finish();
}

fn build_mode(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<BuildMode> = items(json)
        .into_iter()
        .map(|v| BuildMode::from_wire(v.as_u64().expect("number")).expect("mode"))
        .collect();
    assert_eq!(
        expected,
        [BuildMode::Normal, BuildMode::Repair, BuildMode::Check]
    );
    Replay::new(bin, cx(10)).items(&expected);
}

fn optional_trusted_flag(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<Option<TrustedFlag>> = items(json)
        .into_iter()
        .map(|v| match v {
            Value::Null => None,
            Value::Bool(true) => Some(TrustedFlag::Trusted),
            Value::Bool(false) => Some(TrustedFlag::NotTrusted),
            other => panic!("bad trusted flag {other}"),
        })
        .collect();
    Replay::new(bin, cx(10)).items(&expected);
}

fn legacy_drv_output(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<LegacyDrvOutput> = items(json).into_iter().map(legacy_id).collect();
    Replay::new(bin, cx(10)).items(&expected);
}

/// Nix's newest pre-2.35 writers: signatures as objects.
fn legacy_realisation(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<LegacyRealisation> =
        items(json).into_iter().map(legacy_realisation_of).collect();
    assert_eq!(expected[1].signatures.len(), 2);
    Replay::new(
        bin,
        cx_json(10, LegacyRealisationJson::FullObjectSignatures),
    )
    .items(&expected);
}

/// Written by an older Nix (a read-only vector upstream): signatures as strings.
fn legacy_realisation_with_deps(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<LegacyRealisation> =
        items(json).into_iter().map(legacy_realisation_of).collect();
    assert_eq!(expected[0].dependent_realisations.len(), 1);
    Replay::new(
        bin,
        cx_json(10, LegacyRealisationJson::FullStringSignatures),
    )
    .items(&expected);
}

fn drv_output(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<DrvOutput> = items(json).into_iter().map(drv_output_of).collect();
    Replay::new(bin, cx_feature()).items(&expected);
}

fn unkeyed_realisation(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<UnkeyedRealisation> = items(json).into_iter().map(unkeyed_of).collect();
    assert_eq!(expected.len(), 1);
    Replay::new(bin, cx_feature()).items(&expected);
}

fn realisation(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<Realisation> = items(json)
        .into_iter()
        .map(|v| Realisation {
            id: drv_output_of(&v["key"]),
            value: unkeyed_of(&v["value"]),
        })
        .collect();
    assert_eq!(expected.len(), 1);
    Replay::new(bin, cx_feature()).items(&expected);
}

fn derived_path_1_29(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<DerivedPath> = items(json).into_iter().map(derived_path_of).collect();
    Replay::new(bin, cx(29)).items(&expected);
}

fn derived_path_1_30(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<DerivedPath> = items(json).into_iter().map(derived_path_of).collect();
    Replay::new(bin, cx(30)).items(&expected);
}

fn build_results(bin: &[u8], json: Option<&Value>, cx: WireContext) {
    let expected: Vec<BuildResult> = items(json).into_iter().map(build_result_of).collect();
    assert_eq!(expected.len(), 3);
    Replay::new(bin, cx).items(&expected);
}

fn build_result_1_27(bin: &[u8], json: Option<&Value>) {
    build_results(bin, json, cx(27));
}

/// The 1.28, 1.29 and 1.37 vectors were written by Nix before 2.35 (upstream only reads them
/// now): real derivation hashes and the full JSON with string signatures.
fn build_result_1_28(bin: &[u8], json: Option<&Value>) {
    build_results(
        bin,
        json,
        cx_json(28, LegacyRealisationJson::FullStringSignatures),
    );
}

fn build_result_1_29(bin: &[u8], json: Option<&Value>) {
    build_results(
        bin,
        json,
        cx_json(29, LegacyRealisationJson::FullStringSignatures),
    );
}

fn build_result_1_37(bin: &[u8], json: Option<&Value>) {
    build_results(
        bin,
        json,
        cx_json(37, LegacyRealisationJson::FullStringSignatures),
    );
}

/// What Nix 2.35 writes for a 1.28+ peer without the feature: the all-zero hash and
/// `{"id","outPath"}` (the default).
fn build_result_1_29_compat(bin: &[u8], json: Option<&Value>) {
    build_results(bin, json, cx(29));
}

fn build_result_feature(bin: &[u8], json: Option<&Value>) {
    build_results(bin, json, cx_feature());
}

fn keyed_build_result_1_29(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<KeyedBuildResult> = items(json)
        .into_iter()
        .map(|v| KeyedBuildResult {
            path: derived_path_of(&v["path"]),
            result: build_result_of(v),
        })
        .collect();
    Replay::new(bin, cx(29)).items(&expected);
}

fn unkeyed_valid_path_info_1_15(bin: &[u8], json: Option<&Value>) {
    let expected: Vec<PathInfo> = items(json)
        .into_iter()
        .map(|v| PathInfo::from_json(v, &StoreDir::default()).expect("path info JSON"))
        .collect();
    Replay::new(bin, cx(15)).items(&expected);
}

fn valid_path_infos(bin: &[u8], json: Option<&Value>, minor: u8) {
    let expected: Vec<ValidPathInfo> = items(json)
        .into_iter()
        .map(|v| ValidPathInfo::from_json(v, &StoreDir::default()).expect("path info JSON"))
        .collect();
    Replay::new(bin, cx(minor)).items(&expected);
}

fn valid_path_info_1_15(bin: &[u8], json: Option<&Value>) {
    valid_path_infos(bin, json, 15);
}

fn valid_path_info_1_16(bin: &[u8], json: Option<&Value>) {
    valid_path_infos(bin, json, 16);
}

// The handshake vectors have no JSON; the values are those of Nix's worker-protocol.cc.

fn client_handshake_info_1_30(bin: &[u8], _: Option<&Value>) {
    assert!(bin.is_empty());
    Replay::new(bin, cx(30)).items(&[ClientHandshakeInfo::default()]);
}

fn info(version: &str, trust: Option<TrustedFlag>) -> ClientHandshakeInfo {
    ClientHandshakeInfo {
        daemon_nix_version: Some(version.to_owned()),
        remote_trusts_us: trust,
    }
}

fn client_handshake_info_1_33(bin: &[u8], _: Option<&Value>) {
    Replay::new(bin, cx(33)).items(&[info("foo", None), info("bar", None)]);
}

fn client_handshake_info_1_35(bin: &[u8], _: Option<&Value>) {
    Replay::new(bin, cx(35)).items(&[
        info("foo", Some(TrustedFlag::NotTrusted)),
        info("bar", Some(TrustedFlag::Trusted)),
    ]);
}

/// The daemon's side of a 1.10 handshake: magic 2 and the version. Like Nix's replay tests,
/// every truncation must fail with end of input and a corrupted magic must be refused.
fn handshake_to_client(bin: &[u8], _: Option<&Value>) {
    let hello = run_ready(ServerHello::decode(&mut SyncReader::new(bin))).expect("daemon hello");
    assert_eq!(hello.version, ProtocolVersion::V1_10);
    let mut w = WireWriter::new();
    hello.encode(&mut w);
    assert_eq!(w.as_slice(), bin);

    for len in 0..bin.len() {
        let err = run_ready(ServerHello::decode(&mut SyncReader::new(&bin[..len]))).unwrap_err();
        assert!(err.is_eof(), "truncated to {len}: {err}");
    }
    for idx in 0..8 {
        let mut corrupt = bin.to_vec();
        corrupt[idx] = corrupt[idx].wrapping_mul(4).wrapping_add(1);
        let err = run_ready(ServerHello::decode(&mut SyncReader::new(&corrupt[..]))).unwrap_err();
        assert!(
            err.to_string().contains("bad magic number"),
            "corrupted byte {idx}: {err}"
        );
    }
}
