//! Realisations ("build trace" entries: which store path a derivation output resolved to), in
//! the binary form of the `realisation-with-path-not-hash` feature (Nix 2.35, protocol 1.38).
//!
//! * [`DrvOutput`]: `StorePath drvPath`, `str outputName`.
//! * [`UnkeyedRealisation`]: `StorePath outPath`, `[Signature] signatures`.
//! * [`Realisation`]: a `DrvOutput` followed by an `UnkeyedRealisation`.
//!
//! All three exist on the wire only when the feature was negotiated; encoding or decoding them
//! without it fails, as in Nix. The forms used before the feature are in [`super::legacy`].
//!
//! These types live in the protocol crate because the store model has no realisation type yet;
//! they are model types and may move there.

use std::collections::BTreeSet;

use pkgchain_store_model::signature::Signature;
use pkgchain_store_model::store_path::StorePath;

use crate::context::WireContext;
use crate::version::FEATURE_REALISATION_WITH_PATH_NOT_HASH;
use crate::wire::{Decode, Encode, WireError, WireRead, WireWriter};

pub use super::legacy::{LegacyDrvOutput, LegacyRealisation, LegacyRealisationJson};

/// Fails unless `realisation-with-path-not-hash` was negotiated.
pub(crate) fn require_feature(cx: &WireContext, what: &'static str) -> Result<(), WireError> {
    if cx.has_feature(FEATURE_REALISATION_WITH_PATH_NOT_HASH) {
        Ok(())
    } else {
        Err(WireError::not_representable(
            what,
            format!(
                "the peer did not negotiate the '{FEATURE_REALISATION_WITH_PATH_NOT_HASH}' protocol feature"
            ),
        ))
    }
}

/// One output of one derivation, named by the derivation's store path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DrvOutput {
    /// The store derivation.
    pub drv_path: StorePath,
    /// The output name.
    pub output_name: String,
}

/// Where a derivation output ended up, and who vouches for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnkeyedRealisation {
    /// The output's store path.
    pub out_path: StorePath,
    /// Signatures over the realisation's fingerprint.
    pub signatures: BTreeSet<Signature>,
}

impl UnkeyedRealisation {
    /// A realisation with no signatures.
    pub fn new(out_path: StorePath) -> UnkeyedRealisation {
        UnkeyedRealisation {
            out_path,
            signatures: BTreeSet::new(),
        }
    }
}

/// A derivation output and where it ended up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Realisation {
    /// Which output.
    pub id: DrvOutput,
    /// Where it is.
    pub value: UnkeyedRealisation,
}

impl Encode for DrvOutput {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        require_feature(cx, "derivation output")?;
        self.drv_path.encode(w, cx)?;
        w.put_str(&self.output_name);
        Ok(())
    }
}

impl Decode for DrvOutput {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        require_feature(cx, "derivation output")?;
        let drv_path = StorePath::decode(r, cx, "derivation output path").await?;
        let output_name = String::decode(r, cx, "derivation output name").await?;
        Ok(DrvOutput {
            drv_path,
            output_name,
        })
    }
}

impl Encode for UnkeyedRealisation {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        require_feature(cx, "realisation")?;
        self.out_path.encode(w, cx)?;
        self.signatures.encode(w, cx)
    }
}

impl Decode for UnkeyedRealisation {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        require_feature(cx, "realisation")?;
        let out_path = StorePath::decode(r, cx, "realisation output path").await?;
        let signatures = BTreeSet::<Signature>::decode(r, cx, "realisation signatures").await?;
        Ok(UnkeyedRealisation {
            out_path,
            signatures,
        })
    }
}

impl Encode for Realisation {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        self.id.encode(w, cx)?;
        self.value.encode(w, cx)
    }
}

impl Decode for Realisation {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> Result<Self, WireError> {
        let id = DrvOutput::decode(r, cx, what).await?;
        let value = UnkeyedRealisation::decode(r, cx, what).await?;
        Ok(Realisation { id, value })
    }
}
