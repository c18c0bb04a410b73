//! The handshake that opens every connection, as pure encode/decode steps.
//!
//! The order on the wire (every item a u64 unless noted; D = daemon, C = client):
//!
//! 1. C→D [`WORKER_MAGIC_1`] ([`read_client_magic`] / [`encode_client_magic`]). Nix 2.23+
//!    sends its version right behind it without waiting.
//! 2. D→C [`ServerHello`]: [`WORKER_MAGIC_2`] and the daemon's version.
//! 3. C→D the client's version ([`read_client_version`] / [`encode_client_version`]).
//!    Both sides now use `min(client, daemon)` ([`negotiate`]).
//! 4. Only if the negotiated version is ≥ 1.38: C→D the client's features (`[str]`), then
//!    D→C the daemon's ([`read_features`] / [`encode_features`]); the effective set is the
//!    intersection ([`intersect_features`]).
//! 5. C→D [`ClientOptions`]: the obsolete CPU affinity (≥ 1.14) and reserve-space (≥ 1.11)
//!    fields.
//! 6. D→C [`ClientHandshakeInfo`]: the daemon's Nix version (≥ 1.33) and whether it trusts the
//!    client (≥ 1.35).
//! 7. D→C the stderr stream of start-up messages ending in `STDERR_LAST`
//!    ([`crate::stderr`]).

use thiserror::Error;

use crate::context::WireContext;
use crate::types::TrustedFlag;
use crate::version::{FeatureSet, ProtocolVersion};
use crate::wire::read::{expect_u64, read_bool, read_len, read_string, read_u64, read_u64_max};
use crate::wire::{Decode, Encode, Limits, WireError, WireRead, WireWriter};

/// First word of the handshake, client to daemon ("cxin" in little-endian bytes).
pub const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// First word of the daemon's reply ("oixd" in little-endian bytes).
pub const WORKER_MAGIC_2: u64 = 0x6478_696f;

/// Why two versions cannot talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// The major number is not 1.
    #[error("protocol version {0} is not supported: the major version must be 1")]
    BadMajor(ProtocolVersion),
    /// The peer is older than what this side serves.
    #[error("protocol version {got} is too old: the oldest supported version is {min}")]
    TooOld {
        /// The peer's version.
        got: ProtocolVersion,
        /// The oldest version accepted.
        min: ProtocolVersion,
    },
}

/// The version both sides use: the smaller of the two, which must have major 1 and be at least
/// [`ProtocolVersion::MIN_SUPPORTED`] (1.21, Nix 2.3).
pub fn negotiate(
    client: ProtocolVersion,
    daemon: ProtocolVersion,
) -> Result<ProtocolVersion, NegotiationError> {
    for v in [client, daemon] {
        if v.major() != 1 {
            return Err(NegotiationError::BadMajor(v));
        }
    }
    let negotiated = client.min(daemon);
    if negotiated < ProtocolVersion::MIN_SUPPORTED {
        return Err(NegotiationError::TooOld {
            got: negotiated,
            min: ProtocolVersion::MIN_SUPPORTED,
        });
    }
    Ok(negotiated)
}

/// Appends the client's magic.
pub fn encode_client_magic(w: &mut WireWriter) {
    w.put_u64(WORKER_MAGIC_1);
}

/// Reads and checks the client's magic.
pub async fn read_client_magic<R: WireRead>(r: &mut R) -> Result<(), WireError> {
    expect_u64(r, WORKER_MAGIC_1, "client hello magic").await
}

/// Reads a version word: a u64 of which Nix keeps 32 bits and uses 16.
async fn read_version<R: WireRead>(
    r: &mut R,
    what: &'static str,
) -> Result<ProtocolVersion, WireError> {
    let value = read_u64_max(r, u64::from(u32::MAX), what).await?;
    Ok(ProtocolVersion::from_wire(value))
}

/// Appends the client's version (step 3).
pub fn encode_client_version(w: &mut WireWriter, version: ProtocolVersion) {
    w.put_u64(version.to_wire());
}

/// Reads the client's version (step 3).
pub async fn read_client_version<R: WireRead>(r: &mut R) -> Result<ProtocolVersion, WireError> {
    read_version(r, "client protocol version").await
}

/// The daemon's reply to the client's magic: its own magic and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello {
    /// The daemon's version.
    pub version: ProtocolVersion,
}

impl ServerHello {
    /// Appends [`WORKER_MAGIC_2`] and the version.
    pub fn encode(&self, w: &mut WireWriter) {
        w.put_u64(WORKER_MAGIC_2);
        w.put_u64(self.version.to_wire());
    }

    /// Reads and checks the magic, then reads the version.
    pub async fn decode<R: WireRead>(r: &mut R) -> Result<ServerHello, WireError> {
        expect_u64(r, WORKER_MAGIC_2, "daemon hello magic").await?;
        let version = read_version(r, "daemon protocol version").await?;
        Ok(ServerHello { version })
    }
}

/// Appends a feature list (sorted, as Nix writes its set).
pub fn encode_features(w: &mut WireWriter, features: &FeatureSet) {
    w.put_u64(features.len() as u64);
    for f in features {
        w.put_str(f);
    }
}

/// Reads a feature list (only exchanged when the negotiated version is ≥ 1.38).
pub async fn read_features<R: WireRead>(
    r: &mut R,
    limits: &Limits,
) -> Result<FeatureSet, WireError> {
    let what = "protocol feature list";
    let len = read_len(r, limits.max_fields, what).await?;
    let mut features = FeatureSet::new();
    for _ in 0..len {
        features.insert(read_string(r, limits.max_string_len, what).await?);
    }
    Ok(features)
}

/// The features both sides offered.
pub fn intersect_features(ours: &FeatureSet, theirs: &FeatureSet) -> FeatureSet {
    ours.intersection(theirs).cloned().collect()
}

/// The obsolete client fields after the version (step 5); daemons ignore their values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientOptions {
    /// ≥ 1.14: the CPU the client asked the daemon to pin to (Nix 2.3 with `lock-cpu`);
    /// 2.4+ clients send none.
    pub cpu_affinity: Option<u64>,
    /// ≥ 1.11: the obsolete "reserve space" flag; clients send false.
    pub reserve_space: bool,
}

impl ClientOptions {
    /// Appends the fields present at `version`.
    pub fn encode(&self, w: &mut WireWriter, version: ProtocolVersion) {
        if version >= ProtocolVersion::new(1, 14) {
            match self.cpu_affinity {
                Some(cpu) => {
                    w.put_u64(1);
                    w.put_u64(cpu);
                }
                None => w.put_u64(0),
            }
        }
        if version >= ProtocolVersion::new(1, 11) {
            w.put_bool(self.reserve_space);
        }
    }

    /// Reads the fields present at `version`.
    pub async fn decode<R: WireRead>(
        r: &mut R,
        version: ProtocolVersion,
    ) -> Result<ClientOptions, WireError> {
        let mut options = ClientOptions::default();
        if version >= ProtocolVersion::new(1, 14)
            && read_bool(r, "client CPU affinity flag").await?
        {
            options.cpu_affinity = Some(read_u64(r, "client CPU affinity").await?);
        }
        if version >= ProtocolVersion::new(1, 11) {
            options.reserve_space = read_bool(r, "client reserve-space flag").await?;
        }
        Ok(options)
    }
}

/// What the daemon tells the client at the end of the handshake (Nix's
/// `WorkerProto::ClientHandshakeInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHandshakeInfo {
    /// ≥ 1.33: the daemon's Nix version, free text (`nix store info` shows it). Must be set
    /// to encode at ≥ 1.33.
    pub daemon_nix_version: Option<String>,
    /// ≥ 1.35: whether the daemon trusts the client; `None` is "unknown".
    pub remote_trusts_us: Option<TrustedFlag>,
}

impl Encode for ClientHandshakeInfo {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        if cx.at_least(33) {
            let version = self.daemon_nix_version.as_deref().ok_or_else(|| {
                WireError::not_representable(
                    "daemon Nix version",
                    "protocol 1.33 and later require the daemon's version",
                )
            })?;
            w.put_str(version);
        }
        if cx.at_least(35) {
            self.remote_trusts_us.encode(w, cx)?;
        }
        Ok(())
    }
}

impl Decode for ClientHandshakeInfo {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        let mut info = ClientHandshakeInfo::default();
        if cx.at_least(33) {
            info.daemon_nix_version = Some(String::decode(r, cx, "daemon Nix version").await?);
        }
        if cx.at_least(35) {
            info.remote_trusts_us =
                Option::<TrustedFlag>::decode(r, cx, "daemon trust flag").await?;
        }
        Ok(info)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::{SyncReader, run_ready};

    #[test]
    fn negotiation() {
        let v = ProtocolVersion::new;
        assert_eq!(negotiate(v(1, 38), v(1, 35)), Ok(v(1, 35)));
        assert_eq!(negotiate(v(1, 21), v(1, 38)), Ok(v(1, 21)));
        let err = negotiate(v(1, 10), v(1, 38)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol version 1.10 is too old: the oldest supported version is 1.21"
        );
        assert!(matches!(
            negotiate(v(2, 0), v(1, 38)),
            Err(NegotiationError::BadMajor(_))
        ));
    }

    #[test]
    fn client_side_round_trip() {
        let mut w = WireWriter::new();
        encode_client_magic(&mut w);
        encode_client_version(&mut w, ProtocolVersion::LATEST);
        let features: FeatureSet = ["b".to_owned(), "a".to_owned()].into();
        encode_features(&mut w, &features);
        let options = ClientOptions {
            cpu_affinity: Some(3),
            reserve_space: false,
        };
        options.encode(&mut w, ProtocolVersion::LATEST);
        let bytes = w.into_inner();
        let mut r = SyncReader::new(&bytes[..]);
        run_ready(read_client_magic(&mut r)).unwrap();
        assert_eq!(
            run_ready(read_client_version(&mut r)).unwrap(),
            ProtocolVersion::LATEST
        );
        assert_eq!(
            run_ready(read_features(&mut r, &Limits::default())).unwrap(),
            features
        );
        assert_eq!(
            run_ready(ClientOptions::decode(&mut r, ProtocolVersion::LATEST)).unwrap(),
            options
        );
        assert_eq!(r.position(), bytes.len() as u64);
    }

    #[test]
    fn bad_magic_is_named() {
        let bytes = 0x1234u64.to_le_bytes();
        let err = run_ready(read_client_magic(&mut SyncReader::new(&bytes[..]))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "client hello magic (at byte 0): bad magic number 0x1234 (expected 0x6e697863)"
        );
    }
}
