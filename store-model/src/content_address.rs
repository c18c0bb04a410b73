//! Content addresses: how a store object's path follows from its contents.
//!
//! A [`ContentAddress`] is a [`ContentAddressMethod`] (how the contents were hashed) plus the
//! [`Hash`](struct@Hash). Nix writes it in several forms, all handled here:
//!
//! * the database and narinfo form `text:sha256:<nix32>`, `fixed:r:sha256:<nix32>`,
//!   `fixed:sha256:<nix32>`, `fixed:git:sha1:<nix32>` ([`ContentAddress::render`],
//!   [`ContentAddress::parse`]);
//! * the method-and-algorithm form of derivation outputs, `r:sha256`, `text:sha256`, `sha256`,
//!   `git:sha1` ([`ContentAddressMethod::render_method_algo`],
//!   [`ContentAddressMethod::parse_method_algo`]);
//! * the method-and-algorithm form with the modern prefix, `fixed:r:sha256`
//!   ([`ContentAddressMethod::render_with_algo`], [`ContentAddressMethod::parse_with_algo`]);
//! * JSON, `{"hash": "<SRI>", "method": "nar" | "text" | "flat" | "git"}`
//!   ([`ContentAddress::to_json`], [`ContentAddress::from_json`]).
//!
//! [`ContentAddress::store_path`] computes the store path of a content-addressed object the way
//! Nix's `makeFixedOutputPathFromCA` does.

use std::fmt;

use serde_json::Value;
use thiserror::Error;

use crate::hash::{self, Hash, HashAlgo, HashEncoding, HashError};
use crate::store_path::{StoreDir, StorePath, StorePathError};

/// Why a content address, a method or a content-addressed path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContentAddressError {
    /// The text has no `<prefix>:` at all.
    #[error("not a content address because it is not in the form '<prefix>:<rest>': {0}")]
    NoPrefix(String),
    /// The prefix is neither `text` nor `fixed`.
    #[error(
        "content address prefix '{0}' is unrecognized. Recognized prefixes are 'text' or 'fixed'"
    )]
    UnknownPrefix(String),
    /// No `<algo>:` after the prefix.
    #[error("content address hash must be in form '<algo>:<hash>', but found: {0}")]
    NoAlgorithm(String),
    /// A method name (JSON form) that Nix does not know.
    #[error("unknown content address method '{0}'")]
    UnknownMethod(String),
    /// The hash or its algorithm name is malformed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// A JSON value does not have the shape of a content address.
    #[error("invalid JSON for a content address: {0}")]
    Json(String),
    /// Text-hashed objects cannot refer to themselves.
    #[error("self-reference not allowed with text hashing")]
    TextSelfReference,
    /// Text-hashed objects are always hashed with SHA-256.
    #[error("text hashing requires a SHA-256 hash, not {0}")]
    TextNotSha256(HashAlgo),
    /// Only NAR-hashed SHA-256 objects may have references.
    #[error(
        "fixed output '{0}' is not allowed to refer to other store paths (only 'r:sha256' content addresses may have references)"
    )]
    ReferencesNotAllowed(String),
    /// Git hashing takes SHA-1 or SHA-256 only.
    #[error("Git file ingestion must use SHA-1 or SHA-256 hash, but instead using: {0}")]
    GitAlgorithm(HashAlgo),
    /// The resulting store path name is invalid.
    #[error(transparent)]
    StorePath(#[from] StorePathError),
}

/// How the contents of a store object were hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentAddressMethod {
    /// A single regular file hashed as-is, whose path may name references (`text:`). Used for
    /// `builtins.toFile` and `.drv` files.
    Text,
    /// A single regular file hashed as-is (no prefix in method strings).
    Flat,
    /// The NAR serialisation of a file system object (`r:`, "recursive", JSON `nar`).
    NixArchive,
    /// The Git object hash of a file system object (`git:`, experimental `git-hashing`).
    Git,
}

impl ContentAddressMethod {
    /// All methods.
    pub const ALL: [ContentAddressMethod; 4] = [
        ContentAddressMethod::Text,
        ContentAddressMethod::Flat,
        ContentAddressMethod::NixArchive,
        ContentAddressMethod::Git,
    ];

    /// The JSON name: `text`, `flat`, `nar`, `git`.
    pub const fn render(self) -> &'static str {
        match self {
            ContentAddressMethod::Text => "text",
            ContentAddressMethod::Flat => "flat",
            ContentAddressMethod::NixArchive => "nar",
            ContentAddressMethod::Git => "git",
        }
    }

    /// Parses a JSON name (`text`, `flat`, `nar`, `git`).
    pub fn parse(name: &str) -> Result<ContentAddressMethod, ContentAddressError> {
        ContentAddressMethod::ALL
            .into_iter()
            .find(|m| m.render() == name)
            .ok_or_else(|| ContentAddressError::UnknownMethod(hash::truncate_for_error(name)))
    }

    /// The prefix used before an algorithm in derivation outputs: `text:`, `` (flat), `r:`,
    /// `git:`.
    pub const fn render_prefix(self) -> &'static str {
        match self {
            ContentAddressMethod::Text => "text:",
            ContentAddressMethod::Flat => "",
            ContentAddressMethod::NixArchive => "r:",
            ContentAddressMethod::Git => "git:",
        }
    }

    /// Strips a method prefix (`r:`, `git:`, `text:`) from `text`; no prefix means flat.
    pub fn parse_prefix(text: &str) -> (ContentAddressMethod, &str) {
        if let Some(rest) = text.strip_prefix("r:") {
            (ContentAddressMethod::NixArchive, rest)
        } else if let Some(rest) = text.strip_prefix("git:") {
            (ContentAddressMethod::Git, rest)
        } else if let Some(rest) = text.strip_prefix("text:") {
            (ContentAddressMethod::Text, rest)
        } else {
            (ContentAddressMethod::Flat, text)
        }
    }

    /// The derivation-output form, `r:sha256`, `text:sha256`, `sha256`, `git:sha1`.
    pub fn render_method_algo(self, algo: HashAlgo) -> String {
        format!("{}{}", self.render_prefix(), algo.name())
    }

    /// Parses the derivation-output form (`r:sha256`, `text:sha256`, `sha256`, `git:sha1`).
    pub fn parse_method_algo(text: &str) -> Result<(ContentAddressMethod, HashAlgo), HashError> {
        let (method, algo) = ContentAddressMethod::parse_prefix(text);
        Ok((method, HashAlgo::from_name(algo)?))
    }

    /// The modern prefix, which always says `text:` or `fixed:` first.
    pub const fn render_prefix_modern(self) -> &'static str {
        match self {
            ContentAddressMethod::Text => "text:",
            ContentAddressMethod::Flat => "fixed:",
            ContentAddressMethod::NixArchive => "fixed:r:",
            ContentAddressMethod::Git => "fixed:git:",
        }
    }

    /// `text:sha256`, `fixed:r:sha256`, `fixed:sha256`, `fixed:git:sha1` (Nix's
    /// `renderWithAlgo`, used in the worker protocol for `addToStore`).
    pub fn render_with_algo(self, algo: HashAlgo) -> String {
        format!("{}{}", self.render_prefix_modern(), algo.name())
    }

    /// Parses what [`ContentAddressMethod::render_with_algo`] prints.
    pub fn parse_with_algo(
        text: &str,
    ) -> Result<(ContentAddressMethod, HashAlgo), ContentAddressError> {
        let (method, algo, rest) = parse_method_and_algo(text, true)?;
        debug_assert!(rest.is_empty());
        Ok((method, algo))
    }
}

impl fmt::Display for ContentAddressMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.render())
    }
}

/// Parses `text:<algo>` or `fixed:[r:|git:]<algo>` followed by `:<rest>`, or, when
/// `algo_is_last`, by nothing.
fn parse_method_and_algo(
    whole: &str,
    algo_is_last: bool,
) -> Result<(ContentAddressMethod, HashAlgo, &str), ContentAddressError> {
    let (prefix, rest) = whole
        .split_once(':')
        .ok_or_else(|| ContentAddressError::NoPrefix(hash::truncate_for_error(whole)))?;
    let (method, rest) = match prefix {
        "text" => (ContentAddressMethod::Text, rest),
        "fixed" => {
            if let Some(r) = rest.strip_prefix("r:") {
                (ContentAddressMethod::NixArchive, r)
            } else if let Some(r) = rest.strip_prefix("git:") {
                (ContentAddressMethod::Git, r)
            } else {
                (ContentAddressMethod::Flat, rest)
            }
        }
        other => {
            return Err(ContentAddressError::UnknownPrefix(
                hash::truncate_for_error(other),
            ));
        }
    };
    let (algo, rest) = if algo_is_last {
        (rest, "")
    } else {
        rest.split_once(':')
            .ok_or_else(|| ContentAddressError::NoAlgorithm(hash::truncate_for_error(whole)))?
    };
    Ok((method, HashAlgo::from_name(algo)?, rest))
}

/// Text hashing is SHA-256 only (checked by Nix 2.8 when parsing, by Nix 2.35 when making the
/// path).
fn check_text_algo(
    method: ContentAddressMethod,
    algo: HashAlgo,
) -> Result<(), ContentAddressError> {
    if method == ContentAddressMethod::Text && algo != HashAlgo::Sha256 {
        return Err(ContentAddressError::TextNotSha256(algo));
    }
    Ok(())
}

/// A content address: the method and the hash of the contents.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentAddress {
    /// How the contents were hashed.
    pub method: ContentAddressMethod,
    /// The hash of the contents (of the file, its NAR or its Git object).
    pub hash: Hash,
}

impl ContentAddress {
    /// A content address from its parts.
    pub fn new(method: ContentAddressMethod, hash: Hash) -> ContentAddress {
        ContentAddress { method, hash }
    }

    /// The database and narinfo form: `text:sha256:<nix32>`, `fixed:r:sha256:<nix32>`, ...
    pub fn render(&self) -> String {
        format!(
            "{}{}",
            self.method.render_prefix_modern(),
            self.hash.to_nix32_prefixed()
        )
    }

    /// Parses the database and narinfo form; the digest may be base16, nix32 or base64 (told
    /// apart by length) but not SRI, as in Nix.
    pub fn parse(text: &str) -> Result<ContentAddress, ContentAddressError> {
        let (method, algo, digest) = parse_method_and_algo(text, false)?;
        let hash = Hash::parse_digest(algo, digest)?;
        Ok(ContentAddress { method, hash })
    }

    /// This content address, unless it is one Nix 2.8 refuses to parse: a text address whose
    /// hash is not SHA-256 ([`ContentAddressError::TextNotSha256`]).
    ///
    /// [`ContentAddress::parse`] and [`ContentAddress::new`] accept such an address, as Nix 2.35
    /// does (it refuses it only when computing the path, see [`ContentAddress::store_path`]).
    /// Readers of untrusted metadata (narinfo files, path-info JSON) use this, or
    /// [`ContentAddress::parse_validated`], so that they accept only what every Nix version
    /// accepts.
    pub fn validated(self) -> Result<ContentAddress, ContentAddressError> {
        check_text_algo(self.method, self.hash.algo())?;
        Ok(self)
    }

    /// [`ContentAddress::parse`] followed by [`ContentAddress::validated`], with Nix 2.8's order
    /// of checks: a text address with another algorithm than SHA-256 is refused as such before
    /// its digest is looked at.
    pub fn parse_validated(text: &str) -> Result<ContentAddress, ContentAddressError> {
        let (method, algo, digest) = parse_method_and_algo(text, false)?;
        check_text_algo(method, algo)?;
        let hash = Hash::parse_digest(algo, digest)?;
        Ok(ContentAddress { method, hash })
    }

    /// Parses the database form where the empty string means "no content address".
    pub fn parse_opt(text: &str) -> Result<Option<ContentAddress>, ContentAddressError> {
        if text.is_empty() {
            Ok(None)
        } else {
            ContentAddress::parse(text).map(Some)
        }
    }

    /// The derivation-output method-and-algorithm form: `r:sha256`, `sha256`, `text:sha256`.
    pub fn print_method_algo(&self) -> String {
        self.method.render_method_algo(self.hash.algo())
    }

    /// `{"hash": "<SRI>", "method": "<method>"}`.
    pub fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("hash".to_owned(), Value::String(self.hash.to_sri()));
        obj.insert(
            "method".to_owned(),
            Value::String(self.method.render().to_owned()),
        );
        Value::Object(obj)
    }

    /// Parses the JSON form. The object must have exactly the keys `hash` and `method`; the
    /// hash may be SRI or `algo:digest`.
    pub fn from_json(value: &Value) -> Result<ContentAddress, ContentAddressError> {
        let obj = value
            .as_object()
            .ok_or_else(|| ContentAddressError::Json("expected an object".to_owned()))?;
        if let Some(key) = obj.keys().find(|k| *k != "hash" && *k != "method") {
            return Err(ContentAddressError::Json(format!(
                "unexpected key '{}'",
                hash::truncate_for_error(key)
            )));
        }
        let get = |key: &str| {
            obj.get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| ContentAddressError::Json(format!("missing string key '{key}'")))
        };
        let method = ContentAddressMethod::parse(get("method")?)?;
        let hash = Hash::parse_any(get("hash")?, None)?;
        Ok(ContentAddress { method, hash })
    }

    /// The store path of an object with this content address (Nix's
    /// `makeFixedOutputPathFromCA`).
    ///
    /// Text objects may name references but not themselves and must use SHA-256. Fixed objects
    /// may name references (including themselves) only when NAR-hashed with SHA-256; Git hashing
    /// takes SHA-1 or SHA-256. Anything else is an error, never a panic.
    pub fn store_path<'a>(
        &self,
        store_dir: &StoreDir,
        name: &str,
        references: impl IntoIterator<Item = &'a StorePath>,
        self_reference: bool,
    ) -> Result<StorePath, ContentAddressError> {
        let algo = self.hash.algo();
        match self.method {
            ContentAddressMethod::Text => {
                if self_reference {
                    return Err(ContentAddressError::TextSelfReference);
                }
                if algo != HashAlgo::Sha256 {
                    return Err(ContentAddressError::TextNotSha256(algo));
                }
                let t = store_dir.make_type("text", references, false);
                Ok(store_dir.make_store_path(&t, &self.hash, name)?)
            }
            ContentAddressMethod::NixArchive if algo == HashAlgo::Sha256 => {
                let t = store_dir.make_type("source", references, self_reference);
                Ok(store_dir.make_store_path(&t, &self.hash, name)?)
            }
            method => {
                if method == ContentAddressMethod::Git
                    && algo != HashAlgo::Sha1
                    && algo != HashAlgo::Sha256
                {
                    return Err(ContentAddressError::GitAlgorithm(algo));
                }
                if self_reference || references.into_iter().next().is_some() {
                    return Err(ContentAddressError::ReferencesNotAllowed(
                        hash::truncate_for_error(name),
                    ));
                }
                let inner = format!(
                    "fixed:out:{}{}:",
                    method.render_prefix(),
                    self.hash.to_prefixed(HashEncoding::Base16)
                );
                let inner = Hash::sha256(hash::sha256(inner.as_bytes()));
                Ok(store_dir.make_store_path("output:out", &inner, name)?)
            }
        }
    }
}

impl fmt::Display for ContentAddress {
    /// The database form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::str::FromStr for ContentAddress {
    type Err = ContentAddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContentAddress::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = "../testdata/nix-2.35.2/libstore-tests/data/content-address";

    fn h(text: &str) -> Hash {
        Hash::parse_any(text, None).expect(text)
    }

    #[test]
    fn render_and_parse_database_form() {
        let sha = h("sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s");
        let cases = [
            (ContentAddressMethod::Text, "text:sha256:"),
            (ContentAddressMethod::Flat, "fixed:sha256:"),
            (ContentAddressMethod::NixArchive, "fixed:r:sha256:"),
            (ContentAddressMethod::Git, "fixed:git:sha256:"),
        ];
        for (method, prefix) in cases {
            let ca = ContentAddress::new(method, sha.clone());
            let text = ca.render();
            assert_eq!(
                text,
                format!("{prefix}1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s")
            );
            assert_eq!(ContentAddress::parse(&text).expect(&text), ca);
            // base16 digests are accepted too, as in Nix.
            let hex = format!("{prefix}{}", sha.encode(HashEncoding::Base16));
            assert_eq!(ContentAddress::parse(&hex).expect(&hex), ca);
        }
        let sha1 = Hash::digest(HashAlgo::Sha1, b"x");
        let ca = ContentAddress::new(ContentAddressMethod::Git, sha1);
        assert!(ca.render().starts_with("fixed:git:sha1:"));
        assert_eq!(ContentAddress::parse(&ca.render()).expect("git"), ca);
        assert_eq!(ContentAddress::parse_opt("").expect("empty"), None);
    }

    #[test]
    fn rejects_malformed_database_form() {
        let bad = [
            ("sha256:abc", "unrecognized"),
            ("nothing", "not a content address"),
            ("fixed:sha256", "'<algo>:<hash>'"),
            ("fixed:sha257:abc", "unknown hash algorithm"),
            ("fixed:r:sha256:abc", "wrong length"),
            (
                "text:sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
                "'<algo>:<hash>'",
            ),
        ];
        for (text, why) in bad {
            let err = ContentAddress::parse(text).expect_err(text).to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn validated_refuses_text_without_sha256() {
        let sha1 = Hash::digest(HashAlgo::Sha1, b"x");
        let text = ContentAddress::parse(&format!("text:{}", sha1.to_nix32_prefixed()))
            .expect("parse accepts what Nix 2.35 accepts");
        assert_eq!(
            text.validated(),
            Err(ContentAddressError::TextNotSha256(HashAlgo::Sha1))
        );
        // The algorithm is refused before the digest is read, as Nix 2.8 does.
        for digest in [sha1.to_nix32_prefixed(), "sha1:bad".to_owned()] {
            let text = format!("text:{digest}");
            assert_eq!(
                ContentAddress::parse_validated(&text),
                Err(ContentAddressError::TextNotSha256(HashAlgo::Sha1)),
                "{text}"
            );
        }
        let good = ContentAddress::new(
            ContentAddressMethod::Text,
            Hash::digest(HashAlgo::Sha256, b"x"),
        );
        assert_eq!(
            ContentAddress::parse_validated(&good.render()),
            Ok(good.clone())
        );
        for bad in ["text:sha256:bad", "fixed:sha256", "fixd:sha256:x"] {
            assert_eq!(
                ContentAddress::parse_validated(bad),
                ContentAddress::parse(bad),
                "{bad}"
            );
        }
        for ca in [
            good,
            ContentAddress::new(ContentAddressMethod::Flat, sha1.clone()),
            ContentAddress::new(ContentAddressMethod::NixArchive, sha1.clone()),
            ContentAddress::new(ContentAddressMethod::Git, sha1.clone()),
        ] {
            assert_eq!(ca.clone().validated(), Ok(ca));
        }
    }

    #[test]
    fn method_algo_forms() {
        let cases = [
            (
                ContentAddressMethod::NixArchive,
                HashAlgo::Sha256,
                "r:sha256",
                "fixed:r:sha256",
            ),
            (
                ContentAddressMethod::Flat,
                HashAlgo::Sha1,
                "sha1",
                "fixed:sha1",
            ),
            (
                ContentAddressMethod::Text,
                HashAlgo::Sha256,
                "text:sha256",
                "text:sha256",
            ),
            (
                ContentAddressMethod::Git,
                HashAlgo::Sha1,
                "git:sha1",
                "fixed:git:sha1",
            ),
        ];
        for (method, algo, short, modern) in cases {
            assert_eq!(method.render_method_algo(algo), short);
            assert_eq!(
                ContentAddressMethod::parse_method_algo(short).expect(short),
                (method, algo)
            );
            assert_eq!(method.render_with_algo(algo), modern);
            assert_eq!(
                ContentAddressMethod::parse_with_algo(modern).expect(modern),
                (method, algo)
            );
        }
        assert!(ContentAddressMethod::parse_method_algo("r:sha255").is_err());
        assert!(ContentAddressMethod::parse_with_algo("r:sha256").is_err());
        assert!(ContentAddressMethod::parse("recursive").is_err());
    }

    #[test]
    fn golden_json_vectors() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
        if !dir.exists() {
            eprintln!("skipped: Nix golden vectors not found at {}", dir.display());
            return;
        }
        let mut seen = 0;
        for (file, method) in [
            ("nar.json", ContentAddressMethod::NixArchive),
            ("text.json", ContentAddressMethod::Text),
        ] {
            let text = std::fs::read_to_string(dir.join(file)).expect("read vector");
            let value: Value = serde_json::from_str(&text).expect("json");
            let ca = ContentAddress::from_json(&value).expect(file);
            assert_eq!(ca.method, method);
            assert_eq!(ca.to_json(), value, "{file}");
            let rendered = ca.render();
            assert_eq!(ContentAddress::parse(&rendered).expect("render"), ca);
            seen += 1;
        }
        assert_eq!(seen, 2);
        // Nix 2.35's worker-protocol vector has the same content addresses in database form.
        let wp = dir.join("../worker-protocol/content-address.json");
        if let Ok(text) = std::fs::read_to_string(&wp) {
            let value: Value = serde_json::from_str(&text).expect("json");
            for item in value.as_array().into_iter().flatten() {
                let ca = ContentAddress::from_json(item).expect("wp item");
                assert_eq!(ca.to_json(), *item);
            }
        }
    }

    #[test]
    fn json_rejects_bad_shapes() {
        let bad = [
            serde_json::json!("text:sha256:abc"),
            serde_json::json!({"method": "nar"}),
            serde_json::json!({"method": "recursive", "hash": "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="}),
            serde_json::json!({"method": "nar", "hash": "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", "x": 1}),
        ];
        for v in bad {
            assert!(ContentAddress::from_json(&v).is_err(), "{v}");
        }
    }

    #[test]
    fn store_paths_agree_with_nix() {
        // Same expectations as `store_path::tests::paths_agree_with_nix` (Nix 2.8 output for
        // the file `x` containing `hello`), reached through content addresses.
        let dir = StoreDir::default();
        let cases = [
            (
                "fixed:r:sha256:0sg9f58l1jj88w6pdrfdpj5x9b1zrwszk84j81zvby36q9whhhqa",
                "9x7xmib0f869wv54vn5c2f7h0h5f327b-x",
            ),
            (
                "fixed:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic",
                "62iir8mnhn874ykvq16v9l3kvx1010qs-x",
            ),
            (
                "fixed:r:sha1:x5zjnshbjrrhpg88n2da87884cmn2i2i",
                "s8yb2pkdb2cylk9vrjb1iqq01mpsf0xp-x",
            ),
        ];
        for (ca, path) in cases {
            let ca = ContentAddress::parse(ca).expect(ca);
            assert_eq!(
                ca.store_path(&dir, "x", [], false)
                    .expect("path")
                    .base_name(),
                path
            );
        }
        let text = ContentAddress::new(
            ContentAddressMethod::Text,
            Hash::digest(HashAlgo::Sha256, b"text"),
        );
        assert_eq!(
            text.store_path(&dir, "t", [], false)
                .expect("text")
                .base_name(),
            "gmzdrk8k0jbnbvvdf0517iyixgkvqnil-t"
        );
    }

    #[test]
    fn store_path_reference_rules() {
        let dir = StoreDir::default();
        let r = StorePath::from_base_name("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-a").expect("ref");
        let sha256 = Hash::digest(HashAlgo::Sha256, b"x");
        let sha512 = Hash::digest(HashAlgo::Sha512, b"x");
        let md5 = Hash::digest(HashAlgo::Md5, b"x");
        let ca = |m, h: &Hash| ContentAddress::new(m, h.clone());

        let text = ca(ContentAddressMethod::Text, &sha256);
        assert!(text.store_path(&dir, "t", [&r], false).is_ok());
        assert_eq!(
            text.store_path(&dir, "t", [], true),
            Err(ContentAddressError::TextSelfReference)
        );
        assert_eq!(
            ca(ContentAddressMethod::Text, &sha512).store_path(&dir, "t", [], false),
            Err(ContentAddressError::TextNotSha256(HashAlgo::Sha512))
        );
        let nar = ca(ContentAddressMethod::NixArchive, &sha256);
        let with_refs = nar.store_path(&dir, "s", [&r], true).expect("source refs");
        assert_ne!(
            with_refs,
            nar.store_path(&dir, "s", [], false).expect("source")
        );
        for bad in [
            ca(ContentAddressMethod::Flat, &sha256),
            ca(ContentAddressMethod::NixArchive, &sha512),
            ca(
                ContentAddressMethod::Git,
                &Hash::digest(HashAlgo::Sha1, b"x"),
            ),
        ] {
            assert!(matches!(
                bad.store_path(&dir, "f", [&r], false),
                Err(ContentAddressError::ReferencesNotAllowed(_))
            ));
            assert!(bad.store_path(&dir, "f", [], true).is_err());
            assert!(bad.store_path(&dir, "f", [], false).is_ok());
        }
        assert_eq!(
            ca(ContentAddressMethod::Git, &md5).store_path(&dir, "g", [], false),
            Err(ContentAddressError::GitAlgorithm(HashAlgo::Md5))
        );
        assert!(matches!(
            nar.store_path(&dir, "bad name", [], false),
            Err(ContentAddressError::StorePath(_))
        ));
    }
}
