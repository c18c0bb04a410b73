//! End-to-end load: 64 concurrent worker-protocol clients (`pkgchain-loadgen mixed`) against
//! our daemon for 60 s, in a private mount namespace with a tmpfs `/nix`.
//!
//! Checked: every request is answered and every reply is right (the load client verifies each
//! one: added paths are the paths computed from their contents and have the right NAR hash,
//! size, references, content address and referrers); the run ends (a deadlock would hit the
//! `timeout` around it and fail the test); every added path is valid afterwards and present in
//! the view; `nix-store --verify --check-contents` passes; a real Nix client is still served;
//! and the daemon's resident memory after the clients have left is not more than after a short
//! warm-up round plus [`RSS_MARGIN_KIB`].

use pkgchain_tests_nixpkgs::{daemon_bin, in_namespace_ok, prerequisites, skipping_allowed, value};

/// How much more resident memory the daemon may hold after the 60 s round than after the 5 s
/// warm-up round, both measured once every client has disconnected.
///
/// Both rounds use the same 64 connections and the same operation mix, so whatever the
/// daemon keeps per connection or per request in flight (buffers, tasks, the allocator's
/// per-thread arenas) is already counted in the warm-up figure, and the daemon hands free heap
/// back when its last client leaves. What may legitimately grow is what scales with the
/// store: the 60 s round adds about ten times as many paths as the warm-up (tens of
/// thousands, each a few KiB), and SQLite's page caches (2 MiB for the writer, 1 MiB for each
/// of 8 readers: about 10 MiB) fill with them. 32 MiB is a few times that and still far below
/// what a leak of even one small buffer per request (about 200,000 requests) would add.
const RSS_MARGIN_KIB: u64 = 32 * 1024;

fn json_of(text: &str, key: &str) -> serde_json::Value {
    serde_json::from_str(value(text, key))
        .unwrap_or_else(|e| panic!("{key} is not JSON ({e}):\n{text}"))
}

/// Checks one `mixed` round's report: no errors, and every kind of operation really ran.
fn check_round(report: &serde_json::Value, round: &str) {
    assert_eq!(
        report["errors"].as_u64(),
        Some(0),
        "{round}: the load client saw errors: {:#}",
        report["first_errors"]
    );
    for op in [
        "IsValidPath",
        "QueryPathInfo",
        "QueryReferrers",
        "QueryValidPaths",
        "AddTextToStore",
        "AddToStore",
    ] {
        assert!(
            report["ops"][op].as_u64().is_some_and(|n| n > 0),
            "{round}: no {op} requests were made: {report}"
        );
    }
    assert!(
        report["added_paths_count"].as_u64().is_some_and(|n| n > 0),
        "{round}: nothing was added: {report}"
    );
}

#[test]
fn sixty_four_clients_for_a_minute() {
    if !prerequisites(&["unshare", "nix-store", "timeout", "fusermount3"]) {
        return;
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        if skipping_allowed() {
            eprintln!("skipped: /dev/fuse is missing");
            return;
        }
        panic!("/dev/fuse is missing (the daemon serves its FUSE view)");
    }
    let loadgen = env!("CARGO_BIN_EXE_pkgchain-loadgen");
    let script = format!(
        r#"
export NIX_CONFIG=$'sandbox = false\nbuild-users-group =\nrequire-sigs = false\nsubstituters ='
mkdir -p /nix/ipfs /nix/seed
PKGCHAIN_IPFS_DIR=/nix/ipfs '{daemon}' --view fuse > /nix/daemon.log 2>&1 &
dpid=$!
trap 'kill -TERM $dpid 2>/dev/null; wait $dpid 2>/dev/null || true' EXIT
for i in $(seq 1 100); do [ -S /nix/var/nix/daemon-socket/socket ] && break; sleep 0.1; done
[ -S /nix/var/nix/daemon-socket/socket ] || {{ cat /nix/daemon.log; exit 1; }}
fail() {{ echo "FAILED: $*"; echo "--- daemon log (tail) ---"; tail -n 50 /nix/daemon.log; exit 1; }}
rss() {{ awk '/^VmRSS:/ {{ print $2 }}' /proc/$dpid/status; }}
sockets() {{ find /proc/$dpid/fd -lname 'socket:*' 2>/dev/null | wc -l; }}
# Waits until the daemon holds no more sockets than before the load (clients gone).
settle() {{
  # Once idle, the daemon hands its free heap back (malloc_trim): give it a second for that.
  for i in $(seq 1 300); do [ "$(sockets)" -le "$idle_sockets" ] && {{ sleep 1; return 0; }}; sleep 0.1; done
  fail "the daemon still holds $(sockets) sockets 30 s after its clients exited (idle: $idle_sockets)"
}}

# Seed: files and directories added by a real client.
for i in $(seq 1 40); do echo "seed file $i" > /nix/seed/file-$i.txt; done
for i in 1 2; do mkdir -p /nix/seed/dir-$i/sub; echo "dir $i" > /nix/seed/dir-$i/sub/a; ln -s a /nix/seed/dir-$i/sub/l; done
for p in /nix/seed/*; do NIX_REMOTE=daemon nix-store --add "$p"; done > /nix/paths.txt
echo "SEEDED=$(wc -l < /nix/paths.txt)"
idle_sockets=$(sockets)
echo "RSS_START=$(rss)"

# Warm-up round: the same clients and mix, 5 s.
timeout 300 '{loadgen}' mixed --clients 64 --seconds 5 --seed 1 --paths /nix/paths.txt \
  --added-out /nix/added-warm.txt > /nix/warm.json || fail "warm-up round: exit $? $(cat /nix/warm.json)"
echo "WARM_JSON=$(cat /nix/warm.json)"
settle
echo "RSS_WARM=$(rss)"

# The load: 64 clients for 60 s. A run that does not end within 10 minutes is a deadlock.
timeout 600 '{loadgen}' mixed --clients 64 --seconds 60 --seed 2 --paths /nix/paths.txt \
  --added-out /nix/added-main.txt > /nix/main.json || fail "60 s round: exit $? $(cat /nix/main.json)"
echo "MAIN_JSON=$(cat /nix/main.json)"
settle
echo "RSS_AFTER=$(rss)"
echo "RSS_PEAK=$(awk '/^VmHWM:/ {{ print $2 }}' /proc/$dpid/status)"
echo "MEMORY=$(grep -E '^(RssAnon|RssFile|RssShmem|Threads)' /proc/$dpid/status | tr -s '\t\n ' ' '), database $(du -sk /nix/var/nix/pkgchain | cut -f1) KiB"

# Every added path is valid (asked through the daemon) and in the view.
cat /nix/added-warm.txt /nix/added-main.txt | sort -u > /nix/added.txt
echo "ADDED=$(wc -l < /nix/added.txt)"
xargs -n 500 env NIX_REMOTE=daemon nix-store --check-validity < /nix/added.txt || fail "an added path is not valid"
missing=0
while read -r p; do [ -f "$p" ] || {{ echo "not in the view: $p"; missing=$((missing + 1)); }}; done < /nix/added.txt
echo "MISSING_IN_VIEW=$missing"
NIX_REMOTE=daemon nix-store --verify --check-contents > /nix/verify.log 2>&1 || fail "verify: $(cat /nix/verify.log)"
# Anything but the progress lines ("reading the Nix store...", "checking ...") is a complaint.
echo "VERIFY_OUTPUT=$(grep -v -E '^(reading the Nix store|checking [a-z ]+)\.\.\.$' /nix/verify.log | tr '\n' ' ')"
echo "HASH=$(NIX_REMOTE=daemon nix-store -q --hash "$(head -n1 /nix/paths.txt)")"
kill -0 $dpid && echo ALIVE=yes
"#,
        daemon = daemon_bin().display(),
    );
    let out = in_namespace_ok(&script, &[]);
    eprintln!(
        "{}",
        out.lines()
            .filter(|l| !l.starts_with("/nix/store/"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    assert_eq!(value(&out, "SEEDED"), "42", "{out}");
    let warm = json_of(&out, "WARM_JSON");
    let main = json_of(&out, "MAIN_JSON");
    check_round(&warm, "warm-up round");
    check_round(&main, "60 s round");
    assert_eq!(main["clients"].as_u64(), Some(64));

    let added: u64 = value(&out, "ADDED").parse().expect("a number");
    assert!(added > 0, "{out}");
    assert_eq!(value(&out, "MISSING_IN_VIEW"), "0", "{out}");
    assert_eq!(value(&out, "VERIFY_OUTPUT").trim(), "", "{out}");
    assert!(value(&out, "HASH").starts_with("sha256:"), "{out}");
    assert_eq!(value(&out, "ALIVE"), "yes", "{out}");

    let kib = |key: &str| -> u64 { value(&out, key).parse().expect("VmRSS in kB") };
    let (warm_rss, after_rss) = (kib("RSS_WARM"), kib("RSS_AFTER"));
    assert!(
        after_rss <= warm_rss + RSS_MARGIN_KIB,
        "the daemon's memory grew: VmRSS {after_rss} KiB after the 60 s round vs {warm_rss} KiB \
         after the warm-up (margin {RSS_MARGIN_KIB} KiB); {} after the round\n{out}",
        value(&out, "MEMORY")
    );
}
