//! `builtin:buildenv`: the symlink tree of a user environment (what `nix-env` installs), as
//! Nix's `buildProfile` makes it.
//!
//! Input (Nix 2.0 to 2.34 alike): `derivations` is a whitespace-separated list of groups
//! `ACTIVE PRIORITY N PATH1 ... PATHN` (`ACTIVE` is `false` for an inactive package, anything
//! else for an active one), parsed by [`pkgchain_store_model::buildenv`]; `manifest` is the
//! store path linked as `$out/manifest.nix`.
//!
//! Rules followed:
//! - active packages are linked in order of (priority, path); then the packages named in their
//!   `nix-support/propagated-user-env-packages`, round by round, with priorities 1000, 1001, ...
//!   (each package once);
//! - names starting with `.` are skipped, and so are `propagated-build-inputs`, `nix-support`,
//!   `perllocal.pod`, `info/dir`, `log`, `manifest.nix` and `manifest.json`;
//! - a directory meets a directory: merged; it meets a symlink to a directory (made for an
//!   earlier package): the symlink becomes a directory holding the links of both;
//! - a file meets a link: the lower priority number wins; equal priorities are a collision,
//!   an error naming both files;
//! - dangling symlinks in a package are skipped with a warning.
//!
//! Differences from Nix, on purpose: the walk is iterative, with bounds on depth and on the
//! number of entries (a package whose symlinks point back into itself cannot run it forever);
//! every directory read must resolve inside the store directory (the daemon runs this as root,
//! outside any sandbox, so a package's symlink to `/etc` is linked but never listed).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pkgchain_store_model::buildenv::{Package, parse_derivations};

use super::BuiltinRequest;

/// Deepest directory nesting below `$out` before the build is refused.
const MAX_DEPTH: usize = 256;

/// Most directory entries looked at before the build is refused.
const MAX_ENTRIES: u64 = 10_000_000;

/// Priority of the first propagated package (Nix's `priorityCounter`).
const PROPAGATED_PRIORITY: i64 = 1000;

/// Runs the builder.
pub(super) async fn run(
    req: &BuiltinRequest<'_>,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<(), String> {
    let out = req.output_dir("out")?;
    let derivations = req
        .var("derivations")
        .ok_or_else(|| "attribute 'derivations' missing".to_owned())?;
    let manifest = req
        .var("manifest")
        .ok_or_else(|| "attribute 'manifest' missing".to_owned())?;
    let packages = parse_derivations(&derivations).map_err(|e| e.to_string())?;
    let store_dir = PathBuf::from(req.store_dir);
    let shown_out = PathBuf::from(req.var("out").unwrap_or_default());
    let mut warnings = Vec::new();
    let built = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        std::fs::create_dir_all(&out)
            .map_err(|e| format!("creating directory '{}': {e}", out.display()))?;
        build_profile(&out, &shown_out, &store_dir, packages, &mut warnings)?;
        let link = out.join("manifest.nix");
        std::os::unix::fs::symlink(&manifest, &link)
            .map_err(|e| format!("creating symlink '{}': {e}", link.display()))?;
        Ok(warnings)
    })
    .await
    .map_err(|e| format!("buildenv task failed: {e}"))??;
    for w in built {
        log(format!("warning: {w}"));
    }
    Ok(())
}

/// Links `packages` (and what they propagate) into `out`, which exists and stands for
/// `shown_out` in messages. `warnings` receives what Nix prints as warnings.
pub(super) fn build_profile(
    out: &Path,
    shown_out: &Path,
    store_dir: &Path,
    mut packages: Vec<Package>,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let mut linker = Linker {
        out,
        shown_out,
        store_dir,
        priorities: HashMap::new(),
        entries: 0,
        warnings,
    };
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut postponed: BTreeSet<String> = BTreeSet::new();
    packages.sort_by(|a, b| (a.priority, &a.path).cmp(&(b.priority, &b.path)));
    for pkg in packages.iter().filter(|p| p.active) {
        linker.add_package(&pkg.path, pkg.priority, &mut done, &mut postponed)?;
    }
    let mut priority = PROPAGATED_PRIORITY;
    while !postponed.is_empty() {
        for path in std::mem::take(&mut postponed) {
            linker.add_package(&path, priority, &mut done, &mut postponed)?;
            priority += 1;
        }
    }
    tracing::debug!(
        links = linker.priorities.len(),
        "created the user environment"
    );
    Ok(())
}

/// One directory to link: the entries of `src` into `dst`, at `priority`.
struct Task {
    src: PathBuf,
    dst: PathBuf,
    priority: i64,
    depth: usize,
}

struct Linker<'a> {
    out: &'a Path,
    shown_out: &'a Path,
    store_dir: &'a Path,
    /// The priority of every link made, by its path in `out`.
    priorities: HashMap<PathBuf, i64>,
    entries: u64,
    warnings: &'a mut Vec<String>,
}

impl Linker<'_> {
    fn add_package(
        &mut self,
        path: &str,
        priority: i64,
        done: &mut BTreeSet<String>,
        postponed: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        if !done.insert(path.to_owned()) {
            return Ok(());
        }
        let out = self.out.to_path_buf();
        self.link_tree(PathBuf::from(path), out, priority)?;
        let propagated = Path::new(path).join("nix-support/propagated-user-env-packages");
        match std::fs::read(&propagated) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                for p in text.split([' ', '\n']).filter(|p| !p.is_empty()) {
                    if !done.contains(p) {
                        postponed.insert(p.to_owned());
                    }
                }
            }
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(format!("reading '{}': {e}", propagated.display())),
        }
        Ok(())
    }

    /// Nix's `createLinks`, with an explicit stack in place of recursion. The order in which
    /// sibling directories are visited differs from Nix's recursion only in which of several
    /// errors is met first: each task writes below its own `dst` alone.
    fn link_tree(&mut self, src: PathBuf, dst: PathBuf, priority: i64) -> Result<(), String> {
        let mut stack = vec![Task {
            src,
            dst,
            priority,
            depth: 0,
        }];
        while let Some(task) = stack.pop() {
            let mut pushed = Vec::new();
            self.link_dir(task, &mut pushed)?;
            // Reversed, so that the first one pushed is done first.
            stack.extend(pushed.into_iter().rev());
        }
        Ok(())
    }

    /// Links the entries of one directory; subdirectories to merge go to `pushed`.
    fn link_dir(&mut self, task: Task, pushed: &mut Vec<Task>) -> Result<(), String> {
        let Task {
            src,
            dst,
            priority,
            depth,
        } = task;
        if depth > MAX_DEPTH {
            return Err(format!(
                "'{}' is nested more than {MAX_DEPTH} directories deep in the user environment",
                dst.display()
            ));
        }
        self.check_in_store(&src)?;
        let names = match read_names(&src) {
            Ok(names) => names,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                self.warnings.push(format!(
                    "not including '{}' in the user environment because it's not a directory",
                    src.display()
                ));
                return Ok(());
            }
            Err(e) => return Err(format!("reading directory '{}': {e}", src.display())),
        };
        for name in names {
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(format!(
                    "the user environment has more than {MAX_ENTRIES} entries"
                ));
            }
            if name.as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            let src_file = src.join(&name);
            let dst_file = dst.join(&name);
            // Follows symlinks, as Nix's `stat`.
            let src_meta = match std::fs::metadata(&src_file) {
                Ok(m) => m,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR)
                        || e.raw_os_error() == Some(libc::ELOOP) =>
                {
                    let warning = format!("skipping dangling symlink '{}'", self.shown(&dst_file));
                    self.warnings.push(warning);
                    continue;
                }
                Err(e) => {
                    return Err(format!("getting status of '{}': {e}", src_file.display()));
                }
            };
            if is_ignored(&src_file) {
                continue;
            }
            let dst_meta = match std::fs::symlink_metadata(&dst_file) {
                Ok(m) => Some(m),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(format!(
                        "getting status of '{}': {e}",
                        self.shown(&dst_file)
                    ));
                }
            };
            if src_meta.is_dir() {
                if let Some(dst_meta) = &dst_meta {
                    if dst_meta.is_dir() {
                        pushed.push(Task {
                            src: src_file,
                            dst: dst_file,
                            priority,
                            depth: depth + 1,
                        });
                        continue;
                    }
                    if dst_meta.file_type().is_symlink() {
                        // Nix's `canonPath(dstFile, true)`: every link resolved.
                        let target = std::fs::canonicalize(&dst_file)
                            .map_err(|e| format!("resolving '{}': {e}", self.shown(&dst_file)))?;
                        let target_is_dir = std::fs::symlink_metadata(&target)
                            .map(|m| m.is_dir())
                            .unwrap_or(false);
                        if !target_is_dir {
                            return Err(format!(
                                "collision between '{}' and non-directory '{}'",
                                src_file.display(),
                                target.display()
                            ));
                        }
                        std::fs::remove_file(&dst_file)
                            .map_err(|e| format!("unlinking '{}': {e}", self.shown(&dst_file)))?;
                        std::fs::create_dir(&dst_file).map_err(|e| {
                            format!("creating directory '{}': {e}", self.shown(&dst_file))
                        })?;
                        let previous = self.priorities.get(&dst_file).copied().unwrap_or(0);
                        pushed.push(Task {
                            src: target,
                            dst: dst_file.clone(),
                            priority: previous,
                            depth: depth + 1,
                        });
                        pushed.push(Task {
                            src: src_file,
                            dst: dst_file,
                            priority,
                            depth: depth + 1,
                        });
                        continue;
                    }
                }
            } else if let Some(dst_meta) = &dst_meta {
                if dst_meta.file_type().is_symlink() {
                    let previous = self.priorities.get(&dst_file).copied().unwrap_or(0);
                    if previous == priority {
                        let existing = std::fs::read_link(&dst_file).map_err(|e| {
                            format!("reading symlink '{}': {e}", self.shown(&dst_file))
                        })?;
                        return Err(format!(
                            "Unable to build profile. There is a conflict for the following files:\n\n  {}\n  {}",
                            existing.display(),
                            src_file.display()
                        ));
                    }
                    if previous < priority {
                        continue;
                    }
                    std::fs::remove_file(&dst_file)
                        .map_err(|e| format!("unlinking '{}': {e}", self.shown(&dst_file)))?;
                } else if dst_meta.is_dir() {
                    return Err(format!(
                        "collision between non-directory '{}' and directory '{}'",
                        src_file.display(),
                        self.shown(&dst_file)
                    ));
                }
            }
            std::os::unix::fs::symlink(&src_file, &dst_file).map_err(|e| {
                format!(
                    "creating symlink '{}' to '{}': {e}",
                    self.shown(&dst_file),
                    src_file.display()
                )
            })?;
            self.priorities.insert(dst_file, priority);
        }
        Ok(())
    }

    /// Refuses to list a directory that resolves outside the store.
    fn check_in_store(&self, src: &Path) -> Result<(), String> {
        let real = match std::fs::canonicalize(src) {
            Ok(real) => real,
            // Reading it gives the error Nix would give.
            Err(_) => return Ok(()),
        };
        let store = std::fs::canonicalize(self.store_dir).unwrap_or(self.store_dir.to_path_buf());
        if real.starts_with(&store) && real != store {
            Ok(())
        } else {
            Err(format!(
                "'{}' is not in the store directory '{}'; it cannot be part of a user environment",
                src.display(),
                self.store_dir.display()
            ))
        }
    }

    /// A path inside the output, as the store path it will be (for messages).
    fn shown(&self, path: &Path) -> String {
        match path.strip_prefix(self.out) {
            Ok(rest) if rest.as_os_str().is_empty() => self.shown_out.display().to_string(),
            Ok(rest) => self.shown_out.join(rest).display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }
}

/// The names in `dir`, sorted (Nix takes them in directory order, which is arbitrary).
fn read_names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(entry?.file_name());
    }
    names.sort();
    Ok(names)
}

/// Files that never appear in a user environment.
fn is_ignored(src_file: &Path) -> bool {
    let text = src_file.as_os_str().as_encoded_bytes();
    [
        &b"/propagated-build-inputs"[..],
        b"/nix-support",
        b"/perllocal.pod",
        b"/info/dir",
        b"/log",
        b"/manifest.nix",
        b"/manifest.json",
    ]
    .iter()
    .any(|suffix| text.ends_with(suffix))
}

fn is_absent(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A fake store with packages made of `(relative path, content)`; a content starting with
    /// `->` makes a symlink, a path ending in `/` a directory.
    struct Store {
        dir: tempfile::TempDir,
    }

    impl Store {
        fn new() -> Store {
            Store {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn package(&self, name: &str, files: &[(&str, &str)]) -> String {
            let root = self.dir.path().join(name);
            std::fs::create_dir_all(&root).unwrap();
            for (path, content) in files {
                let p = root.join(path);
                if path.ends_with('/') {
                    std::fs::create_dir_all(&p).unwrap();
                    continue;
                }
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                if let Some(target) = content.strip_prefix("->") {
                    std::os::unix::fs::symlink(target, &p).unwrap();
                } else {
                    std::fs::write(&p, content).unwrap();
                }
            }
            root.display().to_string()
        }

        fn build(&self, pkgs: &[(&str, i64)]) -> (tempfile::TempDir, Result<(), String>) {
            let out = tempfile::tempdir().unwrap();
            let packages = pkgs
                .iter()
                .map(|(p, prio)| Package {
                    path: (*p).to_owned(),
                    active: true,
                    priority: *prio,
                })
                .collect();
            let mut warnings = Vec::new();
            let r = build_profile(
                out.path(),
                out.path(),
                self.dir.path(),
                packages,
                &mut warnings,
            );
            (out, r)
        }
    }

    fn link(path: PathBuf) -> String {
        std::fs::read_link(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .display()
            .to_string()
    }

    #[test]
    fn merges_directories_and_resolves_priorities() {
        let store = Store::new();
        let a = store.package(
            "a",
            &[
                ("bin/hello", "a"),
                ("bin/common", "a"),
                ("share/a/doc", "a"),
                (".hidden", "x"),
                ("nix-support/setup-hook", "x"),
            ],
        );
        let b = store.package(
            "b",
            &[
                ("bin/world", "b"),
                ("bin/common", "b"),
                ("share/b/doc", "b"),
                ("dangling", "->/nonexistent/x"),
            ],
        );
        let (out, r) = store.build(&[(&b, 6), (&a, 5)]);
        r.unwrap();
        let o = out.path();
        assert!(o.join("bin").is_dir() && !o.join("bin").is_symlink());
        assert_eq!(link(o.join("bin/hello")), format!("{a}/bin/hello"));
        assert_eq!(link(o.join("bin/world")), format!("{b}/bin/world"));
        // Priority 5 beats 6.
        assert_eq!(link(o.join("bin/common")), format!("{a}/bin/common"));
        // `share` was a link to a's share; b's made it a directory holding both.
        assert_eq!(link(o.join("share/a")), format!("{a}/share/a"));
        assert_eq!(link(o.join("share/b")), format!("{b}/share/b"));
        assert!(!o.join(".hidden").exists() && !o.join("nix-support").exists());
        assert!(std::fs::symlink_metadata(o.join("dangling")).is_err());

        // The other way round, the lower number still wins.
        let (out, r) = store.build(&[(&a, 7), (&b, 6)]);
        r.unwrap();
        assert_eq!(
            link(out.path().join("bin/common")),
            format!("{b}/bin/common")
        );
    }

    #[test]
    fn equal_priorities_collide() {
        let store = Store::new();
        let a = store.package("a", &[("bin/x", "a")]);
        let b = store.package("b", &[("bin/x", "b")]);
        let (_out, r) = store.build(&[(&a, 5), (&b, 5)]);
        assert_eq!(
            r.unwrap_err(),
            format!(
                "Unable to build profile. There is a conflict for the following files:\n\n  {a}/bin/x\n  {b}/bin/x"
            )
        );
        // A file meeting a link to a directory: the priorities decide, as for files.
        let c = store.package("c", &[("bin/x", "c")]);
        let d = store.package("d", &[("bin", "file")]);
        let (out, r) = store.build(&[(&c, 5), (&d, 6)]);
        r.unwrap();
        assert_eq!(link(out.path().join("bin")), format!("{c}/bin"));
        // A file meeting a merged (real) directory: an error.
        let e2 = store.package("e", &[("bin/y", "e")]);
        let (_out, r) = store.build(&[(&c, 5), (&e2, 5), (&d, 6)]);
        let e = r.unwrap_err();
        assert!(e.starts_with("collision between non-directory"), "{e}");
    }

    #[test]
    fn follows_propagated_packages() {
        let store = Store::new();
        let dep = store.package("dep", &[("bin/dep", "d"), ("bin/main", "dep's")]);
        let main = store.package(
            "main",
            &[
                ("bin/main", "m"),
                ("nix-support/propagated-user-env-packages", &dep),
            ],
        );
        let (out, r) = store.build(&[(&main, 5)]);
        r.unwrap();
        assert_eq!(link(out.path().join("bin/dep")), format!("{dep}/bin/dep"));
        assert_eq!(
            link(out.path().join("bin/main")),
            format!("{main}/bin/main")
        );
    }

    #[test]
    fn self_referencing_links_are_bounded() {
        let store = Store::new();
        let a = store.package("a", &[("loop", "->.")]);
        let b = store.package("b", &[("loop", "->.")]);
        // The kernel's ELOOP (a dangling link then) or the depth bound ends it.
        let (out, r) = store.build(&[(&a, 5), (&b, 6)]);
        match r {
            // Built (the kernel stopped the loop): the merged directories end within the bound.
            Ok(()) => {
                let mut depth = 0;
                let mut at = out.path().join("loop");
                while std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
                    depth += 1;
                    at = at.join("loop");
                }
                assert!((1..=MAX_DEPTH).contains(&depth), "{depth}");
            }
            Err(e) => assert!(e.contains("nested more than"), "{e}"),
        }
    }

    #[test]
    fn directories_outside_the_store_are_not_listed() {
        let store = Store::new();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("etc")).unwrap();
        std::fs::write(outside.path().join("etc/secret"), "s").unwrap();
        let target = format!("->{}", outside.path().join("etc").display());
        let a = store.package("a", &[("etc", &target)]);
        let b = store.package("b", &[("etc/b", "b")]);
        // a's `etc` link is linked as it is...
        let (out, r) = store.build(&[(&a, 5)]);
        r.unwrap();
        assert_eq!(link(out.path().join("etc")), format!("{a}/etc"));
        // ...but merging it with b's would list the outside directory.
        let (_out, r) = store.build(&[(&a, 5), (&b, 6)]);
        let e = r.unwrap_err();
        assert!(e.contains("is not in the store directory"), "{e}");
    }
}
