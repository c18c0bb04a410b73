//! The store operations the worker-protocol daemon uses, against a real SQLite database and
//! block store in a temporary directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};
use std::path::Path;

use pkgchain_store::{
    CaAddRequest, DrvHashOutput, DumpFormat, PathInfo, RealisationKey, RealisationValue, Store,
    StoreConfig, StoreError,
};
use pkgchain_store_model::content_address::{ContentAddress, ContentAddressMethod};
use pkgchain_store_model::derivation::hash_modulo::fill_in_output_paths;
use pkgchain_store_model::derivation::{Derivation, DerivationOutput, DrvHashes, InputOutputs};
use pkgchain_store_model::hash::{Hash, HashAlgo};
use pkgchain_store_model::nar::{NarEvent, NarWriter};
use pkgchain_store_model::path_info::{PathInfo as ModelInfo, ValidPathInfo};
use pkgchain_store_model::signature::SecretKey;
use pkgchain_store_model::store_path::{StoreDir, StorePath};

const DRV_VECTORS: &str = "../testdata/nix-2.35.2/libstore-tests/data/derivation";

async fn open_store(dir: &Path) -> Store {
    Store::open(StoreConfig {
        store_dir: StoreDir::default(),
        db_file: dir.join("db/store.sqlite"),
        blocks_dir: dir.join("blocks"),
        durability: pkgchain_store::Durability::EachCommit,
    })
    .await
    .expect("open store")
}

fn sp(name: &str, n: u8) -> StorePath {
    StorePath::from_parts(&[n; 20], name).expect("store path")
}

/// The NAR of a single regular file.
fn file_nar(contents: &[u8], executable: bool) -> Vec<u8> {
    let mut w = NarWriter::new(Vec::new());
    for e in [
        NarEvent::File {
            name: None,
            executable,
            size: contents.len() as u64,
        },
        NarEvent::FileChunk(contents),
        NarEvent::FileEnd,
    ] {
        w.write_event(&e).expect("write");
    }
    w.finish().expect("finish")
}

/// The NAR of a directory with two files.
fn dir_nar(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut w = NarWriter::new(Vec::new());
    let events = [
        NarEvent::DirectoryStart { name: None },
        NarEvent::File {
            name: Some(b"a"),
            executable: false,
            size: a.len() as u64,
        },
        NarEvent::FileChunk(a),
        NarEvent::FileEnd,
        NarEvent::File {
            name: Some(b"b"),
            executable: true,
            size: b.len() as u64,
        },
        NarEvent::FileChunk(b),
        NarEvent::FileEnd,
        NarEvent::DirectoryEnd,
    ];
    for e in &events {
        w.write_event(e).expect("write");
    }
    w.finish().expect("finish")
}

fn info_for(path: StorePath, nar: &[u8]) -> ValidPathInfo {
    let mut info = ModelInfo::new(
        StoreDir::default(),
        Hash::digest(HashAlgo::Sha256, nar),
        nar.len() as u64,
    );
    info.registration_time = Some(1_700_000_000);
    ValidPathInfo { path, info }
}

/// A writer the test keeps a handle on.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn dump(store: &Store, path: &StorePath) -> Vec<u8> {
    let out = Shared::default();
    store.dump(path, out.clone()).await.expect("dump");
    out.0.lock().expect("lock").clone()
}

fn drv_vector(rel: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(DRV_VECTORS)
            .join(rel),
    )
    .expect("derivation vector")
}

async fn add_text(
    store: &Store,
    name: &str,
    text: &[u8],
    refs: &BTreeSet<StorePath>,
) -> Result<PathInfo, StoreError> {
    let mut data = text;
    store
        .add_to_store_ca(
            CaAddRequest {
                name: name.to_owned(),
                method: ContentAddressMethod::Text,
                algo: HashAlgo::Sha256,
                references: refs.clone(),
                dump: DumpFormat::Flat,
                repair: false,
                keep: None,
            },
            &mut data,
        )
        .await
}

#[tokio::test]
async fn add_nar_registers_and_leaves_following_bytes_in_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let nar = dir_nar(b"hello", b"#!/bin/sh\n");
    let path = sp("hello", 1);
    let info = info_for(path.clone(), &nar);
    let mut stream = nar.clone();
    stream.extend_from_slice(b"NEXT PATH");
    let mut input: &[u8] = &stream;
    let added = store.add_nar(&info, &mut input, false).await.expect("add");
    assert_eq!(input, b"NEXT PATH", "read past the NAR");
    assert_eq!(added.path, path);
    assert_eq!(added.nar_hash, info.info.nar_hash);
    assert_eq!(added.nar_size, nar.len() as u64);
    assert_eq!(added.registration_time, 1_700_000_000);
    assert_eq!(
        store.query_path_info(&path).await.expect("query"),
        Some(added.clone())
    );
    assert_eq!(dump(&store, &path).await, nar);
    // The protocol's form of the metadata round-trips.
    let model = added
        .to_valid_path_info(store.store_dir())
        .expect("model form");
    assert_eq!(model.info.nar_hash, info.info.nar_hash);
    assert_eq!(model.info.registration_time, Some(1_700_000_000));

    // Offered again while valid: the NAR is consumed, nothing changes.
    let mut again = info.clone();
    again.info.registration_time = Some(1_800_000_000);
    let mut input: &[u8] = &stream;
    let same = store
        .add_nar(&again, &mut input, false)
        .await
        .expect("again");
    assert_eq!(input, b"NEXT PATH");
    assert_eq!(same, added);
    // Even with a wrong hash: a valid path's data is not looked at (as in Nix).
    again.info.nar_hash = Hash::digest(HashAlgo::Sha256, b"other");
    let mut input: &[u8] = &stream;
    store
        .add_nar(&again, &mut input, false)
        .await
        .expect("valid, skipped");
    assert_eq!(input, b"NEXT PATH");

    // With repair it is ingested and checked again.
    let mut input: &[u8] = &stream;
    let err = store
        .add_nar(&again, &mut input, true)
        .await
        .expect_err("repair checks the hash");
    assert!(err.to_string().contains("hash mismatch"), "{err}");
    let mut input: &[u8] = &stream;
    store
        .add_nar(&info, &mut input, true)
        .await
        .expect("repair");
    assert_eq!(input, b"NEXT PATH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_add_nar_reads_exactly_the_nar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let first = file_nar(b"first", false);
    let second = file_nar(&vec![7u8; 3 << 20], true);
    let (p1, p2) = (sp("first", 1), sp("second", 2));
    let (i1, i2) = (info_for(p1.clone(), &first), info_for(p2.clone(), &second));
    // Two NARs back to back, as AddMultipleToStore sends them.
    let mut stream = first.clone();
    stream.extend_from_slice(&second);
    stream.extend_from_slice(b"END");
    let s = store.clone();
    let rest = tokio::task::spawn_blocking(move || {
        let mut input = Cursor::new(stream);
        s.add_nar_blocking(&i1, &mut input, false).expect("first");
        s.add_nar_blocking(&i2, &mut input, false).expect("second");
        let mut rest = Vec::new();
        input.read_to_end(&mut rest).expect("rest");
        rest
    })
    .await
    .expect("task");
    assert_eq!(rest, b"END");
    assert_eq!(dump(&store, &p1).await, first);
    assert_eq!(dump(&store, &p2).await, second);
}

#[tokio::test]
async fn bad_nars_register_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let nar = dir_nar(b"hello", b"world");
    let path = sp("bad", 3);
    let shown = store.store_dir().display(&path);
    let good = info_for(path.clone(), &nar);

    // Wrong hash.
    let mut info = good.clone();
    info.info.nar_hash = Hash::digest(HashAlgo::Sha256, b"something else");
    let mut input: &[u8] = &nar;
    let err = store
        .add_nar(&info, &mut input, false)
        .await
        .expect_err("hash");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "hash mismatch importing path '{shown}';\n  specified: sha256-"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n  got:       {}", good.info.nar_hash.to_sri())),
        "{text}"
    );

    // Size announced larger than the NAR (the stream has the bytes).
    let mut info = good.clone();
    info.info.nar_size += 8;
    let mut stream = nar.clone();
    stream.extend_from_slice(&[0; 8]);
    let mut input: &[u8] = &stream;
    let err = store
        .add_nar(&info, &mut input, false)
        .await
        .expect_err("size");
    assert!(
        err.to_string().starts_with("size mismatch importing path"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("got:       {}", nar.len())),
        "{err}"
    );

    // Size announced smaller than the NAR: nothing past it is read.
    let mut info = good.clone();
    info.info.nar_size -= 8;
    let mut input: &[u8] = &nar;
    let err = store
        .add_nar(&info, &mut input, false)
        .await
        .expect_err("short size");
    assert!(err.to_string().contains("more than"), "{err}");
    assert_eq!(input.len(), 8, "read past the announced size");

    // Truncated stream.
    let mut input: &[u8] = &nar[..nar.len() / 2];
    let err = store
        .add_nar(&good, &mut input, false)
        .await
        .expect_err("truncated");
    assert!(err.to_string().contains("stream ended"), "{err}");

    // Garbage.
    let garbage = vec![1u8; nar.len()];
    let mut input: &[u8] = &garbage;
    store
        .add_nar(&good, &mut input, false)
        .await
        .expect_err("garbage");

    // A reference that is not valid.
    let mut info = good.clone();
    info.info.references.insert(sp("ghost", 9));
    let mut input: &[u8] = &nar;
    let err = store
        .add_nar(&info, &mut input, false)
        .await
        .expect_err("reference");
    assert!(err.to_string().contains("is not valid"), "{err}");

    assert!(!store.is_valid_path(&path).await.expect("valid"));
    assert_eq!(
        store.stats().await.expect("stats").db.paths,
        0,
        "a row was written"
    );
    assert!(store.query_path_info(&path).await.expect("info").is_none());

    // The good one still goes in afterwards.
    let mut input: &[u8] = &nar;
    store.add_nar(&good, &mut input, false).await.expect("good");
    assert!(store.is_valid_path(&path).await.expect("valid"));
}

#[tokio::test]
async fn add_nar_checks_content_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let sd = store.store_dir().clone();
    let nar = dir_nar(b"source", b"code");
    let nar_hash = Hash::digest(HashAlgo::Sha256, &nar);
    let path = sd
        .make_fixed_output_path("src", true, &nar_hash, [], false)
        .expect("path");
    let mut info = info_for(path.clone(), &nar);
    info.info.ca = Some(ContentAddress::new(
        ContentAddressMethod::NixArchive,
        nar_hash.clone(),
    ));

    // A content address whose hash is not the contents'.
    let mut wrong = info.clone();
    wrong.info.ca = Some(ContentAddress::new(
        ContentAddressMethod::NixArchive,
        Hash::digest(HashAlgo::Sha256, b"x"),
    ));
    let mut input: &[u8] = &nar;
    let err = store
        .add_nar(&wrong, &mut input, false)
        .await
        .expect_err("ca hash");
    assert!(
        err.to_string()
            .starts_with("ca hash mismatch importing path"),
        "{err}"
    );

    // The right hash, but it does not give this path.
    let mut other = info.clone();
    other.path = sp("src", 4);
    let mut input: &[u8] = &nar;
    let err = store
        .add_nar(&other, &mut input, false)
        .await
        .expect_err("path");
    assert!(
        err.to_string()
            .contains("claims to be content-addressed but isn't"),
        "{err}"
    );
    assert!(!store.is_valid_path(&other.path).await.expect("valid"));

    let mut input: &[u8] = &nar;
    let added = store
        .add_nar(&info, &mut input, false)
        .await
        .expect("ca add");
    assert_eq!(
        added.ca,
        Some(format!("fixed:r:{}", nar_hash.to_nix32_prefixed()))
    );

    // Flat, with another algorithm: hashed over the file's contents.
    let contents = b"a tarball, say".repeat(100);
    let nar = file_nar(&contents, false);
    let sha1 = Hash::digest(HashAlgo::Sha1, &contents);
    let flat_path = sd
        .make_fixed_output_path("file.tar", false, &sha1, [], false)
        .expect("path");
    let mut flat = info_for(flat_path.clone(), &nar);
    flat.info.ca = Some(ContentAddress::new(ContentAddressMethod::Flat, sha1));
    let mut input: &[u8] = &nar;
    store
        .add_nar(&flat, &mut input, false)
        .await
        .expect("flat ca");
}

#[tokio::test]
async fn self_referencing_ca_path_is_hashed_modulo_its_hash_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let sd = store.store_dir().clone();
    // Contents naming the path itself twice; the hash is taken with those names zeroed and
    // their offsets appended, so it can be computed before the path is known.
    let zero = [0u8; 32];
    let mut contents = b"#!/bin/sh\nexec /nix/store/".to_vec();
    contents.extend_from_slice(&zero);
    contents.extend_from_slice(b"-tool/bin/real; see /nix/store/");
    contents.extend_from_slice(&zero);
    contents.extend_from_slice(b"-tool\n");
    let zeroed_nar = file_nar(&contents, true);
    let offsets: Vec<usize> = zeroed_nar
        .windows(32)
        .enumerate()
        .filter(|(_, w)| *w == zero)
        .map(|(i, _)| i)
        .fold(Vec::new(), |mut acc, i| {
            if acc.last().is_none_or(|&l: &usize| i >= l + 32) {
                acc.push(i);
            }
            acc
        });
    assert_eq!(offsets.len(), 2);
    let mut modulo_input = zeroed_nar.clone();
    for o in &offsets {
        modulo_input.extend_from_slice(format!("|{o}").as_bytes());
    }
    let ca_hash = Hash::digest(HashAlgo::Sha256, &modulo_input);
    let path = sd
        .make_fixed_output_path("tool", true, &ca_hash, [], true)
        .expect("path");
    let mut nar = zeroed_nar.clone();
    for o in &offsets {
        nar[*o..*o + 32].copy_from_slice(path.hash_part().as_bytes());
    }
    let mut info = info_for(path.clone(), &nar);
    info.info.references.insert(path.clone());
    info.info.ca = Some(ContentAddress::new(
        ContentAddressMethod::NixArchive,
        ca_hash,
    ));
    let mut input: &[u8] = &nar;
    let added = store
        .add_nar(&info, &mut input, false)
        .await
        .expect("self-referencing");
    assert_eq!(added.references, BTreeSet::from([path.clone()]));
    assert_eq!(
        store.query_referrers(&path).await.expect("referrers"),
        BTreeSet::from([path])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_of_one_path_register_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let nar = file_nar(&vec![42u8; 5 << 20], false);
    let path = sp("big", 5);
    let info = info_for(path.clone(), &nar);
    let mut tasks = Vec::new();
    for n in 0..4u8 {
        // Each offer names another deriver: a second registration would show.
        let mut info = info.clone();
        info.info.deriver = Some(sp("big.drv", 10 + n));
        let (store, nar) = (store.clone(), nar.clone());
        tasks.push(tokio::spawn(async move {
            let mut input: &[u8] = &nar;
            let added = store.add_nar(&info, &mut input, false).await.expect("add");
            assert!(input.is_empty(), "NAR not consumed");
            added
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    assert_eq!(
        store.query_path_info(&path).await.expect("info").as_ref(),
        results.first()
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.db.paths, 1);
    assert_eq!(dump(&store, &path).await, nar);
}

#[tokio::test]
async fn queries_referrers_hash_parts_derivers_and_signatures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let dep = sp("dep", 1);
    let user = sp("user", 2);
    let dep_nar = file_nar(b"library", false);
    let user_nar = file_nar(b"uses the library", false);
    let mut input: &[u8] = &dep_nar;
    store
        .add_nar(&info_for(dep.clone(), &dep_nar), &mut input, false)
        .await
        .expect("dep");
    let mut user_info = info_for(user.clone(), &user_nar);
    user_info.info.references.insert(dep.clone());
    user_info.info.deriver = Some(sp("user.drv", 3));
    let mut input: &[u8] = &user_nar;
    store
        .add_nar(&user_info, &mut input, false)
        .await
        .expect("user");

    assert_eq!(
        store.query_referrers(&dep).await.expect("referrers"),
        BTreeSet::from([user.clone()])
    );
    assert!(store.query_referrers(&user).await.expect("none").is_empty());
    assert!(
        store
            .query_referrers(&sp("ghost", 9))
            .await
            .expect("invalid")
            .is_empty(),
        "Nix answers empty for an invalid path"
    );

    assert_eq!(
        store
            .query_path_from_hash_part(user.hash_part())
            .await
            .expect("hash part"),
        Some(user.clone())
    );
    assert_eq!(
        store
            .query_path_from_hash_part(sp("x", 7).hash_part())
            .await
            .expect("unknown"),
        None
    );
    let err = store
        .query_path_from_hash_part("abc")
        .await
        .expect_err("short hash part");
    assert!(err.to_string().contains("invalid hash part"), "{err}");

    assert_eq!(
        store.query_deriver(&user).await.expect("deriver"),
        Some(sp("user.drv", 3))
    );
    assert_eq!(store.query_deriver(&dep).await.expect("no deriver"), None);
    let err = store
        .query_deriver(&sp("ghost", 9))
        .await
        .expect_err("invalid");
    assert!(err.to_string().contains("is not valid"), "{err}");

    assert_eq!(
        store
            .query_valid_paths(&[dep.clone(), sp("ghost", 9), user.clone()])
            .await
            .expect("valid paths"),
        BTreeSet::from([dep.clone(), user.clone()])
    );
    assert_eq!(
        store.query_all_valid_paths().await.expect("all"),
        vec![dep.clone(), user.clone()]
    );

    // Signatures merge as a set.
    let k1 = SecretKey::from_seed_bytes("cache-1", [1; 32]).expect("key");
    let k2 = SecretKey::from_seed_bytes("cache-2", [2; 32]).expect("key");
    let (s1, s2) = (k1.sign(b"a"), k2.sign(b"b"));
    store.add_signatures(&dep, [s1.clone()]).await.expect("sig");
    store
        .add_signatures(&dep, [s1.clone(), s2.clone()])
        .await
        .expect("sigs");
    let info = store
        .query_path_info(&dep)
        .await
        .expect("info")
        .expect("valid");
    assert_eq!(info.sigs, BTreeSet::from([s1.to_string(), s2.to_string()]));
    let err = store
        .add_signatures(&sp("ghost", 9), [s1])
        .await
        .expect_err("invalid path");
    assert!(err.to_string().contains("is not valid"), "{err}");
    // Re-registering keeps them, once each.
    let mut input: &[u8] = &dep_nar;
    let mut dep_info = info_for(dep.clone(), &dep_nar);
    dep_info.info.sigs.insert(s2.clone());
    store
        .add_nar(&dep_info, &mut input, true)
        .await
        .expect("repair");
    let info = store
        .query_path_info(&dep)
        .await
        .expect("info")
        .expect("valid");
    assert_eq!(info.sigs.len(), 2);
}

#[tokio::test]
async fn text_add_of_a_drv_records_its_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let sd = store.store_dir().clone();
    let text = drv_vector("ia/advanced-attributes-structured-attrs-defaults.drv");
    let name = "advanced-attributes-structured-attrs-defaults";
    let parsed = Derivation::from_aterm(&text, name, &sd).expect("parse");
    let added = add_text(&store, &format!("{name}.drv"), &text, &BTreeSet::new())
        .await
        .expect("add drv");
    let drv_path = added.path.clone();
    assert_eq!(drv_path, parsed.store_path(&sd).expect("drv path"));
    assert_eq!(
        added.ca,
        Some(format!(
            "text:{}",
            Hash::digest(HashAlgo::Sha256, &text).to_nix32_prefixed()
        ))
    );
    let outputs = parsed.outputs_and_paths(&sd).expect("outputs");
    assert_eq!(
        store
            .query_derivation_output_map(&drv_path)
            .await
            .expect("map"),
        outputs
    );
    assert_eq!(
        store
            .query_derivation_output_names(&drv_path)
            .await
            .expect("names"),
        BTreeSet::from(["dev".to_owned(), "out".to_owned()])
    );
    let out = outputs["out"].clone().expect("out path");
    assert_eq!(
        store
            .query_derivation_outputs(&drv_path)
            .await
            .expect("outputs")
            .len(),
        2
    );
    assert_eq!(
        store.query_valid_derivers(&out).await.expect("derivers"),
        BTreeSet::from([drv_path.clone()])
    );
    assert_eq!(
        store.read_derivation(&drv_path).await.expect("read"),
        parsed
    );

    // Adding the same text again gives the same path and changes nothing.
    let again = add_text(&store, &format!("{name}.drv"), &text, &BTreeSet::new())
        .await
        .expect("again");
    assert_eq!(again, added);

    // A .drv that is not one is refused.
    let err = add_text(&store, "junk.drv", b"not a derivation", &BTreeSet::new())
        .await
        .expect_err("junk");
    assert!(
        err.to_string().contains("error parsing derivation"),
        "{err}"
    );
    assert_eq!(store.stats().await.expect("stats").db.paths, 1);

    let err = store
        .query_derivation_output_map(&sp("ghost.drv", 9))
        .await
        .expect_err("invalid");
    assert!(err.to_string().contains("is not valid"), "{err}");
}

#[tokio::test]
async fn drv_outputs_are_checked_against_input_derivations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let sd = store.store_dir().clone();
    let a_name = "advanced-attributes-defaults";
    let a_text = drv_vector("ia/advanced-attributes-defaults.drv");
    let a = Derivation::from_aterm(&a_text, a_name, &sd).expect("parse a");
    let a_path = add_text(&store, &format!("{a_name}.drv"), &a_text, &BTreeSet::new())
        .await
        .expect("add a")
        .path;

    // B builds on A's `out`; its output path follows from A's modulo hash.
    let mut b = Derivation {
        name: "b".to_owned(),
        outputs: BTreeMap::from([("out".to_owned(), DerivationOutput::Deferred)]),
        input_drvs: BTreeMap::from([(a_path.clone(), InputOutputs::of(["out"]))]),
        platform: b"my-system".to_vec(),
        builder: b"/bin/sh".to_vec(),
        args: vec![b"-c".to_vec(), b"cp -r $in $out".to_vec()],
        ..Derivation::default()
    };
    b.env_set("name", "b");
    // As Nix's `derivation` does: every output's variable exists, empty, before hashing.
    b.env_set("out", "");
    b.env_set(
        "in",
        sd.display(
            &a.outputs_and_paths(&sd).expect("a")["out"]
                .clone()
                .expect("path"),
        ),
    );
    let mut hashes = DrvHashes::new();
    hashes
        .compute(&a_path, &sd, |_| Some(a.clone()))
        .expect("hash of a");
    fill_in_output_paths(&mut b, &sd, hashes.lookup()).expect("fill in");
    let b_text = b.to_aterm(&sd).expect("print");
    let b_refs = b.references();
    let b_path = add_text(&store, "b.drv", &b_text, &b_refs)
        .await
        .expect("add b")
        .path;
    assert_eq!(b_path, b.store_path(&sd).expect("b path"));
    let map = store
        .query_derivation_output_map(&b_path)
        .await
        .expect("map");
    let DerivationOutput::InputAddressed(b_out) = &b.outputs["out"] else {
        panic!("filled in");
    };
    assert_eq!(
        map,
        BTreeMap::from([("out".to_owned(), Some(b_out.clone()))])
    );
    assert_eq!(
        store.query_referrers(&a_path).await.expect("referrers"),
        BTreeSet::from([b_path])
    );

    // The same derivation claiming another output path is refused.
    let mut liar = b.clone();
    let stolen = sp("b", 8);
    liar.outputs.insert(
        "out".to_owned(),
        DerivationOutput::InputAddressed(stolen.clone()),
    );
    liar.env_set("out", sd.display(&stolen));
    let liar_text = liar.to_aterm(&sd).expect("print");
    let err = add_text(&store, "b.drv", &liar_text, &b_refs)
        .await
        .expect_err("wrong output path");
    assert!(err.to_string().contains("incorrect output"), "{err}");
    assert!(
        store
            .query_valid_derivers(&stolen)
            .await
            .expect("derivers")
            .is_empty(),
        "the lie was recorded"
    );

    // Without its input derivation in the references (and the store), it cannot be checked.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let empty = open_store(dir2.path()).await;
    let err = add_text(&empty, "b.drv", &b_text, &BTreeSet::new())
        .await
        .expect_err("input missing");
    assert!(err.to_string().contains("is not valid"), "{err}");
    assert_eq!(empty.stats().await.expect("stats").db.paths, 0);
}

#[tokio::test]
async fn floating_ca_outputs_resolve_through_realisations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let name = "advanced-attributes-defaults";
    let text = drv_vector("ca/advanced-attributes-defaults.drv");
    let drv_path = add_text(&store, &format!("{name}.drv"), &text, &BTreeSet::new())
        .await
        .expect("add")
        .path;
    assert_eq!(
        store
            .query_derivation_output_map(&drv_path)
            .await
            .expect("map"),
        BTreeMap::from([("out".to_owned(), None)])
    );
    assert!(
        store
            .query_derivation_outputs(&drv_path)
            .await
            .expect("outputs")
            .is_empty()
    );

    // The build's result.
    let out_nar = file_nar(b"built", false);
    let out = sp(name, 6);
    let mut input: &[u8] = &out_nar;
    store
        .add_nar(&info_for(out.clone(), &out_nar), &mut input, false)
        .await
        .expect("output");
    let key = RealisationKey::DrvPath {
        drv_path: drv_path.clone(),
        output_name: "out".to_owned(),
    };
    let sig = SecretKey::from_seed_bytes("builder", [3; 32])
        .expect("key")
        .sign(b"r")
        .to_string();
    let value = RealisationValue {
        out_path: out.clone(),
        signatures: BTreeSet::from([sig]),
        dependencies: BTreeMap::new(),
    };
    store
        .register_realisation(key.clone(), value.clone())
        .await
        .expect("register");
    assert_eq!(
        store.query_realisation(&key).await.expect("query"),
        Some(value.clone())
    );
    assert_eq!(
        store
            .query_derivation_output_map(&drv_path)
            .await
            .expect("map"),
        BTreeMap::from([("out".to_owned(), Some(out.clone()))])
    );
    // Registered under the hash modulo too, for older clients.
    let drv = store.read_derivation(&drv_path).await.expect("read");
    let hash = pkgchain_store_model::derivation::hash_modulo::static_output_hashes(
        &drv,
        store.store_dir(),
        |_| None,
    )
    .expect("hash")["out"]
        .clone();
    let legacy = RealisationKey::DrvHash(DrvHashOutput {
        drv_hash: hash,
        output_name: "out".to_owned(),
    });
    assert_eq!(
        store
            .query_realisation(&legacy)
            .await
            .expect("legacy")
            .map(|r| r.out_path),
        Some(out.clone())
    );

    // Another output path for the same output is a conflict.
    let other = sp(name, 7);
    let mut input: &[u8] = &out_nar;
    store
        .add_nar(&info_for(other.clone(), &out_nar), &mut input, false)
        .await
        .expect("other");
    let err = store
        .register_realisation(
            key,
            RealisationValue {
                out_path: other,
                signatures: BTreeSet::new(),
                dependencies: BTreeMap::new(),
            },
        )
        .await
        .expect_err("conflict");
    assert!(
        err.to_string().contains("already have another one"),
        "{err}"
    );
}

#[tokio::test]
async fn legacy_realisations_keep_their_dependencies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let nar = file_nar(b"x", false);
    let (lib, app) = (sp("lib", 1), sp("app", 2));
    for p in [&lib, &app] {
        let mut input: &[u8] = &nar;
        store
            .add_nar(&info_for(p.clone(), &nar), &mut input, false)
            .await
            .expect("add");
    }
    let id = |n: u8, out: &str| DrvHashOutput {
        drv_hash: Hash::sha256([n; 32]),
        output_name: out.to_owned(),
    };
    let plain = |p: &StorePath| RealisationValue {
        out_path: p.clone(),
        signatures: BTreeSet::new(),
        dependencies: BTreeMap::new(),
    };
    let mut app_value = plain(&app);
    app_value.dependencies.insert(id(1, "out"), lib.clone());
    // The dependency must be registered first.
    let err = store
        .register_realisation(RealisationKey::DrvHash(id(2, "out")), app_value.clone())
        .await
        .expect_err("missing dependency");
    assert!(err.to_string().contains("non existent"), "{err}");
    store
        .register_realisation(RealisationKey::DrvHash(id(1, "out")), plain(&lib))
        .await
        .expect("lib");
    store
        .register_realisation(RealisationKey::DrvHash(id(2, "out")), app_value.clone())
        .await
        .expect("app");
    assert_eq!(
        store
            .query_realisation(&RealisationKey::DrvHash(id(2, "out")))
            .await
            .expect("query"),
        Some(app_value)
    );
    // The output path must be valid.
    let err = store
        .register_realisation(
            RealisationKey::DrvHash(id(3, "out")),
            plain(&sp("ghost", 9)),
        )
        .await
        .expect_err("invalid output");
    assert!(err.to_string().contains("is not valid"), "{err}");
    assert_eq!(
        store
            .query_realisation(&RealisationKey::DrvHash(id(4, "out")))
            .await
            .expect("unknown"),
        None
    );
}

#[tokio::test]
async fn content_addressed_adds_compute_their_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let sd = store.store_dir().clone();
    let request = |name: &str, method, algo, dump| CaAddRequest {
        name: name.to_owned(),
        method,
        algo,
        references: BTreeSet::new(),
        dump,
        repair: false,
        keep: None,
    };

    // Flat with SHA-1, large enough to be spooled to a file.
    let contents: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut data: &[u8] = &contents;
    let added = store
        .add_to_store_ca(
            request(
                "blob",
                ContentAddressMethod::Flat,
                HashAlgo::Sha1,
                DumpFormat::Flat,
            ),
            &mut data,
        )
        .await
        .expect("flat");
    let sha1 = Hash::digest(HashAlgo::Sha1, &contents);
    assert_eq!(
        added.path,
        sd.make_fixed_output_path("blob", false, &sha1, [], false)
            .expect("path")
    );
    assert_eq!(
        added.ca,
        Some(format!("fixed:{}", sha1.to_nix32_prefixed()))
    );
    assert_eq!(dump(&store, &added.path).await, file_nar(&contents, false));

    // Recursive from a NAR, SHA-256: a source path.
    let nar = dir_nar(b"one", b"two");
    let mut data: &[u8] = &nar;
    let src = store
        .add_to_store_ca(
            request(
                "src",
                ContentAddressMethod::NixArchive,
                HashAlgo::Sha256,
                DumpFormat::Nar,
            ),
            &mut data,
        )
        .await
        .expect("recursive");
    let nar_hash = Hash::digest(HashAlgo::Sha256, &nar);
    assert_eq!(
        src.path,
        sd.make_fixed_output_path("src", true, &nar_hash, [], false)
            .expect("path")
    );
    assert_eq!(src.nar_hash, nar_hash);

    // Recursive with SHA-512: the NAR hash stays SHA-256.
    let mut data: &[u8] = &nar;
    let src512 = store
        .add_to_store_ca(
            request(
                "src",
                ContentAddressMethod::NixArchive,
                HashAlgo::Sha512,
                DumpFormat::Nar,
            ),
            &mut data,
        )
        .await
        .expect("recursive sha512");
    let sha512 = Hash::digest(HashAlgo::Sha512, &nar);
    assert_eq!(
        src512.path,
        sd.make_fixed_output_path("src", true, &sha512, [], false)
            .expect("path")
    );
    assert_eq!(src512.nar_hash, nar_hash);

    // Old-form flat: a NAR of one (executable) file, of which the contents count.
    let exe = file_nar(b"#!/bin/sh\n", true);
    let mut data: &[u8] = &exe;
    let old = store
        .add_to_store_ca(
            request(
                "script",
                ContentAddressMethod::Flat,
                HashAlgo::Sha256,
                DumpFormat::Nar,
            ),
            &mut data,
        )
        .await
        .expect("old-form flat");
    let h = Hash::digest(HashAlgo::Sha256, b"#!/bin/sh\n");
    assert_eq!(
        old.path,
        sd.make_fixed_output_path("script", false, &h, [], false)
            .expect("path")
    );
    assert_eq!(
        dump(&store, &old.path).await,
        file_nar(b"#!/bin/sh\n", false)
    );

    // Text with references; the blocking form.
    let dep = src.path.clone();
    let s = store.clone();
    let refs = BTreeSet::from([dep.clone()]);
    let text = format!("uses {}", sd.display(&dep));
    let r = refs.clone();
    let t = text.clone();
    let toml = tokio::task::spawn_blocking(move || {
        let mut data = Cursor::new(t.into_bytes());
        s.add_to_store_ca_blocking(
            CaAddRequest {
                name: "config".to_owned(),
                method: ContentAddressMethod::Text,
                algo: HashAlgo::Sha256,
                references: r,
                dump: DumpFormat::Flat,
                repair: false,
                keep: None,
            },
            &mut data,
        )
    })
    .await
    .expect("task")
    .expect("text");
    assert_eq!(
        toml.path,
        sd.make_text_path(
            "config",
            &Hash::digest(HashAlgo::Sha256, text.as_bytes()),
            &refs
        )
        .expect("path")
    );
    assert_eq!(toml.references, refs);

    // What cannot have a path is refused before reading.
    let mut data: &[u8] = b"x";
    let mut bad = request(
        "f",
        ContentAddressMethod::Flat,
        HashAlgo::Sha256,
        DumpFormat::Flat,
    );
    bad.references.insert(dep.clone());
    store
        .add_to_store_ca(bad, &mut data)
        .await
        .expect_err("flat with references");
    let mut data: &[u8] = b"x";
    store
        .add_to_store_ca(
            request(
                "t",
                ContentAddressMethod::Text,
                HashAlgo::Sha1,
                DumpFormat::Flat,
            ),
            &mut data,
        )
        .await
        .expect_err("text with sha1");
    let mut data: &[u8] = b"x";
    let err = store
        .add_to_store_ca(
            request(
                "g",
                ContentAddressMethod::Git,
                HashAlgo::Sha1,
                DumpFormat::Nar,
            ),
            &mut data,
        )
        .await
        .expect_err("git");
    assert!(err.to_string().contains("not supported"), "{err}");
    // A text reference that is not valid.
    let mut data: &[u8] = b"x";
    let mut ghost = request(
        "t",
        ContentAddressMethod::Text,
        HashAlgo::Sha256,
        DumpFormat::Flat,
    );
    ghost.references.insert(sp("ghost", 9));
    let err = store
        .add_to_store_ca(ghost, &mut data)
        .await
        .expect_err("ghost");
    assert!(err.to_string().contains("is not valid"), "{err}");
}

/// `nix-store --verify` without `--check-contents` only checks that blocks exist: it names a
/// missing block, does not read blocks (so a corrupt one passes), and the full check finds both.
#[tokio::test]
async fn presence_check_finds_missing_blocks_without_reading_any() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let nar = dir_nar(b"first file", b"second file");
    let path = sp("two", 7);
    let mut input: &[u8] = &nar;
    store
        .add_nar(&info_for(path.clone(), &nar), &mut input, false)
        .await
        .expect("add");
    assert!(
        store
            .verify_presence()
            .await
            .expect("verify")
            .problems
            .is_empty()
    );
    let blocks = store.db().path_blocks(&path).await.expect("blocks");
    let raw: Vec<_> = blocks
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| c.to_string().starts_with("bafk"))
        .collect();
    assert_eq!(
        raw.len(),
        2,
        "two raw leaf blocks, one per file: {blocks:?}"
    );
    // One block corrupted (contents replaced), one removed.
    let corrupt = store.blocks().path_of(&raw[0]);
    let mut perms = std::fs::metadata(&corrupt).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&corrupt, perms).expect("chmod");
    std::fs::write(&corrupt, b"not the data").expect("corrupt");
    std::fs::remove_file(store.blocks().path_of(&raw[1])).expect("remove");

    let shallow = store.verify_presence().await.expect("verify");
    let shallow: Vec<String> = shallow.problems.iter().map(ToString::to_string).collect();
    assert_eq!(shallow.len(), 1, "{shallow:?}");
    assert!(shallow[0].contains(&raw[1].to_string()), "{shallow:?}");

    let full = store.verify().await.expect("verify");
    let full: Vec<String> = full.problems.iter().map(ToString::to_string).collect();
    assert!(
        full.iter().any(|p| p.contains(&raw[0].to_string())),
        "{full:?}"
    );
    assert!(
        full.iter().any(|p| p.contains(&raw[1].to_string())),
        "{full:?}"
    );
}
