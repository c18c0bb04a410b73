//! Acceptance tests of the store layer (issue 2), against the real Nix.
//!
//! Trees: a Debian documentation directory (`/usr/share/doc`), a Debian library directory
//! (`/usr/lib/x86_64-linux-gnu`) and a generated tree (1 GiB in about 20,000 files by default;
//! `PKGCHAIN_E2E_TREE_MB` / `PKGCHAIN_E2E_TREE_FILES` shrink it for quick runs).
//!
//! Each test checks what the real Nix (Debian's Nix 2.8) does with the same tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use pkgchain_tests_nixpkgs::{
    StoreEnv, TreeSpec, generated_tree, in_namespace, in_namespace_ok, prerequisites, run_ok,
    scratch_dir, sha256_of_output, stdout_of,
};

const DEBIAN_DOC: &str = "/usr/share/doc";
const DEBIAN_LIB: &str = "/usr/lib/x86_64-linux-gnu";

fn real_trees() -> Vec<PathBuf> {
    vec![
        PathBuf::from(DEBIAN_DOC),
        PathBuf::from(DEBIAN_LIB),
        generated_tree(TreeSpec::from_env()),
    ]
}

/// What real Nix 2.8 makes of `tree` in a throwaway chroot store: the store path it prints and
/// the directory holding its copy.
fn nix_add(tree: &Path, chroot: &Path) -> (String, PathBuf) {
    let path = stdout_of(
        Command::new("nix-store")
            .arg("--store")
            .arg(format!("local?root={}", chroot.display()))
            .arg("--add")
            .arg(tree),
    );
    let copy = chroot.join(path.trim_start_matches('/'));
    (path, copy)
}

#[test]
fn nar_hashes_store_paths_and_exports_match_nix() {
    if !prerequisites(&["nix-store", "nix-hash", "cmp"]) {
        return;
    }
    for tree in real_trees() {
        let env = StoreEnv::for_nix_store();
        let ours = env.add(&tree);
        let chroot = scratch_dir("nix-chroot");
        let (theirs, _) = nix_add(&tree, chroot.path());
        // The store path is a function of the NAR hash: equal paths mean equal NAR hashes.
        assert_eq!(ours, theirs, "store path of {}", tree.display());
        // And the hash itself, as `nix-hash` prints it, against ours.
        let nix_hash = stdout_of(
            Command::new("nix-hash")
                .args(["--type", "sha256", "--base32"])
                .arg(&tree),
        );
        let (our_nar_sha, our_len) =
            sha256_of_output(env.pkgchain().args(["store", "dump", &ours]));
        let (nix_nar_sha, nix_len) =
            sha256_of_output(Command::new("nix-store").arg("--dump").arg(&tree));
        assert_eq!(our_nar_sha, nix_nar_sha, "NAR of {}", tree.display());
        assert_eq!(our_len, nix_len);
        let nix_hash_hex = stdout_of(Command::new("nix-hash").args([
            "--type",
            "sha256",
            "--to-base16",
            &nix_hash,
        ]));
        assert_eq!(our_nar_sha, nix_hash_hex, "nix-hash of {}", tree.display());
        // Byte for byte, not only by hash.
        let script = format!(
            "cmp <(nix-store --dump '{}') <(\"$PKGCHAIN\" store dump '{}')",
            tree.display(),
            ours
        );
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .envs(env.vars())
            .env("PKGCHAIN", pkgchain_tests_nixpkgs::pkgchain_bin())
            .output()
            .expect("cmp");
        assert!(
            out.status.success(),
            "export of {} differs from nix-store --dump: {}",
            tree.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        run_ok(env.pkgchain().args(["store", "verify"]));
        eprintln!(
            "{}: {ours}, NAR {our_len} bytes, sha256 {our_nar_sha}: same as Nix",
            tree.display()
        );
    }
}

/// The shell steps that compare a served store path with the original tree and Nix's copy.
/// Directory sizes are left out of the listing: they are file-system specific (ext4 reports
/// multiples of 4096 that grow with the entries, this view always 4096).
fn compare_view_script(
    tree: &Path,
    store_path: &str,
    nix_copy: &Path,
    exec_checks: bool,
) -> String {
    let exec = if exec_checks {
        r#"out=$("$ours/bin/hello.sh"); [ "$out" = "hello from the store" ]
out=$("$ours/bin/echo" from an ELF binary in the store); [ "$out" = "from an ELF binary in the store" ]
echo "executables ran""#
    } else {
        ""
    };
    format!(
        r#"
tree='{tree}'; ours='{store_path}'; nix='{nix}'
diff -r --no-dereference "$tree" "$ours"
listing() {{ (cd "$1" && find . -type d -printf '%y %m %P\n' -o -printf '%y %m %s %l %P\n' | LC_ALL=C sort); }}
diff <(listing "$nix") <(listing "$ours")
echo "listing entries: $(listing "$ours" | wc -l)"
{exec}
echo "view matches"
"#,
        tree = tree.display(),
        nix = nix_copy.display()
    )
}

/// Starts `store mount` for `view`: `fuse` (kernel-cache opens, the default), `fuse-passthrough`
/// (every open answered, single-block files passed through) or `materialised`.
fn start_view_script(view: &str) -> String {
    let args = match view {
        "fuse-passthrough" => "--view fuse --fuse-open passthrough",
        "fuse" => "--view fuse --fuse-open kernel-cache",
        _ => "--view materialised",
    };
    format!(
        r#"
"$PKGCHAIN" store mount {args} --no-ipfs > "$NIX_STATE_DIR/mount.log" 2>&1 &
mount_pid=$!
trap 'kill -TERM $mount_pid 2>/dev/null; wait $mount_pid || true' EXIT
for i in $(seq 1 600); do
  if [ -n "$(ls /nix/store 2>/dev/null)" ]; then break; fi
  if ! kill -0 $mount_pid 2>/dev/null; then cat "$NIX_STATE_DIR/mount.log"; exit 1; fi
  sleep 0.1
done
"#
    )
}

fn view_matches_tree(view: &str) {
    if !prerequisites(&["nix-store", "unshare", "diff", "find"]) {
        return;
    }
    let mut trees = vec![
        PathBuf::from(DEBIAN_DOC),
        generated_tree(TreeSpec::from_env()),
    ];
    if view == "fuse" {
        trees.insert(1, PathBuf::from(DEBIAN_LIB));
    }
    for tree in trees {
        let env = StoreEnv::for_nix_store();
        let path = env.add(&tree);
        let chroot = scratch_dir("nix-chroot");
        let (nix_path, nix_copy) = nix_add(&tree, chroot.path());
        assert_eq!(path, nix_path);
        // Only the generated tree has bin/ with programs to run.
        let exec_checks = tree.join("bin/hello.sh").exists();
        let compare = compare_view_script(&tree, &path, &nix_copy, exec_checks);
        let script = format!(
            "{}\n{}\ngrep -q ' /nix/store ' /proc/mounts && echo mounted-fuse || echo not-a-mount\n",
            start_view_script(view),
            compare
        );
        let out = in_namespace_ok(&script, &env.vars());
        assert!(out.contains("view matches"), "{out}");
        assert_eq!(out.contains("executables ran"), exec_checks, "{out}");
        match view {
            "fuse" | "fuse-passthrough" => assert!(
                out.contains("mounted-fuse"),
                "FUSE view was not a mount: {out}"
            ),
            _ => assert!(
                out.contains("not-a-mount"),
                "materialised view was a mount: {out}"
            ),
        }
        eprintln!(
            "{view} view of {}: {}",
            tree.display(),
            out.lines().find(|l| l.starts_with("listing")).unwrap_or("")
        );
    }
}

#[test]
fn fuse_view_matches_tree_and_nix() {
    view_matches_tree("fuse");
}

#[test]
fn fuse_passthrough_view_matches_tree_and_nix() {
    view_matches_tree("fuse-passthrough");
}

#[test]
fn materialised_view_matches_tree_and_nix() {
    view_matches_tree("materialised");
}

/// The block holding a small file of the generated tree and one chunk of its largest file.
fn victims(env: &StoreEnv, tree: &Path, store_path: &str) -> (String, PathBuf, String, PathBuf) {
    use pkgchain_dag::{Cid, Codec};
    let small = tree.join("bin/hello.sh");
    let small_cid = Cid::of(Codec::Raw, &std::fs::read(&small).expect("small file"));
    // The second chunk of the largest file (a multi-block file, read through this process).
    let holder = walk_files(tree)
        .into_iter()
        .filter(|p| !p.is_symlink())
        .max_by_key(|p| p.metadata().map(|m| m.len()).unwrap_or(0))
        .expect("a file");
    let data = std::fs::read(&holder).expect("largest file");
    let mut chunks = Vec::new();
    let mut chunker = pkgchain_dag::chunker::Chunker::new(data.len() as u64);
    let mut collect = |c: &[u8]| -> Result<(), ()> {
        chunks.push(Cid::of(Codec::Raw, c).to_string());
        Ok(())
    };
    chunker.push(&data, &mut collect).expect("chunk");
    chunker.finish(&mut collect).expect("chunk");
    assert!(
        chunks.len() > 1,
        "the largest file must span several blocks"
    );
    let blocks = stdout_of(env.pkgchain().args(["store", "blocks", store_path]));
    assert!(
        blocks.contains(&chunks[1]),
        "chunk {} not among the path's blocks",
        chunks[1]
    );
    let chunk = (chunks[1].clone(),);
    let rel = holder.strip_prefix(tree).expect("in tree").to_owned();
    (
        small_cid.to_string(),
        PathBuf::from(store_path).join("bin/hello.sh"),
        chunk.0,
        PathBuf::from(store_path).join(rel),
    )
}

fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                pending.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn flip_byte(block_file: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut perms = std::fs::metadata(block_file).expect("block").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(block_file, perms).expect("chmod");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(block_file)
        .expect("open block");
    let len = f.metadata().expect("len").len();
    let at = len / 2;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.read_exact(&mut b).expect("read");
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&b).expect("write");
}

fn corruption(view: &str) {
    if !prerequisites(&["unshare"]) {
        return;
    }
    let tree = generated_tree(TreeSpec::from_env());
    let env = StoreEnv::for_nix_store();
    let path = env.add(&tree);
    let (small_cid, small_file, chunk_cid, big_file) = victims(&env, &tree, &path);
    let blocks = env.blocks_dir();
    for cid in [&small_cid, &chunk_cid] {
        let rel = format!("{}/{cid}", &cid[cid.len() - 3..cid.len() - 1]);
        flip_byte(&blocks.join(rel));
    }
    let start = if view != "materialised" {
        start_view_script(view)
    } else {
        // A corrupt path must not be materialised: wait for the view to give up on it.
        r#"
"$PKGCHAIN" store mount --view materialised --no-ipfs > "$NIX_STATE_DIR/mount.log" 2>&1 &
mount_pid=$!
trap 'kill -TERM $mount_pid 2>/dev/null; wait $mount_pid || true' EXIT
for i in $(seq 1 300); do grep -q 'cannot materialise' "$NIX_STATE_DIR/mount.log" && break; sleep 0.1; done
grep 'cannot materialise' "$NIX_STATE_DIR/mount.log"
echo "store dir entries: $(ls -A /nix/store | grep -v '^\.' | wc -l)"
"#
        .to_owned()
    };
    let script = format!(
        r#"{start}
for f in '{small}' '{big}'; do
  if err=$(cat "$f" 2>&1 >/dev/null); then echo "READ-SUCCEEDED $f"; else echo "READ-FAILED $f: $err"; fi
done
"#,
        small = small_file.display(),
        big = big_file.display()
    );
    let out = in_namespace(&script, &env.vars());
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{view}: {stdout}");
    if view != "materialised" {
        assert_eq!(
            stdout.matches("Input/output error").count(),
            2,
            "both corrupt files must fail with EIO through FUSE:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        // Materialising checks every block as it writes: a corrupt path is never materialised.
        assert!(
            stdout.contains("is corrupt"),
            "the view must say why:\n{stdout}"
        );
        assert!(stdout.contains("store dir entries: 0"), "{stdout}");
        assert!(!stdout.contains("READ-SUCCEEDED"), "{stdout}");
    }
    let verify = env
        .pkgchain()
        .args(["store", "verify"])
        .output()
        .expect("verify");
    let report = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !verify.status.success(),
        "verify must fail on corruption:\n{report}"
    );
    let base = path.trim_start_matches("/nix/store/");
    for cid in [&small_cid, &chunk_cid] {
        assert!(
            report
                .lines()
                .any(|l| l.contains(base) && l.contains(cid.as_str())),
            "verify must name the path and block {cid}:\n{report}"
        );
    }
}

#[test]
fn corrupt_block_is_eio_through_fuse_and_named_by_verify() {
    corruption("fuse");
}

#[test]
fn corrupt_block_is_eio_through_fuse_passthrough_and_named_by_verify() {
    corruption("fuse-passthrough");
}

#[test]
fn corrupt_block_is_named_by_verify_in_materialised_view() {
    corruption("materialised");
}

#[test]
fn killed_ingest_never_leaves_a_broken_valid_path() {
    if !prerequisites(&[]) {
        return;
    }
    let tree = generated_tree(TreeSpec::from_env());
    // How long a full ingest takes here, to spread the kills over it.
    let probe = StoreEnv::new();
    let t0 = std::time::Instant::now();
    probe.add(&tree);
    let full = t0.elapsed();
    let mut rng = pkgchain_tests_nixpkgs::Rng::new(42);
    let mut completed = 0;
    for round in 0..20 {
        let env = StoreEnv::new();
        // A path that was valid before the crash must survive it.
        let before = env.add(Path::new(DEBIAN_DOC).join("bash").as_path());
        let delay = full.mul_f64((rng.below(1000) as f64 / 1000.0) * 1.1);
        let mut child = env
            .pkgchain()
            .args(["store", "add"])
            .arg(&tree)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn add");
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if status.success() {
            completed += 1;
        }
        let verify = env
            .pkgchain()
            .args(["store", "verify"])
            .output()
            .expect("verify");
        assert!(
            verify.status.success(),
            "round {round} (kill after {delay:?}): verify failed:\n{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let stats = stdout_of(env.pkgchain().args(["store", "stats", "--json"]));
        assert!(stats.contains("\"paths\":"), "{stats}");
        assert!(
            run_ok(env.pkgchain().args(["store", "ls", &before]))
                .status
                .success(),
            "the earlier path must stay readable"
        );
        // The interrupted add can be completed, and everything then verifies.
        env.add(&tree);
        run_ok(env.pkgchain().args(["store", "verify"]));
        let staging = env.blocks_dir().join(".tmp");
        let leftovers = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
        assert_eq!(leftovers, 0, "round {round}: staging not cleaned up");
        eprintln!(
            "round {round}: killed after {delay:?} (full ingest {full:?}), completed before kill: {}",
            status.success()
        );
    }
    eprintln!("{completed} of 20 ingests had completed before their kill");
}

#[test]
fn fuse_mount_is_gone_after_sigterm_and_after_sigkill() {
    if !prerequisites(&["unshare", "fusermount3"]) {
        return;
    }
    let env = StoreEnv::for_nix_store();
    env.add(Path::new(DEBIAN_DOC).join("bash").as_path());
    for signal in ["TERM", "KILL"] {
        let script = format!(
            r#"
"$PKGCHAIN" store mount --view fuse > /dev/null 2>&1 &
pid=$!
for i in $(seq 1 100); do grep -q ' /nix/store fuse' /proc/mounts && break; sleep 0.1; done
grep -q ' /nix/store fuse' /proc/mounts
kill -{signal} $pid
wait $pid || true
# After a SIGKILL the unmount watcher detaches both views (/nix/store and /ipfs/store) once
# the process is gone: wait (bounded) until neither is left.
for i in $(seq 1 100); do grep -q ' fuse.pkgchain ' /proc/mounts || break; sleep 0.1; done
if grep -q ' fuse.pkgchain ' /proc/mounts; then echo STALE; grep pkgchain /proc/mounts; else echo CLEAN; fi
"#
        );
        let out = in_namespace_ok(&script, &env.vars());
        assert!(out.contains("CLEAN"), "after SIG{signal}: {out}");
    }
}

#[test]
fn fuse_view_shows_paths_added_while_mounted() {
    if !prerequisites(&["unshare"]) {
        return;
    }
    let env = StoreEnv::for_nix_store();
    env.add(Path::new(DEBIAN_DOC).join("bash").as_path());
    let extra = scratch_dir("extra");
    std::fs::write(extra.path().join("greeting"), b"added while mounted\n").expect("file");
    let script = format!(
        r#"{start}
ls /nix/store > /dev/null   # the kernel now holds the store directory's listing
new=$("$PKGCHAIN" store add '{extra}')
# A lookup of the new path works at once (negative lookups are not cached) ...
[ "$(cat "$new/greeting")" = "added while mounted" ]
# ... and the listing shows it once the watcher has invalidated it.
for i in $(seq 1 50); do ls /nix/store | grep -q "$(basename "$new")" && break; sleep 0.1; done
ls /nix/store | grep -q "$(basename "$new")"
echo "listing updated"
"#,
        start = start_view_script("fuse"),
        extra = extra.path().display()
    );
    let out = in_namespace_ok(&script, &env.vars());
    assert!(out.contains("listing updated"), "{out}");
}
