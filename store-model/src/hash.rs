//! Hashes as Nix prints and parses them.
//!
//! A [`Hash`](struct@Hash) is an algorithm plus its digest. Nix writes digests in four encodings:
//! base16 (lowercase hex), nix32 ([`crate::nixbase32`]), base64 (standard alphabet, padded) and
//! SRI (`sha256-<base64>`). Outside SRI, the algorithm is either a prefix (`sha256:...`) or known
//! from context; the encoding is then told apart by the text's length, as Nix does.

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};
use sha2::Digest;
use thiserror::Error;

use crate::nixbase32;

/// The hash algorithms Nix knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgo {
    /// MD5 (16 bytes), still accepted for old fixed-output derivations.
    Md5,
    /// SHA-1 (20 bytes).
    Sha1,
    /// SHA-256 (32 bytes), the algorithm of NAR hashes and store path digests.
    Sha256,
    /// SHA-512 (64 bytes).
    Sha512,
    /// BLAKE3 (32 bytes), accepted by Nix 2.27 and later behind `blake3-hashes`.
    Blake3,
}

impl HashAlgo {
    /// All algorithms, in the order Nix lists them.
    pub const ALL: [HashAlgo; 5] = [
        HashAlgo::Md5,
        HashAlgo::Sha1,
        HashAlgo::Sha256,
        HashAlgo::Sha512,
        HashAlgo::Blake3,
    ];

    /// Digest length in bytes.
    pub const fn size(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 | HashAlgo::Blake3 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    /// The name Nix uses (`sha256`).
    pub const fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
            HashAlgo::Blake3 => "blake3",
        }
    }

    /// Parses an algorithm name.
    pub fn from_name(name: &str) -> Result<HashAlgo, HashError> {
        HashAlgo::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| HashError::UnknownAlgorithm(truncate_for_error(name)))
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgo {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashAlgo::from_name(s)
    }
}

/// The text encodings of a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashEncoding {
    /// Lowercase hexadecimal.
    Base16,
    /// Nix's base 32.
    Nix32,
    /// Standard base64 with padding.
    Base64,
    /// `algo-base64`, the Subresource Integrity form.
    Sri,
}

/// Why a hash could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HashError {
    /// The algorithm name is not one Nix knows.
    #[error("unknown hash algorithm '{0}'")]
    UnknownAlgorithm(String),
    /// No algorithm given and none implied by context.
    #[error("hash '{0}' does not include a type, nor is the type otherwise known from context")]
    MissingAlgorithm(String),
    /// The digest text has a length that fits no encoding of the algorithm.
    #[error("hash '{text}' has wrong length for hash algorithm '{algo}'")]
    WrongLength {
        /// The offending text (possibly shortened).
        text: String,
        /// The algorithm it was parsed for.
        algo: HashAlgo,
    },
    /// The digest text is not valid in the encoding its length implies.
    #[error("invalid {encoding} hash '{text}'")]
    InvalidDigest {
        /// The offending text (possibly shortened).
        text: String,
        /// Which encoding was tried.
        encoding: &'static str,
    },
    /// An SRI or prefixed hash names a different algorithm than the context requires.
    #[error("hash '{text}' should have type '{expected}'")]
    AlgorithmMismatch {
        /// The offending text.
        text: String,
        /// The algorithm required by the context.
        expected: HashAlgo,
    },
}

/// Shortens untrusted text before it is put into an error message.
pub(crate) fn truncate_for_error(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        text.to_owned()
    } else {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    }
}

/// A digest together with its algorithm.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash {
    algo: HashAlgo,
    bytes: [u8; 64],
}

impl Hash {
    /// Builds a hash from raw digest bytes; `None` when the length does not fit the algorithm.
    pub fn from_bytes(algo: HashAlgo, digest: &[u8]) -> Option<Hash> {
        if digest.len() != algo.size() {
            return None;
        }
        let mut bytes = [0u8; 64];
        bytes[..digest.len()].copy_from_slice(digest);
        Some(Hash { algo, bytes })
    }

    /// The SHA-256 hash with the given digest.
    pub fn sha256(digest: [u8; 32]) -> Hash {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&digest);
        Hash {
            algo: HashAlgo::Sha256,
            bytes,
        }
    }

    /// Hashes `data` with `algo`.
    pub fn digest(algo: HashAlgo, data: &[u8]) -> Hash {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish()
    }

    /// The algorithm.
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.algo.size()]
    }

    /// The digest in one encoding, without the algorithm (except SRI, which always has it).
    pub fn encode(&self, encoding: HashEncoding) -> String {
        match encoding {
            HashEncoding::Base16 => data_encoding::HEXLOWER.encode(self.as_bytes()),
            HashEncoding::Nix32 => nixbase32::encode(self.as_bytes()),
            HashEncoding::Base64 => BASE64.encode(self.as_bytes()),
            HashEncoding::Sri => format!("{}-{}", self.algo, BASE64.encode(self.as_bytes())),
        }
    }

    /// `algo:digest` in the given encoding (SRI ignores the prefix convention).
    pub fn to_prefixed(&self, encoding: HashEncoding) -> String {
        match encoding {
            HashEncoding::Sri => self.encode(HashEncoding::Sri),
            other => format!("{}:{}", self.algo, self.encode(other)),
        }
    }

    /// `sha256:<nix32>`, the form of `narHash` in the database and in narinfo files.
    pub fn to_nix32_prefixed(&self) -> String {
        self.to_prefixed(HashEncoding::Nix32)
    }

    /// `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        self.encode(HashEncoding::Sri)
    }

    /// `sha256:<hex>`, as used inside store path fingerprints.
    pub fn to_base16_prefixed(&self) -> String {
        self.to_prefixed(HashEncoding::Base16)
    }

    /// Parses a digest of a known algorithm in base16, nix32 or base64, told apart by length.
    pub fn parse_digest(algo: HashAlgo, text: &str) -> Result<Hash, HashError> {
        let size = algo.size();
        let bytes = text.as_bytes();
        let mut digest = [0u8; 64];
        let out = &mut digest[..size];
        if bytes.len() == size * 2 {
            HEXLOWER_PERMISSIVE
                .decode_mut(bytes, out)
                .map_err(|_| HashError::InvalidDigest {
                    text: truncate_for_error(text),
                    encoding: "base16",
                })?;
        } else if bytes.len() == nixbase32::encoded_len(size) {
            nixbase32::decode_into(bytes, out).map_err(|_| HashError::InvalidDigest {
                text: truncate_for_error(text),
                encoding: "nix32",
            })?;
        } else if bytes.len() == size.div_ceil(3) * 4 {
            let decoded = BASE64.decode(bytes).map_err(|_| HashError::InvalidDigest {
                text: truncate_for_error(text),
                encoding: "base64",
            })?;
            if decoded.len() != size {
                return Err(HashError::WrongLength {
                    text: truncate_for_error(text),
                    algo,
                });
            }
            out.copy_from_slice(&decoded);
        } else {
            return Err(HashError::WrongLength {
                text: truncate_for_error(text),
                algo,
            });
        }
        Ok(Hash {
            algo,
            bytes: digest,
        })
    }

    /// Parses `algo:digest` or SRI `algo-base64`; a bare digest needs `default_algo`.
    pub fn parse_any(text: &str, default_algo: Option<HashAlgo>) -> Result<Hash, HashError> {
        if let Some((algo, rest)) = text.split_once(':') {
            let algo = HashAlgo::from_name(algo)?;
            if let Some(expected) = default_algo
                && expected != algo
            {
                return Err(HashError::AlgorithmMismatch {
                    text: truncate_for_error(text),
                    expected,
                });
            }
            return Hash::parse_digest(algo, rest);
        }
        if let Some((algo, rest)) = text.split_once('-')
            && let Ok(algo) = HashAlgo::from_name(algo)
        {
            if let Some(expected) = default_algo
                && expected != algo
            {
                return Err(HashError::AlgorithmMismatch {
                    text: truncate_for_error(text),
                    expected,
                });
            }
            return Hash::parse_sri_digest(algo, rest, text);
        }
        match default_algo {
            Some(algo) => Hash::parse_digest(algo, text),
            None => Err(HashError::MissingAlgorithm(truncate_for_error(text))),
        }
    }

    /// Parses `algo:digest` or SRI; the algorithm must be present.
    pub fn parse_prefixed(text: &str) -> Result<Hash, HashError> {
        Hash::parse_any(text, None)
    }

    /// Parses an SRI hash (`sha256-...`) only.
    pub fn parse_sri(text: &str) -> Result<Hash, HashError> {
        let (algo, rest) = text
            .split_once('-')
            .ok_or_else(|| HashError::InvalidDigest {
                text: truncate_for_error(text),
                encoding: "SRI",
            })?;
        Hash::parse_sri_digest(HashAlgo::from_name(algo)?, rest, text)
    }

    fn parse_sri_digest(algo: HashAlgo, b64: &str, whole: &str) -> Result<Hash, HashError> {
        let decoded = BASE64
            .decode(b64.as_bytes())
            .map_err(|_| HashError::InvalidDigest {
                text: truncate_for_error(whole),
                encoding: "SRI",
            })?;
        Hash::from_bytes(algo, &decoded).ok_or_else(|| HashError::WrongLength {
            text: truncate_for_error(whole),
            algo,
        })
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_sri())
    }
}

impl fmt::Display for Hash {
    /// Nix's default rendering: SRI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sri())
    }
}

/// A streaming hasher for any [`HashAlgo`].
#[derive(Clone)]
pub enum Hasher {
    /// MD5 state.
    Md5(md5::Md5),
    /// SHA-1 state.
    Sha1(sha1::Sha1),
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
    /// BLAKE3 state (boxed: it is large).
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algo: HashAlgo) -> Hasher {
        match algo {
            HashAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            HashAlgo::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Hash {
        match self {
            Hasher::Md5(h) => hash_of(HashAlgo::Md5, &h.finalize()),
            Hasher::Sha1(h) => hash_of(HashAlgo::Sha1, &h.finalize()),
            Hasher::Sha256(h) => hash_of(HashAlgo::Sha256, &h.finalize()),
            Hasher::Sha512(h) => hash_of(HashAlgo::Sha512, &h.finalize()),
            Hasher::Blake3(h) => hash_of(HashAlgo::Blake3, h.finalize().as_bytes()),
        }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hash_of(algo: HashAlgo, digest: &[u8]) -> Hash {
    let mut bytes = [0u8; 64];
    bytes[..digest.len()].copy_from_slice(digest);
    Hash { algo, bytes }
}

/// SHA-256 of `data` as a plain array.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

/// Folds a digest into `size` bytes by XOR, as Nix's `compressHash` does for store path digests.
pub fn compress(digest: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    if size == 0 {
        return out;
    }
    for (i, b) in digest.iter().enumerate() {
        out[i % size] ^= b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = "../testdata/nix-2.35.2/libutil-tests/data/hash";

    #[test]
    fn all_encodings_of_abc() {
        let h = Hash::digest(HashAlgo::Sha256, b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(h.encode(HashEncoding::Base16), hex);
        assert_eq!(
            h.to_nix32_prefixed(),
            "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
        assert_eq!(
            h.to_sri(),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        for text in [
            format!("sha256:{hex}"),
            "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s".to_owned(),
            "sha256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=".to_owned(),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=".to_owned(),
        ] {
            assert_eq!(Hash::parse_any(&text, None).expect(&text), h);
        }
        assert_eq!(
            Hash::parse_any(hex, Some(HashAlgo::Sha256)).expect("bare"),
            h
        );
    }

    #[test]
    fn other_algorithms_of_abc() {
        // Values from RFC 1321, FIPS 180 and the BLAKE3 reference.
        let cases = [
            (HashAlgo::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            (HashAlgo::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                HashAlgo::Sha512,
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
            (
                HashAlgo::Blake3,
                "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
            ),
        ];
        for (algo, hex) in cases {
            let h = Hash::digest(algo, b"abc");
            assert_eq!(h.encode(HashEncoding::Base16), hex, "{algo}");
            for enc in [
                HashEncoding::Base16,
                HashEncoding::Nix32,
                HashEncoding::Base64,
            ] {
                let text = h.to_prefixed(enc);
                assert_eq!(Hash::parse_prefixed(&text).expect(&text), h);
            }
            assert_eq!(Hash::parse_sri(&h.to_sri()).expect("sri"), h);
        }
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            Hash::parse_any("sha257:abc", None),
            Err(HashError::UnknownAlgorithm(_))
        ));
        assert!(matches!(
            Hash::parse_any("abc", None),
            Err(HashError::MissingAlgorithm(_))
        ));
        assert!(matches!(
            Hash::parse_any("sha256:abc", None),
            Err(HashError::WrongLength { .. })
        ));
        assert!(matches!(
            Hash::parse_any(
                "sha256:zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                None
            ),
            Err(HashError::InvalidDigest { .. })
        ));
        assert!(matches!(
            Hash::parse_any(
                "sha1:a9993e364706816aba3e25717850c26c9cd0d89d",
                Some(HashAlgo::Sha256)
            ),
            Err(HashError::AlgorithmMismatch { .. })
        ));
        assert!(Hash::parse_sri("sha256-AAAA").is_err());
    }

    #[test]
    fn compress_folds_by_xor() {
        let d: Vec<u8> = (0u8..32).collect();
        let c = compress(&d, 20);
        assert_eq!(c[0], 20);
        assert_eq!(c[11], 11 ^ 31);
        assert_eq!(c[12], 12);
    }

    #[test]
    fn golden_hash_vectors() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
        if !dir.exists() {
            eprintln!("skipped: Nix golden vectors not found at {}", dir.display());
            return;
        }
        for file in ["sha256.json", "sha512.json", "blake3.json"] {
            let text = std::fs::read_to_string(dir.join(file)).expect("read vector");
            let sri: String = serde_json::from_str(&text).expect("json string");
            let h = Hash::parse_sri(&sri).expect(&sri);
            assert_eq!(h.to_sri(), sri);
        }
    }
}
