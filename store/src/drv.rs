//! Derivations in the store: reading `.drv` files, the checks Nix makes when one becomes
//! valid, and modulo hashes.
//!
//! When a path whose name ends in `.drv` is registered, however it arrives, Nix
//! (`LocalStore::addValidPath` and `registerValidPaths`) parses it, checks its invariants
//! (input-addressed output paths must be the ones `hashDerivationModulo` gives, fixed output
//! paths the ones their content address gives, and the environment must name them) and records
//! its statically known outputs in `DerivationOutputs`; if any of that fails, nothing is
//! registered. This store does the same before the registering
//! transaction. This is what stops a client from claiming an output path that belongs to
//! someone else's derivation.
//!
//! The modulo hashes of input derivations are memoised for the life of the store (as Nix's
//! `drvHashes`), bounded by [`MAX_MEMOISED`]: a `.drv` path is content-addressed, so its hash
//! never changes. Everything here that reads blocks or waits for the database blocks the
//! calling thread; it runs on blocking threads.

use std::collections::BTreeMap;
use std::sync::{MutexGuard, PoisonError};

use pkgchain_blockstore::BlockStore;
use pkgchain_dag::Cid;
use pkgchain_store_model::derivation::hash_modulo::{check_invariants_at, static_output_hashes};
use pkgchain_store_model::derivation::{Derivation, DerivationOutput, DrvHashes};
use pkgchain_store_model::hash::Hash;
use pkgchain_store_model::store_path::StorePath;
use tracing::debug;

use crate::tree::{self, Entry};
use crate::{Store, StoreError};

/// Largest `.drv` read (the biggest in nixpkgs are a few MiB, with structured attributes; any
/// client may upload one, and it is read whole into memory).
pub const MAX_DRV_SIZE: u64 = 32 << 20;
/// Modulo hashes memoised at most; the memo starts over beyond this.
pub const MAX_MEMOISED: usize = 200_000;

/// The contents of the single regular file at `root`, at most `max` bytes.
pub(crate) fn read_file(
    blocks: &BlockStore,
    root: &Cid,
    shown: &str,
    max: u64,
) -> Result<Vec<u8>, StoreError> {
    let size = match tree::stat(blocks, root)? {
        Entry::File { size, .. } => size,
        _ => return Err(StoreError::NotRegularFile(shown.to_owned())),
    };
    if size > max {
        return Err(StoreError::TooLarge {
            path: shown.to_owned(),
            size,
            limit: max,
        });
    }
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    tree::cat(blocks, root, shown, &mut out)?;
    Ok(out)
}

impl Store {
    /// Reads and parses a valid `.drv` (Nix's `readDerivation`).
    pub async fn read_derivation(&self, drv_path: &StorePath) -> Result<Derivation, StoreError> {
        let root = self.root_of(drv_path).await?;
        let store = self.clone();
        let drv_path = drv_path.clone();
        crate::blocking(move || store.parse_stored_drv(&drv_path, &root)).await
    }

    /// Parses the `.drv` whose contents are at `root`.
    pub(crate) fn parse_stored_drv(
        &self,
        drv_path: &StorePath,
        root: &Cid,
    ) -> Result<Derivation, StoreError> {
        let shown = self.store_dir().display(drv_path);
        let parse_error = |reason: String| StoreError::DerivationParse {
            path: shown.clone(),
            reason,
        };
        let name = Derivation::name_from_path(drv_path)
            .ok_or_else(|| parse_error("its name does not end in '.drv'".to_owned()))?;
        let bytes = read_file(self.blocks(), root, &shown, MAX_DRV_SIZE)?;
        Derivation::from_aterm(&bytes, name, self.store_dir())
            .map_err(|e| parse_error(e.to_string()))
    }

    /// Loads a valid `.drv` by path. Blocking.
    fn load_drv_blocking(&self, drv_path: &StorePath) -> Result<Derivation, StoreError> {
        let root = self
            .runtime()
            .block_on(self.db().root_of(drv_path.base_name()))?
            .ok_or_else(|| StoreError::NotValid(self.store_dir().display(drv_path)))?;
        self.parse_stored_drv(drv_path, &root)
    }

    /// The memo of modulo hashes, emptied first when it has grown past [`MAX_MEMOISED`].
    fn drv_hash_memo(&self) -> MutexGuard<'_, DrvHashes> {
        let mut memo = self
            .0
            .drv_hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if memo.len() > MAX_MEMOISED {
            *memo = DrvHashes::new();
        }
        memo
    }

    /// The memo of modulo hashes, holding those of every input derivation of `drv` (each
    /// loaded from the store at most once). Blocking.
    fn input_hashes(&self, drv: &Derivation) -> Result<MutexGuard<'_, DrvHashes>, StoreError> {
        let mut memo = self.drv_hash_memo();
        for input in drv.input_drvs.keys() {
            if memo.get(input).is_some() {
                continue;
            }
            let mut failure = None;
            let computed = memo.compute(input, self.store_dir(), |p| {
                match self.load_drv_blocking(p) {
                    Ok(drv) => Some(drv),
                    Err(e) => {
                        failure.get_or_insert(e);
                        None
                    }
                }
            });
            if let Err(e) = computed {
                return Err(failure.unwrap_or_else(|| StoreError::DerivationInvalid {
                    path: self.store_dir().display(input),
                    source: e,
                }));
            }
        }
        Ok(memo)
    }

    /// What registering the `.drv` at `drv_path`, whose contents are at `root`, takes: Nix's
    /// invariant checks, and the statically known output paths for `DerivationOutputs`.
    /// Blocking.
    pub(crate) fn check_new_derivation(
        &self,
        drv_path: &StorePath,
        root: &Cid,
    ) -> Result<BTreeMap<String, StorePath>, StoreError> {
        let drv = self.parse_stored_drv(drv_path, root)?;
        let invalid = |source| StoreError::DerivationInvalid {
            path: self.store_dir().display(drv_path),
            source,
        };
        let input_addressed = drv.outputs.values().any(|o| {
            matches!(
                o,
                DerivationOutput::InputAddressed(_) | DerivationOutput::Deferred
            )
        });
        let mut memo = if input_addressed {
            let memo = self.input_hashes(&drv)?;
            check_invariants_at(&drv, drv_path, self.store_dir(), memo.lookup())
                .map_err(invalid)?;
            memo
        } else {
            // Fixed and floating outputs do not depend on the inputs' hashes.
            check_invariants_at(&drv, drv_path, self.store_dir(), |_| None).map_err(invalid)?;
            self.drv_hash_memo()
        };
        // Its own hash, while it is at hand: the derivations that use it come next (instantiate
        // adds them in dependency order), and would otherwise read it back from the store. Only
        // a shortcut: where it needs inputs not memoised (a floating content-addressed
        // derivation), it is computed when first needed instead.
        if memo
            .compute(drv_path, self.store_dir(), |p| {
                (p == drv_path).then(|| drv.clone())
            })
            .is_err()
        {
            debug!(drv = %drv_path, "modulo hash left for later");
        }
        drop(memo);
        Ok(drv
            .outputs_and_paths(self.store_dir())
            .map_err(invalid)?
            .into_iter()
            .filter_map(|(name, path)| path.map(|p| (name, p)))
            .collect())
    }

    /// Nix's `staticOutputHashes` of a valid derivation: what Nix 2.4-2.34 name its outputs'
    /// realisations by. Blocking.
    pub(crate) fn static_output_hashes_blocking(
        &self,
        drv_path: &StorePath,
        drv: &Derivation,
    ) -> Result<BTreeMap<String, Hash>, StoreError> {
        let invalid = |source| StoreError::DerivationInvalid {
            path: self.store_dir().display(drv_path),
            source,
        };
        if drv.drv_type().map_err(invalid)?.is_fixed() {
            return static_output_hashes(drv, self.store_dir(), |_| None).map_err(invalid);
        }
        let memo = self.input_hashes(drv)?;
        static_output_hashes(drv, self.store_dir(), memo.lookup()).map_err(invalid)
    }
}
