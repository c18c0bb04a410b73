//! Protocol versions and feature names.
//!
//! A version is `major.minor`, sent as the u64 `(major << 8) | minor`; major is always 1.
//! Every version-dependent encoding in this crate is gated on the *negotiated* version
//! (`min(client, daemon)`), which [`WireContext::version`](crate::WireContext) carries.
//! From 1.38 on, new behaviour is switched by feature names exchanged in the handshake instead
//! of version bumps.

use std::collections::BTreeSet;
use std::fmt;

/// A worker-protocol version. Ordered by major, then minor, so gates read
/// `cx.version >= ProtocolVersion::new(1, 29)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    major: u8,
    minor: u8,
}

impl ProtocolVersion {
    /// The oldest version the test vectors use for version-independent encodings (Nix's
    /// `defaultVersion` in its protocol tests).
    pub const V1_10: ProtocolVersion = ProtocolVersion::new(1, 10);
    /// The oldest version package chain serves: Nix 2.3's.
    pub const MIN_SUPPORTED: ProtocolVersion = ProtocolVersion::new(1, 21);
    /// The newest version package chain speaks: Nix 2.24 and later.
    pub const LATEST: ProtocolVersion = ProtocolVersion::new(1, 38);

    /// `major.minor`.
    pub const fn new(major: u8, minor: u8) -> ProtocolVersion {
        ProtocolVersion { major, minor }
    }

    /// Reads the wire form the way Nix does: major from bits 8-15, minor from bits 0-7, other
    /// bits ignored.
    pub const fn from_wire(value: u64) -> ProtocolVersion {
        ProtocolVersion {
            major: ((value >> 8) & 0xff) as u8,
            minor: (value & 0xff) as u8,
        }
    }

    /// `(major << 8) | minor`.
    pub const fn to_wire(self) -> u64 {
        ((self.major as u64) << 8) | self.minor as u64
    }

    /// The major number.
    pub const fn major(self) -> u8 {
        self.major
    }

    /// The minor number.
    pub const fn minor(self) -> u8 {
        self.minor
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl fmt::Debug for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProtocolVersion({self})")
    }
}

/// A set of protocol feature names (1.38+); the negotiated set is the intersection of what
/// both sides sent.
pub type FeatureSet = BTreeSet<String>;

/// Nix 2.35: `DrvOutput` is (drv path, output name), realisations are binary, and
/// `BuildResult.builtOutputs` is keyed by output name.
pub const FEATURE_REALISATION_WITH_PATH_NOT_HASH: &str = "realisation-with-path-not-hash";
/// Nix 2.35: `CollectGarbage` carries a tagged "paths to delete" with a delete-referrers flag.
pub const FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS: &str = "delete-dead-specific-referrers";
/// Nix 2.35 clients: the client skips `SetOptions` (only recursive-nix daemons accept it).
pub const FEATURE_DISABLE_SET_OPTIONS: &str = "disable-set-options";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_and_order() {
        assert_eq!(ProtocolVersion::LATEST.to_wire(), 0x126);
        assert_eq!(ProtocolVersion::MIN_SUPPORTED.to_wire(), 0x115);
        assert_eq!(
            ProtocolVersion::from_wire(0x11d),
            ProtocolVersion::new(1, 29)
        );
        assert!(ProtocolVersion::new(1, 30) >= ProtocolVersion::new(1, 29));
        assert!(ProtocolVersion::new(1, 9) < ProtocolVersion::new(1, 10));
        assert!(ProtocolVersion::new(2, 0) > ProtocolVersion::new(1, 255));
        assert_eq!(ProtocolVersion::new(1, 38).to_string(), "1.38");
    }
}
