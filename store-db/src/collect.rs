//! What the garbage collector asks of the database: deleting paths in bulk (refused, and
//! rolled back, when something still refers to one of them), and which blocks valid paths
//! still use.

use std::collections::{BTreeSet, HashSet};

use pkgchain_dag::Cid;
use pkgchain_store_model::store_path::StorePath;
use sqlx::Row;

use crate::{DbError, StoreDb, retry_busy};

/// Bound parameters per statement (SQLite allows 32,766; smaller keeps statements cheap).
const CHUNK: usize = 500;

/// What deleting a set of paths did.
#[derive(Debug, Default)]
pub struct DeletedPaths {
    /// The paths deleted (those of the set that were valid).
    pub deleted: BTreeSet<StorePath>,
    /// Every block the deleted paths used, with its size: candidates for collection.
    pub blocks: Vec<(Cid, u64)>,
}

impl StoreDb {
    /// Deletes `paths` in one transaction, with their references, blocks lists, derivation
    /// outputs and realisations. Fails with [`DbError::InUse`] and changes nothing when a
    /// valid path outside the set refers to one of them (a path registered since the
    /// collector looked).
    pub async fn delete_paths(&self, paths: &[StorePath]) -> Result<DeletedPaths, DbError> {
        if paths.is_empty() {
            return Ok(DeletedPaths::default());
        }
        let deleted = retry_busy(|| self.try_delete_paths(paths)).await?;
        self.infos
            .invalidate(deleted.deleted.iter().map(StorePath::base_name));
        Ok(deleted)
    }

    async fn try_delete_paths(&self, paths: &[StorePath]) -> Result<DeletedPaths, DbError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS Doomed (id INTEGER PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM Doomed").execute(&mut *tx).await?;
        for chunk in paths.chunks(CHUNK) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "INSERT OR IGNORE INTO Doomed SELECT id FROM ValidPaths WHERE path IN ({marks})"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)); // only placeholders are formatted in
            for p in chunk {
                q = q.bind(p.base_name());
            }
            q.execute(&mut *tx).await?;
        }
        let deleted = doomed_paths(&mut tx).await?;
        let mut blocks = Vec::new();
        for row in sqlx::query(
            "SELECT DISTINCT b.cid, b.size FROM PathBlocks pb JOIN Blocks b ON b.id = pb.block
             WHERE pb.path IN (SELECT id FROM Doomed)",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            blocks.push((block_cid(&row)?, block_size(&row)?));
        }
        match delete_doomed(&mut tx).await {
            Ok(()) => {}
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                tx.rollback().await?;
                return Err(DbError::InUse);
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(DeletedPaths { deleted, blocks })
    }

    /// Those of `cids` that some valid path uses.
    pub async fn blocks_in_use(&self, cids: &[Cid]) -> Result<HashSet<Cid>, DbError> {
        let mut used = HashSet::new();
        let mut conn = self.readers.acquire().await?;
        for chunk in cids.chunks(CHUNK) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "SELECT b.cid FROM Blocks b WHERE b.cid IN ({marks})
                 AND EXISTS (SELECT 1 FROM PathBlocks pb WHERE pb.block = b.id)"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)); // only placeholders are formatted in
            for c in chunk {
                q = q.bind(c.to_bytes().to_vec());
            }
            for row in q.fetch_all(&mut *conn).await? {
                used.insert(block_cid(&row)?);
            }
        }
        Ok(used)
    }

    /// Every block some valid path uses.
    pub async fn all_blocks_in_use(&self) -> Result<HashSet<Cid>, DbError> {
        sqlx::query(
            "SELECT b.cid FROM Blocks b
             WHERE EXISTS (SELECT 1 FROM PathBlocks pb WHERE pb.block = b.id)",
        )
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(block_cid)
        .collect()
    }

    /// Every block listed that no valid path uses (a crash, or paths deleted before their
    /// blocks were).
    pub async fn unused_blocks(&self) -> Result<Vec<(Cid, u64)>, DbError> {
        sqlx::query(
            "SELECT b.cid, b.size FROM Blocks b
             WHERE NOT EXISTS (SELECT 1 FROM PathBlocks pb WHERE pb.block = b.id)",
        )
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(|row| Ok((block_cid(row)?, block_size(row)?)))
        .collect()
    }

    /// Forgets the blocks among `cids` that no valid path uses (their files are gone).
    pub async fn forget_blocks(&self, cids: &[Cid]) -> Result<(), DbError> {
        for chunk in cids.chunks(CHUNK) {
            retry_busy(|| async {
                let marks = vec!["?"; chunk.len()].join(",");
                let sql = format!(
                    "DELETE FROM Blocks WHERE cid IN ({marks})
                     AND NOT EXISTS (SELECT 1 FROM PathBlocks pb WHERE pb.block = Blocks.id)"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)); // only placeholders are formatted in
                for c in chunk {
                    q = q.bind(c.to_bytes().to_vec());
                }
                q.execute(&self.writer).await?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }
}

/// Deletes the valid paths listed in the temporary table `Doomed`, with their references and
/// realisations (the rest cascades), and empties the table. Fails with a foreign-key violation,
/// for the caller to roll back, when a path outside the table still refers to one of them.
pub(crate) async fn delete_doomed(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
) -> Result<(), sqlx::Error> {
    for statement in [
        "DELETE FROM RealisationsRefs WHERE referrer IN (SELECT id FROM Realisations
           WHERE output_path IN (SELECT id FROM Doomed))
           OR reference IN (SELECT id FROM Realisations
           WHERE output_path IN (SELECT id FROM Doomed))",
        "DELETE FROM Refs WHERE referrer IN (SELECT id FROM Doomed)",
        "DELETE FROM ValidPaths WHERE id IN (SELECT id FROM Doomed)",
        "DELETE FROM Doomed",
    ] {
        sqlx::query(statement).execute(&mut **tx).await?;
    }
    Ok(())
}

/// The valid paths listed in the temporary table `Doomed`.
pub(crate) async fn doomed_paths(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
) -> Result<BTreeSet<StorePath>, DbError> {
    sqlx::query("SELECT v.path FROM Doomed d JOIN ValidPaths v ON v.id = d.id")
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|row| {
            let name: String = row.try_get(0)?;
            crate::stored_path("path", "ValidPaths", &name)
        })
        .collect()
}

fn block_cid(row: &sqlx::sqlite::SqliteRow) -> Result<Cid, DbError> {
    let bytes: Vec<u8> = row.try_get(0)?;
    Cid::from_bytes(&bytes).map_err(|e| DbError::Corrupt {
        what: "block CID",
        path: String::new(),
        detail: e.to_string(),
    })
}

fn block_size(row: &sqlx::sqlite::SqliteRow) -> Result<u64, DbError> {
    let size: i64 = row.try_get(1)?;
    u64::try_from(size).map_err(|_| DbError::Corrupt {
        what: "block size",
        path: String::new(),
        detail: size.to_string(),
    })
}
