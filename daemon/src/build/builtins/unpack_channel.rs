//! `builtin:unpack-channel`: unpacks the channel tarball `src` into `$out` and renames its one
//! top-level entry to `channelName`, as Nix's builder of that name (which `nix-channel
//! --update` uses).
//!
//! The compression is told by the first bytes, as libarchive does for Nix: gzip, bzip2, xz or
//! none. Members are untrusted: a member whose path is absolute or has a `..` component is
//! refused, and so is one that would be written through a symlink or a non-directory (each
//! parent is checked with `lstat` and made by this builder), so nothing lands outside `$out`.
//! Character and block devices and FIFOs are refused; modes are reduced to 0755/0644 (the
//! store makes them read-only afterwards); owners and times are not restored.
//!
//! Differences from Nix, on purpose: `src` must resolve inside the store directory (this
//! builder runs as root, outside any sandbox), and `channelName` must be one path component.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::BuiltinRequest;

/// Runs the builder.
pub(super) async fn run(
    req: &BuiltinRequest<'_>,
    _log: &mut (dyn FnMut(String) + Send),
) -> Result<(), String> {
    let out = req.output_dir("out")?;
    let attr = |name: &str| {
        req.var(name)
            .ok_or_else(|| format!("attribute '{name}' missing"))
    };
    let channel_name = attr("channelName")?;
    let src = attr("src")?;
    if channel_name.is_empty()
        || channel_name == "."
        || channel_name == ".."
        || channel_name.contains(['/', '\0'])
    {
        return Err(format!(
            "invalid channel name '{channel_name}': it must be a single file name"
        ));
    }
    let src_path = in_store(&src, req.store_dir)?;
    tokio::task::spawn_blocking(move || unpack_channel(&src, &src_path, &out, &channel_name))
        .await
        .map_err(|e| format!("unpack-channel task failed: {e}"))?
}

/// `src` resolved, when it lies inside the store directory.
fn in_store(src: &str, store_dir: &str) -> Result<PathBuf, String> {
    let real = std::fs::canonicalize(src).map_err(|e| format!("opening file '{src}': {e}"))?;
    let store = std::fs::canonicalize(store_dir).unwrap_or_else(|_| PathBuf::from(store_dir));
    if real.starts_with(&store) && real != store {
        Ok(real)
    } else {
        Err(format!(
            "channel tarball '{src}' is not in the store directory '{store_dir}'"
        ))
    }
}

/// Unpacks `src_path` (named `src` in messages) into `out`, then renames the one entry.
fn unpack_channel(
    src: &str,
    src_path: &Path,
    out: &Path,
    channel_name: &str,
) -> Result<(), String> {
    std::fs::create_dir_all(out)
        .map_err(|e| format!("creating directory '{}': {e}", out.display()))?;
    let file = std::fs::File::open(src_path).map_err(|e| format!("opening file '{src}': {e}"))?;
    unpack_tarball(BufReader::new(file), out)
        .map_err(|e| format!("unpacking channel tarball '{src}': {e}"))?;
    let mut entries = std::fs::read_dir(out)
        .map_err(|e| format!("reading directory '{}': {e}", out.display()))?;
    let first = entries
        .next()
        .transpose()
        .map_err(|e| format!("reading directory '{}': {e}", out.display()))?;
    let (Some(first), None) = (first, entries.next()) else {
        return Err(format!(
            "channel tarball '{src}' contains more than one file"
        ));
    };
    std::fs::rename(first.path(), out.join(channel_name))
        .map_err(|e| format!("renaming channel directory: {e}"))
}

/// Unpacks a tarball, compressed or not, into the existing directory `dest`.
pub(crate) fn unpack_tarball(mut input: impl BufRead, dest: &Path) -> Result<(), String> {
    let magic = input
        .fill_buf()
        .map_err(|e| format!("reading: {e}"))?
        .to_vec();
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if magic.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(input))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input))
    } else {
        Box::new(input)
    };
    extract(reader, dest)
}

/// Extracts the members of the tar stream `reader` below `dest`.
fn extract(reader: impl Read, dest: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| e.to_string())?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
        let kind = entry.header().entry_type();
        let raw_path = entry
            .path()
            .map_err(|e| format!("a member has an unreadable path: {e}"))?
            .into_owned();
        let shown = raw_path.display().to_string();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let Some(parts) = safe_parts(&raw_path) else {
            return Err(format!(
                "member '{shown}' has an unsafe path (absolute or with '..')"
            ));
        };
        if parts.is_empty() {
            // `./` itself.
            continue;
        }
        let parent = make_parents(dest, &parts[..parts.len() - 1], &shown)?;
        let Some(last) = parts.last() else { continue };
        let target = parent.join(last);
        let existing = std::fs::symlink_metadata(&target).ok();
        if kind == tar::EntryType::Directory {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    return Err(format!(
                        "member '{shown}' is a directory, but a file of that name came before"
                    ));
                }
                None => std::fs::create_dir(&target)
                    .map_err(|e| format!("creating directory for member '{shown}': {e}"))?,
            }
            continue;
        }
        // A later member replaces an earlier file of the same name (as libarchive does),
        // never a directory.
        match existing {
            Some(m) if m.is_dir() => {
                return Err(format!(
                    "member '{shown}' would replace a directory of the same name"
                ));
            }
            Some(_) => std::fs::remove_file(&target)
                .map_err(|e| format!("replacing member '{shown}': {e}"))?,
            None => {}
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let executable = entry
                    .header()
                    .mode()
                    .map(|m| m & 0o111 != 0)
                    .unwrap_or(false);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .open(&target)
                    .map_err(|e| format!("creating member '{shown}': {e}"))?;
                std::io::copy(&mut entry, &mut file)
                    .map_err(|e| format!("writing member '{shown}': {e}"))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| format!("member '{shown}' has an unreadable link target: {e}"))?
                    .ok_or_else(|| format!("symlink member '{shown}' has no target"))?;
                if link.as_os_str().is_empty() {
                    return Err(format!("symlink member '{shown}' has an empty target"));
                }
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| format!("creating symlink member '{shown}': {e}"))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| format!("member '{shown}' has an unreadable link target: {e}"))?
                    .ok_or_else(|| format!("hard link member '{shown}' has no target"))?;
                let link_shown = link.display().to_string();
                let link_parts = safe_parts(&link).filter(|p| !p.is_empty()).ok_or_else(|| {
                    format!(
                        "hard link member '{shown}' points outside the archive ('{link_shown}')"
                    )
                })?;
                // The target must be a regular file already extracted, reached without
                // following any link.
                let source = resolve_existing(dest, &link_parts).ok_or_else(|| {
                    format!(
                        "hard link member '{shown}' points to '{link_shown}', which is not a file extracted before it"
                    )
                })?;
                std::fs::hard_link(&source, &target)
                    .map_err(|e| format!("creating hard link member '{shown}': {e}"))?;
            }
            other => {
                return Err(format!(
                    "member '{shown}' has an unsupported type ({other:?})"
                ));
            }
        }
    }
    Ok(())
}

/// The normal components of a member path; `None` when it is absolute or has `..`.
fn safe_parts(path: &Path) -> Option<Vec<&OsStr>> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts)
}

/// Makes (or checks) each directory of `parts` below `dest`, never through a symlink.
fn make_parents(dest: &Path, parts: &[&OsStr], shown: &str) -> Result<PathBuf, String> {
    let mut dir = dest.to_path_buf();
    for part in parts {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "member '{shown}' would be extracted through '{}', which is not a directory",
                    Path::new(part).display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&dir)
                .map_err(|e| format!("creating a directory for member '{shown}': {e}"))?,
            Err(e) => return Err(format!("extracting member '{shown}': {e}")),
        }
    }
    Ok(dir)
}

/// The regular file at `parts` below `dest`, reached through real directories only.
fn resolve_existing(dest: &Path, parts: &[&OsStr]) -> Option<PathBuf> {
    let mut path = dest.to_path_buf();
    let (last, dirs) = parts.split_last()?;
    for part in dirs {
        path.push(part);
        if !std::fs::symlink_metadata(&path).ok()?.is_dir() {
            return None;
        }
    }
    path.push(last);
    std::fs::symlink_metadata(&path)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::io::Write;

    use super::*;

    /// A member of a test tarball.
    enum M<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
    }

    /// A tar stream; paths are written raw into the header, so `../` and `/` survive.
    fn tarball(members: &[M<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in members {
            let mut h = tar::Header::new_gnu();
            let (path, data): (&str, &[u8]) = match m {
                M::File(p, d, mode) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    (p, d)
                }
                M::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    (p, b"")
                }
                M::Symlink(p, t) | M::HardLink(p, t) => {
                    h.set_entry_type(if matches!(m, M::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    h.set_mode(0o777);
                    let name = &mut h.as_old_mut().linkname;
                    name[..t.len()].copy_from_slice(t.as_bytes());
                    (p, b"")
                }
            };
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_size(data.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn bz2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Runs the builder on `tarball` (placed in a fake store) and returns its result and the
    /// staging directory.
    async fn run_on(tarball: &[u8], name: &str) -> (tempfile::TempDir, Result<(), String>) {
        let store = tempfile::tempdir().unwrap();
        let src = store
            .path()
            .join("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-chan.tar");
        std::fs::write(&src, tarball).unwrap();
        let staging = store.path().join("staging");
        std::fs::create_dir(&staging).unwrap();
        let store_dir = store.path().display().to_string();
        let env: BTreeMap<Vec<u8>, Vec<u8>> = [
            (
                "out",
                format!("{store_dir}/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-chan"),
            ),
            ("src", src.display().to_string()),
            ("channelName", name.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
        .collect();
        let req = BuiltinRequest {
            builder: "builtin:unpack-channel",
            env: &env,
            store_dir: &store_dir,
            staging: &staging,
            hashed_mirrors: &[],
            downloads: &Default::default(),
        };
        let r = run(&req, &mut |_| {}).await;
        (store, r)
    }

    fn out(store: &tempfile::TempDir) -> PathBuf {
        store
            .path()
            .join("staging/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-chan")
    }

    #[tokio::test]
    async fn unpacks_and_renames_in_every_compression() {
        let tar = tarball(&[
            M::Dir("nixexprs-1.0/"),
            M::File("nixexprs-1.0/default.nix", b"{ }", 0o644),
            M::File("nixexprs-1.0/bin/run", b"#!", 0o755),
            M::Symlink("nixexprs-1.0/link", "default.nix"),
            M::HardLink("nixexprs-1.0/again.nix", "nixexprs-1.0/default.nix"),
        ]);
        for data in [tar.clone(), gz(&tar), xz(&tar), bz2(&tar)] {
            let (store, r) = run_on(&data, "chan").await;
            r.unwrap();
            let o = out(&store).join("chan");
            assert_eq!(std::fs::read(o.join("default.nix")).unwrap(), b"{ }");
            assert_eq!(std::fs::read(o.join("again.nix")).unwrap(), b"{ }");
            assert_eq!(
                std::fs::read_link(o.join("link")).unwrap(),
                Path::new("default.nix")
            );
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(o.join("bin/run"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755);
            assert_eq!(std::fs::read_dir(out(&store)).unwrap().count(), 1);
        }
    }

    #[tokio::test]
    async fn refuses_members_that_escape() {
        for (members, words) in [
            (vec![M::File("../evil", b"x", 0o644)], "unsafe path"),
            (vec![M::File("a/../../evil", b"x", 0o644)], "unsafe path"),
            (vec![M::File("/tmp/evil", b"x", 0o644)], "unsafe path"),
            (
                vec![M::Symlink("a", "/tmp"), M::File("a/evil", b"x", 0o644)],
                "not a directory",
            ),
            (
                vec![M::Dir("a/"), M::HardLink("a/h", "/etc/passwd")],
                "outside the archive",
            ),
            (
                vec![M::Symlink("l", "/etc"), M::HardLink("h", "l/passwd")],
                "not a file extracted before it",
            ),
        ] {
            let (store, r) = run_on(&tarball(&members), "chan").await;
            let e = r.unwrap_err();
            assert!(e.contains(words), "{e}");
            assert!(!store.path().join("evil").exists());
            assert!(!store.path().join("staging/evil").exists());
        }
    }

    #[tokio::test]
    async fn needs_exactly_one_top_level_entry_and_a_plain_name() {
        let (_s, r) = run_on(
            &tarball(&[M::File("a", b"", 0o644), M::File("b", b"", 0o644)]),
            "chan",
        )
        .await;
        assert!(r.unwrap_err().ends_with("contains more than one file"));
        let (_s, r) = run_on(&tarball(&[]), "chan").await;
        assert!(r.unwrap_err().ends_with("contains more than one file"));
        let (_s, r) = run_on(&tarball(&[M::File("a", b"", 0o644)]), "../x").await;
        assert!(r.unwrap_err().starts_with("invalid channel name"));
        let (_s, r) = run_on(b"this is not a tarball at all, it is far too short", "c").await;
        assert!(r.is_err());
    }
}
