//! Indirect and permanent roots, and the per-user directories old clients expect.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use pkgchain_store_model::hash::{Hash, HashAlgo, HashEncoding};
use pkgchain_store_model::store_path::StorePath;
use tracing::debug;

use crate::{RootsError, RootsLayout, io_error};

/// `path` made absolute against `base` and cleaned of `.`, `..` and repeated slashes, without
/// looking at the file system (Nix's `absPath` and `canonPath`).
pub(crate) fn canonical(path: &Path, base: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    };
    let mut out = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

pub(crate) fn absolute_text(path: &Path) -> Result<PathBuf, RootsError> {
    if !path.is_absolute() {
        return Err(RootsError::NotAbsolute(path.display().to_string()));
    }
    Ok(canonical(path, Path::new("/")))
}

/// The link in `gcroots/auto` that registers `link` as an indirect root.
pub fn indirect_root_link(layout: &RootsLayout, link: &Path) -> PathBuf {
    layout.auto_dir().join(auto_link_name(link))
}

/// The name an `auto` directory gives the link registering `link`: nix32(sha1(link)), as Nix
/// names its indirect roots (pins' auto links are named alike).
pub(crate) fn auto_link_name(link: &Path) -> String {
    Hash::digest(HashAlgo::Sha1, link.as_os_str().as_encoded_bytes()).encode(HashEncoding::Nix32)
}

/// Replaces (or creates) the symlink `link` → `target` atomically: a new link beside it, then
/// a rename over it.
pub(crate) fn make_symlink(link: &Path, target: &Path) -> Result<(), RootsError> {
    let parent = link.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(|e| io_error("creating directory", parent, e))?;
    let name = link.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut attempt = 0u32;
    loop {
        let temp = parent.join(format!(
            ".{}.tmp-{}-{attempt}",
            name.as_deref().unwrap_or("link"),
            std::process::id()
        ));
        match std::os::unix::fs::symlink(target, &temp) {
            Ok(()) => {
                return fs::rename(&temp, link).map_err(|e| {
                    let _ = fs::remove_file(&temp);
                    io_error("renaming a new symlink onto", link, e)
                });
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
            Err(e) => return Err(io_error("creating symlink", &temp, e)),
        }
    }
}

/// Registers `link` (absolute, normally a symlink into the store that a client made, such as
/// `./result`) as an indirect root: `gcroots/auto/<nix32(sha1(link))>` → `link`. What `link`
/// points to is a root for as long as `link` exists (`AddIndirectRoot`).
pub fn add_indirect_root(layout: &RootsLayout, link: &Path) -> Result<PathBuf, RootsError> {
    let link = absolute_text(link)?;
    let auto = indirect_root_link(layout, &link);
    make_symlink(&auto, &link)?;
    debug!(link = %link.display(), auto = %auto.display(), "indirect root registered");
    Ok(link)
}

/// Makes `gc_root` a symlink to `path` and registers it as an indirect root; returns the
/// root's canonical path (`AddPermRoot`). A root inside the store is refused; an existing
/// `gc_root` is replaced only when it is a symlink into the store.
pub fn add_perm_root(
    layout: &RootsLayout,
    path: &StorePath,
    gc_root: &Path,
) -> Result<PathBuf, RootsError> {
    let gc_root = absolute_text(gc_root)?;
    let text = gc_root.to_string_lossy();
    if layout.is_in_store(&text) || text == layout.store_dir.as_str() {
        return Err(RootsError::RootInStore(text.into_owned()));
    }
    match fs::symlink_metadata(&gc_root) {
        Ok(meta) => {
            let into_store = meta.file_type().is_symlink()
                && fs::read_link(&gc_root).is_ok_and(|t| layout.is_in_store(&t.to_string_lossy()));
            if !into_store {
                return Err(RootsError::Exists(text.into_owned()));
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("looking at", &gc_root, e)),
    }
    make_symlink(&gc_root, Path::new(&layout.store_dir.display(path)))?;
    add_indirect_root(layout, &gc_root)
}

/// Creates `profiles/per-user/<user>` and `gcroots/per-user/<user>` (mode 0755, owned by
/// `uid` when we may change owners), where clients of Nix 2.3 to 2.13 keep their profiles.
/// A user name that is not a plain file name is ignored.
pub fn create_user_dirs(layout: &RootsLayout, user: &str, uid: u32) -> Result<(), RootsError> {
    if user.is_empty() || user == "." || user == ".." || user.contains('/') || user.contains('\0') {
        return Ok(());
    }
    for base in [layout.profiles_dir(), layout.gcroots_dir()] {
        let per_user = base.join("per-user");
        if !per_user.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&per_user)
                .map_err(|e| io_error("creating directory", &per_user, e))?;
        }
        let dir = per_user.join(user);
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("creating directory", &dir, e)),
        }
        let meta = fs::symlink_metadata(&dir).map_err(|e| io_error("looking at", &dir, e))?;
        if !meta.is_dir() {
            continue;
        }
        if meta.uid() != uid && rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&dir, Some(uid), None)
                .map_err(|e| io_error("changing the owner of", &dir, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkgchain_store_model::store_path::StoreDir;
    use std::os::unix::fs::PermissionsExt;

    fn layout(dir: &Path) -> RootsLayout {
        RootsLayout::new(
            dir.join("var"),
            StoreDir::new("/nix/store").expect("store dir"),
        )
    }

    #[test]
    fn canonical_paths() {
        let base = Path::new("/home/u");
        assert_eq!(
            canonical(Path::new("a/./b/../c"), base),
            Path::new("/home/u/a/c")
        );
        assert_eq!(canonical(Path::new("//x///y/"), base), Path::new("/x/y"));
        assert_eq!(canonical(Path::new("/../.."), base), Path::new("/"));
    }

    #[test]
    fn indirect_root_is_named_by_the_sha1_of_the_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = layout(dir.path());
        let link = add_indirect_root(&l, Path::new("/home/u/./result")).expect("add");
        assert_eq!(link, Path::new("/home/u/result"));
        // nix32(sha1("/home/u/result")), as Nix names it.
        let sha1 = Hash::digest(HashAlgo::Sha1, b"/home/u/result").encode(HashEncoding::Nix32);
        assert_eq!(sha1.len(), 32);
        let auto = l.auto_dir().join(&sha1);
        assert_eq!(
            fs::read_link(&auto).expect("link"),
            Path::new("/home/u/result")
        );
        // Registering again replaces the link in place.
        add_indirect_root(&l, Path::new("/home/u/result")).expect("again");
        assert_eq!(fs::read_dir(l.auto_dir()).expect("dir").count(), 1);
        assert!(matches!(
            add_indirect_root(&l, Path::new("relative/result")),
            Err(RootsError::NotAbsolute(_))
        ));
    }

    #[test]
    fn perm_root_links_refuses_the_store_and_foreign_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = layout(dir.path());
        let p = StorePath::from_base_name("7rjj86a15146cq1d5dy6bl0p0gd2d1qg-hello").expect("p");
        let root = dir.path().join("roots/r");
        let got = add_perm_root(&l, &p, &root).expect("perm root");
        assert_eq!(got, root);
        assert_eq!(
            fs::read_link(&root).expect("link"),
            Path::new("/nix/store/7rjj86a15146cq1d5dy6bl0p0gd2d1qg-hello")
        );
        assert_eq!(
            fs::read_link(indirect_root_link(&l, &root)).expect("auto"),
            root
        );
        // A link into the store is replaced; a regular file is not.
        add_perm_root(&l, &p, &root).expect("replace own link");
        let file = dir.path().join("file");
        fs::write(&file, "x").expect("write");
        let err = add_perm_root(&l, &p, &file).expect_err("file kept");
        assert_eq!(
            err.to_string(),
            format!("cannot create symlink '{}'; already exists", file.display())
        );
        let err = add_perm_root(&l, &p, Path::new("/nix/store/x-root")).expect_err("in store");
        assert!(
            err.to_string().contains("in the Nix store is forbidden"),
            "{err}"
        );
    }

    #[test]
    fn per_user_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = layout(dir.path());
        let uid = rustix::process::geteuid().as_raw();
        create_user_dirs(&l, "alice", uid).expect("dirs");
        for base in [l.profiles_dir(), l.gcroots_dir()] {
            let meta = fs::metadata(base.join("per-user/alice")).expect("dir");
            assert!(meta.is_dir());
            assert_eq!(meta.uid(), uid);
            assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        }
        create_user_dirs(&l, "alice", uid).expect("again");
        create_user_dirs(&l, "../evil", uid).expect("ignored");
        assert!(!l.profiles_dir().join("evil").exists());
    }
}
