//! The whole reference graph in one read: every valid path, its references, its deriver and
//! (for a derivation) its outputs, from one snapshot of the database (one read transaction),
//! for the garbage collector ([`pkgchain_gc`]) to decide liveness in memory.

use std::path::Path;

use pkgchain_gc::{AddPathError, ReferenceGraph};

use crate::{DbError, StoreDb, on_blocking_thread, open_reader};

impl StoreDb {
    /// Every valid path with its references, deriver and outputs, read in one transaction
    /// (three queries, whatever the store's size).
    pub async fn reference_graph(&self) -> Result<ReferenceGraph, DbError> {
        let file = self.file.clone();
        on_blocking_thread(move || read_graph(&file)).await
    }
}

/// [`StoreDb::reference_graph`] on a read-only connection of its own: rows go straight into
/// the graph, not one by one through sqlx's database thread. Blocking.
fn read_graph(file: &Path) -> Result<ReferenceGraph, DbError> {
    let mut conn = open_reader(file)?;
    // The database's pages mapped rather than copied in: the whole file is read.
    conn.pragma_update(None, "mmap_size", GRAPH_MMAP_BYTES)?;
    let tx = conn.transaction()?;
    let mut graph = ReferenceGraph::new();
    // Path ids in ascending order (the scan is in id order), and each one's index.
    let mut ids: Vec<i64> = Vec::new();
    let mut derivers: Vec<(u32, String)> = Vec::new();
    let full = || DbError::Corrupt {
        what: "reference graph",
        path: String::new(),
        detail: "more valid paths than the collector can index".to_owned(),
    };
    {
        // The store's size first (the count reads the small index on paths), so that the graph
        // never grows while the paths are read: 100,000 paths are read a third faster.
        let (count, name_bytes): (i64, i64) = tx.query_row(
            "SELECT count(*), sum(length(path)) FROM ValidPaths",
            [],
            |row| Ok((row.get(0)?, row.get::<_, Option<i64>>(1)?.unwrap_or(0))),
        )?;
        let count = usize::try_from(count).unwrap_or(0).min(MAX_RESERVED_PATHS);
        let name_bytes = usize::try_from(name_bytes)
            .unwrap_or(0)
            .min(count.saturating_mul(256));
        graph.reserve(count, name_bytes);
        ids.reserve(count);
        let mut paths = tx.prepare("SELECT id, path, deriver FROM ValidPaths ORDER BY id")?;
        let mut rows = paths.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let name = text(row.get_ref(1)?)?.unwrap_or_default();
            let index = graph.add_path(name).map_err(|e| match e {
                AddPathError::Full => full(),
                AddPathError::NotAStorePath(e) => DbError::Corrupt {
                    what: "path",
                    path: name.to_owned(),
                    detail: e.to_string(),
                },
            })?;
            // Each path is new to the graph (the column is unique): its index is its position.
            if index as usize != ids.len() {
                return Err(DbError::Corrupt {
                    what: "reference graph",
                    path: name.to_owned(),
                    detail: "listed twice in ValidPaths".to_owned(),
                });
            }
            ids.push(id);
            if let Some(d) = text(row.get_ref(2)?)? {
                derivers.push((index, d.to_owned()));
            }
        }
        let mut refs = tx.prepare("SELECT referrer, reference FROM Refs")?;
        let mut rows = refs.query([])?;
        while let Some(row) = rows.next()? {
            let (referrer, reference): (i64, i64) = (row.get(0)?, row.get(1)?);
            if let (Some(a), Some(b)) = (index_of(&ids, referrer), index_of(&ids, reference)) {
                graph.add_reference(a, b);
            }
        }
        let mut outputs = tx.prepare("SELECT drv, path FROM DerivationOutputs")?;
        let mut rows = outputs.query([])?;
        while let Some(row) = rows.next()? {
            let drv: i64 = row.get(0)?;
            // An output that is not valid is no node of the graph.
            let out = text(row.get_ref(1)?)?.unwrap_or_default();
            if let (Some(d), Some(o)) = (index_of(&ids, drv), graph.index_of_name(out)) {
                graph.add_output(d, o);
            }
        }
    }
    tx.rollback()?;
    for (output, deriver) in derivers {
        // A deriver that is not valid (collected before) keeps nothing.
        if let Some(d) = graph.index_of_name(&deriver) {
            graph.set_deriver(output, d);
        }
    }
    Ok(graph)
}

/// How much of the database the graph's reader maps (SQLite's `mmap_size`).
const GRAPH_MMAP_BYTES: i64 = 1 << 30;

/// Paths the graph makes room for before reading (more are read all the same).
const MAX_RESERVED_PATHS: usize = 50_000_000;

/// The graph index of the path with database id `id`.
fn index_of(ids: &[i64], id: i64) -> Option<u32> {
    ids.binary_search(&id)
        .ok()
        .and_then(|i| u32::try_from(i).ok())
}

/// A text column's value (`None` for NULL); anything else is a damaged database.
fn text(value: rusqlite::types::ValueRef<'_>) -> Result<Option<&str>, DbError> {
    value.as_str_or_null().map_err(|e| DbError::Corrupt {
        what: "reference graph",
        path: String::new(),
        detail: e.to_string(),
    })
}
