//! Resolving a derivation: replacing its input derivations by the store paths their outputs were
//! built at (Nix's `tryResolve`).
//!
//! Content-addressed and deferred derivations cannot name their inputs' output paths in
//! advance; their text holds [`DownstreamPlaceholder`]s instead. Once the inputs are built, the
//! derivation is *resolved*: every wanted input output becomes an input source, every
//! placeholder is replaced by the real path (in the builder, the arguments, the environment names
//! and values, and so also in `__json`), and deferred outputs get their input-addressed paths.
//! The result has no input derivations (a `BasicDerivation`).

use super::hash_modulo::{DownstreamPlaceholder, fill_in_output_paths};
use super::{Derivation, DerivationError, InputOutputs};
use crate::store_path::{StoreDir, StorePath};

/// Resolves `drv`, or `Ok(None)` when some wanted input output is not known.
///
/// `realised(drv_path, outputs)` gives the path of an input output: `outputs` is `["out"]` for
/// output `out` of `drv_path`, or a longer chain for outputs of dynamic derivations
/// (`["out", "lib"]`: output `lib` of the derivation that is output `out` of `drv_path`).
pub fn try_resolve<F>(
    drv: &Derivation,
    store_dir: &StoreDir,
    mut realised: F,
) -> Result<Option<Derivation>, DerivationError>
where
    F: FnMut(&StorePath, &[String]) -> Option<StorePath>,
{
    let mut resolved = Derivation {
        input_drvs: Default::default(),
        ..drv.clone()
    };
    // Placeholder text → real path, applied in key order like Nix's `StringMap`.
    let mut rewrites: std::collections::BTreeMap<String, String> = Default::default();

    struct Item<'a> {
        node: &'a InputOutputs,
        chain: Vec<String>,
        placeholder: Option<DownstreamPlaceholder>,
    }
    for (input, node) in &drv.input_drvs {
        let mut stack = vec![Item {
            node,
            chain: Vec::new(),
            placeholder: None,
        }];
        while let Some(item) = stack.pop() {
            let placeholder_for = |output: &str| match &item.placeholder {
                None => DownstreamPlaceholder::unknown_ca_output(input, output),
                Some(p) => p.unknown_derivation(output),
            };
            for output in &item.node.outputs {
                let mut chain = item.chain.clone();
                chain.push(output.clone());
                let Some(path) = realised(input, &chain) else {
                    return Ok(None);
                };
                rewrites
                    .entry(placeholder_for(output).render())
                    .or_insert_with(|| store_dir.display(&path));
                resolved.input_srcs.insert(path);
            }
            for (output, child) in item.node.dynamic_outputs.iter().rev() {
                let mut chain = item.chain.clone();
                chain.push(output.clone());
                stack.push(Item {
                    node: child,
                    chain,
                    placeholder: Some(placeholder_for(output)),
                });
            }
        }
    }

    apply_rewrites(&mut resolved, &rewrites);
    fill_in_output_paths(&mut resolved, store_dir, |_| None)?;
    Ok(Some(resolved))
}

/// Replaces every occurrence of each key by its value in the builder, the arguments and the
/// environment (names and values), as Nix's `applyRewrites`.
pub fn apply_rewrites(drv: &mut Derivation, rewrites: &std::collections::BTreeMap<String, String>) {
    if rewrites.is_empty() {
        return;
    }
    let rewrite = |s: &[u8]| rewrite_bytes(s, rewrites);
    drv.builder = rewrite(&drv.builder);
    for arg in &mut drv.args {
        *arg = rewrite(arg);
    }
    let env = std::mem::take(&mut drv.env);
    for (key, value) in env {
        // Like Nix's `emplace`: on a collision of rewritten names the first one stays.
        drv.env
            .entry(rewrite(&key))
            .or_insert_with(|| rewrite(&value));
    }
}

/// Nix's `rewriteStrings` on bytes: each rewrite in turn, every occurrence.
fn rewrite_bytes(s: &[u8], rewrites: &std::collections::BTreeMap<String, String>) -> Vec<u8> {
    let mut cur = s.to_vec();
    for (from, to) in rewrites {
        let from = from.as_bytes();
        if from.is_empty() || from == to.as_bytes() {
            continue;
        }
        if memchr::memmem::find(&cur, from).is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(cur.len());
        let mut rest = &cur[..];
        while let Some(i) = memchr::memmem::find(rest, from) {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(to.as_bytes());
            rest = &rest[i + from.len()..];
        }
        out.extend_from_slice(rest);
        cur = out;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_every_occurrence_in_order() {
        let map = std::collections::BTreeMap::from([
            ("/aa".to_owned(), "/x".to_owned()),
            ("/b".to_owned(), "/y".to_owned()),
        ]);
        assert_eq!(rewrite_bytes(b"/aa-/b-/aa/b", &map), b"/x-/y-/x/y");
        assert_eq!(rewrite_bytes(b"none", &map), b"none");
    }
}
