//! The realisation encodings from before `realisation-with-path-not-hash` (protocol 1.28-1.38
//! without the feature; Nix 2.4 to 2.34, and 2.35 towards old peers).
//!
//! * [`LegacyDrvOutput`]: one string `sha256:<base16 hash modulo of the derivation>!<output>`.
//! * [`LegacyRealisation`]: one string holding JSON,
//!   `{"dependentRealisations":{…},"id":"sha256:…!out","outPath":"<base name>","signatures":[…]}`.
//!   Readers need `id` and `outPath`; the other keys are optional and unknown keys are
//!   ignored. Signatures may be `"name:base64"` strings (Nix 2.4 and later) or
//!   `{"keyName","sig"}` objects (the newest pre-2.35 writers); both are read.
//!
//! How to *write* the JSON is a choice ([`LegacyRealisationJson`]) because Nix versions wrote
//! different shapes and the test vectors pin each of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;

use pkgchain_store_model::hash::{Hash, HashEncoding};
use pkgchain_store_model::signature::Signature;
use pkgchain_store_model::store_path::{StoreDir, StorePath};
use serde_json::Value;

use super::derived_path::check_output_name;
use super::store::read_parsed;
use crate::context::WireContext;
use crate::wire::{Decode, Encode, WireError, WireRead, WireWriter};

/// How to write a legacy realisation's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LegacyRealisationJson {
    /// `{"id":…,"outPath":…}`: what Nix 2.35 writes in `BuildResult.builtOutputs` for old
    /// peers (who only read `outPath` and the output name). Drops signatures and dependencies.
    #[default]
    IdAndOutPath,
    /// All four keys, signatures as `"name:base64"` strings: what Nix 2.4 and later (before
    /// signatures became objects) wrote, readable by every pre-2.35 client.
    FullStringSignatures,
    /// All four keys, signatures as `{"keyName","sig"}` objects: what the newest pre-2.35
    /// writers produced. Unsure which older clients read it; prefer the string form.
    FullObjectSignatures,
}

/// A derivation output named by the derivation's hash modulo: `sha256:<base16>!<output>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegacyDrvOutput {
    /// The derivation's hash modulo (Nix 2.35 writes an all-zero SHA-256 where it no longer
    /// has one; see [`LegacyDrvOutput::dummy_hash`]).
    pub drv_hash: Hash,
    /// The output name.
    pub output_name: String,
}

impl LegacyDrvOutput {
    /// The all-zero SHA-256 Nix 2.35 writes where the hash no longer exists.
    pub fn dummy_hash() -> Hash {
        Hash::sha256([0; 32])
    }

    /// Parses `<algo>:<digest>!<output>` (the hash in any encoding Nix accepts, or SRI).
    pub fn parse(text: &str) -> Result<LegacyDrvOutput, String> {
        let (hash, name) = text.split_once('!').ok_or_else(|| {
            format!(
                "invalid derivation output id '{}': no '!'",
                text.escape_debug()
            )
        })?;
        let drv_hash = Hash::parse_prefixed(hash).map_err(|e| e.to_string())?;
        check_output_name(name)?;
        Ok(LegacyDrvOutput {
            drv_hash,
            output_name: name.to_owned(),
        })
    }
}

impl fmt::Display for LegacyDrvOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}!{}",
            self.drv_hash.to_prefixed(HashEncoding::Base16),
            self.output_name
        )
    }
}

impl Encode for LegacyDrvOutput {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_str(&self.to_string());
        Ok(())
    }
}

impl Decode for LegacyDrvOutput {
    fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_parsed(r, cx, what, LegacyDrvOutput::parse)
    }
}

/// A realisation in its JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LegacyRealisation {
    /// Which output.
    pub id: LegacyDrvOutput,
    /// Where it is.
    pub out_path: StorePath,
    /// Signatures over the realisation.
    pub signatures: BTreeSet<Signature>,
    /// Realisations of the derivation's inputs this one depends on (CA derivations).
    pub dependent_realisations: BTreeMap<LegacyDrvOutput, StorePath>,
}

impl LegacyRealisation {
    /// Parses the JSON text. `outPath` is a base name; an absolute path in `store_dir` is
    /// accepted too.
    pub fn from_json(text: &str, store_dir: &StoreDir) -> Result<LegacyRealisation, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let obj = json
            .as_object()
            .ok_or("realisation JSON is not an object")?;
        let get_str = |key: &str| -> Result<&str, String> {
            obj.get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("realisation JSON has no string '{key}'"))
        };
        let id = LegacyDrvOutput::parse(get_str("id")?)?;
        let out_path = parse_path(get_str("outPath")?, store_dir)?;
        let mut signatures = BTreeSet::new();
        if let Some(sigs) = obj.get("signatures") {
            let sigs = sigs
                .as_array()
                .ok_or("realisation 'signatures' is not an array")?;
            for sig in sigs {
                signatures.insert(parse_signature(sig)?);
            }
        }
        let mut dependent_realisations = BTreeMap::new();
        if let Some(deps) = obj.get("dependentRealisations") {
            let deps = deps
                .as_object()
                .ok_or("realisation 'dependentRealisations' is not an object")?;
            for (k, v) in deps {
                let path = v.as_str().ok_or("realisation dependency is not a string")?;
                dependent_realisations
                    .insert(LegacyDrvOutput::parse(k)?, parse_path(path, store_dir)?);
            }
        }
        Ok(LegacyRealisation {
            id,
            out_path,
            signatures,
            dependent_realisations,
        })
    }

    /// Writes the JSON text in the given shape, keys sorted and without spaces (as Nix's JSON
    /// library prints it).
    pub fn to_json(&self, style: LegacyRealisationJson) -> String {
        let id = quote(&self.id.to_string());
        let out_path = quote(self.out_path.base_name());
        if style == LegacyRealisationJson::IdAndOutPath {
            return format!(r#"{{"id":{id},"outPath":{out_path}}}"#);
        }
        let mut deps: Vec<(String, &StorePath)> = self
            .dependent_realisations
            .iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        deps.sort();
        let deps: Vec<String> = deps
            .iter()
            .map(|(k, v)| format!("{}:{}", quote(k), quote(v.base_name())))
            .collect();
        let sigs: Vec<String> = match style {
            LegacyRealisationJson::FullObjectSignatures => self
                .signatures
                .iter()
                .map(|s| {
                    format!(
                        r#"{{"keyName":{},"sig":{}}}"#,
                        quote(s.key_name()),
                        quote(&s.bytes_base64())
                    )
                })
                .collect(),
            _ => {
                let mut texts: Vec<String> =
                    self.signatures.iter().map(ToString::to_string).collect();
                texts.sort();
                texts.iter().map(|s| quote(s)).collect()
            }
        };
        format!(
            r#"{{"dependentRealisations":{{{}}},"id":{id},"outPath":{out_path},"signatures":[{}]}}"#,
            deps.join(","),
            sigs.join(",")
        )
    }
}

fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn parse_path(text: &str, store_dir: &StoreDir) -> Result<StorePath, String> {
    if text.starts_with('/') {
        store_dir.parse(text)
    } else {
        StorePath::from_base_name(text)
    }
    .map_err(|e| e.to_string())
}

fn parse_signature(value: &Value) -> Result<Signature, String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Object(o) => match (
            o.get("keyName").and_then(Value::as_str),
            o.get("sig").and_then(Value::as_str),
        ) {
            (Some(name), Some(sig)) => format!("{name}:{sig}"),
            _ => return Err("realisation signature object lacks 'keyName' or 'sig'".to_owned()),
        },
        _ => return Err("realisation signature is neither a string nor an object".to_owned()),
    };
    Signature::parse(&text).map_err(|e| e.to_string())
}

impl Encode for LegacyRealisation {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        w.put_str(&self.to_json(cx.legacy_realisation_json));
        Ok(())
    }
}

impl Decode for LegacyRealisation {
    fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_parsed(r, cx, what, |s| {
            LegacyRealisation::from_json(s, &cx.store_dir)
        })
    }
}
