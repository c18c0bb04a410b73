//! Realisations: which store path an output of a (content-addressed) derivation resolved to.
//!
//! Nix names a derivation output two ways, and this database keeps both:
//!
//! * by the derivation's hash modulo, `sha256:<hex>!<output>` (Nix 2.4-2.34, table
//!   `Realisations`, with the realisations it depends on in `RealisationsRefs`);
//! * by the derivation's store path (Nix 2.35's build trace, table `BuildTrace`; no
//!   dependencies).
//!
//! The output path must be valid, and a realisation disappears with it (`ON DELETE CASCADE`),
//! as in Nix 2.4-2.34.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use pkgchain_store_model::hash::{Hash, HashEncoding};
use pkgchain_store_model::store_path::StorePath;
use sqlx::Row;

use crate::{DbError, StoreDb, check_sigs, join_sigs, retry_busy, stored_path};

/// A derivation output named by its derivation's hash modulo (Nix 2.4-2.34's `DrvOutput`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DrvHashOutput {
    /// The derivation's (masked) hash modulo, from `staticOutputHashes`.
    pub drv_hash: Hash,
    /// The output name.
    pub output_name: String,
}

impl DrvHashOutput {
    /// The hash as stored and as Nix prints it in the id: `sha256:<hex>`.
    fn hash_text(&self) -> String {
        self.drv_hash.to_prefixed(HashEncoding::Base16)
    }
}

impl fmt::Display for DrvHashOutput {
    /// `sha256:<hex>!<output>`, Nix's `DrvOutput::to_string`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}!{}", self.hash_text(), self.output_name)
    }
}

/// Which derivation output a realisation is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RealisationKey {
    /// By the derivation's store path (Nix 2.35). The `.drv` need not be valid.
    DrvPath {
        /// The derivation.
        drv_path: StorePath,
        /// The output name.
        output_name: String,
    },
    /// By the derivation's hash modulo (Nix 2.4-2.34).
    DrvHash(DrvHashOutput),
}

impl fmt::Display for RealisationKey {
    /// `<drv base name>^<output>` or `sha256:<hex>!<output>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RealisationKey::DrvPath {
                drv_path,
                output_name,
            } => write!(f, "{drv_path}^{output_name}"),
            RealisationKey::DrvHash(id) => id.fmt(f),
        }
    }
}

/// Where a derivation output ended up, and who vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealisationValue {
    /// The output's store path; valid while the realisation is registered.
    pub out_path: StorePath,
    /// Signatures over the realisation, `keyname:base64`.
    pub signatures: BTreeSet<String>,
    /// Realisations (of input derivations) this one depends on, with their output paths.
    /// Recorded only under hash keys; always empty under path keys.
    pub dependencies: BTreeMap<DrvHashOutput, StorePath>,
}

impl StoreDb {
    /// Registers one realisation under every key in `keys`, in one transaction (Nix's
    /// `registerDrvOutput`).
    ///
    /// An existing realisation of the same key with the same output path gets the new
    /// signatures merged in; one with another output path is
    /// [`DbError::RealisationConflict`]. The output path must be valid
    /// ([`DbError::InvalidPath`]). Every dependency must be registered (under its hash key)
    /// with the stated output path, else [`DbError::RealisationDependencyMissing`] or
    /// [`DbError::RealisationDependencyMismatch`]; dependencies are recorded for hash keys only.
    pub async fn register_realisation(
        &self,
        keys: &[RealisationKey],
        value: &RealisationValue,
    ) -> Result<(), DbError> {
        check_sigs(&value.signatures)?;
        retry_busy(|| self.try_register_realisation(keys, value)).await
    }

    async fn try_register_realisation(
        &self,
        keys: &[RealisationKey],
        value: &RealisationValue,
    ) -> Result<(), DbError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let out_id: i64 = sqlx::query("SELECT id FROM ValidPaths WHERE path = ?")
            .bind(value.out_path.base_name())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?
            .ok_or_else(|| DbError::InvalidPath(value.out_path.to_string()))?;
        for key in keys {
            let (table, key_column, key_value, output_name) = match key {
                RealisationKey::DrvPath {
                    drv_path,
                    output_name,
                } => (
                    "BuildTrace",
                    "drv_path",
                    drv_path.base_name().to_owned(),
                    output_name,
                ),
                RealisationKey::DrvHash(id) => {
                    ("Realisations", "drv_hash", id.hash_text(), &id.output_name)
                }
            };
            let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT r.id, v.path, r.signatures FROM {table} r
                   JOIN ValidPaths v ON v.id = r.output_path
                 WHERE r.{key_column} = ? AND r.output_name = ?"
            )))
            .bind(&key_value)
            .bind(output_name)
            .fetch_optional(&mut *tx)
            .await?;
            let id: i64 = match existing {
                Some(row) => {
                    let id: i64 = row.try_get(0)?;
                    let local: String = row.try_get(1)?;
                    if local != value.out_path.base_name() {
                        return Err(DbError::RealisationConflict {
                            id: key.to_string(),
                            local,
                            remote: value.out_path.to_string(),
                        });
                    }
                    let old: String = row.try_get(2)?;
                    let mut sigs: BTreeSet<String> =
                        old.split_whitespace().map(str::to_owned).collect();
                    sigs.extend(value.signatures.iter().cloned());
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE {table} SET signatures = ? WHERE id = ?"
                    )))
                    .bind(join_sigs(&sigs))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    id
                }
                None => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO {table} ({key_column}, output_name, output_path, signatures)
                     VALUES (?, ?, ?, ?) RETURNING id"
                )))
                .bind(&key_value)
                .bind(output_name)
                .bind(out_id)
                .bind(join_sigs(&value.signatures))
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?,
            };
            if let RealisationKey::DrvHash(_) = key {
                for (dep, dep_path) in &value.dependencies {
                    let row = sqlx::query(
                        "SELECT r.id, v.path FROM Realisations r
                           JOIN ValidPaths v ON v.id = r.output_path
                         WHERE r.drv_hash = ? AND r.output_name = ?",
                    )
                    .bind(dep.hash_text())
                    .bind(&dep.output_name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| DbError::RealisationDependencyMissing {
                        id: key.to_string(),
                        dependency: dep.to_string(),
                    })?;
                    let dep_id: i64 = row.try_get(0)?;
                    let local: String = row.try_get(1)?;
                    if local != dep_path.base_name() {
                        return Err(DbError::RealisationDependencyMismatch {
                            id: key.to_string(),
                            dependency: dep.to_string(),
                        });
                    }
                    sqlx::query(
                        "INSERT OR IGNORE INTO RealisationsRefs (referrer, reference) VALUES (?, ?)",
                    )
                    .bind(id)
                    .bind(dep_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The realisation registered under `key`, if any (Nix's `queryRealisation`).
    pub async fn realisation(
        &self,
        key: &RealisationKey,
    ) -> Result<Option<RealisationValue>, DbError> {
        let owner = key.to_string();
        let (id, out_path, sigs) = match key {
            RealisationKey::DrvPath {
                drv_path,
                output_name,
            } => {
                let row = sqlx::query(
                    "SELECT b.id, v.path, b.signatures FROM BuildTrace b
                       JOIN ValidPaths v ON v.id = b.output_path
                     WHERE b.drv_path = ? AND b.output_name = ?",
                )
                .bind(drv_path.base_name())
                .bind(output_name)
                .fetch_optional(&self.readers)
                .await?;
                let Some(row) = row else { return Ok(None) };
                (
                    row.try_get::<i64, _>(0)?,
                    row.try_get::<String, _>(1)?,
                    row.try_get::<String, _>(2)?,
                )
            }
            RealisationKey::DrvHash(id) => {
                let row = sqlx::query(
                    "SELECT r.id, v.path, r.signatures FROM Realisations r
                       JOIN ValidPaths v ON v.id = r.output_path
                     WHERE r.drv_hash = ? AND r.output_name = ?",
                )
                .bind(id.hash_text())
                .bind(&id.output_name)
                .fetch_optional(&self.readers)
                .await?;
                let Some(row) = row else { return Ok(None) };
                (
                    row.try_get::<i64, _>(0)?,
                    row.try_get::<String, _>(1)?,
                    row.try_get::<String, _>(2)?,
                )
            }
        };
        let mut dependencies = BTreeMap::new();
        if let RealisationKey::DrvHash(_) = key {
            let rows = sqlx::query(
                "SELECT d.drv_hash, d.output_name, v.path FROM RealisationsRefs rr
                   JOIN Realisations d ON d.id = rr.reference
                   JOIN ValidPaths v ON v.id = d.output_path
                 WHERE rr.referrer = ?",
            )
            .bind(id)
            .fetch_all(&self.readers)
            .await?;
            for row in rows {
                let hash: String = row.try_get(0)?;
                let drv_hash = Hash::parse_prefixed(&hash).map_err(|e| DbError::Corrupt {
                    what: "realisation dependency hash",
                    path: owner.clone(),
                    detail: e.to_string(),
                })?;
                let path: String = row.try_get(2)?;
                dependencies.insert(
                    DrvHashOutput {
                        drv_hash,
                        output_name: row.try_get(1)?,
                    },
                    stored_path("realisation dependency", &owner, &path)?,
                );
            }
        }
        Ok(Some(RealisationValue {
            out_path: stored_path("realisation output", &owner, &out_path)?,
            signatures: sigs.split_whitespace().map(str::to_owned).collect(),
            dependencies,
        }))
    }
}
