//! The `pkgchain` command line, run as users run it (and, as a side effect, the reason
//! `cargo test --workspace` builds the binary the end-to-end suite drives).

use std::process::Command;

fn pkgchain(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pkgchain"));
    c.env("NIX_STORE_DIR", dir.join("store"))
        .env("NIX_STATE_DIR", dir.join("var"))
        .env("PKGCHAIN_IPFS_DIR", dir.join("ipfs"));
    c
}

#[test]
fn add_cat_ls_dump_verify_stats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("hello");
    std::fs::create_dir_all(tree.join("share")).expect("tree");
    std::fs::write(tree.join("share/greeting"), b"Hello, world!\n").expect("file");
    let out = pkgchain(dir.path())
        .args(["store", "add"])
        .arg(&tree)
        .output()
        .expect("add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(
        path.starts_with(&format!("{}/", dir.path().join("store").display())),
        "{path}"
    );
    assert!(path.ends_with("-hello"), "{path}");

    let cat = pkgchain(dir.path())
        .args(["store", "cat", &format!("{path}/share/greeting")])
        .output()
        .expect("cat");
    assert_eq!(cat.stdout, b"Hello, world!\n");
    let ls = pkgchain(dir.path())
        .args(["store", "ls", "-R", "-l", &path])
        .output()
        .expect("ls");
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.contains("dr-xr-xr-x") && ls.contains("/share/greeting"),
        "{ls}"
    );
    let dump = pkgchain(dir.path())
        .args(["store", "dump", &path])
        .output()
        .expect("dump");
    assert!(
        dump.stdout.starts_with(b"\x0d\0\0\0\0\0\0\0nix-archive-1"),
        "not a NAR"
    );
    let verify = pkgchain(dir.path())
        .args(["store", "verify"])
        .output()
        .expect("verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let stats = pkgchain(dir.path())
        .args(["store", "stats", "--json"])
        .output()
        .expect("stats");
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("json");
    assert_eq!(v["paths"], 1);
    assert_eq!(v["narBytes"], dump.stdout.len() as u64);
}

#[test]
fn errors_name_what_was_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&[&str], &str); 4] = [
        (
            &["store", "dump", "/elsewhere/x"],
            "is not in the Nix store",
        ),
        (&["store", "cat", "/nix/store/x"], "is not in the store"),
        (&["store", "add", "/nonexistent/tree"], "/nonexistent/tree"),
        (
            &["store", "mount", "--view", "sideways"],
            "unknown store view 'sideways'",
        ),
    ];
    for (args, expected) in cases {
        let out = pkgchain(dir.path()).args(args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let missing = format!(
        "{}/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-x",
        dir.path().join("store").display()
    );
    let out = pkgchain(dir.path())
        .args(["store", "dump", &missing])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not valid"));
}
