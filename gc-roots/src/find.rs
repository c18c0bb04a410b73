//! Finding roots: the `gcroots` and `profiles` trees, temp roots, and what running processes
//! use. Walks are iterative and never follow a symlink to a directory, so a link cycle cannot
//! trap them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tracing::{debug, info};

use crate::links::canonical;
use crate::temp::read_temp_roots;
use crate::{CENSORED, Roots, RootsError, RootsLayout, io_error};

/// Deepest directory nesting searched below `gcroots` or `profiles`.
const MAX_DEPTH: usize = 256;

/// Every root: the `gcroots` and `profiles` trees, runtime roots and temp roots. With `censor`
/// (for untrusted askers), runtime and temp roots do not say where they come from. The result
/// holds every well-formed store path found; the caller keeps the valid ones.
pub fn find_roots(layout: &RootsLayout, censor: bool) -> Result<Roots, RootsError> {
    // Temp roots first: a client makes a temp root permanent by linking it (a `result` link,
    // then `AddIndirectRoot`) and only then ends, taking its temp roots with it. Read in the
    // other order, a collector could find neither: the links before the new one, the temp
    // roots after the client had gone (the race test found it).
    let mut roots = read_temp_roots(layout, censor)?;
    find_link_roots(layout, &layout.gcroots_dir(), &mut roots)?;
    find_link_roots(layout, &layout.profiles_dir(), &mut roots)?;
    merge(&mut roots, find_runtime_roots(layout, censor));
    Ok(roots)
}

fn merge(into: &mut Roots, from: Roots) {
    for (path, links) in from {
        into.entry(path).or_default().extend(links);
    }
}

/// Nix's "permanent failures" that only skip a potential root.
fn cannot_read(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::NotADirectory
    )
}

/// Roots in one tree: symlinks into the store, symlinks to symlinks into the store (indirect
/// roots; a dangling one in `gcroots/auto` is removed), and files named like a store path.
fn find_link_roots(layout: &RootsLayout, top: &Path, roots: &mut Roots) -> Result<(), RootsError> {
    let auto = layout.auto_dir();
    let mut todo: Vec<(PathBuf, usize)> = vec![(top.to_owned(), 0)];
    while let Some((path, depth)) = todo.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if cannot_read(&e) => {
                if path != top {
                    info!(path = %path.display(), "cannot read potential root");
                }
                continue;
            }
            Err(e) => return Err(io_error("looking at", &path, e)),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            if depth >= MAX_DEPTH {
                info!(path = %path.display(), "not searching deeper for roots");
                continue;
            }
            let entries = match fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if cannot_read(&e) => {
                    info!(path = %path.display(), "cannot read potential root");
                    continue;
                }
                Err(e) => return Err(io_error("reading directory", &path, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_error("reading directory", &path, e))?;
                todo.push((entry.path(), depth + 1));
            }
        } else if kind.is_symlink() {
            let target = match fs::read_link(&path) {
                Ok(t) => t,
                Err(e) if cannot_read(&e) => continue,
                Err(e) => return Err(io_error("reading symlink", &path, e)),
            };
            let target_text = target.to_string_lossy();
            if layout.is_in_store(&target_text) {
                found(layout, roots, &path, &target_text);
                continue;
            }
            // An indirect root: a link to a link into the store.
            let parent = path.parent().unwrap_or(Path::new("/"));
            let target = canonical(&target, parent);
            match fs::symlink_metadata(&target) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    if path.starts_with(&auto) {
                        info!(link = %path.display(), target = %target.display(), "removing stale link");
                        let _ = fs::remove_file(&path);
                    }
                }
                Err(_) => {}
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(second) = fs::read_link(&target) {
                        let second = second.to_string_lossy();
                        if layout.is_in_store(&second) {
                            found(layout, roots, &target, &second);
                        }
                    }
                }
                Ok(_) => {}
            }
        } else if kind.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Ok(p) = layout
                .store_dir
                .parse(&format!("{}/{name}", layout.store_dir.as_str()))
            {
                roots
                    .entry(p)
                    .or_default()
                    .insert(path.display().to_string());
            }
        }
    }
    Ok(())
}

fn found(layout: &RootsLayout, roots: &mut Roots, link: &Path, target: &str) {
    match layout.store_path_of(target) {
        Some(p) => {
            roots
                .entry(p)
                .or_default()
                .insert(link.display().to_string());
        }
        None => debug!(link = %link.display(), target, "root points at no store path"),
    }
}

/// Store paths mentioned in `text` (Nix's pattern: the store directory, `/`, lowercase
/// letters and digits, then name characters).
fn store_paths_in(store_dir: &str, text: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let needle = format!("{store_dir}/");
    let needle = needle.as_bytes();
    let mut at = 0;
    while at + needle.len() <= text.len() {
        let Some(offset) = text[at..].windows(needle.len()).position(|w| w == needle) else {
            break;
        };
        let start = at + offset;
        let mut end = start + needle.len();
        let hash_start = end;
        while end < text.len() && (text[end].is_ascii_lowercase() || text[end].is_ascii_digit()) {
            end += 1;
        }
        if end > hash_start {
            while end < text.len()
                && (text[end].is_ascii_alphanumeric() || b"+-._?=".contains(&text[end]))
            {
                end += 1;
            }
            found.push(String::from_utf8_lossy(&text[start..end]).into_owned());
            at = end;
        } else {
            at = start + 1;
        }
    }
    found
}

/// The path a line of `/proc/<pid>/maps` maps, when it maps a file by an absolute path.
fn mapped_file(line: &str) -> Option<&str> {
    let mut fields = line.split_whitespace();
    for _ in 0..5 {
        fields.next()?;
    }
    let path = fields.next()?;
    (path.starts_with('/') && fields.next().is_none()).then_some(path)
}

/// Store paths running processes use: executables, working directories, open files, mapped
/// files, store paths in environments, and the kernel's helper programs. Processes that vanish
/// or cannot be read are skipped.
pub fn find_runtime_roots(layout: &RootsLayout, censor: bool) -> Roots {
    let mut unchecked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let store = layout.store_dir.as_str();
    let mut note = |target: String, source: String| {
        unchecked.entry(target).or_default().insert(source);
    };
    if let Ok(procs) = fs::read_dir("/proc") {
        for entry in procs.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let base = PathBuf::from("/proc").join(&pid);
            let mut links = vec![base.join("exe"), base.join("cwd")];
            if let Ok(fds) = fs::read_dir(base.join("fd")) {
                links.extend(fds.flatten().map(|fd| fd.path()));
            }
            for link in links {
                if let Ok(target) = fs::read_link(&link) {
                    let target = target.to_string_lossy().into_owned();
                    if target.starts_with('/') {
                        note(target, link.display().to_string());
                    }
                }
            }
            let maps = base.join("maps");
            if let Ok(text) = fs::read_to_string(&maps) {
                for line in text.lines() {
                    if let Some(path) = mapped_file(line) {
                        note(path.to_owned(), maps.display().to_string());
                    }
                }
            }
            let environ = base.join("environ");
            if let Ok(bytes) = fs::read(&environ) {
                for path in store_paths_in(store, &bytes) {
                    note(path, environ.display().to_string());
                }
            }
        }
    }
    for file in [
        "/proc/sys/kernel/modprobe",
        "/proc/sys/kernel/fbsplash",
        "/proc/sys/kernel/poweroff_cmd",
    ] {
        if let Ok(text) = fs::read_to_string(file) {
            note(text.trim_end_matches('\n').to_owned(), file.to_owned());
        }
    }
    let mut roots = Roots::new();
    for (target, links) in unchecked {
        if !layout.is_in_store(&target) {
            continue;
        }
        let Some(path) = layout.store_path_of(&target) else {
            continue;
        };
        let entry = roots.entry(path).or_default();
        if censor {
            entry.insert(CENSORED.to_owned());
        } else {
            entry.extend(links);
        }
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkgchain_store_model::store_path::{StoreDir, StorePath};
    use std::os::unix::fs::symlink;

    const A: &str = "7rjj86a15146cq1d5dy6bl0p0gd2d1qg-a";
    const B: &str = "0bqj3w2yx5mhzb9zl6rb9fnjzn5n6bwv-b";
    const C: &str = "1b9p07z77phvv2hf6gm9f28syp39f1ag-c";

    fn sp(base: &str) -> StorePath {
        StorePath::from_base_name(base).expect("store path")
    }

    #[test]
    fn finds_direct_indirect_and_file_roots_and_drops_stale_auto_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = RootsLayout::new(
            dir.path().join("var"),
            StoreDir::new("/nix/store").expect("d"),
        );
        let gcroots = l.gcroots_dir();
        fs::create_dir_all(gcroots.join("deep/er")).expect("mkdir");
        fs::create_dir_all(l.profiles_dir()).expect("mkdir");
        // Direct, into a subdirectory of a store path.
        symlink(
            format!("/nix/store/{A}/bin/x"),
            gcroots.join("deep/er/direct"),
        )
        .expect("ln");
        // A profile generation.
        symlink(
            format!("/nix/store/{B}"),
            l.profiles_dir().join("default-1-link"),
        )
        .expect("ln");
        // An indirect root: auto link → ./result → store.
        let result = dir.path().join("home/result");
        fs::create_dir_all(result.parent().expect("parent")).expect("mkdir");
        symlink(format!("/nix/store/{C}"), &result).expect("ln");
        let auto = crate::add_indirect_root(&l, &result).expect("indirect");
        // A dangling indirect root in auto is removed; elsewhere it is left alone.
        let gone = dir.path().join("home/gone");
        let stale = crate::add_indirect_root(&l, &gone).expect("indirect");
        let stale_auto = crate::indirect_root_link(&l, &stale);
        symlink("/nonexistent/x", gcroots.join("dangling")).expect("ln");
        // A file named like a store path; and a link to a directory is not followed.
        fs::write(gcroots.join(A), "").expect("file");
        symlink(dir.path(), gcroots.join("to-dir")).expect("ln");

        let roots = find_roots(&l, false).expect("find");
        let links = |p: &str| roots.get(&sp(p)).cloned().unwrap_or_default();
        assert!(links(A).contains(&gcroots.join("deep/er/direct").display().to_string()));
        assert!(links(A).contains(&gcroots.join(A).display().to_string()));
        assert!(
            links(B).contains(
                &l.profiles_dir()
                    .join("default-1-link")
                    .display()
                    .to_string()
            )
        );
        assert!(links(C).contains(&auto.display().to_string()), "{roots:?}");
        assert!(!stale_auto.exists(), "stale auto link removed");
        assert!(
            fs::symlink_metadata(gcroots.join("dangling")).is_ok(),
            "dangling links outside gcroots/auto stay"
        );
    }

    #[test]
    fn store_paths_are_found_in_text() {
        let text = b"PATH=/nix/store/7rjj86a15146cq1d5dy6bl0p0gd2d1qg-a/bin:/usr/bin\0X=/nix/store/\0Y=/nix/store/abc-d+e_f?=g h";
        assert_eq!(
            store_paths_in("/nix/store", text),
            vec![
                "/nix/store/7rjj86a15146cq1d5dy6bl0p0gd2d1qg-a".to_owned(),
                "/nix/store/abc-d+e_f?=g".to_owned()
            ]
        );
        assert_eq!(
            mapped_file("7f00-7f01 r-xp 00000000 00:1f 123   /nix/store/x-a/lib/l.so"),
            Some("/nix/store/x-a/lib/l.so")
        );
        assert_eq!(mapped_file("7f00-7f01 rw-p 00000000 00:00 0 "), None);
        assert_eq!(
            mapped_file("7f00-7f01 rw-p 00000000 00:00 0   [heap]"),
            None
        );
    }

    #[test]
    fn this_process_working_directory_is_a_runtime_root() {
        // A store directory of our own, with this test's working directory inside it... as
        // seen through /proc/self/cwd of a child process started there.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let path_dir = store.join(A);
        fs::create_dir_all(&path_dir).expect("mkdir");
        let l = RootsLayout::new(
            dir.path().join("var"),
            StoreDir::new(&store.to_string_lossy()).expect("d"),
        );
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&path_dir)
            .spawn()
            .expect("sleep");
        let roots = find_runtime_roots(&l, false);
        let censored = find_runtime_roots(&l, true);
        let _ = child.kill();
        let _ = child.wait();
        let links = roots.get(&sp(A)).expect("cwd root");
        assert!(
            links.contains(&format!("/proc/{}/cwd", child.id())),
            "{links:?}"
        );
        assert_eq!(
            censored
                .get(&sp(A))
                .expect("censored")
                .iter()
                .collect::<Vec<_>>(),
            vec![CENSORED]
        );
    }
}
