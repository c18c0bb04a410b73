//! GNU hello built the way nixpkgs builds it: the package set in `pkgs/` (a stdenv whose
//! `setup` runs the generic phases, `mkDerivation`, Nix's `builtin:fetchurl`) built, installed
//! into a profile, run and rolled back by the real Nix 2.8 and 2.34 clients, against our daemon
//! and, as the control, the real `nix-daemon` of the same version. The transcripts (output
//! paths, NAR hashes, references, what hello prints, the generations) must be equal.
//!
//! The tarball (`hello-2.10.tar.gz`, in `../shared/fixtures/` next to the repository; also
//! `apt-get source hello` or ftp.gnu.org) is served by `python3 -m http.server` on loopback,
//! started by the test on the host: the builds that fetch it are fixed-output, so they share
//! the host's network with both daemons, and the Debian sid chroot that runs the Nix 2.34
//! client has no python3. The URL is passed with `--argstr helloUrl`; it changes the source's
//! derivation but not its output path, nor hello's.
//!
//! Bootstrap tools are the host's `/usr` (gcc, make, coreutils, ...), made visible in the
//! sandbox with `extra-sandbox-paths = /usr /lib /lib64` rather than imported into the store
//! (see `pkgs/default.nix`). The real nix-daemon 2.34 runs with the sid chroot as its root,
//! whose `/usr` has no compiler: for that client the test runs itself again in a private mount
//! namespace where the host's `/usr` is bound on the chroot's (empty) `/opt`, and gives that
//! daemon `/usr=/opt` instead, so both daemons build with the same toolchain. (Naming the
//! host's `/usr` as `/proc/<pid>/root/usr` does not work: nix-daemon 2.34 makes the sandbox's
//! mounts from inside its user namespace, where that link is not followed.)
//!
//! With `NIXPKGS` set to a nixpkgs checkout (and network access to cache.nixos.org), a second
//! test builds `nix-build $NIXPKGS -A hello` against our daemon; without it, it says it skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pkgchain_tests_nixpkgs::scenario::{
    Client, Daemon, Role, SID_CHROOT, ScenarioRun, assert_same_transcripts, client_available,
    transcript,
};
use pkgchain_tests_nixpkgs::{HttpServer, prerequisites, readable_input_dir};

/// The scenario; `@URL@` is the tarball's URL. The time `nix-build -A hello` took goes to
/// `/mnt/in/hello-build-ms`, outside the transcript.
const SCENARIO: &str = r#"
I=/mnt/in
T=/nix/scenario-tmp
mkdir -p $T
U=@URL@
P=/nix/var/nix/profiles/hello-test
gens() { nix-env -p $P --list-generations | awk '{ print "  " $1 ($NF == "(current)" ? " (current)" : "") }'; }
start=$(date +%s%N)
out=$(nix-build $I/pkgs -A hello --argstr helloUrl $U --no-out-link 2>$T/err); s=$?
echo $(( ($(date +%s%N) - start) / 1000000 )) > $I/hello-build-ms
echo "== nix-build -A hello exit $s"
[ $s = 0 ] || tail -40 $T/err
echo "$out"
echo "hello: $($out/bin/hello)"
echo "hello -g: $($out/bin/hello -g 'Hi there')"
echo "files: $(cd $out && find . -type f | LC_ALL=C sort | tr '\n' ' ')"
echo "nar hash: $(nix-store -q --hash $out)"
nix-store -q --references $out | sed 's/^/  ref /'
drv=$(nix-store -q --deriver $out)
echo "deriver: $drv"
echo "src: $(nix-build $I/pkgs -A hello.src --argstr helloUrl $U --no-out-link 2>/dev/null)"
echo "log first: $(nix-store -l $drv | head -1)"
echo "log last: $(nix-store -l $drv | tail -1)"
echo "log tests: $(nix-store -l $drv | sed 's/\x1b\[[0-9;]*m//g' | grep -E '^(PASS|FAIL|SKIP|# TOTAL)' | LC_ALL=C sort | tr '\n' ' ')"
# make check colours its results when its output is a terminal (nix-daemon gives builders a pty).
echo "log colour codes: $(nix-store -l $drv | grep -c $'\e\\[')"
nix-env -p $P -f $I/pkgs --argstr helloUrl $U -iA hello > $T/out 2>&1; echo "== nix-env -iA hello exit $?"
grep -v '^building' $T/out
echo "profile hello: $($P/bin/hello)"
nix-env -p $P -f $I/pkgs --argstr helloUrl $U -iA hello-wrapper > $T/out 2>&1; echo "== nix-env -iA hello-wrapper exit $?"
grep -v '^building' $T/out
echo "profile wrapper: $($P/bin/hello-wrapper -t)"
echo "installed: $(nix-env -p $P -q | tr '\n' ' ')"
echo "generations:"; gens
nix-env -p $P --rollback 2>&1; echo "== rollback exit $?"
echo "generations:"; gens
echo "profile -> $(readlink $P)"
echo "installed: $(nix-env -p $P -q | tr '\n' ' ')"
echo "bin: $(ls $P/bin | tr '\n' ' ')"
nix-env -p $P --rollback > $T/out 2>&1; echo "== rollback past the first exit $?"
grep -o 'no generation older than the current' $T/out
echo "generations:"; gens
true
"#;

/// Set in the test's second run, inside its private mount namespace.
const INNER: &str = "PKGCHAIN_HELLO_HOST_USR_IN_CHROOT";

/// Runs the test `name` again, in a private mount namespace where the host's `/usr` is bound on
/// the chroot's `/opt`: the scenario's namespaces are copies of this one, so the chroot's
/// nix-daemon sees it, and nothing changes outside (the mount goes with the namespace).
fn again_with_host_usr_in_chroot(name: &str) {
    let exe = std::env::current_exe().expect("test executable");
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "bash", "-euc"])
        .arg(format!(
            "mount --bind /usr '{SID_CHROOT}/opt' && exec \"$0\" --exact {name} --nocapture --test-threads=1"
        ))
        .arg(exe)
        .env(INNER, "1")
        .stdin(Stdio::null())
        .status()
        .expect("running unshare");
    assert!(
        status.success(),
        "{name} failed in its private mount namespace"
    );
}

/// The tarball, or `None` after saying the test is skipped.
fn tarball() -> Option<PathBuf> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/hello-2.10.tar.gz");
    if path.is_file() {
        return Some(path);
    }
    eprintln!(
        "skipped: no {} (get hello-2.10.tar.gz with `apt-get source hello` or from ftp.gnu.org/gnu/hello)",
        path.display()
    );
    None
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn compare(client: Client) {
    let mut tools = vec!["unshare", "nix-build", "nix-env", "nix-daemon", "python3"];
    if client == Client::Nix234 {
        tools.push("chroot");
    }
    if !prerequisites(&tools) || !client_available(client) {
        return;
    }
    let Some(tarball) = tarball() else {
        return;
    };
    if client == Client::Nix234 && std::env::var_os(INNER).is_none() {
        again_with_host_usr_in_chroot("nix_2_34_hello_matches_nix_daemon");
        return;
    }
    let input = readable_input_dir("pkgchain-hello-e2e-");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("pkgs"),
        &input.path().join("pkgs"),
    );
    std::fs::copy(&tarball, input.path().join("hello-2.10.tar.gz")).expect("copy tarball");
    let server = HttpServer::start(input.path());
    let url = format!("http://127.0.0.1:{}/hello-2.10.tar.gz", server.port);
    let script = SCENARIO.replace("@URL@", &url);
    let run = |daemon| {
        // The host's toolchain; the chroot's nix-daemon 2.34 finds it on the chroot's /opt.
        let usr = if client == Client::Nix234 && daemon == Daemon::RealNix {
            "/usr=/opt"
        } else {
            "/usr"
        };
        let config = format!(
            r"sandbox = true\nbuild-users-group =\nextra-sandbox-paths = {usr} /lib /lib64\nsubstituters =\nrequire-sigs = false"
        );
        let text = transcript(&ScenarioRun {
            client,
            daemon,
            role: Role::Root,
            input: input.path(),
            file: "hello.sh",
            script: &script,
            config: &config,
        });
        let ms = std::fs::read_to_string(input.path().join("hello-build-ms")).unwrap_or_default();
        let _ = std::fs::remove_file(input.path().join("hello-build-ms"));
        (text, ms.trim().to_owned())
    };
    let (theirs, their_ms) = run(Daemon::RealNix);
    let (ours, our_ms) = run(Daemon::Ours);
    drop(server);
    eprintln!("--- ours ---\n{ours}\n--- theirs ---\n{theirs}");
    eprintln!(
        "{client:?}: nix-build -A hello (fetch and build) took {our_ms} ms against ours, {their_ms} ms against nix-daemon"
    );
    assert!(
        theirs.contains("== nix-build -A hello exit 0\n/nix/store/")
            && theirs.contains("hello: Hello, world!"),
        "the control failed:\n{theirs}"
    );
    assert!(ours.contains("hello: Hello, world!"), "{ours}");
    assert!(ours.contains("profile hello: Hello, world!"), "{ours}");
    assert_same_transcripts(&ours, &theirs);
}

#[test]
fn nix_2_8_hello_matches_nix_daemon() {
    compare(Client::Nix28);
}

#[test]
fn nix_2_34_hello_matches_nix_daemon() {
    compare(Client::Nix234);
}

/// `nix-build $NIXPKGS -A hello` against our daemon, with cache.nixos.org as the substituter
/// (the whole bootstrap from source would take hours). Runs with the Nix 2.8 client, on the
/// host, so `NIXPKGS` must not be under `/nix` (hidden by the test's own `/nix`).
#[test]
fn nixpkgs_hello_against_our_daemon() {
    let Some(nixpkgs) = std::env::var_os("NIXPKGS") else {
        eprintln!(
            "skipped: NIXPKGS is not set (point it to a nixpkgs checkout, on a machine with network access to cache.nixos.org, to build nixpkgs' own hello against our daemon)"
        );
        return;
    };
    let nixpkgs = std::fs::canonicalize(&nixpkgs).expect("NIXPKGS exists");
    assert!(
        !nixpkgs.starts_with("/nix"),
        "NIXPKGS must be outside /nix, which the test replaces"
    );
    if !prerequisites(&["unshare", "nix-build", "nix-daemon"]) {
        return;
    }
    let input = readable_input_dir("pkgchain-nixpkgs-hello-e2e-");
    let script = format!(
        r#"
out=$(nix-build '{}' -A hello --no-out-link 2>/nix/err); s=$?
echo "== nix-build '<nixpkgs>' -A hello exit $s"
[ $s = 0 ] || tail -40 /nix/err
echo "hello: $($out/bin/hello)"
true
"#,
        nixpkgs.display()
    );
    let text = transcript(&ScenarioRun {
        client: Client::Nix28,
        daemon: Daemon::Ours,
        role: Role::Root,
        input: input.path(),
        file: "nixpkgs-hello.sh",
        script: &script,
        config: r"sandbox = true\nbuild-users-group =",
    });
    eprintln!("{text}");
    assert!(
        text.contains("exit 0\n") && text.contains("hello: Hello, world!"),
        "{text}"
    );
}
