//! Content identifiers: CIDv1 with a 32-byte multihash (BLAKE3, or SHA2-256 from foreign peers).
//!
//! [`Cid`] is a compact copyable value (codec, hash function, digest). Its binary form is
//! `0x01 <codec> <mh code> 0x20 <32 bytes>` (36 bytes, every varint one byte); its text form is
//! multibase base32 lower (`b...`), parsed and printed through the `cid` crate so that any CID
//! text the IPFS ecosystem produces is read the way it means.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Multicodec of a raw block.
pub const CODEC_RAW: u64 = 0x55;
/// Multicodec of a dag-pb block.
pub const CODEC_DAG_PB: u64 = 0x70;
/// Multihash code of BLAKE3 (32-byte digest).
pub const MH_BLAKE3: u64 = 0x1e;
/// Multihash code of SHA2-256.
pub const MH_SHA2_256: u64 = 0x12;
/// Length of [`Cid::to_bytes`].
pub const CID_BYTES_LEN: usize = 36;

/// What a block contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// Bytes of a file chunk, uninterpreted.
    Raw,
    /// A dag-pb node (UnixFS file, directory or symlink).
    DagPb,
}

impl Codec {
    /// The multicodec number.
    pub const fn code(self) -> u64 {
        match self {
            Codec::Raw => CODEC_RAW,
            Codec::DagPb => CODEC_DAG_PB,
        }
    }
}

/// The hash function of a CID's multihash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashFn {
    /// BLAKE3 with a 32-byte digest: what this store writes.
    Blake3,
    /// SHA2-256: what most IPFS nodes write; accepted so foreign blocks can be verified.
    Sha2_256,
}

impl HashFn {
    /// The multihash code.
    pub const fn code(self) -> u64 {
        match self {
            HashFn::Blake3 => MH_BLAKE3,
            HashFn::Sha2_256 => MH_SHA2_256,
        }
    }

    /// Digest of `data`.
    pub fn digest(self, data: &[u8]) -> [u8; 32] {
        match self {
            HashFn::Blake3 => *blake3::hash(data).as_bytes(),
            HashFn::Sha2_256 => sha256(data),
        }
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Why bytes or text are not a CID this store understands.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidError {
    /// Not a CID at all, as judged by the `cid` crate.
    #[error("invalid CID '{text}': {reason}")]
    Invalid {
        /// The text (shortened).
        text: String,
        /// Why the `cid` crate rejected it.
        reason: String,
    },
    /// A CID version other than 1.
    #[error("unsupported CID version {0} (only CIDv1 is used)")]
    Version(u64),
    /// A codec other than raw or dag-pb.
    #[error("unsupported CID codec {0:#x} (only raw 0x55 and dag-pb 0x70)")]
    Codec(u64),
    /// A multihash other than 32-byte BLAKE3 or SHA2-256.
    #[error(
        "unsupported multihash {code:#x} of {len} bytes (only blake3 0x1e and sha2-256 0x12, 32 bytes)"
    )]
    Multihash {
        /// Multihash code.
        code: u64,
        /// Digest length.
        len: usize,
    },
}

/// A CIDv1 naming one block.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    codec: Codec,
    hash_fn: HashFn,
    digest: [u8; 32],
}

impl Cid {
    /// The CID of `data` stored as a block of `codec`, hashed with BLAKE3.
    pub fn of(codec: Codec, data: &[u8]) -> Cid {
        Cid {
            codec,
            hash_fn: HashFn::Blake3,
            digest: *blake3::hash(data).as_bytes(),
        }
    }

    /// A CID from its parts.
    pub const fn from_parts(codec: Codec, hash_fn: HashFn, digest: [u8; 32]) -> Cid {
        Cid {
            codec,
            hash_fn,
            digest,
        }
    }

    /// The codec.
    pub const fn codec(&self) -> Codec {
        self.codec
    }

    /// The hash function.
    pub const fn hash_fn(&self) -> HashFn {
        self.hash_fn
    }

    /// The digest.
    pub const fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Whether `data` is the block this CID names.
    pub fn verifies(&self, data: &[u8]) -> bool {
        self.hash_fn.digest(data) == self.digest
    }

    /// The binary CID.
    pub fn to_bytes(&self) -> [u8; CID_BYTES_LEN] {
        let mut out = [0u8; CID_BYTES_LEN];
        out[0] = 0x01;
        out[1] = self.codec.code() as u8;
        out[2] = self.hash_fn.code() as u8;
        out[3] = 32;
        out[4..].copy_from_slice(&self.digest);
        out
    }

    /// Parses a binary CID; it must be one of the forms [`Cid::to_bytes`] writes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
        let parsed = ::cid::Cid::try_from(bytes).map_err(|e| CidError::Invalid {
            text: format!("{} bytes", bytes.len()),
            reason: e.to_string(),
        })?;
        let cid = Cid::from_cid(&parsed)?;
        // Reject non-minimal varints and trailing bytes: one block has one name.
        if cid.to_bytes().as_slice() != bytes {
            return Err(CidError::Invalid {
                text: format!("{} bytes", bytes.len()),
                reason: "not in canonical binary form".to_owned(),
            });
        }
        Ok(cid)
    }

    /// Converts from the `cid` crate's type.
    pub fn from_cid(cid: &::cid::Cid) -> Result<Cid, CidError> {
        if cid.version() != ::cid::Version::V1 {
            return Err(CidError::Version(cid.version() as u64));
        }
        let codec = match cid.codec() {
            CODEC_RAW => Codec::Raw,
            CODEC_DAG_PB => Codec::DagPb,
            other => return Err(CidError::Codec(other)),
        };
        let mh = cid.hash();
        let hash_fn = match (mh.code(), mh.size()) {
            (MH_BLAKE3, 32) => HashFn::Blake3,
            (MH_SHA2_256, 32) => HashFn::Sha2_256,
            (code, len) => {
                return Err(CidError::Multihash {
                    code,
                    len: len as usize,
                });
            }
        };
        let mut digest = [0u8; 32];
        digest.copy_from_slice(mh.digest());
        Ok(Cid {
            codec,
            hash_fn,
            digest,
        })
    }

    /// Converts to the `cid` crate's type.
    pub fn to_cid(&self) -> ::cid::Cid {
        // Wrapping a 32-byte digest into a 64-byte multihash cannot fail.
        let mh =
            multihash::Multihash::<64>::wrap(self.hash_fn.code(), &self.digest).unwrap_or_default();
        ::cid::Cid::new_v1(self.codec.code(), mh)
    }
}

impl fmt::Display for Cid {
    /// Multibase base32 lower, the text form IPFS prints for CIDv1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_cid(), f)
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = CidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown: String = s.chars().take(120).collect();
        let parsed = ::cid::Cid::try_from(s).map_err(|e| CidError::Invalid {
            text: shown.clone(),
            reason: e.to_string(),
        })?;
        let cid = Cid::from_cid(&parsed)?;
        // Trailing characters, other bases, upper case: one block has one name.
        if cid.to_string() != s {
            return Err(CidError::Invalid {
                text: shown,
                reason: format!("not in canonical form (that is {cid})"),
            });
        }
        Ok(cid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_round_trip() {
        let raw = Cid::of(Codec::Raw, b"hello");
        let text = raw.to_string();
        assert!(text.starts_with("bafkr4i"), "{text}");
        assert_eq!(text.parse::<Cid>().expect("parse"), raw);
        assert_eq!(Cid::from_bytes(&raw.to_bytes()).expect("bytes"), raw);
        let pb = Cid::of(Codec::DagPb, b"node");
        assert!(pb.to_string().starts_with("bafyb4i"), "{pb}");
        assert!(raw.verifies(b"hello"));
        assert!(!raw.verifies(b"hellp"));
    }

    /// The fuzz target `gc_lines` found these: a CID's text with more after it parsed.
    #[test]
    fn text_is_canonical_or_refused() {
        let cid = Cid::of(Codec::Raw, b"one name");
        let text = cid.to_string();
        for other in [
            format!("{text}fffff"),
            format!("{text}a"),
            text.to_uppercase(),
            format!(" {text}"),
        ] {
            assert!(other.parse::<Cid>().is_err(), "{other} parsed");
        }
        assert_eq!(text.parse::<Cid>().expect("canonical"), cid);
    }

    #[test]
    fn rejects_foreign_shapes() {
        // CIDv0 (a sha2-256 dag-pb Qm... hash) is valid IPFS but not a form we store.
        let v0 = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n";
        assert!(matches!(v0.parse::<Cid>(), Err(CidError::Version(0))));
        // dag-cbor codec.
        let cbor = "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua";
        assert!(matches!(cbor.parse::<Cid>(), Err(CidError::Codec(0x71))));
        assert!(matches!(
            "not a cid".parse::<Cid>(),
            Err(CidError::Invalid { .. })
        ));
        let mut bytes = Cid::of(Codec::Raw, b"x").to_bytes().to_vec();
        bytes.push(0);
        assert!(Cid::from_bytes(&bytes).is_err());
    }

    #[test]
    fn foreign_sha256_cids_verify() {
        let cid = Cid::from_parts(Codec::Raw, HashFn::Sha2_256, sha256(b"abc"));
        assert_eq!(
            cid.digest()[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "FIPS 180 example 'abc'"
        );
        assert!(cid.verifies(b"abc"));
        assert!(!cid.verifies(b"abd"));
    }
}
