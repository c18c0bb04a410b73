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

/// Threads that move and delete block files at once. Deleting a file waits for the disk
/// (freeing its extents, a discard where the file system is mounted with one); several in
/// flight keep the device busy (16 deleted 50,000 small files 3x faster than 2 on a 2-CPU
/// virtual machine; more gained nothing).
const FILE_THREADS: usize = 16;
/// Fewest files worth a thread of their own.
const FILES_PER_THREAD: usize = 32;

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

    /// Deletes the files of `candidates`, blocks whose rows [`Store::delete_paths`] deleted,
    /// except those a temp pin holds, `protected` lists or a path registered since uses. The
    /// caller holds [`Store::lock_for_collection`]. Blocking.
    pub fn collect_blocks(
        &self,
        _lock: &CollectorLock,
        candidates: &[(Cid, u64)],
        protected: &HashSet<Cid>,
    ) -> Result<Freed, StoreError> {
        if candidates.is_empty() {
            return Ok(Freed::default());
        }
        let pinned = pins::read_temp_pins(self.blocks().pins_dir())?;
        let doomed: Vec<(Cid, u64)> = candidates
            .iter()
            .filter(|(c, _)| !pinned.contains(c) && !protected.contains(c))
            .copied()
            .collect();
        Ok(self.delete_blocks(&doomed, protected)?.0)
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
        let mut doomed: Vec<(Cid, u64)> = Vec::new();
        let mut freed = Freed::default();
        self.blocks()
            .for_each_block_or_trashed(|cid, size, trashed| {
                match (trashed, keep(&cid)) {
                    (false, false) => doomed.push((cid, size)),
                    (false, true) => {}
                    // Moved aside by a collector whose list of them was lost (a power cut). An
                    // add never relies on a block in the trash (it found it missing and wrote
                    // it again), so what nothing needs goes at once; the rest comes back.
                    (true, true) => self.blocks().untrash(&cid)?,
                    (true, false) => {
                        self.blocks().purge(&cid)?;
                        freed.blocks += 1;
                        freed.bytes += size;
                    }
                }
                Ok(())
            })?;
        let listed = self.runtime().block_on(self.db().unused_blocks())?;
        let on_disk: HashSet<Cid> = doomed.iter().map(|(c, _)| *c).collect();
        doomed.extend(
            listed
                .into_iter()
                .filter(|(c, _)| !keep(c) && !on_disk.contains(c)),
        );
        // The walk takes a while: what adds registered or pinned meanwhile is left alone
        // before anything is moved aside.
        let pinned = pins::read_temp_pins(self.blocks().pins_dir())?;
        let cids: Vec<Cid> = doomed.iter().map(|(c, _)| *c).collect();
        let used = self.runtime().block_on(self.db().blocks_in_use(&cids))?;
        doomed.retain(|(c, _)| !used.contains(c) && !pinned.contains(c));
        let (deleted, gone) = self.delete_blocks(&doomed, protected)?;
        self.runtime().block_on(self.db().forget_blocks(&gone))?;
        freed += deleted;
        Ok(freed)
    }

    /// Moves `doomed` into the trash, looks at the temp pins and the database again, moves
    /// back what came to be needed meanwhile and deletes the rest. Returns what was freed
    /// and every block of `doomed` now gone (whose rows, if any, are the caller's).
    fn delete_blocks(
        &self,
        doomed: &[(Cid, u64)],
        protected: &HashSet<Cid>,
    ) -> Result<(Freed, Vec<Cid>), StoreError> {
        let blocks: &BlockStore = self.blocks();
        let cids: Vec<Cid> = doomed.iter().map(|(c, _)| *c).collect();
        blocks.trash_journal_add(&cids)?;
        let moved = in_parallel(doomed, |(cid, _)| blocks.trash(cid))?;
        let mut trashed: Vec<(Cid, u64)> = Vec::new();
        let mut gone: Vec<Cid> = Vec::new();
        for (&(cid, size), moved) in doomed.iter().zip(moved) {
            if moved {
                trashed.push((cid, size));
            } else {
                gone.push(cid);
            }
        }
        let pinned = pins::read_temp_pins(blocks.pins_dir())?;
        let trashed_cids: Vec<Cid> = trashed.iter().map(|(c, _)| *c).collect();
        let used = self
            .runtime()
            .block_on(self.db().blocks_in_use(&trashed_cids))?;
        let mut freed = Freed::default();
        let mut purge = Vec::with_capacity(trashed.len());
        for (cid, size) in trashed {
            if used.contains(&cid) || pinned.contains(&cid) || protected.contains(&cid) {
                debug!(%cid, "came to be needed during collection; moved back");
                blocks.untrash(&cid)?;
            } else {
                purge.push(cid);
                freed.blocks += 1;
                freed.bytes += size;
            }
        }
        in_parallel(&purge, |cid| blocks.purge(cid))?;
        blocks.trash_settled()?;
        gone.extend(purge);
        if freed.blocks > 0 {
            info!(blocks = freed.blocks, bytes = freed.bytes, "blocks deleted");
        }
        Ok((freed, gone))
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

/// `op` on every item, on up to [`FILE_THREADS`] threads; the results in `items`' order, or
/// the first error (the other threads finish their share first).
fn in_parallel<T: Sync, R: Send, E: Send>(
    items: &[T],
    op: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let threads = (items.len() / FILES_PER_THREAD).clamp(1, FILE_THREADS);
    if threads == 1 {
        return items.iter().map(&op).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let op = &op;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(op).collect::<Result<Vec<R>, E>>()))
            .collect();
        let mut results = Vec::with_capacity(items.len());
        for worker in workers {
            match worker.join() {
                Ok(done) => results.extend(done?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(results)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use pkgchain_blockstore::Durability;
    use pkgchain_store_model::content_address::{ContentAddress, ContentAddressMethod};
    use pkgchain_store_model::store_path::StoreDir;

    use super::*;
    use crate::{IngestOptions, StoreConfig};

    async fn open_store(dir: &Path) -> Store {
        Store::open(StoreConfig {
            store_dir: StoreDir::default(),
            db_file: dir.join("db/store.sqlite"),
            blocks_dir: dir.join("ipfs/blocks"),
            durability: Durability::EachCommit,
        })
        .await
        .expect("open store")
    }

    /// A tree with `shared` (the same bytes in every tree) and `own` (this tree's alone).
    fn tree(dir: &Path, name: &str) -> std::path::PathBuf {
        let root = dir.join("input").join(name);
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(root.join("shared"), b"the same in every tree\n").expect("write");
        std::fs::write(root.join("own"), format!("only in {name}\n")).expect("write");
        root
    }

    fn cid_of(data: &[u8]) -> Cid {
        Cid::of(Codec::Raw, data)
    }

    /// Deletes `path` and collects its blocks, with `protected` kept.
    async fn delete_and_collect(store: &Store, path: &StorePath, protected: HashSet<Cid>) -> Freed {
        let PathsDeleted::Deleted(d) = store
            .delete_paths(std::slice::from_ref(path))
            .await
            .expect("delete")
        else {
            panic!("{path} in use");
        };
        assert!(d.deleted.contains(path));
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let lock = store.lock_for_collection().expect("lock");
            store
                .collect_blocks(&lock, &d.blocks, &protected)
                .expect("collect")
        })
        .await
        .expect("task")
    }

    /// A sweep with nothing protected.
    async fn sweep(store: &Store) -> Freed {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let lock = store.lock_for_collection().expect("lock");
            store.sweep_blocks(&lock, &HashSet::new()).expect("sweep")
        })
        .await
        .expect("task")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocks_shared_with_a_live_path_survive_and_the_rest_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path()).await;
        let dead = store
            .add_path(&tree(dir.path(), "dead"), None)
            .await
            .expect("add");
        let live = store
            .add_path(&tree(dir.path(), "live"), None)
            .await
            .expect("add");
        let dead_root = store.root_of(&dead).await.expect("root");
        let freed = delete_and_collect(&store, &dead, HashSet::new()).await;
        // The dead tree's own file and its directory node went; the shared file stayed.
        assert_eq!(freed.blocks, 2, "{freed:?}");
        let blocks = store.blocks();
        assert!(!blocks.contains(&dead_root).expect("contains"));
        assert!(
            !blocks
                .contains(&cid_of(b"only in dead\n"))
                .expect("contains")
        );
        assert!(
            blocks
                .contains(&cid_of(b"the same in every tree\n"))
                .expect("contains")
        );
        assert!(store.verify_path(&live).await.expect("verify").is_empty());
        // Nothing else is unreachable.
        let swept = sweep(&store).await;
        assert_eq!(swept, Freed::default());
        assert!(store.verify_path(&live).await.expect("verify").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pinned_dag_keeps_every_block_after_its_path_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path()).await;
        let path = store
            .add_path(&tree(dir.path(), "pinned"), None)
            .await
            .expect("add");
        let root = store.root_of(&path).await.expect("root");
        let mut protected = HashSet::new();
        store.dag_blocks(&root, &mut protected).expect("walk");
        assert_eq!(protected.len(), 3, "directory node and two files");
        let freed = delete_and_collect(&store, &path, protected.clone()).await;
        assert_eq!(freed, Freed::default());
        for cid in &protected {
            assert!(
                store.blocks().check(cid).expect("check") == pkgchain_blockstore::BlockState::Ok
            );
        }
        // Unpinned, the sweep takes them.
        let swept = sweep(&store).await;
        assert_eq!(swept.blocks, 3);
    }

    /// An add that found a block on disk (the dead path's) holds a temp pin on it until it
    /// registers: the collection between the two keeps the block, and the new path verifies.
    /// Without the pin (the control), the same collection deletes the block.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_temp_pin_protects_an_add_in_progress() {
        for pinned in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = open_store(dir.path()).await;
            let old = store
                .add_path(&tree(dir.path(), "old"), None)
                .await
                .expect("add");
            let mut ingested = store
                .ingest_tree(tree(dir.path(), "new"), IngestOptions::default())
                .await
                .expect("ingest");
            assert_eq!(ingested.new_blocks, 2, "the shared file was found on disk");
            if !pinned {
                // What an add without temp pins would be: nothing holds the blocks.
                let empty = tempfile::tempdir().expect("tempdir");
                let other =
                    std::sync::Arc::new(pkgchain_blockstore::pins::TempPins::new(empty.path()));
                ingested.pins = other.lease();
            }
            delete_and_collect(&store, &old, HashSet::new()).await;
            let shared = cid_of(b"the same in every tree\n");
            assert_eq!(store.blocks().contains(&shared).expect("contains"), pinned);
            if pinned {
                let path = store
                    .store_dir()
                    .make_fixed_output_path("new", true, &ingested.nar_hash, [], false)
                    .expect("path");
                let ca = ContentAddress::new(
                    ContentAddressMethod::NixArchive,
                    ingested.nar_hash.clone(),
                );
                store
                    .register(path.clone(), &ingested, BTreeSet::new(), Some(ca))
                    .await
                    .expect("register");
                drop(ingested);
                assert!(store.verify_path(&path).await.expect("verify").is_empty());
            }
        }
    }
}
