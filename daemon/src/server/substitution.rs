//! Substitution from binary caches for a connection: which caches its settings name (Nix's
//! `substitute`, `substituters`, `trusted-public-keys`, `require-sigs`, `http-connections`,
//! `max-substitution-jobs`, `download-attempts`, `narinfo-cache-*-ttl`, `ssl-cert-file`,
//! `netrc-file`), and the operations that ask them (`QuerySubstitutablePathInfos` and the
//! other queries, `EnsurePath`, opaque paths of `BuildPaths`).
//!
//! Connections with the same settings share one [`Substituters`]: its HTTP connections and its
//! record of narinfo lookups.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pkgchain_protocol::reply::SubstitutablePathInfo;
use pkgchain_store_model::signature::TrustedKeys;
use pkgchain_store_model::store_path::StorePath;
use pkgchain_substitute::{NarinfoDiskCache, SubstituteError, SubstituterSettings, Substituters};

use super::connection::Conn;
use super::ops::{OpError, failed};
use crate::build::BuildEvent;

/// The most `http-connections` and `max-substitution-jobs` taken from a client.
const MAX_PARALLEL: u64 = 1024;

/// Nix's `narinfo-cache-positive-ttl` (30 days) and `narinfo-cache-negative-ttl` (an hour).
const DEFAULT_POSITIVE_TTL: u64 = 30 * 24 * 3600;
const DEFAULT_NEGATIVE_TTL: u64 = 3600;

/// Sets of settings whose substituters are kept for reuse.
const MAX_SETTINGS_IN_USE: usize = 64;

/// The substituters of each distinct set of settings in use.
#[derive(Debug, Default)]
pub struct SubstituterPool {
    by_settings: Mutex<HashMap<String, Arc<Substituters>>>,
    /// The narinfo lookups on disk, shared by all of them (none: kept in memory only).
    disk: Option<Arc<NarinfoDiskCache>>,
}

impl SubstituterPool {
    /// A pool whose substituters keep their HTTP caches' narinfo lookups in `file`, purged
    /// by the TTLs of the daemon's `config` (as Nix purges by its own settings).
    pub fn with_disk_cache(
        file: &std::path::Path,
        config: &crate::nix_conf::NixConfig,
    ) -> SubstituterPool {
        let ttl = |name: &str, default: u64| {
            let seconds = config.get(name).and_then(|v| v.trim().parse().ok());
            Duration::from_secs(seconds.unwrap_or(default))
        };
        let disk = NarinfoDiskCache::new(
            file,
            ttl("narinfo-cache-positive-ttl", DEFAULT_POSITIVE_TTL),
            ttl("narinfo-cache-negative-ttl", DEFAULT_NEGATIVE_TTL),
        );
        SubstituterPool {
            by_settings: Mutex::default(),
            disk: Some(Arc::new(disk)),
        }
    }

    /// Waits until the narinfo lookups made so far are on disk.
    pub async fn flush(&self) {
        if let Some(disk) = &self.disk {
            disk.flush().await;
        }
    }
}

impl Conn {
    /// A setting as this connection sees it: the client's accepted override, else the
    /// daemon's configuration (with Nix's default).
    pub(super) fn effective(&self, name: &str) -> Option<String> {
        self.settings
            .overrides
            .get(name)
            .cloned()
            .or_else(|| self.state.config.get_or_default(name).map(str::to_owned))
    }

    /// A list setting with its `extra-` form appended, as this connection sees it.
    fn effective_list(&self, name: &str) -> Vec<String> {
        let mut list: Vec<String> = self
            .effective(name)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if let Some(extra) = self.settings.overrides.get(&format!("extra-{name}")) {
            list.extend(extra.split_whitespace().map(str::to_owned));
        }
        list
    }

    /// A setting naming a file, as this connection sees it (`None` when empty).
    pub(super) fn file_setting(&self, name: &str) -> Option<std::path::PathBuf> {
        self.effective(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    }

    /// The caches this connection substitutes from, or `None` when substitution is off
    /// (`--no-substitute`, `substitute = false`) or no cache is configured.
    pub(super) fn substituters(&self) -> Result<Option<Arc<Substituters>>, OpError> {
        let flag = |name: &str, default: bool| -> Result<bool, OpError> {
            match self.effective(name).as_deref().map(str::trim) {
                None => Ok(default),
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(other) => Err(failed(format!(
                    "setting '{name}' is '{other}', which is not a Boolean"
                ))),
            }
        };
        let number = |name: &str, default: u64| -> Result<u64, OpError> {
            match self.effective(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| {
                    failed(format!("setting '{name}' is '{v}', which is not a number"))
                }),
            }
        };
        if !self.settings.use_substitutes || !flag("substitute", true)? {
            return Ok(None);
        }
        let urls = self.effective_list("substituters");
        if urls.is_empty() {
            return Ok(None);
        }
        let keys_text = self.effective_list("trusted-public-keys").join(" ");
        let trusted_keys = TrustedKeys::parse_list(&keys_text)
            .map_err(|e| failed(format!("setting 'trusted-public-keys': {e}")))?;
        let settings = SubstituterSettings {
            urls,
            trusted_keys,
            require_sigs: flag("require-sigs", true)?,
            // Bounded: each is a count of tasks and connections this daemon keeps.
            http_connections: number("http-connections", 25)?.min(MAX_PARALLEL) as usize,
            max_jobs: number("max-substitution-jobs", 16)?.min(MAX_PARALLEL) as usize,
            download_attempts: number("download-attempts", 5)?.min(100) as u32,
            positive_ttl: Duration::from_secs(number(
                "narinfo-cache-positive-ttl",
                DEFAULT_POSITIVE_TTL,
            )?),
            negative_ttl: Duration::from_secs(number(
                "narinfo-cache-negative-ttl",
                DEFAULT_NEGATIVE_TTL,
            )?),
            stalled_timeout: Duration::from_secs(
                number("stalled-download-timeout", 300)?.clamp(1, 24 * 3600),
            ),
            ca_file: self.file_setting("ssl-cert-file"),
            netrc_file: self.file_setting("netrc-file"),
        };
        let key = format!("{settings:?}");
        let pool = &self.state.substituters;
        let mut map = pool.by_settings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&key) {
            return Ok(Some(s.clone()));
        }
        let mut subs = Substituters::new(settings, self.state.store.store_dir().clone())
            .map_err(|e| failed(e.to_string()))?;
        if let Some(disk) = &pool.disk {
            subs = subs.with_disk_cache(disk.clone());
        }
        let subs = Arc::new(subs);
        if map.len() >= MAX_SETTINGS_IN_USE {
            // Connections keep their own; a later one with those settings starts afresh.
            map.clear();
        }
        map.insert(key, subs.clone());
        Ok(Some(subs))
    }

    /// `QuerySubstitutablePathInfos` and its relatives: what the caches offer of `paths`
    /// (paths valid here are left out, as Nix leaves them out).
    pub(super) async fn substitutable_infos(
        &mut self,
        paths: &BTreeSet<StorePath>,
    ) -> Result<BTreeMap<StorePath, SubstitutablePathInfo>, OpError> {
        let Some(subs) = self.substituters()? else {
            return Ok(BTreeMap::new());
        };
        let all: Vec<StorePath> = paths.iter().cloned().collect();
        let valid = self.state.store.query_valid_paths(&all).await?;
        let asked: Vec<StorePath> = all.into_iter().filter(|p| !valid.contains(p)).collect();
        let answers = subs.query(&asked).await;
        for w in &answers.warnings {
            self.log_line(w).await?;
        }
        Ok(answers
            .offers
            .into_iter()
            .map(|(path, offer)| {
                let n = &offer.narinfo;
                let info = SubstitutablePathInfo {
                    deriver: n.deriver.clone(),
                    references: n.references.clone(),
                    download_size: n.file_size.unwrap_or(0),
                    nar_size: n.nar_size,
                };
                (path, info)
            })
            .collect())
    }

    /// Makes `paths` valid by substitution (with what they refer to). Paths valid already
    /// are left alone. Errors name the path and the cache.
    pub(super) async fn substitute_paths(&mut self, paths: &[StorePath]) -> Result<(), OpError> {
        let Some(subs) = self.substituters()? else {
            return Err(failed(format!(
                "path '{}' is required, but there is no substituter that can build it",
                paths
                    .first()
                    .map(|p| self.state.store.store_dir().display(p))
                    .unwrap_or_default()
            )));
        };
        let store = self.state.store.clone();
        // "copying path ..." reaches the client as each download starts.
        let result = self
            .while_forwarding(|events| async move {
                let tell = BuildEvent::messages_to(events);
                subs.substitute_closure(&store, paths, &tell).await
            })
            .await?;
        let store = &self.state.store;
        let done = result.map_err(|e| match e {
            SubstituteError::NoSubstitute(p) => failed(format!(
                "path '{p}' is required, but there is no substituter that can build it"
            )),
            other => failed(other.to_string()),
        })?;
        for p in &done {
            if let Some(info) = store.query_path_info(p).await? {
                self.state.publish(&info).await.map_err(failed)?;
            }
        }
        Ok(())
    }
}
