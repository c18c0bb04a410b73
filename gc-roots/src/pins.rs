//! Pins: package chain's own roots, for DAGs rather than store paths.
//!
//! A pin is a symlink `<pins>/per-user/<user>/<program>/<cid>` to `<ipfs store>/<cid>` (the
//! FUSE view `/ipfs/store/<cid>`): it keeps every block of that DAG. An auto pin,
//! `<pins>/per-user/<user>/<program>/auto/<name>`, points at a link the user keeps elsewhere
//! (in the home directory, say) which points at `<ipfs store>/<cid>`: removing that link
//! unpins, as removing a `result` link unroots. A pin whose DAG root is not here, or an auto
//! pin whose link is gone or points elsewhere, is dangling, and the collector removes it.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use pkgchain_dag::Cid;
use tracing::{info, warn};

use crate::links::{absolute_text, auto_link_name, make_symlink};
use crate::{RootsError, io_error};

/// Deepest directory nesting searched below `per-user`.
const MAX_DEPTH: usize = 32;

/// What a look at the pins found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PinScan {
    /// The DAG roots pinned (each once), with the link that pins it.
    pub pinned: Vec<(Cid, PathBuf)>,
    /// Dangling pin links, removed.
    pub removed: Vec<PathBuf>,
}

/// `<pins>/per-user/<user>/<program>`, where a program keeps its user's pins.
pub fn pin_dir(pins_dir: &Path, user: &str, program: &str) -> PathBuf {
    pins_dir.join("per-user").join(user).join(program)
}

/// The CID that `target` names inside `ipfs_store` (`<ipfs store>/<cid>[/...]`).
pub fn pinned_cid(ipfs_store: &Path, target: &Path) -> Option<Cid> {
    let rest = target.strip_prefix(ipfs_store).ok()?;
    let first = rest.components().next()?;
    first.as_os_str().to_str()?.parse().ok()
}

/// Every pin under `<pins>/per-user`, removing dangling ones (see the module documentation).
/// `has_root` says whether a DAG's root block is here.
pub fn find_pins(
    pins_dir: &Path,
    ipfs_store: &Path,
    has_root: impl Fn(&Cid) -> bool,
) -> Result<PinScan, RootsError> {
    let mut scan = PinScan::default();
    walk_pins(pins_dir, ipfs_store, |link, target, cid| {
        match cid {
            Some(cid) if has_root(&cid) => scan.pinned.push((cid, link)),
            _ => {
                info!(link = %link.display(), target = %target.display(), "removing dangling pin");
                match fs::remove_file(&link) {
                    Ok(()) => scan.removed.push(link),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("removing", &link, e)),
                }
            }
        }
        Ok(())
    })?;
    scan.pinned.sort();
    scan.pinned.dedup_by(|a, b| a.0 == b.0);
    Ok(scan)
}

/// One pin link, as [`list_pins`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinLink {
    /// The link under `<pins>/per-user`.
    pub link: PathBuf,
    /// What it points at (for an auto pin, the user's link).
    pub target: PathBuf,
    /// The DAG it pins, if it names one.
    pub cid: Option<Cid>,
}

/// Every pin link under `<pins>/per-user`, removing nothing, sorted by link.
pub fn list_pins(pins_dir: &Path, ipfs_store: &Path) -> Result<Vec<PinLink>, RootsError> {
    let mut links = Vec::new();
    walk_pins(pins_dir, ipfs_store, |link, target, cid| {
        links.push(PinLink { link, target, cid });
        Ok(())
    })?;
    links.sort_by(|a, b| a.link.cmp(&b.link));
    Ok(links)
}

/// Pins the DAG at `cid` for `user`'s `program`: the link `<pin dir>/<cid>` to
/// `<ipfs store>/<cid>` (made atomically; pinning again changes nothing). Returns the link.
pub fn pin(
    pins_dir: &Path,
    ipfs_store: &Path,
    user: &str,
    program: &str,
    cid: &Cid,
) -> Result<PathBuf, RootsError> {
    let link = pin_dir_checked(pins_dir, user, program)?.join(cid.to_string());
    make_symlink(&link, &ipfs_store.join(cid.to_string()))?;
    Ok(link)
}

/// Pins the DAG at `cid` through a link the user keeps: `user_link` (absolute) is made to point
/// at `<ipfs store>/<cid>` (replacing a link there, never anything else), and the auto pin
/// `<pin dir>/auto/<nix32(sha1(user_link))>` (named as Nix names indirect roots) at `user_link`. Removing `user_link` unpins. Returns the
/// auto pin.
pub fn pin_through(
    pins_dir: &Path,
    ipfs_store: &Path,
    user: &str,
    program: &str,
    cid: &Cid,
    user_link: &Path,
) -> Result<PathBuf, RootsError> {
    let user_link = &absolute_text(user_link)?;
    match fs::symlink_metadata(user_link) {
        Ok(m) if !m.file_type().is_symlink() => {
            return Err(RootsError::Exists(user_link.display().to_string()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("looking at", user_link, e)),
    }
    make_symlink(user_link, &ipfs_store.join(cid.to_string()))?;
    let auto = pin_dir_checked(pins_dir, user, program)?
        .join("auto")
        .join(auto_link_name(user_link));
    make_symlink(&auto, user_link)?;
    Ok(auto)
}

/// Removes `user`'s `program`'s pins of `cid` (the pin and any auto pin whose user link points
/// at it; the user links themselves are left). Returns the links removed.
pub fn unpin(
    pins_dir: &Path,
    ipfs_store: &Path,
    user: &str,
    program: &str,
    cid: &Cid,
) -> Result<Vec<PathBuf>, RootsError> {
    let dir = pin_dir_checked(pins_dir, user, program)?;
    let mut removed = Vec::new();
    for pin in list_pins(pins_dir, ipfs_store)? {
        if pin.link.starts_with(&dir) && pin.cid.as_ref() == Some(cid) {
            match fs::remove_file(&pin.link) {
                Ok(()) => removed.push(pin.link),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("removing", &pin.link, e)),
            }
        }
    }
    Ok(removed)
}

/// [`pin_dir`], made if missing, for names that are one plain path component each.
fn pin_dir_checked(pins_dir: &Path, user: &str, program: &str) -> Result<PathBuf, RootsError> {
    for name in [user, program] {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(RootsError::BadPinName(name.to_owned()));
        }
    }
    let dir = pin_dir(pins_dir, user, program);
    fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
    Ok(dir)
}

/// Calls `f` with every pin link under `<pins>/per-user`, its target and the CID it pins (for
/// an auto pin, through the user's link), if any.
fn walk_pins(
    pins_dir: &Path,
    ipfs_store: &Path,
    mut f: impl FnMut(PathBuf, PathBuf, Option<Cid>) -> Result<(), RootsError>,
) -> Result<(), RootsError> {
    let top = pins_dir.join("per-user");
    let mut todo: Vec<(PathBuf, usize)> = vec![(top, 0)];
    while let Some((dir, depth)) = todo.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("listing", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error("listing", &dir, e))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| io_error("looking at", &path, e))?;
            if kind.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    warn!(dir = %path.display(), "pins nested too deep; not searched");
                } else {
                    todo.push((path, depth + 1));
                }
                continue;
            }
            if !kind.is_symlink() {
                warn!(file = %path.display(), "not a pin link; ignored");
                continue;
            }
            let target = fs::read_link(&path).map_err(|e| io_error("reading", &path, e))?;
            let cid = match pinned_cid(ipfs_store, &target) {
                Some(cid) => Some(cid),
                // An auto pin: the user's link says what is pinned.
                None => match fs::read_link(&target) {
                    Ok(user_target) => pinned_cid(ipfs_store, &user_target),
                    Err(_) => None,
                },
            };
            f(path, target, cid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use pkgchain_dag::Codec;

    use super::*;

    #[test]
    fn pins_auto_pins_and_dangling_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pins = dir.path().join("pins");
        let store = dir.path().join("ipfs-store");
        let home = dir.path().join("home");
        fs::create_dir_all(&home).expect("home");
        let here = Cid::of(Codec::DagPb, b"a DAG that is here");
        let away = Cid::of(Codec::DagPb, b"a DAG that is not");
        let kept = Cid::of(Codec::Raw, b"pinned from home");
        let mine = pin_dir(&pins, "alice", "pkg");
        fs::create_dir_all(mine.join("auto")).expect("mkdir");
        symlink(store.join(here.to_string()), mine.join(here.to_string())).expect("pin");
        symlink(store.join(away.to_string()), mine.join(away.to_string())).expect("pin");
        // An auto pin through a link in the home directory, and one whose link is gone.
        symlink(
            store.join(kept.to_string()).join("sub"),
            home.join("my-pin"),
        )
        .expect("link");
        symlink(home.join("my-pin"), mine.join("auto/one")).expect("auto");
        symlink(home.join("removed"), mine.join("auto/two")).expect("auto");
        fs::write(mine.join("notes"), "not a link").expect("file");
        let scan = find_pins(&pins, &store, |c| *c != away).expect("scan");
        let mut cids: Vec<Cid> = scan.pinned.iter().map(|(c, _)| *c).collect();
        cids.sort();
        let mut want = vec![here, kept];
        want.sort();
        assert_eq!(cids, want);
        let mut removed = scan.removed.clone();
        removed.sort();
        let mut want_removed = vec![mine.join(away.to_string()), mine.join("auto/two")];
        want_removed.sort();
        assert_eq!(removed, want_removed);
        assert!(!mine.join("auto/two").exists() && mine.join("notes").exists());
        // Removing the home link unpins at the next look.
        fs::remove_file(home.join("my-pin")).expect("rm");
        let scan = find_pins(&pins, &store, |_| true).expect("scan");
        assert_eq!(scan.pinned.len(), 1);
        assert_eq!(scan.removed, [mine.join("auto/one")]);
    }

    #[test]
    fn pin_pin_through_list_and_unpin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pins = dir.path().join("pins");
        let store = dir.path().join("ipfs-store");
        let home = dir.path().join("home");
        fs::create_dir_all(&home).expect("home");
        let a = Cid::of(Codec::DagPb, b"pinned directly");
        let b = Cid::of(Codec::DagPb, b"pinned from home");
        let link = pin(&pins, &store, "alice", "pkg", &a).expect("pin");
        assert_eq!(link, pin_dir(&pins, "alice", "pkg").join(a.to_string()));
        assert_eq!(pin(&pins, &store, "alice", "pkg", &a).expect("again"), link);
        let user_link = home.join("keep");
        let auto = pin_through(&pins, &store, "alice", "pkg", &b, &user_link).expect("pin");
        assert_eq!(
            fs::read_link(&user_link).expect("link"),
            store.join(b.to_string())
        );
        assert_eq!(fs::read_link(&auto).expect("auto"), user_link);
        let listed: Vec<(PathBuf, Option<Cid>)> = list_pins(&pins, &store)
            .expect("list")
            .into_iter()
            .map(|p| (p.link, p.cid))
            .collect();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed.contains(&(link.clone(), Some(a))));
        assert!(listed.contains(&(auto.clone(), Some(b))));
        let scan = find_pins(&pins, &store, |_| true).expect("scan");
        assert_eq!(scan.pinned.len(), 2);
        // A file where the user's link would go is never replaced; names are checked.
        fs::write(home.join("file"), "mine").expect("file");
        assert!(matches!(
            pin_through(&pins, &store, "alice", "pkg", &b, &home.join("file")),
            Err(RootsError::Exists(_))
        ));
        assert!(matches!(
            pin_through(&pins, &store, "alice", "pkg", &b, Path::new("relative")),
            Err(RootsError::NotAbsolute(_))
        ));
        for bad in ["", "..", "a/b"] {
            assert!(matches!(
                pin(&pins, &store, bad, "pkg", &a),
                Err(RootsError::BadPinName(_))
            ));
        }
        assert_eq!(
            unpin(&pins, &store, "alice", "pkg", &b).expect("unpin"),
            vec![auto]
        );
        assert!(
            fs::symlink_metadata(&user_link).is_ok(),
            "the user's own link is left"
        );
        assert_eq!(
            unpin(&pins, &store, "bob", "pkg", &a).expect("unpin"),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            unpin(&pins, &store, "alice", "pkg", &a).expect("unpin"),
            vec![link]
        );
        assert!(list_pins(&pins, &store).expect("list").is_empty());
    }
}
