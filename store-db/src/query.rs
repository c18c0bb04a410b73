//! The queries the worker protocol asks of the database, and signature updates.
//!
//! Each mirrors one statement of Nix's `LocalStore` (named on each method); store paths are
//! base names, as everywhere in this database.

use std::collections::{BTreeMap, BTreeSet};

use pkgchain_store_model::content_address::ContentAddress;
use pkgchain_store_model::path_info::{self, ValidPathInfo};
use pkgchain_store_model::signature::Signature;
use pkgchain_store_model::store_path::{HASH_PART_LEN, StoreDir, StorePath};
use sqlx::{AssertSqlSafe, Row};

use crate::{DbError, PathInfo, StoreDb, check_sigs, join_sigs, retry_busy, stored_path};

/// Paths per `IN (...)` list (SQLite allows 32766 parameters).
const IN_BATCH: usize = 500;

impl StoreDb {
    /// The valid paths that refer to `path` (Nix's `queryReferrers`), including `path` itself
    /// when it refers to itself. Empty when `path` is not valid.
    pub async fn referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, DbError> {
        sqlx::query(
            "SELECT v.path FROM Refs r JOIN ValidPaths v ON v.id = r.referrer
             WHERE r.reference = (SELECT id FROM ValidPaths WHERE path = ?)",
        )
        .bind(path.base_name())
        .fetch_all(&self.readers)
        .await?
        .into_iter()
        .map(|row| {
            let p: String = row.try_get(0)?;
            stored_path("referrer", path.base_name(), &p)
        })
        .collect()
    }

    /// The valid path whose hash part is `hash_part` (Nix's `queryPathFromHashPart`).
    ///
    /// Rejecting malformed hash parts is the caller's business: any string that is not the hash
    /// part of a valid path (including one not [`HASH_PART_LEN`] characters long) gives `None`.
    pub async fn path_from_hash_part(&self, hash_part: &str) -> Result<Option<StorePath>, DbError> {
        if hash_part.len() != HASH_PART_LEN {
            return Ok(None);
        }
        // Base names sort by hash part first, so the first name at or after "<hash>-" is the
        // one with that hash part if there is one. This uses the path index.
        let prefix = format!("{hash_part}-");
        let row = sqlx::query("SELECT path FROM ValidPaths WHERE path >= ? ORDER BY path LIMIT 1")
            .bind(&prefix)
            .fetch_optional(&self.readers)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let p: String = row.try_get(0)?;
        if !p.starts_with(&prefix) {
            return Ok(None);
        }
        stored_path("path", &p, &p).map(Some)
    }

    /// The valid derivations whose `DerivationOutputs` name `output` (Nix's
    /// `queryValidDerivers`).
    pub async fn valid_derivers(&self, output: &StorePath) -> Result<BTreeSet<StorePath>, DbError> {
        sqlx::query(
            "SELECT v.path FROM DerivationOutputs d JOIN ValidPaths v ON v.id = d.drv
             WHERE d.path = ?",
        )
        .bind(output.base_name())
        .fetch_all(&self.readers)
        .await?
        .into_iter()
        .map(|row| {
            let p: String = row.try_get(0)?;
            stored_path("deriver", output.base_name(), &p)
        })
        .collect()
    }

    /// The `DerivationOutputs` rows of a valid `.drv`: output name to path. `None` when `drv`
    /// is not valid; an empty map for a valid path without rows (not a derivation, or only
    /// floating content-addressed outputs).
    pub async fn derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<Option<BTreeMap<String, StorePath>>, DbError> {
        let Some(id) = self.path_id(drv).await? else {
            return Ok(None);
        };
        sqlx::query("SELECT output, path FROM DerivationOutputs WHERE drv = ?")
            .bind(id)
            .fetch_all(&self.readers)
            .await?
            .into_iter()
            .map(|row| {
                let output: String = row.try_get(0)?;
                let p: String = row.try_get(1)?;
                Ok((
                    output,
                    stored_path("derivation output", drv.base_name(), &p)?,
                ))
            })
            .collect::<Result<BTreeMap<_, _>, DbError>>()
            .map(Some)
    }

    /// Which of `paths` are valid (Nix's `queryValidPaths` without substitution).
    pub async fn valid_paths(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, DbError> {
        let mut valid = BTreeSet::new();
        for batch in paths.chunks(IN_BATCH) {
            let marks = vec!["?"; batch.len()].join(", ");
            let sql = format!("SELECT path FROM ValidPaths WHERE path IN ({marks})");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for p in batch {
                q = q.bind(p.base_name());
            }
            for row in q.fetch_all(&self.readers).await? {
                let p: String = row.try_get(0)?;
                valid.insert(stored_path("path", &p, &p)?);
            }
        }
        Ok(valid)
    }

    /// The deriver recorded for `path`: `None` when `path` is not valid, `Some(None)` when it is
    /// valid without a known deriver.
    pub async fn deriver(&self, path: &StorePath) -> Result<Option<Option<StorePath>>, DbError> {
        let row = sqlx::query("SELECT deriver FROM ValidPaths WHERE path = ?")
            .bind(path.base_name())
            .fetch_optional(&self.readers)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let deriver: Option<String> = row.try_get(0)?;
        deriver
            .map(|d| stored_path("deriver", path.base_name(), &d))
            .transpose()
            .map(Some)
    }

    /// Adds signatures to a valid path (set union with those it has; Nix's `addSignatures`).
    /// Returns `false`, changing nothing, when `path` is not valid. The signatures are stored as
    /// given; checking them is the caller's business.
    pub async fn add_signatures(
        &self,
        path: &StorePath,
        sigs: &BTreeSet<String>,
    ) -> Result<bool, DbError> {
        check_sigs(sigs)?;
        let result = retry_busy(|| self.try_add_signatures(path, sigs)).await;
        self.infos.invalidate([path.base_name()]);
        result
    }

    async fn try_add_signatures(
        &self,
        path: &StorePath,
        sigs: &BTreeSet<String>,
    ) -> Result<bool, DbError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query("SELECT id, sigs FROM ValidPaths WHERE path = ?")
            .bind(path.base_name())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        let id: i64 = row.try_get(0)?;
        let old: String = row.try_get(1)?;
        let mut merged: BTreeSet<String> = old.split_whitespace().map(str::to_owned).collect();
        let before = merged.len();
        merged.extend(sigs.iter().cloned());
        if merged.len() != before {
            sqlx::query("UPDATE ValidPaths SET sigs = ? WHERE id = ?")
                .bind(join_sigs(&merged))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The row id of a valid path.
    pub(crate) async fn path_id(&self, path: &StorePath) -> Result<Option<i64>, DbError> {
        sqlx::query("SELECT id FROM ValidPaths WHERE path = ?")
            .bind(path.base_name())
            .fetch_optional(&self.readers)
            .await?
            .map(|row| row.try_get::<i64, _>(0))
            .transpose()
            .map_err(DbError::from)
    }
}

impl PathInfo {
    /// The model's form of this path's metadata, as the worker protocol sends it.
    ///
    /// Fails with [`DbError::Corrupt`] when a stored signature or content address does not
    /// parse (the database was edited or damaged).
    pub fn to_valid_path_info(&self, store_dir: &StoreDir) -> Result<ValidPathInfo, DbError> {
        let corrupt = |what: &'static str, detail: String| DbError::Corrupt {
            what,
            path: self.path.to_string(),
            detail,
        };
        let mut info =
            path_info::PathInfo::new(store_dir.clone(), self.nar_hash.clone(), self.nar_size);
        info.references = self.references.clone();
        info.deriver = self.deriver.clone();
        info.registration_time = (self.registration_time != 0).then_some(self.registration_time);
        info.ultimate = self.ultimate;
        info.sigs = self
            .sigs
            .iter()
            .map(|s| Signature::parse(s).map_err(|e| corrupt("signature", e.to_string())))
            .collect::<Result<_, _>>()?;
        info.ca = self
            .ca
            .as_deref()
            .map(|ca| {
                ContentAddress::parse(ca).map_err(|e| corrupt("content address", e.to_string()))
            })
            .transpose()?;
        Ok(ValidPathInfo {
            path: self.path.clone(),
            info,
        })
    }
}
