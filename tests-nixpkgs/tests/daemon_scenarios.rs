//! End-to-end: the real Nix clients (Debian's Nix 2.8, and Nix 2.34 from the Debian sid chroot)
//! against our daemon and, as the control, against the real `nix-daemon` of the same version.
//! Each scenario runs once per daemon in its own private mount namespace with a tmpfs `/nix`;
//! the two transcripts must be equal after removing what legitimately differs (registration
//! times, the daemon's version line).

use std::path::Path;

use pkgchain_tests_nixpkgs::scenario::{
    Client, Daemon, Role, ScenarioRun, client_available, untrusted_user,
};
use pkgchain_tests_nixpkgs::{daemon_bin, in_namespace_ok, prerequisites, target_dir, value};

/// Shell lines that start our daemon (FUSE view, blocks under `/nix/ipfs`) as `$dpid` and
/// wait for its socket.
fn start_our_daemon() -> String {
    format!(
        r#"mkdir -p /nix/ipfs
PKGCHAIN_IPFS_DIR=/nix/ipfs '{daemon}' --view fuse > /nix/daemon.log 2>&1 &
dpid=$!
for i in $(seq 1 100); do [ -S /nix/var/nix/daemon-socket/socket ] && break; sleep 0.1; done
[ -S /nix/var/nix/daemon-socket/socket ] || {{ cat /nix/daemon.log; exit 1; }}
"#,
        daemon = daemon_bin().display()
    )
}

/// A fresh directory with the scenarios' input files.
fn input_dir() -> tempfile::TempDir {
    let input = pkgchain_tests_nixpkgs::readable_input_dir("pkgchain-daemon-e2e-");
    inputs(input.path());
    input
}

/// Input files for the scenarios (a file, a directory with a symlink and an executable).
fn inputs(dir: &Path) {
    std::fs::create_dir_all(dir.join("d/sub")).expect("mkdir");
    std::fs::write(dir.join("f.txt"), "hello\n").expect("write");
    std::fs::write(dir.join("d/sub/a"), "a\n").expect("write");
    std::fs::write(dir.join("d/run.sh"), "#!/bin/sh\necho run\n").expect("write");
    let mut perms = std::fs::metadata(dir.join("d/run.sh"))
        .expect("meta")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.join("d/run.sh"), perms).expect("chmod");
    let _ = std::fs::remove_file(dir.join("d/sub/l"));
    std::os::unix::fs::symlink("a", dir.join("d/sub/l")).expect("symlink");
    // Inputs that only a second store holds at first (imported, or copied from a cache).
    std::fs::create_dir_all(dir.join("imp")).expect("mkdir");
    std::fs::write(dir.join("imp/data"), "to be imported\n").expect("write");
    std::fs::create_dir_all(dir.join("cached")).expect("mkdir");
    std::fs::write(dir.join("cached/data"), "from a binary cache\n").expect("write");
    // An expression with many derivations depending on each other.
    std::fs::write(
        dir.join("many.nix"),
        r#"let
  mk = n: deps: derivation {
    name = "node-${toString n}";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo ${toString n} > $out" ];
    inherit deps;
  };
  chain = builtins.foldl' (acc: n: [ (mk n acc) ] ++ acc) [ ] (builtins.genList (x: x) 60);
in mk 1000 chain
"#,
    )
    .expect("write");
}

/// The scenario, as a shell script run with `nix` commands of `client` and `NIX_REMOTE=daemon`.
/// Every command's output and exit status go to stdout (the transcript).
const SCENARIO: &str = r#"
run() { echo "\$ $*"; "$@" 2>&1; echo "exit $?"; }
nix() { command nix --extra-experimental-features nix-command "$@"; }
I=/mnt/in
# Scratch space on the test's own /nix (the chroot's /tmp outlives the test).
T=/nix/scenario-tmp
mkdir -p $T
run nix store ping
run nix-store --add $I/f.txt
run nix-store --add-fixed sha256 $I/f.txt
run nix-store --add $I/d
run nix-store --add-fixed --recursive sha256 $I/d
P=$(nix-store --add $I/d)
run nix-store -q --hash $P
run nix-store -q --size $P
run nix-store -q --references $P
run nix-store -q --referrers $P
run nix-store -q --requisites $P
run nix-store -q --deriver $P
run bash -c "cd $P && find . -type d -printf '%y %m %P\\n' -o -printf '%y %m %s %l %P\\n' | LC_ALL=C sort"
run $P/run.sh
D=$(nix-instantiate $I/many.nix 2>/dev/null)
echo "drv $D"
run nix-store -q --references $D
run nix-store -q --requisites $D
run nix-store -q --tree $D
run nix-store -q --graph $D
run nix-store -q --referrers $(nix-store -q --references $D | head -n1)
run nix-store -q --valid-derivers $P
run nix path-info --json -r $P
run bash -c "nix-store --dump $P | sha256sum"
run nix-store --verify
run nix-store --verify --check-contents
run nix eval --raw --expr 'builtins.toFile "t" "text"'
run nix eval --impure --raw --expr 'builtins.path { path = /mnt/in/d; name = "dpath"; }'
run nix eval --impure --raw --expr 'builtins.filterSource (p: t: baseNameOf p != "run.sh") /mnt/in/d'
run nix-store -q --references $(nix eval --raw --expr 'builtins.toFile "r" "${builtins.toFile "t" "text"}"')
run nix-store --realise $P
# Roots: an indirect root, a profile generation, and what the collector would keep.
run nix-store -r $P --add-root $T/roots/r1 --indirect
run readlink $T/roots/r1
run bash -c "cd /nix/var/nix/gcroots/auto && for l in *; do echo \"\$l -> \$(readlink \$l)\"; done"
run nix-env -p /nix/var/nix/profiles/test --set $P
run readlink /nix/var/nix/profiles/test
run bash -c "readlink /nix/var/nix/profiles/test-1-link"
run bash -c "nix-store --gc --print-roots | grep -v -e '^/proc/' -e '{temp:' -e '{censored}' | LC_ALL=C sort"
# Export and import: out of this store, and into it from a second store.
run bash -c "nix-store --export \$(nix-store -qR $P) | sha256sum"
X=$(nix-store --store local?root=$T/other --add $I/imp)
run bash -c "nix-store --store local?root=$T/other --export $X > $T/exp && nix-store --import < $T/exp"
run nix-store -q --hash $X
run bash -c "nix-store --dump $X | sha256sum"
# Binary caches: copy to a file:// cache, and from one.
run nix copy --to file://$T/cache $P
run bash -c "cd $T/cache && find . -type f | LC_ALL=C sort && cat *.narinfo"
Y=$(nix-store --store local?root=$T/other --add $I/cached)
run nix copy --from local?root=$T/other --to file://$T/cache2 $Y
run nix copy --no-check-sigs --from file://$T/cache2 $Y
run nix-store -q --hash $Y
run nix path-info --json $Y
# A build log copied into the store's log directory.
mkdir -p $T/logcache/log
printf 'StoreDir: /nix/store\n' > $T/logcache/nix-cache-info
echo "a build log line" > $T/logcache/log/$(basename $D)
run nix store copy-log --from file://$T/logcache $D
run nix-store -l $D
# Both succeed; the messages differ by design (Nix hard-links, our store is deduplicated).
nix-store --optimise > /dev/null 2>&1; echo "optimise exit $?"
run nix-store -q --hash /nix/store/00000000000000000000000000000000-missing
"#;

/// What a user who is not in `trusted-users` may and may not do (run as `USER_NAME`).
const USER_SCENARIO: &str = r#"
run() { echo "\$ $*"; "$@" 2>&1; echo "exit $?"; }
nix() { command nix --extra-experimental-features nix-command "$@"; }
I=/mnt/in
T=$HOME
run nix store ping
P=$(nix-store --add $I/d)
echo "added $P"
run nix-store --add-fixed sha256 $I/f.txt
run nix-store -q --requisites $P
run nix-store --verify --check-contents
# Refused: repairing, importing unsigned paths, adding build logs.
run nix-store --verify --check-contents --repair
X=$(nix-store --store local?root=$T/other --add $I/imp)
run bash -c "nix-store --store local?root=$T/other --export $X | nix-store --import"
run nix-store --check-validity $X
Y=$(nix-store --store local?root=$T/other --add $I/cached)
run nix copy --from local?root=$T/other $Y
run nix copy --no-check-sigs --from local?root=$T/other $Y
D=$(nix-instantiate $I/many.nix 2>/dev/null)
echo "drv $D"
mkdir -p $T/logcache/log
printf 'StoreDir: /nix/store\n' > $T/logcache/nix-cache-info
echo "a build log line" > $T/logcache/log/$(basename $D)
run nix store copy-log --from file://$T/logcache $D
# Allowed: roots of one's own, and reading which roots exist (runtime roots censored).
run nix-store -r $P --add-root $T/r --indirect
run bash -c "nix-store --gc --print-roots | grep -v -e '^/proc/' -e '{temp:' -e '{censored}' | LC_ALL=C sort"
echo "uncensored runtime roots: $(nix-store --gc --print-roots | grep -c -e '^/proc/' -e '{temp:')"
# A restricted setting from an untrusted client is ignored with a warning.
run nix-store --option build-users-group nixbld --add $I/f.txt
"#;

/// Runs a scenario for one client against one daemon; returns the normalised transcript.
fn transcript(client: Client, daemon: Daemon, input: &Path, role: Role) -> String {
    let (script, file, config) = match role {
        Role::Root => (
            SCENARIO,
            "scenario.sh",
            r"sandbox = false\nbuild-users-group =\nrequire-sigs = false\nsubstituters =",
        ),
        // Nix's defaults for what untrusted users may import: signatures required.
        Role::Untrusted => (
            USER_SCENARIO,
            "user-scenario.sh",
            r"sandbox = false\nbuild-users-group =\nsubstituters =",
        ),
    };
    let run = ScenarioRun {
        client,
        daemon,
        role,
        input,
        file,
        script,
        config,
    };
    normalise(&pkgchain_tests_nixpkgs::scenario::transcript(&run), client)
}

/// Removes what differs between daemons by design: registration times (in `path-info --json`).
fn normalise(text: &str, client: Client) -> String {
    let mut out = String::with_capacity(text.len());
    const KEY: &str = "\"registrationTime\":";
    for line in text.lines() {
        let mut l = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(i) = rest.find(KEY) {
            l.push_str(&rest[..i + KEY.len()]);
            l.push('T');
            rest = &rest[i + KEY.len()..];
            rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        }
        l.push_str(rest);
        // Nix's check of its hard-link pool (`.links`), which this store does not have.
        if l == "checking link hashes..." {
            continue;
        }
        // Nix 2.34's daemon leaves the temp-roots files of finished connections for the next
        // root search to remove (and say so); ours removes them when the connection ends.
        if l.starts_with("removing stale temporary roots file") {
            continue;
        }
        // Our daemon speaks as Nix 2.35's does, to every client. Nix 2.8's daemon only logged
        // ignored restricted settings for itself, and worded an unsigned import differently.
        if client == Client::Nix28 {
            if l.starts_with("warning: ignoring the client-specified setting") {
                continue;
            }
            l = l.replace(
                "because it lacks a signature by a trusted key",
                "because it lacks a valid signature",
            );
        }
        // `nix store ping`: the daemon's version differs by design (ours names itself).
        if l.starts_with("Version: ") {
            l = "Version: (the daemon's)".to_owned();
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn compare(client: Client, role: Role) {
    let mut tools = vec!["unshare", "nix-store", "nix-daemon"];
    if client == Client::Nix234 {
        tools.push("chroot");
        if !client_available(client) {
            return;
        }
    }
    if role == Role::Untrusted {
        tools.push("setpriv");
        if untrusted_user().is_none() {
            return;
        }
    }
    if !prerequisites(&tools) {
        return;
    }
    let input = input_dir();
    let ours = transcript(client, Daemon::Ours, input.path(), role);
    let theirs = transcript(client, Daemon::RealNix, input.path(), role);
    if ours.is_empty() {
        return; // skipped (said why)
    }
    // The scenario must really have exercised the daemon: it answered, and most commands
    // succeeded (the refusals are a few lines of the untrusted scenario).
    assert!(ours.starts_with("$ nix store ping\n"), "{ours}");
    let succeeded = ours.lines().filter(|l| *l == "exit 0").count();
    let least = match role {
        Role::Root => 40,
        Role::Untrusted => 8,
    };
    assert!(
        succeeded >= least,
        "only {succeeded} commands succeeded:\n{ours}"
    );
    if role == Role::Untrusted {
        assert!(ours.contains("uncensored runtime roots: 0\n"), "{ours}");
    }
    assert!(
        ours.contains("drv /nix/store/"),
        "nix-instantiate gave no derivation:\n{ours}"
    );
    if ours != theirs {
        let diff: Vec<String> = ours
            .lines()
            .zip(theirs.lines())
            .filter(|(a, b)| a != b)
            .take(20)
            .map(|(a, b)| format!("ours:    {a}\nnix:     {b}"))
            .collect();
        panic!(
            "{client:?}: our daemon and nix-daemon differ:\n{}\n--- ours ---\n{ours}\n--- nix-daemon ---\n{theirs}",
            diff.join("\n")
        );
    }
    eprintln!(
        "{client:?}: {} transcript lines equal",
        ours.lines().count()
    );
}

#[test]
fn nix_2_8_client_sees_the_same_as_with_nix_daemon() {
    compare(Client::Nix28, Role::Root);
}

#[test]
fn nix_2_34_client_sees_the_same_as_with_nix_daemon() {
    compare(Client::Nix234, Role::Root);
}

#[test]
fn nix_2_8_untrusted_user_is_refused_where_nix_daemon_refuses() {
    compare(Client::Nix28, Role::Untrusted);
}

#[test]
fn nix_2_34_untrusted_user_is_refused_where_nix_daemon_refuses() {
    compare(Client::Nix234, Role::Untrusted);
}

/// Nix 2.8 through our daemon gives the store paths, derivations and NARs that Nix 2.8 itself
/// computes with a local store of its own (`--store local?root=...`, no daemon).
#[test]
fn nix_2_8_client_through_our_daemon_matches_nix_local_store() {
    if !prerequisites(&["unshare", "nix-store", "nix-instantiate", "sha256sum"]) {
        return;
    }
    let input = input_dir();
    let script = format!(
        r#"
export NIX_CONFIG=$'sandbox = false\nbuild-users-group ='
mkdir -p /mnt/in /nix/ipfs
mount --bind '{input}' /mnt/in
{start}trap 'kill -TERM $dpid 2>/dev/null; wait $dpid 2>/dev/null || true' EXIT
export NIX_REMOTE=daemon
echo "DIR=$(nix-store --add /mnt/in/d)"
echo "FLAT=$(nix-store --add-fixed sha256 /mnt/in/f.txt)"
echo "DRV=$(nix-instantiate /mnt/in/many.nix 2>/dev/null)"
echo "REQS=$(nix-store -q --requisites "$(nix-instantiate /mnt/in/many.nix 2>/dev/null)" | wc -l)"
echo "DUMP=$(nix-store --dump "$(nix-store --add /mnt/in/d)" | sha256sum | cut -d' ' -f1)"
echo "RUN=$("$(nix-store --add /mnt/in/d)/run.sh")"
nix-store --verify --check-contents && echo VERIFY=ok
"#,
        input = input.path().display(),
        start = start_our_daemon(),
    );
    let ours = in_namespace_ok(&script, &[]);
    // The same with Nix alone, in a store of its own.
    let root = tempfile::Builder::new()
        .prefix("nix-local-")
        .tempdir_in(target_dir())
        .expect("tempdir");
    let local = format!("local?root={}", root.path().display());
    let nix = |args: &[&str]| -> String {
        let o = std::process::Command::new(args[0])
            .args(["--store", &local])
            .args(&args[1..])
            .env("NIX_CONFIG", "sandbox = false\nbuild-users-group =")
            .env_remove("NIX_REMOTE")
            .output()
            .expect("run nix");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let d = input.path().join("d");
    let f = input.path().join("f.txt");
    let many = input.path().join("many.nix");
    assert_eq!(
        value(&ours, "DIR"),
        nix(&["nix-store", "--add", d.to_str().expect("utf8")])
    );
    assert_eq!(
        value(&ours, "FLAT"),
        nix(&[
            "nix-store",
            "--add-fixed",
            "sha256",
            f.to_str().expect("utf8")
        ])
    );
    let drv = nix(&["nix-instantiate", many.to_str().expect("utf8")]);
    assert_eq!(value(&ours, "DRV"), drv);
    let reqs = nix(&["nix-store", "-q", "--requisites", &drv])
        .lines()
        .count();
    assert_eq!(value(&ours, "REQS"), reqs.to_string());
    let dump = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "nix-store --dump '{}' | sha256sum | cut -d' ' -f1",
            d.display()
        ))
        .output()
        .expect("dump");
    assert_eq!(
        value(&ours, "DUMP"),
        String::from_utf8_lossy(&dump.stdout).trim()
    );
    assert_eq!(value(&ours, "RUN"), "run");
    assert_eq!(value(&ours, "VERIFY"), "ok");
    eprintln!("through our daemon: {}", ours.trim());
}

/// SIGTERM stops the daemon and its view even when the view is bind-mounted elsewhere (which
/// keeps a FUSE session alive): the daemon waits a bounded time, then exits, and the leftover
/// mount fails instead of hanging.
#[test]
fn daemon_stops_on_sigterm_with_its_view_bound_elsewhere() {
    if !prerequisites(&["unshare", "fusermount3"]) {
        return;
    }
    let script = format!(
        r#"
mkdir -p /nix/ipfs /nix/elsewhere
{start}mount --bind /nix/store /nix/elsewhere
kill -TERM $dpid
# Liveness, not speed: a daemon that never stops would hang the suite.
for i in $(seq 1 600); do kill -0 $dpid 2>/dev/null || break; sleep 0.1; done
if kill -0 $dpid 2>/dev/null; then echo "STOPPED=no"; kill -KILL $dpid; else echo "STOPPED=yes"; fi
wait $dpid && echo "STATUS=0" || echo "STATUS=$?"
grep -q ' /nix/store fuse' /proc/mounts && echo MOUNTED=yes || echo MOUNTED=no
"#,
        start = start_our_daemon()
    );
    let stdout = in_namespace_ok(&script, &[]);
    assert_eq!(value(&stdout, "STOPPED"), "yes", "{stdout}");
    assert_eq!(value(&stdout, "STATUS"), "0", "{stdout}");
    assert_eq!(value(&stdout, "MOUNTED"), "no", "{stdout}");
}

/// Raw clients sending an unknown operation, a string longer than any limit, a truncated
/// request and random bytes each get an error naming the problem (or are dropped before the
/// handshake ends); meanwhile and afterwards a real Nix client is served normally.
#[test]
fn bad_clients_get_errors_and_others_are_still_served() {
    if !prerequisites(&["unshare", "nix-store", "python3"]) {
        return;
    }
    let input = input_dir();
    let script = format!(
        r#"
mkdir -p /mnt/in
mount --bind '{input}' /mnt/in
{start}trap 'kill -TERM $dpid 2>/dev/null; wait $dpid 2>/dev/null || true' EXIT
python3 - <<'PY'
import socket, struct
def u64(n): return struct.pack('<Q', n)
def hello(s):
    s.sendall(u64(0x6e697863))
    s.recv(16)                                 # magic 2 + daemon version
    s.sendall(u64(0x122) + u64(0) + u64(0))    # client 1.34, no CPU affinity, reserve space 0
def answer(s):
    data = b''
    s.settimeout(10)
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect('/nix/var/nix/daemon-socket/socket')
    return s
cases = {{
    'UNKNOWN_OP': u64(9999),
    'HUGE_STRING': u64(1) + u64(1 << 60),                  # IsValidPath with a 2^60-byte path
    'TRUNCATED': u64(1) + u64(40) + b'/nix/store/abc',    # then hang up
    'BAD_PATH': u64(1) + u64(8) + b'/etc/pwd',
}}
for name, request in cases.items():
    s = connect(); hello(s)
    s.sendall(request)
    if name == 'TRUNCATED':
        s.shutdown(socket.SHUT_WR)
    reply = answer(s)
    print(name + '=' + reply.decode('latin-1').replace('\n', ' ').replace('\0', ''))
    s.close()
s = connect(); s.sendall(bytes(range(256)) * 4); print('GARBAGE_BYTES_REPLY=%d' % len(answer(s))); s.close()
# A 1.38 client announcing a 512 KiB feature name: the handshake's byte budget stops it
# before the daemon waits for (or allocates) the name.
s = connect()
s.sendall(u64(0x6e697863)); s.recv(16)
s.sendall(u64(0x126) + u64(1) + u64(1 << 19))
s.settimeout(10)
try:
    closed = s.recv(1) == b''
except socket.timeout:
    closed = False
print('HUGE_FEATURE_CLOSED=%s' % closed); s.close()
# AddToStoreNar (39) at 1.34: path info, then the NAR in frames.
import hashlib
def s8(b): return u64(len(b)) + b + b'\0' * ((8 - len(b) % 8) % 8)
nar = b''.join(s8(t) for t in [b'nix-archive-1', b'(', b'type', b'regular', b'contents', b'lie', b')'])
def add_nar(path, nar_size, frames):
    return (u64(39) + s8(path) + s8(b'') + s8(hashlib.sha256(nar).hexdigest().encode()) + u64(0)
            + u64(0) + u64(nar_size) + u64(0) + u64(0) + s8(b'') + u64(0) + u64(1) + frames)
LIAR = b'/nix/store/' + b'0' * 31 + b'1-lying-nar'
CUT = b'/nix/store/' + b'0' * 31 + b'2-cut-frames'
for name, path, size, frames in [
    ('LYING_NAR', LIAR, len(nar) + 64, u64(len(nar)) + nar + u64(0)),
    ('CUT_FRAMES', CUT, len(nar), u64(len(nar)) + nar[:20]),
]:
    s = connect(); hello(s)
    s.sendall(add_nar(path, size, frames))
    if name == 'CUT_FRAMES':
        s.shutdown(socket.SHUT_WR)
    print(name + '=' + answer(s).decode('latin-1').replace('\n', ' ').replace('\0', ''))
    s.close()
PY
# A client stalled in the middle of a request stays connected while others are served.
python3 - <<'PY' &
import socket, struct, time
def u64(n): return struct.pack('<Q', n)
s = socket.socket(socket.AF_UNIX)
s.connect('/nix/var/nix/daemon-socket/socket')
s.sendall(u64(0x6e697863)); s.recv(16); s.sendall(u64(0x122) + u64(0) + u64(0))
s.sendall(u64(1) + u64(40) + b'/nix/store/')
open('/nix/stalled', 'w').write('1')
time.sleep(60)
PY
spid=$!
for i in $(seq 1 100); do [ -e /nix/stalled ] && break; sleep 0.1; done
[ -e /nix/stalled ] && echo STALLED=yes || echo STALLED=no
echo "BUDGET_LOGGED=$(grep -c 'read budget of 65536 bytes exhausted' /nix/daemon.log || true)"
export NIX_REMOTE=daemon
echo "SERVED_BESIDE_STALLED=$(nix-store --add /mnt/in/d)"
kill $spid
for p in /nix/store/00000000000000000000000000000001-lying-nar /nix/store/00000000000000000000000000000002-cut-frames; do
  nix-store --check-validity $p 2>/dev/null && echo "PARTIAL_VALID=$p" || true
done
echo "PARTIAL_VALID=none"
echo "STILL_SERVED=$(nix-store --add /mnt/in/f.txt)"
"#,
        input = input.path().display(),
        start = start_our_daemon(),
    );
    let out = in_namespace_ok(&script, &[]);
    assert!(
        value(&out, "UNKNOWN_OP").contains("invalid operation 9999"),
        "{out}"
    );
    assert!(
        value(&out, "HUGE_STRING").contains("exceeds limit"),
        "{out}"
    );
    assert!(
        value(&out, "BAD_PATH").contains("path '/etc/pwd' is not in the Nix store"),
        "{out}"
    );
    // A request cut short by a hang-up: the daemon says where the input ended.
    assert!(value(&out, "TRUNCATED").contains("end of input"), "{out}");
    // Random bytes fail the magic check: nothing but, at most, the error.
    assert!(
        value(&out, "GARBAGE_BYTES_REPLY")
            .parse::<usize>()
            .expect("number")
            < 4096,
        "{out}"
    );
    assert!(
        value(&out, "STILL_SERVED").starts_with("/nix/store/"),
        "{out}"
    );
    // A NAR shorter than its stated size, and a framed stream cut off: errors, nothing valid.
    assert!(
        value(&out, "LYING_NAR").contains(
            "size mismatch importing path '/nix/store/00000000000000000000000000000001-lying-nar'"
        ),
        "{out}"
    );
    assert_eq!(value(&out, "STALLED"), "yes", "{out}");
    assert_eq!(value(&out, "HUGE_FEATURE_CLOSED"), "True", "{out}");
    assert_eq!(value(&out, "BUDGET_LOGGED"), "1", "{out}");
    assert!(
        value(&out, "CUT_FRAMES").contains("input ended before the terminating empty frame"),
        "{out}"
    );
    assert_eq!(value(&out, "PARTIAL_VALID"), "none", "{out}");
    assert!(
        value(&out, "SERVED_BESIDE_STALLED").starts_with("/nix/store/"),
        "{out}"
    );
}

/// `--stdio` (what an `ssh-ng://` store starts on the remote machine) with Nix 2.8 as the
/// client, through a stand-in `ssh` that runs the remote command here: with no daemon running
/// it serves the store itself; with one running it relays to it.
#[test]
fn stdio_mode_serves_ssh_ng_clients() {
    if !prerequisites(&["unshare", "nix-store", "nix", "sha256sum"]) {
        return;
    }
    let input = input_dir();
    let fake_ssh = input.path().join("bin/ssh");
    std::fs::create_dir_all(fake_ssh.parent().expect("parent")).expect("mkdir");
    // The remote command is ssh's last argument; it runs through a shell, as sshd would.
    std::fs::write(
        &fake_ssh,
        "#!/bin/sh\nfor last; do :; done\nexec sh -c \"$last\"\n",
    )
    .expect("write");
    let mut perms = std::fs::metadata(&fake_ssh).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake_ssh, perms).expect("chmod");
    let common = format!(
        r#"export NIX_CONFIG=$'sandbox = false\nbuild-users-group =\nrequire-sigs = false\nsubstituters ='
export PATH='{bin}':$PATH PKGCHAIN_IPFS_DIR=/nix/ipfs
mkdir -p /mnt/in /nix/ipfs
mount --bind '{input}' /mnt/in
STORE="ssh-ng://localhost?remote-program={daemon}"
nixc() {{ nix --extra-experimental-features nix-command "$@"; }}
"#,
        bin = fake_ssh.parent().expect("parent").display(),
        input = input.path().display(),
        daemon = daemon_bin().display(),
    );
    // No daemon: Nix's own local store holds the path; it is copied over ssh-ng into ours.
    let direct = in_namespace_ok(
        &format!(
            r#"{common}
P=$(nix-store --add /mnt/in/d)
echo "LOCAL_HASH=$(nix-store -q --hash $P)"
echo "LOCAL_DUMP=$(nix-store --dump $P | sha256sum | cut -d' ' -f1)"
nixc store ping --store "$STORE" 2>&1 | sed 's/^/PING /'
nixc copy --to "$STORE" $P
echo "REMOTE_HASH=$(nix-store --store "$STORE" -q --hash $P)"
echo "REMOTE_DUMP=$(nix-store --store "$STORE" --dump $P | sha256sum | cut -d' ' -f1)"
echo "IN_OUR_DB=$(ls /nix/var/nix/pkgchain/)"
"#
        ),
        &[],
    );
    assert_eq!(
        value(&direct, "LOCAL_HASH"),
        value(&direct, "REMOTE_HASH"),
        "{direct}"
    );
    assert_eq!(
        value(&direct, "LOCAL_DUMP"),
        value(&direct, "REMOTE_DUMP"),
        "{direct}"
    );
    assert!(
        direct.contains("PING Store URL: ssh-ng://localhost"),
        "{direct}"
    );
    assert!(
        value(&direct, "IN_OUR_DB").contains("store.sqlite"),
        "{direct}"
    );
    // A daemon running: --stdio relays to it, so both routes see the same store.
    let relayed = in_namespace_ok(
        &format!(
            r#"{common}{start}trap 'kill -TERM $dpid 2>/dev/null; wait $dpid 2>/dev/null || true' EXIT
P=$(NIX_REMOTE=daemon nix-store --add /mnt/in/d)
echo "DAEMON_HASH=$(NIX_REMOTE=daemon nix-store -q --hash $P)"
before=$(grep -c 'accepted connection' /nix/daemon.log)
echo "REMOTE_HASH=$(nix-store --store "$STORE" -q --hash $P)"
echo "REMOTE_TEXT=$(nix-store --store "$STORE" --add /mnt/in/f.txt)"
echo "DAEMON_SEES=$(NIX_REMOTE=daemon nix-store --check-validity $(nix-store --store "$STORE" --add /mnt/in/f.txt) && echo yes)"
echo "RELAYED=$(( $(grep -c 'accepted connection' /nix/daemon.log) - before - 1 ))"
"#,
            start = start_our_daemon()
        ),
        &[],
    );
    assert_eq!(
        value(&relayed, "DAEMON_HASH"),
        value(&relayed, "REMOTE_HASH"),
        "{relayed}"
    );
    assert!(
        value(&relayed, "REMOTE_TEXT").starts_with("/nix/store/"),
        "{relayed}"
    );
    assert_eq!(value(&relayed, "DAEMON_SEES"), "yes", "{relayed}");
    // Each of the three ssh-ng sessions reached the daemon as a connection of its own (the
    // one plain check-validity connection in between is subtracted).
    assert_eq!(value(&relayed, "RELAYED"), "3", "{relayed}");
    eprintln!("{direct}{relayed}");
}

/// Operations no stock command line sends to a local daemon, spoken over the socket by a small
/// client: `RegisterDrvOutput` then `QueryRealisation` (the 1.31+ JSON form), `AddPermRoot`
/// (1.37), and `FindRoots` seeing the new root.
#[test]
fn realisations_and_perm_roots_over_the_wire() {
    if !prerequisites(&["unshare", "nix-store", "python3"]) {
        return;
    }
    let input = input_dir();
    let script = format!(
        r#"
mkdir -p /mnt/in
mount --bind '{input}' /mnt/in
export NIX_CONFIG=$'experimental-features = nix-command ca-derivations'
{start}trap 'kill -TERM $dpid 2>/dev/null; wait $dpid 2>/dev/null || true' EXIT
export P=$(NIX_REMOTE=daemon nix-store --add /mnt/in/d)
python3 - <<'PY'
import os, socket, struct
P = os.environ['P']
def u64(n): return struct.pack('<Q', n)
def s8(b): return u64(len(b)) + b + b'\0' * ((8 - len(b) % 8) % 8)
class Conn:
    def __init__(self, minor):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect('/nix/var/nix/daemon-socket/socket')
        self.s.sendall(u64(0x6e697863))
        assert self.u64() == 0x6478696f
        self.u64()
        self.s.sendall(u64(0x100 | minor) + u64(0) + u64(0))
        self.str()                        # the daemon's Nix version (1.33+)
        if minor >= 35: self.u64()        # trusted flag
        assert self.stderr() is None
    def read(self, n):
        data = b''
        while len(data) < n:
            chunk = self.s.recv(n - len(data))
            assert chunk, 'connection closed'
            data += chunk
        return data
    def u64(self): return struct.unpack('<Q', self.read(8))[0]
    def str(self):
        n = self.u64(); data = self.read(n); self.read((8 - n % 8) % 8); return data.decode()
    def stderr(self):
        while True:
            kind = self.u64()
            if kind == 0x616c7473: return None                       # STDERR_LAST
            if kind == 0x6f6c6d67: self.str(); continue              # STDERR_NEXT
            if kind == 0x63787470:                                   # STDERR_ERROR
                self.str(); self.u64(); self.str(); msg = self.str(); self.u64()
                for _ in range(self.u64()): self.u64(); self.str()
                return msg
            raise Exception('unexpected stderr message %x' % kind)
    def op(self, number, *args):
        self.s.sendall(u64(number) + b''.join(args))
        return self.stderr()
c = Conn(34)
key = 'sha256:' + 'ab' * 32 + '!out'
realisation = '{{"id":"%s","outPath":"%s","signatures":[],"dependentRealisations":{{}}}}' % (key, os.path.basename(P))
print('REGISTER_ERROR=%s' % c.op(42, s8(realisation.encode())))
print('QUERY_ERROR=%s' % c.op(43, s8(key.encode())))
print('QUERY_ANSWER=%s' % ' '.join(c.str() for _ in range(c.u64())))
print('QUERY_UNKNOWN_ERROR=%s' % c.op(43, s8(('sha256:' + 'cd' * 32 + '!out').encode())))
print('QUERY_UNKNOWN_COUNT=%d' % c.u64())
c = Conn(37)
print('PERM_ROOT_ERROR=%s' % c.op(47, s8(P.encode()), s8(b'/nix/roots/./perm')))
print('PERM_ROOT=%s' % c.str())
print('FIND_ROOTS_ERROR=%s' % c.op(14))
roots = [(c.str(), c.str()) for _ in range(c.u64())]
print('FIND_ROOTS=%s' % ' '.join('%s->%s' % r for r in roots if not r[0].startswith('/proc/')))
PY
echo "PERM_LINK=$(readlink /nix/roots/perm)"
"#,
        input = input.path().display(),
        start = start_our_daemon(),
    );
    let out = in_namespace_ok(&script, &[]);
    let p = out
        .lines()
        .find_map(|l| l.strip_prefix("PERM_LINK="))
        .expect("perm link")
        .to_owned();
    assert!(p.starts_with("/nix/store/"), "{out}");
    assert_eq!(value(&out, "REGISTER_ERROR"), "None", "{out}");
    assert_eq!(value(&out, "QUERY_ERROR"), "None", "{out}");
    let answer = value(&out, "QUERY_ANSWER");
    assert!(
        answer.contains(&format!("\"outPath\":\"{}\"", &p["/nix/store/".len()..])),
        "{out}"
    );
    assert!(answer.contains(&"ab".repeat(32)), "{out}");
    assert_eq!(value(&out, "QUERY_UNKNOWN_COUNT"), "0", "{out}");
    assert_eq!(value(&out, "PERM_ROOT_ERROR"), "None", "{out}");
    assert_eq!(value(&out, "PERM_ROOT"), "/nix/roots/perm", "{out}");
    assert_eq!(value(&out, "FIND_ROOTS_ERROR"), "None", "{out}");
    assert!(
        value(&out, "FIND_ROOTS").contains(&format!("/nix/roots/perm->{p}")),
        "{out}"
    );
}
