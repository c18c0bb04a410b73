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
    /// Every block the deleted paths used that no valid path uses any more, with its size;
    /// their rows are deleted with the paths. Candidates for collection: their files are
    /// still on disk.
    pub blocks: Vec<(Cid, u64)>,
}

impl StoreDb {
    /// Deletes `paths` in one transaction, with their references, blocks lists, derivation
    /// outputs and realisations, and the rows of the blocks only they used. Fails with [`DbError::InUse`] and changes nothing when a
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
        // SQLite's per-row foreign-key actions cost more than all the rest of the deletion;
        // `delete_doomed` does their work in bulk, checks included.
        let mut conn = WithoutForeignKeys::acquire(&self.writer).await?;
        let deleted = Self::delete_paths_in(conn.connection(), paths).await?;
        conn.restore().await?;
        Ok(deleted)
    }

    async fn delete_paths_in(
        conn: &mut sqlx::SqliteConnection,
        paths: &[StorePath],
    ) -> Result<DeletedPaths, DbError> {
        use sqlx::Connection;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
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
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS DoomedBlocks (id INTEGER PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM DoomedBlocks")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT OR IGNORE INTO DoomedBlocks
             SELECT block FROM PathBlocks WHERE path IN (SELECT id FROM Doomed)",
        )
        .execute(&mut *tx)
        .await?;
        if let Doomed::StillReferred = delete_doomed(&mut tx).await? {
            tx.rollback().await?;
            return Err(DbError::InUse);
        }
        // The rows of the blocks no valid path uses any more go with the paths: their files
        // are the caller's to delete (a crash first leaves files no row lists, which a sweep
        // of the block files finds).
        let mut blocks = Vec::new();
        for row in sqlx::query(
            "DELETE FROM Blocks WHERE id IN (SELECT id FROM DoomedBlocks)
             AND NOT EXISTS (SELECT 1 FROM PathBlocks pb WHERE pb.block = Blocks.id)
             RETURNING cid, size",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            blocks.push((block_cid(&row)?, block_size(&row)?));
        }
        sqlx::query("DELETE FROM DoomedBlocks")
            .execute(&mut *tx)
            .await?;
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

/// What [`delete_doomed`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Doomed {
    /// The paths are deleted.
    Deleted,
    /// A valid path outside `Doomed` refers to one of them: nothing was deleted, and the
    /// caller rolls back.
    StillReferred,
}

/// Every table whose rows belong to a valid path, by the column naming it: deleted with the
/// path. A unit test holds this list to the schema's foreign keys.
const ROWS_OF_A_PATH: [(&str, &str); 6] = [
    ("Refs", "referrer"),
    ("PathBlocks", "path"),
    ("DerivationOutputs", "drv"),
    ("Realisations", "output_path"),
    ("BuildTrace", "output_path"),
    ("UnsyncedPaths", "path"),
];

/// Deletes the valid paths listed in the temporary table `Doomed` with every row that belongs
/// to them, and empties the table; or, when a path outside the table still refers to one of
/// them, deletes nothing. Does the work of the schema's foreign-key actions itself, so it is
/// right with the checks off (the collector's bulk deletion) and on.
pub(crate) async fn delete_doomed(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
) -> Result<Doomed, sqlx::Error> {
    let referred = sqlx::query(
        "SELECT 1 FROM Refs WHERE reference IN (SELECT id FROM Doomed)
         AND referrer NOT IN (SELECT id FROM Doomed) LIMIT 1",
    )
    .fetch_optional(&mut **tx)
    .await?;
    if referred.is_some() {
        return Ok(Doomed::StillReferred);
    }
    sqlx::query(
        "DELETE FROM RealisationsRefs WHERE referrer IN (SELECT id FROM Realisations
           WHERE output_path IN (SELECT id FROM Doomed))
           OR reference IN (SELECT id FROM Realisations
           WHERE output_path IN (SELECT id FROM Doomed))",
    )
    .execute(&mut **tx)
    .await?;
    for (table, column) in ROWS_OF_A_PATH {
        // Only the constant names above are formatted in.
        let sql = format!("DELETE FROM {table} WHERE {column} IN (SELECT id FROM Doomed)");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("DELETE FROM ValidPaths WHERE id IN (SELECT id FROM Doomed)")
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM Doomed").execute(&mut **tx).await?;
    Ok(Doomed::Deleted)
}

/// The writing connection with SQLite's foreign-key checks off, until [`Self::restore`]
/// turns them on again. Dropped without that (an error, a cancelled operation), the
/// connection is closed rather than given back with the checks off.
struct WithoutForeignKeys {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    checks_off: bool,
}

impl WithoutForeignKeys {
    async fn acquire(pool: &sqlx::SqlitePool) -> Result<WithoutForeignKeys, DbError> {
        let mut guard = WithoutForeignKeys {
            conn: pool.acquire().await?,
            checks_off: true,
        };
        // A no-op inside a transaction: there is none on a connection from the pool.
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(guard.connection())
            .await?;
        Ok(guard)
    }

    fn connection(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.conn
    }

    /// Turns the checks on again; the connection goes back to the pool.
    async fn restore(mut self) -> Result<(), DbError> {
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(self.connection())
            .await?;
        self.checks_off = false;
        Ok(())
    }
}

impl Drop for WithoutForeignKeys {
    fn drop(&mut self) {
        if self.checks_off {
            self.conn.close_on_drop();
        }
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use pkgchain_dag::Codec;

    use super::*;
    use crate::tests::{new_path, scratch_db, sp};

    /// The bulk deletion does the foreign keys' work itself: every column that names a valid
    /// path must be in its list, or be the one it checks (`Refs.reference`).
    #[tokio::test]
    async fn rows_of_a_path_cover_every_foreign_key_to_valid_paths() {
        let (_dir, db) = scratch_db().await;
        let rows = sqlx::query(
            "SELECT m.name, f.\"from\" FROM sqlite_master m, pragma_foreign_key_list(m.name) f
             WHERE m.type = 'table' AND f.\"table\" = 'ValidPaths'",
        )
        .fetch_all(&db.readers)
        .await
        .expect("foreign keys");
        let found: BTreeSet<(String, String)> = rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
            .collect();
        let mut handled: BTreeSet<(String, String)> = ROWS_OF_A_PATH
            .iter()
            .map(|(t, c)| ((*t).to_owned(), (*c).to_owned()))
            .collect();
        handled.insert(("Refs".to_owned(), "reference".to_owned()));
        assert_eq!(found, handled);
    }

    /// The marker that views poll changes with each registration and deletion, and only
    /// then.
    #[tokio::test]
    async fn the_paths_marker_changes_when_paths_come_and_go() {
        let (_dir, db) = scratch_db().await;
        let first = db.paths_marker().await.expect("marker");
        assert_eq!(db.paths_marker().await.expect("marker"), first);
        let a = sp("a", 1);
        db.register_paths(&[new_path(a.clone(), &[], &[b"a"])])
            .await
            .expect("register");
        let registered = db.paths_marker().await.expect("marker");
        assert_ne!(registered, first);
        assert_eq!(db.paths_marker().await.expect("marker"), registered);
        db.delete_paths(std::slice::from_ref(&a))
            .await
            .expect("delete");
        assert_ne!(db.paths_marker().await.expect("marker"), registered);
    }

    /// A path still referred to is refused with nothing deleted; deleting returns the blocks
    /// no valid path uses any more (not those a live path shares) and leaves the foreign-key
    /// checks on.
    #[tokio::test]
    async fn delete_paths_refuses_referred_paths_and_returns_unshared_blocks() {
        let (_dir, db) = scratch_db().await;
        let (a, b) = (sp("a", 1), sp("b", 2));
        db.register_paths(&[
            new_path(a.clone(), &[], &[b"a-root", b"shared"]),
            new_path(b.clone(), &[&a], &[b"b-root", b"shared"]),
        ])
        .await
        .expect("register");
        let cid = |b: &[u8]| Cid::of(Codec::Raw, b);

        assert!(matches!(
            db.delete_paths(std::slice::from_ref(&a)).await,
            Err(DbError::InUse)
        ));
        assert!(db.is_valid(&a).await.expect("valid"));
        assert!(db.is_valid(&b).await.expect("valid"));

        let deleted = db
            .delete_paths(std::slice::from_ref(&b))
            .await
            .expect("delete b");
        assert_eq!(deleted.deleted, BTreeSet::from([b.clone()]));
        assert_eq!(deleted.blocks, vec![(cid(b"b-root"), 6)]);
        assert!(!db.is_valid(&b).await.expect("valid"));
        assert!(db.is_valid(&a).await.expect("valid"));

        let deleted = db
            .delete_paths(std::slice::from_ref(&a))
            .await
            .expect("delete a");
        let blocks: BTreeSet<Cid> = deleted.blocks.iter().map(|(c, _)| *c).collect();
        assert_eq!(blocks, BTreeSet::from([cid(b"a-root"), cid(b"shared")]));
        assert!(db.unused_blocks().await.expect("unused").is_empty());

        // The writing connection has its checks on again: a row naming no valid path fails.
        let refused = sqlx::query("INSERT INTO Refs (referrer, reference) VALUES (12345, 67890)")
            .execute(&db.writer)
            .await;
        assert!(refused.is_err(), "foreign keys are off after a deletion");
    }
}
