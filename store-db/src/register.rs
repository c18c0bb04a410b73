//! Registering paths: one transaction on a connection of its own, run on the calling thread.
//!
//! Through sqlx each statement of a transaction is a round trip to sqlx's database thread (two
//! thread wake-ups); registering one `.drv` took about ten. Here the whole transaction is one
//! blocking call on a rusqlite connection (the same SQLite library sqlx links), so an async
//! caller pays one hand-off to a blocking thread for all of it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use pkgchain_store_model::store_path::StorePath;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use tracing::{debug, warn};

use crate::{DbError, NewPath, PathInfo, join_sigs};

/// The registering connection.
pub(crate) struct Registrar {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar").finish_non_exhaustive()
    }
}

impl Registrar {
    /// Opens the connection on a database that exists and has its schema.
    pub(crate) fn open(file: &Path) -> Result<Registrar, DbError> {
        let conn = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "cache_size", crate::WRITER_CACHE_KIB)?;
        Ok(Registrar {
            conn: Mutex::new(conn),
        })
    }

    /// Whether `path` is valid, asked on this connection. Blocking.
    pub(crate) fn is_valid(&self, path: &StorePath) -> Result<bool, DbError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Ok(conn
            .prepare_cached("SELECT 1 FROM ValidPaths WHERE path = ?")?
            .exists([path.base_name()])?)
    }

    /// Registers `paths` in one transaction, waiting while another process holds the write
    /// lock. Returns the metadata of the paths that were not valid before. Blocking.
    pub(crate) fn register(
        &self,
        paths: &[NewPath],
        track_unsynced: bool,
    ) -> Result<Vec<PathInfo>, DbError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut attempt = 0u32;
        loop {
            match try_register(&mut conn, paths, track_unsynced) {
                Err(DbError::Sqlite(e))
                    if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                        || e.sqlite_error_code() == Some(ErrorCode::DatabaseLocked) =>
                {
                    attempt += 1;
                    if attempt.is_multiple_of(10) {
                        warn!(attempt, "metadata database still locked by another process");
                    }
                    std::thread::sleep(Duration::from_millis(10 * u64::from(attempt.min(20))));
                }
                other => return other,
            }
        }
    }
}

fn try_register(
    conn: &mut Connection,
    paths: &[NewPath],
    track_unsynced: bool,
) -> Result<Vec<PathInfo>, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut ids: HashMap<&StorePath, i64> = HashMap::new();
    let mut fresh: Vec<PathInfo> = Vec::new();
    for p in paths {
        let i = &p.info;
        // Signatures already there are kept: merged as sets, never duplicated.
        let mut sigs = i.sigs.clone();
        let old: Option<String> = tx
            .prepare_cached("SELECT sigs FROM ValidPaths WHERE path = ?")?
            .query_row([i.path.base_name()], |row| row.get(0))
            .optional()?;
        let existed = old.is_some();
        match old {
            Some(old) => sigs.extend(old.split_whitespace().map(str::to_owned)),
            None => fresh.push(i.clone()),
        }
        let id: i64 = tx
            .prepare_cached(
                "INSERT INTO ValidPaths
                   (path, nar_hash, nar_size, root_cid, deriver, registration_time, ultimate, sigs, ca)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT(path) DO UPDATE SET
                   nar_hash = excluded.nar_hash, nar_size = excluded.nar_size,
                   root_cid = excluded.root_cid,
                   deriver = COALESCE(excluded.deriver, deriver),
                   ultimate = excluded.ultimate OR ultimate,
                   sigs = excluded.sigs,
                   ca = COALESCE(excluded.ca, ca)
                 RETURNING id",
            )?
            .query_row(
                rusqlite::params![
                    i.path.base_name(),
                    i.nar_hash.to_nix32_prefixed(),
                    i.nar_size as i64,
                    i.root.to_bytes(),
                    i.deriver.as_ref().map(StorePath::base_name),
                    i.registration_time,
                    i.ultimate,
                    join_sigs(&sigs),
                    i.ca.as_deref(),
                ],
                |row| row.get(0),
            )?;
        ids.insert(&i.path, id);
        if existed {
            // A re-registration replaces the block list, references and outputs.
            for statement in [
                "DELETE FROM PathBlocks WHERE path = ?",
                "DELETE FROM Refs WHERE referrer = ?",
                "DELETE FROM DerivationOutputs WHERE drv = ?",
            ] {
                tx.prepare_cached(statement)?.execute([id])?;
            }
        }
        let mut unique: Vec<_> = p.blocks.iter().collect();
        unique.sort_unstable_by_key(|(c, _)| *c);
        unique.dedup_by_key(|(c, _)| *c);
        {
            let mut block = tx.prepare_cached(
                "INSERT INTO Blocks (cid, size) VALUES (?, ?) ON CONFLICT(cid) DO NOTHING",
            )?;
            let mut uses = tx.prepare_cached(
                "INSERT OR IGNORE INTO PathBlocks (path, block)
                 SELECT ?, id FROM Blocks WHERE cid = ?",
            )?;
            for (cid, size) in unique {
                let cid = cid.to_bytes();
                block.execute(rusqlite::params![cid, *size as i64])?;
                uses.execute(rusqlite::params![id, cid])?;
            }
        }
        if track_unsynced {
            tx.prepare_cached("INSERT INTO UnsyncedPaths (path) VALUES (?)")?
                .execute([id])?;
        }
        let mut output = tx.prepare_cached(
            "INSERT OR REPLACE INTO DerivationOutputs (drv, output, path) VALUES (?, ?, ?)",
        )?;
        for (name, out_path) in &p.derivation_outputs {
            output.execute(rusqlite::params![id, name, out_path.base_name()])?;
        }
    }
    {
        let mut lookup = tx.prepare_cached("SELECT id FROM ValidPaths WHERE path = ?")?;
        let mut insert =
            tx.prepare_cached("INSERT OR IGNORE INTO Refs (referrer, reference) VALUES (?, ?)")?;
        for p in paths {
            let referrer = ids[&p.info.path];
            for r in &p.info.references {
                let reference = match ids.get(r) {
                    Some(&id) => id,
                    None => lookup
                        .query_row([r.base_name()], |row| row.get::<_, i64>(0))
                        .optional()?
                        .ok_or_else(|| DbError::MissingReference {
                            path: p.info.path.to_string(),
                            reference: r.to_string(),
                        })?,
                };
                insert.execute([referrer, reference])?;
            }
        }
    }
    tx.commit()?;
    debug!(count = paths.len(), "registered paths");
    Ok(fresh)
}
