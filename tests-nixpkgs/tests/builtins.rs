//! End-to-end tests of the builtin builders (`builtin:fetchurl`, `builtin:buildenv`,
//! `builtin:unpack-channel`): the real Nix 2.8 and 2.34 clients against our daemon and, as
//! the control, the real `nix-daemon` of the same version, with the sandbox on. The
//! transcripts must be equal.
//!
//! - fetchurl: `import <nix/fetchurl.nix>` of a file served by `python3 -m http.server` on
//!   loopback (started by the test: the Nix 2.34 chroot has no Python), a wrong hash and a 404;
//! - unpack-channel: a `derivation` with that builder over a gzip tarball;
//! - buildenv: `nix-env -i` of two packages into a profile (their `bin` directories merge),
//!   `--list-generations`, `--rollback`, and a collision. The packages are themselves
//!   unpack-channel outputs (xz, bzip2 and plain tarballs renamed to `bin`), so no shell is
//!   needed in the sandbox;
//! - fetchurl from an HTTPS server whose authority only `ssl-cert-file` names and which asks
//!   for the login `netrc-file` gives (Nix 2.34).

use std::io::Write;
use std::path::Path;
use std::process::Command;

use pkgchain_tests_nixpkgs::scenario::{
    Client, against_both, assert_same_transcripts, client_available,
};
use pkgchain_tests_nixpkgs::{HttpServer, prerequisites, readable_input_dir};
use sha2::Digest;

mod tls;

/// The content served at `/file.txt`.
const SERVED: &[u8] = b"fetched by builtin:fetchurl\n";

/// The expressions; `@PORT@` and `@HASH@` are filled in by the test.
const EXPRESSIONS: &str = r#"
let
  fetch = name: sha256: import <nix/fetchurl.nix> {
    url = "http://127.0.0.1:@PORT@/${name}";
    inherit sha256;
  };
  channel = name: src: channelName: derivation {
    inherit name src channelName;
    builder = "builtin:unpack-channel";
    system = "builtin";
  };
in {
  fetched = fetch "file.txt" "@HASH@";
  wrongHash = fetch "file.txt" "0000000000000000000000000000000000000000000000000000000000000000";
  missing = fetch "missing" "@HASH@";
  channel = channel "chan" ./chan.tar.gz "chan";
  a = channel "a" ./a.tar.xz "bin";
  b = channel "b" ./b.tar.bz2 "bin";
  c = channel "c" ./c.tar "bin";
}
"#;

/// The scenario. Lines hold what must agree: paths, contents, exit codes, key words of errors.
const SCENARIO: &str = r#"
I=/mnt/in
T=/nix/scenario-tmp
mkdir -p $T
B="nix-build $I/builtins.nix --no-out-link"
tree() {
  (cd "$1" && find . | LC_ALL=C sort | while read f; do
    if [ -L "$f" ]; then echo "  $f -> $(readlink "$f")"
    elif [ -f "$f" ]; then echo "  $f: $(cat "$f") $( [ -x "$f" ] && echo x)"
    else echo "  $f/"; fi
  done)
}
failure() {
  what=$1; shift
  "$@" > $T/out 2>&1; echo "$what exit $?"
  for w in "hash mismatch in fixed-output derivation" "HTTP error 404" \
           "unable to download 'http://127.0.0.1:[0-9]*/missing'"; do
    grep -q -e "$w" $T/out && echo "  says: $w"
  done
  grep -o -e 'specified: *sha256-[A-Za-z0-9+/=]*' -e 'got: *sha256-[A-Za-z0-9+/=]*' $T/out | tr -s ' ' || true
}
P=$($B -A fetched 2>$T/err); s=$?
echo "== fetched exit $s"; [ $s = 0 ] || cat $T/err
echo "$P: $(cat $P)"
failure wrong-hash $B -A wrongHash
failure missing $B -A missing
C=$($B -A channel 2>$T/err); s=$?
echo "== channel exit $s"; [ $s = 0 ] || cat $T/err
echo "$C"; tree "$C"
PR=/nix/var/nix/profiles/test
E="nix-env -p $PR -f $I/builtins.nix"
$E -iA a > $T/out 2>&1; echo "== install a exit $?"
$E -iA b > $T/out 2>&1; s=$?; echo "== install b exit $s"; [ $s = 0 ] || cat $T/out
nix-env -p $PR -q
nix-env -p $PR --list-generations | awk '{ print $1, ($NF == "(current)" ? "current" : "") }'
echo "profile: $(readlink -f $PR)"
echo "manifest: $(readlink $PR/manifest.nix | sed 's/^.*-//')"
tree $PR/
$E -iA c > $T/out 2>&1; echo "== install c (collides with a) exit $?"
A=$($B -A a 2>/dev/null); CC=$($B -A c 2>/dev/null)
grep -q "$A/bin/hello" $T/out && echo "  names a's hello"
grep -q "$CC/bin/hello" $T/out && echo "  names c's hello"
nix-env -p $PR --rollback 2>&1
nix-env -p $PR -q
nix-env -p $PR --list-generations | awk '{ print $1, ($NF == "(current)" ? "current" : "") }'
tree $PR/bin
"#;

/// Makes `name` in `input` with `tar ARGS` of a directory `top` holding `files`.
fn tarball(input: &Path, name: &str, flag: &str, top: &str, files: &[(&str, &str)]) {
    let work = tempfile::tempdir().expect("tempdir");
    for (path, content) in files {
        let p = work.path().join(top).join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(work.path());
    if !flag.is_empty() {
        cmd.arg(flag);
    }
    let status = cmd
        .args(["--owner=0", "--group=0", "--mtime=@1", "-cf"])
        .arg(input.join(name))
        .arg(top)
        .status()
        .expect("running tar");
    assert!(status.success(), "tar failed for {name}");
}

fn compare(client: Client) {
    let mut tools = vec![
        "unshare",
        "nix-build",
        "nix-env",
        "nix-daemon",
        "python3",
        "tar",
        "xz",
        "bzip2",
    ];
    if client == Client::Nix234 {
        tools.push("chroot");
    }
    if !prerequisites(&tools) || !client_available(client) {
        return;
    }
    let www = tempfile::tempdir().expect("tempdir");
    let mut f = std::fs::File::create(www.path().join("file.txt")).expect("create");
    f.write_all(SERVED).expect("write");
    drop(f);
    let server = HttpServer::start(www.path());

    let input = readable_input_dir("pkgchain-builtins-e2e-");
    let hash = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(SERVED));
    let expressions = EXPRESSIONS
        .replace("@PORT@", &server.port.to_string())
        .replace("@HASH@", &hash);
    std::fs::write(input.path().join("builtins.nix"), expressions).expect("write");
    tarball(
        input.path(),
        "chan.tar.gz",
        "-z",
        "nixexprs-1.0",
        &[("default.nix", "{ }"), ("pkgs/top.nix", "42")],
    );
    tarball(
        input.path(),
        "a.tar.xz",
        "-J",
        "a-1.0",
        &[("hello", "a's hello")],
    );
    tarball(
        input.path(),
        "b.tar.bz2",
        "-j",
        "b-1.0",
        &[("world", "b's world")],
    );
    tarball(
        input.path(),
        "c.tar",
        "",
        "c-1.0",
        &[("hello", "c's hello")],
    );

    let config = r"sandbox = true\nbuild-users-group =\nsubstituters =\nrequire-sigs = false";
    let (ours, theirs) = against_both(client, input.path(), "builtins.sh", SCENARIO, config);
    drop(server);
    assert!(ours.contains("== fetched exit 0\n/nix/store/"), "{ours}");
    assert!(ours.contains("== install b exit 0"), "{ours}");
    assert_same_transcripts(&ours, &theirs);
}

#[test]
fn nix_2_8_builtins_match_nix_daemon() {
    compare(Client::Nix28);
}

#[test]
fn nix_2_34_builtins_match_nix_daemon() {
    compare(Client::Nix234);
}

/// Three downloads of one file over HTTPS with a login; the names make three store paths.
const PRIVATE_EXPRESSIONS: &str = r#"
let
  fetch = name: import <nix/fetchurl.nix> {
    url = "https://127.0.0.1:@PORT@/file.txt";
    sha256 = "@HASH@";
    inherit name;
  };
in {
  good = fetch "good";
  otherNetrc = fetch "other-netrc";
  otherAuthority = fetch "other-authority";
}
"#;

/// The daemons are given the test's authority and login; a trusted client overrides either.
const PRIVATE_SCENARIO: &str = r#"
I=/mnt/in
T=/nix/scenario-tmp
mkdir -p $T
B="nix-build $I/private.nix --no-out-link"
P=$($B -A good 2>$T/err); s=$?
echo "== authority and login exit $s"; [ $s = 0 ] || cat $T/err
echo "$P: $(cat $P)"
$B -A otherNetrc --option netrc-file $I/tls/other-netrc > $T/out 2>&1
echo "== a netrc without the host exit $?"
grep -q "HTTP error 401" $T/out && echo "  says: HTTP error 401"
$B -A otherAuthority --option ssl-cert-file $I/other/tls/ca.pem > $T/out 2>&1
echo "== another authority exit $?"
grep -q "SSL peer certificate or SSH remote key was not OK" $T/out && echo "  says: certificate not OK"
nix-store -q --hash $P
"#;

/// `builtin:fetchurl` downloads with the daemon's `netrc-file` and `ssl-cert-file`, as Nix
/// hands both to its builder: over HTTPS from a server whose certificate only the test's
/// authority signed and which answers 401 without the login. With both, the file is fetched;
/// with a netrc naming another host the server's 401 fails the build; with another authority
/// (Nix 2.34) the certificate is refused. nix-daemon and ours, of the client's version, give
/// the same transcript.
fn fetchurl_uses_netrc_and_ssl_cert_file(client: Client) {
    let mut tools = vec!["unshare", "nix-build", "nix-daemon", "python3"];
    if client == Client::Nix234 {
        tools.push("chroot");
    }
    if !prerequisites(&tools) || !client_available(client) {
        return;
    }
    let www = tempfile::tempdir().expect("tempdir");
    std::fs::write(www.path().join("file.txt"), SERVED).expect("write");
    let input = readable_input_dir("pkgchain-fetchurl-tls-e2e-");
    let (server, log) = tls::serve_privately(input.path(), www.path());
    // An authority that did not sign the server's certificate.
    tls::make_certificates(&input.path().join("other"));
    let hash = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(SERVED));
    let expressions = PRIVATE_EXPRESSIONS
        .replace("@PORT@", &server.port.to_string())
        .replace("@HASH@", &hash);
    std::fs::write(input.path().join("private.nix"), expressions).expect("write");
    let config = r"sandbox = true\nbuild-users-group =\nsubstituters =\nssl-cert-file = /mnt/in/tls/ca.pem\nnetrc-file = /mnt/in/tls/netrc";
    let (ours, theirs) = against_both(client, input.path(), "private.sh", PRIVATE_SCENARIO, config);
    drop(server);
    println!(
        "server:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        ours.contains("== authority and login exit 0\n/nix/store/"),
        "{ours}"
    );
    assert!(ours.contains("fetched by builtin:fetchurl"), "{ours}");
    assert!(
        ours.contains("== a netrc without the host exit 1\n  says: HTTP error 401"),
        "{ours}"
    );
    if client == Client::Nix234 {
        assert!(
            ours.contains("== another authority exit 1\n  says: certificate not OK"),
            "{ours}"
        );
    }
    // With the Nix 2.8 client, `--option ssl-cert-file` changes neither daemon's download:
    // the daemon's own authority is used, and it succeeds (ours uses every setting a trusted
    // client sends, so this client does not seem to send that one).
    assert_same_transcripts(&ours, &theirs);
}

#[test]
fn nix_2_8_fetchurl_uses_netrc_and_ssl_cert_file_as_nix_daemon() {
    fetchurl_uses_netrc_and_ssl_cert_file(Client::Nix28);
}

#[test]
fn nix_2_34_fetchurl_uses_netrc_and_ssl_cert_file_as_nix_daemon() {
    fetchurl_uses_netrc_and_ssl_cert_file(Client::Nix234);
}
