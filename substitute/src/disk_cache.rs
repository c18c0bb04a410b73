//! Narinfo lookups kept on disk, as Nix keeps them in its `binary-cache-v*.sqlite`: what each
//! cache said about each path (its narinfo, or that it has no such path) and when, so that a
//! restarted daemon does not ask again within `narinfo-cache-positive-ttl` and
//! `narinfo-cache-negative-ttl`.
//!
//! The record is only a hint. A narinfo read back is parsed and checked against the path again,
//! and its signatures are checked by whoever uses it, as a fresh one would be; a record that
//! does not parse is ignored. The file is SQLite (WAL): a write is all there or not at all. A
//! record that cannot be read or written (disk full, a damaged file) is logged and the caches
//! are asked instead: substitution never fails because of this file. As Nix purges its disk
//! cache, lookups older than the daemon's TTLs are deleted when the record is first used and
//! every [`PURGE_EVERY`] after, so the file does not grow without end. Lookups are written by
//! a task of their own, many to a transaction, so that no lookup waits for the disk; a
//! lookup made while [`MAX_PENDING_WRITES`] are waiting is not recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::OnceCell;
use tracing::warn;

/// The largest narinfo kept (a fetched one is at most 4 MiB).
const MAX_RECORDED_NARINFO: usize = 4 * 1024 * 1024;

/// Lookups waiting to be written, at most.
pub const MAX_PENDING_WRITES: usize = 4096;

/// Paths read in one query, at most.
const READS_PER_QUERY: usize = 500;

/// Lookups written in one transaction, at most.
const WRITES_PER_TRANSACTION: usize = 512;

/// How often lookups past their TTL are deleted, while the daemon runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// What the writer task is given.
#[derive(Debug)]
enum Queued {
    /// A lookup to record: the cache, the hash part, the narinfo (none: absent), when
    /// (seconds since the epoch).
    Write(String, String, Option<String>, i64),
    /// Tell this one once everything queued before is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The table, made on first use.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS lookups (
    cache TEXT NOT NULL,
    hash_part TEXT NOT NULL,
    looked_up INTEGER NOT NULL,
    narinfo TEXT,
    PRIMARY KEY (cache, hash_part)
) WITHOUT ROWID";

/// What a cache said about a path, and how long ago.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedLookup {
    /// The narinfo's text, or `None`: the cache has no such path.
    pub narinfo: Option<String>,
    /// How long ago the cache was asked.
    pub age: Duration,
}

/// The lookups on disk, shared by every set of substituters of the daemon.
#[derive(Debug)]
pub struct NarinfoDiskCache {
    db: Arc<Database>,
    /// The writer task's queue, made on the first write (the task ends when this is dropped).
    writes: std::sync::OnceLock<tokio::sync::mpsc::Sender<Queued>>,
}

/// The SQLite file.
#[derive(Debug)]
struct Database {
    file: PathBuf,
    pool: SqlitePool,
    /// Past these ages (narinfo found, path absent) a lookup is deleted.
    keep: (Duration, Duration),
    schema: OnceCell<()>,
    /// A failure was logged already (one warning, not one per path).
    warned: AtomicBool,
}

impl NarinfoDiskCache {
    /// The record in `file` (made, with its directory, when first used); lookups older than
    /// `positive_ttl` (a narinfo found) or `negative_ttl` (the path absent) are purged.
    pub fn new(file: &Path, positive_ttl: Duration, negative_ttl: Duration) -> NarinfoDiskCache {
        let options = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(options);
        let db = Database {
            file: file.to_owned(),
            pool,
            keep: (positive_ttl, negative_ttl),
            schema: OnceCell::new(),
            warned: AtomicBool::new(false),
        };
        NarinfoDiskCache {
            db: Arc::new(db),
            writes: std::sync::OnceLock::new(),
        }
    }

    /// What `cache` said about each path of `hash_parts` when last asked, for those on
    /// record (a few queries, whatever the number of paths).
    pub async fn get_many(
        &self,
        cache: &str,
        hash_parts: &[&str],
    ) -> Vec<(String, RecordedLookup)> {
        let mut found = Vec::new();
        for chunk in hash_parts.chunks(READS_PER_QUERY) {
            match self.db.get_many(cache, chunk).await {
                Ok(rows) => found.extend(rows),
                Err(e) => {
                    self.db.failed("read", &e);
                    break;
                }
            }
        }
        found
    }

    /// Records what `cache` said about the path of `hash_part` now, without waiting: the
    /// writer task (started on the first call, which must be made on a tokio runtime) writes
    /// it soon after.
    pub fn put(&self, cache: &str, hash_part: &str, narinfo: Option<String>) {
        self.put_looked_up_at(cache, hash_part, narinfo, SystemTime::now());
    }

    /// [`NarinfoDiskCache::put`] of a lookup made at `when`.
    pub fn put_looked_up_at(
        &self,
        cache: &str,
        hash_part: &str,
        narinfo: Option<String>,
        when: SystemTime,
    ) {
        if narinfo
            .as_ref()
            .is_some_and(|n| n.len() > MAX_RECORDED_NARINFO)
        {
            return;
        }
        let write = Queued::Write(
            cache.to_owned(),
            hash_part.to_owned(),
            narinfo,
            epoch_seconds(when),
        );
        // A full queue drops the record: it is only a hint.
        let _ = self.queue().try_send(write);
    }

    /// Waits until every lookup recorded before is written (or failed to be).
    pub async fn flush(&self) {
        let (tell, told) = tokio::sync::oneshot::channel();
        if self.queue().send(Queued::Flush(tell)).await.is_ok() {
            let _ = told.await;
        }
    }

    /// The writer task's queue (the task is started on first use).
    fn queue(&self) -> &tokio::sync::mpsc::Sender<Queued> {
        self.writes.get_or_init(|| {
            let (send, receive) = tokio::sync::mpsc::channel(MAX_PENDING_WRITES);
            tokio::spawn(self.db.clone().write_queued(receive));
            send
        })
    }
}

impl Database {
    /// The writer task: many queued lookups to a transaction, until the queue is gone.
    async fn write_queued(self: Arc<Self>, mut receive: tokio::sync::mpsc::Receiver<Queued>) {
        let mut batch = Vec::with_capacity(WRITES_PER_TRANSACTION);
        let mut purged = std::time::Instant::now();
        while receive.recv_many(&mut batch, WRITES_PER_TRANSACTION).await > 0 {
            if let Err(e) = self.write_batch(&batch).await {
                self.failed("write", &e);
            }
            if purged.elapsed() >= PURGE_EVERY {
                purged = std::time::Instant::now();
                if let Err(e) = self.purge().await {
                    self.failed("purge", &e);
                }
            }
            for queued in batch.drain(..) {
                if let Queued::Flush(tell) = queued {
                    let _ = tell.send(());
                }
            }
        }
    }

    /// Logs the first failure (the caches are asked instead).
    fn failed(&self, what: &str, e: &sqlx::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            warn!(file = %self.file.display(), error = %e, "cannot {what} the record of narinfo lookups; the caches are asked instead");
        }
    }

    async fn ready(&self) -> Result<(), sqlx::Error> {
        self.schema
            .get_or_try_init(|| async {
                if let Some(dir) = self.file.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                sqlx::query(SCHEMA).execute(&self.pool).await?;
                self.purge().await
            })
            .await
            .map(|_| ())
    }

    /// Deletes the lookups past their TTL.
    async fn purge(&self) -> Result<(), sqlx::Error> {
        let now = epoch_seconds(SystemTime::now());
        let before =
            |ttl: Duration| now.saturating_sub(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        sqlx::query(
            "DELETE FROM lookups WHERE (narinfo IS NOT NULL AND looked_up < ?) OR (narinfo IS NULL AND looked_up < ?)",
        )
        .bind(before(self.keep.0))
        .bind(before(self.keep.1))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_many(
        &self,
        cache: &str,
        hash_parts: &[&str],
    ) -> Result<Vec<(String, RecordedLookup)>, sqlx::Error> {
        if hash_parts.is_empty() {
            return Ok(Vec::new());
        }
        self.ready().await?;
        let marks = vec!["?"; hash_parts.len()].join(", ");
        let sql = format!(
            "SELECT hash_part, looked_up, narinfo FROM lookups \
             WHERE cache = ? AND (narinfo IS NULL OR length(CAST(narinfo AS BLOB)) <= ?) \
             AND hash_part IN ({marks})"
        );
        // Only placeholders are made here; every value is bound. A row longer than any
        // narinfo this record keeps (a damaged file) is not read: it is a miss.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cache)
            .bind(MAX_RECORDED_NARINFO as i64);
        for hash_part in hash_parts {
            query = query.bind(*hash_part);
        }
        let now = epoch_seconds(SystemTime::now());
        let mut found = Vec::new();
        for row in query.fetch_all(&self.pool).await? {
            let hash_part: String = row.try_get(0)?;
            let looked_up: i64 = row.try_get(1)?;
            let narinfo: Option<String> = row.try_get(2)?;
            // A time in the future (the clock was set back) counts as now.
            let age = now.saturating_sub(looked_up).max(0) as u64;
            let age = Duration::from_secs(age);
            found.push((hash_part, RecordedLookup { narinfo, age }));
        }
        Ok(found)
    }

    async fn write_batch(&self, batch: &[Queued]) -> Result<(), sqlx::Error> {
        if !batch.iter().any(|q| matches!(q, Queued::Write(..))) {
            return Ok(());
        }
        self.ready().await?;
        let mut transaction = self.pool.begin().await?;
        for queued in batch {
            let Queued::Write(cache, hash_part, narinfo, when) = queued else {
                continue;
            };
            sqlx::query(
                "INSERT OR REPLACE INTO lookups (cache, hash_part, looked_up, narinfo) VALUES (?, ?, ?, ?)",
            )
            .bind(cache)
            .bind(hash_part)
            .bind(when)
            .bind(narinfo)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await
    }
}

/// Seconds from the Unix epoch to `when` (0 before it).
fn epoch_seconds(when: SystemTime) -> i64 {
    when.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    async fn get(
        record: &NarinfoDiskCache,
        cache: &str,
        hash_part: &str,
    ) -> Option<RecordedLookup> {
        let mut found = record.get_many(cache, &[hash_part]).await;
        assert!(found.len() <= 1, "{found:?}");
        found.pop().map(|(h, r)| {
            assert_eq!(h, hash_part);
            r
        })
    }

    /// Which of `hash_parts` `cache` has on record, sorted.
    async fn on_record(record: &NarinfoDiskCache, cache: &str, hash_parts: &[&str]) -> Vec<String> {
        let mut found: Vec<String> = record
            .get_many(cache, hash_parts)
            .await
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        found.sort();
        found
    }

    /// Lookups survive the record being opened again (a daemon restart); a later lookup
    /// replaces an earlier one; a damaged file makes every lookup a miss, not an error.
    #[tokio::test]
    async fn lookups_survive_a_reopen_and_a_damaged_file_is_a_miss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("state/narinfo-cache.sqlite");
        let record = NarinfoDiskCache::new(&file, HOUR, HOUR);
        assert_eq!(get(&record, "http://c", "abc").await, None);
        record.put("http://c", "abc", Some("StorePath: x\n".to_owned()));
        record.put("http://c", "def", None);
        record.flush().await;
        drop(record);

        let record = NarinfoDiskCache::new(&file, HOUR, HOUR);
        let found = get(&record, "http://c", "abc").await.expect("on record");
        assert_eq!(found.narinfo.as_deref(), Some("StorePath: x\n"));
        assert!(found.age < Duration::from_secs(60), "{found:?}");
        let absent = get(&record, "http://c", "def").await.expect("on record");
        assert_eq!(absent.narinfo, None);
        assert_eq!(get(&record, "http://other", "abc").await, None);
        record.put("http://c", "abc", None);
        record.flush().await;
        let replaced = get(&record, "http://c", "abc").await.expect("on record");
        assert_eq!(replaced.narinfo, None);

        // Many paths: read back in a few queries, all of them.
        let many: Vec<String> = (0..1200).map(|n| format!("h{n:04}")).collect();
        for h in &many {
            record.put("http://many", h, None);
        }
        record.flush().await;
        let asked: Vec<&str> = many.iter().map(String::as_str).chain(["absent"]).collect();
        assert_eq!(on_record(&record, "http://many", &asked).await, many);

        // A row longer than any narinfo kept (written around this code) is a miss.
        let huge = "x".repeat(MAX_RECORDED_NARINFO + 1);
        sqlx::query("INSERT OR REPLACE INTO lookups VALUES ('http://c', 'huge', 0, ?)")
            .bind(&huge)
            .execute(&record.db.pool)
            .await
            .expect("insert");
        assert_eq!(get(&record, "http://c", "huge").await, None);
        drop(record);

        let damaged = dir.path().join("damaged.sqlite");
        std::fs::write(&damaged, vec![0x5a; 8192]).expect("write");
        let record = NarinfoDiskCache::new(&damaged, HOUR, HOUR);
        record.put("http://c", "abc", Some("x".to_owned()));
        record.flush().await;
        assert_eq!(get(&record, "http://c", "abc").await, None);
    }

    /// Lookups past their TTL are deleted when the record is opened again (as Nix purges): a
    /// narinfo older than the positive TTL and an absence older than the negative one go, the
    /// younger ones stay.
    #[tokio::test]
    async fn lookups_past_their_ttl_are_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("narinfo-cache.sqlite");
        let (positive, negative) = (Duration::from_secs(3 * 3600), Duration::from_secs(3600));
        let record = NarinfoDiskCache::new(&file, positive, negative);
        let ago = |hours: u64| SystemTime::now() - Duration::from_secs(hours * 3600);
        let text = || Some("StorePath: x\n".to_owned());
        record.put_looked_up_at("c", "found-old", text(), ago(4));
        record.put_looked_up_at("c", "found-young", text(), ago(2));
        record.put_looked_up_at("c", "absent-old", None, ago(2));
        record.put_looked_up_at("c", "absent-young", None, SystemTime::now());
        record.flush().await;
        let all = ["found-old", "found-young", "absent-old", "absent-young"];
        assert_eq!(record.get_many("c", &all).await.len(), 4);
        drop(record);

        let record = NarinfoDiskCache::new(&file, positive, negative);
        assert_eq!(
            on_record(&record, "c", &all).await,
            ["absent-young", "found-young"]
        );
    }
}
