//! What the worker protocol asks the store: path metadata, referrers, derivers, derivation
//! outputs, realisations; and signatures added to valid paths.
//!
//! Each method names the Nix operation it answers and says how it treats a path that is not
//! valid, since Nix's operations differ there (some answer empty, some fail).

use std::collections::{BTreeMap, BTreeSet};

use pkgchain_store_db::PathInfo;
use pkgchain_store_db::realisation::{DrvHashOutput, RealisationKey, RealisationValue};
use pkgchain_store_model::signature::Signature;
use pkgchain_store_model::store_path::{HASH_PART_LEN, StorePath};
use tracing::{Instrument, debug, debug_span};

use crate::{Store, StoreError};

impl Store {
    /// Whether `path` is valid (`IsValidPath`).
    pub async fn is_valid_path(&self, path: &StorePath) -> Result<bool, StoreError> {
        Ok(self.db().is_valid(path).await?)
    }

    /// Everything known about `path`, `None` when it is not valid (`QueryPathInfo`).
    pub async fn query_path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        Ok(self.db().path_info(path).await?)
    }

    /// The valid paths referring to `path` (`QueryReferrers`); empty when `path` is not valid,
    /// as in Nix.
    pub async fn query_referrers(
        &self,
        path: &StorePath,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        Ok(self.db().referrers(path).await?)
    }

    /// The valid path whose hash part is `hash_part` (`QueryPathFromHashPart`). A string that
    /// is not [`HASH_PART_LEN`] characters long is an error ("invalid hash part", as in Nix);
    /// any other string that no valid path has as hash part gives `None`.
    pub async fn query_path_from_hash_part(
        &self,
        hash_part: &str,
    ) -> Result<Option<StorePath>, StoreError> {
        if hash_part.len() != HASH_PART_LEN {
            return Err(StoreError::InvalidHashPart(
                hash_part.escape_debug().to_string(),
            ));
        }
        Ok(self.db().path_from_hash_part(hash_part).await?)
    }

    /// The valid derivations that list `output` among their outputs (`QueryValidDerivers`).
    pub async fn query_valid_derivers(
        &self,
        output: &StorePath,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        Ok(self.db().valid_derivers(output).await?)
    }

    /// Which of `paths` are valid (`QueryValidPaths`, without substituting).
    pub async fn query_valid_paths(
        &self,
        paths: &[StorePath],
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        Ok(self.db().valid_paths(paths).await?)
    }

    /// Every valid path, sorted (`QueryAllValidPaths`).
    pub async fn query_all_valid_paths(&self) -> Result<Vec<StorePath>, StoreError> {
        Ok(self.db().all_paths().await?)
    }

    /// The deriver recorded for a valid path, if any (`QueryDeriver`). A path that is not valid
    /// is [`StoreError::NotValid`].
    pub async fn query_deriver(&self, path: &StorePath) -> Result<Option<StorePath>, StoreError> {
        self.db()
            .deriver(path)
            .await?
            .ok_or_else(|| StoreError::NotValid(self.store_dir().display(path)))
    }

    /// Every output of a valid derivation with its path where one is known
    /// (`QueryDerivationOutputMap`, Nix's `queryPartialDerivationOutputMap`).
    ///
    /// The names come from the `.drv` itself; paths from `DerivationOutputs` (input-addressed
    /// and fixed outputs), else from a realisation (by derivation path, then by hash modulo);
    /// `None` for an output not built yet (floating content-addressed, deferred). A `drv` that
    /// is not valid is [`StoreError::NotValid`].
    pub async fn query_derivation_output_map(
        &self,
        drv_path: &StorePath,
    ) -> Result<BTreeMap<String, Option<StorePath>>, StoreError> {
        let span = debug_span!("query_derivation_output_map", drv = %drv_path);
        async {
            let rows = self
                .db()
                .derivation_outputs(drv_path)
                .await?
                .ok_or_else(|| StoreError::NotValid(self.store_dir().display(drv_path)))?;
            let drv = self.read_derivation(drv_path).await?;
            let mut map: BTreeMap<String, Option<StorePath>> = drv
                .outputs
                .keys()
                .map(|name| (name.clone(), rows.get(name).cloned()))
                .collect();
            // Rows for names the .drv does not have cannot exist for a .drv registered here,
            // but a database written by someone else might hold them: show them too.
            for (name, path) in rows {
                map.entry(name).or_insert(Some(path));
            }
            let mut missing: Vec<String> = Vec::new();
            for (name, path) in &mut map {
                if path.is_some() {
                    continue;
                }
                let key = RealisationKey::DrvPath {
                    drv_path: drv_path.clone(),
                    output_name: name.clone(),
                };
                match self.db().realisation(&key).await? {
                    Some(r) => *path = Some(r.out_path),
                    None => missing.push(name.clone()),
                }
            }
            if !missing.is_empty() {
                let hashes = {
                    let store = self.clone();
                    let drv_path = drv_path.clone();
                    crate::blocking(move || store.static_output_hashes_blocking(&drv_path, &drv))
                        .await?
                };
                for name in missing {
                    let Some(drv_hash) = hashes.get(&name) else {
                        continue;
                    };
                    let key = RealisationKey::DrvHash(DrvHashOutput {
                        drv_hash: drv_hash.clone(),
                        output_name: name.clone(),
                    });
                    if let Some(r) = self.db().realisation(&key).await? {
                        map.insert(name, Some(r.out_path));
                    }
                }
            }
            Ok(map)
        }
        .instrument(span)
        .await
    }

    /// The known output paths of a valid derivation (`QueryDerivationOutputs`): the paths of
    /// [`Store::query_derivation_output_map`], leaving out outputs without one.
    pub async fn query_derivation_outputs(
        &self,
        drv_path: &StorePath,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        Ok(self
            .query_derivation_output_map(drv_path)
            .await?
            .into_values()
            .flatten()
            .collect())
    }

    /// The output names of a valid derivation, read from the `.drv`
    /// (`QueryDerivationOutputNames`).
    pub async fn query_derivation_output_names(
        &self,
        drv_path: &StorePath,
    ) -> Result<BTreeSet<String>, StoreError> {
        Ok(self
            .read_derivation(drv_path)
            .await?
            .outputs
            .into_keys()
            .collect())
    }

    /// Adds signatures to a valid path (`AddSignatures`). As in Nix they are stored, not
    /// verified (the daemon lets only trusted clients do this, or checks them itself); they
    /// merge with those the path has. A path that is not valid is [`StoreError::NotValid`].
    pub async fn add_signatures(
        &self,
        path: &StorePath,
        sigs: impl IntoIterator<Item = Signature>,
    ) -> Result<(), StoreError> {
        let sigs: BTreeSet<String> = sigs.into_iter().map(|s| s.to_string()).collect();
        if self.db().add_signatures(path, &sigs).await? {
            debug!(path = %path, count = sigs.len(), "signatures added");
            Ok(())
        } else {
            Err(StoreError::NotValid(self.store_dir().display(path)))
        }
    }

    /// Registers a realisation (`RegisterDrvOutput`, and what a build of a content-addressed
    /// derivation records). The output path must be valid; every signature must be
    /// `keyname:base64` (they are not verified).
    ///
    /// A realisation given by derivation path is also registered under the derivation's hash
    /// modulo when the `.drv` is valid here, so that clients older than Nix 2.35, which ask by
    /// hash, find it too. Registering a different output path for a registered output is an
    /// error; the same one again merges the signatures.
    pub async fn register_realisation(
        &self,
        key: RealisationKey,
        value: RealisationValue,
    ) -> Result<(), StoreError> {
        let span = debug_span!("register_realisation", id = %key, out = %value.out_path);
        async {
            for sig in &value.signatures {
                Signature::parse(sig).map_err(|e| StoreError::BadSignature {
                    signature: sig.clone(),
                    reason: e.to_string(),
                })?;
            }
            let mut keys = vec![key.clone()];
            if let RealisationKey::DrvPath {
                drv_path,
                output_name,
            } = &key
                && let Some(hash) = self.static_hash_of(drv_path, output_name).await?
            {
                keys.push(RealisationKey::DrvHash(DrvHashOutput {
                    drv_hash: hash,
                    output_name: output_name.clone(),
                }));
            }
            self.db().register_realisation(&keys, &value).await?;
            debug!(keys = keys.len(), "realisation registered");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// The realisation of a derivation output (`QueryRealisation`), `None` when unknown. Asked
    /// by derivation path, one registered only by hash modulo is found too (when the `.drv` is
    /// valid here).
    pub async fn query_realisation(
        &self,
        key: &RealisationKey,
    ) -> Result<Option<RealisationValue>, StoreError> {
        if let Some(found) = self.db().realisation(key).await? {
            return Ok(Some(found));
        }
        let RealisationKey::DrvPath {
            drv_path,
            output_name,
        } = key
        else {
            return Ok(None);
        };
        let Some(hash) = self.static_hash_of(drv_path, output_name).await? else {
            return Ok(None);
        };
        let legacy = RealisationKey::DrvHash(DrvHashOutput {
            drv_hash: hash,
            output_name: output_name.clone(),
        });
        Ok(self.db().realisation(&legacy).await?.map(|mut r| {
            // A path-keyed realisation has no dependencies.
            r.dependencies.clear();
            r
        }))
    }

    /// The static output hash of one output of `drv_path`, when the `.drv` is valid here and
    /// has that output.
    async fn static_hash_of(
        &self,
        drv_path: &StorePath,
        output_name: &str,
    ) -> Result<Option<pkgchain_store_model::hash::Hash>, StoreError> {
        if !self.db().is_valid(drv_path).await? {
            return Ok(None);
        }
        let drv = self.read_derivation(drv_path).await?;
        let store = self.clone();
        let path = drv_path.clone();
        let mut hashes =
            crate::blocking(move || store.static_output_hashes_blocking(&path, &drv)).await?;
        Ok(hashes.remove(output_name))
    }
}
