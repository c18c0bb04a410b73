//! Store paths: `<store dir>/<32 nix32 chars>-<name>`.
//!
//! A [`StorePath`] is the part after the store directory (digest and name); a [`StoreDir`] turns
//! it into an absolute path and back. Path computation follows Nix's `makeStorePath`: the digest
//! is SHA-256 of `type:sha256:<hex>:<store dir>:<name>` folded to 20 bytes.

use std::fmt;

use thiserror::Error;

use crate::hash::{self, Hash, HashAlgo};
use crate::nixbase32;

/// Bytes in a store path digest.
pub const DIGEST_SIZE: usize = 20;
/// Characters of the digest in nix32.
pub const HASH_PART_LEN: usize = 32;
/// Longest name Nix accepts (`StorePath::MaxPathLen`).
pub const MAX_NAME_LEN: usize = 211;

/// Why a store path or a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorePathError {
    /// Not inside the store directory.
    #[error("path '{0}' is not in the Nix store")]
    NotInStore(String),
    /// Too short to hold a digest, a dash and a name.
    #[error("path '{0}' is not a valid store path: too short")]
    TooShort(String),
    /// The digest is not valid nix32.
    #[error("path '{0}' is not a valid store path: invalid hash part")]
    BadHashPart(String),
    /// No dash after the digest.
    #[error("path '{0}' is not a valid store path: missing '-' after the hash part")]
    MissingDash(String),
    /// The name is empty.
    #[error("store path name must not be empty")]
    EmptyName,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("store path name '{0}' must be no longer than {MAX_NAME_LEN} characters")]
    NameTooLong(String),
    /// The name contains a character outside `[A-Za-z0-9+-._?=]`.
    #[error("store path name '{name}' contains illegal character '{character}'")]
    IllegalCharacter {
        /// The name (possibly shortened).
        name: String,
        /// The first illegal character.
        character: char,
    },
    /// The name is `.`/`..` or its first dash-separated component is.
    #[error(
        "store path name '{0}' is not valid: it must not be '.' or '..' or start with '.-' or '..-'"
    )]
    DotName(String),
    /// The absolute path has a component after the store path.
    #[error("path '{0}' is inside a store path, not a store path itself")]
    HasSubpath(String),
}

/// Checks a store path name as Nix 2.35 does.
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong(hash::truncate_for_error(name)));
    }
    let bytes = name.as_bytes();
    if bytes[0] == b'.'
        && (bytes.len() == 1
            || bytes[1] == b'-'
            || (bytes[1] == b'.' && (bytes.len() == 2 || bytes[2] == b'-')))
    {
        return Err(StorePathError::DotName(name.to_owned()));
    }
    if let Some(&c) = bytes.iter().find(|&&c| !is_name_char(c)) {
        return Err(StorePathError::IllegalCharacter {
            name: hash::truncate_for_error(&String::from_utf8_lossy(bytes)),
            character: c as char,
        });
    }
    Ok(())
}

/// Whether `c` may appear in a store path name.
pub const fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.' | b'_' | b'?' | b'=')
}

/// A store path without its store directory: a 20-byte digest and a name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    /// Stored as its printed base name so ordering matches Nix (by hash part, then name).
    base_name: String,
}

impl StorePath {
    /// Builds a store path from a digest and a name, validating the name.
    pub fn from_parts(digest: &[u8; DIGEST_SIZE], name: &str) -> Result<StorePath, StorePathError> {
        validate_name(name)?;
        let mut base_name = nixbase32::encode(digest);
        base_name.push('-');
        base_name.push_str(name);
        Ok(StorePath { base_name })
    }

    /// Parses `<hash>-<name>` (no directory).
    pub fn from_base_name(base_name: &str) -> Result<StorePath, StorePathError> {
        StorePath::check_base_name(base_name)?;
        Ok(StorePath {
            base_name: base_name.to_owned(),
        })
    }

    /// Checks that `base_name` is a valid `<hash>-<name>` without making a [`StorePath`] (for
    /// readers of many paths that keep the text elsewhere).
    pub fn check_base_name(base_name: &str) -> Result<(), StorePathError> {
        let bytes = base_name.as_bytes();
        if bytes.len() < HASH_PART_LEN + 2 {
            return Err(StorePathError::TooShort(hash::truncate_for_error(
                base_name,
            )));
        }
        // 32 nix32 digits are exactly 160 bits: any 32 digits decode to a digest (no padding
        // bits to check; `every_hash_part_of_nix32_digits_decodes` says so).
        if !nixbase32::is_nix32(&bytes[..HASH_PART_LEN]) {
            return Err(StorePathError::BadHashPart(hash::truncate_for_error(
                base_name,
            )));
        }
        if bytes[HASH_PART_LEN] != b'-' {
            return Err(StorePathError::MissingDash(hash::truncate_for_error(
                base_name,
            )));
        }
        validate_name(&base_name[HASH_PART_LEN + 1..])
    }

    /// The 32-character nix32 digest.
    pub fn hash_part(&self) -> &str {
        &self.base_name[..HASH_PART_LEN]
    }

    /// The digest bytes.
    pub fn digest(&self) -> [u8; DIGEST_SIZE] {
        // The hash part was validated on construction.
        nixbase32::decode_fixed(self.hash_part().as_bytes()).unwrap_or([0; DIGEST_SIZE])
    }

    /// The name after the dash.
    pub fn name(&self) -> &str {
        &self.base_name[HASH_PART_LEN + 1..]
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.base_name
    }

    /// Whether the name ends in `.drv`.
    pub fn is_derivation(&self) -> bool {
        self.name().ends_with(".drv")
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.base_name)
    }
}

/// The store directory, `/nix/store` unless moved with `NIX_STORE_DIR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl Default for StoreDir {
    fn default() -> Self {
        StoreDir("/nix/store".to_owned())
    }
}

impl StoreDir {
    /// A store directory; a trailing slash is removed. It must be absolute.
    pub fn new(dir: &str) -> Result<StoreDir, StorePathError> {
        let trimmed = dir.trim_end_matches('/');
        if !trimmed.starts_with('/') {
            return Err(StorePathError::NotInStore(hash::truncate_for_error(dir)));
        }
        Ok(StoreDir(trimmed.to_owned()))
    }

    /// The directory as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute path of a store path.
    pub fn display(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path.base_name)
    }

    /// Parses an absolute store path (exactly one component below the store directory).
    pub fn parse(&self, path: &str) -> Result<StorePath, StorePathError> {
        let rest = path
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(hash::truncate_for_error(path)))?;
        if rest.contains('/') {
            return Err(StorePathError::HasSubpath(hash::truncate_for_error(path)));
        }
        StorePath::from_base_name(rest)
    }

    /// Splits a path inside the store into its store path and the remainder (`""` or `/...`).
    pub fn parse_with_subpath<'a>(
        &self,
        path: &'a str,
    ) -> Result<(StorePath, &'a str), StorePathError> {
        let rest = path
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(hash::truncate_for_error(path)))?;
        let (base, sub) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        Ok((StorePath::from_base_name(base)?, sub))
    }

    /// Nix's `makeStorePath`: `type` is e.g. `source`, `text:<refs>`, `output:out`.
    pub fn make_store_path(
        &self,
        path_type: &str,
        inner: &Hash,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        let fingerprint = format!(
            "{}:{}:{}:{}",
            path_type,
            inner.to_base16_prefixed(),
            self.0,
            name
        );
        let digest = hash::sha256(fingerprint.as_bytes());
        let folded = hash::compress(&digest, DIGEST_SIZE);
        let mut d = [0u8; DIGEST_SIZE];
        d.copy_from_slice(&folded);
        StorePath::from_parts(&d, name)
    }

    /// `type:ref1:ref2...[:self]` with references printed as absolute paths in sorted order.
    pub fn make_type<'a>(
        &self,
        base: &str,
        references: impl IntoIterator<Item = &'a StorePath>,
        self_reference: bool,
    ) -> String {
        let mut refs: Vec<&StorePath> = references.into_iter().collect();
        refs.sort();
        let mut t = base.to_owned();
        for r in refs {
            t.push(':');
            t.push_str(&self.display(r));
        }
        if self_reference {
            t.push_str(":self");
        }
        t
    }

    /// The path of a derivation output (`makeOutputPath`): name gets `-<output>` unless `out`.
    pub fn make_output_path(
        &self,
        output_name: &str,
        drv_hash: &Hash,
        drv_name: &str,
    ) -> Result<StorePath, StorePathError> {
        let name = output_path_name(drv_name, output_name);
        self.make_store_path(&format!("output:{output_name}"), drv_hash, &name)
    }

    /// A `text:` content-addressed path (`builtins.toFile`, `.drv` files): SHA-256 only.
    pub fn make_text_path<'a>(
        &self,
        name: &str,
        sha256: &Hash,
        references: impl IntoIterator<Item = &'a StorePath>,
    ) -> Result<StorePath, StorePathError> {
        debug_assert_eq!(sha256.algo(), HashAlgo::Sha256);
        let t = self.make_type("text", references, false);
        self.make_store_path(&t, sha256, name)
    }

    /// A fixed-output path (`makeFixedOutputPath`) for flat or recursive (NAR) ingestion.
    ///
    /// Recursive SHA-256 is a `source` path and may have references; any other combination must
    /// have none (Nix asserts that) and hashes `fixed:out:[r:]<algo>:<hex>:`.
    pub fn make_fixed_output_path<'a>(
        &self,
        name: &str,
        recursive: bool,
        hash: &Hash,
        references: impl IntoIterator<Item = &'a StorePath>,
        self_reference: bool,
    ) -> Result<StorePath, StorePathError> {
        if recursive && hash.algo() == HashAlgo::Sha256 {
            let t = self.make_type("source", references, self_reference);
            self.make_store_path(&t, hash, name)
        } else {
            let inner = format!(
                "fixed:out:{}{}:",
                if recursive { "r:" } else { "" },
                hash.to_base16_prefixed()
            );
            let inner = Hash::sha256(hash::sha256(inner.as_bytes()));
            self.make_store_path("output:out", &inner, name)
        }
    }
}

/// The name of an output path: `name` for `out`, else `name-output`.
pub fn output_path_name(drv_name: &str, output_name: &str) -> String {
    if output_name == "out" {
        drv_name.to_owned()
    } else {
        format!("{drv_name}-{output_name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hash_part_of_nix32_digits_decodes() {
        // The highest digit in every position, and each digit in the first and last.
        assert_eq!(HASH_PART_LEN * 5, DIGEST_SIZE * 8);
        let digits = b"0123456789abcdfghijklmnpqrsvwxyz";
        let mut texts = vec![[b'z'; HASH_PART_LEN]];
        for &d in digits {
            let mut first = [b'0'; HASH_PART_LEN];
            first[0] = d;
            let mut last = [b'0'; HASH_PART_LEN];
            last[HASH_PART_LEN - 1] = d;
            texts.extend([first, last]);
        }
        for text in texts {
            assert!(nixbase32::decode_fixed::<DIGEST_SIZE>(&text).is_ok());
            let name = format!("{}-x", std::str::from_utf8(&text).expect("ascii"));
            assert!(StorePath::check_base_name(&name).is_ok(), "{name}");
        }
        assert!(StorePath::check_base_name("e0000000000000000000000000000000-x").is_err());
    }

    #[test]
    fn parse_and_print() {
        let dir = StoreDir::default();
        let p = dir
            .parse("/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo.drv")
            .expect("valid");
        assert_eq!(p.hash_part(), "g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q");
        assert_eq!(p.name(), "foo.drv");
        assert!(p.is_derivation());
        assert_eq!(
            dir.display(&p),
            "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo.drv"
        );
        let q = StorePath::from_parts(&p.digest(), "foo.drv").expect("same");
        assert_eq!(p, q);
    }

    #[test]
    fn golden_store_path_vector() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/nix-2.35.2/libstore-tests/data/store-path/simple.json");
        let Ok(text) = std::fs::read_to_string(&file) else {
            eprintln!("skipped: Nix golden vector not found at {}", file.display());
            return;
        };
        let base: String = serde_json::from_str(&text).expect("json");
        let p = StorePath::from_base_name(&base).expect("valid");
        assert_eq!(p.to_string(), base);
    }

    #[test]
    fn rejects_bad_paths() {
        let dir = StoreDir::default();
        let bad = [
            ("/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q", "too short"),
            (
                "/nix/store/e1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo",
                "invalid hash part",
            ),
            (
                "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q_foo",
                "missing '-'",
            ),
            (
                "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-fo o",
                "illegal character",
            ),
            (
                "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-..",
                "'.' or '..'",
            ),
            (
                "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-.-x",
                "'.' or '..'",
            ),
            ("/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-", "too short"),
            (
                "/nix/stor/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo",
                "not in the Nix store",
            ),
            (
                "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo/bin",
                "inside a store path",
            ),
        ];
        for (path, why) in bad {
            let err = dir.parse(path).expect_err(path).to_string();
            assert!(err.contains(why), "{path}: {err}");
        }
        let long = format!("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-{}", "a".repeat(212));
        assert!(matches!(
            StorePath::from_base_name(&long),
            Err(StorePathError::NameTooLong(_))
        ));
        assert!(StorePath::from_base_name("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-.hidden").is_ok());
        assert!(StorePath::from_base_name("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-..foo").is_ok());
    }

    #[test]
    fn paths_agree_with_nix() {
        // Each expected path was printed by Nix 2.8 for the file `x` containing `hello`:
        // `nix-store --add x`, `--add-fixed sha256 x`, `--add-fixed --recursive sha1 x`, and
        // `nix-instantiate --eval -E 'builtins.toFile "t" "text"'`.
        let dir = StoreDir::default();
        let parse = |t: &str| Hash::parse_any(t, None).expect(t);
        let source = dir
            .make_fixed_output_path(
                "x",
                true,
                &parse("sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa"),
                [],
                false,
            )
            .expect("source");
        assert_eq!(source.base_name(), "9x7xmib0f869wv54vn5c2f7h0h5f327b-x");
        let flat = dir
            .make_fixed_output_path(
                "x",
                false,
                &parse("sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic"),
                [],
                false,
            )
            .expect("flat");
        assert_eq!(flat.base_name(), "62iir8mnhn874ykvq16v9l3kvx1010qs-x");
        let recursive_sha1 = dir
            .make_fixed_output_path(
                "x",
                true,
                &parse("sha1:x5zjnshbjrrhpg88n2da87884cmn2i2i"),
                [],
                false,
            )
            .expect("recursive sha1");
        assert_eq!(
            recursive_sha1.base_name(),
            "s8yb2pkdb2cylk9vrjb1iqq01mpsf0xp-x"
        );
        let text = dir
            .make_text_path("t", &Hash::digest(HashAlgo::Sha256, b"text"), [])
            .expect("text");
        assert_eq!(text.base_name(), "gmzdrk8k0jbnbvvdf0517iyixgkvqnil-t");
    }

    #[test]
    fn text_path_references_are_sorted() {
        let dir = StoreDir::default();
        let a = StorePath::from_base_name("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-a").expect("a");
        let b = StorePath::from_base_name("00000000000000000000000000000000-b").expect("b");
        let h = Hash::digest(HashAlgo::Sha256, b"text");
        let t1 = dir.make_text_path("t", &h, [&a, &b]).expect("t1");
        let t2 = dir.make_text_path("t", &h, [&b, &a]).expect("t2");
        assert_eq!(t1, t2);
        assert_ne!(t1, dir.make_text_path("t", &h, [&a]).expect("t3"));
    }
}
