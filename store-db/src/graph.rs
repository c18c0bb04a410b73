//! The whole reference graph in one read: every valid path, its references, its deriver and
//! (for a derivation) its outputs, from one snapshot of the database (one read transaction),
//! for the garbage collector ([`pkgchain_gc`]) to decide liveness in memory.

use std::path::Path;

use pkgchain_gc::ReferenceGraph;
use pkgchain_store_model::store_path::StorePath;
use rusqlite::{Connection, OpenFlags};

use crate::{DbError, StoreDb, stored_path};

impl StoreDb {
    /// Every valid path with its references, deriver and outputs, read in one transaction
    /// (three queries, whatever the store's size).
    pub async fn reference_graph(&self) -> Result<ReferenceGraph, DbError> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || read_graph(&file))
            .await
            .map_err(|e| DbError::Corrupt {
                what: "reference graph",
                path: String::new(),
                detail: format!("the reading thread failed: {e}"),
            })?
    }
}

/// [`StoreDb::reference_graph`] on a read-only connection of its own: rows go straight into
/// the graph, not one by one through sqlx's database thread. Blocking.
fn read_graph(file: &Path) -> Result<ReferenceGraph, DbError> {
    let mut conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
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
        let mut paths = tx.prepare("SELECT id, path, deriver FROM ValidPaths ORDER BY id")?;
        let mut rows = paths.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let name = text(row.get_ref(1)?)?.unwrap_or_default();
            let path = stored_path("path", name, name)?;
            let index = graph.add_path(path).map_err(|_| full())?;
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
            let Ok(out) = StorePath::from_base_name(text(row.get_ref(1)?)?.unwrap_or_default())
            else {
                continue;
            };
            if let (Some(d), Some(o)) = (index_of(&ids, drv), graph.index_of(&out)) {
                graph.add_output(d, o);
            }
        }
    }
    tx.rollback()?;
    for (output, deriver) in derivers {
        // A deriver that is not valid (collected before) keeps nothing.
        if let Ok(d) = StorePath::from_base_name(&deriver)
            && let Some(d) = graph.index_of(&d)
        {
            graph.set_deriver(output, d);
        }
    }
    Ok(graph)
}

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
