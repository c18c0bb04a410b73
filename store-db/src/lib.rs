//! The metadata database of package chain's store.
//!
//! SQLite through sqlx in WAL mode, schema in `migrations/`. It records which store paths are
//! valid (NAR hash and size, the root CID of their DAG, deriver, signatures, content address),
//! their references, derivation outputs, realisations, and which blocks every path uses, so the
//! collector can tell live blocks from dead ones without reading any block.
//!
//! Concurrency: readers use a pool of connections and never wait for the writers (WAL).
//! Registration runs on a rusqlite connection of its own, one blocking call per transaction
//! ([`StoreDb::register_paths`]); other writes go through one sqlx connection. Both run `BEGIN IMMEDIATE`
//! transactions; when another connection or process holds the write lock, the transaction is
//! retried until it gets it, so callers never see "database is busy".
//!
//! Invariant kept here: a path is registered together with all of its references being valid
//! (or registered in the same transaction), and a registered path's row, references, block
//! list and (for a `.drv`) derivation outputs appear in one commit or not at all.
//!
//! Besides registration ([`StoreDb::register_paths`]) the database answers the queries of the
//! worker protocol ([`query`]) and keeps realisations of derivation outputs ([`realisation`]).

pub mod collect;
mod graph;
mod info_cache;
pub mod query;
pub mod realisation;
mod register;
pub mod unsynced;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pkgchain_dag::Cid;
use pkgchain_store_model::hash::{Hash, HashAlgo};
use pkgchain_store_model::store_path::StorePath;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use thiserror::Error;
use tracing::warn;

/// Why a database operation failed.
#[derive(Debug, Error)]
pub enum DbError {
    /// SQLite or sqlx failed.
    #[error("metadata database: {0}")]
    Sql(#[from] sqlx::Error),
    /// SQLite failed on the registering connection.
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A blocking database task did not finish.
    #[error("metadata database task: {0}")]
    Task(String),
    /// Applying the schema failed.
    #[error("metadata database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not parse: the database was edited or damaged.
    #[error("metadata database holds an invalid {what} for {path}: {detail}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// Which path.
        path: String,
        /// Parse error.
        detail: String,
    },
    /// Registering a path whose reference is not valid.
    #[error("cannot register {path}: its reference {reference} is not valid")]
    MissingReference {
        /// The path being registered.
        path: String,
        /// The reference that is not valid.
        reference: String,
    },
    /// A path the operation needs is not valid (Nix's `InvalidPath`).
    #[error("path '{0}' is not valid")]
    InvalidPath(String),
    /// A path to delete is still referred to by a valid path outside those being deleted.
    #[error("a path to delete is still in use (a valid path refers to it)")]
    InUse,
    /// A signature that cannot be stored in the space-separated `sigs` column.
    #[error("signature '{0}' is empty or contains white space")]
    BadSignature(String),
    /// A different realisation of the same derivation output is already registered.
    #[error(
        "Trying to register a realisation of '{id}', but we already have another one locally.\nLocal:  {local}\nRemote: {remote}"
    )]
    RealisationConflict {
        /// The derivation output.
        id: String,
        /// The output path registered here.
        local: String,
        /// The output path offered.
        remote: String,
    },
    /// A realisation names a dependency that is not registered.
    #[error(
        "unable to register the derivation '{id}' as it depends on the non existent '{dependency}'"
    )]
    RealisationDependencyMissing {
        /// The derivation output being registered.
        id: String,
        /// The dependency.
        dependency: String,
    },
    /// A realisation names a dependency whose registered output path differs.
    #[error(
        "unable to register the derivation '{id}' as it depends on a realisation of '{dependency}' that doesn't match what we have locally"
    )]
    RealisationDependencyMismatch {
        /// The derivation output being registered.
        id: String,
        /// The dependency.
        dependency: String,
    },
}

/// What the store knows about one valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The path.
    pub path: StorePath,
    /// SHA-256 of its NAR serialisation.
    pub nar_hash: Hash,
    /// Size of the NAR serialisation.
    pub nar_size: u64,
    /// Root of the DAG holding its contents.
    pub root: Cid,
    /// The derivation that produced it, if known.
    pub deriver: Option<StorePath>,
    /// When it became valid (Unix seconds).
    pub registration_time: i64,
    /// Whether it was built here.
    pub ultimate: bool,
    /// Signatures, `keyname:base64`.
    pub sigs: BTreeSet<String>,
    /// Content address, if content-addressed.
    pub ca: Option<String>,
    /// Store paths it refers to (possibly itself).
    pub references: BTreeSet<StorePath>,
}

/// A path to register together with the blocks its DAG consists of.
#[derive(Debug, Clone)]
pub struct NewPath {
    /// The path's metadata.
    pub info: PathInfo,
    /// Every block of its DAG with its size; duplicates are allowed.
    pub blocks: Vec<(Cid, u64)>,
    /// For a `.drv`: the statically known output paths by output name (Nix's
    /// `DerivationOutputs` rows; floating content-addressed outputs have none). Empty otherwise.
    pub derivation_outputs: BTreeMap<String, StorePath>,
}

/// Totals over the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Valid paths.
    pub paths: u64,
    /// Sum of their NAR sizes.
    pub nar_bytes: u64,
    /// Distinct blocks used by valid paths.
    pub blocks: u64,
    /// Sum of those blocks' sizes: the bytes the block store needs.
    pub block_bytes: u64,
    /// Block uses summed over paths (a block used by 3 paths counts 3 times).
    pub block_uses: u64,
}

/// The database; cheap to clone (pools are shared).
#[derive(Clone, Debug)]
pub struct StoreDb {
    readers: SqlitePool,
    writer: SqlitePool,
    infos: Arc<info_cache::InfoCache>,
    /// The connection that registers paths.
    registrar: Arc<register::Registrar>,
    /// Whether registrations are recorded in `UnsyncedPaths` (see [`unsynced`]).
    track_unsynced: Arc<std::sync::atomic::AtomicBool>,
    /// The database file (bulk reads open a connection of their own on it).
    file: Arc<std::path::Path>,
    /// The connection [`StoreDb::paths_marker`] asks (SQLite's `data_version` is per
    /// connection), opened on first use.
    marker_conn: Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
}

fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), including extended codes.
            let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
            matches!(code & 0xff, 5 | 6)
        }
        _ => false,
    }
}

/// SQLite's page cache of the writing connection, in KiB (negative: a size, not pages).
pub(crate) const WRITER_CACHE_KIB: &str = "-2000";
/// Reading connections at most. Most reads are answered from the metadata cache; each
/// connection costs a thread and up to [`READER_CACHE_KIB`] of page cache (8 made an idle
/// daemon 12 MiB larger after one `nix-instantiate`).
const READERS: u32 = 4;
/// The page cache of each of the [`READERS`] reading connections. Kept small: each cache grows with the
/// database up to this size and is never given back, and the kernel's page cache holds the
/// database file anyway (16 MiB each made a 60 s load of 64 clients grow the daemon by
/// 50 MiB; 1 MiB keeps it under 20 MiB).
const READER_CACHE_KIB: &str = "-1000";

impl StoreDb {
    /// Opens (creating and migrating if needed) the database at `file`.
    pub async fn open(file: &Path) -> Result<StoreDb, DbError> {
        let options = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", WRITER_CACHE_KIB);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .connect_with(options.clone())
            .await?;
        loop {
            match sqlx::migrate!("./migrations").run(&writer).await {
                Ok(()) => break,
                Err(sqlx::migrate::MigrateError::Execute(e)) if is_busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            // Given back after a minute unused (each holds its page cache and a thread).
            .idle_timeout(Duration::from_secs(60))
            .min_connections(0)
            .connect_with(
                options
                    .read_only(true)
                    .pragma("cache_size", READER_CACHE_KIB),
            )
            .await?;
        Ok(StoreDb {
            readers,
            writer,
            infos: Arc::new(info_cache::InfoCache::new()),
            registrar: Arc::new(register::Registrar::open(file)?),
            file: Arc::from(file),
            track_unsynced: Arc::default(),
            marker_conn: Arc::default(),
        })
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    /// Registers paths in one transaction; all or none become valid.
    ///
    /// Every reference must be valid already or be one of `paths`. Re-registering a valid path
    /// updates its metadata (signatures are merged) and keeps its id.
    pub async fn register_paths(&self, paths: &[NewPath]) -> Result<(), DbError> {
        let db = self.clone();
        let owned = paths.to_vec();
        on_blocking_thread(move || db.register_paths_blocking(&owned)).await
    }

    /// [`StoreDb::register_paths`] on the calling thread, which it blocks (for callers that
    /// are on a blocking thread already).
    pub fn register_paths_blocking(&self, paths: &[NewPath]) -> Result<(), DbError> {
        for p in paths {
            check_sigs(&p.info.sigs)?;
        }
        let generation = self.infos.generation();
        let result = self.registrar.register(paths, self.tracking_unsynced());
        let names = paths.iter().map(|p| p.info.path.base_name());
        // Also on failure: a commit whose answer was lost may have happened.
        let Ok(fresh) = &result else {
            self.infos.invalidate(names);
            return result.map(drop);
        };
        // A path that was not valid before is stored exactly as given: the next query (the
        // daemon answers an add with the path's metadata) need not read it back. Given twice
        // in one call, the second registration may have changed the first: not cached.
        let mut times: HashMap<&StorePath, usize> = HashMap::new();
        for p in paths {
            *times.entry(&p.info.path).or_default() += 1;
        }
        let fresh = fresh
            .iter()
            .filter(|info| times.get(&info.path) == Some(&1))
            .cloned()
            .collect();
        self.infos.replace(generation, names, fresh);
        Ok(())
    }

    /// Forgets the cached metadata of valid paths (to give memory back while idle); the next
    /// queries read the database again.
    pub fn forget_cached(&self) {
        self.infos.clear();
    }

    /// [`StoreDb::is_valid`] on the calling thread, which it blocks (for callers on a blocking
    /// thread already: no hand-off to a database thread).
    pub fn is_valid_blocking(&self, path: &StorePath) -> Result<bool, DbError> {
        if self.infos.get(path.base_name()).is_some() {
            return Ok(true);
        }
        self.registrar.is_valid(path)
    }

    /// Whether `path` is valid.
    pub async fn is_valid(&self, path: &StorePath) -> Result<bool, DbError> {
        if self.infos.get(path.base_name()).is_some() {
            return Ok(true);
        }
        Ok(sqlx::query("SELECT 1 FROM ValidPaths WHERE path = ?")
            .bind(path.base_name())
            .fetch_optional(&self.readers)
            .await?
            .is_some())
    }

    /// The root CID of a valid path given by base name (what the FUSE view looks up).
    pub async fn root_of(&self, base_name: &str) -> Result<Option<Cid>, DbError> {
        let row = sqlx::query("SELECT root_cid FROM ValidPaths WHERE path = ?")
            .bind(base_name)
            .fetch_optional(&self.readers)
            .await?;
        row.map(|r| {
            let bytes: Vec<u8> = r.try_get(0)?;
            Cid::from_bytes(&bytes).map_err(|e| DbError::Corrupt {
                what: "root CID",
                path: base_name.to_owned(),
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// Everything known about a valid path. `QueryPathInfo` is the operation clients send most:
    /// the answer comes from a cache of recently asked paths when it can, else from one query.
    pub async fn path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, DbError> {
        if let Some(info) = self.infos.get(path.base_name()) {
            return Ok(Some(PathInfo::clone(&info)));
        }
        let generation = self.infos.generation();
        let info = self.path_info_uncached(path).await?;
        if let Some(info) = &info {
            self.infos.insert(generation, Arc::new(info.clone()));
        }
        Ok(info)
    }

    /// [`StoreDb::path_info`] from the database, in one query (the references come
    /// concatenated, separated by spaces, which no store path contains).
    async fn path_info_uncached(&self, path: &StorePath) -> Result<Option<PathInfo>, DbError> {
        let Some(row) = sqlx::query(
            "SELECT id, nar_hash, nar_size, root_cid, deriver, registration_time, ultimate, sigs, ca,
                    (SELECT group_concat(v.path, ' ') FROM Refs r JOIN ValidPaths v
                       ON v.id = r.reference WHERE r.referrer = p.id)
             FROM ValidPaths p WHERE p.path = ?",
        )
        .bind(path.base_name())
        .fetch_optional(&self.readers)
        .await?
        else {
            return Ok(None);
        };
        let corrupt = |what: &'static str, detail: String| DbError::Corrupt {
            what,
            path: path.to_string(),
            detail,
        };
        let nar_hash: String = row.try_get(1)?;
        let nar_hash = Hash::parse_any(&nar_hash, Some(HashAlgo::Sha256))
            .map_err(|e| corrupt("NAR hash", e.to_string()))?;
        let root: Vec<u8> = row.try_get(3)?;
        let root = Cid::from_bytes(&root).map_err(|e| corrupt("root CID", e.to_string()))?;
        let deriver: Option<String> = row.try_get(4)?;
        let deriver = deriver
            .map(|d| StorePath::from_base_name(&d))
            .transpose()
            .map_err(|e| corrupt("deriver", e.to_string()))?;
        let sigs: String = row.try_get(7)?;
        let references: Option<String> = row.try_get(9)?;
        let references = references
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|p| !p.is_empty())
            .map(|p| parse_stored_path(p).map_err(|e| corrupt("reference", e)))
            .collect::<Result<BTreeSet<_>, DbError>>()?;
        Ok(Some(PathInfo {
            path: path.clone(),
            nar_hash,
            nar_size: row.try_get::<i64, _>(2)? as u64,
            root,
            deriver,
            registration_time: row.try_get(5)?,
            ultimate: row.try_get(6)?,
            sigs: sigs.split_whitespace().map(str::to_owned).collect(),
            ca: row.try_get(8)?,
            references,
        }))
    }

    /// All valid paths, sorted.
    pub async fn all_paths(&self) -> Result<Vec<StorePath>, DbError> {
        sqlx::query("SELECT path FROM ValidPaths ORDER BY path")
            .fetch_all(&self.readers)
            .await?
            .into_iter()
            .map(|r| {
                let p: String = r.try_get(0)?;
                parse_stored_path(&p).map_err(|e| DbError::Corrupt {
                    what: "path",
                    path: p.clone(),
                    detail: e,
                })
            })
            .collect()
    }

    /// Valid paths with their root CIDs, sorted by path.
    pub async fn all_roots(&self) -> Result<Vec<(String, Cid)>, DbError> {
        sqlx::query("SELECT path, root_cid FROM ValidPaths ORDER BY path")
            .fetch_all(&self.readers)
            .await?
            .into_iter()
            .map(|r| {
                let p: String = r.try_get(0)?;
                let c: Vec<u8> = r.try_get(1)?;
                let cid = Cid::from_bytes(&c).map_err(|e| DbError::Corrupt {
                    what: "root CID",
                    path: p.clone(),
                    detail: e.to_string(),
                })?;
                Ok((p, cid))
            })
            .collect()
    }

    /// Whether some valid path has this DAG root (for `/ipfs/store/<cid>`).
    pub async fn has_root(&self, cid: &Cid) -> Result<bool, DbError> {
        Ok(
            sqlx::query("SELECT 1 FROM ValidPaths WHERE root_cid = ? LIMIT 1")
                .bind(cid.to_bytes().as_slice())
                .fetch_optional(&self.readers)
                .await?
                .is_some(),
        )
    }

    /// The blocks a valid path uses, with sizes.
    pub async fn path_blocks(&self, path: &StorePath) -> Result<Vec<(Cid, u64)>, DbError> {
        sqlx::query(
            "SELECT b.cid, b.size FROM PathBlocks pb
               JOIN ValidPaths v ON v.id = pb.path
               JOIN Blocks b ON b.id = pb.block
             WHERE v.path = ?",
        )
        .bind(path.base_name())
        .fetch_all(&self.readers)
        .await?
        .into_iter()
        .map(|r| {
            let c: Vec<u8> = r.try_get(0)?;
            let size: i64 = r.try_get(1)?;
            let cid = Cid::from_bytes(&c).map_err(|e| DbError::Corrupt {
                what: "block CID",
                path: path.to_string(),
                detail: e.to_string(),
            })?;
            Ok((cid, size as u64))
        })
        .collect()
    }

    /// A value that changes whenever the database does (paths registered or removed, by this
    /// process or another), for views that cache the list of store paths: SQLite's
    /// `data_version` on a connection of its own. Costs nothing on any store size (a count of
    /// the paths took 10 ms per 100,000, and views ask every second).
    pub async fn paths_marker(&self) -> Result<i64, DbError> {
        let file = self.file.clone();
        let conn = self.marker_conn.clone();
        on_blocking_thread(move || {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            let open = match conn.take() {
                Some(open) => open,
                None => open_reader(&file)?,
            };
            let version: i64 = open.query_row("PRAGMA data_version", [], |row| row.get(0))?;
            *conn = Some(open);
            Ok(version)
        })
        .await
    }

    /// Totals over the store.
    pub async fn stats(&self) -> Result<Stats, DbError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM ValidPaths),
                    (SELECT COALESCE(SUM(nar_size), 0) FROM ValidPaths),
                    (SELECT COUNT(*) FROM Blocks b WHERE EXISTS
                        (SELECT 1 FROM PathBlocks pb WHERE pb.block = b.id)),
                    (SELECT COALESCE(SUM(size), 0) FROM Blocks b WHERE EXISTS
                        (SELECT 1 FROM PathBlocks pb WHERE pb.block = b.id)),
                    (SELECT COUNT(*) FROM PathBlocks)",
        )
        .fetch_one(&self.readers)
        .await?;
        let get = |i: usize| -> Result<u64, DbError> { Ok(row.try_get::<i64, _>(i)? as u64) };
        Ok(Stats {
            paths: get(0)?,
            nar_bytes: get(1)?,
            blocks: get(2)?,
            block_bytes: get(3)?,
            block_uses: get(4)?,
        })
    }
}

fn parse_stored_path(s: &str) -> Result<StorePath, String> {
    StorePath::from_base_name(s).map_err(|e| e.to_string())
}

/// Parses a stored base name, naming `what` and `owner` if it is damaged.
pub(crate) fn stored_path(what: &'static str, owner: &str, s: &str) -> Result<StorePath, DbError> {
    parse_stored_path(s).map_err(|detail| DbError::Corrupt {
        what,
        path: owner.to_owned(),
        detail,
    })
}

/// Runs blocking database work (rusqlite) off the async threads.
pub(crate) async fn on_blocking_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, DbError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
}

/// A read-only rusqlite connection on the database file, for bulk reads of its own.
pub(crate) fn open_reader(file: &std::path::Path) -> Result<rusqlite::Connection, DbError> {
    let conn = rusqlite::Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// Runs a write transaction, retrying while another process holds the write lock.
pub(crate) async fn retry_busy<T, F, Fut>(mut attempt_once: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbError>>,
{
    let mut attempt = 0u32;
    loop {
        match attempt_once().await {
            Err(DbError::Sql(e)) if is_busy(&e) => {
                attempt += 1;
                if attempt.is_multiple_of(100) {
                    warn!(attempt, "metadata database still locked by another process");
                }
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt.min(20)))).await;
            }
            other => return other,
        }
    }
}

/// Signatures go into a space-separated column: each must be one non-empty word.
pub(crate) fn check_sigs<'a>(sigs: impl IntoIterator<Item = &'a String>) -> Result<(), DbError> {
    for sig in sigs {
        if sig.is_empty() || sig.contains(char::is_whitespace) {
            return Err(DbError::BadSignature(sig.clone()));
        }
    }
    Ok(())
}

/// The column form of a signature set.
pub(crate) fn join_sigs(sigs: &BTreeSet<String>) -> String {
    sigs.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkgchain_dag::Codec;

    /// A database in a temporary directory (kept while the directory is).
    pub(crate) async fn scratch_db() -> (tempfile::TempDir, StoreDb) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = StoreDb::open(&dir.path().join("db.sqlite"))
            .await
            .expect("open");
        (dir, db)
    }

    pub(crate) fn sp(name: &str, n: u8) -> StorePath {
        StorePath::from_parts(&[n; 20], name).expect("store path")
    }

    pub(crate) fn new_path(path: StorePath, refs: &[&StorePath], blocks: &[&[u8]]) -> NewPath {
        let blocks: Vec<(Cid, u64)> = blocks
            .iter()
            .map(|b| (Cid::of(Codec::Raw, b), b.len() as u64))
            .collect();
        NewPath {
            info: PathInfo {
                nar_hash: Hash::digest(HashAlgo::Sha256, path.base_name().as_bytes()),
                nar_size: 1000,
                root: blocks[0].0,
                deriver: None,
                registration_time: 1_700_000_000,
                ultimate: true,
                sigs: BTreeSet::from(["k:sig".to_owned()]),
                ca: None,
                references: refs.iter().map(|r| (*r).clone()).collect(),
                path,
            },
            blocks,
            derivation_outputs: BTreeMap::new(),
        }
    }

    /// The cache of path metadata never answers with a row this process has since changed,
    /// and a second handle on the same file (another process) sees the database itself.
    #[tokio::test]
    async fn cached_metadata_follows_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("db.sqlite");
        let db = StoreDb::open(&file).await.expect("open");
        let a = sp("a", 1);
        db.register_paths(&[new_path(a.clone(), &[], &[b"x"])])
            .await
            .expect("register");
        let first = db.path_info(&a).await.expect("query").expect("valid");
        // Cached at registration, and exactly what the database holds.
        assert_eq!(
            db.path_info_uncached(&a).await.expect("query"),
            Some(first.clone())
        );
        assert_eq!(db.path_info(&a).await.expect("query"), Some(first.clone()));
        assert!(
            db.add_signatures(&a, &BTreeSet::from(["k2:sig2".to_owned()]))
                .await
                .expect("sign")
        );
        let signed = db.path_info(&a).await.expect("query").expect("valid");
        assert_eq!(
            signed.sigs,
            BTreeSet::from(["k:sig".to_owned(), "k2:sig2".to_owned()])
        );
        let mut again = new_path(a.clone(), &[], &[b"w"]);
        again.info.nar_size = 77;
        db.register_paths(&[again]).await.expect("re-register");
        let updated = db.path_info(&a).await.expect("query").expect("valid");
        assert_eq!(updated.nar_size, 77);
        assert_eq!(updated.root, Cid::of(Codec::Raw, b"w"));
        // A path registered by another handle is seen at once (invalid paths are not cached).
        let b = sp("b", 2);
        assert!(!db.is_valid(&b).await.expect("valid"));
        let other = StoreDb::open(&file).await.expect("open again");
        other
            .register_paths(&[new_path(b.clone(), &[], &[b"y"])])
            .await
            .expect("register elsewhere");
        assert!(db.is_valid(&b).await.expect("valid"));
        db.forget_cached();
        assert_eq!(db.path_info(&a).await.expect("query"), Some(updated));
    }

    /// Registrations while tracking are listed as unsynced until forgotten; removing a
    /// damaged path takes its referrers along and leaves the rest.
    #[tokio::test]
    async fn unsynced_registrations_and_removal_with_referrers() {
        let (_dir, db) = scratch_db().await;
        let (a, b, c, d) = (sp("a", 1), sp("b", 2), sp("c", 3), sp("d", 4));
        db.register_paths(&[new_path(a.clone(), &[], &[b"x"])])
            .await
            .expect("register");
        db.set_tracking_unsynced(true);
        db.register_paths(&[new_path(b.clone(), &[&a], &[b"y"])])
            .await
            .expect("register");
        let mark = db.unsynced_mark().await.expect("mark");
        assert!(mark.is_some());
        db.register_paths(&[
            new_path(c.clone(), &[&b, &c], &[b"z"]),
            new_path(d.clone(), &[&a], &[b"w"]),
        ])
        .await
        .expect("register");
        assert_eq!(
            db.unsynced_paths().await.expect("unsynced"),
            vec![b.clone(), c.clone(), d.clone()]
        );
        db.forget_unsynced(mark).await.expect("forget");
        assert_eq!(
            db.unsynced_paths().await.expect("unsynced"),
            vec![c.clone(), d.clone()]
        );
        assert!(db.path_info(&c).await.expect("query").is_some());
        let removed = db
            .remove_with_referrers(std::slice::from_ref(&b))
            .await
            .expect("remove");
        assert_eq!(removed, BTreeSet::from([b.clone(), c.clone()]));
        assert_eq!(
            db.all_paths().await.expect("all"),
            vec![a.clone(), d.clone()]
        );
        assert!(
            db.path_info(&c).await.expect("query").is_none(),
            "cache forgot it"
        );
        assert!(db.referrers(&a).await.expect("referrers").contains(&d));
        assert_eq!(
            db.unsynced_paths().await.expect("unsynced"),
            vec![d.clone()]
        );
        let mark = db.unsynced_mark().await.expect("mark");
        db.forget_unsynced(mark).await.expect("forget all");
        assert!(db.unsynced_paths().await.expect("unsynced").is_empty());
        // A path registered again after the mark was taken keeps its (older) id, and must
        // still be listed after the rows up to the mark are forgotten.
        let e = sp("e", 5);
        db.register_paths(&[new_path(e.clone(), &[], &[b"v"])])
            .await
            .expect("register");
        let mark = db.unsynced_mark().await.expect("mark");
        db.register_paths(&[new_path(d.clone(), &[&a], &[b"w2"])])
            .await
            .expect("register again");
        db.forget_unsynced(mark).await.expect("forget");
        assert_eq!(
            db.unsynced_paths().await.expect("unsynced"),
            vec![d.clone()]
        );
    }

    #[tokio::test]
    async fn register_and_query() {
        let (_dir, db) = scratch_db().await;
        let a = sp("a", 1);
        let b = sp("b", 2);
        db.register_paths(&[
            new_path(a.clone(), &[], &[b"x", b"y"]),
            new_path(b.clone(), &[&a, &b], &[b"y", b"z", b"y"]),
        ])
        .await
        .expect("register");
        let info = db.path_info(&b).await.expect("query").expect("valid");
        assert_eq!(info.references, BTreeSet::from([a.clone(), b.clone()]));
        assert_eq!(info.root, Cid::of(Codec::Raw, b"y"));
        // No references: the concatenation is NULL, read as none.
        let info = db.path_info(&a).await.expect("query").expect("valid");
        assert!(info.references.is_empty());
        assert!(db.path_info(&sp("c", 3)).await.expect("query").is_none());
        assert!(db.is_valid(&a).await.expect("valid"));
        assert!(!db.is_valid(&sp("c", 3)).await.expect("valid"));
        assert_eq!(
            db.root_of(a.base_name()).await.expect("root"),
            Some(Cid::of(Codec::Raw, b"x"))
        );
        assert_eq!(
            db.all_paths().await.expect("all"),
            vec![a.clone(), b.clone()]
        );
        let stats = db.stats().await.expect("stats");
        assert_eq!(
            stats,
            Stats {
                paths: 2,
                nar_bytes: 2000,
                blocks: 3,
                block_bytes: 3,
                block_uses: 4
            }
        );
        assert_eq!(db.path_blocks(&b).await.expect("blocks").len(), 2);
    }

    #[tokio::test]
    async fn missing_reference_registers_nothing() {
        let (_dir, db) = scratch_db().await;
        let a = sp("a", 1);
        let ghost = sp("ghost", 9);
        let err = db
            .register_paths(&[
                new_path(a.clone(), &[], &[b"x"]),
                new_path(sp("b", 2), &[&ghost], &[b"y"]),
            ])
            .await
            .expect_err("must fail");
        assert!(err.to_string().contains("is not valid"), "{err}");
        assert!(
            !db.is_valid(&a).await.expect("query"),
            "half a transaction became valid"
        );
        assert_eq!(db.stats().await.expect("stats"), Stats::default());
    }

    #[tokio::test]
    async fn concurrent_writers_on_one_file_never_see_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("db.sqlite");
        // Two handles stand for two processes: separate connection pools on one file.
        let first = StoreDb::open(&file).await.expect("open");
        let second = StoreDb::open(&file).await.expect("open");
        let mut tasks = Vec::new();
        for (w, db) in [first.clone(), second.clone()].into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                for i in 0..100u8 {
                    let name = format!("p{w}-{i}");
                    let blocks: Vec<Vec<u8>> = (0..50u8).map(|j| vec![w as u8, i, j]).collect();
                    let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
                    db.register_paths(&[new_path(sp(&name, i), &[], &refs)])
                        .await
                        .expect("register under contention");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(first.stats().await.expect("stats").paths, 200);
    }
}
