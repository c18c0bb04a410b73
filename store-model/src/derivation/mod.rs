//! Derivations: the build recipes Nix stores as `.drv` files.
//!
//! A [`Derivation`] says which outputs a build produces ([`DerivationOutput`]), what it needs
//! (input derivations with the outputs wanted from each, and plain input store paths), and how to
//! run it (platform, builder, arguments, environment).
//!
//! * [`aterm`]: the `.drv` file format (`Derive(...)` / `DrvWithVersion("xp-dyn-drv",...)`), a
//!   bounded iterative parser and a printer that reproduces Nix's bytes.
//! * [`json`]: the JSON form of Nix 2.35 (`nix derivation show`, format version 4).
//! * [`hash_modulo`]: `hashDerivationModulo`, output paths, the `.drv` path itself, filling in
//!   deferred output paths, and the placeholder strings Nix substitutes for unknown paths.
//! * [`resolve`]: replacing input derivations by their built outputs (`tryResolve`).
//!
//! # Strings are bytes
//!
//! Nix strings are byte strings: an environment variable may hold any bytes but NUL (for
//! instance the contents of a Latin-1 file read with `builtins.readFile`), and the `.drv` file
//! and every hash computed from it see those bytes unchanged. The builder, its arguments, the
//! environment and the platform are therefore `Vec<u8>`, so that parsing and printing are exact
//! for every derivation Nix can write, and the sandbox can hand them to `execve` as they are.
//! Names that end up in store paths (the derivation name and output names) are validated and
//! kept as `String`. The JSON form needs UTF-8 and fails cleanly where a string is not.
//!
//! # Structured attributes
//!
//! With `__structuredAttrs = true` Nix puts the attributes as one JSON document into the
//! environment variable `__json`. This model keeps that variable in [`Derivation::env`] as the
//! exact bytes of the `.drv` file (Nix 2.35 re-serialises it on printing, which gives the same
//! bytes for every `.drv` Nix wrote); the JSON form shows it as the `structuredAttrs` object, as
//! Nix 2.35 does, and [`json::dump`] serialises such an object exactly like Nix.

pub mod aterm;
pub mod hash_modulo;
pub mod json;
pub mod resolve;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::content_address::{ContentAddress, ContentAddressError, ContentAddressMethod};
use crate::hash::{HashAlgo, truncate_for_error};
use crate::store_path::{StoreDir, StorePath, StorePathError, output_path_name};

pub use aterm::{AtermError, AtermErrorKind, ParseLimits};
pub use hash_modulo::{
    DownstreamPlaceholder, DrvHash, DrvHashKind, DrvHashes, hash_derivation_modulo,
    hash_placeholder,
};

/// The file name extension of derivations.
pub const DRV_EXTENSION: &str = ".drv";

/// The environment variable that holds structured attributes as JSON.
pub const STRUCTURED_ATTRS_ENV: &str = "__json";

/// Why a derivation was rejected or an operation on it failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DerivationError {
    /// The `.drv` (ATerm) text is malformed; says what and at which byte.
    #[error(transparent)]
    Aterm(#[from] AtermError),
    /// The JSON form is malformed; says what and where.
    #[error("invalid derivation JSON at {path}: {message}")]
    Json {
        /// Where in the document (`outputs.out.hash`, ...).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A string that must be shown as JSON (or as an output name) is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(String),
    /// The derivation has no outputs.
    #[error("must have at least one output")]
    NoOutputs,
    /// Outputs of different kinds (input-addressed, fixed, floating, deferred, impure) are mixed.
    #[error("can't mix derivation output types")]
    MixedOutputTypes,
    /// More than one fixed output.
    #[error("only one fixed output is allowed for now")]
    MultipleFixedOutputs,
    /// The fixed output is not called `out`.
    #[error("single fixed output must be named \"out\"")]
    FixedOutputNotOut,
    /// Floating outputs use different hash algorithms.
    #[error("all floating outputs must use the same hash algorithm")]
    FloatingHashAlgoMismatch,
    /// The caller did not supply the modulo hash of an input derivation.
    #[error("no modulo hash known for input derivation '{0}'")]
    MissingInputHash(String),
    /// Input derivations depend on each other in a cycle.
    #[error("input derivation '{0}' depends on itself")]
    InputCycle(String),
    /// An input derivation has no hash for the output this derivation wants from it.
    #[error("no hash for output '{output}' of derivation '{drv}'")]
    MissingOutputHash {
        /// The output wanted.
        output: String,
        /// The name of the derivation being hashed.
        drv: String,
    },
    /// A content address is unusable (for example Git hashing with MD5).
    #[error(transparent)]
    ContentAddress(#[from] ContentAddressError),
    /// A store path or name is invalid.
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    /// An output name is not a valid part of a store path name.
    #[error("invalid derivation output name '{0}'")]
    BadOutputName(String),
    /// The platform contains `"` or `\`, which Nix prints unescaped.
    #[error("derivation platform '{0}' contains '\"' or '\\', which a .drv file cannot hold")]
    UnprintablePlatform(String),
    /// An input-addressed output has the wrong path.
    #[error("derivation has incorrect output '{actual}', should be '{expected}'")]
    WrongOutputPath {
        /// The path the derivation states.
        actual: String,
        /// The path Nix computes.
        expected: String,
    },
    /// An input-addressed output states a path although its inputs make it deferred.
    #[error("derivation has incorrect output '{0}', should be deferred")]
    ShouldBeDeferred(String),
    /// The environment variable named after an output is missing.
    #[error(
        "derivation has missing environment variable '{name}', should be '{expected}' but is not present"
    )]
    EnvMissing {
        /// The output (and variable) name.
        name: String,
        /// The path it should hold.
        expected: String,
    },
    /// The environment variable named after an output has the wrong value.
    #[error(
        "derivation has incorrect environment variable '{name}', should be '{expected}' but is actually '{actual}'"
    )]
    EnvMismatch {
        /// The output (and variable) name.
        name: String,
        /// The path it should hold.
        expected: String,
        /// What it holds.
        actual: String,
    },
    /// The derivation's name does not match the `.drv` path it was read from.
    #[error("derivation '{path}' has name '{name}' which does not match its path")]
    NameMismatch {
        /// The `.drv` path.
        path: String,
        /// The name inside.
        name: String,
    },
    /// The `__json` variable is not a JSON object.
    #[error("invalid structured attributes in '__json': {0}")]
    StructuredAttrs(String),
}

/// One output of a derivation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DerivationOutput {
    /// The output path is known in advance from the derivation's inputs.
    InputAddressed(StorePath),
    /// A fixed-output derivation: the content address is known in advance, so is the path.
    CaFixed(ContentAddress),
    /// A content-addressed output whose hash is known only after building (`ca-derivations`).
    CaFloating {
        /// How the output will be hashed.
        method: ContentAddressMethod,
        /// With which algorithm.
        hash_algo: HashAlgo,
    },
    /// Input-addressed, but the path cannot be computed yet because an input's output paths
    /// are not known (it depends on a floating CA or dynamic derivation).
    Deferred,
    /// An impure derivation output (`impure-derivations`): content-addressed, never cached.
    Impure {
        /// How the output will be hashed.
        method: ContentAddressMethod,
        /// With which algorithm.
        hash_algo: HashAlgo,
    },
}

impl DerivationOutput {
    /// The output's store path when it is known statically (input-addressed and fixed outputs).
    pub fn path(
        &self,
        store_dir: &StoreDir,
        drv_name: &str,
        output_name: &str,
    ) -> Result<Option<StorePath>, DerivationError> {
        match self {
            DerivationOutput::InputAddressed(path) => Ok(Some(path.clone())),
            DerivationOutput::CaFixed(ca) => Ok(Some(fixed_output_path(
                ca,
                store_dir,
                drv_name,
                output_name,
            )?)),
            DerivationOutput::CaFloating { .. }
            | DerivationOutput::Deferred
            | DerivationOutput::Impure { .. } => Ok(None),
        }
    }
}

/// The path of a fixed output: the content address without references, named after the output.
pub(crate) fn fixed_output_path(
    ca: &ContentAddress,
    store_dir: &StoreDir,
    drv_name: &str,
    output_name: &str,
) -> Result<StorePath, ContentAddressError> {
    ca.store_path(
        store_dir,
        &output_path_name(drv_name, output_name),
        [],
        false,
    )
}

/// The outputs wanted from one input derivation, Nix's `DerivedPathMap` node.
///
/// `outputs` are outputs of the input derivation itself. `dynamic_outputs` (experimental
/// dynamic derivations) maps an output of the input derivation that is itself a derivation to
/// the outputs wanted from that one, and so on. Parsers bound the nesting depth, so the derived
/// `Clone`, `Drop` and `PartialEq` never recurse deeply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct InputOutputs {
    /// Output names wanted from the input derivation.
    pub outputs: BTreeSet<String>,
    /// Outputs that are derivations themselves, with the outputs wanted from them.
    pub dynamic_outputs: BTreeMap<String, InputOutputs>,
}

impl InputOutputs {
    /// A node that wants just these outputs.
    pub fn of<I, S>(outputs: I) -> InputOutputs
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        InputOutputs {
            outputs: outputs.into_iter().map(Into::into).collect(),
            dynamic_outputs: BTreeMap::new(),
        }
    }

    /// Whether any output of an output is wanted (needs the `DrvWithVersion` ATerm form).
    pub fn is_dynamic(&self) -> bool {
        !self.dynamic_outputs.is_empty()
    }

    /// Nesting depth: 1 for a plain node, more with dynamic outputs. Computed without recursion.
    pub fn depth(&self) -> usize {
        let mut max = 0;
        let mut stack = vec![(self, 1usize)];
        while let Some((node, d)) = stack.pop() {
            max = max.max(d);
            stack.extend(node.dynamic_outputs.values().map(|c| (c, d + 1)));
        }
        max
    }
}

/// What kind of derivation this is, from its outputs (Nix's `DerivationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivationType {
    /// All outputs input-addressed; `deferred` when their paths are not known yet.
    InputAddressed {
        /// Outputs are [`DerivationOutput::Deferred`].
        deferred: bool,
    },
    /// All outputs content-addressed.
    ContentAddressed {
        /// Built in the sandbox (floating) or with network access (fixed).
        sandboxed: bool,
        /// A fixed-output derivation.
        fixed: bool,
    },
    /// All outputs impure.
    Impure,
}

impl DerivationType {
    /// Content-addressed or impure.
    pub fn is_ca(self) -> bool {
        !matches!(self, DerivationType::InputAddressed { .. })
    }

    /// A fixed-output derivation.
    pub fn is_fixed(self) -> bool {
        matches!(self, DerivationType::ContentAddressed { fixed: true, .. })
    }

    /// Whether all output paths are known before building.
    pub fn has_known_output_paths(self) -> bool {
        match self {
            DerivationType::InputAddressed { deferred } => !deferred,
            DerivationType::ContentAddressed { fixed, .. } => fixed,
            DerivationType::Impure => false,
        }
    }

    /// Whether the build runs in the sandbox.
    pub fn is_sandboxed(self) -> bool {
        match self {
            DerivationType::InputAddressed { .. } => true,
            DerivationType::ContentAddressed { sandboxed, .. } => sandboxed,
            DerivationType::Impure => false,
        }
    }

    /// Whether this is an impure derivation.
    pub fn is_impure(self) -> bool {
        self == DerivationType::Impure
    }
}

/// A derivation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Derivation {
    /// The derivation name: the `.drv` file's store path name without `.drv`.
    pub name: String,
    /// Outputs by name.
    pub outputs: BTreeMap<String, DerivationOutput>,
    /// Input derivations and the outputs wanted from each.
    pub input_drvs: BTreeMap<StorePath, InputOutputs>,
    /// Input store paths that are not derivation outputs (sources, `builtins.toFile`).
    pub input_srcs: BTreeSet<StorePath>,
    /// The platform the builder runs on (`x86_64-linux`, `builtin`).
    pub platform: Vec<u8>,
    /// The program to run.
    pub builder: Vec<u8>,
    /// Its arguments.
    pub args: Vec<Vec<u8>>,
    /// Its environment, including `__json` for structured attributes.
    pub env: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Derivation {
    /// The environment variable `key`, if set.
    pub fn env_get(&self, key: &str) -> Option<&[u8]> {
        self.env.get(key.as_bytes()).map(Vec::as_slice)
    }

    /// Sets the environment variable `key`.
    pub fn env_set(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        self.env.insert(key.as_bytes().to_vec(), value.into());
    }

    /// Whether the derivation uses structured attributes (`__json` is set).
    pub fn has_structured_attrs(&self) -> bool {
        self.env.contains_key(STRUCTURED_ATTRS_ENV.as_bytes())
    }

    /// The structured attributes parsed from `__json`, if set.
    pub fn structured_attrs(&self) -> Result<Option<serde_json::Value>, DerivationError> {
        let Some(raw) = self.env_get(STRUCTURED_ATTRS_ENV) else {
            return Ok(None);
        };
        let value: serde_json::Value = serde_json::from_slice(raw)
            .map_err(|e| DerivationError::StructuredAttrs(e.to_string()))?;
        if !value.is_object() {
            return Err(DerivationError::StructuredAttrs(
                "not a JSON object".to_owned(),
            ));
        }
        Ok(Some(value))
    }

    /// Whether the builder is built into Nix (`builtin:fetchurl`, ...).
    pub fn is_builtin(&self) -> bool {
        self.builder.starts_with(b"builtin:")
    }

    /// Whether any input wants an output of a dynamic derivation.
    pub fn has_dynamic_inputs(&self) -> bool {
        self.input_drvs.values().any(InputOutputs::is_dynamic)
    }

    /// The kind of derivation, or why its outputs do not fit together (Nix's `type()`).
    pub fn drv_type(&self) -> Result<DerivationType, DerivationError> {
        let mut ty: Option<DerivationType> = None;
        let mut floating_algo: Option<HashAlgo> = None;
        for (name, output) in &self.outputs {
            let this = match output {
                DerivationOutput::InputAddressed(_) => {
                    DerivationType::InputAddressed { deferred: false }
                }
                DerivationOutput::Deferred => DerivationType::InputAddressed { deferred: true },
                DerivationOutput::CaFixed(_) => {
                    if name != "out" {
                        return Err(DerivationError::FixedOutputNotOut);
                    }
                    DerivationType::ContentAddressed {
                        sandboxed: false,
                        fixed: true,
                    }
                }
                DerivationOutput::CaFloating { hash_algo, .. } => {
                    match floating_algo {
                        None => floating_algo = Some(*hash_algo),
                        Some(a) if a != *hash_algo => {
                            return Err(DerivationError::FloatingHashAlgoMismatch);
                        }
                        Some(_) => {}
                    }
                    DerivationType::ContentAddressed {
                        sandboxed: true,
                        fixed: false,
                    }
                }
                DerivationOutput::Impure { .. } => DerivationType::Impure,
            };
            match ty {
                None => ty = Some(this),
                Some(t) if t != this => return Err(DerivationError::MixedOutputTypes),
                Some(t) if t.is_fixed() => return Err(DerivationError::MultipleFixedOutputs),
                Some(_) => {}
            }
        }
        ty.ok_or(DerivationError::NoOutputs)
    }

    /// Every output with its statically known path (`None` for floating, deferred, impure).
    pub fn outputs_and_paths(
        &self,
        store_dir: &StoreDir,
    ) -> Result<BTreeMap<String, Option<StorePath>>, DerivationError> {
        self.outputs
            .iter()
            .map(|(name, o)| Ok((name.clone(), o.path(store_dir, &self.name, name)?)))
            .collect()
    }

    /// The references of the `.drv` file: input sources and input derivations.
    pub fn references(&self) -> BTreeSet<StorePath> {
        let mut refs = self.input_srcs.clone();
        refs.extend(self.input_drvs.keys().cloned());
        refs
    }

    /// The derivation name of a `.drv` store path (its name without `.drv`).
    pub fn name_from_path(drv_path: &StorePath) -> Option<&str> {
        drv_path.name().strip_suffix(DRV_EXTENSION)
    }

    /// Parses a `.drv` file (see [`aterm::parse`]).
    pub fn from_aterm(
        input: &[u8],
        name: &str,
        store_dir: &StoreDir,
    ) -> Result<Derivation, DerivationError> {
        Ok(aterm::parse(input, name, store_dir)?)
    }

    /// Prints the `.drv` file (see [`aterm::print`]).
    pub fn to_aterm(&self, store_dir: &StoreDir) -> Result<Vec<u8>, DerivationError> {
        aterm::print(self, store_dir)
    }
}

/// Checks an output name: it becomes part of store path names, so it must be one itself.
pub(crate) fn check_output_name(name: &str) -> Result<(), DerivationError> {
    crate::store_path::validate_name(name)
        .map_err(|_| DerivationError::BadOutputName(truncate_for_error(name)))
}

/// Lossy text of a byte string for error messages.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    truncate_for_error(&String::from_utf8_lossy(bytes))
}
