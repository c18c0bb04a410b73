//! `--repair` of derivation outputs, as Nix's derivation goal does it. With caches, every
//! output is fetched again first (substitution in repair mode). Otherwise, or when no cache
//! has them, an output that is valid but whose contents are not sound counts as missing and is
//! rebuilt. When every output is sound, each path of the outputs' closure is checked, and the
//! corrupt ones are rebuilt from the derivations of the closure that produce them, or fetched
//! again from the caches when none does. A path that neither can make again makes the repair
//! fail.
//!
//! A path's contents are checked as the block store knows them: every block against its CID,
//! then the NAR rebuilt from the DAG against the registered hash and size. The rebuild's
//! outputs are ingested in repair mode, which checks blocks already on disk and writes the
//! corrupt ones again (otherwise a block on disk is trusted, whatever it holds).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use pkgchain_protocol::types::{BuildMode, BuildResult, BuildStatus, BuiltOutput};
use pkgchain_store::Store;
use pkgchain_store_model::store_path::StorePath;
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument, info_span, warn};

use super::{BuildEvent, BuildOptions, Builds, JobResult, one};

/// The paths one request has checked and whether they were sound (Nix's
/// `pathContentsGoodCache`): each path is checked, and reported, once per request.
#[derive(Debug, Clone, Default)]
pub struct CheckedContents(Arc<Mutex<HashMap<StorePath, bool>>>);

impl CheckedContents {
    fn get(&self, path: &StorePath) -> Option<bool> {
        self.0.lock().ok().and_then(|m| m.get(path).copied())
    }

    /// Records what is known of `path` now (sound after it was rebuilt).
    pub(super) fn set(&self, path: &StorePath, good: bool) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(path.clone(), good);
        }
    }
}

/// Whether `path`'s contents are sound, with Nix's messages ("checking path '…'...", and
/// "path '…' is corrupted or missing!"). Checked once per request.
pub(super) async fn contents_good(
    store: &Store,
    path: &StorePath,
    checked: &CheckedContents,
    events: &mpsc::UnboundedSender<BuildEvent>,
) -> bool {
    if let Some(good) = checked.get(path) {
        return good;
    }
    let shown = store.store_dir().display(path);
    let _ = events.send(BuildEvent::Message(format!("checking path '{shown}'...")));
    let good = match store.verify_path(path).await {
        Ok(problems) => {
            for problem in &problems {
                warn!(%problem, "repair");
            }
            problems.is_empty()
        }
        Err(e) => {
            warn!(error = %e, path = %shown, "checking contents for repair");
            false
        }
    };
    checked.set(path, good);
    if !good {
        let _ = events.send(BuildEvent::Message(format!(
            "path '{shown}' is corrupted or missing!"
        )));
    }
    good
}

/// Tells the client why a repair from the caches failed, unless it is only that no cache has
/// the path (then it is rebuilt, or the repair fails naming it).
fn warn_unless_uncached(
    events: &mpsc::UnboundedSender<BuildEvent>,
    e: &pkgchain_substitute::SubstituteError,
) {
    if !matches!(e, pkgchain_substitute::SubstituteError::NoSubstitute(_)) {
        let _ = events.send(BuildEvent::Message(format!("warning: {e}")));
    }
}

impl Builds {
    /// Makes the outputs of a derivation being repaired whole from the caches: those not
    /// valid are substituted, the `valid` ones fetched again in repair mode (which writes
    /// their damaged blocks again). Whether that worked (otherwise damaged or missing ones are
    /// rebuilt); failures other than no cache having a path are told to the client.
    pub(super) async fn repair_by_substitution(
        &self,
        store: &Store,
        subs: &pkgchain_substitute::Substituters,
        outputs: &BTreeMap<String, StorePath>,
        valid: &[StorePath],
        opts: &BuildOptions,
        events: &mpsc::UnboundedSender<BuildEvent>,
    ) -> bool {
        let tell = BuildEvent::messages_to(events.clone());
        let missing: Vec<StorePath> = outputs
            .values()
            .filter(|p| !valid.contains(p))
            .cloned()
            .collect();
        // Outputs valid and sound are left alone by the substitution itself.
        if let Err(e) = subs.substitute_closure(store, &missing, &tell).await {
            warn_unless_uncached(events, &e);
            return false;
        }
        for path in valid {
            if let Err(e) = subs.repair_path(store, path, &tell).await {
                warn_unless_uncached(events, &e);
                return false;
            }
            // Checked against its hash as it was ingested again.
            opts.checked_contents.set(path, true);
        }
        true
    }

    /// Nix's `repairClosure`: every output of `drv_path` is sound; checks the rest of their
    /// closure and rebuilds, in repair mode, the derivations whose outputs are not.
    pub(super) async fn repair_closure(
        self: &Arc<Self>,
        store: &Store,
        drv_path: &StorePath,
        outputs: &BTreeMap<String, StorePath>,
        opts: &BuildOptions,
        limit: &Arc<Semaphore>,
        events: &mpsc::UnboundedSender<BuildEvent>,
    ) -> Arc<JobResult> {
        let dir = store.store_dir().clone();
        let shown = dir.display(drv_path);
        let span = info_span!("repair_closure", drv = %shown);
        let fail = |msg: String| {
            let mut r = BuildResult::new(BuildStatus::MiscFailure);
            r.error_msg = msg.clone();
            Arc::new(JobResult {
                result: r,
                error: Some(msg),
            })
        };
        let empty = BTreeMap::new();
        let output_closure = match one::closure(store, outputs.values().cloned(), &empty)
            .instrument(span.clone())
            .await
        {
            Ok((c, _)) => c,
            Err(e) => return fail(e),
        };
        // Which derivation of the derivation's own closure makes each path.
        let mut makers: HashMap<StorePath, StorePath> = HashMap::new();
        let drv_closure = match one::closure(store, [drv_path.clone()], &empty).await {
            Ok((c, _)) => c,
            Err(e) => return fail(e),
        };
        for d in drv_closure.iter().filter(|p| p.is_derivation()) {
            let Ok(drv) = store.read_derivation(d).await else {
                continue;
            };
            for (name, out) in &drv.outputs {
                if let Ok(Some(p)) = out.path(&dir, &drv.name, name) {
                    makers.insert(p, d.clone());
                }
            }
        }
        let mut repairs = futures::stream::FuturesUnordered::new();
        // Paths no derivation here makes: fetched again from the caches (Nix's
        // `makePathSubstitutionGoal(path, Repair)`).
        let mut from_caches = Vec::new();
        let mut failed = 0usize;
        let to_check: BTreeSet<&StorePath> = output_closure.iter().collect();
        for path in to_check {
            if contents_good(store, path, &opts.checked_contents, events).await {
                continue;
            }
            let _ = events.send(BuildEvent::Message(format!(
                "found corrupted or missing path '{}' in the output closure of '{shown}'",
                dir.display(path)
            )));
            match makers.get(path) {
                Some(maker) => repairs.push(self.realise_inner(
                    store,
                    maker.clone(),
                    opts.clone(),
                    BuildMode::Repair,
                    Arc::clone(limit),
                    events.clone(),
                )),
                None => from_caches.push(path.clone()),
            }
        }
        for path in from_caches {
            let Some(subs) = &opts.substituters else {
                failed += 1;
                continue;
            };
            let tell = BuildEvent::messages_to(events.clone());
            match subs
                .repair_path(store, &path, &tell)
                .instrument(span.clone())
                .await
            {
                Ok(()) => opts.checked_contents.set(&path, true),
                Err(e) => {
                    failed += 1;
                    warn_unless_uncached(events, &e);
                }
            }
        }
        while let Some(r) = repairs.next().await {
            if let Some(e) = &r.error {
                failed += 1;
                let _ = events.send(BuildEvent::InputFailed(e.clone()));
            }
        }
        if failed > 0 {
            return fail(format!(
                "some paths in the output closure of derivation '{shown}' could not be repaired"
            ));
        }
        let mut r = BuildResult::new(BuildStatus::AlreadyValid);
        for (n, p) in outputs {
            r.built_outputs
                .insert(n.clone(), BuiltOutput::new(p.clone()));
        }
        Arc::new(JobResult {
            result: r,
            error: None,
        })
    }
}
