//! The privileged side's half of the set-up: a fresh root directory for one build, holding
//! only mount points for the input closure and host paths, the store directory the builder
//! writes its outputs into, the build directory, `/dev`, `/proc` and Nix's synthesized `/etc`
//! files. Everything is created in a directory this process has just made and no builder has
//! seen, so nothing here can be raced.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use crate::SandboxError;
use crate::spec::{Bind, IdMapping};

/// A host path made visible inside the sandbox (`sandbox-paths`, `extra-sandbox-paths`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath {
    /// Where it appears inside.
    pub inside: PathBuf,
    /// What it is outside.
    pub outside: PathBuf,
    /// Skipped silently when the outside path does not exist (`path?` in Nix's syntax).
    pub optional: bool,
}

impl HostPath {
    /// Parses one entry of `sandbox-paths`: `path`, `inside=outside`, either followed by `?`.
    pub fn parse(entry: &str) -> HostPath {
        let (entry, optional) = match entry.strip_suffix('?') {
            Some(e) => (e, true),
            None => (entry, false),
        };
        let (inside, outside) = entry.split_once('=').unwrap_or((entry, entry));
        HostPath {
            inside: PathBuf::from(inside),
            outside: PathBuf::from(outside),
            optional,
        }
    }
}

/// What goes into a build's root.
#[derive(Debug, Clone)]
pub struct RootPlan {
    /// The store directory (the same path inside and outside).
    pub store_dir: PathBuf,
    /// The input closure: absolute store paths.
    pub inputs: Vec<PathBuf>,
    /// Host paths.
    pub host_paths: Vec<HostPath>,
    /// The build directory inside (Nix's `sandbox-build-dir`, `/build`).
    pub build_dir: PathBuf,
    /// The id mapping of the builder's user namespace.
    pub ids: IdMapping,
    /// Loopback only (false for fixed-output derivations, which see the host's network).
    pub private_network: bool,
}

/// A prepared root.
#[derive(Debug, Clone)]
pub struct PreparedRoot {
    /// The root directory.
    pub dir: PathBuf,
    /// The binds for [`crate::spec::SandboxSpec::binds`].
    pub binds: Vec<Bind>,
    /// The build directory, outside path.
    pub build_dir_outside: PathBuf,
    /// The sandbox's store directory (where outputs appear), outside path.
    pub store_dir_outside: PathBuf,
}

/// Device nodes bound from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Creates the root at `dir`, which must not exist yet.
pub fn prepare(dir: &Path, plan: &RootPlan) -> Result<PreparedRoot, SandboxError> {
    let at = |what: &str, e: io::Error| SandboxError::Prepare(format!("{what}: {e}"));
    let (builder_uid, builder_gid) = plan.ids.builder_ids_outside();
    mkdir(dir, 0o755).map_err(|e| at(&format!("creating {}", dir.display()), e))?;
    let mut binds = Vec::new();

    // The store directory: the builder creates its outputs here (group-writable, sticky).
    let store_dir_outside = inside(dir, &plan.store_dir)?;
    make_parents(dir, &store_dir_outside)?;
    mkdir(&store_dir_outside, 0o1775).map_err(|e| at("creating the store directory", e))?;
    chown(&store_dir_outside, None, Some(builder_gid))?;
    for input in &plan.inputs {
        if !input.starts_with(&plan.store_dir) {
            return Err(SandboxError::Prepare(format!(
                "input {} is not in the store",
                input.display()
            )));
        }
        add_bind(dir, input, input, true, false, &mut binds)?;
    }

    // The build directory, the builder's own.
    let build_dir_outside = inside(dir, &plan.build_dir)?;
    make_parents(dir, &build_dir_outside)?;
    mkdir(&build_dir_outside, 0o700).map_err(|e| at("creating the build directory", e))?;
    chown(&build_dir_outside, Some(builder_uid), Some(builder_gid))?;

    // /dev: host devices, a private devpts and shm (mounted by the stage inside), links.
    let dev = dir.join("dev");
    mkdir(&dev, 0o755).map_err(|e| at("creating /dev", e))?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        add_bind(dir, &host, &host, false, true, &mut binds)?;
    }
    for sub in ["pts", "shm"] {
        mkdir(&dev.join(sub), 0o755).map_err(|e| at("creating /dev subdirectories", e))?;
    }
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(|e| at("creating /dev links", e))?;
    }
    mkdir(&dir.join("proc"), 0o555).map_err(|e| at("creating /proc", e))?;

    // /etc as Nix synthesizes it; a fixed-output build sees the host's name resolution.
    let etc = dir.join("etc");
    mkdir(&etc, 0o755).map_err(|e| at("creating /etc", e))?;
    let (uid, gid) = plan.ids.builder_ids_inside();
    let home = plan.build_dir.display();
    let passwd = format!(
        "root:x:0:0:Nix build user:{home}:/noshell\n\
         nixbld:x:{uid}:{gid}:Nix build user:{home}:/noshell\n\
         nobody:x:65534:65534:Nobody:/:/noshell\n"
    );
    let group = format!("root:x:0:\nnixbld:!:{gid}:\nnogroup:x:65534:\n");
    write_file(&etc.join("passwd"), passwd.as_bytes())?;
    write_file(&etc.join("group"), group.as_bytes())?;
    let mut hosts_from_host = false;
    if !plan.private_network {
        for name in ["resolv.conf", "services", "hosts"] {
            let host = Path::new("/etc").join(name);
            if host.exists() {
                add_bind(dir, &host, &host, true, true, &mut binds)?;
                hosts_from_host |= name == "hosts";
            }
        }
    }
    if !hosts_from_host {
        write_file(&etc.join("hosts"), b"127.0.0.1 localhost\n::1 localhost\n")?;
    }

    for host in &plan.host_paths {
        match fs::symlink_metadata(&host.outside) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && host.optional => continue,
            Err(e) => {
                return Err(SandboxError::Prepare(format!(
                    "sandbox path {}: {e}",
                    host.outside.display()
                )));
            }
            Ok(_) => {}
        }
        // As Nix does: a symlink is recreated, not followed.
        add_bind(dir, &host.outside, &host.inside, true, false, &mut binds)?;
    }

    Ok(PreparedRoot {
        dir: dir.to_owned(),
        binds,
        build_dir_outside,
        store_dir_outside,
    })
}

/// Removes a root after its build: nothing is mounted in it in this mount namespace (the
/// sandbox's mounts died with its namespace), and the builder's processes are gone.
pub fn remove(dir: &Path) -> Result<(), SandboxError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            // An ordinary user cannot remove entries of directories the builder made
            // read-only: make every directory writable, then try again.
            make_dirs_writable(dir);
            fs::remove_dir_all(dir).map_err(|e| {
                SandboxError::Prepare(format!(
                    "removing {}: {e} (first attempt: {first})",
                    dir.display()
                ))
            })
        }
    }
}

/// Makes every directory beneath `dir` (and `dir`) writable by its owner, through directory
/// descriptors opened without following symlinks: nothing a builder left can redirect it.
/// A directory is opened when its turn comes, so the descriptors open at once are those of
/// its ancestors, not of every directory waiting.
fn make_dirs_writable(dir: &Path) {
    use std::ffi::CString;
    use std::os::fd::OwnedFd;
    use std::rc::Rc;

    use rustix::fs::{Dir, FileType, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(top) = rustix::fs::open(dir, flags, Mode::empty()) else {
        return;
    };
    let mut opened: Vec<OwnedFd> = vec![top];
    let mut waiting: Vec<(Rc<OwnedFd>, CString)> = Vec::new();
    loop {
        for fd in opened.drain(..) {
            let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700));
            let Ok(mut entries) = Dir::read_from(&fd) else {
                continue;
            };
            let fd = Rc::new(fd);
            while let Some(Ok(entry)) = entries.read() {
                let name = entry.file_name();
                if entry.file_type() == FileType::Directory
                    && name.to_bytes() != b"."
                    && name.to_bytes() != b".."
                {
                    waiting.push((Rc::clone(&fd), name.to_owned()));
                }
            }
        }
        let Some((parent, name)) = waiting.pop() else {
            break;
        };
        if let Ok(child) = rustix::fs::openat(&*parent, name.as_c_str(), flags, Mode::empty()) {
            opened.push(child);
        }
    }
}

/// `dir` + the absolute, `..`-free path `inner`.
fn inside(dir: &Path, inner: &Path) -> Result<PathBuf, SandboxError> {
    let mut out = dir.to_owned();
    let mut saw_root = false;
    for c in inner.components() {
        match c {
            Component::RootDir => saw_root = true,
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(SandboxError::Prepare(format!(
                    "path inside the sandbox {} must not contain '..'",
                    inner.display()
                )));
            }
        }
    }
    if !saw_root {
        return Err(SandboxError::Prepare(format!(
            "path inside the sandbox {} must be absolute",
            inner.display()
        )));
    }
    Ok(out)
}

fn make_parents(dir: &Path, path: &Path) -> Result<(), SandboxError> {
    if let Some(parent) = path.parent()
        && parent.starts_with(dir)
    {
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| {
                    SandboxError::Prepare(format!("creating {}: {e}", parent.display()))
                })?;
        }
    }
    Ok(())
}

/// A mount point like `source` (directory, empty file, or the same symlink, which needs no
/// mount) at `target` inside, and its bind.
fn add_bind(
    dir: &Path,
    source: &Path,
    target: &Path,
    read_only: bool,
    follow: bool,
    binds: &mut Vec<Bind>,
) -> Result<(), SandboxError> {
    let meta = if follow {
        fs::metadata(source)
    } else {
        fs::symlink_metadata(source)
    }
    .map_err(|e| SandboxError::Prepare(format!("{}: {e}", source.display())))?;
    let point = inside(dir, target)?;
    make_parents(dir, &point)?;
    let made = if meta.file_type().is_symlink() {
        let link = fs::read_link(source)
            .map_err(|e| SandboxError::Prepare(format!("{}: {e}", source.display())))?;
        symlink(link, &point)
    } else if meta.is_dir() {
        mkdir(&point, 0o755)
    } else {
        fs::File::create(&point).map(drop)
    };
    match made {
        Ok(()) => {}
        // Two host paths may share a parent (`/usr` and `/usr/lib`): the second one's
        // mount point may already exist as the right kind.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(SandboxError::Prepare(format!(
                "creating the mount point {}: {e}",
                point.display()
            )));
        }
    }
    if !meta.file_type().is_symlink() {
        binds.push(Bind {
            source: source.to_owned(),
            target: target.to_owned(),
            read_only,
        });
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().mode(mode).create(path)?;
    // The umask may have cleared bits (the sticky bit and group write matter here).
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), SandboxError> {
    fs::write(path, data)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o644)))
        .map_err(|e| SandboxError::Prepare(format!("writing {}: {e}", path.display())))
}

fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), SandboxError> {
    if !rustix::process::geteuid().is_root() {
        // An ordinary user's builder runs as that user: nothing to hand over.
        return Ok(());
    }
    std::os::unix::fs::chown(path, uid, gid)
        .map_err(|e| SandboxError::Prepare(format!("chown {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_made_writable_without_following_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
        fs::create_dir_all(root.join("wide/1")).expect("mkdir");
        fs::create_dir_all(root.join("wide/2")).expect("mkdir");
        fs::create_dir(&outside).expect("mkdir");
        symlink(&outside, root.join("a/link")).expect("symlink");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        let set = |p: &Path, m: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(m)).expect("chmod");
        };
        for d in ["a/b/c", "a/b", "a", "wide/1", "wide/2", "wide"] {
            set(&root.join(d), 0o500);
        }
        set(&outside, 0o500);
        make_dirs_writable(&root);
        for d in ["", "a", "a/b", "a/b/c", "wide", "wide/1", "wide/2"] {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
        assert_eq!(
            mode(&outside),
            0o500,
            "the symlink's target must not change"
        );
    }

    #[test]
    fn host_paths_parse_as_nix_writes_them() {
        assert_eq!(
            HostPath::parse("/bin/sh=/usr/bin/dash"),
            HostPath {
                inside: "/bin/sh".into(),
                outside: "/usr/bin/dash".into(),
                optional: false
            }
        );
        assert_eq!(
            HostPath::parse("/usr?"),
            HostPath {
                inside: "/usr".into(),
                outside: "/usr".into(),
                optional: true
            }
        );
    }

    #[test]
    fn paths_inside_must_be_absolute_and_without_parent_steps() {
        let dir = Path::new("/r");
        assert_eq!(
            inside(dir, Path::new("/nix/store")).ok(),
            Some(PathBuf::from("/r/nix/store"))
        );
        assert!(inside(dir, Path::new("/nix/../etc")).is_err());
        assert!(inside(dir, Path::new("nix")).is_err());
    }

    #[test]
    fn a_prepared_root_has_the_layout_and_binds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let host = tmp.path().join("host");
        fs::create_dir_all(host.join("bin")).expect("dir");
        fs::write(host.join("bin/tool"), b"x").expect("file");
        let plan = RootPlan {
            store_dir: "/nix/store".into(),
            inputs: vec![],
            host_paths: vec![
                HostPath {
                    inside: "/bin".into(),
                    outside: host.join("bin"),
                    optional: false,
                },
                HostPath::parse("/nonexistent-sandbox-path?"),
            ],
            build_dir: "/build".into(),
            ids: IdMapping::Range { base: 872415232 },
            private_network: true,
        };
        let root = tmp.path().join("root");
        let prepared = prepare(&root, &plan).expect("prepare");
        let mode = |p: &str| {
            fs::metadata(root.join(p))
                .expect("exists")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("nix/store"), 0o1775);
        assert_eq!(mode("build"), 0o700);
        assert!(root.join("bin").is_dir());
        assert!(root.join("dev/null").is_file());
        assert_eq!(
            fs::read_link(root.join("dev/ptmx")).expect("link"),
            Path::new("pts/ptmx")
        );
        let passwd = fs::read_to_string(root.join("etc/passwd")).expect("passwd");
        assert!(passwd.contains("nixbld:x:1000:100:Nix build user:/build:/noshell"));
        assert_eq!(
            fs::read_to_string(root.join("etc/hosts")).expect("hosts"),
            "127.0.0.1 localhost\n::1 localhost\n"
        );
        let targets: Vec<_> = prepared.binds.iter().map(|b| b.target.clone()).collect();
        assert!(targets.contains(&PathBuf::from("/bin")));
        assert!(targets.contains(&PathBuf::from("/dev/null")));
        assert!(
            !targets
                .iter()
                .any(|t| t.starts_with("/nonexistent-sandbox-path"))
        );
        if rustix::process::geteuid().is_root() {
            use std::os::unix::fs::MetadataExt;
            let build = fs::metadata(root.join("build")).expect("build");
            assert_eq!(
                (build.uid(), build.gid()),
                (872415232 + 1000, 872415232 + 100)
            );
        }
        remove(&root).expect("remove");
        assert!(!root.exists());
    }
}
