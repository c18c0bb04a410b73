//! The sandbox under attack: each derivation of `nix/attacks.nix` tries one thing a build must
//! not be able to do (the 2024-2026 Nix CVEs are the checklist) and records, line by line,
//! whether it worked. Built by the real Nix 2.8 client through our daemon; every attempt must
//! be blocked, nothing outside may change, and the daemon must go on serving.
//!
//! What stops each one (also in README.md):
//! - network from a non-fixed-output build: its own network namespace, loopback only;
//! - reading `/root`, `/home`, `/etc/shadow`, the daemon socket, a store path outside the
//!   closure: the fresh root holds only the closure, the build directory and Nix's `/etc`;
//! - writing outside the outputs and build directory: host paths and inputs are read-only
//!   binds, the rest of the root belongs to root outside (unmapped), Landlock allows writes
//!   only beneath `/build`, the store directory and `/dev/shm`;
//! - setuid/setgid files and device nodes: the seccomp filter (EPERM), and nodev mounts;
//! - fd passing over an abstract unix socket (CVE-2024-27297): Landlock scopes abstract
//!   sockets to the build's own domain, so even a fixed-output build in the host's network
//!   namespace cannot connect out;
//! - a fixed-output output that is a symlink out of the store (CVE-2026-39860): outputs are
//!   ingested as they are (a symlink stays a symlink), nothing is followed;
//! - swapping the build directory after the build (CVE-2025-46415): the builder is its pid
//!   namespace's init, so every process it left dies with it before the daemon touches the
//!   directory, and the removal never follows symlinks;
//! - ptrace of another build: every build has its own pid namespace and uid;
//! - a fork bomb: `RLIMIT_NPROC` of the build's own uid;
//! - absurd nesting (CVE-2026-44028): ingest and NAR export are iterative and bounded.

use pkgchain_tests_nixpkgs::scenario::{Client, Daemon, Role, ScenarioRun, transcript};
use pkgchain_tests_nixpkgs::{prerequisites, readable_input_dir};

const SCENARIO: &str = r#"
I=/mnt/in
T=/nix/scenario-tmp
mkdir -p $T /nix/victim
echo precious > /nix/victim/file
HOST_IP=$(hostname -I 2>/dev/null | awk '{print $1}')
[ -n "$HOST_IP" ] || HOST_IP=127.0.0.1
python3 -m http.server 18765 --bind 0.0.0.0 > /dev/null 2>&1 &
web=$!
python3 - "$$" > $T/socket.log 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind("\0pkgchain-attack-" + sys.argv[1])
s.listen(8)
while True:
    c, _ = s.accept()
    print("accepted", flush=True)
    c.close()
PY
listener=$!
trap 'kill $web $listener 2>/dev/null || true' EXIT
sleep 0.5
# The listener works: a process outside any build can connect (the one accepted connection).
python3 -c "import socket, sys; socket.socket(socket.AF_UNIX).connect('\0pkgchain-attack-$$')" && echo "listener reachable from outside"
A="nix-build $I/attacks.nix --no-out-link --argstr hostIp $HOST_IP --argstr port 18765 --argstr socketName pkgchain-attack-$$"
S=$($A -A simple 2>$T/err) || cat $T/err
echo "== simple $S"
for a in network reading writing setuid devices abstractSocket symlinkOut swapBuildDir ptrace forkBomb deepNesting; do
  out=$($A --argstr outside "$S" -A $a 2>$T/err); s=$?
  echo "== $a exit $s"
  if [ $s != 0 ]; then tail -n 3 $T/err; continue; fi
  case $a in
    setuid) cat $out/result; find $out -perm /6000 | sed 's/^/ESCAPED: setuid or setgid file /' ;;
    symlinkOut) echo "link to: $(readlink $out)"; echo "shadow lines in its NAR: $(nix-store --dump $out | grep -ac 'root:' || true)" ;;
    deepNesting) echo "NAR bytes: $(nix-store --dump $out | wc -c)"; echo "levels: $(find $out -mindepth 1 -type d | wc -l)" ;;
    *) cat $out ;;
  esac
done
sleep 2
echo "victim: $(cat /nix/victim/file)"
echo "builder processes left: $(ps -eo uid=,args= | awk '$1 >= 872415232' | tee $T/left | wc -l)"
cat $T/left
echo "connections accepted by the abstract socket: $(grep -c accepted $T/socket.log)"
echo "still serving: $($A -A simple --check 2>&1 | tail -n 1) $(nix-store --verify 2>&1 | tail -n 1)"
"#;

#[test]
fn every_attack_is_blocked_and_the_daemon_keeps_serving() {
    if !prerequisites(&["unshare", "nix-build", "python3", "hostname", "ps"]) {
        return;
    }
    let input = readable_input_dir("pkgchain-attacks-e2e-");
    let nix_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nix");
    std::fs::copy(
        nix_dir.join("attacks.nix"),
        input.path().join("attacks.nix"),
    )
    .expect("copy");
    let out = transcript(&ScenarioRun {
        client: Client::Nix28,
        daemon: Daemon::Ours,
        role: Role::Root,
        input: input.path(),
        file: "attacks.sh",
        script: SCENARIO,
        config: r"sandbox = true\nbuild-users-group =\nextra-sandbox-paths = /usr /lib /lib64\nsubstituters =\nrequire-sigs = false",
    });
    eprintln!("{out}");
    assert!(!out.contains("ESCAPED"), "an attack worked:\n{out}");
    let blocked = out.lines().filter(|l| l.starts_with("blocked")).count();
    assert!(
        blocked >= 25,
        "only {blocked} attempts reported blocked:\n{out}"
    );
    for attack in [
        "network",
        "reading",
        "writing",
        "setuid",
        "devices",
        "abstractSocket",
        "symlinkOut",
        "swapBuildDir",
        "ptrace",
    ] {
        assert!(
            out.contains(&format!("== {attack} exit 0")),
            "{attack} did not build:\n{out}"
        );
    }
    // The fork bomb hits the build uid's process limit (the build may fail or not).
    assert!(
        out.contains("blocked: stopped at")
            || out.contains("fork: Resource temporarily unavailable"),
        "{out}"
    );
    // Nesting: either ingested whole (and exported again) or refused with a clear error.
    assert!(
        out.contains("levels: 10000") || out.contains("directories deep"),
        "{out}"
    );
    assert!(
        out.contains("link to: /etc/shadow\nshadow lines in its NAR: 0"),
        "{out}"
    );
    assert!(out.contains("victim: precious"), "{out}");
    assert!(
        out.contains("listener reachable from outside")
            && out.contains("connections accepted by the abstract socket: 1\n"),
        "{out}"
    );
    assert!(out.contains("builder processes left: 0"), "{out}");
    assert!(out.contains("still serving: /nix/store/"), "{out}");
}
