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
            match cid {
                Some(cid) if has_root(&cid) => scan.pinned.push((cid, path)),
                _ => {
                    info!(link = %path.display(), target = %target.display(), "removing dangling pin");
                    match fs::remove_file(&path) {
                        Ok(()) => scan.removed.push(path),
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(io_error("removing", &path, e)),
                    }
                }
            }
        }
    }
    scan.pinned.sort();
    scan.pinned.dedup_by(|a, b| a.0 == b.0);
    Ok(scan)
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
}
