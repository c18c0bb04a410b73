//! Runs real builders (the host's `/bin/sh`, made visible with sandbox paths) in the real
//! sandbox: namespaces, mounts, id maps, limits. Needs root (for the id range) and user
//! namespaces; skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pkgchain_sandbox::root::{HostPath, PreparedRoot, RootPlan, prepare, remove};
use pkgchain_sandbox::run::{Ended, Limits, Report, run};
use pkgchain_sandbox::spec::{IdMapping, SandboxSpec};

fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pkgchain-sandbox"))
}

fn usable() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: these tests need root (the builder's id range)");
        return false;
    }
    true
}

struct Build {
    _tmp: tempfile::TempDir,
    prepared: PreparedRoot,
    spec: SandboxSpec,
}

/// A build of `script` under `/bin/sh`, with the host's `/bin`, `/lib*` and `/usr` visible.
fn build(script: &str, private_network: bool, inputs: Vec<PathBuf>) -> Build {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The helper re-executes itself as the builder's ids: its directory must be reachable.
    let host_paths: Vec<HostPath> = ["/bin", "/usr", "/lib", "/lib64"]
        .iter()
        .map(|p| HostPath::parse(&format!("{p}?")))
        .collect();
    let plan = RootPlan {
        store_dir: "/nix/store".into(),
        inputs,
        host_paths,
        build_dir: "/build".into(),
        ids: IdMapping::Range {
            base: 872415232 + 5 * 65536,
        },
        private_network,
    };
    let prepared = prepare(&tmp.path().join("root"), &plan).expect("prepare");
    let out = "/nix/store/00000000000000000000000000000000-test".to_string();
    let spec = SandboxSpec {
        root: prepared.dir.clone(),
        binds: prepared.binds.clone(),
        builder: b"/bin/sh".to_vec(),
        args: vec![b"-c".to_vec(), script.as_bytes().to_vec()],
        env: vec![
            (b"out".to_vec(), out.into_bytes()),
            (b"PATH".to_vec(), b"/usr/bin:/bin".to_vec()),
            (b"HOME".to_vec(), b"/homeless-shelter".to_vec()),
        ],
        work_dir: "/build".into(),
        private_network,
        ids: plan.ids,
        writable: vec!["/build".into(), "/nix/store".into(), "/dev/shm".into()],
    };
    Build {
        _tmp: tmp,
        prepared,
        spec,
    }
}

async fn go(b: &Build, limits: Limits) -> (Report, String) {
    let mut log = Vec::new();
    let report = run(&helper(), &b.spec, &limits, &mut |chunk: &[u8]| {
        log.extend_from_slice(chunk)
    })
    .await
    .expect("run");
    (report, String::from_utf8_lossy(&log).into_owned())
}

#[tokio::test]
async fn builder_runs_unprivileged_in_a_minimal_root_and_writes_its_output() {
    if !usable() {
        return;
    }
    let b = build(
        r#"
echo "uid=$(id -u) gid=$(id -g) host=$(hostname) pid=$$ cwd=$(pwd)"
ls / | tr '\n' ' '; echo
ls /nix/store | wc -l
cat /etc/shadow 2>&1 | head -1
ls /root 2>&1 | head -1
mkdir $out && echo hi > $out/file
"#,
        true,
        vec![],
    );
    let (report, log) = go(&b, Limits::default()).await;
    eprintln!("{log}\n{report:?}");
    assert_eq!(report.ended, Ended::Exited(0), "{log}");
    assert!(
        log.contains("uid=1000 gid=100 host=localhost pid=1 cwd=/build"),
        "{log}"
    );
    assert!(
        log.contains("No such file or directory"),
        "no /etc/shadow, no /root: {log}"
    );
    assert!(!log.contains("root:"), "{log}");
    let written = b
        .prepared
        .store_dir_outside
        .join("00000000000000000000000000000000-test/file");
    assert_eq!(std::fs::read_to_string(written).expect("output"), "hi\n");
    remove(&b.prepared.dir).expect("remove");
}

#[tokio::test]
async fn network_is_loopback_only_unless_fixed_output() {
    if !usable() {
        return;
    }
    let script = "ls /sys/class/net 2>/dev/null | tr '\\n' ' '; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '";
    let private = build(script, true, vec![]);
    let (report, log) = go(&private, Limits::default()).await;
    assert_eq!(report.ended, Ended::Exited(0), "{log}");
    assert_eq!(log.split_whitespace().collect::<Vec<_>>(), ["lo"], "{log}");
    let shared = build(script, false, vec![]);
    let (report, log) = go(&shared, Limits::default()).await;
    assert_eq!(report.ended, Ended::Exited(0), "{log}");
    assert!(log.split_whitespace().count() >= 1, "{log}");
}

#[tokio::test]
async fn limits_kill_the_whole_process_tree() {
    if !usable() {
        return;
    }
    let marker = format!("pkgchain-sandbox-marker-{}", std::process::id());
    // A background process that would outlive its parent outside a pid namespace.
    let b = build(
        &format!("(exec -a {marker} sleep 1000) & echo started; sleep 1000"),
        true,
        vec![],
    );
    let limits = Limits {
        timeout: Some(Duration::from_millis(500)),
        ..Limits::default()
    };
    let (report, log) = go(&b, limits).await;
    assert_eq!(
        report.ended,
        Ended::TimedOut(Duration::from_millis(500)),
        "{log}"
    );
    assert!(log.contains("started"), "{log}");
    assert!(!process_named(&marker), "a process of the build survived");

    let silent = build("echo one; sleep 1000", true, vec![]);
    let limits = Limits {
        max_silent: Some(Duration::from_millis(300)),
        ..Limits::default()
    };
    let (report, log) = go(&silent, limits).await;
    assert_eq!(
        report.ended,
        Ended::Silent(Duration::from_millis(300)),
        "{log}"
    );

    let chatty = build("yes", true, vec![]);
    let limits = Limits {
        max_log_bytes: Some(10_000),
        ..Limits::default()
    };
    let (report, log) = go(&chatty, limits).await;
    assert_eq!(report.ended, Ended::LogTooLong(10_000));
    assert!(log.len() <= 10_000, "{}", log.len());
}

#[tokio::test]
async fn a_missing_builder_is_a_setup_error_naming_it() {
    if !usable() {
        return;
    }
    let mut b = build("true", true, vec![]);
    b.spec.builder = b"/nonexistent/builder".to_vec();
    let mut log = Vec::new();
    let err = run(&helper(), &b.spec, &Limits::default(), &mut |c: &[u8]| {
        log.extend_from_slice(c)
    })
    .await
    .expect_err("must fail");
    assert!(err.to_string().contains("/nonexistent/builder"), "{err}");
}

fn process_named(name: &str) -> bool {
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.windows(name.len()).any(|w| w == name.as_bytes()))
        })
}

#[allow(dead_code)]
fn exists(p: &Path) -> bool {
    p.exists()
}
