//! `BuildDerivation` (36): a derivation sent in the request, and the build mode.
//!
//! Request: `StorePath drvPath`, the [`BasicDerivation`], u64 [`BuildMode`](crate::types::BuildMode). A
//! BasicDerivation is: u64 output count and per output `str name`, `str path`, `str hashAlgo`,
//! `str hash`; `[StorePath] inputSrcs`; `str platform`; `str builder`; `[str] args`;
//! `{str:str} env`. It has no input derivations: the inputs must already be valid. The
//! derivation's name is the `.drv` path's name without `.drv`.
//!
//! Output triples (`path`, `hashAlgo`, `hash`): input-addressed `(path, "", "")`; fixed
//! `(path, "r:sha256" | "sha256" | ..., base16 hash)`; floating `("", "r:sha256", "")`;
//! deferred `("", "", "")`; impure `("", "r:sha256", "impure")`. The wire form is kept as
//! sent ([`WireDerivationOutput`]); [`BasicDerivation::to_derivation`] interprets it.

use std::collections::{BTreeMap, BTreeSet};

use pkgchain_store_model::content_address::{ContentAddress, ContentAddressMethod};
use pkgchain_store_model::derivation::{Derivation, DerivationOutput};
use pkgchain_store_model::hash::{Hash, HashEncoding};
use pkgchain_store_model::store_path::{StoreDir, StorePath, output_path_name};

use crate::context::WireContext;
use crate::types::derived_path::check_output_name;
use crate::wire::read::{read_bytes, read_len};
use crate::wire::{ByteString, Decode, Encode, WireError, WireRead, WireWriter};

/// The hash field of an impure output.
const IMPURE: &str = "impure";

/// One output of a [`BasicDerivation`], as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireDerivationOutput {
    /// The output path (`""` on the wire: none, for floating, deferred and impure outputs).
    pub path: Option<StorePath>,
    /// `""` (input-addressed), or method and algorithm: `r:sha256`, `sha256`, `text:sha256`,
    /// `git:sha1`.
    pub hash_algo: String,
    /// `""`, the base16 hash of a fixed output, or `impure`.
    pub hash: String,
}

/// A derivation without input derivations, as `BuildDerivation` sends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BasicDerivation {
    /// Outputs by name.
    pub outputs: BTreeMap<String, WireDerivationOutput>,
    /// Input store paths.
    pub input_srcs: BTreeSet<StorePath>,
    /// The platform (`x86_64-linux`, `builtin`).
    pub platform: ByteString,
    /// The program to run.
    pub builder: ByteString,
    /// Its arguments.
    pub args: Vec<ByteString>,
    /// Its environment (`__json` holds structured attributes).
    pub env: BTreeMap<ByteString, ByteString>,
}

impl Encode for BasicDerivation {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        w.put_u64(self.outputs.len() as u64);
        for (name, output) in &self.outputs {
            w.put_str(name);
            output.path.encode(w, cx)?;
            w.put_str(&output.hash_algo);
            w.put_str(&output.hash);
        }
        self.input_srcs.encode(w, cx)?;
        self.platform.encode(w, cx)?;
        self.builder.encode(w, cx)?;
        self.args.encode(w, cx)?;
        self.env.encode(w, cx)
    }
}

impl Decode for BasicDerivation {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        let string_limit = cx.limits.max_string_len;
        let len = read_len(r, cx.limits.max_list_len, "derivation outputs").await?;
        let mut outputs = BTreeMap::new();
        for _ in 0..len {
            let at = r.position();
            let name = String::decode(r, cx, "derivation output name").await?;
            check_output_name(&name)
                .map_err(|e| WireError::invalid("derivation output name", Some(at), e))?;
            let path = Option::<StorePath>::decode(r, cx, "derivation output path").await?;
            let hash_algo = String::decode(r, cx, "derivation output hash algorithm").await?;
            let hash = String::decode(r, cx, "derivation output hash").await?;
            outputs.insert(
                name,
                WireDerivationOutput {
                    path,
                    hash_algo,
                    hash,
                },
            );
        }
        let input_srcs = BTreeSet::decode(r, cx, "derivation input sources").await?;
        let platform = ByteString(read_bytes(r, string_limit, "derivation platform").await?);
        let builder = ByteString(read_bytes(r, string_limit, "derivation builder").await?);
        let args = Vec::decode(r, cx, "derivation arguments").await?;
        let len = read_len(r, cx.limits.max_list_len, "derivation environment").await?;
        let mut env = BTreeMap::new();
        for _ in 0..len {
            let key = read_bytes(r, string_limit, "derivation environment name").await?;
            let value = ByteString::decode(r, cx, "derivation environment value").await?;
            env.insert(ByteString(key), value);
        }
        Ok(BasicDerivation {
            outputs,
            input_srcs,
            platform,
            builder,
            args,
            env,
        })
    }
}

impl BasicDerivation {
    /// Interprets the derivation named `name` (the `.drv` path's name without `.drv`) the
    /// way Nix's `readDerivation` does. Fails on an output whose triple has no meaning (an
    /// unknown algorithm, a floating or impure output with a path, a fixed output whose path
    /// is not the one its hash gives). The result has no input derivations.
    pub fn to_derivation(&self, name: &str, store_dir: &StoreDir) -> Result<Derivation, String> {
        let mut outputs = BTreeMap::new();
        for (output_name, output) in &self.outputs {
            let parsed = interpret_output(name, output_name, output, store_dir)
                .map_err(|e| format!("derivation output '{output_name}': {e}"))?;
            outputs.insert(output_name.clone(), parsed);
        }
        Ok(Derivation {
            name: name.to_owned(),
            outputs,
            input_drvs: BTreeMap::new(),
            input_srcs: self.input_srcs.clone(),
            platform: self.platform.0.clone(),
            builder: self.builder.0.clone(),
            args: self.args.iter().map(|a| a.0.clone()).collect(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.0.clone(), v.0.clone()))
                .collect(),
        })
    }

    /// The wire form of `drv`, dropping its input derivations (as Nix does when it sends a
    /// resolved derivation to a builder). Fails only for a fixed output whose content address
    /// gives no store path.
    pub fn from_derivation(drv: &Derivation, store_dir: &StoreDir) -> Result<Self, String> {
        let mut outputs = BTreeMap::new();
        for (output_name, output) in &drv.outputs {
            let wire = match output {
                DerivationOutput::InputAddressed(path) => WireDerivationOutput {
                    path: Some(path.clone()),
                    hash_algo: String::new(),
                    hash: String::new(),
                },
                DerivationOutput::CaFixed(ca) => WireDerivationOutput {
                    path: Some(
                        ca.store_path(
                            store_dir,
                            &output_path_name(&drv.name, output_name),
                            [],
                            false,
                        )
                        .map_err(|e| e.to_string())?,
                    ),
                    hash_algo: ca.print_method_algo(),
                    hash: ca.hash.encode(HashEncoding::Base16),
                },
                DerivationOutput::CaFloating { method, hash_algo } => WireDerivationOutput {
                    path: None,
                    hash_algo: method.render_method_algo(*hash_algo),
                    hash: String::new(),
                },
                DerivationOutput::Deferred => WireDerivationOutput {
                    path: None,
                    hash_algo: String::new(),
                    hash: String::new(),
                },
                DerivationOutput::Impure { method, hash_algo } => WireDerivationOutput {
                    path: None,
                    hash_algo: method.render_method_algo(*hash_algo),
                    hash: IMPURE.to_owned(),
                },
            };
            outputs.insert(output_name.clone(), wire);
        }
        Ok(BasicDerivation {
            outputs,
            input_srcs: drv.input_srcs.clone(),
            platform: ByteString(drv.platform.clone()),
            builder: ByteString(drv.builder.clone()),
            args: drv.args.iter().map(|a| ByteString(a.clone())).collect(),
            env: drv
                .env
                .iter()
                .map(|(k, v)| (ByteString(k.clone()), ByteString(v.clone())))
                .collect(),
        })
    }
}

fn interpret_output(
    drv_name: &str,
    output_name: &str,
    output: &WireDerivationOutput,
    store_dir: &StoreDir,
) -> Result<DerivationOutput, String> {
    if output.hash_algo.is_empty() {
        // A hash without an algorithm is ignored, as in Nix.
        return Ok(match &output.path {
            None => DerivationOutput::Deferred,
            Some(path) => DerivationOutput::InputAddressed(path.clone()),
        });
    }
    let (method, hash_algo) =
        ContentAddressMethod::parse_method_algo(&output.hash_algo).map_err(|e| e.to_string())?;
    if output.hash == IMPURE {
        if output.path.is_some() {
            return Err("an impure output must not have a path".to_owned());
        }
        return Ok(DerivationOutput::Impure { method, hash_algo });
    }
    if output.hash.is_empty() {
        if output.path.is_some() {
            return Err("a floating content-addressed output must not have a path".to_owned());
        }
        return Ok(DerivationOutput::CaFloating { method, hash_algo });
    }
    let hash = Hash::parse_digest(hash_algo, &output.hash).map_err(|e| e.to_string())?;
    let ca = ContentAddress::new(method, hash);
    let expected = ca
        .store_path(
            store_dir,
            &output_path_name(drv_name, output_name),
            [],
            false,
        )
        .map_err(|e| e.to_string())?;
    match &output.path {
        Some(path) if *path == expected => Ok(DerivationOutput::CaFixed(ca)),
        Some(path) => Err(format!(
            "fixed output has path '{}' but its hash gives '{}'",
            store_dir.display(path),
            store_dir.display(&expected)
        )),
        None => Err("a fixed output needs its path".to_owned()),
    }
}
