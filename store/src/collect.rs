//! The store's part of garbage collection: deleting paths, then the blocks nothing reaches any
//! more, safely while adds run (see [`pkgchain_blockstore::pins`] for the protocol).
//!
//! Paths go first, in the database (so a crash after it leaves only unreferenced blocks);
//! their blocks are then candidates. A candidate is kept while a valid path uses it, a temp pin
//! holds it, or the caller protects it (pins, the DAGs they reach). [`Store::sweep_blocks`]
//! looks at every block file and row, for what earlier crashes or collections left.

use std::collections::HashSet;

use pkgchain_blockstore::BlockStore;
use pkgchain_blockstore::pins::{self, CollectorLock};
use pkgchain_dag::pb::PbNode;
use pkgchain_dag::{Cid, Codec};
use pkgchain_store_model::store_path::StorePath;
use tracing::{debug, info, warn};

use crate::{Store, StoreError};

/// Most blocks one pinned DAG may have (a bound on the walk, far above any real tree).
const MAX_PINNED_DAG_BLOCKS: usize = 64 * 1024 * 1024;

/// Blocks deleted by one collection step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    /// Block files deleted.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl std::ops::AddAssign for Freed {
    fn add_assign(&mut self, other: Freed) {
        self.blocks += other.blocks;
        self.bytes += other.bytes;
    }
}

/// Whether a set of paths was deleted.
#[derive(Debug)]
pub enum PathsDeleted {
    /// Deleted; their blocks are candidates for [`Store::collect_blocks`].
    Deleted(pkgchain_store_db::collect::DeletedPaths),
    /// A valid path outside the set refers to one of them: nothing was deleted.
    InUse,
}

impl Store {
    /// Takes the collector's lock (`<pins>/lock`), waiting for another collector, and moves
    /// back any block a collector that died left in the trash.
    pub fn lock_for_collection(&self) -> Result<CollectorLock, StoreError> {
        let lock = CollectorLock::acquire(self.blocks().pins_dir())?;
        let restored = self.blocks().restore_trash()?;
        if restored > 0 {
            warn!(
                restored,
                "moved back blocks an interrupted collection left in the trash"
            );
        }
        Ok(lock)
    }

    /// Deletes `paths` from the database in one transaction (see
    /// [`pkgchain_store_db::StoreDb::delete_paths`]).
    pub async fn delete_paths(&self, paths: &[StorePath]) -> Result<PathsDeleted, StoreError> {
        match self.db().delete_paths(paths).await {
            Ok(d) => Ok(PathsDeleted::Deleted(d)),
            Err(pkgchain_store_db::DbError::InUse) => Ok(PathsDeleted::InUse),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes those of `candidates` that no valid path uses, no temp pin holds and
    /// `protected` does not list. The caller holds [`Store::lock_for_collection`]. Blocking.
    pub fn collect_blocks(
        &self,
        _lock: &CollectorLock,
        candidates: &[(Cid, u64)],
        protected: &HashSet<Cid>,
    ) -> Result<Freed, StoreError> {
        if candidates.is_empty() {
            return Ok(Freed::default());
        }
        let cids: Vec<Cid> = candidates.iter().map(|(c, _)| *c).collect();
        let pinned = pins::read_temp_pins(self.blocks().pins_dir())?;
        let used = self.runtime().block_on(self.db().blocks_in_use(&cids))?;
        let doomed: Vec<Cid> = cids
            .into_iter()
            .filter(|c| !used.contains(c) && !pinned.contains(c) && !protected.contains(c))
            .collect();
        self.delete_blocks(&doomed, protected)
    }

    /// Deletes every block, on disk or listed, that no valid path uses, no temp pin holds and
    /// `protected` does not list: what crashes and interrupted collections left. The caller
    /// holds [`Store::lock_for_collection`]. Blocking.
    pub fn sweep_blocks(
        &self,
        _lock: &CollectorLock,
        protected: &HashSet<Cid>,
    ) -> Result<Freed, StoreError> {
        let pinned = pins::read_temp_pins(self.blocks().pins_dir())?;
        let used = self.runtime().block_on(self.db().all_blocks_in_use())?;
        let keep = |c: &Cid| used.contains(c) || pinned.contains(c) || protected.contains(c);
        let mut doomed: Vec<Cid> = Vec::new();
        self.blocks().for_each_block(|cid, _| {
            if !keep(&cid) {
                doomed.push(cid);
            }
            Ok(())
        })?;
        let listed = self.runtime().block_on(self.db().unused_blocks())?;
        let on_disk: HashSet<Cid> = doomed.iter().copied().collect();
        doomed.extend(
            listed
                .into_iter()
                .map(|(c, _)| c)
                .filter(|c| !keep(c) && !on_disk.contains(c)),
        );
        self.delete_blocks(&doomed, protected)
    }

    /// Moves `doomed` into the trash, looks at the temp pins and the database again, moves
    /// back what came to be needed meanwhile and deletes the rest (files, then rows).
    fn delete_blocks(&self, doomed: &[Cid], protected: &HashSet<Cid>) -> Result<Freed, StoreError> {
        let blocks: &BlockStore = self.blocks();
        let mut trashed: Vec<(Cid, u64)> = Vec::new();
        let mut gone: Vec<Cid> = Vec::new();
        for cid in doomed {
            match blocks.trash(cid)? {
                Some(size) => trashed.push((*cid, size)),
                None => gone.push(*cid),
            }
        }
        let pinned = pins::read_temp_pins(blocks.pins_dir())?;
        let trashed_cids: Vec<Cid> = trashed.iter().map(|(c, _)| *c).collect();
        let used = self
            .runtime()
            .block_on(self.db().blocks_in_use(&trashed_cids))?;
        let mut freed = Freed::default();
        for (cid, size) in trashed {
            if used.contains(&cid) || pinned.contains(&cid) || protected.contains(&cid) {
                debug!(%cid, "came to be needed during collection; moved back");
                blocks.untrash(&cid)?;
            } else {
                blocks.purge(&cid)?;
                gone.push(cid);
                freed.blocks += 1;
                freed.bytes += size;
            }
        }
        self.runtime().block_on(self.db().forget_blocks(&gone))?;
        if freed.blocks > 0 {
            info!(blocks = freed.blocks, bytes = freed.bytes, "blocks deleted");
        }
        Ok(freed)
    }

    /// Every block of the DAG at `root` that is on disk (a pin keeps them all). Missing
    /// blocks end their branch with a warning: a pin may name a DAG not fully fetched.
    /// Blocking.
    pub fn dag_blocks(&self, root: &Cid, into: &mut HashSet<Cid>) -> Result<(), StoreError> {
        let mut todo = vec![*root];
        let mut walked = 0usize;
        while let Some(cid) = todo.pop() {
            if !into.insert(cid) {
                continue;
            }
            walked += 1;
            if walked > MAX_PINNED_DAG_BLOCKS {
                return Err(StoreError::Pin(format!(
                    "the DAG at {root} has more than {MAX_PINNED_DAG_BLOCKS} blocks"
                )));
            }
            if cid.codec() != Codec::DagPb {
                continue;
            }
            let bytes = match self.blocks().read(&cid) {
                Ok(b) => b,
                Err(pkgchain_blockstore::BlockError::Missing(_)) => {
                    warn!(%root, missing = %cid, "a pinned DAG is not complete here");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let node = PbNode::decode(&bytes)
                .map_err(|e| StoreError::Pin(format!("block {cid} of the DAG at {root}: {e}")))?;
            todo.extend(node.links.iter().map(|l| l.cid));
        }
        Ok(())
    }
}
