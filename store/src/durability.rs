//! When added paths are on disk, and recovery after a crash that lost some of them.
//!
//! Nix registers a path once its files are written and leaves them to the kernel's writeback
//! unless `fsync-store-paths = true`. We offer the same two choices ([`crate::Durability`]):
//!
//! - [`crate::Durability::EachCommit`]: every add syncs its blocks before the path becomes valid.
//!   The `pkgchain` command line tool and `fsync-store-paths = true` use it.
//! - [`crate::Durability::Deferred`]: an add links its blocks and registers the path at once; the
//!   daemon calls [`Store::flush_unsynced`] every few seconds and when it stops. Until then a
//!   power loss can lose recently added paths, as with Nix, but never leaves one valid with
//!   damaged contents: such registrations are listed in the database (`UnsyncedPaths`) and the
//!   block store keeps a marker; [`Store::open`] then checks every block written since the
//!   marker appeared, removes the damaged ones, and unregisters each listed path that lost a
//!   block, with every path referring to it, before anything is served.

use std::time::Duration;

use pkgchain_store_model::store_path::StorePath;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{Store, StoreError, blocking};

/// Clock slack when deciding which blocks were written after the marker appeared.
const CLOCK_SLACK: Duration = Duration::from_secs(120);

impl Store {
    /// Makes every path added so far durable (deferred durability): syncs the blocks, then
    /// forgets the registrations that were waiting for it. Cheap when nothing is waiting.
    pub async fn flush_unsynced(&self) -> Result<(), StoreError> {
        if !self.blocks().has_unsynced() {
            return Ok(());
        }
        let mark = self.db().unsynced_mark().await?;
        let store = self.clone();
        let flushed = blocking(move || Ok(store.blocks().flush()?)).await?;
        self.db().forget_unsynced(mark).await?;
        if flushed {
            debug!("unsynced blocks flushed");
        }
        Ok(())
    }

    /// At open: after a crash with unsynced blocks, removes damaged blocks and the paths that
    /// lost blocks (with their referrers); otherwise forgets stale unsynced rows.
    pub(crate) async fn recover_unsynced(&self) -> Result<(), StoreError> {
        // Rows up to `seen` were registered before the marker is looked at: with no marker
        // then, their blocks were synced (the marker goes only after a sync, and comes back
        // before anything more is linked).
        let seen = self.db().unsynced_mark().await?;
        let Some(since) = self.blocks().unsynced_since()? else {
            return Ok(self.db().forget_unsynced(seen).await?);
        };
        let span = info_span!("recover_unsynced");
        async {
            warn!("the store was not flushed when it was last used: checking recent writes");
            let since = since.checked_sub(CLOCK_SLACK).unwrap_or(since);
            let store = self.clone();
            let damaged_blocks =
                blocking(move || Ok(store.blocks().remove_damaged_since(since)?)).await?;
            let mut damaged: Vec<StorePath> = Vec::new();
            for path in self.db().unsynced_paths().await? {
                let blocks = self.db().path_blocks(&path).await?;
                let store = self.clone();
                let complete = blocking(move || {
                    for (cid, _) in &blocks {
                        if !store.blocks().contains(cid)? {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                })
                .await?;
                if !complete {
                    damaged.push(path);
                }
            }
            let removed = self.db().remove_with_referrers(&damaged).await?;
            for path in &removed {
                warn!(path = %self.store_dir().display(path), "unregistered: its contents were lost");
            }
            // Only what was registered before the sync is known to be on disk (a daemon may be
            // adding while another process opens the store).
            let mark = self.db().unsynced_mark().await?;
            let store = self.clone();
            blocking(move || Ok(store.blocks().flush()?)).await?;
            self.db().forget_unsynced(mark).await?;
            info!(
                damaged_blocks = damaged_blocks.len(),
                removed_paths = removed.len(),
                "recovered"
            );
            Ok(())
        }
        .instrument(span)
        .await
    }
}
