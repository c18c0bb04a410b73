//! Garbage collection, end to end: `nix-store --gc --print-live` and `--print-dead` of the real
//! Nix 2.8 and 2.34 clients against our daemon and, as the control, the real `nix-daemon` of
//! the same version, on a store with rooted and unrooted builds, sources and derivations. The
//! sets of live and dead paths must be equal (Nix's rules: the closure of the roots, with the
//! derivations of live paths, `keep-derivations` being on by default; then with
//! `keep-outputs`, which keeps the outputs of live derivations, and without
//! `keep-derivations`).

use pkgchain_tests_nixpkgs::scenario::{Client, assert_same_transcripts, builds_against_both};

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
/// --gc`, `nix store gc --max`, and generations (`nix-env --delete-generations old`, then
/// `nix-collect-garbage -d`). The deleted paths must be the ones nix-daemon deletes; after
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
