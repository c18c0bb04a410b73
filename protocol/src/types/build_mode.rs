//! How to build: normally, repairing, or checking determinism.

use crate::context::WireContext;
use crate::wire::read::read_enum;
use crate::wire::{Decode, Encode, WireError, WireRead, WireWriter};

/// `BuildMode`: u64 0 normal, 1 repair, 2 check. Sent by `BuildPaths` (from 1.15),
/// `BuildDerivation` and `BuildPathsWithResults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BuildMode {
    /// Build what is missing.
    #[default]
    Normal,
    /// Rebuild or re-fetch corrupted or missing paths (trusted clients only).
    Repair,
    /// Build again and compare with the existing outputs.
    Check,
}

impl BuildMode {
    /// The wire number.
    pub const fn to_wire(self) -> u64 {
        match self {
            BuildMode::Normal => 0,
            BuildMode::Repair => 1,
            BuildMode::Check => 2,
        }
    }

    /// From the wire number.
    pub const fn from_wire(value: u64) -> Option<BuildMode> {
        match value {
            0 => Some(BuildMode::Normal),
            1 => Some(BuildMode::Repair),
            2 => Some(BuildMode::Check),
            _ => None,
        }
    }
}

impl Encode for BuildMode {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_u64(self.to_wire());
        Ok(())
    }
}

impl Decode for BuildMode {
    async fn decode<R: WireRead>(
        r: &mut R,
        _: &WireContext,
        what: &'static str,
    ) -> Result<Self, WireError> {
        read_enum(r, what, BuildMode::from_wire).await
    }
}
