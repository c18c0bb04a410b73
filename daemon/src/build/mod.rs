//! The build scheduler (Nix's goals and worker): realises derivations by building their
//! missing inputs first, independent ones in parallel up to the client's `max-jobs`, each
//! derivation's build shared by every client that asks for it at the same time, and each
//! build run in the sandbox ([`pkgchain_sandbox`]). Its log goes to every waiting client as
//! it comes and to Nix's log directory (`drvs/XX/REST.bz2`), where `nix log` reads it.

pub(crate) mod builtins;
mod env;
mod one;
mod repair;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use pkgchain_protocol::types::{BuildMode, BuildResult, BuildStatus, BuiltOutput};
use pkgchain_sandbox::root::HostPath;
use pkgchain_sandbox::spec::IdMapping;
use pkgchain_store::Store;
use pkgchain_store_model::derivation::{Derivation, DerivationOutput};
use pkgchain_store_model::store_path::StorePath;
use tokio::sync::{Semaphore, mpsc, watch};

/// The first outside uid of build slots (Nix's `start-id` for auto-allocated ids).
const FIRST_BUILD_ID: u32 = 872_415_232;
/// Ids per slot (Nix's `id-count` per build).
const IDS_PER_SLOT: u32 = 65_536;
/// Build slots (concurrent sandboxes, whatever `max-jobs` says).
const SLOTS: usize = 64;

/// Daemon-wide build settings (from `nix.conf` and the process).
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// The program that runs the sandbox's stages (`/proc/self/exe` for the daemon).
    pub helper: PathBuf,
    /// Where build roots are made (under the state directory).
    pub build_root: PathBuf,
    /// `sandbox-paths` and `extra-sandbox-paths`.
    pub sandbox_paths: Vec<HostPath>,
    /// `sandbox-build-dir` (`/build`).
    pub build_dir_inside: String,
    /// `system` (`x86_64-linux`).
    pub system: String,
    /// The daemon's environment, for fixed-output derivations' `impureEnvVars`.
    pub impure_env: BTreeMap<String, String>,
    /// Where build logs go (`NIX_LOG_DIR`).
    pub log_dir: PathBuf,
    /// `hashed-mirrors`, for `builtin:fetchurl`.
    pub hashed_mirrors: Vec<String>,
}

impl BuildConfig {
    /// The settings from `nix.conf` and the daemon's locations.
    pub fn from_settings(
        config: &crate::nix_conf::NixConfig,
        loc: &crate::locations::Locations,
    ) -> BuildConfig {
        let mut sandbox_paths: Vec<HostPath> = config
            .list("sandbox-paths", &[])
            .iter()
            .chain(config.list("extra-sandbox-paths", &[]).iter())
            .map(|e| HostPath::parse(e))
            .collect();
        sandbox_paths.dedup();
        BuildConfig {
            helper: PathBuf::from("/proc/self/exe"),
            build_root: loc.state_dir.join("builds"),
            sandbox_paths,
            build_dir_inside: config
                .get("sandbox-build-dir")
                .unwrap_or("/build")
                .trim()
                .to_owned(),
            system: config
                .get("system")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(host_system),
            impure_env: std::env::vars().collect(),
            log_dir: loc.log_dir.clone(),
            hashed_mirrors: config.list("hashed-mirrors", &[]),
        }
    }

    fn ids_for(&self, slot: usize) -> IdMapping {
        if rustix::process::geteuid().is_root() {
            IdMapping::Range {
                base: FIRST_BUILD_ID + IDS_PER_SLOT * slot as u32,
            }
        } else {
            IdMapping::Own {
                uid: rustix::process::geteuid().as_raw(),
                gid: rustix::process::getegid().as_raw(),
            }
        }
    }
}

/// Nix's name for this machine's platform.
fn host_system() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        a => a,
    };
    format!("{arch}-linux")
}

/// Per-request options (the client's `SetOptions` and the build mode).
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Normal, repair or check.
    pub mode: BuildMode,
    /// `max-jobs`.
    pub max_jobs: u32,
    /// `cores` (`NIX_BUILD_CORES`).
    pub cores: u32,
    /// `timeout`.
    pub timeout: Option<Duration>,
    /// `max-silent-time`.
    pub max_silent: Option<Duration>,
    /// `max-build-log-size`.
    pub max_log_size: Option<u64>,
    /// `keep-going`.
    pub keep_going: bool,
    /// `keep-failed`.
    pub keep_failed: bool,
    /// Paths whose contents this request has checked (`--repair`).
    pub checked_contents: repair::CheckedContents,
    /// The binary caches to substitute outputs from before building (none: build).
    pub substituters: Option<Arc<pkgchain_substitute::Substituters>>,
    /// `fallback`: build when a substitution fails (rather than failing).
    pub fallback: bool,
    /// What `builtin:fetchurl` downloads with.
    pub downloads: DownloadSettings,
}

/// The settings of `builtin:fetchurl`'s downloads, as this request sees them (Nix hands the
/// builder the contents of both files).
#[derive(Debug, Clone, Default)]
pub struct DownloadSettings {
    /// `ssl-cert-file`: the only authorities trusted for HTTPS (`None`: the built-in ones).
    pub ca_file: Option<PathBuf>,
    /// `netrc-file`: logins for the hosts it names.
    pub netrc_file: Option<PathBuf>,
}

/// What a waiting client is told.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// A build started (activity id, derivation, mode).
    Started(u64, StorePath, BuildMode),
    /// A line of its log.
    Line(u64, String),
    /// It ended.
    Stopped(u64),
    /// A build this one needed failed (Nix logs the error and goes on to fail the dependent).
    InputFailed(String),
    /// A line Nix's worker prints itself (`--repair` checking paths).
    Message(String),
}

impl BuildEvent {
    /// What sends each line it is given to `events` as a [`BuildEvent::Message`] (the `tell`
    /// of substitution: "copying path ...", warnings).
    pub fn messages_to(events: mpsc::UnboundedSender<BuildEvent>) -> impl Fn(String) + Send + Sync {
        move |line| {
            let _ = events.send(BuildEvent::Message(line));
        }
    }
}

/// The events of one running build, fanned out to every client waiting for it.
pub(crate) struct JobEvents {
    activity: u64,
    drv: StorePath,
    mode: BuildMode,
    listeners: Mutex<Vec<mpsc::UnboundedSender<BuildEvent>>>,
    log: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
}

impl JobEvents {
    fn send(&self, event: BuildEvent) {
        if let Ok(mut l) = self.listeners.lock() {
            l.retain(|tx| tx.send(event.clone()).is_ok());
        }
    }

    fn subscribe(&self, tx: mpsc::UnboundedSender<BuildEvent>) {
        let _ = tx.send(BuildEvent::Started(
            self.activity,
            self.drv.clone(),
            self.mode,
        ));
        if let Ok(mut l) = self.listeners.lock() {
            l.push(tx);
        }
    }

    pub(crate) fn line(&self, line: String) {
        self.send(BuildEvent::Line(self.activity, line));
    }

    pub(crate) fn log(&self, chunk: &[u8]) {
        if let Ok(guard) = self.log.lock()
            && let Some(tx) = guard.as_ref()
        {
            // Unbounded: the stored log must be whole, and the build never waits for the
            // compressor (the log's size is bounded by `max-build-log-size`).
            let _ = tx.send(chunk.to_vec());
        }
    }
}

/// A build in progress or done, shared by everyone who asked.
struct Job {
    events: Arc<JobEvents>,
    done: watch::Receiver<Option<Arc<JobResult>>>,
}

#[derive(Debug, Clone)]
struct JobResult {
    result: BuildResult,
    error: Option<String>,
}

/// A sandbox slot (its own id range), held for one build; given back when dropped.
pub(crate) struct Slot {
    index: usize,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    builds: Arc<Mutex<Vec<bool>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The entry first, then the permit: a waiter woken by the permit finds it free.
        if let Ok(mut s) = self.builds.lock() {
            s[self.index] = false;
        }
        drop(self.permit.take());
    }
}

/// The scheduler.
pub struct Builds {
    config: BuildConfig,
    jobs: Mutex<HashMap<(StorePath, BuildMode), Arc<Job>>>,
    slots: Arc<Mutex<Vec<bool>>>,
    slot_free: Arc<Semaphore>,
    counter: AtomicU64,
}

impl Builds {
    /// A scheduler with `config`. Build roots left by an earlier daemon that stopped during
    /// a build (a crash) are removed: nothing in them was ever registered.
    pub fn new(config: BuildConfig) -> Builds {
        if let Ok(entries) = std::fs::read_dir(&config.build_root) {
            for entry in entries.flatten() {
                if let Err(e) = pkgchain_sandbox::root::remove(&entry.path()) {
                    tracing::warn!(error = %e, "removing a build root left by an earlier daemon");
                }
            }
        }
        Builds {
            config,
            jobs: Mutex::new(HashMap::new()),
            slots: Arc::new(Mutex::new(vec![false; SLOTS])),
            slot_free: Arc::new(Semaphore::new(SLOTS)),
            counter: AtomicU64::new(1),
        }
    }

    fn next_build_number(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// A new activity id, unique in this daemon (as Nix makes them: the pid, then a counter).
    pub fn next_activity_id(&self) -> u64 {
        self.next_build_number() | (u64::from(std::process::id()) << 32)
    }

    async fn take_slot(&self) -> Slot {
        // A permit guarantees a free entry; it is given back with the entry.
        let permit = Arc::clone(&self.slot_free).acquire_owned().await.ok();
        let index = self
            .slots
            .lock()
            .ok()
            .and_then(|mut s| {
                let i = s.iter().position(|used| !used)?;
                s[i] = true;
                Some(i)
            })
            .unwrap_or(0);
        Slot {
            index,
            permit,
            builds: Arc::clone(&self.slots),
        }
    }

    /// Realises each `(derivation, wanted outputs)` (all outputs when `None`), building what
    /// is missing, inputs first, at most the client's `max-jobs` at once. Events of every
    /// build this waits for go to `events`. Results come in the order asked.
    pub async fn realise(
        self: &Arc<Self>,
        store: &Store,
        wanted: Vec<(StorePath, Option<Vec<String>>)>,
        opts: &BuildOptions,
        events: mpsc::UnboundedSender<BuildEvent>,
    ) -> Vec<(BuildResult, Option<String>)> {
        // Without caches nothing can be realised at all; with them, each derivation is tried
        // from the caches first and only its build refused (below).
        if opts.max_jobs == 0 && !wanted.is_empty() && opts.substituters.is_none() {
            let needed: Vec<String> = wanted
                .iter()
                .map(|(d, _)| store.store_dir().display(d))
                .collect();
            let msg = format!(
                "unable to start any build; either increase '--max-jobs' or enable remote builds (needed: {})",
                needed.join(", ")
            );
            let mut r = BuildResult::new(BuildStatus::MiscFailure);
            r.error_msg = msg.clone();
            return wanted
                .iter()
                .map(|_| (r.clone(), Some(msg.clone())))
                .collect();
        }
        let limit = Arc::new(Semaphore::new(opts.max_jobs.max(1) as usize));
        let all = wanted.into_iter().map(|(drv_path, names)| {
            let fut = self.realise_inner(
                store,
                drv_path,
                opts.clone(),
                opts.mode,
                Arc::clone(&limit),
                events.clone(),
            );
            async move {
                let r = fut.await;
                let mut result = r.result.clone();
                if let Some(names) = names {
                    result.built_outputs.retain(|k, _| names.contains(k));
                }
                (result, r.error.clone())
            }
        });
        let results = futures::future::join_all(all).await;
        drop(events);
        results
    }

    /// `BuildDerivation`: builds `drv`, which the client sent (its inputs are sources that must
    /// be valid already; it has no input derivations), as `drv_path`.
    pub async fn build_given(
        self: &Arc<Self>,
        store: &Store,
        drv_path: StorePath,
        drv: Derivation,
        opts: &BuildOptions,
        events: mpsc::UnboundedSender<BuildEvent>,
    ) -> (BuildResult, Option<String>) {
        let limit = Arc::new(Semaphore::new(opts.max_jobs.max(1) as usize));
        let r = self
            .realise_from(
                store,
                drv_path,
                Some(drv),
                opts.clone(),
                opts.mode,
                limit,
                events,
            )
            .await;
        (r.result.clone(), r.error.clone())
    }

    fn realise_inner(
        self: &Arc<Self>,
        store: &Store,
        drv_path: StorePath,
        opts: BuildOptions,
        mode: BuildMode,
        limit: Arc<Semaphore>,
        events: mpsc::UnboundedSender<BuildEvent>,
    ) -> BoxFuture<'static, Arc<JobResult>> {
        self.realise_from(store, drv_path, None, opts, mode, limit, events)
    }

    /// Realises `drv_path`, read from the store unless `given`, in `mode` (the client's mode
    /// for what it asked for; inputs are built normally, or repaired when repairing).
    #[allow(clippy::too_many_arguments)]
    fn realise_from(
        self: &Arc<Self>,
        store: &Store,
        drv_path: StorePath,
        given: Option<Derivation>,
        opts: BuildOptions,
        mode: BuildMode,
        limit: Arc<Semaphore>,
        events: mpsc::UnboundedSender<BuildEvent>,
    ) -> BoxFuture<'static, Arc<JobResult>> {
        let this = Arc::clone(self);
        let store = store.clone();
        Box::pin(async move {
            let fail = |status, msg: String| {
                let mut r = BuildResult::new(status);
                r.error_msg = msg.clone();
                Arc::new(JobResult {
                    result: r,
                    error: Some(msg),
                })
            };
            let dir = store.store_dir().clone();
            let shown = dir.display(&drv_path);
            let drv = match given {
                Some(d) => d,
                None => match store.read_derivation(&drv_path).await {
                    Ok(d) => d,
                    Err(e) => return fail(BuildStatus::MiscFailure, e.to_string()),
                },
            };
            let mut outputs = BTreeMap::new();
            for (name, out) in &drv.outputs {
                match out.path(&dir, &drv.name, name) {
                    Ok(Some(p)) => {
                        outputs.insert(name.clone(), p);
                    }
                    _ => {
                        let kind = match out {
                            DerivationOutput::Impure { .. } => "impure derivations",
                            _ => "content-addressed derivations (ca-derivations)",
                        };
                        return fail(
                            BuildStatus::MiscFailure,
                            format!(
                                "cannot build '{shown}': {kind} are not supported by this daemon yet"
                            ),
                        );
                    }
                }
            }
            let mut all_valid = true;
            // The outputs registered (sound or not).
            let mut valid = Vec::new();
            for p in outputs.values() {
                if !store.is_valid_path(p).await.unwrap_or(false) {
                    all_valid = false;
                    continue;
                }
                valid.push(p.clone());
                if mode == BuildMode::Repair
                    && !repair::contents_good(&store, p, &opts.checked_contents, &events).await
                {
                    // Corrupt: fetched again or rebuilt below, like a missing output (Nix's
                    // `PathStatus::Corrupt`).
                    all_valid = false;
                }
            }
            // Every output there: a success of `status` naming them.
            let outputs_there = |status| {
                let mut r = BuildResult::new(status);
                for (n, p) in &outputs {
                    r.built_outputs
                        .insert(n.clone(), BuiltOutput::new(p.clone()));
                }
                Arc::new(JobResult {
                    result: r,
                    error: None,
                })
            };
            // Repairing with caches: every output is fetched again first (the valid ones in
            // repair mode, sound or not), as Nix's derivation goal substitutes in repair mode
            // before anything else; then the rest of the closure is checked.
            if mode == BuildMode::Repair
                && let Some(subs) = &opts.substituters
                && this
                    .repair_by_substitution(&store, subs, &outputs, &valid, &opts, &events)
                    .await
            {
                let checked = this
                    .repair_closure(&store, &drv_path, &outputs, &opts, &limit, &events)
                    .await;
                if checked.error.is_some() {
                    return checked;
                }
                return outputs_there(BuildStatus::Substituted);
            }
            if all_valid && mode == BuildMode::Repair {
                // The outputs are sound: repair whatever else of their closure is not.
                return this
                    .repair_closure(&store, &drv_path, &outputs, &opts, &limit, &events)
                    .await;
            }
            if all_valid && mode != BuildMode::Check {
                return outputs_there(BuildStatus::AlreadyValid);
            }

            // Substituted if the caches have the outputs: no inputs needed then.
            if mode == BuildMode::Normal
                && let Some(subs) = &opts.substituters
            {
                // The outputs valid already are left alone by the substitution itself.
                let output_paths: Vec<StorePath> = outputs.values().cloned().collect();
                let tell = BuildEvent::messages_to(events.clone());
                match subs.substitute_closure(&store, &output_paths, &tell).await {
                    Ok(_) => return outputs_there(BuildStatus::Substituted),
                    // Not in any cache: built below.
                    Err(pkgchain_substitute::SubstituteError::NoSubstitute(_)) => {}
                    Err(e) if opts.fallback => {
                        let _ = events.send(BuildEvent::Message(format!(
                            "warning: {e}; falling back to building '{shown}'"
                        )));
                    }
                    Err(e) => {
                        return fail(
                            BuildStatus::TransientFailure,
                            format!("{e} (use '--fallback' to build '{shown}' instead)"),
                        );
                    }
                }
            }

            if opts.max_jobs == 0 {
                return fail(
                    BuildStatus::MiscFailure,
                    format!(
                        "unable to start any build; either increase '--max-jobs' or enable remote builds (needed: {shown})"
                    ),
                );
            }

            // Inputs first, concurrently.
            let inputs: Vec<StorePath> = drv.input_drvs.keys().cloned().collect();
            let mut pending = futures::stream::FuturesUnordered::new();
            for input in inputs {
                pending.push(this.realise_inner(
                    &store,
                    input,
                    opts.clone(),
                    // Nix repairs the inputs of a repaired derivation too.
                    if mode == BuildMode::Repair {
                        BuildMode::Repair
                    } else {
                        BuildMode::Normal
                    },
                    Arc::clone(&limit),
                    events.clone(),
                ));
            }
            let mut failed_inputs = 0;
            while let Some(r) = futures::StreamExt::next(&mut pending).await {
                if let Some(e) = &r.error {
                    failed_inputs += 1;
                    // Logged as it happens; the dependent fails with a message of its own.
                    let _ = events.send(BuildEvent::InputFailed(e.clone()));
                    if !opts.keep_going {
                        break;
                    }
                }
            }
            drop(pending);
            if failed_inputs > 0 {
                return fail(
                    BuildStatus::DependencyFailed,
                    format!("{failed_inputs} dependencies of derivation '{shown}' failed to build"),
                );
            }

            // The build itself, shared with anyone else asking for it.
            let key = (drv_path.clone(), mode);
            let (job, start) = {
                let Ok(mut jobs) = this.jobs.lock() else {
                    return fail(BuildStatus::MiscFailure, "scheduler state poisoned".into());
                };
                match jobs.get(&key) {
                    Some(j) if j.done.borrow().is_none() => (Arc::clone(j), None),
                    _ => {
                        let (tx, rx) = watch::channel(None);
                        let job = Arc::new(Job {
                            events: Arc::new(JobEvents {
                                activity: this.next_activity_id(),
                                drv: drv_path.clone(),
                                mode,
                                listeners: Mutex::new(Vec::new()),
                                log: Mutex::new(None),
                            }),
                            done: rx,
                        });
                        jobs.insert(key.clone(), Arc::clone(&job));
                        (job, Some(tx))
                    }
                }
            };
            if let Some(tx) = start {
                let this2 = Arc::clone(&this);
                let store2 = store.clone();
                let job2 = Arc::clone(&job);
                let drv_path2 = drv_path.clone();
                let mut opts2 = opts.clone();
                opts2.mode = mode;
                let limit2 = Arc::clone(&limit);
                let outputs = outputs.clone();
                tokio::spawn(async move {
                    let permit = limit2.acquire_owned().await.ok();
                    let log_writer = this2.open_log(&drv_path2, &job2.events);
                    let outcome = one::build(one::BuildJob {
                        builds: &this2,
                        store: &store2,
                        drv_path: &drv_path2,
                        drv: &drv,
                        outputs: &outputs,
                        opts: &opts2,
                        events: &job2.events,
                    })
                    .await;
                    drop(permit);
                    if let Ok(mut l) = job2.events.log.lock()
                        && let Some(tx) = l.take()
                    {
                        // The end marker: the log is complete.
                        let _ = tx.send(Vec::new());
                    }
                    if let Some(w) = log_writer {
                        let _ = w.await;
                    }
                    job2.events.send(BuildEvent::Stopped(job2.events.activity));
                    let _ = tx.send(Some(Arc::new(JobResult {
                        result: outcome.result,
                        error: outcome.error,
                    })));
                    if let Ok(mut jobs) = this2.jobs.lock() {
                        jobs.remove(&(drv_path2, opts2.mode));
                    }
                });
            }
            job.events.subscribe(events.clone());
            let mut done = job.done.clone();
            loop {
                if let Some(r) = done.borrow().clone() {
                    if mode == BuildMode::Repair && r.error.is_none() {
                        // Rebuilt: sound for the rest of this request (Nix's markContentsGood).
                        for p in outputs.values() {
                            opts.checked_contents.set(p, true);
                        }
                    }
                    return r;
                }
                if done.changed().await.is_err() {
                    return fail(
                        BuildStatus::MiscFailure,
                        "the build task ended without a result".into(),
                    );
                }
            }
        })
    }

    /// Starts the log writer of a build (`<log dir>/drvs/XX/REST.bz2`, replaced).
    fn open_log(
        &self,
        drv_path: &StorePath,
        events: &JobEvents,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let base = drv_path.base_name();
        let (first, rest) = base.split_at(2);
        let dir = self.config.log_dir.join("drvs").join(first);
        let target = dir.join(format!("{rest}.bz2"));
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        if let Ok(mut l) = events.log.lock() {
            *l = Some(tx);
        }
        Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::server::write_log(&dir, &target, || rx.blocking_recv(), true) {
                tracing::warn!(error = %e, log = %target.display(), "writing a build log");
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builds() -> Arc<Builds> {
        builds_in(PathBuf::from("/nonexistent"))
    }

    fn builds_in(build_root: PathBuf) -> Arc<Builds> {
        Arc::new(Builds::new(BuildConfig {
            helper: PathBuf::from("/proc/self/exe"),
            build_root,
            sandbox_paths: Vec::new(),
            build_dir_inside: "/build".into(),
            system: host_system(),
            impure_env: BTreeMap::new(),
            log_dir: PathBuf::from("/nonexistent"),
            hashed_mirrors: Vec::new(),
        }))
    }

    /// Slots come back when builds end: many more builds than slots, some at once.
    #[tokio::test]
    async fn slots_are_given_back() {
        let b = builds();
        let run = async {
            for _ in 0..(3 * SLOTS) {
                let first = b.take_slot().await;
                let second = b.take_slot().await;
                assert_ne!(first.index, second.index);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("taking slots must not block once earlier builds have ended");
        let held: Vec<Slot> = futures::future::join_all((0..SLOTS).map(|_| b.take_slot())).await;
        let distinct: std::collections::BTreeSet<usize> = held.iter().map(|s| s.index).collect();
        assert_eq!(
            distinct.len(),
            SLOTS,
            "every concurrent build has its own slot (id range)"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(100), b.take_slot())
                .await
                .is_err(),
            "no slot while all are held"
        );
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), b.take_slot())
            .await
            .expect("a slot once they are given back");
    }

    /// A crash mid-build leaves its root behind; the next daemon removes it.
    #[test]
    fn build_roots_left_by_a_crash_are_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let left = tmp.path().join("x.drv-1/build/deep");
        std::fs::create_dir_all(&left).expect("mkdir");
        std::fs::write(left.join("f"), b"half-written").expect("write");
        let _builds = builds_in(tmp.path().to_owned());
        assert_eq!(std::fs::read_dir(tmp.path()).expect("read").count(), 0);
    }
}
