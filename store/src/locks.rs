//! Per-path locks within this process (what Nix's `PathLocks` on `<path>.lock` do between
//! processes): two tasks adding the same path take turns, and the second finds it valid.
//!
//! Between processes the database's write transactions are the arbiter: a path registered
//! twice ends up registered once, with its metadata updated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use pkgchain_store_model::store_path::StorePath;
use tokio::sync::OwnedMutexGuard;

/// Entries kept before dead ones are swept.
const SWEEP_AT: usize = 1024;

/// A lock per store path, created on demand and forgotten when nobody holds or waits for it.
#[derive(Debug, Default)]
pub(crate) struct PathLocks {
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    locks: HashMap<StorePath, Weak<tokio::sync::Mutex<()>>>,
    sweep_at: usize,
}

impl PathLocks {
    /// Waits for and takes the lock of `path`.
    pub(crate) async fn lock(&self, path: &StorePath) -> OwnedMutexGuard<()> {
        let lock = {
            let mut table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if table.locks.len() >= table.sweep_at.max(SWEEP_AT) {
                table.locks.retain(|_, w| w.strong_count() > 0);
                table.sweep_at = 2 * table.locks.len();
            }
            match table.locks.get(path).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    table.locks.insert(path.clone(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}
