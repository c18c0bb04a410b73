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
