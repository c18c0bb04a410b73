//! Binary-cache `.narinfo` files, store path fingerprints, and their signatures.
//!
//! A narinfo is a list of `Key: value` lines, each ending in `\n`:
//!
//! ```text
//! StorePath: /nix/store/<hash>-<name>
//! URL: nar/<filehash>.nar.xz
//! Compression: xz
//! FileHash: sha256:<nix32>
//! FileSize: <bytes>
//! NarHash: sha256:<nix32>
//! NarSize: <bytes>
//! References: <base name> <base name> ...
//! Deriver: <base name>.drv
//! Sig: <key name>:<base64>
//! CA: fixed:r:sha256:<nix32>
//! ```
//!
//! What Nix (2.8 to 2.35) does, and what this parser does:
//!
//! * `StorePath`, `NarHash`, a non-empty `URL` and a non-zero `NarSize` are required; everything
//!   else is optional. A missing or empty `Compression` means `bzip2`.
//! * Unknown keys are ignored, as Nix ignores them (their lines still count toward the limits).
//!   `System` (printed by Nix before 2.4, ignored since) is kept and printed after `Deriver`.
//! * `Sig` may repeat; signatures form a set, printed in order (key name, then bytes) without
//!   duplicates, as Nix does.
//! * Nix rejects a second `CA` line and a second non-empty `References` line, and for every other
//!   key silently keeps the last value. **This parser rejects any repeated key except `Sig`**, so
//!   that two readers can never disagree about which value a file holds.
//! * `NarHash` and `FileHash` take what Nix's `Hash::parseAnyPrefixed` takes: `algo:` followed by
//!   base16, nix32 or base64, or an SRI hash. They print as `algo:<nix32>`.
//! * `References` are base names separated by spaces (runs of spaces are allowed); the set may be
//!   empty and prints as `References: ` (with the trailing space, as Nix writes it).
//! * `Deriver: unknown-deriver` means no deriver.
//! * `CA` is a [`ContentAddress`] (`text:sha256:<hash>` or `fixed:[r:|git:]<algo>:<hash>`); an
//!   empty value means none. The digest may be base16, nix32 or base64, as Nix's
//!   `ContentAddress::parse` allows; it prints as nix32. A text address must use SHA-256, as
//!   Nix 2.8 requires ([`ContentAddress::parse_validated`]).
//! * Nix takes the value to start two bytes after the colon whatever the byte after the colon
//!   is; this parser requires that byte to be a space. A file whose last line lacks its `\n` is
//!   rejected by both.
//! * Everything is bounded by [`NarInfoLimits`]; errors name the line and the field.
//!
//! Printing ([`NarInfo::to_text`], `Display`) writes Nix's field order, so a narinfo written by Nix
//! (or cache.nixos.org) parses and prints back byte for byte.

use std::collections::BTreeSet;
use std::fmt;

use thiserror::Error;

use crate::content_address::{ContentAddress, ContentAddressError};
use crate::hash::{self, Hash, HashError};
use crate::path_info::ValidPathInfo;
use crate::signature::{KeyError, SecretKey, Signature, TrustedKeys};
use crate::store_path::{StoreDir, StorePath, StorePathError};

/// Bounds the parser enforces on untrusted narinfo text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarInfoLimits {
    /// Largest whole file in bytes.
    pub max_size: usize,
    /// Longest line in bytes, without its `\n`.
    pub max_line_len: usize,
    /// Most references.
    pub max_references: usize,
    /// Most `Sig` lines.
    pub max_signatures: usize,
}

impl Default for NarInfoLimits {
    /// 4 MiB per file, 1 MiB per line, 16384 references, 64 signatures: well above anything
    /// cache.nixos.org serves (the largest closures have a few thousand references).
    fn default() -> Self {
        NarInfoLimits {
            max_size: 4 << 20,
            max_line_len: 1 << 20,
            max_references: 16384,
            max_signatures: 64,
        }
    }
}

/// Why a narinfo could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NarInfoError {
    /// The whole file exceeds [`NarInfoLimits::max_size`].
    #[error("narinfo is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Bytes given.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A line exceeds [`NarInfoLimits::max_line_len`].
    #[error("narinfo line {line} is longer than the limit of {max} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// A line is not UTF-8.
    #[error("narinfo line {line} is not valid UTF-8")]
    NotUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// A line has no `:`.
    #[error("narinfo line {line} is not of the form '<Key>: <value>': expecting ':'")]
    MissingColon {
        /// 1-based line number.
        line: usize,
    },
    /// The `:` is not followed by a space.
    #[error("narinfo line {line} is not of the form '<Key>: <value>': expecting a space after ':'")]
    MissingSpace {
        /// 1-based line number.
        line: usize,
    },
    /// The last line does not end in `\n`.
    #[error("narinfo line {line} does not end with '\\n'")]
    MissingNewline {
        /// 1-based line number.
        line: usize,
    },
    /// A key other than `Sig` appears twice.
    #[error("narinfo line {line}: duplicate field '{field}'")]
    DuplicateField {
        /// 1-based line number of the second occurrence.
        line: usize,
        /// The key.
        field: &'static str,
    },
    /// A hash field does not parse.
    #[error("narinfo line {line}, field '{field}': bad hash: {source}")]
    BadHash {
        /// 1-based line number.
        line: usize,
        /// `NarHash` or `FileHash`.
        field: &'static str,
        /// What was wrong.
        source: HashError,
    },
    /// A size field is not a decimal number that fits 64 bits.
    #[error("narinfo line {line}, field '{field}': invalid number '{value}'")]
    BadNumber {
        /// 1-based line number.
        line: usize,
        /// `NarSize` or `FileSize`.
        field: &'static str,
        /// The value (possibly shortened).
        value: String,
    },
    /// A store path field does not parse.
    #[error("narinfo line {line}, field '{field}': bad store path: {source}")]
    BadStorePath {
        /// 1-based line number.
        line: usize,
        /// `StorePath`, `References` or `Deriver`.
        field: &'static str,
        /// What was wrong.
        source: StorePathError,
    },
    /// A `Sig` does not parse.
    #[error("narinfo line {line}, field 'Sig': {source}")]
    BadSignature {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        source: KeyError,
    },
    /// The `CA` field does not parse.
    #[error("narinfo line {line}, field 'CA': {source}")]
    BadContentAddress {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        source: ContentAddressError,
    },
    /// More references than [`NarInfoLimits::max_references`].
    #[error("narinfo line {line}, field 'References': more than {max} references")]
    TooManyReferences {
        /// 1-based line number.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// More `Sig` lines than [`NarInfoLimits::max_signatures`].
    #[error("narinfo line {line}, field 'Sig': more than {max} signatures")]
    TooManySignatures {
        /// 1-based line number.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// A required field is absent (`StorePath`, `NarHash`, `URL`, `NarSize`).
    #[error("narinfo is missing the required field '{0}'")]
    MissingField(&'static str),
    /// `URL` is present but empty.
    #[error("narinfo field 'URL' is empty")]
    EmptyUrl,
    /// `NarSize` is zero.
    #[error("narinfo field 'NarSize' is zero")]
    ZeroNarSize,
}

/// Why a fingerprint cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FingerprintError {
    /// Nix refuses to fingerprint a path whose NAR size is unknown (zero).
    #[error("cannot calculate fingerprint of path '{0}' because its size is not known")]
    UnknownNarSize(String),
}

/// Nix's `ValidPathInfo::fingerprint`, the message a store path signature signs:
/// `1;<store path>;<algo>:<nix32 NAR hash>;<NAR size>;<references, comma-separated>`.
///
/// Paths are absolute; references are sorted (as strings, which is the order of
/// [`StorePath`]). Nix 2.35 prints the NAR hash with whatever algorithm it has (it is SHA-256
/// for every path Nix makes) and refuses only a zero NAR size.
pub fn fingerprint<'a>(
    store_dir: &StoreDir,
    path: &StorePath,
    nar_hash: &Hash,
    nar_size: u64,
    references: impl IntoIterator<Item = &'a StorePath>,
) -> Result<String, FingerprintError> {
    if nar_size == 0 {
        return Err(FingerprintError::UnknownNarSize(store_dir.display(path)));
    }
    let mut refs: Vec<&StorePath> = references.into_iter().collect();
    refs.sort();
    refs.dedup();
    let mut out = format!(
        "1;{};{};{};",
        store_dir.display(path),
        nar_hash.to_nix32_prefixed(),
        nar_size
    );
    for (i, r) in refs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(store_dir.as_str());
        out.push('/');
        out.push_str(r.base_name());
    }
    Ok(out)
}

/// Whether `path` is the path its content address and references determine (Nix's
/// `ValidPathInfo::isContentAddressed`); such paths need no signature.
///
/// `references` may contain `path` itself: that is the self-reference, which only a NAR-hashed
/// SHA-256 address may have. The path is computed by [`ContentAddress::store_path`]; where it
/// cannot be computed the answer is `false`, so the path still needs a signature. That is the
/// case for the addresses Nix could not have made a path from: a text address with a
/// self-reference or without SHA-256, a flat or non-SHA-256 address with references, and a Git
/// address with references (Nix computes Git paths like flat ones, which cannot name
/// references) or with another algorithm than SHA-1 or SHA-256 (Nix refuses those).
pub fn is_content_addressed(
    store_dir: &StoreDir,
    path: &StorePath,
    ca: &ContentAddress,
    references: &BTreeSet<StorePath>,
) -> bool {
    let self_ref = references.contains(path);
    let others = references.iter().filter(|r| *r != path);
    ca.store_path(store_dir, path.name(), others, self_ref)
        .is_ok_and(|p| &p == path)
}

/// A parsed `.narinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// The store directory `StorePath` is in.
    pub store_dir: StoreDir,
    /// `StorePath` (required).
    pub store_path: StorePath,
    /// `URL` of the (compressed) NAR, relative to the cache (required, non-empty).
    pub url: String,
    /// `Compression`: `xz`, `zstd`, `bzip2`, `none`, ...; `bzip2` when absent.
    pub compression: String,
    /// `FileHash`: hash of the compressed file.
    pub file_hash: Option<Hash>,
    /// `FileSize`: size of the compressed file.
    pub file_size: Option<u64>,
    /// `NarHash` (required).
    pub nar_hash: Hash,
    /// `NarSize` (required, non-zero).
    pub nar_size: u64,
    /// `References`.
    pub references: BTreeSet<StorePath>,
    /// `Deriver`; `None` for absent or `unknown-deriver`.
    pub deriver: Option<StorePath>,
    /// `System` (obsolete: ignored by Nix since 2.4, kept for old caches).
    pub system: Option<String>,
    /// `Sig` lines.
    pub sigs: BTreeSet<Signature>,
    /// `CA`.
    pub ca: Option<ContentAddress>,
}

/// The keys whose repetition is rejected, in a fixed order for the duplicate bitmap.
const SINGLE_KEYS: [&str; 11] = [
    "StorePath",
    "URL",
    "Compression",
    "FileHash",
    "FileSize",
    "NarHash",
    "NarSize",
    "References",
    "Deriver",
    "System",
    "CA",
];

fn parse_u64(line: usize, field: &'static str, value: &str) -> Result<u64, NarInfoError> {
    let bad = || NarInfoError::BadNumber {
        line,
        field,
        value: hash::truncate_for_error(value),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse::<u64>().map_err(|_| bad())
}

impl NarInfo {
    /// A narinfo with the required fields, no references, no signatures, compression `none`.
    pub fn new(
        store_dir: StoreDir,
        store_path: StorePath,
        url: String,
        nar_hash: Hash,
        nar_size: u64,
    ) -> NarInfo {
        NarInfo {
            store_dir,
            store_path,
            url,
            compression: "none".to_owned(),
            file_hash: None,
            file_size: None,
            nar_hash,
            nar_size,
            references: BTreeSet::new(),
            deriver: None,
            system: None,
            sigs: BTreeSet::new(),
            ca: None,
        }
    }

    /// The narinfo describing `valid` (its hash, size, references, deriver, content address
    /// and signatures), with its NAR at `url` compressed with `compression`.
    pub fn describing(valid: &ValidPathInfo, url: String, compression: &str) -> NarInfo {
        let info = &valid.info;
        NarInfo {
            compression: compression.to_owned(),
            references: info.references.clone(),
            deriver: info.deriver.clone(),
            sigs: info.sigs.clone(),
            ca: info.ca.clone(),
            ..NarInfo::new(
                info.store_dir.clone(),
                valid.path.clone(),
                url,
                info.nar_hash.clone(),
                info.nar_size,
            )
        }
    }

    /// Parses narinfo text with the default limits.
    pub fn parse(text: &str, store_dir: &StoreDir) -> Result<NarInfo, NarInfoError> {
        NarInfo::parse_with_limits(text.as_bytes(), store_dir, &NarInfoLimits::default())
    }

    /// Parses narinfo bytes (which must be UTF-8) with the default limits.
    pub fn parse_bytes(bytes: &[u8], store_dir: &StoreDir) -> Result<NarInfo, NarInfoError> {
        NarInfo::parse_with_limits(bytes, store_dir, &NarInfoLimits::default())
    }

    /// Parses narinfo bytes under explicit limits.
    pub fn parse_with_limits(
        bytes: &[u8],
        store_dir: &StoreDir,
        limits: &NarInfoLimits,
    ) -> Result<NarInfo, NarInfoError> {
        if bytes.len() > limits.max_size {
            return Err(NarInfoError::TooLarge {
                size: bytes.len(),
                max: limits.max_size,
            });
        }
        let mut seen = [false; SINGLE_KEYS.len()];
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = BTreeSet::new();
        let mut deriver = None;
        let mut system = None;
        let mut sigs = BTreeSet::new();
        let mut sig_lines = 0usize;
        let mut ca = None;

        let mut rest = bytes;
        let mut line_no = 0usize;
        while !rest.is_empty() {
            line_no += 1;
            let line = line_no;
            let Some(eol) = memchr::memchr(b'\n', rest) else {
                if rest.len() > limits.max_line_len {
                    return Err(NarInfoError::LineTooLong {
                        line,
                        max: limits.max_line_len,
                    });
                }
                return Err(NarInfoError::MissingNewline { line });
            };
            if eol > limits.max_line_len {
                return Err(NarInfoError::LineTooLong {
                    line,
                    max: limits.max_line_len,
                });
            }
            let raw = &rest[..eol];
            rest = &rest[eol + 1..];
            let text = std::str::from_utf8(raw).map_err(|_| NarInfoError::NotUtf8 { line })?;
            let (key, value) = text
                .split_once(':')
                .ok_or(NarInfoError::MissingColon { line })?;
            let value = value
                .strip_prefix(' ')
                .ok_or(NarInfoError::MissingSpace { line })?;

            let Some(index) = SINGLE_KEYS.iter().position(|k| *k == key) else {
                if key == "Sig" {
                    sig_lines += 1;
                    if sig_lines > limits.max_signatures {
                        return Err(NarInfoError::TooManySignatures {
                            line,
                            max: limits.max_signatures,
                        });
                    }
                    let sig = Signature::parse(value)
                        .map_err(|source| NarInfoError::BadSignature { line, source })?;
                    sigs.insert(sig);
                }
                // Any other key is ignored, as Nix ignores it.
                continue;
            };
            let field = SINGLE_KEYS[index];
            if std::mem::replace(&mut seen[index], true) {
                return Err(NarInfoError::DuplicateField { line, field });
            }
            let bad_path = |source| NarInfoError::BadStorePath {
                line,
                field,
                source,
            };
            let bad_hash = |source| NarInfoError::BadHash {
                line,
                field,
                source,
            };
            match field {
                "StorePath" => store_path = Some(store_dir.parse(value).map_err(bad_path)?),
                "URL" => url = Some(value.to_owned()),
                "Compression" => compression = Some(value.to_owned()),
                "FileHash" => file_hash = Some(Hash::parse_prefixed(value).map_err(bad_hash)?),
                "FileSize" => file_size = Some(parse_u64(line, field, value)?),
                "NarHash" => nar_hash = Some(Hash::parse_prefixed(value).map_err(bad_hash)?),
                "NarSize" => nar_size = Some(parse_u64(line, field, value)?),
                "References" => {
                    for (i, r) in value.split(' ').filter(|r| !r.is_empty()).enumerate() {
                        if i >= limits.max_references {
                            return Err(NarInfoError::TooManyReferences {
                                line,
                                max: limits.max_references,
                            });
                        }
                        references.insert(StorePath::from_base_name(r).map_err(bad_path)?);
                    }
                }
                "Deriver" => {
                    if value != "unknown-deriver" {
                        deriver = Some(StorePath::from_base_name(value).map_err(bad_path)?);
                    }
                }
                "System" => system = Some(value.to_owned()),
                _ => {
                    // "CA", the last of SINGLE_KEYS.
                    if !value.is_empty() {
                        let parsed = ContentAddress::parse_validated(value);
                        ca =
                            Some(parsed.map_err(|source| NarInfoError::BadContentAddress {
                                line,
                                source,
                            })?);
                    }
                }
            }
        }

        let store_path = store_path.ok_or(NarInfoError::MissingField("StorePath"))?;
        let nar_hash = nar_hash.ok_or(NarInfoError::MissingField("NarHash"))?;
        let url = url.ok_or(NarInfoError::MissingField("URL"))?;
        if url.is_empty() {
            return Err(NarInfoError::EmptyUrl);
        }
        let nar_size = nar_size.ok_or(NarInfoError::MissingField("NarSize"))?;
        if nar_size == 0 {
            return Err(NarInfoError::ZeroNarSize);
        }
        let compression = match compression {
            Some(c) if !c.is_empty() => c,
            _ => "bzip2".to_owned(),
        };
        Ok(NarInfo {
            store_dir: store_dir.clone(),
            store_path,
            url,
            compression,
            file_hash,
            file_size,
            nar_hash,
            nar_size,
            references,
            deriver,
            system,
            sigs,
            ca,
        })
    }

    /// The narinfo text, fields in Nix's order.
    ///
    /// Fields are written as they are: a value built by hand that holds a `\n`, or an empty
    /// `url`, gives text that does not parse back.
    pub fn to_text(&self) -> String {
        self.to_string()
    }

    /// The absolute store path.
    pub fn absolute_path(&self) -> String {
        self.store_dir.display(&self.store_path)
    }

    /// The message signatures of this path sign (see [`fingerprint`]).
    pub fn fingerprint(&self) -> Result<String, FingerprintError> {
        fingerprint(
            &self.store_dir,
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Signs the fingerprint with `key` and adds the signature; returns it.
    pub fn sign(&mut self, key: &SecretKey) -> Result<Signature, FingerprintError> {
        let sig = key.sign(self.fingerprint()?.as_bytes());
        self.sigs.insert(sig.clone());
        Ok(sig)
    }

    /// How many of the signatures a trusted key of the same name verifies.
    pub fn count_valid_signatures(&self, keys: &TrustedKeys) -> usize {
        match self.fingerprint() {
            Ok(fp) => keys.count_valid(fp.as_bytes(), &self.sigs),
            Err(_) => 0,
        }
    }

    /// Whether the path is what its `CA` field says (then it needs no signature).
    pub fn is_content_addressed(&self) -> bool {
        self.ca.as_ref().is_some_and(|ca| {
            is_content_addressed(&self.store_dir, &self.store_path, ca, &self.references)
        })
    }

    /// Nix's acceptance rule: content-addressed, or at least `needed` valid signatures.
    pub fn is_trusted(&self, keys: &TrustedKeys, needed: usize) -> bool {
        self.is_content_addressed() || self.count_valid_signatures(keys) >= needed
    }
}

impl fmt::Display for NarInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StorePath: {}", self.absolute_path())?;
        writeln!(f, "URL: {}", self.url)?;
        writeln!(f, "Compression: {}", self.compression)?;
        if let Some(h) = &self.file_hash {
            writeln!(f, "FileHash: {}", h.to_nix32_prefixed())?;
        }
        if let Some(s) = self.file_size {
            writeln!(f, "FileSize: {s}")?;
        }
        writeln!(f, "NarHash: {}", self.nar_hash.to_nix32_prefixed())?;
        writeln!(f, "NarSize: {}", self.nar_size)?;
        f.write_str("References: ")?;
        for (i, r) in self.references.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(r.base_name())?;
        }
        f.write_str("\n")?;
        if let Some(d) = &self.deriver {
            writeln!(f, "Deriver: {d}")?;
        }
        if let Some(s) = &self.system {
            writeln!(f, "System: {s}")?;
        }
        for sig in &self.sigs {
            writeln!(f, "Sig: {sig}")?;
        }
        if let Some(ca) = &self.ca {
            writeln!(f, "CA: {ca}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
