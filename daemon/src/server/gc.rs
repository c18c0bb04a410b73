//! `CollectGarbage`: which valid paths are live and which are dead, decided in memory over the
//! reference graph read once ([`pkgchain_gc`]). Deleting (the other two actions) comes with
//! the collector of blocks (issue 5) and is refused with an error naming it until then.

use std::collections::BTreeSet;

use pkgchain_gc::Keep;
use pkgchain_protocol::reply::GcResults;
use pkgchain_protocol::request::gc::{CollectGarbage, GcAction};
use tracing::info;

use super::connection::Conn;
use super::ops::{OpError, failed, not_yet};

impl Conn {
    /// `CollectGarbage` with `ReturnLive` or `ReturnDead` (`nix-store --gc --print-live` and
    /// `--print-dead`): every valid path on one side of Nix's liveness rules, with every root
    /// Nix honours (links under `gcroots/` and `profiles/`, temp roots of every connection,
    /// runtime roots of running processes) and the daemon's `keep-derivations` and
    /// `keep-outputs` settings.
    pub(super) async fn collect_garbage(
        &mut self,
        req: CollectGarbage,
    ) -> Result<GcResults, OpError> {
        if req.ignore_liveness {
            return Err(failed("you are not allowed to ignore liveness"));
        }
        let want_live = match req.action {
            GcAction::ReturnLive => true,
            GcAction::ReturnDead => false,
            GcAction::DeleteDead | GcAction::DeleteSpecific => {
                return Err(not_yet("CollectGarbage", "garbage collection, issue 5"));
            }
        };
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
        self.log_line("finding garbage collector roots...").await?;
        let layout = self.state.roots.clone();
        let roots =
            tokio::task::spawn_blocking(move || pkgchain_gc_roots::find_roots(&layout, false))
                .await
                .map_err(|e| failed(format!("internal error: {e}")))?
                .map_err(|e| failed(e.to_string()))?;
        self.log_line("determining live/dead paths...").await?;
        let graph = self
            .state
            .store
            .db()
            .reference_graph()
            .await
            .map_err(|e| failed(format!("reading the reference graph: {e}")))?;
        let roots: Vec<_> = roots.into_keys().collect();
        let dir = self.state.store.store_dir().clone();
        let (valid, paths) = tokio::task::spawn_blocking(move || {
            let live = pkgchain_gc::live(&graph, &roots, keep);
            let paths: BTreeSet<String> = live
                .iter()
                .zip(0u32..)
                .filter(|(l, _)| **l == want_live)
                .filter_map(|(_, i)| graph.path(i))
                .map(|p| dir.display(p))
                .collect();
            (graph.len(), paths)
        })
        .await
        .map_err(|e| failed(format!("internal error: {e}")))?;
        info!(
            valid,
            returned = paths.len(),
            live = want_live,
            "live and dead paths decided"
        );
        Ok(GcResults {
            paths,
            bytes_freed: 0,
        })
    }
}
