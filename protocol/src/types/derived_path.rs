//! What a client asks to build or substitute: `DerivedPath` and `OutputsSpec`.
//!
//! The wire form is one string and depends on the version:
//!
//! * from 1.30: an opaque path is the path itself (a bare `.drv` now means the file itself);
//!   a built path is `<drv>!*` (all outputs) or `<drv>!out,dev`; a derivation that is itself
//!   an output of another (experimental dynamic derivations) is `<drv>!out!bin`.
//! * below 1.30 (Nix 2.3 clients, "StorePathWithOutputs"): `<path>` or `<drv>!out,dev`; a bare
//!   `.drv` means *all outputs*, any other bare path means "make valid". A derivation file
//!   itself and dynamic derivations cannot be expressed, so encoding them fails.
//!
//! This module is part of the protocol crate because the store model has no derived-path type
//! yet; it is a model type and may move there.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;

use pkgchain_store_model::store_path::{StoreDir, StorePath, is_name_char};

use super::store::read_parsed;
use crate::context::WireContext;
use crate::wire::{Decode, Encode, WireError, WireRead, WireWriter};

/// Which outputs of a derivation are wanted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutputsSpec {
    /// Every output (`*`).
    All,
    /// The named outputs (never empty when parsed).
    Names(BTreeSet<String>),
}

/// Most output names one derived path may name (a derivation with more outputs than this does
/// not exist in practice; the bound keeps one string from becoming a million small ones).
pub const MAX_OUTPUT_NAMES: usize = 1024;
/// Deepest chain of derivations producing derivations (`drv!out!out...`) accepted.
pub const MAX_DERIVATION_CHAIN: usize = 16;

fn too_many_names() -> String {
    format!("a derived path names more than {MAX_OUTPUT_NAMES} outputs")
}

impl OutputsSpec {
    /// Parses `*` or a comma-separated list of output names.
    pub fn parse(text: &str) -> Result<OutputsSpec, String> {
        if text == "*" {
            return Ok(OutputsSpec::All);
        }
        let mut names = BTreeSet::new();
        for (i, name) in text.split(',').enumerate() {
            check_output_name(name)?;
            if i == MAX_OUTPUT_NAMES {
                return Err(too_many_names());
            }
            names.insert(name.to_owned());
        }
        Ok(OutputsSpec::Names(names))
    }
}

impl fmt::Display for OutputsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputsSpec::All => f.write_str("*"),
            OutputsSpec::Names(names) => {
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(name)?;
                }
                Ok(())
            }
        }
    }
}

/// Checks an output name: non-empty, characters of store path names.
pub fn check_output_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty output name".to_owned());
    }
    if let Some(c) = name.bytes().find(|&c| !is_name_char(c)) {
        return Err(format!(
            "output name '{}' contains illegal character '{}'",
            name.escape_debug(),
            char::from(c).escape_debug()
        ));
    }
    Ok(())
}

/// A derivation named by its store path, or (dynamic derivations) by the chain of outputs that
/// leads from a store derivation to it: `root!o1!o2` is output `o2` of the derivation that is
/// output `o1` of `root`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SingleDerivedPath {
    /// The store path the chain starts at.
    pub root: StorePath,
    /// Outputs to follow, in order; empty for a plain store derivation.
    pub outputs: Vec<String>,
}

impl SingleDerivedPath {
    /// A plain store derivation.
    pub fn opaque(root: StorePath) -> SingleDerivedPath {
        SingleDerivedPath {
            root,
            outputs: Vec::new(),
        }
    }

    fn render(&self, store_dir: &StoreDir) -> String {
        let mut s = store_dir.display(&self.root);
        for o in &self.outputs {
            s.push('!');
            s.push_str(o);
        }
        s
    }
}

/// A path the client wants to exist: an opaque store path, or outputs of a derivation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DerivedPath {
    /// A store path that must be made valid (substituted if missing).
    Opaque(StorePath),
    /// Outputs of a derivation that must be built or substituted.
    Built {
        /// The derivation.
        drv_path: SingleDerivedPath,
        /// Which outputs.
        outputs: OutputsSpec,
    },
}

impl DerivedPath {
    /// Outputs of a store derivation.
    pub fn built(drv_path: StorePath, outputs: OutputsSpec) -> DerivedPath {
        DerivedPath::Built {
            drv_path: SingleDerivedPath::opaque(drv_path),
            outputs,
        }
    }

    /// Parses the 1.30+ form.
    pub fn parse(text: &str, store_dir: &StoreDir) -> Result<DerivedPath, String> {
        let Some((left, spec)) = text.rsplit_once('!') else {
            return store_dir
                .parse(text)
                .map(DerivedPath::Opaque)
                .map_err(|e| e.to_string());
        };
        let mut parts = left.split('!');
        let root = store_dir
            .parse(parts.next().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let mut outputs = Vec::new();
        for o in parts {
            check_output_name(o)?;
            if outputs.len() == MAX_DERIVATION_CHAIN {
                return Err(format!(
                    "a derived path chains more than {MAX_DERIVATION_CHAIN} derivations"
                ));
            }
            outputs.push(o.to_owned());
        }
        Ok(DerivedPath::Built {
            drv_path: SingleDerivedPath { root, outputs },
            outputs: OutputsSpec::parse(spec)?,
        })
    }

    /// Parses the pre-1.30 "StorePathWithOutputs" form: `<path>` or `<drv>!o1,o2`; a bare
    /// derivation means all its outputs.
    pub fn parse_pre_1_30(text: &str, store_dir: &StoreDir) -> Result<DerivedPath, String> {
        let (path, outputs) = match text.split_once('!') {
            Some((p, o)) => (p, o),
            None => (text, ""),
        };
        let path = store_dir.parse(path).map_err(|e| e.to_string())?;
        let mut names = BTreeSet::new();
        for (i, name) in outputs.split(',').filter(|n| !n.is_empty()).enumerate() {
            check_output_name(name)?;
            if i == MAX_OUTPUT_NAMES {
                return Err(too_many_names());
            }
            names.insert(name.to_owned());
        }
        Ok(if !names.is_empty() {
            DerivedPath::built(path, OutputsSpec::Names(names))
        } else if path.is_derivation() {
            DerivedPath::built(path, OutputsSpec::All)
        } else {
            DerivedPath::Opaque(path)
        })
    }

    /// The 1.30+ form.
    pub fn render(&self, store_dir: &StoreDir) -> String {
        match self {
            DerivedPath::Opaque(p) => store_dir.display(p),
            DerivedPath::Built { drv_path, outputs } => {
                format!("{}!{outputs}", drv_path.render(store_dir))
            }
        }
    }

    /// The pre-1.30 form, or why this path has none.
    pub fn render_pre_1_30(&self, store_dir: &StoreDir) -> Result<String, String> {
        match self {
            DerivedPath::Opaque(p) if p.is_derivation() => Err(format!(
                "cannot request the derivation file '{}' itself below protocol 1.30",
                store_dir.display(p)
            )),
            DerivedPath::Opaque(p) => Ok(store_dir.display(p)),
            DerivedPath::Built { drv_path, .. } if !drv_path.outputs.is_empty() => Err(format!(
                "cannot request the dynamic derivation '{}' below protocol 1.30",
                drv_path.render(store_dir)
            )),
            DerivedPath::Built {
                drv_path,
                outputs: OutputsSpec::All,
            } => Ok(store_dir.display(&drv_path.root)),
            DerivedPath::Built { drv_path, outputs } => {
                Ok(format!("{}!{outputs}", store_dir.display(&drv_path.root)))
            }
        }
    }
}

impl Encode for DerivedPath {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        let text = if cx.at_least(30) {
            self.render(&cx.store_dir)
        } else {
            self.render_pre_1_30(&cx.store_dir)
                .map_err(|e| WireError::not_representable("derived path", e))?
        };
        w.put_str(&text);
        Ok(())
    }
}

impl Decode for DerivedPath {
    fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_parsed(r, cx, what, |s| {
            if cx.at_least(30) {
                DerivedPath::parse(s, &cx.store_dir)
            } else {
                DerivedPath::parse_pre_1_30(s, &cx.store_dir)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRV: &str = "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo.drv";

    #[test]
    fn one_string_cannot_name_unbounded_outputs_or_chains() {
        let dir = StoreDir::new("/nix/store").expect("store dir");
        let names = |n: usize| vec!["a"; n].join(",");
        assert!(DerivedPath::parse(&format!("{DRV}!{}", names(MAX_OUTPUT_NAMES)), &dir).is_ok());
        let err = DerivedPath::parse(&format!("{DRV}!{}", names(MAX_OUTPUT_NAMES + 1)), &dir);
        assert_eq!(err, Err(too_many_names()));
        let err =
            DerivedPath::parse_pre_1_30(&format!("{DRV}!{}", names(MAX_OUTPUT_NAMES + 1)), &dir);
        assert_eq!(err, Err(too_many_names()));
        let chain = |n: usize| format!("{DRV}{}!*", "!out".repeat(n));
        assert!(DerivedPath::parse(&chain(MAX_DERIVATION_CHAIN), &dir).is_ok());
        let err = DerivedPath::parse(&chain(MAX_DERIVATION_CHAIN + 1), &dir).expect_err("too deep");
        assert!(err.contains("chains more than 16 derivations"), "{err}");
    }
}
