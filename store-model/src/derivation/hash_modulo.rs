//! Derivation hashes and the paths that follow from them.
//!
//! Nix's `hashDerivationModulo` gives every derivation a hash that ignores how its fixed-output
//! inputs were fetched: each input derivation is replaced by its own modulo hash (recursively),
//! and a fixed-output derivation's hash is `sha256("fixed:out:<method><algo>:<hex>:<path>")`.
//! Output paths of input-addressed derivations are `makeOutputPath(output, hash, name)` with the
//! hash taken over the derivation with its own output paths blanked ("masked").
//!
//! This module stays pure: the modulo hashes of input derivations come from the caller, through
//! a closure, or through [`DrvHashes`], which computes a whole closure iteratively from a
//! derivation loader.
//!
//! Semantics follow Nix 2.4–2.35: fixed-output derivations give per-output hashes; floating
//! content-addressed derivations, impure ones, and anything depending on them or on outputs of
//! dynamic derivations are *deferred* (their dependents' output paths are not known in advance);
//! everything else is regular.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    DRV_EXTENSION, Derivation, DerivationError, DerivationOutput, DerivationType, aterm,
    fixed_output_path,
};
use crate::hash::{Hash, HashAlgo, HashEncoding, compress};
use crate::nixbase32;
use crate::store_path::{StoreDir, StorePath, output_path_name};

/// Whether a derivation's hash can give output paths in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrvHashKind {
    /// Statically known: output paths follow from the hash.
    Regular,
    /// Depends on something built later (floating CA, impure, dynamic derivation outputs).
    Deferred,
}

/// The result of `hashDerivationModulo`: a hash per output, and its kind.
///
/// For a fixed-output derivation the hash of `out` is that of its fixed content; for any other
/// derivation every output has the same hash, that of the derivation text with input
/// derivations replaced by their modulo hashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DrvHash {
    /// Hash by output name.
    pub hashes: BTreeMap<String, Hash>,
    /// Whether output paths follow from it.
    pub kind: DrvHashKind,
}

/// `sha256("impure")`, the hash Nix gives every output of an impure derivation.
pub fn impure_output_hash() -> Hash {
    Hash::digest(HashAlgo::Sha256, b"impure")
}

/// Nix's `hashDerivationModulo(store, drv, maskOutputs)`.
///
/// `input_hash` gives the (unmasked) modulo hash of each input derivation, usually computed
/// with this function on the parsed input; `None` is an error. With `mask_outputs` the
/// derivation's own output paths and the environment variables named after outputs are blanked,
/// which gives the hash its input-addressed output paths are made from.
pub fn hash_derivation_modulo<F>(
    drv: &Derivation,
    store_dir: &StoreDir,
    mask_outputs: bool,
    mut input_hash: F,
) -> Result<DrvHash, DerivationError>
where
    F: FnMut(&StorePath) -> Option<DrvHash>,
{
    let ty = drv.drv_type()?;
    if ty.is_fixed() {
        let mut hashes = BTreeMap::new();
        for (name, output) in &drv.outputs {
            if let DerivationOutput::CaFixed(ca) = output {
                let path = fixed_output_path(ca, store_dir, &drv.name, name)?;
                let text = format!(
                    "fixed:out:{}:{}:{}",
                    ca.print_method_algo(),
                    ca.hash.encode(HashEncoding::Base16),
                    store_dir.display(&path)
                );
                hashes.insert(
                    name.clone(),
                    Hash::digest(HashAlgo::Sha256, text.as_bytes()),
                );
            }
        }
        return Ok(DrvHash {
            hashes,
            kind: DrvHashKind::Regular,
        });
    }
    if ty.is_impure() {
        return Ok(DrvHash {
            hashes: drv
                .outputs
                .keys()
                .map(|name| (name.clone(), impure_output_hash()))
                .collect(),
            kind: DrvHashKind::Deferred,
        });
    }
    let mut kind = match ty {
        DerivationType::ContentAddressed { fixed: false, .. } => DrvHashKind::Deferred,
        _ => DrvHashKind::Regular,
    };

    // Input derivations replaced by their modulo hashes (base16), with the wanted outputs.
    let mut inputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, node) in &drv.input_drvs {
        let res =
            input_hash(path).ok_or_else(|| DerivationError::MissingInputHash(path.to_string()))?;
        if res.kind == DrvHashKind::Deferred || node.is_dynamic() {
            kind = DrvHashKind::Deferred;
        }
        for output in &node.outputs {
            let h = res
                .hashes
                .get(output)
                .ok_or_else(|| DerivationError::MissingOutputHash {
                    output: output.clone(),
                    drv: drv.name.clone(),
                })?;
            inputs
                .entry(h.encode(HashEncoding::Base16))
                .or_default()
                .insert(output.clone());
        }
    }

    let text = aterm::print_with(drv, store_dir, mask_outputs, Some(&inputs))?;
    let hash = Hash::digest(HashAlgo::Sha256, &text);
    Ok(DrvHash {
        hashes: drv
            .outputs
            .keys()
            .map(|name| (name.clone(), hash.clone()))
            .collect(),
        kind,
    })
}

/// Nix's `staticOutputHashes`: the masked modulo hash of each output. Old clients (before
/// Nix 2.33) name realisations `<this hash>!<output>`.
pub fn static_output_hashes<F>(
    drv: &Derivation,
    store_dir: &StoreDir,
    input_hash: F,
) -> Result<BTreeMap<String, Hash>, DerivationError>
where
    F: FnMut(&StorePath) -> Option<DrvHash>,
{
    Ok(hash_derivation_modulo(drv, store_dir, true, input_hash)?.hashes)
}

/// The masked hash input-addressed outputs are made from, or `None` when deferred. Only for
/// derivations whose outputs are all input-addressed or deferred.
fn input_address<F>(
    drv: &Derivation,
    store_dir: &StoreDir,
    input_hash: F,
) -> Result<Option<Hash>, DerivationError>
where
    F: FnMut(&StorePath) -> Option<DrvHash>,
{
    let h = hash_derivation_modulo(drv, store_dir, true, input_hash)?;
    if h.kind == DrvHashKind::Deferred {
        return Ok(None);
    }
    Ok(h.hashes.into_values().next())
}

/// The path each output should have: input-addressed and deferred outputs from the masked
/// modulo hash (`None` while deferred), fixed outputs from their content address, floating and
/// impure outputs `None`.
pub fn output_paths<F>(
    drv: &Derivation,
    store_dir: &StoreDir,
    input_hash: F,
) -> Result<BTreeMap<String, Option<StorePath>>, DerivationError>
where
    F: FnMut(&StorePath) -> Option<DrvHash>,
{
    let ty = drv.drv_type()?;
    let address = match ty {
        DerivationType::InputAddressed { .. } => input_address(drv, store_dir, input_hash)?,
        _ => None,
    };
    let mut paths = BTreeMap::new();
    for (name, output) in &drv.outputs {
        let path = match output {
            DerivationOutput::InputAddressed(_) | DerivationOutput::Deferred => match &address {
                Some(h) => Some(store_dir.make_output_path(name, h, &drv.name)?),
                None => None,
            },
            DerivationOutput::CaFixed(ca) => {
                Some(fixed_output_path(ca, store_dir, &drv.name, name)?)
            }
            DerivationOutput::CaFloating { .. } | DerivationOutput::Impure { .. } => None,
        };
        paths.insert(name.clone(), path);
    }
    Ok(paths)
}

/// Nix's `fillInOutputPaths`: gives deferred outputs their paths when the inputs allow it,
/// fills in missing or empty environment variables named after outputs, and checks that what
/// is already there is right.
///
/// Errors: an input-addressed output with a wrong path, or with any path while the inputs make
/// it deferred; an environment variable with a wrong value.
pub fn fill_in_output_paths<F>(
    drv: &mut Derivation,
    store_dir: &StoreDir,
    input_hash: F,
) -> Result<(), DerivationError>
where
    F: FnMut(&StorePath) -> Option<DrvHash>,
{
    process_output_paths(drv, store_dir, input_hash, true)
}

/// Nix's `checkInvariants`: the same checks as [`fill_in_output_paths`] without changing
/// anything (deferred outputs whose paths could be known are accepted, as Nix only warns).
pub fn check_invariants<F>(
    drv: &Derivation,
    store_dir: &StoreDir,
    input_hash: F,
) -> Result<(), DerivationError>
where
    F: FnMut(&StorePath) -> Option<DrvHash>,
{
    let mut copy = drv.clone();
    process_output_paths(&mut copy, store_dir, input_hash, false)
}

/// [`check_invariants`] for a derivation read from `drv_path`, whose name must match it.
pub fn check_invariants_at<F>(
    drv: &Derivation,
    drv_path: &StorePath,
    store_dir: &StoreDir,
    input_hash: F,
) -> Result<(), DerivationError>
where
    F: FnMut(&StorePath) -> Option<DrvHash>,
{
    if Derivation::name_from_path(drv_path) != Some(drv.name.as_str()) {
        return Err(DerivationError::NameMismatch {
            path: store_dir.display(drv_path),
            name: drv.name.clone(),
        });
    }
    check_invariants(drv, store_dir, input_hash)
}

fn process_output_paths<F>(
    drv: &mut Derivation,
    store_dir: &StoreDir,
    input_hash: F,
    fill_in: bool,
) -> Result<(), DerivationError>
where
    F: FnMut(&StorePath) -> Option<DrvHash>,
{
    drv.drv_type()?;
    // Computed once, before anything changes, as Nix does.
    let needs_address = drv.outputs.values().any(|o| {
        matches!(
            o,
            DerivationOutput::InputAddressed(_) | DerivationOutput::Deferred
        )
    });
    let address = if needs_address {
        input_address(drv, store_dir, input_hash)?
    } else {
        None
    };
    let names: Vec<String> = drv.outputs.keys().cloned().collect();
    for name in names {
        let expected = match drv.outputs.get(&name) {
            Some(DerivationOutput::InputAddressed(actual)) => match &address {
                Some(h) => {
                    let expected = store_dir.make_output_path(&name, h, &drv.name)?;
                    if *actual != expected {
                        return Err(DerivationError::WrongOutputPath {
                            actual: store_dir.display(actual),
                            expected: store_dir.display(&expected),
                        });
                    }
                    expected
                }
                None => return Err(DerivationError::ShouldBeDeferred(store_dir.display(actual))),
            },
            Some(DerivationOutput::Deferred) => match &address {
                Some(h) if fill_in => {
                    let expected = store_dir.make_output_path(&name, h, &drv.name)?;
                    drv.outputs.insert(
                        name.clone(),
                        DerivationOutput::InputAddressed(expected.clone()),
                    );
                    expected
                }
                _ => continue,
            },
            Some(DerivationOutput::CaFixed(ca)) => {
                fixed_output_path(ca, store_dir, &drv.name, &name)?
            }
            _ => continue,
        };
        let expected = store_dir.display(&expected);
        let key = name.as_bytes().to_vec();
        if fill_in {
            let value = drv.env.entry(key.clone()).or_default();
            if value.is_empty() {
                *value = expected.clone().into_bytes();
            }
        }
        match drv.env.get(&key) {
            None => {
                return Err(DerivationError::EnvMissing { name, expected });
            }
            Some(v) if *v != expected.as_bytes() => {
                return Err(DerivationError::EnvMismatch {
                    name,
                    expected,
                    actual: super::lossy(v),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The store path of the `.drv` file: a text path of its ATerm, named `<name>.drv`, whose
/// references are the input sources and input derivations (Nix's `computeStorePath` /
/// `writeDerivation`).
pub fn derivation_path(
    drv: &Derivation,
    store_dir: &StoreDir,
) -> Result<StorePath, DerivationError> {
    let text = aterm::print(drv, store_dir)?;
    let hash = Hash::digest(HashAlgo::Sha256, &text);
    let refs = drv.references();
    Ok(store_dir.make_text_path(&format!("{}{DRV_EXTENSION}", drv.name), &hash, &refs)?)
}

impl Derivation {
    /// The store path of this derivation's `.drv` file (see [`derivation_path`]).
    pub fn store_path(&self, store_dir: &StoreDir) -> Result<StorePath, DerivationError> {
        derivation_path(self, store_dir)
    }
}

/// Nix's `hashPlaceholder`: the string (`/` + 52 nix32 characters) that stands for the path of
/// this derivation's own output `output_name` where it cannot be known in advance (CA outputs).
pub fn hash_placeholder(output_name: &str) -> String {
    let h = Hash::digest(
        HashAlgo::Sha256,
        format!("nix-output:{output_name}").as_bytes(),
    );
    format!("/{}", h.encode(HashEncoding::Nix32))
}

/// A placeholder for an output of another derivation whose path is not known yet (Nix's
/// `DownstreamPlaceholder`), substituted when the derivation is resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DownstreamPlaceholder {
    hash: Hash,
}

impl DownstreamPlaceholder {
    /// The placeholder for output `output_name` of the content-addressed derivation at
    /// `drv_path`: `sha256("nix-upstream-output:<hash part>:<output path name>")`.
    pub fn unknown_ca_output(drv_path: &StorePath, output_name: &str) -> DownstreamPlaceholder {
        let full = drv_path.name();
        // Nix drops the last four characters (`.drv`) without checking them.
        let mut cut = full.len().saturating_sub(DRV_EXTENSION.len());
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        let clear = format!(
            "nix-upstream-output:{}:{}",
            drv_path.hash_part(),
            output_path_name(&full[..cut], output_name)
        );
        DownstreamPlaceholder {
            hash: Hash::digest(HashAlgo::Sha256, clear.as_bytes()),
        }
    }

    /// The placeholder for output `output_name` of the derivation that `self` stands for
    /// (dynamic derivations): `sha256("nix-computed-output:<compressed self>:<output>")`.
    pub fn unknown_derivation(&self, output_name: &str) -> DownstreamPlaceholder {
        let compressed = nixbase32::encode(&compress(self.hash.as_bytes(), 20));
        let clear = format!("nix-computed-output:{compressed}:{output_name}");
        DownstreamPlaceholder {
            hash: Hash::digest(HashAlgo::Sha256, clear.as_bytes()),
        }
    }

    /// The placeholder for `outputs[n]` of ... of `outputs[0]` of `drv_path`; `None` when
    /// `outputs` is empty.
    pub fn for_output_chain(
        drv_path: &StorePath,
        outputs: &[&str],
    ) -> Option<DownstreamPlaceholder> {
        let (first, rest) = outputs.split_first()?;
        let mut p = DownstreamPlaceholder::unknown_ca_output(drv_path, first);
        for o in rest {
            p = p.unknown_derivation(o);
        }
        Some(p)
    }

    /// The hash behind the placeholder.
    pub fn hash(&self) -> &Hash {
        &self.hash
    }

    /// The text written into derivations: `/` + the hash in nix32.
    pub fn render(&self) -> String {
        format!("/{}", self.hash.encode(HashEncoding::Nix32))
    }
}

/// Memoised modulo hashes of derivations, by `.drv` path (Nix's `drvHashes`).
#[derive(Debug, Clone, Default)]
pub struct DrvHashes {
    hashes: BTreeMap<StorePath, DrvHash>,
}

impl DrvHashes {
    /// An empty cache.
    pub fn new() -> DrvHashes {
        DrvHashes::default()
    }

    /// The cached hash of `drv_path`.
    pub fn get(&self, drv_path: &StorePath) -> Option<&DrvHash> {
        self.hashes.get(drv_path)
    }

    /// How many derivations have a memoised hash.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no hash is memoised.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Records a hash computed elsewhere.
    pub fn insert(&mut self, drv_path: StorePath, hash: DrvHash) {
        self.hashes.insert(drv_path, hash);
    }

    /// A lookup closure over this cache, for [`hash_derivation_modulo`] and friends.
    pub fn lookup(&self) -> impl FnMut(&StorePath) -> Option<DrvHash> + '_ {
        |p| self.hashes.get(p).cloned()
    }

    /// The (unmasked) modulo hash of `drv_path`, computing it and those of all input derivations
    /// it needs, each loaded at most once through `load` (`None`: not available, an error).
    ///
    /// Works with an explicit stack, so deep dependency chains do not recurse. Inputs of
    /// fixed-output derivations are not needed and not loaded.
    pub fn compute<F>(
        &mut self,
        drv_path: &StorePath,
        store_dir: &StoreDir,
        mut load: F,
    ) -> Result<DrvHash, DerivationError>
    where
        F: FnMut(&StorePath) -> Option<Derivation>,
    {
        struct Frame {
            path: StorePath,
            drv: Derivation,
            pending: Vec<StorePath>,
        }
        if let Some(h) = self.hashes.get(drv_path) {
            return Ok(h.clone());
        }
        let mut on_stack: BTreeSet<StorePath> = BTreeSet::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut next = Some(drv_path.clone());
        loop {
            if let Some(path) = next.take() {
                let drv = load(&path)
                    .ok_or_else(|| DerivationError::MissingInputHash(path.to_string()))?;
                let pending = if drv.drv_type()?.is_fixed() {
                    Vec::new()
                } else {
                    drv.input_drvs.keys().rev().cloned().collect()
                };
                on_stack.insert(path.clone());
                stack.push(Frame { path, drv, pending });
            }
            let Some(top) = stack.last_mut() else {
                break;
            };
            if let Some(input) = top.pending.pop() {
                if self.hashes.contains_key(&input) {
                    continue;
                }
                if on_stack.contains(&input) {
                    return Err(DerivationError::InputCycle(input.to_string()));
                }
                next = Some(input);
                continue;
            }
            let Some(frame) = stack.pop() else { break };
            on_stack.remove(&frame.path);
            let h = hash_derivation_modulo(&frame.drv, store_dir, false, |p| {
                self.hashes.get(p).cloned()
            })?;
            self.hashes.insert(frame.path, h);
        }
        self.hashes
            .get(drv_path)
            .cloned()
            .ok_or_else(|| DerivationError::MissingInputHash(drv_path.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_match_nix() {
        // Nix 2.8 writes this for `out` of a floating CA derivation (see the real-Nix test and
        // the ca/ golden vectors).
        assert_eq!(
            hash_placeholder("out"),
            "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9"
        );
        assert_eq!(
            hash_placeholder("dev"),
            "/02qcpld1y6xhs5gz9bchpxaw0xdhmsp5dv88lh25r2ss44kh8dxz"
        );
        assert_eq!(
            hash_placeholder("bin"),
            "/04f3da1kmbr67m3gzxikmsl4vjz5zf777sv6m14ahv22r65aac9m"
        );
        let drv = StorePath::from_base_name("g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo.drv").expect("p");
        let p = DownstreamPlaceholder::unknown_ca_output(&drv, "out");
        assert_eq!(p.render().len(), 53);
        let q = DownstreamPlaceholder::for_output_chain(&drv, &["out", "bin"]).expect("chain");
        assert_eq!(q, p.unknown_derivation("bin"));
        assert_ne!(q, p);
        assert!(DownstreamPlaceholder::for_output_chain(&drv, &[]).is_none());
    }
}
