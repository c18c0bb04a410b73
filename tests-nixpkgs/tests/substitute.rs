//! Substitution from binary caches, end to end. The caches are made by the real Nix (2.8, on a
//! local store of its own: `nix copy --to 'file://DIR?compression=…&secret-key=…'` of a built
//! closure) and served over loopback HTTP by `python3 -m http.server` (or over HTTPS behind a
//! login by `servers/https_cache.py`). Then the real Nix 2.8
//! and 2.34 clients run `nix-build` through our daemon with `--max-jobs 0`, so the outputs can
//! only come from the cache:
//!
//! * from an xz and a zstd cache over HTTP and a bzip2 `file://` cache, with a dead cache
//!   listed first: the client is told what will be fetched (`QueryMissing`), the closure is
//!   substituted (references first), verifies, and reads back;
//! * a narinfo signed by a key that is not trusted, or not signed at all, is refused with Nix's
//!   warning, and nothing becomes valid;
//! * a NAR changed by one byte fails its hash check, and nothing becomes valid;
//! * NARs gone from the cache: the build fails naming the download, and with `--fallback` the
//!   derivations are built instead;
//! * a cache over HTTPS whose authority only `ssl-cert-file` names and which wants the login
//!   of `netrc-file`: nix-daemon and ours substitute the same; without the login or the
//!   authority, ours refuses with the reason;
//! * an untrusted client's `--option substituters` is ignored with Nix's warning unless the
//!   daemon's `trusted-substituters` lists the cache.
//!
//! `--repair` fetches damaged paths again from the caches, as nix-daemon does. A daemon killed
//! with `kill -9` while substituting leaves nothing half-written valid.
//!
//! And the other way: `pkgchain serve-cache` serves our store, and the real Nix 2.34 copies
//! from it with signatures required.

use std::path::Path;

mod tls;

use pkgchain_tests_nixpkgs::scenario::{
    CORRUPT_FN, Client, Daemon, Role, ScenarioRun, client_available, transcript,
};
use pkgchain_tests_nixpkgs::{
    HttpServer, in_namespace_ok, prerequisites, readable_input_dir, value,
};

/// Builds `dependent` (which refers to `simple`) of `builds.nix` with the host's Nix 2.8 on a
/// local store in a private `/nix`, and copies its closure into `cache/xz`, `cache/zstd`,
/// `cache/bzip2` and `cache/none` under `input`, signed with a fresh key (`cache/pk`, `cache/sk`). Returns the
/// output path.
fn make_caches(input: &Path) -> String {
    let nix_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("nix");
    std::fs::copy(nix_dir.join("builds.nix"), input.join("builds.nix")).expect("copy");
    let script = format!(
        r#"
export NIX_CONFIG=$'sandbox = false\nbuild-users-group =\nsubstituters =\nexperimental-features = nix-command'
C='{input}/cache'
mkdir -p "$C"
out=$(nix-build '{input}/builds.nix' -A dependent --no-out-link 2> /nix/build.log) || {{ cat /nix/build.log; exit 1; }}
nix-store --generate-binary-cache-key test-cache-1 "$C/sk" "$C/pk"
for comp in xz zstd bzip2 none; do
  nix copy --to "file://$C/$comp?compression=$comp&secret-key=$C/sk" "$out"
done
chmod -R a+rX "$C"
echo "out=$out"
"#,
        input = input.display()
    );
    in_namespace_ok(&script, &[])
        .lines()
        .find_map(|l| l.strip_prefix("out=").map(str::to_owned))
        .expect("out")
}

/// `nix-build -A dependent --max-jobs 0` through our daemon with `client`, substituting from
/// `substituters` with `trusted-public-keys = keys`; the transcript says what happened.
fn build_through_ours(client: Client, input: &Path, substituters: &str, keys: &str) -> String {
    let config = format!(
        r"sandbox = false\nbuild-users-group =\nsubstituters = {substituters}\ntrusted-public-keys = {keys}"
    );
    build_with(client, Role::Root, input, &config, "--max-jobs 0")
}

/// `nix-build -A dependent ARGS` through our daemon configured with `config`, as `role`.
fn build_with(client: Client, role: Role, input: &Path, config: &str, args: &str) -> String {
    build_through(Daemon::Ours, client, role, input, config, args)
}

/// `nix-build -A dependent ARGS` through `daemon` configured with `config`, as `role`.
fn build_through(
    daemon: Daemon,
    client: Client,
    role: Role,
    input: &Path,
    config: &str,
    args: &str,
) -> String {
    let script = format!(
        r#"
if out=$(nix-build /mnt/in/builds.nix -A dependent {args} --no-out-link 2> "$HOME/build.log"); then
  echo "built=$out"
  echo "content=$(cat "$out")"
  nix-store --verify-path "$out" && echo "verified"
  echo "references=$(nix-store -q --references "$out" | sed 's|^/nix/store/[a-z0-9]*-||' | tr '\n' ' ')"
else
  echo "build failed"
fi
grep -o "copying path '[^']*' from '[^']*'" "$HOME/build.log" | sed 's|/nix/store/[a-z0-9]*-||' | sort | sed 's/^/copied: /' || true
grep -i "signature\|hash mismatch\|NAR hash\|error\|substituter\|building '\|unable to download" "$HOME/build.log" | sed 's/^/said: /' || true
grep -o "these [0-9]* paths will be fetched" "$HOME/build.log" | sed 's/^/missing: /' || true
echo "valid outputs: $(nix-store --check-validity $(cat /mnt/in/outputs) 2>/dev/null && echo all || echo not-all)"
"#
    );
    transcript(&ScenarioRun {
        client,
        daemon,
        role,
        input,
        file: "substitute.sh",
        script: &script,
        config,
    })
}

/// The input directory with the caches, the output path and its closure (written to
/// `outputs`), or `None` when the tools are missing.
fn setup(client: Client) -> Option<(tempfile::TempDir, String)> {
    let mut tools = vec!["unshare", "nix-build", "nix", "python3"];
    if client == Client::Nix234 {
        tools.push("chroot");
    }
    if !prerequisites(&tools) || !client_available(client) {
        return None;
    }
    let input = readable_input_dir("pkgchain-substitute-e2e-");
    let out = make_caches(input.path());
    let narinfos = std::fs::read_dir(input.path().join("cache/xz"))
        .expect("cache")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".narinfo"))
        })
        .count();
    assert_eq!(narinfos, 2, "dependent and simple in the cache");
    // Both paths of the closure, for the validity checks.
    let closure: Vec<String> = std::fs::read_dir(input.path().join("cache/xz"))
        .expect("cache")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("StorePath: "))
                .map(str::to_owned)
        })
        .collect();
    std::fs::write(input.path().join("outputs"), closure.join(" ")).expect("outputs");
    Some((input, out))
}

/// The cache's public key (`cache/pk` under `input`).
fn cache_key(input: &Path) -> String {
    std::fs::read_to_string(input.join("cache/pk"))
        .expect("pk")
        .trim()
        .to_owned()
}

/// A transcript without the "said:" lines (warnings and errors, which nix-daemon words
/// differently), for comparing what happened.
fn without_said(t: &str) -> Vec<String> {
    t.lines()
        .filter(|l| !l.starts_with("said: "))
        .map(str::to_owned)
        .collect()
}

/// `nix-build -A dependent --max-jobs 0` through nix-daemon and through ours, as root, with
/// `config`: nix-daemon builds `out` by substituting, and both transcripts agree but for the
/// "said:" lines. Returns ours.
fn same_as_nix_daemon(client: Client, input: &Path, config: &str, out: &str) -> String {
    let build = |daemon| build_through(daemon, client, Role::Root, input, config, "--max-jobs 0");
    let theirs = build(Daemon::RealNix);
    let ours = build(Daemon::Ours);
    println!("--- nix-daemon ---\n{theirs}\n--- ours ---\n{ours}");
    assert_eq!(value(&theirs, "built"), out, "{theirs}");
    assert!(theirs.contains("valid outputs: all"), "{theirs}");
    assert_eq!(without_said(&ours), without_said(&theirs));
    ours
}

/// Where a test's cache is served from.
enum Served {
    Http,
    File,
}

fn substitutes_from(client: Client, compression: &str, served: Served) {
    let Some((input, out)) = setup(client) else {
        return;
    };
    let server = HttpServer::start(&input.path().join("cache"));
    let pk = cache_key(input.path());
    let url = match served {
        Served::Http => format!("http://127.0.0.1:{}/{compression}", server.port),
        // The input directory is /mnt/in for the daemon and the client.
        Served::File => format!("file:///mnt/in/cache/{compression}"),
    };
    // A dead cache first (nothing listens on port 1): the live one still answers.
    let caches = format!("http://127.0.0.1:1 {url}");
    let t = build_through_ours(client, input.path(), &caches, &pk);
    println!("{t}");
    // QueryMissing told the client what would be fetched.
    assert!(t.contains("missing: these 2 paths will be fetched"), "{t}");
    assert_eq!(value(&t, "built"), out, "{t}");
    assert!(t.contains("\nverified\n"), "{t}");
    assert!(value(&t, "content").ends_with("-simple"), "{t}");
    assert!(
        value(&t, "content").starts_with("hello from /nix/store/"),
        "{t}"
    );
    assert_eq!(value(&t, "references"), "simple ", "{t}");
    assert!(
        t.contains(&format!("copied: copying path 'dependent' from '{url}'")),
        "{t}"
    );
    assert!(
        t.contains(&format!("copied: copying path 'simple' from '{url}'")),
        "{t}"
    );
    assert!(t.contains("valid outputs: all"), "{t}");
}

/// The same substitution through nix-daemon 2.34 and ours, with the Nix 2.34 client and a dead
/// cache listed first: the same output, contents and references, the same "will be fetched",
/// the same paths copied from the same cache, everything valid. (Warnings and errors are
/// worded differently and left out of the comparison.)
#[test]
fn nix_2_34_substitutes_what_nix_daemon_substitutes() {
    let client = Client::Nix234;
    let Some((input, out)) = setup(client) else {
        return;
    };
    let server = HttpServer::start(&input.path().join("cache"));
    let pk = cache_key(input.path());
    let url = format!("http://127.0.0.1:{}/zstd", server.port);
    let config = format!(
        r"sandbox = false\nbuild-users-group =\nsubstituters = http://127.0.0.1:1 {url}\ntrusted-public-keys = {}",
        pk
    );
    same_as_nix_daemon(client, input.path(), &config, &out);
}

/// A cache behind HTTPS and a login, as private caches are: the server's certificate is
/// signed by an authority only `ssl-cert-file` names, and every request needs the basic
/// login that `netrc-file` gives for 127.0.0.1.
///
/// * nix-daemon 2.34 and ours, given both files, substitute the same closure from the same
///   cache (the same transcript, as in `nix_2_34_substitutes_what_nix_daemon_substitutes`);
/// * ours with a netrc lacking the host: the server answers 401, nothing is copied, and the
///   client is told which URL failed and why;
/// * ours with the machine's CA bundle instead of the test authority: the certificate is
///   refused, and the client is told so.
#[test]
fn https_caches_with_a_login_work_as_with_nix_daemon() {
    let client = Client::Nix234;
    let Some((input, out)) = setup(client) else {
        return;
    };
    let (server, log) = tls::serve_privately(input.path(), &input.path().join("cache"));
    let pk = cache_key(input.path());
    let url = format!("https://127.0.0.1:{}/zstd", server.port);
    let config = |ca: &str, netrc: &str| {
        format!(
            r"sandbox = false\nbuild-users-group =\nsubstituters = {url}\ntrusted-public-keys = {}\nssl-cert-file = {ca}\nnetrc-file = {netrc}",
            pk
        )
    };
    let good = config("/mnt/in/tls/ca.pem", "/mnt/in/tls/netrc");
    let ours = same_as_nix_daemon(client, input.path(), &good, &out);
    assert!(
        ours.contains(&format!("copied: copying path 'simple' from '{url}'")),
        "{ours}"
    );

    // No login for this host: 401, nothing copied.
    let before = std::fs::read_to_string(&log).expect("log").len();
    let t = build_with(
        client,
        Role::Root,
        input.path(),
        &config("/mnt/in/tls/ca.pem", "/mnt/in/tls/other-netrc"),
        "--max-jobs 0",
    );
    println!("{t}");
    let asked = std::fs::read_to_string(&log).expect("log")[before..].to_owned();
    println!("server:\n{asked}");
    assert!(t.contains("build failed"), "{t}");
    assert!(
        t.contains("401"),
        "the client is told the cache said 401: {t}"
    );
    assert!(t.contains(&format!("{url}/nix-cache-info")), "{t}");
    assert!(asked.contains("401 /zstd/nix-cache-info"), "{asked}");
    assert!(!asked.contains("200 "), "nothing was served: {asked}");
    assert!(!t.contains("copied:"), "{t}");
    assert!(t.contains("valid outputs: not-all"), "{t}");

    // The machine's authorities (not the test's): the certificate is refused.
    let machine_bundle = "/etc/ssl/certs/ca-certificates.crt";
    let ca = if Path::new(machine_bundle).exists() {
        machine_bundle
    } else {
        // An authority that did not sign the server's certificate.
        "/mnt/in/tls/cert.pem"
    };
    let t = build_with(
        client,
        Role::Root,
        input.path(),
        &config(ca, "/mnt/in/tls/netrc"),
        "--max-jobs 0",
    );
    println!("{t}");
    assert!(t.contains("build failed"), "{t}");
    assert!(
        t.to_lowercase().contains("certificate"),
        "the client is told the certificate was refused: {t}"
    );
    assert!(!t.contains("copied:"), "{t}");
    assert!(t.contains("valid outputs: not-all"), "{t}");
}

/// `--repair` from the caches, as nix-daemon repairs: a path substituted from the cache (so no
/// derivation here makes it) is damaged, then repaired by `nix-store --verify --check-contents
/// --repair` and by `nix-build --repair` with `--max-jobs 0` (a damaged path of the outputs'
/// closure, then a damaged output), each time by fetching it again from the cache; a damaged
/// path no cache has cannot be repaired (`corrupt` is [`CORRUPT_FN`]). nix-daemon 2.34 and
/// ours give the same transcript.
const REPAIR_FROM_CACHE: &str = r#"
T=/nix/scenario-tmp
mkdir -p $T
for p in $(cat /mnt/in/outputs); do
  case $p in *-simple) SIMPLE=$p;; *-dependent) DEP=$p;; esac
done
nix-store -r $DEP > /dev/null 2>&1; echo "realised exit $?"
verify() { nix-store --verify --check-contents > /dev/null 2>&1; echo "verify exit $?"; }
said() {
  grep -o -e "copying path '[^']*' from '[^']*'" -e "cannot repair path '[^']*'" $T/out \
    | sed 's|/nix/store/[a-z0-9]*-||; s/^/  says: /' || true
}
echo "== verify --repair of a damaged path from the cache"
corrupt $SIMPLE hello
verify
nix-store --verify --check-contents --repair > $T/out 2>&1; echo "verify --repair exit $?"; said
echo "simple: $(cat $SIMPLE)"
verify
echo "== nix-build --repair of a damaged path in the closure"
corrupt $SIMPLE hello
nix-build /mnt/in/builds.nix -A dependent --no-out-link --repair --max-jobs 0 > $T/out 2>&1
echo "nix-build --repair exit $?"; said
echo "simple: $(cat $SIMPLE)"
verify
echo "== nix-build --repair of a damaged output"
corrupt $DEP "hello from $SIMPLE"
nix-build /mnt/in/builds.nix -A dependent --no-out-link --repair --max-jobs 0 > $T/out 2>&1
echo "nix-build --repair exit $?"; said
echo "dependent: $(cat $DEP)"
verify
echo "== a damaged path no cache has"
printf 'repair45added\n' > $T/added.txt
ADDED=$(nix-store --add $T/added.txt)
corrupt $ADDED repair45added
nix-store --verify --check-contents --repair > $T/out 2>&1; echo "verify --repair exit $?"; said
echo "hashes: $(nix-store -q --hash $SIMPLE $DEP | tr '\n' ' ')"
"#;

#[test]
fn nix_2_34_repairs_from_the_caches_as_nix_daemon_does() {
    let client = Client::Nix234;
    let Some((input, _out)) = setup(client) else {
        return;
    };
    let server = HttpServer::start(&input.path().join("cache"));
    let pk = cache_key(input.path());
    let url = format!("http://127.0.0.1:{}/zstd", server.port);
    let config = format!(
        r"sandbox = false\nbuild-users-group =\nsubstituters = {url}\ntrusted-public-keys = {}",
        pk
    );
    let script = format!("{CORRUPT_FN}{REPAIR_FROM_CACHE}");
    let run = |daemon| {
        transcript(&ScenarioRun {
            client,
            daemon,
            role: Role::Root,
            input: input.path(),
            file: "repair-from-cache.sh",
            script: &script,
            config: &config,
        })
    };
    let theirs = run(Daemon::RealNix);
    let ours = run(Daemon::Ours);
    println!("--- nix-daemon ---\n{theirs}\n--- ours ---\n{ours}");
    // Repaired from the cache, each time.
    assert!(
        ours.contains("verify --repair exit 0\n  says: copying path 'simple' from '"),
        "{ours}"
    );
    assert!(
        ours.contains("nix-build --repair exit 0\n  says: copying path 'dependent' from '"),
        "{ours}"
    );
    assert!(ours.contains("simple: hello\n"), "{ours}");
    assert!(!ours.contains("no block holds"), "{ours}");
    assert!(ours.contains("cannot repair path '"), "{ours}");
    pkgchain_tests_nixpkgs::scenario::assert_same_transcripts(&ours, &theirs);
}

#[test]
fn nix_2_8_builds_by_substituting_from_an_xz_cache() {
    substitutes_from(Client::Nix28, "xz", Served::Http);
}

#[test]
fn nix_2_34_builds_by_substituting_from_a_zstd_cache() {
    substitutes_from(Client::Nix234, "zstd", Served::Http);
}

#[test]
fn nix_2_34_builds_by_substituting_from_a_bzip2_file_cache() {
    substitutes_from(Client::Nix234, "bzip2", Served::File);
}

/// A build from the cache at `url`, trusting only `key`, fails: every narinfo is refused with
/// Nix's warning, nothing is copied, nothing becomes valid.
fn refused_for_signatures(client: Client, input: &Path, url: &str, key: &str) {
    let t = build_through_ours(client, input, url, key);
    println!("{t}");
    assert!(t.contains("build failed"), "{t}");
    assert!(
        t.contains(&format!(
            "substituter '{url}' does not have a valid signature for path"
        )),
        "{t}"
    );
    assert!(t.contains("valid outputs: not-all"), "{t}");
    assert!(!t.contains("copied:"), "{t}");
}

#[test]
fn untrusted_signatures_and_tampered_nars_make_nothing_valid() {
    let client = Client::Nix234;
    let Some((input, _out)) = setup(client) else {
        return;
    };
    let server = HttpServer::start(&input.path().join("cache"));
    // Signed, but by a key nobody trusts here.
    let other = "other-cache-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    let url = format!("http://127.0.0.1:{}/xz", server.port);
    refused_for_signatures(client, input.path(), &url, other);

    // Not signed at all (the zstd cache's narinfos without their `Sig` lines), with the
    // cache's own key trusted.
    let zstd = input.path().join("cache/zstd");
    for entry in std::fs::read_dir(&zstd).expect("cache") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "narinfo") {
            let text = std::fs::read_to_string(&path).expect("narinfo");
            let unsigned: String = text
                .lines()
                .filter(|l| !l.starts_with("Sig: "))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_ne!(unsigned, text, "the narinfo was signed");
            std::fs::write(&path, unsigned).expect("write");
        }
    }
    let pk = cache_key(input.path());
    let url = format!("http://127.0.0.1:{}/zstd", server.port);
    refused_for_signatures(client, input.path(), &url, &pk);

    // One byte of `simple`'s NAR changed (uncompressed, so the NAR still parses).
    let none = input.path().join("cache/none");
    let simple_info = std::fs::read_dir(&none)
        .expect("cache")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .find(|text| {
            text.lines()
                .any(|l| l.starts_with("StorePath: ") && l.ends_with("-simple"))
        })
        .expect("simple's narinfo");
    let url_line = simple_info.lines().find_map(|l| l.strip_prefix("URL: "));
    let nar = none.join(url_line.expect("a URL line"));
    let mut bytes = std::fs::read(&nar).expect("nar");
    let at = bytes
        .windows(5)
        .position(|w| w == b"hello")
        .expect("contents in the NAR");
    bytes[at] = b'j';
    std::fs::write(&nar, bytes).expect("tamper");
    let url = format!("http://127.0.0.1:{}/none", server.port);
    let t = build_through_ours(client, input.path(), &url, &pk);
    println!("{t}");
    assert!(t.contains("build failed"), "{t}");
    assert!(
        t.to_lowercase().contains("hash"),
        "the error names the hash check: {t}"
    );
    assert!(t.contains("valid outputs: not-all"), "{t}");
}

/// `pkgchain serve-cache`: our store, filled by a build through our daemon, served as a cache
/// and signed with a fresh key; the real Nix 2.34 copies the closure from it into a store of
/// its own with signatures required, and refuses it when it trusts another key.
#[test]
fn nix_2_34_substitutes_from_our_served_cache_with_signatures_required() {
    let client = Client::Nix234;
    if !prerequisites(&["unshare", "nix-build", "nix-store", "chroot"]) || !client_available(client)
    {
        return;
    }
    let input = readable_input_dir("pkgchain-serve-cache-e2e-");
    let nix_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("nix");
    std::fs::copy(nix_dir.join("builds.nix"), input.path().join("builds.nix")).expect("copy");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let chroot = pkgchain_tests_nixpkgs::scenario::SID_CHROOT;
    let script = format!(
        r#"
export PKGCHAIN_IPFS_DIR=/nix/ipfs
export NIX_CONFIG=$'{builds_config}'
mkdir -p /nix/ipfs
'{daemon}' --view fuse > /nix/daemon.log 2>&1 &
dpid=$!
spid=
trap "umount -l '{chroot}/nix/store' 2>/dev/null || true; [ -z \"\$spid\" ] || kill \$spid 2>/dev/null || true; kill -TERM \$dpid 2>/dev/null; wait \$dpid 2>/dev/null || true" EXIT
for i in $(seq 1 100); do [ -S /nix/var/nix/daemon-socket/socket ] && break; sleep 0.1; done
out=$(NIX_REMOTE=daemon nix-build '{input}/builds.nix' -A dependent --no-out-link 2> /nix/build.log) || {{ cat /nix/build.log /nix/daemon.log; exit 1; }}
NIX_REMOTE=daemon nix-store --generate-binary-cache-key served-1 /nix/sk /nix/pk
'{pkgchain}' serve-cache --listen 127.0.0.1:{port} --secret-key-file /nix/sk > /nix/serve.log 2>&1 &
spid=$!
for i in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1; done
mount --bind /proc '{chroot}/proc'
mount --rbind /dev '{chroot}/dev'
mount --rbind /nix '{chroot}/nix'
copy() {{
  chroot '{chroot}' env -i PATH=/usr/bin:/bin HOME=/nix/home NIX_CONFIG="$(printf 'experimental-features = nix-command\nrequire-sigs = true\nsubstituters =\ntrusted-public-keys = %s' "$1")" \
    nix copy --from http://127.0.0.1:{port} --to "local?root=/nix/$2" "$out" > /nix/copy-$2.log 2>&1
}}
if copy "$(cat /nix/pk)" consumer; then
  echo "copied"
  echo "content=$(cat "/nix/consumer$out")"
  echo "paths=$(ls /nix/consumer/nix/store | grep -v '\.lock$' | sed 's/^[a-z0-9]*-//' | sort | tr '\n' ' ')"
else
  echo "copy failed"; cat /nix/copy-consumer.log
fi
if copy "other-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" doubter; then
  echo "copied without a trusted signature"
else
  echo "refused=$(grep -i 'signature' /nix/copy-doubter.log | head -n 1)"
fi
echo "doubter_has=$(ls /nix/doubter/nix/store 2>/dev/null | grep -c -- '-simple$\|-dependent$' || true)"
"#,
        daemon = pkgchain_tests_nixpkgs::daemon_bin().display(),
        pkgchain = pkgchain_tests_nixpkgs::workspace_bin("pkgchain").display(),
        input = input.path().display(),
        builds_config = pkgchain_tests_nixpkgs::scenario::SANDBOXED_BUILDS_CONFIG,
    );
    let t = in_namespace_ok(&script, &[]);
    println!("{t}");
    assert!(t.lines().any(|l| l == "copied"), "{t}");
    assert!(
        value(&t, "content").starts_with("hello from /nix/store/"),
        "{t}"
    );
    assert_eq!(value(&t, "paths"), "dependent simple ", "{t}");
    assert!(value(&t, "refused").contains("signature"), "{t}");
    assert_eq!(value(&t, "doubter_has"), "0", "{t}");
}

/// `fallback`: a cache whose narinfos are there but whose NARs are gone. Without `--fallback`
/// the build fails, naming the download that failed; with it, the derivations are built
/// instead, and the outputs are the ones the cache described.
#[test]
fn nix_2_34_falls_back_to_building_when_a_nar_is_gone() {
    let client = Client::Nix234;
    let Some((input, out)) = setup(client) else {
        return;
    };
    for entry in std::fs::read_dir(input.path().join("cache/zstd/nar")).expect("nar dir") {
        std::fs::remove_file(entry.expect("entry").path()).expect("rm");
    }
    let server = HttpServer::start(&input.path().join("cache"));
    let pk = cache_key(input.path());
    let url = format!("http://127.0.0.1:{}/zstd", server.port);
    // Builds need the host's shell in the sandbox.
    let config = format!(
        r"sandbox = true\nbuild-users-group =\nextra-sandbox-paths = /usr /lib /lib64\nsubstituters = {url}\ntrusted-public-keys = {}",
        pk
    );
    let t = build_with(client, Role::Root, input.path(), &config, "");
    println!("{t}");
    assert!(t.contains("build failed"), "{t}");
    assert!(t.contains("HTTP status 404"), "{t}");
    assert!(t.contains("valid outputs: not-all"), "{t}");

    let t = build_with(client, Role::Root, input.path(), &config, "--fallback");
    println!("{t}");
    assert_eq!(value(&t, "built"), out, "{t}");
    assert!(t.contains("\nverified\n"), "{t}");
    assert!(t.contains("falling back to building"), "{t}");
    assert!(t.contains("said: building '"), "{t}");
    assert!(t.contains("valid outputs: all"), "{t}");
}

/// Nix's rule for untrusted clients: a substituter they name is used only when the daemon's
/// `trusted-substituters` lists it; otherwise it is ignored with Nix's warning, and nothing is
/// fetched from it.
#[test]
fn untrusted_clients_use_only_trusted_substituters() {
    let client = Client::Nix234;
    let Some((input, out)) = setup(client) else {
        return;
    };
    if pkgchain_tests_nixpkgs::scenario::untrusted_user().is_none() {
        eprintln!(
            "skipped: no user {}",
            pkgchain_tests_nixpkgs::scenario::USER_NAME
        );
        return;
    }
    let server = HttpServer::start(&input.path().join("cache"));
    let pk = cache_key(input.path());
    let url = format!("http://127.0.0.1:{}/zstd", server.port);
    let args = format!("--max-jobs 0 --option substituters {url}");
    let base = format!(
        r"sandbox = false\nbuild-users-group =\nsubstituters =\ntrusted-public-keys = {}",
        pk
    );
    let t = build_with(client, Role::Untrusted, input.path(), &base, &args);
    println!("{t}");
    assert!(t.contains("build failed"), "{t}");
    assert!(
        t.contains(&format!("ignoring untrusted substituter '{url}'")),
        "{t}"
    );
    assert!(!t.contains("copied:"), "{t}");
    assert!(t.contains("valid outputs: not-all"), "{t}");

    let trusting = format!("{base}\\ntrusted-substituters = {url}");
    let t = build_with(client, Role::Untrusted, input.path(), &trusting, &args);
    println!("{t}");
    assert_eq!(value(&t, "built"), out, "{t}");
    assert!(
        t.contains(&format!("copied: copying path 'simple' from '{url}'")),
        "{t}"
    );
    assert!(t.contains("valid outputs: all"), "{t}");
}

/// A cache made by the host's Nix 2.8 on a store of its own: `count` files of `bytes` random
/// bytes added with `nix-store --add` (their paths in `paths`), copied uncompressed and signed
/// (key in `sk`/`pk`) into `cache` under `input`.
fn added_files_cache(input: &Path, count: usize, bytes: usize) {
    let make = format!(
        r#"
export NIX_CONFIG=$'sandbox = false\nbuild-users-group =\nsubstituters =\nexperimental-features = nix-command'
C='{input}/cache'
mkdir -p "$C" /nix/files
for i in $(seq 10 $((9 + {count}))); do head -c {bytes} /dev/urandom > /nix/files/big$i; done
nix-store --add /nix/files/* > '{input}/paths'
nix-store --generate-binary-cache-key test-cache-1 '{input}/sk' '{input}/pk'
nix copy --to "file://$C?compression=none&secret-key={input}/sk" $(cat '{input}/paths')
chmod -R a+rX '{input}'
"#,
        input = input.display()
    );
    in_namespace_ok(&make, &[]);
}

/// The start of a script that runs our daemon with the cache of [`added_files_cache`] under
/// `input`, served on `port`, as its substituter (`extra_conf` added to its `nix.conf`):
/// defines `start_daemon` (FUSE view, blocks under `/nix/ipfs`, log in `/nix/daemon.log`; the
/// daemon runs in the background as `$dpid`, and the function returns once it answers a
/// client, at most 10 s) and `stop_daemon` (SIGTERM, views unmounted), starts the daemon, and
/// sets `$paths` to the cache's paths.
fn our_daemon_started(input: &Path, port: u16, extra_conf: &str) -> String {
    let pk = std::fs::read_to_string(input.join("pk")).expect("pk");
    format!(
        r#"
mkdir -p /nix/ipfs /nix/etc/nix
export NIX_CONF_DIR=/nix/etc/nix NIX_REMOTE=daemon
printf 'sandbox = false\nbuild-users-group =\nsubstituters = http://127.0.0.1:{port}\ntrusted-public-keys = {pk}\n{extra_conf}\n' > /nix/etc/nix/nix.conf
start_daemon() {{
  PKGCHAIN_IPFS_DIR=/nix/ipfs '{daemon}' --view fuse >> /nix/daemon.log 2>&1 &
  dpid=$!
  for i in $(seq 1 100); do
    if [ -S /nix/var/nix/daemon-socket/socket ]; then
      case "$(nix-store --check-validity /nix/store/00000000000000000000000000000000-probe 2>&1 || true)" in
        *"cannot connect"*) ;;
        *) break ;;
      esac
    fi
    sleep 0.1
  done
  [ -S /nix/var/nix/daemon-socket/socket ] || {{ cat /nix/daemon.log; exit 1; }}
}}
stop_daemon() {{
  kill -TERM $dpid; wait $dpid 2>/dev/null || true
  umount -l /nix/store 2>/dev/null || true
  umount -l /nix/ipfs/store 2>/dev/null || true
  rm -f /nix/var/nix/daemon-socket/socket
}}
start_daemon
trap 'kill -TERM $dpid 2>/dev/null || true' EXIT
paths=$(cat '{input}/paths')
"#,
        pk = pk.trim(),
        input = input.display(),
        daemon = pkgchain_tests_nixpkgs::daemon_bin().display()
    )
}

/// What each cache said about each path outlives the daemon, as nix-daemon's disk cache
/// does: `nix-store -r --dry-run` (the client's QueryMissing) of 3 paths the cache has and one
/// it lacks asks the cache about each once; after a restart the same question is answered
/// without asking the cache again, with the same answer; with both TTLs at 0 (a trusted
/// client's `--option`) the cache is asked again.
#[test]
fn a_restarted_daemon_answers_from_its_narinfo_record_within_the_ttls() {
    if !prerequisites(&["unshare", "nix-store", "nix", "python3", "fusermount3"]) {
        return;
    }
    let input = readable_input_dir("pkgchain-substitute-record-");
    added_files_cache(input.path(), 3, 1024);
    let log = input.path().join("server.log");
    let server = HttpServer::start_logged(&input.path().join("cache"), &log);
    let script = format!(
        r#"
{started}
lacking=/nix/store/00000000000000000000000000000000-lacking
asked() {{ grep -c '\.narinfo HTTP' '{log}' || true; }}
dry_run() {{
  nix-store -r --dry-run $paths 2>&1 | grep -c '^  /nix/store/' || true
  nix-store -r --dry-run $lacking "$@" > /dev/null 2>&1; true
}}
echo "fetched_first=$(dry_run)"
echo "asked_first=$(asked)"
stop_daemon
start_daemon
echo "fetched_after_restart=$(dry_run)"
echo "asked_after_restart=$(asked)"
echo "fetched_without_ttls=$(nix-store -r --dry-run $paths --option narinfo-cache-positive-ttl 0 --option narinfo-cache-negative-ttl 0 2>&1 | grep -c '^  /nix/store/' || true)"
nix-store -r --dry-run $lacking --option narinfo-cache-negative-ttl 0 > /dev/null 2>&1 || true
echo "asked_without_ttls=$(asked)"
ls /nix/var/nix/pkgchain/narinfo-cache.sqlite > /dev/null && echo "record on disk"
"#,
        started = our_daemon_started(input.path(), server.port, ""),
        log = log.display(),
    );
    let t = in_namespace_ok(&script, &[]);
    println!("{t}");
    println!(
        "server:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(value(&t, "fetched_first").trim(), "3", "{t}");
    assert_eq!(value(&t, "asked_first").trim(), "4", "{t}");
    assert_eq!(value(&t, "fetched_after_restart").trim(), "3", "{t}");
    assert_eq!(value(&t, "asked_after_restart").trim(), "4", "{t}");
    assert_eq!(value(&t, "fetched_without_ttls").trim(), "3", "{t}");
    assert_eq!(value(&t, "asked_without_ttls").trim(), "8", "{t}");
    assert!(t.contains("record on disk"), "{t}");
}

/// `kill -9` of our daemon while it substitutes 16 paths of 4 MiB (random bytes, `compression
/// = none`, two at a time), once the first are valid and others are under way: after a
/// restart nothing half-written is valid (the store verifies with contents checked, and every
/// path valid then verifies on its own), and the same `nix-store -r` then completes with
/// every path valid and whole.
#[test]
fn a_daemon_killed_while_substituting_leaves_nothing_half_written() {
    if !prerequisites(&["unshare", "nix-store", "nix", "python3", "fusermount3"]) {
        return;
    }
    let input = readable_input_dir("pkgchain-substitute-kill-");
    added_files_cache(input.path(), 16, 4 * 1024 * 1024);
    let server = HttpServer::start(&input.path().join("cache"));
    let script = format!(
        r#"
{started}
nix-store -r $paths > /dev/null 2> /nix/first.log &
client=$!
# Two downloads at a time: killed once the first paths are valid, with others under way.
for i in $(seq 1 2000); do
  [ "$(nix-store --check-validity --print-invalid $paths 2>/dev/null | wc -l)" -lt 16 ] && break
  sleep 0.01
done
kill -KILL $dpid
wait $dpid 2>/dev/null || true
wait $client 2>/dev/null || true
umount -l /nix/store 2>/dev/null || true
umount -l /nix/ipfs/store 2>/dev/null || true
rm -f /nix/var/nix/daemon-socket/socket
start_daemon
echo "valid_after_kill=$(nix-store --check-validity --print-invalid $paths 2>/dev/null | wc -l | awk '{{print 16 - $1}}')"
nix-store --verify --check-contents > /nix/verify.out 2>&1 && echo VERIFIED || {{ echo NOT-VERIFIED; cat /nix/verify.out; }}
for p in $paths; do
  if nix-store --check-validity "$p" 2>/dev/null; then nix-store --verify-path "$p" || echo "BROKEN $p"; fi
done
nix-store -r $paths > /dev/null 2> /nix/second.log && echo "second run ok" || cat /nix/second.log
echo "invalid_at_the_end=$(nix-store --check-validity --print-invalid $paths 2>/dev/null | wc -l)"
nix-store --verify-path $paths && echo "ALL WHOLE"
"#,
        started = our_daemon_started(input.path(), server.port, "max-substitution-jobs = 2"),
    );
    let t = in_namespace_ok(&script, &[]);
    println!("{t}");
    let valid_after_kill: u32 = value(&t, "valid_after_kill").trim().parse().expect("count");
    assert!(
        valid_after_kill < 16,
        "the kill came after everything was done: {t}"
    );
    assert!(t.contains("\nVERIFIED\n"), "{t}");
    assert!(!t.contains("BROKEN"), "{t}");
    assert!(t.contains("second run ok"), "{t}");
    assert_eq!(value(&t, "invalid_at_the_end").trim(), "0", "{t}");
    assert!(t.contains("ALL WHOLE"), "{t}");
}
