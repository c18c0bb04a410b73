//! Scenario runs shared by the end-to-end suites: a shell script of Nix commands run by one
//! real client (Debian's Nix 2.8, or Nix 2.34 in the Debian sid chroot) against one daemon
//! (ours, or the real `nix-daemon` of the client's version as the control), in a private mount
//! namespace with a tmpfs `/nix`. Every command's output is the transcript the suites compare.

use std::path::Path;

use crate::{daemon_bin, in_namespace_ok, skipping_allowed};

/// Where `scripts/install-test-deps.sh` makes the Debian sid chroot with Nix 2.34.
pub const SID_CHROOT: &str = "/var/cache/pkgchain/sid-chroot";

/// The user the untrusted scenarios run as (made by `scripts/install-test-deps.sh`).
pub const USER_NAME: &str = "pkgchain-e2e";

/// Which Nix client runs the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// `/usr/bin` of this machine (Debian 12's nix-bin).
    Nix28,
    /// The Debian sid chroot.
    Nix234,
}

/// Which daemon serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Daemon {
    /// `pkgchain-daemon`.
    Ours,
    /// The real `nix-daemon` of the client's version.
    RealNix,
}

/// Who runs a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// root, a trusted user.
    Root,
    /// [`USER_NAME`], not in `trusted-users`.
    Untrusted,
}

/// Whether `client` can run here; says why not (or panics where skipping is not allowed).
pub fn client_available(client: Client) -> bool {
    if client == Client::Nix234 && !Path::new(SID_CHROOT).join("usr/bin/nix-daemon").exists() {
        if skipping_allowed() {
            eprintln!("skipped: no Nix 2.34 chroot at {SID_CHROOT}");
            return false;
        }
        panic!("no Nix 2.34 chroot at {SID_CHROOT}: run scripts/install-test-deps.sh");
    }
    true
}

/// The uid and gid of [`USER_NAME`] (on this machine and in the chroot); `None` (after saying
/// why) when the test should be skipped.
pub fn untrusted_user() -> Option<(u32, u32)> {
    let id = |flag: &str| {
        std::process::Command::new("id")
            .args([flag, USER_NAME])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
    };
    let in_chroot = std::fs::read_to_string(Path::new(SID_CHROOT).join("etc/passwd"))
        .map_or(true, |p| {
            p.lines().any(|l| l.starts_with(&format!("{USER_NAME}:")))
        });
    match (id("-u"), id("-g")) {
        (Some(u), Some(g)) if in_chroot => Some((u, g)),
        _ if skipping_allowed() => {
            eprintln!("skipped: no user {USER_NAME} here or in the chroot");
            None
        }
        _ => panic!("no user {USER_NAME} here or in the chroot: run scripts/install-test-deps.sh"),
    }
}

/// One run of a scenario.
pub struct ScenarioRun<'a> {
    /// The client.
    pub client: Client,
    /// The daemon.
    pub daemon: Daemon,
    /// Who runs it.
    pub role: Role,
    /// A directory with the scenario's inputs, seen as `/mnt/in` by the client.
    pub input: &'a Path,
    /// The script's file name (written into `input`).
    pub file: &'a str,
    /// The script (bash).
    pub script: &'a str,
    /// `nix.conf` lines for the daemon and the client (`\n`-separated, `$'...'` escapes).
    pub config: &'a str,
}

/// Runs `run`; returns the script's stdout (the transcript), or "" when skipped (said why).
pub fn transcript(run: &ScenarioRun<'_>) -> String {
    let daemon_cmd = match run.daemon {
        Daemon::Ours => format!(
            "PKGCHAIN_IPFS_DIR=/nix/ipfs {} --view fuse",
            daemon_bin().display()
        ),
        Daemon::RealNix => match run.client {
            Client::Nix28 => "/usr/bin/nix-daemon".to_owned(),
            // Not `chroot`: a chrooted process may not create user namespaces, so Nix's
            // sandbox would fall back to none. The daemon gets its own mount namespace whose
            // root is the chroot's directory instead.
            Client::Nix234 => format!(
                "unshare --mount --propagation private bash -c 'mount --rbind {SID_CHROOT} {SID_CHROOT} && cd {SID_CHROOT} && mkdir -p .old-root && pivot_root . .old-root && umount -l /.old-root && exec /usr/bin/nix-daemon'"
            ),
        },
    };
    let (home, as_user) = match run.role {
        // On the test's own /nix: the chroot's /tmp outlives the test (nix-env makes
        // ~/.nix-defexpr).
        Role::Root => ("/nix/home-root".to_owned(), String::new()),
        Role::Untrusted => {
            let Some((uid, gid)) = untrusted_user() else {
                return String::new();
            };
            let home = format!("/nix/home-{USER_NAME}");
            let as_user = match run.client {
                Client::Nix28 => format!("setpriv --reuid={uid} --regid={gid} --clear-groups "),
                Client::Nix234 => format!("--userspec={uid}:{gid} "),
            };
            (home, as_user)
        }
    };
    let client_prefix = match (run.client, run.role) {
        (Client::Nix28, Role::Root) => String::new(),
        (Client::Nix28, Role::Untrusted) => as_user.clone(),
        (Client::Nix234, _) => format!("chroot {as_user}{SID_CHROOT} "),
    };
    // The scenario is written to a file both the host and the chroot can read.
    std::fs::write(run.input.join(run.file), run.script.replace("\\$", "$")).expect("write");
    let script = format!(
        r#"
# Not NIX_REMOTE=daemon here: a real nix-daemon started with it would open its own socket as
# its store and connect to itself without end. Only the clients get it.
export NIX_CONFIG=$'{daemon_config}'
mkdir -p /mnt/in /nix/ipfs
mount --bind '{input}' /mnt/in
if [ -d '{chroot}' ]; then
  mount --bind /proc '{chroot}/proc'
  mount --rbind /dev '{chroot}/dev'
  mkdir -p '{chroot}/mnt/in'
  mount --bind '{input}' '{chroot}/mnt/in'
  mount --rbind /nix '{chroot}/nix'
fi
{daemon_cmd} > /nix/daemon.log 2>&1 &
dpid=$!
# The chroot's bind of the FUSE view goes first: a FUSE session ends only when its last mount does.
trap "umount -l '{chroot}/nix/store' 2>/dev/null || true; kill -TERM \$dpid 2>/dev/null; wait \$dpid 2>/dev/null || true" EXIT
for i in $(seq 1 100); do [ -S /nix/var/nix/daemon-socket/socket ] && break; sleep 0.1; done
[ -S /nix/var/nix/daemon-socket/socket ] || {{ cat /nix/daemon.log; exit 1; }}
# Our daemon mounts its FUSE view on /nix/store: show it in the chroot too.
if [ -d '{chroot}' ] && grep -q ' /nix/store fuse' /proc/mounts; then mount --bind /nix/store '{chroot}/nix/store'; fi
mkdir -p '{home}'
[ -z '{as_user}' ] || chown {USER_NAME} '{home}'
{client_prefix}env -i PATH=/usr/bin:/bin HOME='{home}' NIX_REMOTE=daemon "NIX_CONFIG=$NIX_CONFIG" bash /mnt/in/{file}
"#,
        daemon_config = run.config,
        input = run.input.display(),
        file = run.file,
        chroot = if run.client == Client::Nix234 {
            SID_CHROOT
        } else {
            "/nonexistent"
        },
    );
    // The script names the daemon and the client, so a failure says which run it was.
    in_namespace_ok(&script, &[])
}

/// Panics, showing the lines that differ and both transcripts, unless they are equal.
pub fn assert_same_transcripts(ours: &str, theirs: &str) {
    if ours != theirs {
        let diff: Vec<String> = ours
            .lines()
            .zip(theirs.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("ours:  {a}\ntheirs: {b}"))
            .collect();
        panic!(
            "transcripts differ:\n{}\n--- ours ---\n{ours}\n--- theirs ---\n{theirs}",
            diff.join("\n")
        );
    }
}

/// A bash function for scenarios: `corrupt PATH LINE` damages a store path whose one file holds
/// the line LINE. In our block store (`/nix/ipfs/blocks` exists) it overwrites the block holding
/// that line (no other store object may hold it); in Nix's store, the file itself.
pub const CORRUPT_FN: &str = r#"
corrupt() {
  if [ -d /nix/ipfs/blocks ]; then
    f=$(grep -rlx -e "$2" /nix/ipfs/blocks | head -n 1)
    [ -n "$f" ] || echo "no block holds '$2'"
    printf 'damaged\n' > "$f"
  else
    printf 'damaged\n' > "$1"
  fi
}
"#;

/// `nix.conf` of the build scenarios: the sandbox on, no build users, the host's `/usr`,
/// `/lib` and `/lib64` in the sandbox (the builders are its shells), no substituters.
pub const SANDBOXED_BUILDS_CONFIG: &str = r"sandbox = true\nbuild-users-group =\nextra-sandbox-paths = /usr /lib /lib64\nsubstituters =\nrequire-sigs = false";

/// Runs the build scenario `script` (written as `file`) with `client` as root, first against
/// the real nix-daemon of its version and then against ours, with `tests-nixpkgs/nix/builds.nix`
/// in `/mnt/in` and [`SANDBOXED_BUILDS_CONFIG`] plus `config_extra` (`\n`-separated lines).
/// Returns `(ours, theirs)`, both printed for the test's log, or `None` (after saying why)
/// when the tools are missing here.
pub fn builds_against_both(
    client: Client,
    file: &str,
    script: &str,
    config_extra: &str,
) -> Option<(String, String)> {
    let mut tools = vec!["unshare", "nix-build", "nix-daemon"];
    if client == Client::Nix234 {
        tools.push("chroot");
    }
    if !crate::prerequisites(&tools) || !client_available(client) {
        return None;
    }
    let input = crate::readable_input_dir("pkgchain-builds-e2e-");
    let nix_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("nix");
    std::fs::copy(nix_dir.join("builds.nix"), input.path().join("builds.nix")).expect("copy");
    let config = format!("{SANDBOXED_BUILDS_CONFIG}{config_extra}");
    Some(against_both(client, input.path(), file, script, &config))
}

/// Runs `script` (written as `file` into `input`, seen as `/mnt/in`) with `client` as root,
/// first against the real nix-daemon of its version and then against ours, with `config`.
/// Returns `(ours, theirs)`, both printed for the test's log.
pub fn against_both(
    client: Client,
    input: &Path,
    file: &str,
    script: &str,
    config: &str,
) -> (String, String) {
    let run = |daemon| {
        transcript(&ScenarioRun {
            client,
            daemon,
            role: Role::Root,
            input,
            file,
            script,
            config,
        })
    };
    let theirs = run(Daemon::RealNix);
    let ours = run(Daemon::Ours);
    eprintln!("--- ours ---\n{ours}\n--- theirs ---\n{theirs}");
    (ours, theirs)
}
