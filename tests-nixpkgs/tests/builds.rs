//! End-to-end builds: `nix-build`, `nix build`, `nix-store -l` and `nix log` of the real Nix
//! 2.8 and 2.34 clients against our daemon and, as the control, the real `nix-daemon` of the
//! same version, both with the sandbox on. The derivations are in `nix/builds.nix`; their
//! builders are the host's shells, made visible in the sandbox with `extra-sandbox-paths`.
//! The transcripts hold the facts that must agree (output paths, contents, references, exit
//! codes, the key words of each error, the stored logs) and must be equal.

use pkgchain_tests_nixpkgs::scenario::{
    CORRUPT_FN, Client, assert_same_transcripts, builds_against_both,
};

/// The build scenario. `show` prints a path's contents (file or tree) and references.
const SCENARIO: &str = r#"
nix() { command nix --extra-experimental-features nix-command "$@"; }
I=/mnt/in
T=/nix/scenario-tmp
mkdir -p $T
B="nix-build $I/builds.nix --no-out-link"
show() {
  if [ -d "$1" ]; then
    (cd "$1" && find . -type f | LC_ALL=C sort | while read f; do echo "$f: $(cat "$f")"; done)
  else
    echo "file: $(cat "$1")"
  fi
  nix-store -q --references "$1" | sed 's/^/  ref /'
}
# A build that fails: its exit status and which of the expected words its error has.
failure() {
  what=$1; shift
  "$@" > $T/out 2>&1; echo "$what exit $?"
  for w in "about to fail" "on stderr" "exit code 3" "exit code 4" "failed to produce output path for output 'out'" \
           "may not be deterministic" "dependenc" "timed out after 2 seconds" "is not allowed to refer" "too large" "hash mismatch in fixed-output derivation"; do
    grep -q -e "$w" $T/out && echo "  says: $w"
  done
  grep -o -e 'specified: *sha256-[A-Za-z0-9+/=]*' -e 'got: *sha256-[A-Za-z0-9+/=]*' $T/out | tr -s ' ' || true
}
for a in simple dependent multi fixed fixedRecursive structured passAsFile environment references logged; do
  P=$($B -A $a 2>$T/err); s=$?
  echo "== $a exit $s"
  [ $s = 0 ] || cat $T/err
  for p in $P; do echo "$p"; show "$p"; done
done
D=$(nix-instantiate $I/builds.nix -A logged 2>/dev/null)
echo "nix-store -l: $(nix-store -l $D | tr '\n' '|')"
echo "nix log: $(nix log $D | tr '\n' '|')"
echo "again: $($B -A logged 2>&1 | grep -c 'line 1')"
failure failing $B -A failing
F=$(nix-instantiate $I/builds.nix -A failing 2>/dev/null)
echo "failed log: $(nix-store -l $F 2>&1 | tr '\n' '|')"
for a in refsAllowed selfRefAllowed; do
  P=$($B -A $a 2>$T/err); s=$?
  echo "== $a exit $s"; [ $s = 0 ] || cat $T/err; [ -z "$P" ] || show "$P"
done
for a in refsRefused selfRefRefused requisitesRefused structuredChecks structuredTooLarge; do
  failure $a $B -A $a
done
failure no-output $B -A noOutput
failure depends-on-failing $B -A dependsOnFailing
failure wrong-hash $B -A wrongHash
failure check-simple $B -A simple --check
$B -A nondeterministic > /dev/null 2>&1
failure check-nondeterministic $B -A nondeterministic --check
failure keep-going nix-build $I/builds.nix --no-out-link --keep-going -A failing -A failing2 -A logged
failure timeout $B -A sleepy --timeout 2
failure silent $B -A sleepy --option max-silent-time 2
echo "print-out-paths: $(nix build --no-link --print-out-paths -f $I/builds.nix simple 2>&1)"
echo "sleepy valid: $(nix-store --check-validity $(nix eval --raw -f $I/builds.nix sleepy.outPath 2>/dev/null) 2>&1 | wc -l)"
"#;

/// `--repair`: a corrupt output is rebuilt; a corrupt path in the outputs' closure is rebuilt
/// from the derivation that makes it; a corrupt `builtins.toFile` source is added again by the
/// evaluation (which repairs with `--repair`); one nothing can make fails the repair. `corrupt`
/// is [`CORRUPT_FN`].
const REPAIR_SCENARIO: &str = r#"
I=/mnt/in
T=/nix/scenario-tmp
mkdir -p $T
B="nix-build $I/builds.nix --no-out-link"
verify() { nix-store --verify --check-contents > /dev/null 2>&1; echo "verify exit $?"; }
# What a repair run did: its exit status and every line it printed, in order.
repair() { "$@" > $T/out 2>&1; echo "repair exit $?"; sed "s/^/  said: /" $T/out; }
TOP=$($B -A repairTop 2>/dev/null); LEAF=$($B -A repairLeaf 2>/dev/null)
SRC=$(nix-instantiate --eval -A repairSource $I/builds.nix 2>/dev/null | tr -d '"')
USES=$($B -A repairUsesSource 2>/dev/null)
echo "built: $TOP $LEAF $USES $SRC"
echo "== sound outputs"
repair $B -A repairTop --repair
echo "== a corrupt output"
corrupt $TOP "top42 of $LEAF"
verify
repair $B -A repairTop --repair
echo "top: $(cat $TOP)"
verify
echo "== a corrupt path in the closure"
corrupt $LEAF repair42leaf
repair $B -A repairTop --repair
echo "leaf: $(cat $LEAF) top: $(cat $TOP)"
verify
echo "hashes: $(nix-store -q --hash $TOP $LEAF | tr '\n' ' ')"
echo "== a corrupt source the evaluation adds again"
corrupt $SRC repair43source
repair $B -A repairUsesSource --repair
echo "source: $(cat $SRC)"
verify
# nix-store --verify --repair: what it said that both daemons say the same way (ours names
# the damaged block where Nix names the changed hash).
verify_repair() {
  nix-store --verify --check-contents --repair > $T/out 2>&1; echo "verify --repair exit $?"
  for w in "repairing outputs of" "cannot repair path '[^']*'"; do grep -o -e "$w" $T/out | sed 's/^/  says: /'; done
}
echo "== verify --repair of a path with a deriver"
corrupt $LEAF repair42leaf
verify_repair
echo "leaf: $(cat $LEAF)"
verify
echo "== a corrupt path nothing can make again"
printf 'repair44added\n' > $T/added.txt
export REPAIR_ADDED=$(nix-store --add $T/added.txt)
$B -A repairUsesAdded > /dev/null 2>&1 || echo "repairUsesAdded failed"
corrupt $REPAIR_ADDED repair44added
repair $B -A repairUsesAdded --repair
verify
verify_repair
"#;

/// `BuildDerivation`, as Nix's remote builds send it: the client keeps its own store (a local
/// store under `$T/client`, building nothing itself: `-j0`) and hands every build to the
/// builder `ssh-ng://localhost`, which Nix runs without ssh as `nix-daemon --stdio --store
/// daemon`: a pipe to the daemon under test. The hook copies the inputs there, sends
/// `BuildDerivation`, and copies the outputs back.
const REMOTE_SCENARIO: &str = r#"
I=/mnt/in
T=/nix/scenario-tmp
mkdir -p $T
C=$T/client
R="ssh-ng://localhost?remote-store=daemon $(uname -m)-linux"
B() { nix-build $I/builds.nix --no-out-link --store "local?root=$C" -j0 --builders "$R" "$@"; }
for a in simple dependent multi fixed structured; do
  P=$(B -A $a 2>$T/err); s=$?
  echo "== $a exit $s"
  [ $s = 0 ] || cat $T/err
  for p in $P; do
    echo "$p: $(cat $C$p 2>/dev/null || ls $C$p)"
    echo "  on the builder: $(nix-store -q --references $p 2>&1 | tr '\n' ' ')"
  done
done
B -A failing > $T/out 2>&1; echo "failing exit $?"
for w in "about to fail" "exit code 3" "failed"; do grep -q -e "$w" $T/out && echo "  says: $w"; done
# Only our daemon's log can show which operation built them (taken out before comparing).
if [ -d /nix/ipfs/blocks ]; then
  echo "ours: BuildDerivation $(grep -c 'built a derivation the client sent' /nix/daemon.log)"
fi
"#;

fn compare_remote(client: Client) {
    let Some((ours, theirs)) = builds_against_both(client, "remote.sh", REMOTE_SCENARIO, "") else {
        return;
    };
    assert!(ours.contains("== simple exit 0\n/nix/store/"), "{ours}");
    // Six builds (simple, dependent, multi, fixed, structured, failing), each one
    // `BuildDerivation`.
    assert!(
        ours.contains("ours: BuildDerivation 6\n"),
        "every build must come as BuildDerivation:\n{ours}"
    );
    let compared: String = ours
        .lines()
        .filter(|l| !l.starts_with("ours: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_same_transcripts(&compared, &theirs);
}

#[test]
fn nix_2_8_remote_builds_match_nix_daemon() {
    compare_remote(Client::Nix28);
}

#[test]
fn nix_2_34_remote_builds_match_nix_daemon() {
    compare_remote(Client::Nix234);
}

fn compare(client: Client) {
    let Some((ours, theirs)) = builds_against_both(client, "builds.sh", SCENARIO, "") else {
        return;
    };
    assert!(ours.contains("== simple exit 0\n/nix/store/"), "{ours}");
    assert!(ours.contains("failing exit 1"), "{ours}");
    assert_same_transcripts(&ours, &theirs);
}

fn compare_repair(client: Client) {
    let script = format!("{CORRUPT_FN}{REPAIR_SCENARIO}");
    let Some((ours, theirs)) = builds_against_both(client, "repair.sh", &script, "") else {
        return;
    };
    assert!(ours.contains("top: top42 of /nix/store/"), "{ours}");
    assert!(ours.contains("leaf: repair42leaf"), "{ours}");
    assert!(!ours.contains("no block holds"), "{ours}");
    assert!(ours.contains("could not be repaired"), "{ours}");
    assert_same_transcripts(&ours, &theirs);
}

#[test]
fn nix_2_8_repair_matches_nix_daemon() {
    compare_repair(Client::Nix28);
}

#[test]
fn nix_2_34_repair_matches_nix_daemon() {
    compare_repair(Client::Nix234);
}

#[test]
fn nix_2_8_builds_match_nix_daemon() {
    compare(Client::Nix28);
}

#[test]
fn nix_2_34_builds_match_nix_daemon() {
    compare(Client::Nix234);
}
