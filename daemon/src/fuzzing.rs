//! Entry points for the fuzz targets in `fuzz/` (a cargo-fuzz crate outside the workspace), and
//! for nothing else: hidden from the documentation, not part of the daemon's API, and changed
//! with the targets whenever they need it. Each function calls the daemon's real code.

use std::path::Path;

/// `builtin:unpack-channel`'s extraction: unpacks the tarball `input` (gzip, bzip2, xz or
/// uncompressed, told by its first bytes) into the existing directory `dest`, with the
/// builder's checks that nothing lands outside `dest`. The error is the builder's message.
pub fn unpack_tarball(input: &[u8], dest: &Path) -> Result<(), String> {
    crate::build::builtins::unpack_channel::unpack_tarball(input, dest)
}

/// The garbage collector's socket: the store path a client's line names (the line without its
/// newline), for the store directory `/nix/store`.
pub fn gc_socket_root(line: &[u8]) -> Option<String> {
    let dir = pkgchain_store_model::store_path::StoreDir::new("/nix/store").ok()?;
    crate::gc_socket::root_of_line(line, &dir)
        .ok()
        .map(|p| p.base_name().to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unpacks_through_the_builder_code() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "chan/file", &b"hi"[..]).unwrap();
        let tarball = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack_tarball(&tarball, dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("chan/file")).unwrap(), b"hi");
        assert!(unpack_tarball(b"not a tarball", dir.path()).is_err());
    }
}
