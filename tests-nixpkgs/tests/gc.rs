//! Garbage collection, end to end: `nix-store --gc --print-live` and `--print-dead` of the real
//! Nix 2.8 and 2.34 clients against our daemon and, as the control, the real `nix-daemon` of
//! the same version, on a store with rooted and unrooted builds, sources and derivations. The
//! sets of live and dead paths must be equal (Nix's rules: the closure of the roots, with the
//! derivations of live paths, `keep-derivations` being on by default; then with
//! `keep-outputs`, which keeps the outputs of live derivations, and without
//! `keep-derivations`).

use pkgchain_tests_nixpkgs::scenario::{Client, assert_same_transcripts, builds_against_both};
use pkgchain_tests_nixpkgs::{daemon_bin, in_namespace_ok, prerequisites, value};

const SCENARIO: &str = r#"
I=/mnt/in
T=/nix/scenario-tmp
mkdir -p $T
B="nix-build $I/builds.nix"
# Rooted: dependent (and so simple) through an indirect root, multi through a permanent one.
$B -A dependent -o $T/result > /dev/null 2>&1 || echo "dependent failed"
M=$($B -A multi --no-out-link 2>/dev/null | head -n 1)
nix-store -r $M --add-root $T/multi-root --indirect > /dev/null 2>&1 || echo "root failed"
# Unrooted: a build, a source, a derivation never built.
$B -A logged --no-out-link > /dev/null 2>&1 || echo "logged failed"
echo "a source" > $T/src.txt; nix-store --add $T/src.txt > /dev/null
nix-instantiate $I/builds.nix -A fixed > /dev/null 2>&1
sets() {
  nix-store --gc --print-live 2>/dev/null | grep '^/nix/store/' | LC_ALL=C sort > $T/live
  nix-store --gc --print-dead 2>/dev/null | grep '^/nix/store/' | LC_ALL=C sort > $T/dead
  echo "live $(wc -l < $T/live):"; sed 's/^/  /' $T/live
  echo "dead $(wc -l < $T/dead):"; sed 's/^/  /' $T/dead
  echo "both: $(LC_ALL=C comm -12 $T/live $T/dead | wc -l)"
}
echo "== defaults"
sets
echo "== a root removed"
rm $T/multi-root
sets
"#;

fn compare(client: Client, config_extra: &str) {
    let Some((ours, theirs)) = builds_against_both(client, "gc.sh", SCENARIO, config_extra) else {
        return;
    };
    assert!(ours.contains("-dependent\n"), "{ours}");
    assert!(ours.contains("both: 0\n"), "{ours}");
    assert!(!ours.contains("failed"), "{ours}");
    assert_same_transcripts(&ours, &theirs);
}

#[test]
fn nix_2_8_live_and_dead_match_nix_daemon() {
    compare(Client::Nix28, "");
}

#[test]
fn nix_2_34_live_and_dead_match_nix_daemon() {
    compare(Client::Nix234, "");
}

#[test]
fn nix_2_8_keep_outputs_without_keep_derivations_matches_nix_daemon() {
    compare(
        Client::Nix28,
        r"\nkeep-outputs = true\nkeep-derivations = false",
    );
}

/// Deleting: `nix-store --delete` of a live path (refused) and of a dead one, `nix-store
/// --gc`, `nix store gc --max`, generations (`nix-env --delete-generations old`, then
/// `nix-collect-garbage -d`), and `nix profile` (install twice, rollback, wipe-history). The deleted paths must be the ones nix-daemon deletes; after
/// each collection the store verifies, the rooted output is whole, and a rebuild works.
const DELETE_SCENARIO: &str = r#"
I=/mnt/in
T=/nix/scenario-tmp
mkdir -p $T
B="nix-build $I/builds.nix"
deleted() { grep -o "^deleting '/nix/store/[^']*'" | sed "s/^deleting '//; s/'\$//" | LC_ALL=C sort; }
ndead() { nix-store --gc --print-dead 2>/dev/null | grep -c '^/nix/store/'; }
checks() {
  nix-store --verify --check-contents > $T/verify 2>&1 && echo "verifies" || { echo "verify failed"; cat $T/verify; }
  cat $(readlink $T/result) > /dev/null && echo "rooted output readable"
}
$B -A dependent -o $T/result > /dev/null 2>&1 || echo "dependent failed"
$B -A logged --no-out-link > /dev/null 2>&1 || echo "logged failed"
echo "a source" > $T/src.txt; S=$(nix-store --add $T/src.txt)
nix-instantiate $I/builds.nix -A fixed > /dev/null 2>&1
echo "== delete a live path"
nix-store --delete $(readlink $T/result) > $T/out 2>&1 && echo "deleted a live path" || echo "refused"
grep -ci "since it is still alive" $T/out
nix-store --check-validity $(readlink $T/result) && echo "live path still valid"
echo "== delete a dead source"
nix-store --delete $S 2>&1 | deleted
nix-store --check-validity $S 2>/dev/null && echo "dead source still valid" || echo "gone"
echo "== gc"
nix-store --gc > $T/out 2>&1 && echo "gc ok" || { echo "gc failed"; cat $T/out; }
deleted < $T/out
grep -c "store paths deleted" $T/out
echo "dead after: $(ndead)"
checks
echo "== rebuild after gc"
$B -A logged --no-out-link > /dev/null 2>&1 && echo "rebuilt" || echo "rebuild failed"
echo "== max"
$B -A references --no-out-link > /dev/null 2>&1 || echo "references failed"
n=$(ndead)
nix --extra-experimental-features nix-command store gc --max 1 > $T/out 2>&1 || { echo "store gc failed"; cat $T/out; }
m=$(deleted < $T/out | wc -l)
[ "$m" -ge 1 ] && [ "$m" -lt "$n" ] && echo "max stopped early" || echo "max: deleted $m of $n"
nix-store --gc > /dev/null 2>&1
echo "== generations"
P=/nix/var/nix/profiles/gctest
nix-env -p $P -f $I/builds.nix -iA simple > /dev/null 2>&1 || echo "install 1 failed"
nix-env -p $P -f $I/builds.nix -iA logged > /dev/null 2>&1 || echo "install 2 failed"
nix-env -p $P -f $I/builds.nix -iA multi > /dev/null 2>&1 || echo "install 3 failed"
echo "generations: $(nix-env -p $P --list-generations | wc -l)"
nix-store --gc 2>&1 | deleted
nix-env -p $P --delete-generations old > /dev/null 2>&1 || echo "delete-generations failed"
echo "generations: $(nix-env -p $P --list-generations | wc -l)"
nix-store --gc 2>&1 | deleted | sed 's/^/  /'
nix-env -p $P -e multi > /dev/null 2>&1 || echo "uninstall failed"
echo "generations: $(nix-env -p $P --list-generations | wc -l)"
nix-collect-garbage -d > $T/out 2>&1 || { echo "collect-garbage failed"; cat $T/out; }
deleted < $T/out | sed 's/^/  /'
echo "generations: $(nix-env -p $P --list-generations | wc -l)"
nix-env -p $P -q
echo "dead after: $(ndead)"
checks
echo "== nix profile"
NP=/nix/var/nix/profiles/newstyle
# Nix 2.34's `nix profile` leaves empty directories in TMPDIR: kept out of the chroot's /tmp.
mkdir -p $T/tmp
NX="env TMPDIR=$T/tmp nix --extra-experimental-features nix-command"
S1=$($B -A simple --no-out-link 2>/dev/null)
S2=$($B -A references --no-out-link 2>/dev/null)
$NX profile install --profile $NP $S1 > /dev/null 2>&1 || echo "profile install 1 failed"
$NX profile install --profile $NP $S2 > /dev/null 2>&1 || echo "profile install 2 failed"
echo "profile links: $(ls /nix/var/nix/profiles | grep -c '^newstyle-')"
nix-store --gc 2>&1 | deleted | sed 's/^/  /'
nix-store --check-validity $S1 $S2 && echo "both installed still valid"
$NX profile rollback --profile $NP > /dev/null 2>&1 || echo "profile rollback failed"
$NX profile wipe-history --profile $NP > /dev/null 2>&1 || echo "profile wipe-history failed"
echo "profile links: $(ls /nix/var/nix/profiles | grep -c '^newstyle-')"
nix-store --gc 2>&1 | deleted | sed 's/^/  /'
nix-store --check-validity $S2 2>/dev/null && echo "second still valid" || echo "second collected"
nix-store --check-validity $S1 && echo "first still valid"
echo "dead at the end: $(ndead)"
checks
"#;

fn compare_deleting(client: Client) {
    let Some((ours, theirs)) = builds_against_both(client, "gc-delete.sh", DELETE_SCENARIO, "")
    else {
        return;
    };
    for expected in [
        "refused\n1\nlive path still valid\n",
        "gone\n",
        "gc ok\n",
        "dead after: 0\n",
        "verifies\n",
        "rooted output readable\n",
        "rebuilt\n",
        "max stopped early\n",
        "generations: 3\n",
        "generations: 1\n",
        "profile links: 2\n",
        "both installed still valid\n",
        "profile links: 1\n",
        "second collected\n",
        "first still valid\n",
        "dead at the end: 0\n",
    ] {
        assert!(ours.contains(expected), "{expected:?} missing:\n{ours}");
    }
    assert!(!ours.contains("failed"), "{ours}");
    assert!(!ours.contains("dead source still valid"), "{ours}");
    assert_same_transcripts(&ours, &theirs);
}

#[test]
fn nix_2_8_deletes_what_nix_daemon_deletes() {
    compare_deleting(Client::Nix28);
}

#[test]
fn nix_2_34_deletes_what_nix_daemon_deletes() {
    compare_deleting(Client::Nix234);
}

/// Our daemon in the test's namespace, with sandboxed builds from the host's shell.
fn our_daemon_script() -> String {
    format!(
        r#"mkdir -p /nix/ipfs /nix/etc/nix /nix/race
export NIX_CONF_DIR=/nix/etc/nix NIX_REMOTE=daemon
printf 'sandbox = true\nbuild-users-group =\nextra-sandbox-paths = /usr /lib /lib64\nsubstituters =\n' > /nix/etc/nix/nix.conf
start_daemon() {{
  RUST_LOG=info,pkgchain_daemon::server::gc=debug PKGCHAIN_IPFS_DIR=/nix/ipfs '{daemon}' --view fuse >> /nix/daemon.log 2>&1 &
  dpid=$!
  for i in $(seq 1 100); do [ -S /nix/var/nix/daemon-socket/socket ] && nix-store -q --hash /nix/store/x 2>&1 | grep -qv 'cannot connect' && break; sleep 0.1; done
  [ -S /nix/var/nix/daemon-socket/socket ] || {{ cat /nix/daemon.log; exit 1; }}
}}
start_daemon
# The daemon goes with the script, however the script ends.
trap 'kill -TERM $dpid 2>/dev/null || true' EXIT
"#,
        daemon = daemon_bin().display()
    )
}

/// The race: 8 clients add files (with a block they all share) and build rooted
/// derivations (whose inputs include one every build shares and nothing roots) for two
/// minutes (`PKGCHAIN_RACE_SECONDS`), while a ninth collects garbage in a loop and old roots
/// are dropped. No client may see an error, every rooted output must stay valid and whole,
/// and the whole store must verify afterwards.
#[test]
fn collections_racing_adds_and_builds_lose_nothing() {
    if !prerequisites(&["unshare", "nix-build", "fusermount3"]) {
        return;
    }
    let seconds: u64 = std::env::var("PKGCHAIN_RACE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let script = format!(
        r#"{start}
cat > /nix/race/race.nix <<'NIX'
{{ seed }}: let
  sh = name: script: derivation {{
    inherit name; system = builtins.currentSystem;
    builder = "/usr/bin/sh"; args = [ "-c" script ]; PATH = "/usr/bin";
  }};
  shared = sh "shared" "echo shared > $out";
  dep = sh "dep-${{seed}}" "echo ${{seed}} > $out; cat ${{shared}} >> $out";
in sh "top-${{seed}}" "cat ${{dep}} > $out; echo ${{dep}} >> $out"
NIX
end=$(( $(date +%s) + {seconds} ))
client() {{
  i=$1; n=0; errors=0
  run() {{ out=$("$@" 2>&1 > /dev/null) || {{ errors=$((errors+1)); printf 'ERROR client %s: %s\n%s\n' $i "$*" "$out" >> /nix/race/errors; }}; }}
  while [ $(date +%s) -lt $end ]; do
    n=$((n+1))
    f=/nix/race/f-$i-$n
    printf 'a block every client adds\n%s %s\n' $i $n > $f
    run nix-store --add $f
    if [ $((n % 2)) = 0 ]; then
      run nix-build /nix/race/race.nix --argstr seed "$i-$n" -o /nix/race/root-$i-$n
    fi
    if [ $((n % 6)) = 0 ]; then rm -f /nix/race/root-$i-$((n-4)); fi
  done
  echo "client $i: $n rounds, errors $errors"
}}
collector() {{
  k=0; failures=0
  while [ $(date +%s) -lt $end ]; do
    out=$(nix-store --gc 2>&1 > /dev/null) || {{ failures=$((failures+1)); printf 'ERROR collector:\n%s\n' "$out" >> /nix/race/errors; }}
    k=$((k+1))
  done
  echo "collections $k, failures $failures"
}}
pids=""
for i in 1 2 3 4 5 6 7 8; do client $i & pids="$pids $!"; done
collector & pids="$pids $!"
wait $pids
if [ -e /nix/race/errors ]; then head -n 60 /nix/race/errors; grep -a "block.*missing\|WARN\|ERROR" /nix/daemon.log | head -10; fi
roots=0
for r in /nix/race/root-*; do
  p=$(readlink $r); roots=$((roots+1))
  nix-store --check-validity $p 2>/dev/null || {{ echo "LOST $p"; grep -a "$(basename $p | cut -c1-32)\|$(basename $r | sed 's/^root-//').drv" /nix/daemon.log | head -8; ls -l --time-style=full-iso $r; for a in /nix/var/nix/gcroots/auto/*; do [ "$(readlink $a)" = "$r" ] && ls -l --time-style=full-iso $a; done; }}
  grep -q "^$(basename $r | sed 's/^root-//')$" $p || echo "WRONG $p"
  dep=$(tail -n 1 $p); [ "$(head -n 1 $dep)" = "$(basename $r | sed 's/^root-//')" ] || echo "LOST DEP $dep"
done
echo "roots_checked=$roots"
nix-store --verify --check-contents > /nix/verify.out 2>&1 && echo VERIFIED || cat /nix/verify.out
nix-store --gc > /dev/null 2>&1 && echo "final gc ok"
nix-store --verify --check-contents > /nix/verify.out 2>&1 && echo VERIFIED AGAIN || cat /nix/verify.out
kill -TERM $dpid; wait $dpid || true
grep -c "garbage collected" /nix/daemon.log || true
"#,
        start = our_daemon_script()
    );
    let out = in_namespace_ok(&script, &[]);
    eprintln!("{out}");
    for i in 1..=8 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("client {i}:")))
            .unwrap_or_else(|| panic!("client {i} did not report:\n{out}"));
        assert!(line.ends_with("errors 0"), "{line}\n{out}");
    }
    assert!(out.contains("failures 0"), "{out}");
    assert!(!out.contains("LOST") && !out.contains("WRONG"), "{out}");
    assert!(
        out.contains("VERIFIED\n") && out.contains("VERIFIED AGAIN\n"),
        "{out}"
    );
    let roots: u64 = value(&out, "roots_checked").trim().parse().expect("count");
    assert!(roots > 8, "too little work to mean anything:\n{out}");
    let collections: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("collections "))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("collections");
    assert!(collections >= 3, "{out}");
}

/// `kill -9` of the daemon in the middle of collecting 2,500 dead paths, while it moves
/// their blocks aside: after a restart the store verifies, the next collection finishes and
/// leaves nothing dead, and no block is left in the collector's trash.
#[test]
fn a_daemon_killed_while_collecting_recovers() {
    if !prerequisites(&["unshare", "nix-store", "fusermount3"]) {
        return;
    }
    let script = format!(
        r#"{start}
mkdir -p /nix/files
for i in $(seq 1 2500); do printf 'file %s\nshared line\n' $i > /nix/files/f$i; done
nix-store --add /nix/files/* > /dev/null
echo "dead_before=$(nix-store --gc --print-dead 2>/dev/null | grep -c '^/nix/store/')"
nix-store --gc > /dev/null 2>&1 &
gc=$!
# Killed while blocks are moved aside (the collector's list of them exists), the paths
# already gone from the database.
for i in $(seq 1 3000); do [ -e /nix/ipfs/pins/trashing ] && break; sleep 0.005; done
echo "journal_seen=$([ -e /nix/ipfs/pins/trashing ] && echo yes || echo no)"
echo "moved_aside=$(find /nix/ipfs/blocks -name '*.trash' | wc -l)"
kill -KILL $dpid
wait $gc || true
wait $dpid || true
for i in $(seq 1 100); do grep -q ' /nix/store fuse' /proc/mounts || break; sleep 0.1; done
rm -f /nix/var/nix/daemon-socket/socket
start_daemon
left=$(nix-store --gc --print-dead 2>/dev/null | grep -c '^/nix/store/' || true)
echo "dead after the kill: $left"
grep -c "blocks deleted" /nix/daemon.log || true
nix-store --verify --check-contents > /nix/verify.out 2>&1 && echo VERIFIED || cat /nix/verify.out
nix-store --gc > /dev/null 2>&1 && echo "next gc ok"
echo "dead_at_the_end=$(nix-store --gc --print-dead 2>/dev/null | grep -c '^/nix/store/' || true)"
echo "trash=$(find /nix/ipfs/blocks -name '*.trash' | wc -l) $(ls /nix/ipfs/pins/trashing 2>/dev/null)"
nix-store --verify --check-contents > /nix/verify.out 2>&1 && echo VERIFIED AGAIN || cat /nix/verify.out
kill -TERM $dpid; wait $dpid || true
"#,
        start = our_daemon_script()
    );
    let out = in_namespace_ok(&script, &[]);
    eprintln!("{out}");
    assert_eq!(value(&out, "dead_before").trim(), "2500", "{out}");
    assert_eq!(value(&out, "journal_seen").trim(), "yes", "{out}");
    assert!(
        out.contains("VERIFIED\n") && out.contains("VERIFIED AGAIN\n"),
        "{out}"
    );
    assert!(out.contains("next gc ok"), "{out}");
    assert_eq!(value(&out, "dead_at_the_end").trim(), "0", "{out}");
    assert_eq!(value(&out, "trash").trim(), "0", "{out}");
}

/// A client that goes away stops its collection at the next batch (Nix's daemon stops when
/// writing to the client fails, too): some of the 9,000 dead paths (three batches) are left, the deleted
/// batches' blocks are gone with them, and the next collection finishes with a store that
/// verifies and nothing left aside.
#[test]
fn a_collection_stops_when_its_client_goes_away() {
    if !prerequisites(&["unshare", "nix-store", "fusermount3"]) {
        return;
    }
    let script = format!(
        r#"{start}
mkdir -p /nix/files
for i in $(seq 1 9000); do printf 'file %s\n' $i > /nix/files/f$i; done
nix-store --add /nix/files/* > /dev/null
echo "dead_before=$(nix-store --gc --print-dead 2>/dev/null | grep -c '^/nix/store/')"
# Block files only: not the staging directory nor the `.unsynced` marker, which a deferred
# flush removes at any moment.
count_blocks() {{ find /nix/ipfs/blocks -mindepth 2 -maxdepth 2 -type f -not -path '*/.*' | wc -l; }}
blocks_before=$(count_blocks)
nix-store --gc > /nix/gc.out 2> /nix/gc.err &
gc=$!
# Gone as soon as the first batch is reported.
for i in $(seq 1 3000); do grep -q "^deleting '" /nix/gc.err && break; sleep 0.005; done
kill -KILL $gc
wait $gc || true
for i in $(seq 1 100); do grep -q "connection ended" /nix/daemon.log && break; sleep 0.1; done
grep -c "connection ended.*Broken pipe" /nix/daemon.log || true
left=$(nix-store --gc --print-dead 2>/dev/null | grep -c '^/nix/store/' || true)
echo "dead_after_stop=$left"
echo "blocks_gone=$(( blocks_before - $(count_blocks) ))"
nix-store --verify --check-contents > /nix/verify.out 2>&1 && echo VERIFIED || cat /nix/verify.out
nix-store --gc > /dev/null 2>&1 && echo "next gc ok"
echo "dead_at_the_end=$(nix-store --gc --print-dead 2>/dev/null | grep -c '^/nix/store/' || true)"
echo "trash=$(find /nix/ipfs/blocks -name '*.trash' | wc -l) $(ls /nix/ipfs/pins/trashing 2>/dev/null)"
"#,
        start = our_daemon_script()
    );
    let out = in_namespace_ok(&script, &[]);
    eprintln!("{out}");
    assert_eq!(value(&out, "dead_before").trim(), "9000", "{out}");
    let left: u64 = value(&out, "dead_after_stop")
        .trim()
        .parse()
        .expect("count");
    assert!(left > 0 && left < 9000, "{out}");
    // The deleted paths' blocks (one each) went with them, even those of the batch being
    // deleted when the client went.
    let gone: u64 = value(&out, "blocks_gone").trim().parse().expect("count");
    assert_eq!(gone, 9000 - left, "{out}");
    assert!(out.contains("VERIFIED\n"), "{out}");
    assert!(out.contains("next gc ok"), "{out}");
    assert_eq!(value(&out, "dead_at_the_end").trim(), "0", "{out}");
    assert_eq!(value(&out, "trash").trim(), "0", "{out}");
}

/// `pkgchain pin`: a pin keeps a DAG's blocks after the store path that used them is
/// collected (readable through the CID view), a pin through a user's link likewise; `pin
/// rm` and removing the link let the collector take the blocks.
#[test]
fn pins_made_with_the_command_keep_blocks_until_removed() {
    if !prerequisites(&["unshare", "nix-store", "fusermount3"]) {
        return;
    }
    let script = format!(
        r#"{start}
export PKGCHAIN_IPFS_DIR=/nix/ipfs
mkdir -p /nix/files /nix/home
echo "kept by a pin" > /nix/files/one
echo "kept through a link" > /nix/files/two
A=$(nix-store --add /nix/files/one)
B=$(nix-store --add /nix/files/two)
pin=$('{pkgchain}' pin add "$A")
a=$(basename "$pin")
auto=$('{pkgchain}' pin add --link /nix/home/keep "$B")
b=$(basename "$(readlink /nix/home/keep)")
'{pkgchain}' pin ls | grep -c " $a -> \| $b -> "
nix-store --gc > /dev/null 2>&1
nix-store --check-validity "$A" "$B" 2>/dev/null && echo "paths still valid" || echo "paths collected"
echo "a_after_gc=$(cat /nix/ipfs/store/$a 2>&1)"
echo "b_after_gc=$(cat /nix/home/keep 2>&1)"
'{pkgchain}' pin rm "$a" > /dev/null && echo "unpinned"
{{ '{pkgchain}' pin rm "$a" 2>&1 || true; }} | grep -c "no pin of"
rm /nix/home/keep
nix-store --gc > /nix/gc2.out 2>&1 || {{ echo "gc failed"; cat /nix/gc2.out; }}
echo "a_blocks=$(find /nix/ipfs/blocks -name "$a*" | wc -l)"
echo "b_blocks=$(find /nix/ipfs/blocks -name "$b*" | wc -l)"
echo "pins_left=$('{pkgchain}' pin ls | wc -l)"
echo "auto_left=$([ -e "$auto" ] || [ -L "$auto" ] && echo yes || echo no)"
"#,
        start = our_daemon_script(),
        pkgchain = daemon_bin().with_file_name("pkgchain").display(),
    );
    let out = in_namespace_ok(&script, &[]);
    eprintln!("{out}");
    assert!(out.starts_with("2\n"), "both pins listed: {out}");
    assert!(out.contains("paths collected"), "{out}");
    assert_eq!(value(&out, "a_after_gc"), "kept by a pin", "{out}");
    assert_eq!(value(&out, "b_after_gc"), "kept through a link", "{out}");
    assert!(out.contains("unpinned\n1\n"), "{out}");
    assert_eq!(value(&out, "a_blocks").trim(), "0", "{out}");
    assert_eq!(value(&out, "b_blocks").trim(), "0", "{out}");
    assert_eq!(value(&out, "pins_left").trim(), "0", "{out}");
    assert_eq!(value(&out, "auto_left").trim(), "no", "{out}");
}
