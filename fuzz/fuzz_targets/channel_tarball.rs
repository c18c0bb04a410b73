#![no_main]
//! Extracts arbitrary bytes as a channel tarball (gzip, bzip2, xz or plain, as
//! `builtin:unpack-channel` reads it) into `dest` inside a fresh temporary directory, with the
//! daemon's own code (`pkgchain_daemon::fuzzing::unpack_tarball`).
//!
//! Whether it succeeds or fails, nothing may panic and nothing may land outside `dest`: the
//! temporary directory must still hold `dest` alone, `dest` must still be a real directory, and
//! below it there may only be directories, symlinks and regular files with no set-id bits and
//! no write permission for group or others (the builder makes modes 0755 or 0644).
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::TempDir::new().expect("a temporary directory");
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).expect("dest");
    let result = pkgchain_daemon::fuzzing::unpack_tarball(data, &dest);
    if let Err(e) = &result {
        assert!(!e.is_empty(), "an empty error");
    }
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("list the temporary directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(
        names,
        ["dest"],
        "something was extracted outside dest ({result:?})"
    );
    let mut stack: Vec<PathBuf> = vec![dest];
    while let Some(dir) = stack.pop() {
        let meta = std::fs::symlink_metadata(&dir).expect("stat a directory");
        assert!(meta.is_dir(), "{} is no longer a directory", dir.display());
        for entry in std::fs::read_dir(&dir).expect("list a directory") {
            let path = entry.expect("an entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat an entry");
            let kind = meta.file_type();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let mode = meta.permissions().mode();
                assert_eq!(mode & 0o7022, 0, "{} has mode {mode:o}", path.display());
            } else {
                assert!(kind.is_symlink(), "{} is a special file", path.display());
            }
        }
    }
});
