//! `CollectGarbage`: the collector.
//!
//! Liveness is decided in memory over the reference graph read once ([`pkgchain_gc`]), with
//! every root Nix honours. Deleting follows Nix's protocol with other processes: the collector
//! holds `gc.lock` exclusively and hears of new temp roots on `gc-socket/socket`
//! ([`crate::gc_socket`]); a path named there is spared, with its closure, and a path being
//! deleted makes its sender wait. Dead paths go in batches, referrers first, each batch one
//! database transaction (refused whole, then retried path by path, if a path registered since
//! the graph was read refers into it); then the blocks they used that nothing else needs
//! (see [`pkgchain_store::collect`]), on several threads while the next batch's paths are
//! deleted; at the end of a full collection, every block no path or pin reaches. Pins (`<ipfs>/pins/per-user/...`) keep their DAGs; dangling pins are removed.
//!
//! A collection stopped at any point (the client gone, the daemon killed) leaves a consistent
//! store: a path is deleted before its blocks, and blocks are moved aside before they are
//! deleted (a later collection moves back what an interrupted one left aside).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pkgchain_gc::{Keep, ReferenceGraph};
use pkgchain_protocol::activity::{ActivityType, Field, ResultType};
use pkgchain_protocol::reply::GcResults;
use pkgchain_protocol::request::gc::{CollectGarbage, GcAction, GcPaths};
use pkgchain_protocol::stderr::StderrMessage;
use pkgchain_store::collect::{Freed, PathsDeleted};
use pkgchain_store_model::store_path::{HASH_PART_LEN, StorePath};
use rustix::fs::{FlockOperation, flock};
use tracing::{Instrument, info, info_span, warn};

use super::connection::Conn;
use super::ops::{OpError, failed};
use crate::gc_socket::GcSocket;

/// Paths deleted per database transaction when nothing limits the bytes to free.
const BATCH: usize = 4096;
/// The activity level Nix's `lvlInfo` has on the wire.
const LEVEL_INFO: u64 = 3;

impl Conn {
    /// `CollectGarbage`, every action: `ReturnLive` / `ReturnDead` (`nix-store --gc
    /// --print-live` / `--print-dead`), `DeleteDead` (`nix-store --gc`, `nix store gc`,
    /// with `max_freed` for `--max`) and `DeleteSpecific` (`nix-store --delete`, which refuses
    /// a live path with Nix's error).
    pub(super) async fn collect_garbage(
        &mut self,
        req: CollectGarbage,
    ) -> Result<GcResults, OpError> {
        if req.ignore_liveness {
            return Err(failed("you are not allowed to ignore liveness"));
        }
        // A misspelt setting is an error, not a default: it decides what survives.
        let config = &self.state.config;
        let keep = Keep {
            derivations: config
                .bool("keep-derivations", true)
                .map_err(|e| failed(e.to_string()))?,
            outputs: config
                .bool("keep-outputs", false)
                .map_err(|e| failed(e.to_string()))?,
        };
        match req.action {
            GcAction::ReturnLive => self.live_or_dead(keep, true).await,
            GcAction::ReturnDead => self.live_or_dead(keep, false).await,
            GcAction::DeleteDead | GcAction::DeleteSpecific => {
                let span =
                    info_span!("collect_garbage", action = ?req.action, max_freed = req.max_freed);
                self.delete_garbage(req, keep).instrument(span).await
            }
        }
    }

    /// The valid paths on one side of the liveness line.
    async fn live_or_dead(&mut self, keep: Keep, want_live: bool) -> Result<GcResults, OpError> {
        let started = Instant::now();
        self.log_line("finding garbage collector roots...").await?;
        let roots = self.roots_now().await?;
        let roots_secs = started.elapsed().as_secs_f64();
        self.log_line("determining live/dead paths...").await?;
        let graph = self.reference_graph().await?;
        let graph_secs = started.elapsed().as_secs_f64() - roots_secs;
        let dir = self.state.store.store_dir().clone();
        let (valid, paths) = blocking(move || {
            let live = pkgchain_gc::live(&graph, &roots, keep);
            // Nix sends a set: sorted. The names are sorted in the graph's buffer, and each
            // path's text is made once, in that order.
            let mut picked: Vec<&str> = live
                .iter()
                .zip(0u32..)
                .filter(|(l, _)| **l == want_live)
                .filter_map(|(_, i)| graph.base_name(i))
                .collect();
            picked.sort_unstable();
            let prefix = format!("{}/", dir.as_str());
            let paths: Vec<String> = picked
                .iter()
                .map(|name| {
                    let mut shown = String::with_capacity(prefix.len() + name.len());
                    shown.push_str(&prefix);
                    shown.push_str(name);
                    shown
                })
                .collect();
            (graph.len(), paths)
        })
        .await?;
        info!(
            valid,
            returned = paths.len(),
            live = want_live,
            roots_secs,
            graph_secs,
            secs = started.elapsed().as_secs_f64(),
            "live and dead paths decided"
        );
        Ok(GcResults {
            paths,
            bytes_freed: 0,
        })
    }

    /// Every root now (links, runtime roots, temp roots), as store paths.
    async fn roots_now(&mut self) -> Result<Vec<StorePath>, OpError> {
        let layout = self.state.roots.clone();
        let roots = blocking(move || pkgchain_gc_roots::find_roots(&layout, false))
            .await?
            .map_err(|e| failed(e.to_string()))?;
        Ok(roots.into_keys().collect())
    }

    async fn reference_graph(&self) -> Result<ReferenceGraph, OpError> {
        self.state
            .store
            .db()
            .reference_graph()
            .await
            .map_err(|e| failed(format!("reading the reference graph: {e}")))
    }

    async fn delete_garbage(
        &mut self,
        req: CollectGarbage,
        keep: Keep,
    ) -> Result<GcResults, OpError> {
        let layout = self.state.roots.clone();
        let store = self.state.store.clone();
        // 1. The big lock, then the socket where new temp roots arrive meanwhile.
        let gc_lock = layout.open_gc_lock().map_err(|e| failed(e.to_string()))?;
        let gc_lock = match flock(&gc_lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => gc_lock,
            Err(_) => {
                self.log_line("waiting for the big garbage collector lock...")
                    .await?;
                blocking(move || {
                    flock(&gc_lock, FlockOperation::LockExclusive)
                        .map(|()| gc_lock)
                        .map_err(|e| failed(format!("locking gc.lock: {e}")))
                })
                .await??
            }
        };
        let socket = Arc::new(
            GcSocket::start(&layout)
                .map_err(|e| failed(format!("starting the garbage collector's socket: {e}")))?,
        );
        let store2 = store.clone();
        let blocks_lock = blocking(move || store2.lock_for_collection())
            .await?
            .map_err(|e| failed(e.to_string()))?;
        let blocks_lock = Arc::new(blocks_lock);

        // 2. Roots (temp roots included: the socket hears of any added from now on) and pins.
        self.log_line("finding garbage collector roots...").await?;
        let roots = self.roots_now().await?;
        let ipfs_store = self.state.ipfs_store_dir.clone();
        let store2 = store.clone();
        let protected = blocking(move || -> Result<HashSet<pkgchain_dag::Cid>, String> {
            let scan = pkgchain_gc_roots::pins::find_pins(
                store2.blocks().pins_dir(),
                &ipfs_store,
                |cid| store2.blocks().contains(cid).unwrap_or(false),
            )
            .map_err(|e| e.to_string())?;
            let mut blocks = HashSet::new();
            for (cid, _) in &scan.pinned {
                store2
                    .dag_blocks(cid, &mut blocks)
                    .map_err(|e| e.to_string())?;
            }
            info!(
                pins = scan.pinned.len(),
                dangling_removed = scan.removed.len(),
                pinned_blocks = blocks.len(),
                "pins found"
            );
            Ok(blocks)
        })
        .await?
        .map_err(|e| failed(format!("reading pins: {e}")))?;
        let protected = Arc::new(protected);

        // 3. What dies.
        let graph = Arc::new(self.reference_graph().await?);
        let specific = match &req.paths {
            GcPaths::Specific {
                paths,
                delete_referrers,
            } if req.action == GcAction::DeleteSpecific => Some((paths.clone(), *delete_referrers)),
            _ => None,
        };
        let graph2 = graph.clone();
        let (doomed, refused, absent) =
            blocking(move || decide(&graph2, &roots, keep, specific.as_ref())).await?;
        let dir = store.store_dir().clone();
        if req.action == GcAction::DeleteDead {
            self.log_line("deleting garbage...").await?;
        }
        let order = pkgchain_gc::deletion_order(&graph, &doomed);
        info!(
            valid = graph.len(),
            dead = order.len(),
            "dead paths decided"
        );

        // 4. Delete, batch by batch, with progress.
        let activity = self.state.builds.next_activity_id();
        self.send(&StderrMessage::StartActivity {
            id: activity,
            level: LEVEL_INFO,
            activity_type: ActivityType::Unknown,
            text: b"collecting garbage".to_vec().into(),
            fields: Vec::new(),
            parent: 0,
        })
        .await?;
        let mut tally = Tally {
            results: GcResults {
                paths: Vec::new(),
                bytes_freed: 0,
            },
            freed: Freed::default(),
            timing: PhaseTimes::default(),
            dir: dir.clone(),
            activity,
            total: order.len(),
            max_freed: req.max_freed,
        };
        for p in &absent {
            // Nix "deletes" a named path that is not valid too (there is nothing to free).
            let shown = dir.display(p);
            self.log_line(&format!("deleting '{shown}'")).await?;
            tally.results.paths.push(shown);
        }
        // Without a limit on the bytes freed, a batch's blocks are deleted while the next
        // batch's paths are: the disk and the database work at once. With one, each path's
        // bytes are counted before the next is touched.
        let pipelined = req.max_freed == u64::MAX;
        let batch_size = if pipelined { BATCH } else { 1 };
        let mut spared = vec![false; graph.len()];
        let mut next = 0usize;
        let mut stopped_at_max = false;
        let mut in_flight: Option<BlocksInFlight> = None;
        while next < order.len() || in_flight.is_some() {
            if next < order.len() {
                // Take the next batch, sparing paths that became temp roots meanwhile; the
                // rest are "pending" until deleted, so a client naming one waits for that.
                let mut batch: Vec<u32> = Vec::new();
                {
                    let mut shared = socket.lock();
                    while next < order.len() && batch.len() < batch_size {
                        let i = order[next];
                        next += 1;
                        if spared[i as usize] {
                            continue;
                        }
                        let Some(name) = graph.base_name(i) else {
                            continue;
                        };
                        let hash_part = hash_part_of(name);
                        if shared.temp_roots.contains(hash_part) {
                            spare(&graph, i, keep, &mut spared);
                            continue;
                        }
                        shared.pending.insert(hash_part.to_owned());
                        batch.push(i);
                    }
                }
                let started = Instant::now();
                let deleted = self
                    .delete_batch(&store, &graph, &batch, keep, &mut spared)
                    .await;
                tally.timing.paths += started.elapsed();
                // Gone from the database: an add of one of them from now on makes new
                // blocks, which the temp pins keep from this collection.
                socket.done_pending();
                let (deleted, candidates) = match deleted {
                    Ok(d) => d,
                    Err(e) => {
                        if let Some(previous) = in_flight.take() {
                            previous.settle().await;
                        }
                        return Err(e);
                    }
                };
                // Told now, as Nix tells of a path as it deletes it; a client gone shows here.
                let told = self.tell_deleted(deleted, &mut tally).await;
                // One batch's blocks at a time: the previous batch's first.
                let previous = match (in_flight.take(), &told) {
                    (Some(previous), Ok(())) => Some(self.finish_batch(previous, &mut tally).await),
                    (Some(previous), Err(_)) => {
                        tally.freed += previous.settle().await;
                        None
                    }
                    (None, _) => None,
                };
                let (store2, lock2, protected2) =
                    (store.clone(), blocks_lock.clone(), protected.clone());
                let current = BlocksInFlight {
                    task: tokio::task::spawn_blocking(move || {
                        store2.collect_blocks(&lock2, &candidates, &protected2)
                    }),
                    done: next,
                };
                match (told, previous) {
                    // The client is gone (or the bytes freed are enough): this batch's paths
                    // are deleted, so its blocks go too before the collection stops.
                    (Err(e), _) | (Ok(()), Some(Err(e))) => {
                        tally.freed += current.settle().await;
                        return Err(e);
                    }
                    (Ok(()), Some(Ok(true))) => {
                        tally.freed += current.settle().await;
                        stopped_at_max = true;
                        break;
                    }
                    (Ok(()), Some(Ok(false)) | None) => in_flight = Some(current),
                }
                if pipelined {
                    continue;
                }
            }
            if let Some(current) = in_flight.take() {
                stopped_at_max = self.finish_batch(current, &mut tally).await?;
                if stopped_at_max {
                    break;
                }
            }
        }
        // 5. A whole collection also takes every block nothing reaches (crash leftovers).
        if req.action == GcAction::DeleteDead && !stopped_at_max {
            let (store2, lock2, protected2) =
                (store.clone(), blocks_lock.clone(), protected.clone());
            let started = Instant::now();
            let swept = blocking(move || store2.sweep_blocks(&lock2, &protected2))
                .await?
                .map_err(|e| failed(format!("deleting unreachable blocks: {e}")))?;
            tally.timing.sweep += started.elapsed();
            tally.freed += swept;
        }
        self.send(&StderrMessage::StopActivity { id: activity })
            .await?;
        let Tally {
            mut results,
            freed: freed_total,
            timing,
            ..
        } = tally;
        results.bytes_freed = freed_total.bytes;
        // Nix's reply is a set: sorted, each path once.
        results.paths.sort_unstable();
        results.paths.dedup();
        drop(socket);
        drop(gc_lock);
        info!(
            paths = results.paths.len(),
            blocks = freed_total.blocks,
            bytes = freed_total.bytes,
            paths_secs = timing.paths.as_secs_f64(),
            blocks_secs = timing.blocks.as_secs_f64(),
            messages_secs = timing.messages.as_secs_f64(),
            sweep_secs = timing.sweep.as_secs_f64(),
            "garbage collected"
        );
        if let Some(path) = refused {
            return Err(failed(format!(
                "Cannot delete path '{}' since it is still alive. To find out why, use: nix-store --query --roots and nix-store --query --referrers",
                dir.display(&path)
            )));
        }
        Ok(results)
    }

    /// Tells the client of paths deleted (from the database; their blocks follow).
    async fn tell_deleted(
        &mut self,
        deleted: Vec<StorePath>,
        tally: &mut Tally,
    ) -> Result<(), OpError> {
        let started = Instant::now();
        for p in deleted {
            tracing::debug!(path = %p, "deleted");
            let shown = tally.dir.display(&p);
            self.log_line(&format!("deleting '{shown}'")).await?;
            tally.results.paths.push(shown);
        }
        tally.timing.messages += started.elapsed();
        Ok(())
    }

    /// Waits for a batch's blocks to be deleted, then tells the client how far the
    /// collection is. Returns whether `max_freed` is reached (and says so).
    async fn finish_batch(
        &mut self,
        batch: BlocksInFlight,
        tally: &mut Tally,
    ) -> Result<bool, OpError> {
        let started = Instant::now();
        let freed = batch
            .task
            .await
            .map_err(|e| failed(format!("internal error: {e}")))?
            .map_err(|e| failed(format!("deleting blocks: {e}")))?;
        tally.timing.blocks += started.elapsed();
        tally.freed += freed;
        self.send(&StderrMessage::Result {
            id: tally.activity,
            result_type: ResultType::Progress,
            fields: vec![
                Field::Int(batch.done as u64),
                Field::Int(tally.total as u64),
                Field::Int(0),
                Field::Int(0),
            ],
        })
        .await?;
        if tally.freed.bytes > tally.max_freed {
            self.log_line(&format!(
                "deleted more than {} bytes; stopping",
                tally.max_freed
            ))
            .await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Deletes one batch (one transaction; path by path if something now refers into it, a
    /// path still referred to being spared with its closure). Returns the deleted paths in
    /// batch order and the blocks they used.
    async fn delete_batch(
        &mut self,
        store: &pkgchain_store::Store,
        graph: &ReferenceGraph,
        batch: &[u32],
        keep: Keep,
        spared: &mut [bool],
    ) -> Result<(Vec<StorePath>, Vec<(pkgchain_dag::Cid, u64)>), OpError> {
        let paths: Vec<StorePath> = batch.iter().filter_map(|&i| graph.path(i)).collect();
        let db_error = |e: pkgchain_store::StoreError| failed(format!("deleting paths: {e}"));
        match store.delete_paths(&paths).await.map_err(db_error)? {
            PathsDeleted::Deleted(d) => {
                let deleted = paths
                    .into_iter()
                    .filter(|p| d.deleted.contains(p))
                    .collect();
                return Ok((deleted, d.blocks));
            }
            PathsDeleted::InUse => {}
        }
        let mut deleted = Vec::new();
        let mut blocks = Vec::new();
        for &i in batch {
            if spared[i as usize] {
                continue;
            }
            let Some(path) = graph.path(i) else { continue };
            match store
                .delete_paths(std::slice::from_ref(&path))
                .await
                .map_err(db_error)?
            {
                PathsDeleted::Deleted(d) => {
                    if d.deleted.contains(&path) {
                        deleted.push(path);
                    }
                    blocks.extend(d.blocks);
                }
                PathsDeleted::InUse => {
                    warn!(path = %path, "a path registered during the collection refers to it; kept");
                    spare(graph, i, keep, spared);
                }
            }
        }
        Ok((deleted, blocks))
    }
}

/// A batch whose paths are deleted and whose blocks are being deleted.
struct BlocksInFlight {
    /// Deleting the blocks.
    task: tokio::task::JoinHandle<Result<Freed, pkgchain_store::StoreError>>,
    /// How many paths of the deletion order were taken up to this batch.
    done: usize,
}

impl BlocksInFlight {
    /// Waits for the blocks of a batch whose paths a stopping collection deleted; what fails
    /// is left to the next full collection's sweep.
    async fn settle(self) -> Freed {
        let outcome = match self.task.await {
            Ok(deleted) => deleted.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        outcome.unwrap_or_else(|error| {
            warn!(%error, "deleting a batch's blocks failed; a later collection sweeps them");
            Freed::default()
        })
    }
}

/// What a collection has done so far, and what it tells the client with.
struct Tally {
    /// The paths deleted so far (the reply).
    results: GcResults,
    /// The blocks deleted so far.
    freed: Freed,
    /// Where the time went.
    timing: PhaseTimes,
    /// How paths are shown.
    dir: pkgchain_store_model::store_path::StoreDir,
    /// The progress activity.
    activity: u64,
    /// Paths to delete in all.
    total: usize,
    /// The client's limit on the bytes freed.
    max_freed: u64,
}

/// Where a collection's deleting time went (logged at its end).
#[derive(Debug, Default)]
struct PhaseTimes {
    /// Deleting paths from the database.
    paths: Duration,
    /// Waiting for the blocks they used to be deleted (the rest of that overlaps `paths`).
    blocks: Duration,
    /// Telling the client.
    messages: Duration,
    /// The final sweep of unreachable blocks.
    sweep: Duration,
}

/// Marks `i` and everything it keeps alive as spared.
fn spare(graph: &ReferenceGraph, i: u32, keep: Keep, spared: &mut [bool]) {
    let kept = pkgchain_gc::live_from(graph, [i], keep);
    for (s, k) in spared.iter_mut().zip(kept) {
        *s |= k;
    }
}

/// Which paths to delete: every dead path, or the named ones (with `delete_referrers`, their
/// dead referrers too). Nix goes through the named paths in order and stops at the first it
/// may not delete (a root, reachable from one, or kept by a path not named); what came
/// before it is deleted, and the error names it. Returns the doomed marks, that first
/// refused path, and the named paths that are not valid.
fn decide(
    graph: &ReferenceGraph,
    roots: &[StorePath],
    keep: Keep,
    specific: Option<&(BTreeSet<StorePath>, bool)>,
) -> (Vec<bool>, Option<StorePath>, Vec<StorePath>) {
    let live = pkgchain_gc::live(graph, roots, keep);
    let Some((named, delete_referrers)) = specific else {
        return (live.iter().map(|l| !l).collect(), None, Vec::new());
    };
    let absent: Vec<StorePath> = named
        .iter()
        .filter(|p| graph.index_of(p).is_none())
        .cloned()
        .collect();
    let named_ix: Vec<u32> = named.iter().filter_map(|p| graph.index_of(p)).collect();
    let mut allowed = vec![false; graph.len()];
    if *delete_referrers {
        let keepers = pkgchain_gc::keepers_of(graph, named_ix.iter().copied(), keep);
        for (a, (k, l)) in allowed.iter_mut().zip(keepers.iter().zip(&live)) {
            *a = *k && !l;
        }
    } else {
        for &i in &named_ix {
            allowed[i as usize] = true;
        }
    }
    // Reachable from a root or from any valid path that is not to be deleted: not deletable.
    let outside = (0..graph.len() as u32).filter(|&i| !allowed[i as usize]);
    let root_ix = roots.iter().filter_map(|r| graph.index_of(r));
    let kept = pkgchain_gc::live_from(graph, outside.chain(root_ix), keep);
    let refused = named_ix
        .iter()
        .copied()
        .find(|&i| kept[i as usize])
        .and_then(|i| graph.path(i));
    // Named paths before the refused one (in Nix's order, the set's), with whatever of the
    // allowed set keeps them.
    let before: Vec<u32> = named_ix
        .iter()
        .copied()
        .filter(|&i| {
            refused
                .as_ref()
                .is_none_or(|r| graph.base_name(i).is_some_and(|p| p < r.base_name()))
        })
        .filter(|&i| !kept[i as usize])
        .collect();
    let keepers = pkgchain_gc::keepers_of(graph, before, keep);
    let doomed = keepers
        .iter()
        .zip(&kept)
        .zip(&allowed)
        .map(|((k, kept), a)| *k && !kept && *a)
        .collect();
    (doomed, refused, absent)
}

/// The 32-character hash part of a base name (all of it if shorter, which a graph's names never are).
fn hash_part_of(base_name: &str) -> &str {
    base_name.get(..HASH_PART_LEN).unwrap_or(base_name)
}

/// Runs blocking work off the connection's task.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, OpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| failed(format!("internal error: {e}")))
}
