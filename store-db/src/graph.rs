//! The whole reference graph in one read: every valid path, its references, its deriver and
//! (for a derivation) its outputs, from one snapshot of the database (one read transaction),
//! for the garbage collector ([`pkgchain_gc`]) to decide liveness in memory.

use std::collections::HashMap;

use pkgchain_gc::ReferenceGraph;
use sqlx::Row;

use crate::{DbError, StoreDb, stored_path};

impl StoreDb {
    /// Every valid path with its references, deriver and outputs, read in one transaction
    /// (three queries, whatever the store's size).
    pub async fn reference_graph(&self) -> Result<ReferenceGraph, DbError> {
        let mut tx = self.readers.begin().await?;
        let mut graph = ReferenceGraph::new();
        let mut by_id: HashMap<i64, u32> = HashMap::new();
        let mut derivers: Vec<(u32, String)> = Vec::new();
        let full = || DbError::Corrupt {
            what: "reference graph",
            path: String::new(),
            detail: "more valid paths than the collector can index".to_owned(),
        };
        for row in sqlx::query("SELECT id, path, deriver FROM ValidPaths")
            .fetch_all(&mut *tx)
            .await?
        {
            let id: i64 = row.try_get(0)?;
            let name: String = row.try_get(1)?;
            let deriver: Option<String> = row.try_get(2)?;
            let path = stored_path("path", &name, &name)?;
            let index = graph.add_path(path).map_err(|_| full())?;
            by_id.insert(id, index);
            if let Some(d) = deriver {
                derivers.push((index, d));
            }
        }
        for row in sqlx::query("SELECT referrer, reference FROM Refs")
            .fetch_all(&mut *tx)
            .await?
        {
            let (referrer, reference): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            if let (Some(&a), Some(&b)) = (by_id.get(&referrer), by_id.get(&reference)) {
                graph.add_reference(a, b);
            }
        }
        for row in sqlx::query("SELECT drv, path FROM DerivationOutputs")
            .fetch_all(&mut *tx)
            .await?
        {
            let drv: i64 = row.try_get(0)?;
            let out: String = row.try_get(1)?;
            // An output that is not valid is no node of the graph.
            let Ok(out) = pkgchain_store_model::store_path::StorePath::from_base_name(&out) else {
                continue;
            };
            if let (Some(&d), Some(o)) = (by_id.get(&drv), graph.index_of(&out)) {
                graph.add_output(d, o);
            }
        }
        tx.rollback().await?;
        for (output, deriver) in derivers {
            // A deriver that is not valid (collected before) keeps nothing.
            if let Ok(d) = pkgchain_store_model::store_path::StorePath::from_base_name(&deriver)
                && let Some(d) = graph.index_of(&d)
            {
                graph.set_deriver(output, d);
            }
        }
        Ok(graph)
    }
}
