//! Ed25519 keys and signatures in the text form of `nix-store --generate-binary-cache-key`.
//!
//! Nix writes every key and signature as `<name>:<base64>`:
//!
//! * a [`SecretKey`] holds 64 bytes, libsodium's layout: the 32-byte seed followed by the 32-byte
//!   public key;
//! * a [`PublicKey`] holds the 32-byte public key;
//! * a [`Signature`] holds a 64-byte Ed25519 signature and the name of the key that made it.
//!
//! A signature counts only when a trusted key *of the same name* verifies it
//! ([`TrustedKeys::verify`]): the name selects the key, the key checks the bytes. Signatures by
//! unknown names are ignored, never an error.
//!
//! Parsing follows Nix and is a little stricter where Nix would fail later anyway:
//!
//! * the name must be non-empty and may not contain `:`, whitespace or control characters
//!   (Nix splits at the first `:`, and `trusted-public-keys` is a whitespace-separated list);
//! * the payload is standard base64, padded or not, and must decode to exactly the length of its
//!   kind (Nix 2.35 accepts a signature of any non-empty length and then refuses to verify it);
//! * trailing whitespace (the newline of a key file) is ignored for keys;
//! * a secret key whose public half does not belong to its seed is rejected (libsodium would
//!   silently make signatures nobody can verify).
//!
//! Verification uses `ed25519-consensus`, whose rules (ZIP 215) accept every signature libsodium
//! accepts; honest signatures verify identically under both.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE64, BASE64_NOPAD};
use rand_core::CryptoRngCore;
use thiserror::Error;

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a secret key in Nix's (libsodium's) layout: seed followed by public key.
pub const SECRET_KEY_LEN: usize = 64;
/// Longest key name accepted.
pub const MAX_KEY_NAME_LEN: usize = 256;
/// Longest text accepted for a key or signature (name, colon, base64 and some whitespace).
const MAX_TEXT_LEN: usize = MAX_KEY_NAME_LEN + 1 + 100 + 16;

/// Why a key or signature could not be parsed or made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// There is no `:` between name and payload.
    #[error("{what} is not of the form '<name>:<base64>'")]
    MissingColon {
        /// `signature`, `public key` or `secret key`.
        what: &'static str,
    },
    /// The name before the `:` is empty.
    #[error("{what} has an empty key name")]
    EmptyName {
        /// `signature`, `public key` or `secret key`.
        what: &'static str,
    },
    /// The name is too long or contains a character Nix cannot carry.
    #[error(
        "{what} has an invalid key name '{name}': names are 1 to {MAX_KEY_NAME_LEN} characters without ':', whitespace or control characters"
    )]
    InvalidName {
        /// `signature`, `public key` or `secret key`.
        what: &'static str,
        /// The name (possibly shortened).
        name: String,
    },
    /// The payload is not base64.
    #[error("{what} named '{name}' is not valid base64")]
    BadBase64 {
        /// `signature`, `public key` or `secret key`.
        what: &'static str,
        /// The key name.
        name: String,
    },
    /// The payload decodes to the wrong number of bytes.
    #[error("{what} named '{name}' has {got} bytes, expected {expected}")]
    WrongLength {
        /// `signature`, `public key` or `secret key`.
        what: &'static str,
        /// The key name.
        name: String,
        /// Bytes decoded.
        got: usize,
        /// Bytes required.
        expected: usize,
    },
    /// The text is longer than any valid key or signature.
    #[error("{what} is too long ({len} bytes)")]
    TooLong {
        /// `signature`, `public key` or `secret key`.
        what: &'static str,
        /// Length of the text.
        len: usize,
    },
    /// The public key bytes are not a valid Ed25519 point.
    #[error("public key named '{name}' is not a valid Ed25519 key")]
    InvalidPoint {
        /// The key name.
        name: String,
    },
    /// The public half of a secret key does not belong to its seed.
    #[error("secret key named '{name}' is corrupt: its public half does not match its seed")]
    SecretKeyMismatch {
        /// The key name.
        name: String,
    },
}

/// Checks a key name: non-empty, bounded, no `:`, whitespace or control characters.
pub fn validate_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KEY_NAME_LEN
        && !name
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
}

fn check_name(what: &'static str, name: &str) -> Result<(), KeyError> {
    if name.is_empty() {
        return Err(KeyError::EmptyName { what });
    }
    if !validate_key_name(name) {
        return Err(KeyError::InvalidName {
            what,
            name: crate::hash::truncate_for_error(name),
        });
    }
    Ok(())
}

/// Splits `<name>:<base64>` and decodes the payload into exactly `N` bytes.
fn parse_named<const N: usize>(
    what: &'static str,
    text: &str,
) -> Result<(String, [u8; N]), KeyError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(KeyError::TooLong {
            what,
            len: text.len(),
        });
    }
    let (name, payload) = text
        .split_once(':')
        .ok_or(KeyError::MissingColon { what })?;
    check_name(what, name)?;
    let bytes = decode_base64(payload.as_bytes()).ok_or_else(|| KeyError::BadBase64 {
        what,
        name: name.to_owned(),
    })?;
    let array: [u8; N] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::WrongLength {
            what,
            name: name.to_owned(),
            got: bytes.len(),
            expected: N,
        })?;
    Ok((name.to_owned(), array))
}

/// Standard base64, with or without padding.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    BASE64
        .decode(text)
        .ok()
        .or_else(|| BASE64_NOPAD.decode(text).ok())
}

/// An Ed25519 signature with the name of the key that made it: `<name>:<base64>`.
///
/// Ordered by name, then bytes, as Nix orders its signature sets.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signature {
    key_name: String,
    bytes: [u8; SIGNATURE_LEN],
}

impl Signature {
    /// A signature from its parts; `None` when the name is not valid.
    pub fn new(key_name: &str, bytes: [u8; SIGNATURE_LEN]) -> Option<Signature> {
        validate_key_name(key_name).then(|| Signature {
            key_name: key_name.to_owned(),
            bytes,
        })
    }

    /// Parses `<name>:<base64 of 64 bytes>`.
    pub fn parse(text: &str) -> Result<Signature, KeyError> {
        let (key_name, bytes) = parse_named::<SIGNATURE_LEN>("signature", text)?;
        Ok(Signature { key_name, bytes })
    }

    /// The name of the key that made the signature.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The 64 signature bytes.
    pub fn bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.bytes
    }

    /// The base64 of the signature bytes (padded), without the name.
    pub fn bytes_base64(&self) -> String {
        BASE64.encode(&self.bytes)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, BASE64.encode(&self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signature::parse(s)
    }
}

/// A named Ed25519 public key: `<name>:<base64 of 32 bytes>`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: ed25519_consensus::VerificationKey,
}

impl PublicKey {
    /// Parses `<name>:<base64>`; trailing whitespace (a key file's newline) is ignored.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let (name, bytes) = parse_named::<PUBLIC_KEY_LEN>("public key", text.trim_end())?;
        let key = ed25519_consensus::VerificationKey::try_from(bytes)
            .map_err(|_| KeyError::InvalidPoint { name: name.clone() })?;
        Ok(PublicKey { name, key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32 key bytes.
    pub fn bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.to_bytes()
    }

    /// Whether `signature` is by this key (same name) and verifies `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        signature.key_name == self.name && self.verify_anonymous(message, &signature.bytes)
    }

    /// Whether the raw signature bytes verify `message`, ignoring names.
    pub fn verify_anonymous(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let sig = ed25519_consensus::Signature::from(*signature);
        self.key.verify(&sig, message).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(&self.key.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::parse(s)
    }
}

/// A named Ed25519 secret key in Nix's layout: `<name>:<base64 of seed || public key>`.
///
/// `Debug` does not print the key material; `Display` does (it is the key file's content).
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: ed25519_consensus::SigningKey,
}

impl SecretKey {
    /// Parses `<name>:<base64 of 64 bytes>`; trailing whitespace is ignored. The public half
    /// must be the key derived from the seed.
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        let (name, bytes) = parse_named::<SECRET_KEY_LEN>("secret key", text.trim_end())?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let key = ed25519_consensus::SigningKey::from(seed);
        if key.verification_key().to_bytes()[..] != bytes[32..] {
            return Err(KeyError::SecretKeyMismatch { name });
        }
        Ok(SecretKey { name, key })
    }

    /// A new key named `name` from 32 bytes of `rng` (the caller supplies the randomness, e.g.
    /// `rand_core::OsRng`).
    pub fn generate(name: &str, rng: &mut impl CryptoRngCore) -> Result<SecretKey, KeyError> {
        check_name("secret key", name)?;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Ok(SecretKey::from_seed(name, seed))
    }

    /// The key with the given seed; the caller has checked the name.
    fn from_seed(name: &str, seed: [u8; 32]) -> SecretKey {
        SecretKey {
            name: name.to_owned(),
            key: ed25519_consensus::SigningKey::from(seed),
        }
    }

    /// A key named `name` with a caller-chosen seed (for deterministic tests).
    pub fn from_seed_bytes(name: &str, seed: [u8; 32]) -> Result<SecretKey, KeyError> {
        check_name("secret key", name)?;
        Ok(SecretKey::from_seed(name, seed))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key, with the same name.
    pub fn to_public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verification_key(),
        }
    }

    /// Signs `message` (for store paths: a fingerprint), naming this key.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(message).to_bytes(),
        }
    }

    /// The 64 bytes Nix stores: seed followed by public key.
    pub fn to_bytes(&self) -> [u8; SECRET_KEY_LEN] {
        let mut out = [0u8; SECRET_KEY_LEN];
        out[..32].copy_from_slice(self.key.as_bytes());
        out[32..].copy_from_slice(&self.key.verification_key().to_bytes());
        out
    }
}

impl fmt::Display for SecretKey {
    /// The key file's content: `<name>:<base64>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(&self.to_bytes()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}:<redacted>)", self.name)
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SecretKey::parse(s)
    }
}

/// The trusted public keys, one per name (Nix's `trusted-public-keys`).
///
/// As in Nix, the first key inserted under a name wins; later keys of that name are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeMap<String, PublicKey>,
}

impl TrustedKeys {
    /// No trusted keys.
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Parses a whitespace-separated list of public keys, as in `trusted-public-keys`.
    pub fn parse_list(text: &str) -> Result<TrustedKeys, KeyError> {
        let mut keys = TrustedKeys::new();
        for word in text.split_whitespace() {
            keys.insert(PublicKey::parse(word)?);
        }
        Ok(keys)
    }

    /// Adds a key; `false` (and no change) when a key of that name is already trusted.
    pub fn insert(&mut self, key: PublicKey) -> bool {
        match self.keys.entry(key.name.clone()) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(key);
                true
            }
            std::collections::btree_map::Entry::Occupied(_) => false,
        }
    }

    /// The trusted key of that name.
    pub fn get(&self, name: &str) -> Option<&PublicKey> {
        self.keys.get(name)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys, by name.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }

    /// Whether the trusted key named like the signature exists and verifies it.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        self.keys
            .get(&signature.key_name)
            .is_some_and(|k| k.verify_anonymous(message, &signature.bytes))
    }

    /// How many of `signatures` verify `message` under a trusted key.
    pub fn count_valid<'a>(
        &self,
        message: &[u8],
        signatures: impl IntoIterator<Item = &'a Signature>,
    ) -> usize {
        signatures
            .into_iter()
            .filter(|s| self.verify(message, s))
            .count()
    }
}

impl FromIterator<PublicKey> for TrustedKeys {
    fn from_iter<T: IntoIterator<Item = PublicKey>>(iter: T) -> Self {
        let mut keys = TrustedKeys::new();
        for k in iter {
            keys.insert(k);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, seed: u8) -> SecretKey {
        SecretKey::from_seed_bytes(name, [seed; 32]).expect("valid name")
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 section 7.1, TEST 1 (empty message).
        let seed = data_encoding::HEXLOWER
            .decode(b"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .expect("hex");
        let mut s = [0u8; 32];
        s.copy_from_slice(&seed);
        let sk = SecretKey::from_seed_bytes("rfc", s).expect("name");
        assert_eq!(
            data_encoding::HEXLOWER.encode(&sk.to_public_key().bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            data_encoding::HEXLOWER.encode(sk.sign(b"").bytes()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    #[test]
    fn text_forms_round_trip() {
        let sk = key("cache.example.org-1", 7);
        let text = sk.to_string();
        let again = SecretKey::parse(&text).expect("parse secret");
        assert_eq!(again.to_bytes(), sk.to_bytes());
        assert_eq!(again.name(), "cache.example.org-1");
        // A key file's trailing newline is fine.
        assert!(SecretKey::parse(&format!("{text}\n")).is_ok());

        let pk = sk.to_public_key();
        let pk_text = pk.to_string();
        assert_eq!(pk_text.len(), "cache.example.org-1:".len() + 44);
        assert_eq!(PublicKey::parse(&pk_text).expect("parse public"), pk);

        let sig = sk.sign(b"hello");
        let sig_text = sig.to_string();
        assert_eq!(Signature::parse(&sig_text).expect("parse sig"), sig);
        // Unpadded base64 is accepted and prints padded.
        let unpadded = sig_text.trim_end_matches('=');
        assert_eq!(Signature::parse(unpadded).expect("unpadded"), sig);
    }

    #[test]
    fn generate_uses_the_callers_rng() {
        let mut rng = rand_core::OsRng;
        let a = SecretKey::generate("k", &mut rng).expect("a");
        let b = SecretKey::generate("k", &mut rng).expect("b");
        assert_ne!(a.to_bytes(), b.to_bytes());
        let sig = a.sign(b"msg");
        assert!(a.to_public_key().verify(b"msg", &sig));
        assert!(!b.to_public_key().verify(b"msg", &sig));
        assert!(matches!(
            SecretKey::generate("", &mut rng),
            Err(KeyError::EmptyName { .. })
        ));
    }

    #[test]
    fn verification_needs_a_trusted_key_of_the_same_name() {
        let a = key("a", 1);
        let b = key("b", 2);
        let msg = b"1;/nix/store/x;sha256:y;1;";
        let sig_a = a.sign(msg);
        let trusted: TrustedKeys = [a.to_public_key()].into_iter().collect();
        assert!(trusted.verify(msg, &sig_a));
        assert!(!trusted.verify(b"other message", &sig_a));
        // Same bytes under another name: no key of that name is trusted.
        let renamed = Signature::new("b", *sig_a.bytes()).expect("name");
        assert!(!trusted.verify(msg, &renamed));
        // A key named "a" with other bytes does not verify a's signature.
        let impostor = key("a", 3).to_public_key();
        let trusted2: TrustedKeys = [impostor].into_iter().collect();
        assert!(!trusted2.verify(msg, &sig_a));
        // b's real signature, with b untrusted, does not count.
        assert_eq!(trusted.count_valid(msg, [&sig_a, &b.sign(msg)]), 1);
        // First key of a name wins, as in Nix.
        let mut keys = TrustedKeys::new();
        assert!(keys.insert(a.to_public_key()));
        assert!(!keys.insert(key("a", 9).to_public_key()));
        assert!(keys.verify(msg, &sig_a));
        let list = format!("{}  {}\n", a.to_public_key(), b.to_public_key());
        assert_eq!(TrustedKeys::parse_list(&list).expect("list").len(), 2);
    }

    #[test]
    fn malformed_keys_and_signatures() {
        let pk = key("k", 1).to_public_key().to_string();
        let b64 = pk
            .split_once(':')
            .map(|(_, b)| b.to_owned())
            .expect("colon");
        let cases: Vec<(String, &str)> = vec![
            (b64.clone(), "not of the form"),
            (format!(":{b64}"), "empty key name"),
            (format!("a b:{b64}"), "invalid key name"),
            ("k:!!!!".to_owned(), "not valid base64"),
            ("k:AAAA".to_owned(), "has 3 bytes, expected 32"),
            (format!("k:{}", "A".repeat(500)), "too long"),
        ];
        for (text, why) in &cases {
            let err = PublicKey::parse(text).expect_err(text).to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains("public key"), "{err}");
        }
        let err = Signature::parse(&pk).expect_err("short sig").to_string();
        assert!(
            err.contains("signature named 'k' has 32 bytes, expected 64"),
            "{err}"
        );
        let err = SecretKey::parse(&pk).expect_err("short secret").to_string();
        assert!(
            err.contains("secret key named 'k' has 32 bytes, expected 64"),
            "{err}"
        );
        // Secret key whose public half was swapped for another key's.
        let mut bytes = key("k", 1).to_bytes();
        bytes[32..].copy_from_slice(&key("k", 2).to_public_key().bytes());
        let err = SecretKey::parse(&format!("k:{}", BASE64.encode(&bytes)))
            .expect_err("mismatch")
            .to_string();
        assert!(err.contains("does not match its seed"), "{err}");
        // Debug never shows secret material.
        let dbg = format!("{:?}", key("k", 1));
        assert_eq!(dbg, "SecretKey(k:<redacted>)");
    }
}
