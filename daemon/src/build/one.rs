//! One derivation built in the sandbox: its input closure, root, environment and log; then
//! its outputs checked, ingested into blocks with their references, and registered together.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use pkgchain_protocol::types::{BuildMode, BuildResult, BuildStatus, BuiltOutput};
use pkgchain_sandbox::root::{RootPlan, prepare, remove};
use pkgchain_sandbox::run::{Ended, Limits, run};
use pkgchain_sandbox::spec::SandboxSpec;
use pkgchain_store::{IngestOptions, PathInfo, Store};
use pkgchain_store_db::NewPath;
use pkgchain_store_model::content_address::{ContentAddress, ContentAddressMethod};
use pkgchain_store_model::derivation::{Derivation, DerivationOutput};
use pkgchain_store_model::hash::{Hash, Hasher};
use pkgchain_store_model::store_path::StorePath;
use tracing::{Instrument, info, info_span, warn};

use super::env::{EnvInputs, builder_env};
use super::{BuildOptions, Builds, JobEvents};

/// How many of the last log lines a failure message shows (Nix's `log-lines`).
const LOG_TAIL: usize = 25;

/// A finished build of one derivation.
pub(super) struct Outcome {
    pub result: BuildResult,
    /// The message for a failure (the client's error).
    pub error: Option<String>,
}

impl Outcome {
    fn failed(status: BuildStatus, message: String) -> Outcome {
        let mut result = BuildResult::new(status);
        result.error_msg = message.clone();
        Outcome {
            result,
            error: Some(message),
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What one build needs.
pub(super) struct BuildJob<'a> {
    pub builds: &'a Builds,
    pub store: &'a Store,
    pub drv_path: &'a StorePath,
    pub drv: &'a Derivation,
    pub outputs: &'a BTreeMap<String, StorePath>,
    pub opts: &'a BuildOptions,
    pub events: &'a JobEvents,
}

/// Builds the derivation (whose inputs are valid) and registers its outputs.
pub(super) async fn build(job: BuildJob<'_>) -> Outcome {
    let shown = job.store.store_dir().display(job.drv_path);
    let span = info_span!("build", drv = %shown);
    async {
        let start = unix_now();
        let mut outcome = match build_inner(&job).await {
            Ok(o) => o,
            Err(e) => Outcome::failed(BuildStatus::MiscFailure, e),
        };
        outcome.result.start_time = start;
        outcome.result.stop_time = unix_now();
        outcome.result.times_built = 1;
        match &outcome.error {
            None => info!("built"),
            Some(e) => warn!(error = %e, "build failed"),
        }
        outcome
    }
    .instrument(span)
    .await
}

async fn build_inner(job: &BuildJob<'_>) -> Result<Outcome, String> {
    let BuildJob {
        builds,
        store,
        drv_path,
        drv,
        outputs,
        opts,
        events,
    } = *job;
    let dir = store.store_dir();
    let shown = dir.display(drv_path);
    let drv_type = drv.drv_type().map_err(|e| e.to_string())?;
    let system = builds.config.system.as_str();
    if !drv.is_builtin() && drv.platform != system.as_bytes() {
        return Err(format!(
            "a '{}' with features {{}} is required to build '{shown}', but I am a '{system}'",
            String::from_utf8_lossy(&drv.platform)
        ));
    }

    // The input closure: sources, and the wanted outputs of input derivations.
    let mut roots: BTreeSet<StorePath> = drv.input_srcs.clone();
    for (input, wanted) in &drv.input_drvs {
        let map = store
            .query_derivation_output_map(input)
            .await
            .map_err(|e| e.to_string())?;
        for name in &wanted.outputs {
            match map.get(name) {
                Some(Some(p)) => {
                    roots.insert(p.clone());
                }
                _ => {
                    return Err(format!(
                        "output '{name}' of input '{}' has no known path",
                        dir.display(input)
                    ));
                }
            }
        }
    }
    let (closure, _) = closure(store, roots, &BTreeMap::new()).await?;

    let out_paths: BTreeMap<String, String> = outputs
        .iter()
        .map(|(n, p)| (n.clone(), dir.display(p)))
        .collect();
    let env = builder_env(&EnvInputs {
        drv,
        outputs: &out_paths,
        store_dir: dir.as_str(),
        build_dir: &builds.config.build_dir_inside,
        cores: opts.cores,
        impure: &builds.config.impure_env,
    })?;

    if drv.is_builtin() {
        return build_builtin(job, &env.vars, &closure).await;
    }

    let prepare_started = std::time::Instant::now();
    let slot = builds.take_slot().await;
    let ids = builds.config.ids_for(slot.index);
    let root_dir = builds.config.build_root.join(format!(
        "{}-{}",
        drv_path.base_name(),
        builds.next_build_number()
    ));
    let plan = RootPlan {
        store_dir: PathBuf::from(dir.as_str()),
        inputs: closure
            .iter()
            .map(|p| PathBuf::from(dir.display(p)))
            .collect(),
        host_paths: builds.config.sandbox_paths.clone(),
        build_dir: PathBuf::from(&builds.config.build_dir_inside),
        ids,
        private_network: !drv_type.is_fixed(),
    };
    let files = env.files.clone();
    let rd = root_dir.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        if let Some(parent) = rd.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let prepared = prepare(&rd, &plan).map_err(|e| e.to_string())?;
        let (uid, gid) = plan.ids.builder_ids_outside();
        for (name, data) in files {
            let p = prepared.build_dir_outside.join(&name);
            std::fs::write(&p, data).map_err(|e| format!("writing {name}: {e}"))?;
            if rustix::process::geteuid().is_root() {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {name}: {e}"))?;
            }
        }
        Ok::<_, String>(prepared)
    })
    .await
    .map_err(|e| e.to_string())??;

    let spec = SandboxSpec {
        root: prepared.dir.clone(),
        binds: prepared.binds.clone(),
        builder: env.builder,
        args: env.args,
        env: env.vars.into_iter().collect(),
        work_dir: PathBuf::from(&builds.config.build_dir_inside),
        private_network: !drv_type.is_fixed(),
        ids,
        writable: vec![
            PathBuf::from(&builds.config.build_dir_inside),
            PathBuf::from(dir.as_str()),
            PathBuf::from("/dev/shm"),
        ],
    };
    let limits = Limits {
        timeout: opts.timeout,
        max_silent: opts.max_silent,
        max_log_bytes: opts.max_log_size,
    };
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut on_log = |chunk: &[u8]| {
        events.log(chunk);
        partial.extend_from_slice(chunk);
        while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            events.line(text.clone());
            tail.push_back(text);
            if tail.len() > LOG_TAIL {
                tail.pop_front();
            }
        }
    };
    let run_started = std::time::Instant::now();
    let prepare_time = run_started - prepare_started;
    let report = run(&builds.config.helper, &spec, &limits, &mut on_log).await;
    let run_time = run_started.elapsed();
    if !partial.is_empty() {
        let text = String::from_utf8_lossy(&partial).into_owned();
        events.line(text.clone());
        tail.push_back(text);
    }
    drop(slot);
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            cleanup(&root_dir, false).await;
            return Err(format!(
                "while setting up the build environment of '{shown}': {e}"
            ));
        }
    };
    let tail_text = || {
        if tail.is_empty() {
            String::new()
        } else {
            let lines: Vec<String> = tail.iter().map(|l| format!("> {l}")).collect();
            format!(";\nlast {} log lines:\n{}", tail.len(), lines.join("\n"))
        }
    };
    let failure = match report.ended {
        Ended::Exited(0) => None,
        Ended::Exited(code) => Some((
            if drv_type.is_fixed() {
                BuildStatus::TransientFailure
            } else {
                BuildStatus::PermanentFailure
            },
            format!(
                "builder for '{shown}' failed with exit code {code}{}",
                tail_text()
            ),
        )),
        Ended::Signaled(sig) => Some((
            BuildStatus::PermanentFailure,
            format!(
                "builder for '{shown}' failed due to signal {sig} ({}){}",
                signal_name(sig),
                tail_text()
            ),
        )),
        Ended::TimedOut(t) => Some((
            BuildStatus::TimedOut,
            format!(
                "building of '{shown}' timed out after {} seconds",
                t.as_secs()
            ),
        )),
        Ended::Silent(t) => Some((
            BuildStatus::TimedOut,
            format!(
                "building of '{shown}' timed out after {} seconds of silence",
                t.as_secs()
            ),
        )),
        Ended::LogTooLong(max) => Some((
            BuildStatus::LogLimitExceeded,
            format!("build log of '{shown}' exceeded the limit of {max} bytes"),
        )),
    };
    if let Some((status, message)) = failure {
        cleanup(&root_dir, opts.keep_failed).await;
        let mut o = Outcome::failed(status, message);
        o.result.cpu_user = Some(report.user_cpu);
        o.result.cpu_system = Some(report.system_cpu);
        return Ok(o);
    }

    let collect_started = std::time::Instant::now();
    let registered = collect_outputs(
        store,
        drv_path,
        drv,
        outputs,
        &closure,
        &prepared.store_dir_outside,
        opts.mode,
    )
    .await;
    let teardown_started = std::time::Instant::now();
    let collect_time = teardown_started - collect_started;
    cleanup(&root_dir, registered.is_err() && opts.keep_failed).await;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    // Read by bench/daemon.sh: set-up (helper start to the builder's exec) and tear-down
    // (removing the build root); the rest says where the remaining time goes: preparing the
    // root, the whole sandbox run (set-up, builder, reaping), ingesting and registering.
    info!(
        setup_ms = ms(report.setup),
        teardown_ms = ms(teardown_started.elapsed()),
        prepare_ms = ms(prepare_time),
        run_ms = ms(run_time),
        collect_ms = ms(collect_time),
        "sandbox times"
    );
    let mut outcome = match registered {
        Ok(o) => o,
        Err((status, message)) => Outcome::failed(status, message),
    };
    outcome.result.cpu_user = Some(report.user_cpu);
    outcome.result.cpu_system = Some(report.system_cpu);
    Ok(outcome)
}

/// A builtin builder's run: in the daemon, into a fresh staging directory.
async fn build_builtin(
    job: &BuildJob<'_>,
    vars: &BTreeMap<Vec<u8>, Vec<u8>>,
    closure: &BTreeSet<StorePath>,
) -> Result<Outcome, String> {
    let (builds, store, drv_path, drv) = (job.builds, job.store, job.drv_path, job.drv);
    let (outputs, opts, events) = (job.outputs, job.opts, job.events);
    let dir = store.store_dir();
    let shown = dir.display(drv_path);
    let root_dir = builds.config.build_root.join(format!(
        "{}-{}",
        drv_path.base_name(),
        builds.next_build_number()
    ));
    let staging = root_dir.join("store");
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let builder = String::from_utf8_lossy(&drv.builder).into_owned();
    let request = super::builtins::BuiltinRequest {
        builder: &builder,
        env: vars,
        store_dir: dir.as_str(),
        staging: &staging,
        hashed_mirrors: &builds.config.hashed_mirrors,
        downloads: &opts.downloads,
    };
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut log = |line: String| {
        events.log(format!("{line}\n").as_bytes());
        events.line(line.clone());
        tail.push_back(line);
        if tail.len() > LOG_TAIL {
            tail.pop_front();
        }
    };
    let ran = super::builtins::run(&request, &mut log).await;
    if let Err(message) = ran {
        log(format!("error: {message}"));
        cleanup(&root_dir, opts.keep_failed).await;
        let lines: Vec<String> = tail.iter().map(|l| format!("> {l}")).collect();
        let status = if drv.drv_type().is_ok_and(|t| t.is_fixed()) {
            BuildStatus::TransientFailure
        } else {
            BuildStatus::PermanentFailure
        };
        return Ok(Outcome::failed(
            status,
            format!(
                "builder for '{shown}' failed with exit code 1;\nlast {} log lines:\n{}",
                lines.len(),
                lines.join("\n")
            ),
        ));
    }
    let registered =
        collect_outputs(store, drv_path, drv, outputs, closure, &staging, opts.mode).await;
    cleanup(&root_dir, registered.is_err() && opts.keep_failed).await;
    Ok(match registered {
        Ok(o) => o,
        Err((status, message)) => Outcome::failed(status, message),
    })
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        9 => "Killed",
        15 => "Terminated",
        11 => "Segmentation fault",
        6 => "Aborted",
        _ => "signal",
    }
}

async fn cleanup(root_dir: &Path, keep: bool) {
    if keep {
        info!(dir = %root_dir.display(), "keeping the failed build's directory");
        return;
    }
    let dir = root_dir.to_owned();
    let removed = tokio::task::spawn_blocking(move || remove(&dir)).await;
    if let Ok(Err(e)) = removed {
        warn!(error = %e, "removing a build directory");
    }
}

type Rejected = (BuildStatus, String);

/// Ingests, scans and checks every output, then registers them in one transaction (or, for
/// `--check`, compares them with the registered ones).
async fn collect_outputs(
    store: &Store,
    drv_path: &StorePath,
    drv: &Derivation,
    outputs: &BTreeMap<String, StorePath>,
    closure: &BTreeSet<StorePath>,
    built_store: &Path,
    mode: BuildMode,
) -> Result<Outcome, Rejected> {
    let dir = store.store_dir();
    let shown = dir.display(drv_path);
    let rejected = |m: String| (BuildStatus::OutputRejected, m);
    let mut candidates: Vec<StorePath> = closure.iter().cloned().collect();
    candidates.extend(outputs.values().cloned());
    let mut new_paths = Vec::new();
    // The outputs' blocks stay pinned against the collector until they are registered.
    let mut pins = Vec::new();
    let mut result = BuildResult::new(BuildStatus::Built);
    for (name, path) in outputs {
        let actual = built_store.join(path.base_name());
        std::fs::symlink_metadata(&actual).map_err(|_| {
            rejected(format!(
                "builder for '{shown}' failed to produce output path for output '{name}' at '{}'",
                actual.display()
            ))
        })?;
        let ingested = store
            .ingest_tree(
                actual.clone(),
                IngestOptions {
                    reference_candidates: candidates.clone(),
                    // A corrupt output being repaired may share blocks with what is built.
                    repair: mode == BuildMode::Repair,
                },
            )
            .await
            .map_err(|e| rejected(format!("ingesting output '{name}' of '{shown}': {e}")))?;
        let mut ca = None;
        if let Some(DerivationOutput::CaFixed(wanted)) = drv.outputs.get(name) {
            let got = fixed_output_hash(
                store,
                wanted,
                &ingested.root,
                ingested.nar_hash.clone(),
                &actual,
            )
            .await
            .map_err(rejected)?;
            if got != wanted.hash {
                return Err(rejected(format!(
                    "hash mismatch in fixed-output derivation '{shown}':\n  specified: {}\n     got:    {}",
                    wanted.hash.to_sri(),
                    got.to_sri()
                )));
            }
            if !ingested.references.is_empty() {
                let refs: Vec<String> =
                    ingested.references.iter().map(|r| dir.display(r)).collect();
                return Err(rejected(format!(
                    "fixed-output derivation '{shown}' output '{name}' must not refer to store paths: {}",
                    refs.join(", ")
                )));
            }
            ca = Some(wanted.render());
        }
        result
            .built_outputs
            .insert(name.clone(), BuiltOutput::new(path.clone()));
        new_paths.push(NewPath {
            info: PathInfo {
                path: path.clone(),
                nar_hash: ingested.nar_hash.clone(),
                nar_size: ingested.nar_size,
                root: ingested.root,
                deriver: Some(drv_path.clone()),
                registration_time: unix_now(),
                ultimate: true,
                sigs: BTreeSet::new(),
                ca,
                references: ingested.references.clone(),
            },
            blocks: ingested.blocks.clone(),
            derivation_outputs: BTreeMap::new(),
        });
        pins.push(ingested.pins);
    }

    let built: BTreeMap<StorePath, (BTreeSet<StorePath>, u64)> = new_paths
        .iter()
        .map(|n| {
            (
                n.info.path.clone(),
                (n.info.references.clone(), n.info.nar_size),
            )
        })
        .collect();
    check_outputs(store, drv_path, drv, outputs, &built)
        .await
        .map_err(rejected)?;

    if mode == BuildMode::Check {
        for new in &new_paths {
            let old = store
                .query_path_info(&new.info.path)
                .await
                .map_err(|e| (BuildStatus::MiscFailure, e.to_string()))?;
            match old {
                Some(old) if old.nar_hash != new.info.nar_hash => {
                    return Err((
                        BuildStatus::NotDeterministic,
                        format!(
                            "derivation '{shown}' may not be deterministic: output '{}' differs",
                            dir.display(&new.info.path)
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    return Err((
                        BuildStatus::MiscFailure,
                        format!(
                            "some outputs of '{shown}' are not valid, so checking is not possible"
                        ),
                    ));
                }
            }
        }
        return Ok(Outcome {
            result,
            error: None,
        });
    }
    let db = store.db().clone();
    tokio::task::spawn_blocking(move || db.register_paths_blocking(&new_paths))
        .await
        .map_err(|e| (BuildStatus::MiscFailure, e.to_string()))?
        .map_err(|e| {
            (
                BuildStatus::MiscFailure,
                format!("registering the outputs of '{shown}': {e}"),
            )
        })?;
    drop(pins);
    Ok(Outcome {
        result,
        error: None,
    })
}

/// The hash a fixed output is checked against, by its method.
async fn fixed_output_hash(
    store: &Store,
    wanted: &ContentAddress,
    root: &pkgchain_dag::cid::Cid,
    nar_sha256: Hash,
    actual: &Path,
) -> Result<Hash, String> {
    let algo = wanted.hash.algo();
    match wanted.method {
        ContentAddressMethod::Flat => {
            let meta = std::fs::symlink_metadata(actual).map_err(|e| e.to_string())?;
            if !meta.is_file() || meta.permissions().mode() & 0o100 != 0 {
                return Err(format!(
                    "output path '{}' should be a non-executable regular file since recursive hashing is not enabled (one of outputHashMode=\"flat\" or outputHashMode=\"text\" is true)",
                    actual.display()
                ));
            }
            let path = actual.to_owned();
            tokio::task::spawn_blocking(move || {
                let mut hasher = Hasher::new(algo);
                // Never through a symlink (checked above; the builder is gone, but a privileged
                // open follows nothing it did not mean to).
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                Ok(hasher.finish())
            })
            .await
            .map_err(|e| e.to_string())?
        }
        ContentAddressMethod::NixArchive if algo == nar_sha256.algo() => Ok(nar_sha256),
        ContentAddressMethod::NixArchive => {
            let store = store.clone();
            let root = *root;
            tokio::task::spawn_blocking(move || {
                let mut w = HashWriter(Hasher::new(algo));
                pkgchain_store::export::export_nar(store.blocks(), &root, &mut w)
                    .map_err(|e| e.to_string())?;
                Ok(w.0.finish())
            })
            .await
            .map_err(|e| e.to_string())?
        }
        other => Err(format!(
            "fixed-output derivations with the content-address method '{other:?}' are not supported"
        )),
    }
}

struct HashWriter(Hasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One output's checks (Nix's `OutputChecks`).
#[derive(Debug, Default)]
struct OutputChecks {
    ignore_self_refs: bool,
    max_size: Option<u64>,
    max_closure_size: Option<u64>,
    allowed_references: Option<Vec<String>>,
    allowed_requisites: Option<Vec<String>>,
    disallowed_references: Vec<String>,
    disallowed_requisites: Vec<String>,
}

/// The checks of output `name`: structured `outputChecks.<name>`, or the plain variables
/// (which apply to every output, self-references ignored in the requisite checks).
fn output_checks(drv: &Derivation, name: &str) -> Result<OutputChecks, String> {
    if let Some(attrs) = drv.structured_attrs().map_err(|e| e.to_string())? {
        let Some(checks) = attrs.get("outputChecks").and_then(|c| c.get(name)) else {
            return Ok(OutputChecks::default());
        };
        let list = |key: &str| -> Result<Option<Vec<String>>, String> {
            match checks.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_owned).ok_or_else(|| {
                            format!("'outputChecks.{name}.{key}' must be a list of strings")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(format!(
                    "'outputChecks.{name}.{key}' must be a list of strings"
                )),
            }
        };
        let size = |key: &str| -> Result<Option<u64>, String> {
            match checks.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("'outputChecks.{name}.{key}' must be a number")),
            }
        };
        return Ok(OutputChecks {
            ignore_self_refs: checks
                .get("ignoreSelfRefs")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            max_size: size("maxSize")?,
            max_closure_size: size("maxClosureSize")?,
            allowed_references: list("allowedReferences")?,
            allowed_requisites: list("allowedRequisites")?,
            disallowed_references: list("disallowedReferences")?.unwrap_or_default(),
            disallowed_requisites: list("disallowedRequisites")?.unwrap_or_default(),
        });
    }
    let var = |key: &str| {
        drv.env_get(key).map(|v| {
            String::from_utf8_lossy(v)
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
    };
    Ok(OutputChecks {
        ignore_self_refs: true,
        allowed_references: var("allowedReferences"),
        allowed_requisites: var("allowedRequisites"),
        disallowed_references: var("disallowedReferences").unwrap_or_default(),
        disallowed_requisites: var("disallowedRequisites").unwrap_or_default(),
        ..OutputChecks::default()
    })
}

/// The closure of `roots` under references, with its total NAR size. The outputs just built
/// (`built`: references and NAR size) are not registered yet; every other path must be valid.
pub(super) async fn closure(
    store: &Store,
    roots: impl IntoIterator<Item = StorePath>,
    built: &BTreeMap<StorePath, (BTreeSet<StorePath>, u64)>,
) -> Result<(BTreeSet<StorePath>, u64), String> {
    let mut seen = BTreeSet::new();
    let mut size = 0u64;
    let mut queue: Vec<StorePath> = roots.into_iter().collect();
    while let Some(p) = queue.pop() {
        if seen.contains(&p) {
            continue;
        }
        let (refs, nar_size) = match built.get(&p) {
            Some((refs, n)) => (refs.clone(), *n),
            None => {
                let info = store
                    .query_path_info(&p)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!("path '{}' is not valid", store.store_dir().display(&p))
                    })?;
                (info.references, info.nar_size)
            }
        };
        size = size.saturating_add(nar_size);
        queue.extend(refs.into_iter().filter(|r| !seen.contains(r)));
        seen.insert(p);
    }
    Ok((seen, size))
}

/// Nix's output checks (`checkOutputs`): size limits, and allowed and disallowed references
/// and requisites, whose specifiers are store paths or output names of this derivation.
async fn check_outputs(
    store: &Store,
    drv_path: &StorePath,
    drv: &Derivation,
    outputs: &BTreeMap<String, StorePath>,
    built: &BTreeMap<StorePath, (BTreeSet<StorePath>, u64)>,
) -> Result<(), String> {
    let dir = store.store_dir();
    for (name, path) in outputs {
        let Some((references, nar_size)) = built.get(path) else {
            continue;
        };
        let checks = output_checks(drv, name)?;
        let shown = dir.display(path);
        if let Some(max) = checks.max_size
            && *nar_size > max
        {
            return Err(format!(
                "path '{shown}' is too large at {nar_size} bytes; limit is {max} bytes"
            ));
        }
        let needs_closure = checks.max_closure_size.is_some()
            || checks.allowed_requisites.is_some()
            || !checks.disallowed_requisites.is_empty();
        let (closure, closure_size) = if needs_closure {
            closure(store, [path.clone()], built).await?
        } else {
            (BTreeSet::new(), 0)
        };
        if let Some(max) = checks.max_closure_size
            && closure_size > max
        {
            return Err(format!(
                "closure of path '{shown}' is too large at {closure_size} bytes; limit is {max} bytes"
            ));
        }
        let specifiers = |list: &[String]| -> Result<BTreeSet<StorePath>, String> {
            list.iter()
                .map(|s| {
                    if let Some(p) = outputs.get(s) {
                        return Ok(p.clone());
                    }
                    dir.parse(s).map_err(|_| {
                        let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
                        format!(
                            "derivation '{}' output check for '{name}' contains an illegal reference specifier '{s}', expected store path or output name (one of [{}])",
                            dir.display(drv_path),
                            names.join(", ")
                        )
                    })
                })
                .collect()
        };
        let rules: [(Option<&[String]>, bool, bool); 4] = [
            (checks.allowed_references.as_deref(), true, false),
            (checks.allowed_requisites.as_deref(), true, true),
            (Some(&checks.disallowed_references), false, false),
            (Some(&checks.disallowed_requisites), false, true),
        ];
        for (list, allowed, recursive) in rules {
            let Some(list) = list else { continue };
            if !allowed && list.is_empty() {
                continue;
            }
            let spec = specifiers(list)?;
            let mut used = if recursive {
                closure.clone()
            } else {
                references.clone()
            };
            if recursive && checks.ignore_self_refs {
                used.remove(path);
            }
            let bad: Vec<String> = used
                .iter()
                .filter(|u| spec.contains(u) != allowed)
                .map(|u| format!("\n  {}", dir.display(u)))
                .collect();
            if !bad.is_empty() {
                return Err(format!(
                    "output '{shown}' is not allowed to refer to the following paths:{}",
                    bad.concat()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn structured(json: &str) -> Derivation {
        let mut d = Derivation {
            name: "x".into(),
            ..Derivation::default()
        };
        d.env_set("__json", json.as_bytes());
        d
    }

    #[test]
    fn output_checks_come_from_structured_attrs_or_plain_variables() {
        let c = output_checks(
            &structured(r#"{"outputChecks":{"out":{"allowedReferences":[],"maxSize":64}}}"#),
            "out",
        )
        .expect("valid");
        assert_eq!(c.allowed_references, Some(vec![]));
        assert_eq!(c.max_size, Some(64));
        assert!(!c.ignore_self_refs);
        // Another output has no checks.
        let dev = output_checks(
            &structured(r#"{"outputChecks":{"out":{"maxSize":1}}}"#),
            "dev",
        )
        .expect("valid");
        assert_eq!(dev.max_size, None);
        let mut plain = Derivation::default();
        plain.env_set("disallowedRequisites", b"a  b".to_vec());
        let c = output_checks(&plain, "out").expect("valid");
        assert_eq!(c.disallowed_requisites, vec!["a", "b"]);
        assert!(c.ignore_self_refs);
    }

    #[test]
    fn malformed_output_checks_are_errors_naming_the_field() {
        for (json, field) in [
            (
                r#"{"outputChecks":{"out":{"allowedReferences":"x"}}}"#,
                "allowedReferences",
            ),
            (
                r#"{"outputChecks":{"out":{"disallowedRequisites":[1]}}}"#,
                "disallowedRequisites",
            ),
            (
                r#"{"outputChecks":{"out":{"maxClosureSize":-1}}}"#,
                "maxClosureSize",
            ),
        ] {
            let err = output_checks(&structured(json), "out").expect_err(json);
            assert!(err.contains(field), "{err}");
        }
        assert!(output_checks(&structured("[1]"), "out").is_err());
    }
}
