//! Paths registered on blocks that may not be on disk yet.
//!
//! With deferred durability (see `pkgchain-blockstore`), a path becomes valid as soon as its
//! blocks are linked, before they are synced. Each such registration also writes a row in
//! `UnsyncedPaths`, in the same transaction, numbered in order. After a sync the rows up to
//! the last one seen before it are deleted ([`StoreDb::forget_unsynced`]); after a crash the
//! rows left say which paths to check, and [`StoreDb::remove_with_referrers`] unregisters the
//! damaged ones.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use pkgchain_store_model::store_path::StorePath;
use sqlx::Row;

use crate::{DbError, StoreDb, retry_busy, stored_path};

impl StoreDb {
    /// Records every registration from now on as unsynced (or stops doing so).
    pub fn set_tracking_unsynced(&self, on: bool) {
        self.track_unsynced.store(on, Ordering::Relaxed);
    }

    pub(crate) fn tracking_unsynced(&self) -> bool {
        self.track_unsynced.load(Ordering::Relaxed)
    }

    /// The newest unsynced registration, to pass to [`StoreDb::forget_unsynced`] once what was
    /// written before now is on disk.
    pub async fn unsynced_mark(&self) -> Result<Option<i64>, DbError> {
        let row = sqlx::query("SELECT max(seq) FROM UnsyncedPaths")
            .fetch_one(&self.writer)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Forgets unsynced registrations up to `mark` (from [`StoreDb::unsynced_mark`]; `None`,
    /// when there were none, forgets nothing): their blocks are on disk.
    pub async fn forget_unsynced(&self, mark: Option<i64>) -> Result<(), DbError> {
        let Some(mark) = mark else {
            return Ok(());
        };
        retry_busy(|| async {
            sqlx::query("DELETE FROM UnsyncedPaths WHERE seq <= ?")
                .bind(mark)
                .execute(&self.writer)
                .await?;
            Ok(())
        })
        .await
    }

    /// The paths registered since the last sync.
    pub async fn unsynced_paths(&self) -> Result<Vec<StorePath>, DbError> {
        sqlx::query(
            "SELECT path FROM ValidPaths WHERE id IN (SELECT path FROM UnsyncedPaths) ORDER BY id",
        )
        .fetch_all(&self.writer)
        .await?
        .into_iter()
        .map(|row| {
            let name: String = row.try_get(0)?;
            stored_path("path", "UnsyncedPaths", &name)
        })
        .collect()
    }

    /// Unregisters `paths` and every valid path that refers to them, directly or not, in one
    /// transaction (what a crash damaged, and what depends on it). Returns what was removed.
    pub async fn remove_with_referrers(
        &self,
        paths: &[StorePath],
    ) -> Result<BTreeSet<StorePath>, DbError> {
        if paths.is_empty() {
            return Ok(BTreeSet::new());
        }
        let removed = retry_busy(|| self.try_remove_with_referrers(paths)).await?;
        self.infos
            .invalidate(removed.iter().map(StorePath::base_name));
        Ok(removed)
    }

    async fn try_remove_with_referrers(
        &self,
        paths: &[StorePath],
    ) -> Result<BTreeSet<StorePath>, DbError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS Doomed (id INTEGER PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM Doomed").execute(&mut *tx).await?;
        for p in paths {
            sqlx::query("INSERT OR IGNORE INTO Doomed SELECT id FROM ValidPaths WHERE path = ?")
                .bind(p.base_name())
                .execute(&mut *tx)
                .await?;
        }
        // Referrers, to a fixed point (SQLite evaluates the recursion, not our stack).
        sqlx::query(
            "WITH RECURSIVE closure(id) AS (
                 SELECT id FROM Doomed
                 UNION SELECT r.referrer FROM Refs r JOIN closure c ON r.reference = c.id)
             INSERT OR IGNORE INTO Doomed SELECT id FROM closure",
        )
        .execute(&mut *tx)
        .await?;
        let removed = crate::collect::doomed_paths(&mut tx).await?;
        // The closure holds every referrer: nothing outside it can refer into it.
        if crate::collect::delete_doomed(&mut tx).await? != crate::collect::Doomed::Deleted {
            return Err(DbError::InUse);
        }
        tx.commit().await?;
        Ok(removed)
    }
}
