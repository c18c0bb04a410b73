//! Substitution over real HTTP on loopback: a small server in the test answers each request as
//! the test says (late, cut short, with a status), and a real store takes the NARs. Transfers
//! that break are tried again; a slow cache of better priority is not waited for; narinfos
//! whose NAR cannot be used are refused with an error naming what was wrong; nothing half
//! downloaded becomes valid.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pkgchain_store::{Store, StoreConfig};
use pkgchain_store_model::hash::{Hash, sha256};
use pkgchain_store_model::nar::{NarEvent, NarWriter};
use pkgchain_store_model::narinfo::NarInfo;
use pkgchain_store_model::signature::SecretKey;
use pkgchain_store_model::store_path::{StoreDir, StorePath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// How the server answers one request.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// Send only this many bytes of the body (the header still announces all), then close.
    cut_at: Option<usize>,
    /// Wait this long before answering.
    delay: Duration,
    /// Keep the connection open this long after what was sent, sending nothing.
    hold: Duration,
}

impl Answer {
    fn ok(body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: 200,
            body: body.into(),
            cut_at: None,
            delay: Duration::ZERO,
            hold: Duration::ZERO,
        }
    }

    fn not_found() -> Answer {
        Answer {
            status: 404,
            ..Answer::ok("404")
        }
    }
}

type Route = Box<dyn Fn(&str, usize) -> Answer + Send + Sync>;

/// An HTTP/1.1 server on 127.0.0.1: each request is answered by `route(path, how many times
/// that path was asked before)`, one connection per request.
struct Server {
    url: String,
    asked: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    async fn start(route: Route) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let asked: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let route = Arc::new(route);
        let counts = asked.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (route, counts) = (route.clone(), counts.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let before = {
                        let mut c = counts.lock().expect("counts");
                        let n = c.entry(path.clone()).or_insert(0);
                        *n += 1;
                        *n - 1
                    };
                    let answer = route(&path, before);
                    tokio::time::sleep(answer.delay).await;
                    let header = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        answer.status,
                        answer.body.len()
                    );
                    let sent = answer.cut_at.unwrap_or(answer.body.len());
                    let _ = conn.write_all(header.as_bytes()).await;
                    let _ = conn.write_all(&answer.body[..sent]).await;
                    tokio::time::sleep(answer.hold).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Server { url, asked }
    }

    fn times_asked(&self, path: &str) -> usize {
        self.asked
            .lock()
            .expect("counts")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// A NAR of one regular file holding `contents`.
fn nar_of(contents: &[u8]) -> Vec<u8> {
    let mut w = NarWriter::new(Vec::new());
    for event in [
        NarEvent::File {
            name: None,
            executable: false,
            size: contents.len() as u64,
        },
        NarEvent::FileChunk(contents),
        NarEvent::FileEnd,
    ] {
        w.write_event(&event).expect("nar");
    }
    w.finish().expect("nar")
}

fn key() -> SecretKey {
    SecretKey::from_seed_bytes("test-1", [9; 32]).expect("key")
}

/// A signed narinfo of `path` whose NAR is `nar` at `nar/<name>`.
fn narinfo(path: &StorePath, nar: &[u8], name: &str, compression: &str) -> String {
    let mut info = NarInfo::new(
        StoreDir::default(),
        path.clone(),
        format!("nar/{name}"),
        Hash::sha256(sha256(nar)),
        nar.len() as u64,
    );
    info.compression = compression.to_owned();
    info.sign(&key()).expect("sign");
    info.to_text()
}

fn settings(urls: Vec<String>) -> SubstituterSettings {
    let mut trusted_keys = TrustedKeys::new();
    trusted_keys.insert(key().to_public_key());
    SubstituterSettings {
        urls,
        trusted_keys,
        ..SubstituterSettings::default()
    }
}

async fn open_store(dir: &std::path::Path) -> Store {
    Store::open(StoreConfig {
        store_dir: StoreDir::default(),
        db_file: dir.join("db/store.sqlite"),
        blocks_dir: dir.join("ipfs/blocks"),
        durability: pkgchain_store::Durability::EachCommit,
    })
    .await
    .expect("open store")
}

/// A store path whose hash part is `letter` 32 times.
fn the_path(letter: char, name: &str) -> StorePath {
    StorePath::from_base_name(&format!("{}-{name}", letter.to_string().repeat(32))).expect("path")
}

const CACHE_INFO: &str = "StoreDir: /nix/store\nPriority: 40\n";

/// A NAR whose transfer is cut short twice is fetched on the third try; one cut short every
/// time fails after `download-attempts` tries with an error naming the path and the cache,
/// and the path is not valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_transfers_are_tried_again_and_never_leave_a_valid_path() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = open_store(tmp.path()).await;
    let (good, bad) = (the_path('a', "good"), the_path('b', "bad"));
    let nar = nar_of(&vec![7u8; 300_000]);
    let (good_info, bad_info) = (
        narinfo(&good, &nar, "good.nar", "none"),
        narinfo(&bad, &nar, "bad.nar", "none"),
    );
    let (good_hash, bad_hash) = (good.hash_part().to_owned(), bad.hash_part().to_owned());
    let server = Server::start(Box::new(move |path, before| match path {
        "/nix-cache-info" => Answer::ok(CACHE_INFO),
        p if p == format!("/{good_hash}.narinfo") => Answer::ok(good_info.clone()),
        p if p == format!("/{bad_hash}.narinfo") => Answer::ok(bad_info.clone()),
        "/nar/good.nar" if before >= 2 => Answer::ok(nar.clone()),
        "/nar/good.nar" | "/nar/bad.nar" => Answer {
            cut_at: Some(nar.len() / 2),
            ..Answer::ok(nar.clone())
        },
        _ => Answer::not_found(),
    }))
    .await;
    let mut s = settings(vec![server.url.clone()]);
    s.download_attempts = 3;
    let subs = Substituters::new(s, StoreDir::default()).expect("substituters");
    let quiet = |_: String| {};

    let done = subs
        .substitute_closure(&store, std::slice::from_ref(&good), &quiet)
        .await
        .expect("the third try works");
    assert_eq!(done, vec![good.clone()]);
    assert_eq!(server.times_asked("/nar/good.nar"), 3);
    assert!(store.is_valid_path(&good).await.expect("db"));

    let error = subs
        .substitute_closure(&store, std::slice::from_ref(&bad), &quiet)
        .await
        .expect_err("always cut short");
    let text = error.to_string();
    assert!(
        text.contains(&format!("/nix/store/{bad}")) && text.contains(&server.url),
        "{text}"
    );
    assert_eq!(server.times_asked("/nar/bad.nar"), 3);
    assert!(!store.is_valid_path(&bad).await.expect("db"));
}

/// A cache of better priority that has not answered 300 ms after a worse one did is not
/// waited for: the worse cache's offer is taken. Then, for a while, that cache is asked only
/// about paths no other cache has (and still found there). One that answers at once wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cache_of_better_priority_does_not_hold_up_the_answer() {
    let (p, q, r) = (
        the_path('c', "slow"),
        the_path('d', "only-slow"),
        the_path('f', "both"),
    );
    let nar = nar_of(b"x");
    let name = |path: &StorePath| format!("/{}.narinfo", path.hash_part());
    let mut in_slow: HashMap<String, String> = HashMap::new();
    let mut in_fast: HashMap<String, String> = HashMap::new();
    for path in [&p, &q, &r] {
        in_slow.insert(name(path), narinfo(path, &nar, "slow.nar", "none"));
    }
    for path in [&p, &r] {
        in_fast.insert(name(path), narinfo(path, &nar, "fast.nar", "none"));
    }
    // Only `p`'s narinfo is late in the slow cache.
    let slow_delay = Arc::new(Mutex::new(Duration::from_secs(20)));
    let (delay, late) = (slow_delay.clone(), name(&p));
    let slow = Server::start(Box::new(move |path, _| match path {
        "/nix-cache-info" => Answer::ok("StoreDir: /nix/store\nPriority: 10\n"),
        other => match in_slow.get(other) {
            Some(info) => Answer {
                delay: if other == late {
                    *delay.lock().expect("delay")
                } else {
                    Duration::ZERO
                },
                ..Answer::ok(info.clone())
            },
            None => Answer::not_found(),
        },
    }))
    .await;
    let fast = Server::start(Box::new(move |path, _| match path {
        "/nix-cache-info" => Answer::ok("StoreDir: /nix/store\nPriority: 50\n"),
        other => in_fast
            .get(other)
            .map(|i| Answer::ok(i.clone()))
            .unwrap_or_else(Answer::not_found),
    }))
    .await;
    let urls = vec![slow.url.clone(), fast.url.clone()];
    let offered_by = |answers: &Answers, path: &StorePath| {
        answers
            .offers
            .get(path)
            .map(|o| o.narinfo.url.clone())
            .unwrap_or_default()
    };

    let subs = Substituters::new(settings(urls.clone()), StoreDir::default()).expect("subs");
    let answers = subs.query(std::slice::from_ref(&p)).await;
    assert_eq!(
        offered_by(&answers, &p),
        "nar/fast.nar",
        "{:?}",
        answers.warnings
    );
    assert_eq!(slow.times_asked(&name(&p)), 1);
    // The slow cache is now asked last: not about `r` (the fast cache has it), but about `q`.
    let answers = subs.query(&[q.clone(), r.clone()]).await;
    assert_eq!(offered_by(&answers, &q), "nar/slow.nar");
    assert_eq!(offered_by(&answers, &r), "nar/fast.nar");
    assert_eq!(slow.times_asked(&name(&r)), 0);
    assert_eq!(slow.times_asked(&name(&q)), 1);

    // Fresh lookups (a new set of substituters), the slow cache now quick: it wins.
    *slow_delay.lock().expect("delay") = Duration::ZERO;
    let subs = Substituters::new(settings(urls), StoreDir::default()).expect("subs");
    let answers = subs.query(&[p.clone(), r.clone()]).await;
    assert_eq!(offered_by(&answers, &p), "nar/slow.nar");
    assert_eq!(offered_by(&answers, &r), "nar/slow.nar");
}

/// A narinfo naming a compression this daemon cannot read, a NAR URL that leaves the cache,
/// and a NAR the cache does not have: each substitution fails with an error that names the
/// problem, and nothing becomes valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_nars_are_refused_with_an_error_naming_why() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = open_store(tmp.path()).await;
    let nar = nar_of(b"contents\n");
    // (path, its NAR's URL, its compression, what the error must say)
    let cases = [
        (
            the_path('a', "lz4"),
            "x.nar.lz4",
            "lz4",
            "unsupported compression 'lz4'",
        ),
        (
            the_path('b', "escape"),
            "../../etc/passwd",
            "none",
            "leaves the cache",
        ),
        (the_path('c', "gone"), "gone.nar", "none", "HTTP status 404"),
    ];
    let infos: HashMap<String, String> = cases
        .iter()
        .map(|(path, url, compression, _)| {
            (
                format!("/{}.narinfo", path.hash_part()),
                narinfo(path, &nar, url, compression),
            )
        })
        .collect();
    let server = Server::start(Box::new(move |path, _| match path {
        "/nix-cache-info" => Answer::ok(CACHE_INFO),
        p => infos
            .get(p)
            .map(|i| Answer::ok(i.clone()))
            .unwrap_or_else(Answer::not_found),
    }))
    .await;
    let subs = Substituters::new(settings(vec![server.url.clone()]), StoreDir::default())
        .expect("substituters");
    for (path, _, _, why) in &cases {
        let error = subs
            .substitute_closure(&store, std::slice::from_ref(path), &|_| {})
            .await
            .expect_err("refused");
        assert!(error.to_string().contains(why), "{path}: {error}");
        assert!(!store.is_valid_path(path).await.expect("db"), "{path}");
    }
}

/// A transfer that stops delivering (the connection open, nothing sent) is broken after
/// `stalled-download-timeout`, tried again, and in the end refused; nothing becomes valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transfer_times_out_and_is_tried_again() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = open_store(tmp.path()).await;
    let path = the_path('s', "stalled");
    let nar = nar_of(&vec![3u8; 200_000]);
    let info = narinfo(&path, &nar, "stalled.nar", "none");
    let wanted = format!("/{}.narinfo", path.hash_part());
    let server = Server::start(Box::new(move |p, _| match p {
        "/nix-cache-info" => Answer::ok(CACHE_INFO),
        p if p == wanted => Answer::ok(info.clone()),
        "/nar/stalled.nar" => Answer {
            cut_at: Some(nar.len() / 2),
            hold: Duration::from_secs(30),
            ..Answer::ok(nar.clone())
        },
        _ => Answer::not_found(),
    }))
    .await;
    let mut s = settings(vec![server.url.clone()]);
    s.download_attempts = 2;
    s.stalled_timeout = Duration::from_secs(1);
    let subs = Substituters::new(s, StoreDir::default()).expect("substituters");
    let error = subs
        .substitute_closure(&store, std::slice::from_ref(&path), &|_| {})
        .await
        .expect_err("stalled");
    assert!(
        error.to_string().contains(&format!("/nix/store/{path}")),
        "{error}"
    );
    assert_eq!(server.times_asked("/nar/stalled.nar"), 2);
    assert!(!store.is_valid_path(&path).await.expect("db"));
}

/// The lookups of an HTTP cache outlive the substituters that made them (a daemon restart):
/// new substituters on the same disk record answer from it within the TTLs, without asking
/// the cache, a narinfo found and a path absent alike; with the TTLs at zero the cache is
/// asked again. The narinfo read back is as trusted as the one fetched (the NAR is still
/// fetched and checked when the path is substituted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narinfo_lookups_are_kept_on_disk_within_their_ttls() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = open_store(tmp.path()).await;
    let nar = nar_of(b"kept on disk\n");
    let present = the_path('p', "present");
    let absent = the_path('q', "absent");
    let present_info = format!("/{}.narinfo", present.hash_part());
    let absent_info = format!("/{}.narinfo", absent.hash_part());
    let info = narinfo(&present, &nar, "p.nar", "none");
    let (served_info, served_nar) = (present_info.clone(), nar.clone());
    let server = Server::start(Box::new(move |path, _| match path {
        "/nix-cache-info" => Answer::ok(CACHE_INFO),
        "/nar/p.nar" => Answer::ok(served_nar.clone()),
        p if p == served_info => Answer::ok(info.clone()),
        _ => Answer::not_found(),
    }))
    .await;
    let record = tmp.path().join("state/narinfo-cache.sqlite");
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let disk = Arc::new(NarinfoDiskCache::new(&record, DAY, DAY));
    // Substituters with these TTLs (positive, negative) on `disk`.
    let fresh = |(positive_ttl, negative_ttl): (Duration, Duration),
                 disk: &Arc<NarinfoDiskCache>| {
        let s = SubstituterSettings {
            positive_ttl,
            negative_ttl,
            ..settings(vec![server.url.clone()])
        };
        Substituters::new(s, StoreDir::default())
            .expect("substituters")
            .with_disk_cache(disk.clone())
    };
    let both = [present.clone(), absent.clone()];
    // An offer only for the present path, the cache asked `times` about each path in all.
    let asked = |answers: Answers, times: usize| {
        assert!(
            answers.offers.contains_key(&present),
            "{:?}",
            answers.warnings
        );
        assert!(!answers.offers.contains_key(&absent));
        assert_eq!(server.times_asked(&present_info), times);
        assert_eq!(server.times_asked(&absent_info), times);
    };

    let first = fresh((DAY, DAY), &disk);
    asked(first.query(&both).await, 1);
    drop(first);
    disk.flush().await;
    drop(disk);

    // Restarted (the record opened again): the same answers, the cache not asked again.
    let disk = Arc::new(NarinfoDiskCache::new(&record, DAY, DAY));
    let second = fresh((DAY, DAY), &disk);
    asked(second.query(&both).await, 1);
    // The narinfo read back substitutes the path (its NAR fetched and checked).
    second
        .substitute_closure(&store, std::slice::from_ref(&present), &|_| {})
        .await
        .expect("substituted");
    assert!(store.is_valid_path(&present).await.expect("db"));
    drop(second);

    // Lookups made long before the machine started (twenty years ago) still hold within TTLs
    // longer than that: their age is reckoned from the wall clock. A TTL beyond what the clock
    // can count holds too.
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(20 * 365 * 24 * 3600);
    let url = server.url.clone();
    disk.put_looked_up_at(
        &url,
        present.hash_part(),
        Some(narinfo(&present, &nar, "p.nar", "none")),
        long_ago,
    );
    disk.put_looked_up_at(&url, absent.hash_part(), None, long_ago);
    disk.flush().await;
    let decades = Duration::from_secs(30 * 365 * 24 * 3600);
    let patient = fresh((decades, Duration::from_secs(u64::MAX)), &disk);
    asked(patient.query(&both).await, 1);
    drop(patient);

    // TTLs of zero: the record is too old, so the cache is asked again.
    let expired = fresh((Duration::ZERO, Duration::ZERO), &disk);
    asked(expired.query(&both).await, 2);
}
