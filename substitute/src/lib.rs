//! Nix binary caches as substituters: what the daemon does with `substituters`,
//! `trusted-public-keys` and `require-sigs`.
//!
//! * Every path is looked up at once (at most `http-connections` requests in flight to each
//!   cache, so that a slow cache's requests never queue up the others'). For each path the
//!   caches are asked in order of priority (best, lowest, first), the next one as soon as the
//!   one before says it has no such path or after [`CACHE_STAGGER`] without an answer; the
//!   answer of the best priority is taken. A cache that is down answers nothing; one that is
//!   slow is waited for only [`SLOW_CACHE_GRACE`] once a cache of worse priority has the
//!   path, and afterwards, for [`SLOW_CACHE_PENALTY`], it is asked only about paths no other
//!   cache has (so a mass query does not open and drop a request to it per path).
//! * A narinfo must be signed by a trusted key unless `require-sigs` is off (or the path is
//!   content-addressed and its address checks out, which the store verifies on ingest); an
//!   unsigned or wrongly signed one is refused with a warning naming the cache and the path.
//! * A NAR streams from the cache through its decompressor (xz, zstd, bzip2, none) into the
//!   store's ingester, which checks its size and hash before the path becomes valid: a
//!   tampered NAR registers nothing. A path's references are substituted before it, several
//!   paths at once; a transfer that breaks is tried again after a pause.
//! * HTTPS trusts the authorities of `ssl-cert-file`, and requests carry the login that
//!   `netrc-file` gives their host ([`Http`], [`netrc`]).
//! * `--repair` fetches a damaged path again ([`Substituters::repair_path`]).

mod cache;
mod disk_cache;
mod http;
pub mod netrc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub use cache::{BinaryCache, NarSource};
pub use disk_cache::{NarinfoDiskCache, RecordedLookup};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
pub use http::{Http, read_netrc, trusted_certificates};
use pkgchain_store::Store;
use pkgchain_store_model::narinfo::NarInfo;
use pkgchain_store_model::path_info::ValidPathInfo;
use pkgchain_store_model::signature::TrustedKeys;
use pkgchain_store_model::store_path::{StoreDir, StorePath};
use thiserror::Error;
use tokio::sync::Semaphore;
use tracing::{Instrument, info_span, warn};

/// How long a cache of better priority is still waited for once a worse one has a path.
pub const SLOW_CACHE_GRACE: Duration = Duration::from_millis(300);

/// How long a cache is given to answer about a path before the cache of next priority is asked
/// too (the first to answer without the path lets the next be asked at once).
pub const CACHE_STAGGER: Duration = Duration::from_millis(100);

/// Lookups kept on record at most (a long-running daemon asks about ever more paths): past
/// this, the stale ones go, and if that is not enough, all of them.
const MAX_RECORDED_LOOKUPS: usize = 100_000;

/// How long a cache that was not waited for is asked only about paths no other cache has.
pub const SLOW_CACHE_PENALTY: Duration = Duration::from_secs(60);

/// What went wrong with a cache or a substitution.
#[derive(Debug, Clone, Error)]
pub enum SubstituteError {
    /// A `substituters` entry that is no cache URL.
    #[error("invalid substituter '{url}': {why}")]
    BadUrl {
        /// The entry.
        url: String,
        /// Why.
        why: String,
    },
    /// A setting names a file that cannot be used (`ssl-cert-file`, `netrc-file`).
    #[error("setting '{name}' ('{value}'): {why}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// The cache cannot be used (no `nix-cache-info`, another store directory, down).
    #[error("{0}")]
    CacheUnusable(String),
    /// A download failed.
    #[error("unable to download '{url}': {why}")]
    Transfer {
        /// What was asked for.
        url: String,
        /// Why it failed.
        why: String,
    },
    /// A narinfo that cannot be used.
    #[error("binary cache '{cache}' has a bad narinfo for '{path}': {why}")]
    BadNarInfo {
        /// The cache.
        cache: String,
        /// The path.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// No cache offers a path (a reference of something being substituted).
    #[error("path '{0}' is required, but there is no substituter that can provide it")]
    NoSubstitute(String),
    /// The store could not say which paths are valid.
    #[error("reading the store's valid paths: {0}")]
    Store(String),
    /// The store refused the NAR (hash or size mismatch, bad contents) or failed.
    #[error("substituting '{path}' from '{cache}': {why}")]
    Ingest {
        /// The path.
        path: String,
        /// The cache it came from.
        cache: String,
        /// The store's error.
        why: String,
    },
}

/// How substitution is set up (Nix's settings of the same names).
#[derive(Debug, Clone)]
pub struct SubstituterSettings {
    /// `substituters`, in order.
    pub urls: Vec<String>,
    /// `trusted-public-keys`.
    pub trusted_keys: TrustedKeys,
    /// `require-sigs`.
    pub require_sigs: bool,
    /// `http-connections`: requests in flight at once to each cache (0: Nix's default, 25).
    pub http_connections: usize,
    /// `max-substitution-jobs`: paths downloaded at once (0: Nix's default, 16).
    pub max_jobs: usize,
    /// `download-attempts`: tries per NAR transfer.
    pub download_attempts: u32,
    /// `narinfo-cache-positive-ttl`.
    pub positive_ttl: Duration,
    /// `narinfo-cache-negative-ttl`.
    pub negative_ttl: Duration,
    /// `stalled-download-timeout`: a transfer that delivers nothing for this long is broken
    /// (and tried again).
    pub stalled_timeout: Duration,
    /// `ssl-cert-file`: the only certificate authorities trusted for HTTPS. `None` (Nix: the
    /// setting is empty) trusts the system's and Mozilla's authorities; Nix would then not
    /// check certificates at all.
    pub ca_file: Option<std::path::PathBuf>,
    /// `netrc-file`: logins for the caches' hosts (a missing file gives none).
    pub netrc_file: Option<std::path::PathBuf>,
}

impl Default for SubstituterSettings {
    fn default() -> SubstituterSettings {
        SubstituterSettings {
            urls: Vec::new(),
            trusted_keys: TrustedKeys::new(),
            require_sigs: true,
            http_connections: 25,
            max_jobs: 16,
            download_attempts: 5,
            positive_ttl: Duration::from_secs(30 * 24 * 3600),
            negative_ttl: Duration::from_secs(3600),
            stalled_timeout: Duration::from_secs(300),
            ca_file: None,
            netrc_file: None,
        }
    }
}

/// A path some cache offers, with the narinfo it offers it with.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The cache.
    pub cache: Arc<BinaryCache>,
    /// Its narinfo for the path.
    pub narinfo: Arc<NarInfo>,
}

/// The answers to one query: offers, and warnings for the client (refused narinfos, caches
/// that could not be asked).
#[derive(Debug, Default)]
pub struct Answers {
    /// The chosen offer per path that some cache has.
    pub offers: BTreeMap<StorePath, Offer>,
    /// What the client should be told.
    pub warnings: Vec<String>,
}

/// The configured caches, with a shared HTTP client and a cache of narinfo lookups.
#[derive(Debug)]
pub struct Substituters {
    caches: Vec<Arc<BinaryCache>>,
    settings: SubstituterSettings,
    store_dir: StoreDir,
    http: Http,
    /// Requests in flight to each cache (by index), at most `http-connections`.
    requests: Vec<Semaphore>,
    /// Until when each cache (by index) counts as slow: asked last, see [`SLOW_CACHE_PENALTY`].
    slow_until: std::sync::Mutex<Vec<Option<Instant>>>,
    /// (cache index, hash part) -> until when the lookup holds (its TTL), and what was found
    /// (trusted or not).
    looked_up: std::sync::Mutex<HashMap<(usize, String), (Instant, Lookup)>>,
    /// The lookups of HTTP caches on disk, which outlive the daemon (as Nix's disk cache).
    disk: Option<Arc<NarinfoDiskCache>>,
}

/// A cache by index, with its priority.
type Ranked = (usize, i32);

/// What a cache said about a path.
#[derive(Debug, Clone)]
enum Lookup {
    /// It has no such path.
    Absent,
    /// It has it, with this narinfo.
    Present(Arc<NarInfo>),
}

impl Substituters {
    /// The caches of `settings.urls` (an entry that is no cache URL is an error).
    pub fn new(
        settings: SubstituterSettings,
        store_dir: StoreDir,
    ) -> Result<Substituters, SubstituteError> {
        let caches = settings
            .urls
            .iter()
            .map(|u| BinaryCache::new(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let connections = if settings.http_connections == 0 {
            25
        } else {
            settings.http_connections
        };
        let http = Http::new(&settings, connections);
        let requests = (0..caches.len())
            .map(|_| Semaphore::new(connections))
            .collect();
        let slow_until = std::sync::Mutex::new(vec![None; caches.len()]);
        Ok(Substituters {
            slow_until,
            caches,
            settings,
            store_dir,
            http,
            requests,
            looked_up: std::sync::Mutex::new(HashMap::new()),
            disk: None,
        })
    }

    /// Keeps the lookups of the HTTP caches in `disk` too, and answers from it within the
    /// TTLs (Nix keeps no such record for `file://` caches either).
    pub fn with_disk_cache(mut self, disk: Arc<NarinfoDiskCache>) -> Substituters {
        self.disk = Some(disk);
        self
    }

    /// Whether any cache is configured.
    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    /// Which of `paths` the caches offer, each from the cache of best priority that answers
    /// in time with a narinfo this daemon may trust.
    pub async fn query(&self, paths: &[StorePath]) -> Answers {
        let mut answers = Answers::default();
        if self.caches.is_empty() || paths.is_empty() {
            return answers;
        }
        // The caches' priorities (a cache that cannot be used is left out, with a warning).
        let infos = futures::future::join_all(
            self.caches
                .iter()
                .map(|cache| cache.info(&self.http, &self.store_dir)),
        )
        .await;
        let mut usable: Vec<(usize, i32)> = Vec::new();
        for (i, info) in infos.into_iter().enumerate() {
            match info {
                Ok(info) => usable.push((i, self.caches[i].priority(info))),
                Err((e, first)) => {
                    if first {
                        answers.warnings.push(format!("warning: {e}"));
                    }
                }
            }
        }
        self.recall_from_disk(&usable, paths).await;
        // Every path at once: `lookup` keeps to `http-connections` requests in flight.
        let mut all = FuturesUnordered::new();
        for path in paths {
            all.push(self.query_one(path, &usable));
        }
        while let Some((path, offer, warnings)) = all.next().await {
            answers.warnings.extend(warnings);
            if let Some(offer) = offer {
                answers.offers.insert(path, offer);
            }
        }
        answers
    }

    /// One path, asked of the usable caches in order of priority, each [`CACHE_STAGGER`] after
    /// the one before unless that one answered sooner without the path (the slow ones only
    /// when no other cache has it).
    async fn query_one(
        &self,
        path: &StorePath,
        usable: &[(usize, i32)],
    ) -> (StorePath, Option<Offer>, Vec<String>) {
        enum Event<T> {
            Answer(Option<T>),
            Stagger,
            Deadline,
        }
        let mut warnings = Vec::new();
        let (mut deferred, mut to_ask): (Vec<Ranked>, Vec<Ranked>) = usable
            .iter()
            .partition(|&&(i, _)| self.is_slow(i) && !self.answered(i, path));
        to_ask.sort_by_key(|&(i, priority)| (priority, i));
        let mut to_ask: std::collections::VecDeque<(usize, i32)> = to_ask.into();
        let mut pending = FuturesUnordered::new();
        let mut outstanding: Vec<(usize, i32)> = Vec::new();
        // The best acceptable answer so far: (priority, cache index, offer).
        let mut best: Option<(i32, usize, Offer)> = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut stagger: Option<tokio::time::Instant> = None;
        // Asks the next cache in order; returns when to ask the one after it.
        let ask_next = |to_ask: &mut std::collections::VecDeque<Ranked>,
                        pending: &mut FuturesUnordered<_>,
                        outstanding: &mut Vec<Ranked>| {
            if let Some((i, priority)) = to_ask.pop_front() {
                pending.push(self.lookup_ranked(i, priority, path, true));
                outstanding.push((i, priority));
            }
            (!to_ask.is_empty()).then(|| tokio::time::Instant::now() + CACHE_STAGGER)
        };
        loop {
            if pending.is_empty() {
                if !to_ask.is_empty() {
                    stagger = ask_next(&mut to_ask, &mut pending, &mut outstanding);
                } else if best.is_none() && !deferred.is_empty() {
                    // No other cache has it: the slow ones are asked after all.
                    for (i, priority) in deferred.drain(..) {
                        pending.push(self.lookup_ranked(i, priority, path, false));
                        outstanding.push((i, priority));
                    }
                } else {
                    break;
                }
            }
            let event = tokio::select! {
                answer = pending.next() => Event::Answer(answer),
                () = sleep_until(stagger), if stagger.is_some() => Event::Stagger,
                () = sleep_until(deadline), if deadline.is_some() => Event::Deadline,
            };
            let (i, priority, found) = match event {
                Event::Answer(Some(answer)) => answer,
                Event::Answer(None) => continue,
                Event::Stagger => {
                    // The caches asked so far are taking their time: the next one too.
                    stagger = ask_next(&mut to_ask, &mut pending, &mut outstanding);
                    continue;
                }
                Event::Deadline => {
                    // Only caches of better priority are still out, and they are slow.
                    let late: Vec<usize> = outstanding.iter().map(|&(k, _)| k).collect();
                    self.mark_slow(&late);
                    break;
                }
            };
            outstanding.retain(|&(k, _)| k != i);
            let cache = &self.caches[i];
            let Some(found) = found else {
                // Found slow meanwhile: asked only if no other cache has the path.
                deferred.push((i, priority));
                continue;
            };
            match found {
                Ok(Lookup::Absent) => {}
                Ok(Lookup::Present(narinfo)) => {
                    if !self.may_trust(&narinfo) {
                        warnings.push(format!(
                            "warning: substituter '{}' does not have a valid signature for path '{}'",
                            cache.url(),
                            self.store_dir.display(path)
                        ));
                    } else if best
                        .as_ref()
                        .is_none_or(|(p, j, _)| (priority, i) < (*p, *j))
                    {
                        best = Some((
                            priority,
                            i,
                            Offer {
                                cache: cache.clone(),
                                narinfo,
                            },
                        ));
                    }
                }
                Err(e) => warnings.push(format!("warning: {e}")),
            }
            match &best {
                Some((p, j, _)) => {
                    // The caches not asked yet come after it in order; of those still out,
                    // only better ones are worth a wait.
                    let can_beat = outstanding.iter().any(|&(k, q)| (q, k) < (*p, *j));
                    if !can_beat {
                        break;
                    }
                    stagger = None;
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + SLOW_CACHE_GRACE);
                }
                None if !to_ask.is_empty() => {
                    // No offer yet: the next cache is asked now rather than after the pause.
                    stagger = ask_next(&mut to_ask, &mut pending, &mut outstanding);
                }
                None => {}
            }
        }
        (path.clone(), best.map(|(_, _, o)| o), warnings)
    }

    /// Whether cache `i` was not waited for lately.
    fn is_slow(&self, i: usize) -> bool {
        let slow = self.slow_until.lock().unwrap_or_else(|e| e.into_inner());
        slow.get(i)
            .copied()
            .flatten()
            .is_some_and(|until| Instant::now() < until)
    }

    /// Caches `indices` were not waited for: asked last for a while.
    fn mark_slow(&self, indices: &[usize]) {
        let until = Instant::now() + SLOW_CACHE_PENALTY;
        let mut slow = self.slow_until.lock().unwrap_or_else(|e| e.into_inner());
        for &i in indices {
            if let Some(s) = slow.get_mut(i) {
                if s.is_none_or(|t| t < Instant::now()) {
                    warn!(cache = %self.caches[i].url(), "a cache did not answer in time; asked last for a while");
                }
                *s = Some(until);
            }
        }
    }

    /// [`Substituters::lookup`] with the cache's index and priority attached. With
    /// `unless_slow`, a lookup whose turn comes after the cache was found slow is not made
    /// (`None`): it is asked later only if no other cache has the path.
    async fn lookup_ranked(
        &self,
        i: usize,
        priority: i32,
        path: &StorePath,
        unless_slow: bool,
    ) -> (usize, i32, Option<Result<Lookup, SubstituteError>>) {
        (i, priority, self.lookup(i, path, unless_slow).await)
    }

    /// Whether cache `i` has an answer about `path` on record (fresh).
    fn answered(&self, i: usize, path: &StorePath) -> bool {
        self.recorded(i, path).is_some()
    }

    /// A fresh recorded lookup.
    fn recorded(&self, i: usize, path: &StorePath) -> Option<Lookup> {
        let map = self.looked_up.lock().unwrap_or_else(|e| e.into_inner());
        let (until, lookup) = map.get(&(i, path.hash_part().to_owned()))?;
        (Instant::now() < *until).then(|| lookup.clone())
    }

    /// How long a lookup holds (`narinfo-cache-*-ttl`).
    fn ttl(&self, lookup: &Lookup) -> Duration {
        match lookup {
            Lookup::Absent => self.settings.negative_ttl,
            Lookup::Present(_) => self.settings.positive_ttl,
        }
    }

    /// Asks cache `i` about `path` (or answers from the record of an earlier lookup).
    async fn lookup(
        &self,
        i: usize,
        path: &StorePath,
        unless_slow: bool,
    ) -> Option<Result<Lookup, SubstituteError>> {
        if let Some(known) = self.recorded(i, path) {
            return Some(Ok(known));
        }
        let _permit = self.requests[i].acquire().await;
        if unless_slow && self.is_slow(i) {
            return None;
        }
        let found = match self.caches[i]
            .narinfo(&self.http, &self.store_dir, path)
            .await
        {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
        if let Some(disk) = self.disk_of(i) {
            let text = found.as_ref().map(NarInfo::to_text);
            disk.put(self.caches[i].url(), path.hash_part(), text);
        }
        let lookup = match found {
            Some(n) => Lookup::Present(Arc::new(n)),
            None => Lookup::Absent,
        };
        self.record(i, path, lookup.clone(), Duration::ZERO);
        Some(Ok(lookup))
    }

    /// The disk record, for cache `i` when it is an HTTP cache.
    fn disk_of(&self, i: usize) -> Option<&Arc<NarinfoDiskCache>> {
        self.disk
            .as_ref()
            .filter(|_| self.caches.get(i).is_some_and(|c| c.is_http()))
    }

    /// Puts on record in memory what the disk record says the `usable` HTTP caches said about
    /// `paths` (those not on record in memory), where that is within its TTL and, for a
    /// narinfo, still parses as one of the path.
    async fn recall_from_disk(&self, usable: &[Ranked], paths: &[StorePath]) {
        for &(i, _) in usable {
            let Some(disk) = self.disk_of(i) else {
                continue;
            };
            let unknown: HashMap<&str, &StorePath> = paths
                .iter()
                .filter(|p| self.recorded(i, p).is_none())
                .map(|p| (p.hash_part(), p))
                .collect();
            let hash_parts: Vec<&str> = unknown.keys().copied().collect();
            for (hash_part, recorded) in disk.get_many(self.caches[i].url(), &hash_parts).await {
                let Some(&path) = unknown.get(hash_part.as_str()) else {
                    continue;
                };
                let lookup = match &recorded.narinfo {
                    None => Lookup::Absent,
                    Some(text) => match NarInfo::parse_bytes(text.as_bytes(), &self.store_dir) {
                        Ok(n) if n.store_path == *path => Lookup::Present(Arc::new(n)),
                        _ => continue,
                    },
                };
                if recorded.age < self.ttl(&lookup) {
                    self.record(i, path, lookup, recorded.age);
                }
            }
        }
    }

    /// Puts a lookup made `age` ago on record, keeping the record within
    /// [`MAX_RECORDED_LOOKUPS`].
    fn record(&self, i: usize, path: &StorePath, lookup: Lookup, age: Duration) {
        let now = Instant::now();
        // A TTL too large for the clock holds for a century.
        let until = now
            .checked_add(self.ttl(&lookup).saturating_sub(age))
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
            .unwrap_or(now);
        let mut map = self.looked_up.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_RECORDED_LOOKUPS {
            map.retain(|_, (until, _)| now < *until);
            if map.len() >= MAX_RECORDED_LOOKUPS {
                map.clear();
            }
        }
        map.insert((i, path.hash_part().to_owned()), (until, lookup));
    }

    /// Whether a narinfo may be used: signed by a trusted key, or signatures not required,
    /// or content-addressed (the store checks the address against the contents).
    fn may_trust(&self, narinfo: &NarInfo) -> bool {
        !self.settings.require_sigs
            || narinfo.is_trusted(&self.settings.trusted_keys, 1)
            || narinfo.is_content_addressed()
    }

    /// Substitutes `wanted` (those not valid yet) with every reference they need, references
    /// first, up to `max-substitution-jobs` at once. Messages for the client go to `tell`.
    /// Returns the paths substituted; on error, what was substituted before it stays valid.
    pub async fn substitute_closure(
        &self,
        store: &Store,
        wanted: &[StorePath],
        tell: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Vec<StorePath>, SubstituteError> {
        let plan = self.plan(store, wanted, tell).await?;
        let mut waiting: BTreeMap<StorePath, BTreeSet<StorePath>> = plan
            .iter()
            .map(|(p, offer)| {
                let refs = offer
                    .narinfo
                    .references
                    .iter()
                    .filter(|r| *r != p && plan.contains_key(*r))
                    .cloned()
                    .collect();
                (p.clone(), refs)
            })
            .collect();
        let jobs = if self.settings.max_jobs == 0 {
            16
        } else {
            self.settings.max_jobs
        };
        let mut running = FuturesUnordered::new();
        let mut done = Vec::new();
        loop {
            let ready: Vec<StorePath> = waiting
                .iter()
                .filter(|(_, refs)| refs.is_empty())
                .map(|(p, _)| p.clone())
                .take(jobs.saturating_sub(running.len()))
                .collect();
            for p in ready {
                waiting.remove(&p);
                let offer = plan[&p].clone();
                tell(format!(
                    "copying path '{}' from '{}'...",
                    self.store_dir.display(&p),
                    offer.cache.url()
                ));
                let span = info_span!("substitute", path = %p, cache = offer.cache.url());
                running.push(
                    async move {
                        let r = self.fetch_one(store, &offer, false).await;
                        (p, r)
                    }
                    .instrument(span),
                );
            }
            let Some((p, result)) = running.next().await else {
                break;
            };
            result?;
            for refs in waiting.values_mut() {
                refs.remove(&p);
            }
            done.push(p);
        }
        if let Some((stuck, _)) = waiting.iter().next() {
            // Only a reference cycle between narinfos leaves paths waiting.
            return Err(SubstituteError::NoSubstitute(self.store_dir.display(stuck)));
        }
        Ok(done)
    }

    /// Nix's substitution in repair mode: `path` (valid, but its contents damaged, or not
    /// valid) is fetched again from the best cache that offers it and ingested in repair
    /// mode, which writes its damaged blocks again and registers it anew. Its references are
    /// substituted first where they are not valid. `NoSubstitute` when no cache has it.
    pub async fn repair_path(
        &self,
        store: &Store,
        path: &StorePath,
        tell: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), SubstituteError> {
        let span = info_span!("repair_by_substitution", path = %path);
        async {
            let answers = self.query(std::slice::from_ref(path)).await;
            for w in answers.warnings {
                tell(w);
            }
            let Some(offer) = answers.offers.get(path) else {
                return Err(SubstituteError::NoSubstitute(self.store_dir.display(path)));
            };
            let references: Vec<StorePath> = offer
                .narinfo
                .references
                .iter()
                .filter(|r| *r != path)
                .cloned()
                .collect();
            self.substitute_closure(store, &references, tell).await?;
            tell(format!(
                "copying path '{}' from '{}'...",
                self.store_dir.display(path),
                offer.cache.url()
            ));
            self.fetch_one(store, offer, true).await.map(|_| ())
        }
        .instrument(span)
        .await
    }

    /// Every path to substitute for `wanted`: those not valid, with their references that are
    /// not valid either, each with its offer. A path no cache offers is an error.
    async fn plan(
        &self,
        store: &Store,
        wanted: &[StorePath],
        tell: &(dyn Fn(String) + Send + Sync),
    ) -> Result<BTreeMap<StorePath, Offer>, SubstituteError> {
        let mut plan: BTreeMap<StorePath, Offer> = BTreeMap::new();
        let mut level: Vec<StorePath> = wanted.to_vec();
        let mut seen: BTreeSet<StorePath> = level.iter().cloned().collect();
        while !level.is_empty() {
            // One database query per level, not one per path.
            let valid = store
                .query_valid_paths(&level)
                .await
                .map_err(|e| SubstituteError::Store(e.to_string()))?;
            let missing: Vec<StorePath> =
                level.into_iter().filter(|p| !valid.contains(p)).collect();
            let answers = self.query(&missing).await;
            for w in answers.warnings {
                tell(w);
            }
            let mut next = Vec::new();
            for p in missing {
                let Some(offer) = answers.offers.get(&p) else {
                    return Err(SubstituteError::NoSubstitute(self.store_dir.display(&p)));
                };
                for r in &offer.narinfo.references {
                    if seen.insert(r.clone()) {
                        next.push(r.clone());
                    }
                }
                plan.insert(p, offer.clone());
            }
            level = next;
        }
        Ok(plan)
    }

    /// Downloads one path into the store (in repair mode: again, though valid), trying again
    /// when the transfer breaks.
    async fn fetch_one(
        &self,
        store: &Store,
        offer: &Offer,
        repair: bool,
    ) -> Result<pkgchain_store::PathInfo, SubstituteError> {
        let narinfo = &offer.narinfo;
        let shown = narinfo.absolute_path();
        let valid = ValidPathInfo::from(narinfo.as_ref());
        let attempts = self.settings.download_attempts.max(1);
        let mut attempt = 1;
        loop {
            let broken = Arc::new(AtomicBool::new(false));
            let result = match offer.cache.nar(&self.http, narinfo, broken.clone()).await {
                // Decompressed on the blocking thread that feeds the ingester: no hop more.
                Ok(source) => {
                    let (store, valid) = (store.clone(), valid.clone());
                    let ingested = tokio::task::spawn_blocking(move || {
                        let mut nar = source.into_blocking_reader().map_err(|e| e.to_string())?;
                        store
                            .add_nar_blocking(&valid, &mut nar, repair)
                            .map_err(|e| e.to_string())
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("internal error: {e}")));
                    ingested.map_err(|why| SubstituteError::Ingest {
                        path: shown.clone(),
                        cache: offer.cache.url().to_owned(),
                        why,
                    })
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(info) => return Ok(info),
                Err(e)
                    if attempt < attempts && broken.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    let pause = Duration::from_millis(250) * 2u32.saturating_pow(attempt - 1);
                    warn!(path = %shown, error = %e, attempt, "transfer failed; trying again");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sleeps until `at` (never, when there is none; callers guard on that).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod http_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use pkgchain_store_model::hash::{Hash, sha256};
    use pkgchain_store_model::signature::SecretKey;

    fn path(i: u8) -> StorePath {
        StorePath::from_base_name(&format!("{:0>32}-p{i}", i)).expect("path")
    }

    /// A `file://` cache in `dir` with `nix-cache-info` at `priority` and a narinfo per path,
    /// signed with `key` (when given) and naming `tag` in its URL.
    fn cache(
        dir: &std::path::Path,
        priority: i32,
        paths: &[StorePath],
        key: Option<&SecretKey>,
        tag: &str,
    ) {
        std::fs::create_dir_all(dir).expect("dir");
        std::fs::write(
            dir.join("nix-cache-info"),
            format!("StoreDir: /nix/store\nPriority: {priority}\n"),
        )
        .expect("info");
        for p in paths {
            let mut info = NarInfo::new(
                StoreDir::default(),
                p.clone(),
                format!("nar/{tag}.nar"),
                Hash::sha256(sha256(b"x")),
                8,
            );
            if let Some(key) = key {
                info.sign(key).expect("sign");
            }
            std::fs::write(
                dir.join(format!("{}.narinfo", p.hash_part())),
                info.to_text(),
            )
            .expect("narinfo");
        }
    }

    fn settings(urls: Vec<String>, key: &SecretKey) -> SubstituterSettings {
        let mut trusted_keys = TrustedKeys::new();
        trusted_keys.insert(key.to_public_key());
        SubstituterSettings {
            urls,
            trusted_keys,
            ..SubstituterSettings::default()
        }
    }

    #[tokio::test]
    async fn the_best_priority_wins_and_untrusted_narinfos_are_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = SecretKey::from_seed_bytes("good-1", [7; 32]).expect("key");
        let other = SecretKey::from_seed_bytes("other-1", [8; 32]).expect("key");
        let (a, b, c, d) = (path(1), path(2), path(3), path(4));
        // "low" is listed first but has the worse priority; "high" lacks `b`; "rogue" signs
        // with a key nobody trusts and is the only one with `c`.
        cache(
            &tmp.path().join("low"),
            50,
            &[a.clone(), b.clone()],
            Some(&key),
            "low",
        );
        cache(
            &tmp.path().join("high"),
            10,
            std::slice::from_ref(&a),
            Some(&key),
            "high",
        );
        cache(
            &tmp.path().join("rogue"),
            1,
            &[a.clone(), c.clone()],
            Some(&other),
            "rogue",
        );
        let url = |n: &str| format!("file://{}", tmp.path().join(n).display());
        let subs = Substituters::new(
            settings(
                vec![url("low"), url("high"), url("rogue"), url("missing")],
                &key,
            ),
            StoreDir::default(),
        )
        .expect("substituters");
        let answers = subs
            .query(&[a.clone(), b.clone(), c.clone(), d.clone()])
            .await;
        let from = |p: &StorePath| answers.offers.get(p).map(|o| o.narinfo.url.clone());
        assert_eq!(from(&a).as_deref(), Some("nar/high.nar"));
        assert_eq!(from(&b).as_deref(), Some("nar/low.nar"));
        assert_eq!(from(&c), None);
        assert_eq!(from(&d), None);
        let rogue = url("rogue");
        assert!(
            answers.warnings.iter().any(|w| w.contains(&format!(
                "substituter '{rogue}' does not have a valid signature for path '/nix/store/{c}'"
            ))),
            "{:?}",
            answers.warnings
        );
        // The cache without nix-cache-info is named once, not on every query.
        let missing = answers
            .warnings
            .iter()
            .filter(|w| w.contains("does not appear to be a binary cache"))
            .count();
        assert_eq!(missing, 1, "{:?}", answers.warnings);
        let again = subs.query(std::slice::from_ref(&a)).await;
        assert!(
            !again.warnings.iter().any(|w| w.contains("does not appear")),
            "{:?}",
            again.warnings
        );

        // Without require-sigs, the rogue cache's offer is taken (it has the best priority).
        let mut lax = settings(vec![url("low"), url("rogue")], &key);
        lax.require_sigs = false;
        let subs = Substituters::new(lax, StoreDir::default()).expect("substituters");
        let answers = subs.query(&[a.clone(), c.clone()]).await;
        assert_eq!(
            answers.offers.get(&a).map(|o| o.narinfo.url.as_str()),
            Some("nar/rogue.nar")
        );
        assert!(answers.offers.contains_key(&c));
    }

    #[tokio::test]
    async fn a_narinfo_for_another_path_is_an_error_naming_both() {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = SecretKey::from_seed_bytes("good-1", [7; 32]).expect("key");
        let dir = tmp.path().join("c");
        cache(&dir, 10, &[path(1)], Some(&key), "x");
        // p2's narinfo file holds p1's narinfo.
        let p1 = std::fs::read(dir.join(format!("{}.narinfo", path(1).hash_part()))).expect("read");
        std::fs::write(dir.join(format!("{}.narinfo", path(2).hash_part())), p1).expect("write");
        let subs = Substituters::new(
            settings(vec![format!("file://{}", dir.display())], &key),
            StoreDir::default(),
        )
        .expect("substituters");
        let answers = subs.query(&[path(2)]).await;
        assert!(answers.offers.is_empty());
        assert!(
            answers
                .warnings
                .iter()
                .any(|w| w.contains("has a bad narinfo") && w.contains("describes")),
            "{:?}",
            answers.warnings
        );
    }
}
