//! The end-to-end harness: runs package chain's binaries and the real Nix tools side by side.
//!
//! Tests in `tests/` use these helpers to
//! * locate the `pkgchain` binary built in the same `cargo test` run,
//! * give each test a private store (store directory, state directory, block directory under
//!   one temporary directory, or the default `/nix/store` inside a private mount namespace),
//! * generate deterministic test trees ([`TreeSpec`]),
//! * run shell scripts in a private mount namespace (`unshare --mount`), where a tmpfs hides the
//!   machine's `/nix` so our FUSE view can be mounted at the real `/nix/store`,
//! * drive the real Nix (Debian's Nix 2.8 at `/usr/bin`, and Nix 2.34 from a Debian sid chroot
//!   when present) as the reference.
//!
//! Missing prerequisites (root, the Nix tools, `unshare`) fail the test with a message saying
//! what to install, unless `PKGCHAIN_E2E=skip` is set, in which case the test prints that it
//! was skipped.

pub mod scenario;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where `cargo test` put the binaries of this workspace (`target/<profile>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned()
}

/// A binary of this workspace's build (`target/<profile>/<name>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let bin = target_dir().join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` so the daemon crate's binaries are built",
        bin.display()
    );
    bin
}

/// The `pkgchain` binary of this build.
pub fn pkgchain_bin() -> PathBuf {
    workspace_bin("pkgchain")
}

/// The `pkgchain-daemon` binary of this build.
pub fn daemon_bin() -> PathBuf {
    workspace_bin("pkgchain-daemon")
}

/// The value of the first `KEY=...` line of a script's output (panics, showing the output,
/// when there is none).
pub fn value<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

/// Whether prerequisites may be skipped (`PKGCHAIN_E2E=skip`).
pub fn skipping_allowed() -> bool {
    std::env::var("PKGCHAIN_E2E").is_ok_and(|v| v == "skip")
}

/// Checks that we run as root with the given tools on `PATH`. Returns `false` (after printing
/// why) when the test should be skipped; panics when prerequisites are missing and skipping
/// was not asked for.
pub fn prerequisites(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !rustix_is_root() {
        missing.push("root (FUSE mounts and private mount namespaces)".to_owned());
    }
    for t in tools {
        if which(t).is_none() {
            missing.push(format!("`{t}`"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "missing: {} (install with scripts/install-test-deps.sh)",
        missing.join(", ")
    );
    if skipping_allowed() {
        eprintln!("skipped: {msg}");
        false
    } else {
        panic!("{msg}; set PKGCHAIN_E2E=skip to skip end-to-end tests");
    }
}

fn rustix_is_root() -> bool {
    // Avoid a dependency for one call: /proc/self/status has the effective uid.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Finds a program on `PATH`.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a command and returns its output; panics with stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Standard output of a successful command, trimmed.
pub fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout)
        .trim()
        .to_owned()
}

/// A private store: state and blocks in a temporary directory.
pub struct StoreEnv {
    /// Holds everything; removed on drop.
    pub root: tempfile::TempDir,
    /// The store directory paths are computed for (and where views are served).
    pub store_dir: PathBuf,
    /// `NIX_STATE_DIR`.
    pub state_dir: PathBuf,
    /// `PKGCHAIN_IPFS_DIR`.
    pub ipfs_dir: PathBuf,
}

impl StoreEnv {
    /// A store whose store directory is inside the temporary directory.
    pub fn new() -> StoreEnv {
        let root = scratch_dir("store");
        let store_dir = root.path().join("store");
        StoreEnv::with_store_dir(root, store_dir)
    }

    /// A store whose paths are computed for `/nix/store` (so they can be compared with what
    /// Nix prints); nothing is written there unless a view is served inside a namespace.
    pub fn for_nix_store() -> StoreEnv {
        StoreEnv::with_store_dir(scratch_dir("store"), PathBuf::from("/nix/store"))
    }

    fn with_store_dir(root: tempfile::TempDir, store_dir: PathBuf) -> StoreEnv {
        let state_dir = root.path().join("var");
        let ipfs_dir = root.path().join("ipfs");
        StoreEnv {
            root,
            store_dir,
            state_dir,
            ipfs_dir,
        }
    }

    /// The environment variables that point `pkgchain` at this store.
    pub fn vars(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("NIX_STORE_DIR", self.store_dir.clone()),
            ("NIX_STATE_DIR", self.state_dir.clone()),
            ("PKGCHAIN_IPFS_DIR", self.ipfs_dir.clone()),
        ]
    }

    /// `pkgchain` with this store's environment.
    pub fn pkgchain(&self) -> Command {
        let mut c = Command::new(pkgchain_bin());
        c.envs(self.vars());
        c
    }

    /// `pkgchain store add PATH`; returns the printed store path.
    pub fn add(&self, tree: &Path) -> String {
        stdout_of(self.pkgchain().args(["store", "add"]).arg(tree))
    }

    /// The block directory.
    pub fn blocks_dir(&self) -> PathBuf {
        self.ipfs_dir.join("blocks")
    }
}

impl Default for StoreEnv {
    fn default() -> Self {
        StoreEnv::new()
    }
}

/// A temporary directory on the disk (not tmpfs), so hard links to blocks and timings mean
/// what they do on a real machine.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let base = target_dir().join("e2e-scratch");
    fs::create_dir_all(&base).expect("scratch base");
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in(base)
        .expect("scratch dir")
}

/// A python3 HTTP server on a free loopback port, serving a directory (plain HTTP or HTTPS);
/// killed on drop.
pub struct HttpServer {
    child: std::process::Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl HttpServer {
    /// Starts the server on `dir` and waits (at most 20 s) until it accepts connections.
    pub fn start(dir: &Path) -> HttpServer {
        HttpServer::python(dir, Stdio::null())
    }

    /// [`HttpServer::start`], with python's log of each request (`"GET /path HTTP/1.1" 200`)
    /// written to `log`.
    pub fn start_logged(dir: &Path, log: &Path) -> HttpServer {
        HttpServer::python(dir, fs::File::create(log).expect("server log").into())
    }

    /// `python3 -m http.server` serving `dir`, its log going to `log`.
    fn python(dir: &Path, log: Stdio) -> HttpServer {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stderr(log);
        HttpServer::spawn(cmd, port)
    }

    /// Serves `dir` over HTTPS (`servers/https_cache.py`) with the certificate chain `cert`
    /// and its key `key`, asking every request for the basic login `user:password` when
    /// given. Each request is logged as "STATUS PATH" (a failed handshake as "failed ...")
    /// to `log`.
    pub fn start_tls(
        dir: &Path,
        cert: &Path,
        key: &Path,
        login: Option<&str>,
        log: &Path,
    ) -> HttpServer {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("servers/https_cache.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg(port.to_string())
            .arg(dir)
            .arg(cert)
            .arg(key)
            .args(login)
            .stderr(fs::File::create(log).expect("server log"));
        HttpServer::spawn(cmd, port)
    }

    fn spawn(mut cmd: Command, port: u16) -> HttpServer {
        use std::time::{Duration, Instant};
        let child = cmd
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting a python3 HTTP server");
        let server = HttpServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the HTTP server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory under the target directory for a scenario's inputs, readable by every
/// user whatever the umask (the untrusted user and the chroot read it).
pub fn readable_input_dir(prefix: &str) -> tempfile::TempDir {
    let input = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(target_dir())
        .expect("tempdir");
    let mut perms = std::fs::metadata(input.path()).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(input.path(), perms).expect("chmod");
    input
}

/// Runs `script` with bash (`-euo pipefail`) in a private mount namespace with `vars` set.
/// A tmpfs is mounted on `/nix` first, so the machine's store is never visible or touched.
pub fn in_namespace(script: &str, vars: &[(&str, PathBuf)]) -> Output {
    let full = format!(
        "mount -t tmpfs -o mode=755 pkgchain-test /nix\nmkdir -p /nix/store /nix/var/nix\n{script}"
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "bash",
        "-euo",
        "pipefail",
        "-c",
    ])
    .arg(full)
    .env("PKGCHAIN", pkgchain_bin())
    .stdin(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("running unshare")
}

/// Like [`in_namespace`] but panics with the script's output unless it succeeds.
pub fn in_namespace_ok(script: &str, vars: &[(&str, PathBuf)]) -> String {
    let out = in_namespace(script, vars);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "namespace script failed with {}:\n--- script ---\n{script}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The shape of a generated test tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeSpec {
    /// Seeds all content and structure.
    pub seed: u64,
    /// Approximate total size of file contents.
    pub total_bytes: u64,
    /// Approximate number of regular files.
    pub files: usize,
}

impl TreeSpec {
    /// The tree: 1 GiB in about 20,000 files.
    pub const FULL: TreeSpec = TreeSpec {
        seed: 1,
        total_bytes: 1 << 30,
        files: 20_000,
    };

    /// The spec the suite uses: [`TreeSpec::FULL`] unless `PKGCHAIN_E2E_TREE_MB` and
    /// `PKGCHAIN_E2E_TREE_FILES` shrink it (for quick local runs).
    pub fn from_env() -> TreeSpec {
        let mb = std::env::var("PKGCHAIN_E2E_TREE_MB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        let files = std::env::var("PKGCHAIN_E2E_TREE_FILES")
            .ok()
            .and_then(|v| v.parse().ok());
        TreeSpec {
            seed: 1,
            total_bytes: mb.map_or(TreeSpec::FULL.total_bytes, |m| m << 20),
            files: files.unwrap_or(TreeSpec::FULL.files),
        }
    }
}

/// A small deterministic PRNG (xorshift64*), so trees are the same on every machine.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Returns a generated tree for `spec`, creating it under `target/e2e-trees/` once and reusing
/// it afterwards (a marker file records completion).
pub fn generated_tree(spec: TreeSpec) -> PathBuf {
    let dir = target_dir().join("e2e-trees").join(format!(
        "seed{}-{}b-{}f",
        spec.seed, spec.total_bytes, spec.files
    ));
    let tree = dir.join("tree");
    let marker = dir.join("complete");
    if marker.exists() {
        return tree;
    }
    let _lock = TreeLock::acquire(&dir);
    if marker.exists() {
        return tree;
    }
    if tree.exists() {
        fs::remove_dir_all(&tree).expect("removing a half-generated tree");
    }
    generate_tree(&tree, spec);
    fs::write(&marker, b"").expect("marker");
    tree
}

struct TreeLock(PathBuf);

impl TreeLock {
    fn acquire(dir: &Path) -> TreeLock {
        fs::create_dir_all(dir).expect("tree dir");
        let lock = dir.join("lock");
        loop {
            match fs::create_dir(&lock) {
                Ok(()) => return TreeLock(lock),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for TreeLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// Writes a tree with what real store paths hold: nested directories (one chain 100 levels
/// deep), files of log-distributed sizes (a few of 40-100 MiB, so files get multi-level block
/// trees), empty files, executables (shell scripts and a copy of a real ELF binary),
/// duplicated contents, symlinks (relative, absolute, dangling, to directories), empty
/// directories and unusual names.
pub fn generate_tree(root: &Path, spec: TreeSpec) {
    let mut rng = Rng::new(spec.seed);
    fs::create_dir_all(root).expect("tree root");
    // Directories: a random forest plus one deep chain.
    let mut dirs: Vec<PathBuf> = vec![root.to_owned()];
    let ndirs = (spec.files / 20).max(4);
    for i in 0..ndirs {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        let d = parent.join(format!("dir-{i:05}"));
        fs::create_dir_all(&d).expect("dir");
        dirs.push(d);
    }
    let mut deep = root.join("deep");
    for level in 0..100 {
        deep = deep.join(format!("l{level}"));
    }
    fs::create_dir_all(&deep).expect("deep chain");
    fs::write(
        deep.join("bottom.txt"),
        b"the bottom of a 100-level chain\n",
    )
    .expect("bottom");
    for i in 0..5 {
        fs::create_dir_all(root.join(format!("empty-dir-{i}"))).expect("empty dir");
    }
    fs::create_dir_all(root.join("empty-dir-0/nested-empty")).expect("nested empty dir");

    // File sizes: log-uniform up to 4 MiB, scaled to the total after the big files.
    let big_files = [100u64 << 20, 60 << 20, 40 << 20];
    let big_total: u64 = if spec.total_bytes >= 512 << 20 {
        big_files.iter().sum()
    } else {
        0
    };
    let mut sizes: Vec<u64> = (0..spec.files)
        .map(|i| {
            if i % 50 == 0 {
                0
            } else {
                let exp = rng.below(22) as u32; // up to 4 MiB
                (1u64 << exp) + rng.below(1u64 << exp)
            }
        })
        .collect();
    let sum: u64 = sizes.iter().sum::<u64>().max(1);
    let budget = spec.total_bytes.saturating_sub(big_total);
    for s in &mut sizes {
        *s = (*s as u128 * budget as u128 / sum as u128) as u64;
    }
    let mut buf = Vec::new();
    let mut written: Vec<PathBuf> = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let dir = &dirs[rng.below(dirs.len() as u64) as usize];
        let name = match i % 97 {
            0 => format!("with space {i}.txt"),
            1 => format!("üñíçødé-{i}"),
            2 => format!("odd=+#%@,;'\"-{i}"),
            _ => format!("file-{i:05}.dat"),
        };
        let path = dir.join(name);
        // Every 40th file repeats an earlier one's contents (deduplication).
        if i % 40 == 39 && !written.is_empty() {
            let src = &written[rng.below(written.len() as u64) as usize];
            fs::copy(src, &path).expect("duplicate file");
        } else {
            buf.resize(*size as usize, 0);
            rng.fill(&mut buf);
            fs::write(&path, &buf).expect("file");
        }
        if i % 10 == 3 {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod +x");
        }
        written.push(path);
    }
    for (i, size) in big_files
        .iter()
        .enumerate()
        .take(if big_total > 0 { 3 } else { 0 })
    {
        let mut f = fs::File::create(root.join(format!("big-{i}.bin"))).expect("big file");
        let mut left = *size;
        buf.resize(1 << 20, 0);
        while left > 0 {
            rng.fill(&mut buf);
            let n = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..n]).expect("big file write");
            left -= n as u64;
        }
    }
    // Executables that run.
    let bin = root.join("bin");
    fs::create_dir_all(&bin).expect("bin");
    fs::write(
        bin.join("hello.sh"),
        b"#!/bin/sh\necho hello from the store\n",
    )
    .expect("script");
    fs::set_permissions(bin.join("hello.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::copy("/bin/echo", bin.join("echo")).expect("copying an ELF binary");
    // Symlinks.
    let first = written.first().cloned().expect("at least one file");
    let rel = first
        .strip_prefix(root)
        .expect("inside the tree")
        .to_owned();
    symlink(Path::new("..").join(&rel), bin.join("relative-link")).expect("relative link");
    symlink(
        "/nix/store/00000000000000000000000000000000-absent",
        root.join("absolute-link"),
    )
    .expect("absolute link");
    symlink("does/not/exist", root.join("dangling-link")).expect("dangling link");
    symlink("bin", root.join("link-to-dir")).expect("dir link");
    for (i, d) in dirs.iter().enumerate().skip(1).step_by(7) {
        symlink(format!("../link-target-{i}"), d.join(format!("link-{i}"))).expect("link");
    }
    // A name of the maximum length.
    fs::write(root.join("n".repeat(255)), b"long name\n").expect("long name");
}

/// SHA-256 (hex) and length of a command's standard output, streamed.
pub fn sha256_of_output(cmd: &mut Command) -> (String, u64) {
    use sha2::Digest;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = std::io::Read::read(&mut stdout, &mut buf).expect("reading output");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let out = child.wait_with_output().expect("waiting");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (data_encoding::HEXLOWER.encode(&hasher.finalize()), len)
}
