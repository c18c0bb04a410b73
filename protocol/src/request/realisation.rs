//! `RegisterDrvOutput` (42) and the key of `QueryRealisation` (43), whose forms depend on the
//! version and on `realisation-with-path-not-hash`.
//!
//! | op | below 1.31 | 1.31 and later | with the feature |
//! |---|---|---|---|
//! | 42 | `str "sha256:<hex>!out"`, `str` out path **base name** | `str` realisation JSON | `DrvOutput`, `UnkeyedRealisation` |
//! | 43 | `str "sha256:<hex>!out"` | same | `DrvOutput` (drv path, output name) |

use pkgchain_store_model::store_path::StorePath;

use crate::context::WireContext;
use crate::types::store::read_parsed;
use crate::types::{DrvOutput, LegacyDrvOutput, LegacyRealisation, Realisation};
use crate::version::FEATURE_REALISATION_WITH_PATH_NOT_HASH;
use crate::wire::{Decode, Encode, WireError, WireRead, WireWriter};

fn has_feature(cx: &WireContext) -> bool {
    cx.has_feature(FEATURE_REALISATION_WITH_PATH_NOT_HASH)
}

fn wrong_form(what: &'static str, form: &str, cx: &WireContext) -> WireError {
    WireError::not_representable(
        what,
        format!(
            "the {form} form is not the one of protocol {}{}",
            cx.version,
            if has_feature(cx) {
                format!(" with '{FEATURE_REALISATION_WITH_PATH_NOT_HASH}'")
            } else {
                String::new()
            }
        ),
    )
}

/// The argument of `RegisterDrvOutput`, in the form the connection uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterDrvOutput {
    /// Below 1.31 (pre-release Nix 2.4 peers): the legacy id and the output path.
    Pre1_31 {
        /// Which output.
        id: LegacyDrvOutput,
        /// Where it is (sent as a base name).
        out_path: StorePath,
    },
    /// 1.31 and later without the feature: the JSON realisation.
    Legacy(LegacyRealisation),
    /// With `realisation-with-path-not-hash`.
    Realisation(Realisation),
}

impl RegisterDrvOutput {
    pub(crate) fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        let what = "RegisterDrvOutput realisation";
        match self {
            RegisterDrvOutput::Realisation(r) if has_feature(cx) => r.encode(w, cx),
            RegisterDrvOutput::Legacy(r) if !has_feature(cx) && cx.at_least(31) => r.encode(w, cx),
            RegisterDrvOutput::Pre1_31 { id, out_path } if !has_feature(cx) && !cx.at_least(31) => {
                id.encode(w, cx)?;
                w.put_str(out_path.base_name());
                Ok(())
            }
            RegisterDrvOutput::Realisation(_) => Err(wrong_form(what, "binary", cx)),
            RegisterDrvOutput::Legacy(_) => Err(wrong_form(what, "JSON", cx)),
            RegisterDrvOutput::Pre1_31 { .. } => Err(wrong_form(what, "pre-1.31", cx)),
        }
    }

    pub(crate) async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
    ) -> Result<RegisterDrvOutput, WireError> {
        let what = "RegisterDrvOutput realisation";
        Ok(if has_feature(cx) {
            RegisterDrvOutput::Realisation(Realisation::decode(r, cx, what).await?)
        } else if cx.at_least(31) {
            RegisterDrvOutput::Legacy(LegacyRealisation::decode(r, cx, what).await?)
        } else {
            let id = LegacyDrvOutput::decode(r, cx, "RegisterDrvOutput id").await?;
            let out_path = read_parsed(
                r,
                cx,
                "RegisterDrvOutput output path",
                StorePath::from_base_name,
            )
            .await?;
            RegisterDrvOutput::Pre1_31 { id, out_path }
        })
    }
}

/// The argument of `QueryRealisation`: which derivation output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrvOutputKey {
    /// Without the feature: `sha256:<hex>!<output>`.
    Legacy(LegacyDrvOutput),
    /// With `realisation-with-path-not-hash`: derivation path and output name.
    Path(DrvOutput),
}

impl DrvOutputKey {
    pub(crate) fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        match self {
            DrvOutputKey::Path(id) if has_feature(cx) => id.encode(w, cx),
            DrvOutputKey::Legacy(id) if !has_feature(cx) => id.encode(w, cx),
            DrvOutputKey::Path(_) => Err(wrong_form("QueryRealisation output", "binary", cx)),
            DrvOutputKey::Legacy(_) => Err(wrong_form("QueryRealisation output", "legacy", cx)),
        }
    }

    pub(crate) async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
    ) -> Result<DrvOutputKey, WireError> {
        let what = "QueryRealisation output";
        Ok(if has_feature(cx) {
            DrvOutputKey::Path(DrvOutput::decode(r, cx, what).await?)
        } else {
            DrvOutputKey::Legacy(LegacyDrvOutput::decode(r, cx, what).await?)
        })
    }
}
