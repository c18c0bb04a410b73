//! A bounded in-memory cache of valid paths' metadata.
//!
//! `QueryPathInfo` and `IsValidPath` are what clients send most, and most of them ask about the
//! same closure again and again. Nix keeps such a cache in each store object (one per daemon
//! connection, since nix-daemon forks); we keep one for the whole process, shared by all
//! connections, and invalidate an entry whenever this process changes its row.
//!
//! Only valid paths are cached: a path that is not valid may become valid at any moment
//! (another process sharing the database may register it) and is always looked up.
//!
//! A reader that looked a row up while a writer changed it must not put the old row back after
//! the writer invalidated it. So the cache has a generation, bumped by every invalidation under
//! the same lock: a reader takes the generation before its query and inserts only if it is
//! still the same afterwards.

use std::sync::{Arc, Mutex};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::PathInfo;

/// Bytes of metadata kept (estimated: the strings and references of each entry).
const CACHE_BYTES: u64 = 4 * 1024 * 1024;
/// Entries the cache is sized for (quick_cache needs an estimate).
const CACHE_ITEMS: usize = 8192;

#[derive(Clone, Copy)]
struct InfoWeight;

impl Weighter<String, Arc<PathInfo>> for InfoWeight {
    fn weight(&self, key: &String, info: &Arc<PathInfo>) -> u64 {
        // Fixed part, then what grows: signatures, content address, references.
        let sigs: usize = info.sigs.iter().map(|s| s.len() + 32).sum();
        let refs = info.references.len() * 96;
        let ca = info.ca.as_ref().map_or(0, String::len);
        (key.len() + 256 + sigs + refs + ca) as u64
    }
}

/// The cache; see the module documentation.
pub(crate) struct InfoCache {
    entries: Cache<String, Arc<PathInfo>, InfoWeight>,
    generation: Mutex<u64>,
}

impl std::fmt::Debug for InfoCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfoCache")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl InfoCache {
    pub(crate) fn new() -> InfoCache {
        InfoCache {
            entries: Cache::with_weighter(CACHE_ITEMS, CACHE_BYTES, InfoWeight),
            generation: Mutex::new(0),
        }
    }

    /// The cached metadata of the path with this base name.
    pub(crate) fn get(&self, base_name: &str) -> Option<Arc<PathInfo>> {
        self.entries.get(base_name)
    }

    /// The generation to pass to [`InfoCache::insert`] after looking a row up.
    pub(crate) fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Caches `info`, read while the cache was at `generation`, unless something was
    /// invalidated since.
    pub(crate) fn insert(&self, generation: u64, info: Arc<PathInfo>) {
        let current = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        if *current == generation {
            self.entries.insert(info.path.base_name().to_owned(), info);
        }
    }

    /// Forgets these paths (their rows changed or are about to disappear).
    pub(crate) fn invalidate<'a>(&self, base_names: impl IntoIterator<Item = &'a str>) {
        let mut current = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *current += 1;
        for name in base_names {
            self.entries.remove(name);
        }
    }

    /// Forgets `base_names`, then caches `fresh` (rows this process just wrote) if nothing was
    /// invalidated since `generation` was taken, before the write: a change made meanwhile by
    /// another writer of this process could be newer than `fresh`.
    pub(crate) fn replace<'a>(
        &self,
        generation: u64,
        base_names: impl IntoIterator<Item = &'a str>,
        fresh: Vec<PathInfo>,
    ) {
        let mut current = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let unchanged = *current == generation;
        *current += 1;
        for name in base_names {
            self.entries.remove(name);
        }
        if unchanged {
            for info in fresh {
                self.entries
                    .insert(info.path.base_name().to_owned(), Arc::new(info));
            }
        }
    }

    /// Forgets everything (to give memory back when the daemon is idle).
    pub(crate) fn clear(&self) {
        let mut current = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *current += 1;
        self.entries.clear();
    }
}
