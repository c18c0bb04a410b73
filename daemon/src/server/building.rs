//! The build operations (`BuildPaths`, `BuildPathsWithResults`): the connection hands the
//! wanted outputs to the scheduler ([`crate::build`]) and forwards, while it waits, each
//! build's activity and log lines to the client as nix-daemon does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pkgchain_protocol::activity::{ActivityType, Field, ResultType};
use pkgchain_protocol::stderr::StderrMessage;
use pkgchain_protocol::types::{
    BuildMode, BuildResult, BuildStatus, DerivedPath, KeyedBuildResult, OutputsSpec,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::connection::{Conn, ConnError};
use super::ops::{OpError, failed};
use crate::build::{BuildEvent, BuildOptions, DownloadSettings};
use pkgchain_store_model::store_path::StorePath;

/// Nix's `lvlInfo`.
const LEVEL_INFO: u64 = 3;

impl Conn {
    /// The build options of this connection's settings for `mode`.
    fn build_options(&self, mode: BuildMode) -> Result<BuildOptions, OpError> {
        let s = &self.settings;
        let setting = |name: &str| {
            s.overrides
                .get(name)
                .map(String::as_str)
                .or_else(|| self.state.config.get(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let seconds = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        let max_silent = if s.max_silent_time > 0 {
            Some(u64::from(s.max_silent_time))
        } else {
            setting("max-silent-time")
        };
        Ok(BuildOptions {
            mode,
            max_jobs: s.max_build_jobs,
            cores: s.build_cores,
            timeout: setting("timeout").and_then(seconds),
            max_silent: max_silent.and_then(seconds),
            max_log_size: setting("max-build-log-size").filter(|n| *n > 0),
            keep_going: s.keep_going,
            keep_failed: s.keep_failed,
            checked_contents: Default::default(),
            substituters: self.substituters()?,
            fallback: s.try_fallback
                || self
                    .effective("fallback")
                    .is_some_and(|v| v.trim() == "true"),
            downloads: DownloadSettings {
                ca_file: self.file_setting("ssl-cert-file"),
                netrc_file: self.file_setting("netrc-file"),
            },
        })
    }

    /// Builds or checks `paths`; one result per path, in order.
    pub(super) async fn build_paths(
        &mut self,
        paths: Vec<DerivedPath>,
        mode: BuildMode,
    ) -> Result<Vec<KeyedBuildResult>, OpError> {
        let store = self.state.store.clone();
        let dir = store.store_dir().clone();
        let mut results: Vec<Option<BuildResult>> = vec![None; paths.len()];
        let mut wanted = Vec::new();
        let mut wanted_at = Vec::new();
        self.realise_opaque_paths(&paths, &mut results).await?;
        for (i, p) in paths.iter().enumerate() {
            match p {
                DerivedPath::Opaque(_) => {}
                DerivedPath::Built { drv_path, outputs } => {
                    if !drv_path.outputs.is_empty() {
                        return Err(failed(
                            "dynamic derivations (derivations producing derivations) are not supported",
                        ));
                    }
                    if !store.is_valid_path(&drv_path.root).await? {
                        return Err(failed(format!(
                            "path '{}' is not valid",
                            dir.display(&drv_path.root)
                        )));
                    }
                    let names = match outputs {
                        OutputsSpec::All => None,
                        OutputsSpec::Names(n) => Some(n.iter().cloned().collect()),
                    };
                    wanted.push((drv_path.root.clone(), names));
                    wanted_at.push(i);
                }
            }
        }
        self.root_derivation_closure(wanted.iter().map(|(d, _)| d.clone()))
            .await?;
        let opts = self.build_options(mode)?;
        let builds = self.state.builds.clone();
        let built = self
            .while_forwarding(|tx| async move { builds.realise(&store, wanted, &opts, tx).await })
            .await?;
        for ((result, _), i) in built.into_iter().zip(wanted_at) {
            results[i] = Some(result);
        }
        Ok(paths
            .into_iter()
            .zip(results)
            .map(|(path, result)| KeyedBuildResult {
                path,
                result: result.unwrap_or_else(|| BuildResult::new(BuildStatus::MiscFailure)),
            })
            .collect())
    }

    /// The results of the opaque paths among `paths`: valid already, or substituted (all of
    /// them at once, so that their downloads run side by side). When that fails, each path
    /// not valid yet is tried on its own, so that each gets its own result.
    async fn realise_opaque_paths(
        &mut self,
        paths: &[DerivedPath],
        results: &mut [Option<BuildResult>],
    ) -> Result<(), OpError> {
        let opaque: Vec<(usize, StorePath)> = paths
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                DerivedPath::Opaque(path) => Some((i, path.clone())),
                DerivedPath::Built { .. } => None,
            })
            .collect();
        if opaque.is_empty() {
            return Ok(());
        }
        let store = self.state.store.clone();
        let asked: Vec<StorePath> = opaque.iter().map(|(_, p)| p.clone()).collect();
        let valid = store.query_valid_paths(&asked).await?;
        let missing: Vec<StorePath> = asked
            .iter()
            .filter(|p| !valid.contains(*p))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut failures: BTreeMap<StorePath, String> = BTreeMap::new();
        if !missing.is_empty() {
            match self.substitute_paths(&missing).await {
                Ok(()) => {}
                Err(OpError::Failed(msg)) if missing.len() == 1 => {
                    failures.insert(missing[0].clone(), msg);
                }
                Err(OpError::Failed(_)) => {
                    let now_valid = store.query_valid_paths(&missing).await?;
                    for path in missing.iter().filter(|p| !now_valid.contains(*p)) {
                        match self.substitute_paths(std::slice::from_ref(path)).await {
                            Ok(()) => {}
                            Err(OpError::Failed(msg)) => {
                                failures.insert(path.clone(), msg);
                            }
                            Err(other) => return Err(other),
                        }
                    }
                }
                Err(other) => return Err(other),
            }
        }
        let no_substituters = self.substituters()?.is_none();
        for (i, path) in opaque {
            results[i] = Some(if valid.contains(&path) {
                BuildResult::new(BuildStatus::AlreadyValid)
            } else if let Some(msg) = failures.get(&path) {
                let status = if no_substituters {
                    BuildStatus::NoSubstituters
                } else {
                    BuildStatus::TransientFailure
                };
                let mut r = BuildResult::new(status);
                r.error_msg = msg.clone();
                r
            } else {
                BuildResult::new(BuildStatus::Substituted)
            });
        }
        Ok(())
    }

    /// Temp roots, for this connection, on every derivation the build of `drvs` may visit and
    /// every output they name (what Nix's goals do as they start): a collection running
    /// meanwhile keeps the inputs being built from and the outputs until the client roots them.
    /// Derivations are read without recursion; one that cannot be read is left to the build to
    /// report.
    async fn root_derivation_closure(
        &mut self,
        drvs: impl Iterator<Item = StorePath>,
    ) -> Result<(), OpError> {
        let store = self.state.store.clone();
        let dir = store.store_dir().clone();
        let mut todo: Vec<StorePath> = drvs.collect();
        let mut seen: std::collections::HashSet<StorePath> = todo.iter().cloned().collect();
        while let Some(drv_path) = todo.pop() {
            self.add_temp_root(&drv_path).await.map_err(failed)?;
            let drv = match store.read_derivation(&drv_path).await {
                Ok(drv) => drv,
                Err(e) => {
                    tracing::warn!(drv = %drv_path, error = %e, "cannot read a derivation to root its outputs");
                    continue;
                }
            };
            for (name, out) in &drv.outputs {
                if let Ok(Some(p)) = out.path(&dir, &drv.name, name) {
                    self.add_temp_root(&p).await.map_err(failed)?;
                }
            }
            for input in drv.input_drvs.keys() {
                if seen.insert(input.clone()) {
                    todo.push(input.clone());
                }
            }
        }
        Ok(())
    }

    /// The repair of `nix-store --verify --repair` (Nix's `repairPath`): each damaged path is
    /// fetched again from the caches (substitution in repair mode); failing that, it is
    /// rebuilt by building its deriver in repair mode; a path that neither a cache nor a valid
    /// deriver can make again cannot be repaired. Failures are logged as Nix logs them.
    /// Returns whether every path was repaired.
    pub(super) async fn repair_paths(&mut self, damaged: Vec<StorePath>) -> Result<bool, OpError> {
        let store = self.state.store.clone();
        let dir = store.store_dir().clone();
        let mut all_repaired = true;
        // Settings that name no usable cache leave rebuilding.
        let substituters = self.substituters().unwrap_or_else(|e| {
            tracing::warn!(error = ?e, "no substituters for repair");
            None
        });
        for path in damaged {
            let deriver = match store.query_path_info(&path).await? {
                Some(info) => info.deriver,
                // Gone meanwhile (collected): nothing to repair.
                None => continue,
            };
            if let Some(subs) = substituters.clone() {
                let (store2, path2) = (store.clone(), path.clone());
                let fetched = self
                    .while_forwarding(|events| async move {
                        let tell = BuildEvent::messages_to(events);
                        subs.repair_path(&store2, &path2, &tell).await
                    })
                    .await?;
                match fetched {
                    Ok(()) => {
                        tracing::info!(path = %dir.display(&path), "repaired from a cache");
                        continue;
                    }
                    // No cache has it: rebuilt below, if it can be.
                    Err(pkgchain_substitute::SubstituteError::NoSubstitute(_)) => {}
                    Err(e) => {
                        self.log_line(&format!("warning: {e}")).await?;
                    }
                }
            }
            let deriver = match deriver {
                Some(d) if store.is_valid_path(&d).await? => d,
                _ => {
                    let message = format!("cannot repair path '{}'", dir.display(&path));
                    self.send(&StderrMessage::Next(error_line(&message).into()))
                        .await?;
                    all_repaired = false;
                    continue;
                }
            };
            let opts = self.build_options(BuildMode::Repair)?;
            let builds = self.state.builds.clone();
            let store2 = store.clone();
            let results = self
                .while_forwarding(|tx| async move {
                    builds
                        .realise(&store2, vec![(deriver, None)], &opts, tx)
                        .await
                })
                .await?;
            if let Some((_, Some(message))) = results.first() {
                self.send(&StderrMessage::Next(error_line(message).into()))
                    .await?;
                all_repaired = false;
            }
        }
        Ok(all_repaired)
    }

    /// `BuildDerivation`: builds the derivation the client sent.
    pub(super) async fn build_derivation(
        &mut self,
        req: pkgchain_protocol::request::BuildDerivation,
    ) -> Result<BuildResult, OpError> {
        let store = self.state.store.clone();
        let dir = store.store_dir().clone();
        let drv = basic_derivation(&req.drv_path, &req.drv, &dir)?;
        let fixed_only = !drv.outputs.is_empty()
            && drv.outputs.values().all(|o| {
                matches!(
                    o,
                    pkgchain_store_model::derivation::DerivationOutput::CaFixed(_)
                )
            });
        // As nix-daemon: an untrusted client could claim any output path of an
        // input-addressed derivation.
        if self.trust != crate::auth::Trust::Trusted && !fixed_only {
            return Err(failed(
                "you are not privileged to build input-addressed derivations",
            ));
        }
        // Its inputs and outputs are kept from a collection running meanwhile.
        let mut keep: Vec<StorePath> = drv.input_srcs.iter().cloned().collect();
        for (name, out) in &drv.outputs {
            if let Ok(Some(p)) = out.path(&dir, &drv.name, name) {
                keep.push(p);
            }
        }
        for p in &keep {
            self.add_temp_root(p).await.map_err(failed)?;
        }
        let opts = self.build_options(req.mode)?;
        let builds = self.state.builds.clone();
        let drv_path = req.drv_path.clone();
        let (result, _) = self
            .while_forwarding(|tx| async move {
                builds.build_given(&store, drv_path, drv, &opts, tx).await
            })
            .await?;
        tracing::info!(
            drv = %dir.display(&req.drv_path),
            status = ?result.status,
            "built a derivation the client sent"
        );
        Ok(result)
    }

    /// Runs the scheduler's future `run` (given the sender of its events), forwarding each
    /// build event to the client as it comes; returns what `run` returns.
    pub(super) async fn while_forwarding<T, F>(
        &mut self,
        run: impl FnOnce(mpsc::UnboundedSender<BuildEvent>) -> F,
    ) -> Result<T, OpError>
    where
        F: std::future::Future<Output = T>,
    {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let run = run(tx);
        tokio::pin!(run);
        let done = loop {
            tokio::select! {
                done = &mut run => break done,
                Some(event) = rx.recv() => {
                    self.forward(event).await?;
                    while let Ok(event) = rx.try_recv() {
                        self.forward(event).await?;
                    }
                    self.writer().flush().await.map_err(|e| OpError::Fatal(e.to_string()))?;
                }
            }
        };
        while let Ok(event) = rx.try_recv() {
            self.forward(event).await?;
        }
        Ok(done)
    }

    async fn forward(&mut self, event: BuildEvent) -> Result<(), ConnError> {
        let dir = self.state.store.store_dir().clone();
        let message = match event {
            BuildEvent::Started(id, drv, mode) => {
                let shown = dir.display(&drv);
                // Nix's words for the build activity of each mode.
                let text = match mode {
                    BuildMode::Normal => format!("building '{shown}'"),
                    BuildMode::Repair => format!("repairing outputs of '{shown}'"),
                    BuildMode::Check => format!("checking outputs of '{shown}'"),
                };
                StderrMessage::StartActivity {
                    id,
                    level: LEVEL_INFO,
                    activity_type: ActivityType::Build,
                    text: text.into_bytes().into(),
                    fields: vec![
                        Field::String(shown.into_bytes().into()),
                        Field::String(Vec::new().into()),
                        Field::Int(1),
                        Field::Int(1),
                    ],
                    parent: 0,
                }
            }
            BuildEvent::Line(id, line) => StderrMessage::Result {
                id,
                result_type: ResultType::BuildLogLine,
                fields: vec![Field::String(line.into_bytes().into())],
            },
            BuildEvent::Stopped(id) => StderrMessage::StopActivity { id },
            BuildEvent::InputFailed(message) => StderrMessage::Next(error_line(&message).into()),
            BuildEvent::Message(mut line) => {
                line.push('\n');
                StderrMessage::Next(line.into_bytes().into())
            }
        };
        self.send(&message).await
    }
}

/// The derivation `BuildDerivation` sent, checked as a `.drv` file would be: written as ATerm
/// and parsed by the same parser (so its outputs, hashes and paths are validated).
fn basic_derivation(
    drv_path: &pkgchain_store_model::store_path::StorePath,
    basic: &pkgchain_protocol::request::BasicDerivation,
    dir: &pkgchain_store_model::store_path::StoreDir,
) -> Result<pkgchain_store_model::derivation::Derivation, OpError> {
    use pkgchain_store_model::derivation::Derivation;
    fn quoted(out: &mut Vec<u8>, s: &[u8]) {
        out.push(b'"');
        for &b in s {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => out.push(b),
            }
        }
        out.push(b'"');
    }
    fn list<T>(
        out: &mut Vec<u8>,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Vec<u8>, T),
    ) {
        out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            each(out, item);
        }
        out.push(b']');
    }
    let mut a = b"Derive(".to_vec();
    list(&mut a, &basic.outputs, |a, (name, o)| {
        a.push(b'(');
        quoted(a, name.as_bytes());
        a.push(b',');
        let path = o.path.as_ref().map(|p| dir.display(p)).unwrap_or_default();
        quoted(a, path.as_bytes());
        a.push(b',');
        quoted(a, o.hash_algo.as_bytes());
        a.push(b',');
        quoted(a, o.hash.as_bytes());
        a.push(b')');
    });
    a.extend_from_slice(b",[],");
    list(&mut a, &basic.input_srcs, |a, p| {
        quoted(a, dir.display(p).as_bytes())
    });
    a.push(b',');
    quoted(&mut a, &basic.platform.0);
    a.push(b',');
    quoted(&mut a, &basic.builder.0);
    a.push(b',');
    list(&mut a, &basic.args, |a, x| quoted(a, &x.0));
    a.push(b',');
    list(&mut a, &basic.env, |a, (k, v)| {
        a.push(b'(');
        quoted(a, &k.0);
        a.push(b',');
        quoted(a, &v.0);
        a.push(b')');
    });
    a.push(b')');
    let shown = dir.display(drv_path);
    let name = Derivation::name_from_path(drv_path)
        .ok_or_else(|| failed(format!("'{shown}' is not a derivation path")))?;
    Derivation::from_aterm(&a, name, dir)
        .map_err(|e| failed(format!("the derivation sent for '{shown}' is invalid: {e}")))
}

/// A logged error as Nix's `logError` shows it.
pub(super) fn error_line(message: &str) -> Vec<u8> {
    format!("\x1b[31;1merror:\x1b[0m {message}\n").into_bytes()
}

/// How `BuildPaths` reports failed results, as Nix does: one failure is the error; with more,
/// each is logged (the first returned lines) and the error lists the derivations.
pub(super) fn build_failure(
    results: &[KeyedBuildResult],
    dir: &pkgchain_store_model::store_path::StoreDir,
) -> (Vec<String>, Option<String>) {
    let failed: Vec<&KeyedBuildResult> = results
        .iter()
        .filter(|r| {
            !matches!(
                r.result.status,
                BuildStatus::Built | BuildStatus::AlreadyValid | BuildStatus::Substituted
            )
        })
        .collect();
    match failed.as_slice() {
        [] => (Vec::new(), None),
        [one] => (Vec::new(), Some(one.result.error_msg.clone())),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|r| match &r.path {
                    DerivedPath::Opaque(p) => format!("'{}'", dir.display(p)),
                    DerivedPath::Built { drv_path, .. } => {
                        format!("'{}'", dir.display(&drv_path.root))
                    }
                })
                .collect();
            (
                many.iter().map(|r| r.result.error_msg.clone()).collect(),
                Some(format!("build of {} failed", names.join(", "))),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use pkgchain_protocol::request::{BasicDerivation, WireDerivationOutput};
    use pkgchain_protocol::wire::ByteString;
    use pkgchain_store_model::derivation::DerivationOutput;
    use pkgchain_store_model::store_path::{StoreDir, StorePath};

    use super::basic_derivation;

    fn path(base: &str) -> StorePath {
        StorePath::from_base_name(base).expect("store path")
    }

    #[test]
    fn a_sent_derivation_keeps_every_byte_through_the_aterm_check() {
        let dir = StoreDir::default();
        let out = path("0c2vvk9ih6lbbrd3mnns0jhknc5v8dmj-x");
        let src = path("1y7kz7v1hzzydk0zbdpvkr4xxg0ymbnh-src");
        let tricky = b"quote \" backslash \\ newline \n tab \t return \r end".to_vec();
        let basic = BasicDerivation {
            outputs: BTreeMap::from([(
                "out".to_owned(),
                WireDerivationOutput {
                    path: Some(out.clone()),
                    hash_algo: String::new(),
                    hash: String::new(),
                },
            )]),
            input_srcs: BTreeSet::from([src.clone()]),
            platform: ByteString(b"x86_64-linux".to_vec()),
            builder: ByteString(b"/bin/sh".to_vec()),
            args: vec![ByteString(b"-c".to_vec()), ByteString(tricky.clone())],
            env: BTreeMap::from([(ByteString(b"v".to_vec()), ByteString(tricky.clone()))]),
        };
        let drv = basic_derivation(
            &path("2a3b4c5d6f7g8h9i0j1k2l3m4n5p6q7r-x.drv"),
            &basic,
            &dir,
        )
        .expect("valid");
        assert_eq!(drv.name, "x");
        assert_eq!(
            drv.outputs.get("out"),
            Some(&DerivationOutput::InputAddressed(out))
        );
        assert_eq!(drv.input_srcs, BTreeSet::from([src]));
        assert!(drv.input_drvs.is_empty());
        assert_eq!(drv.args[1], tricky);
        assert_eq!(drv.env_get("v"), Some(tricky.as_slice()));
    }

    #[test]
    fn a_sent_fixed_output_with_the_wrong_path_is_refused() {
        let dir = StoreDir::default();
        let basic = BasicDerivation {
            outputs: BTreeMap::from([(
                "out".to_owned(),
                WireDerivationOutput {
                    path: Some(path("0c2vvk9ih6lbbrd3mnns0jhknc5v8dmj-x")),
                    hash_algo: "sha256".to_owned(),
                    hash: "0c2vvk9ih6lbbrd3mnns0jhknc5v8dmj".repeat(2),
                },
            )]),
            input_srcs: BTreeSet::new(),
            platform: ByteString(b"x86_64-linux".to_vec()),
            builder: ByteString(b"/bin/sh".to_vec()),
            args: vec![],
            env: BTreeMap::new(),
        };
        let drv_path = path("2a3b4c5d6f7g8h9i0j1k2l3m4n5p6q7r-x.drv");
        assert!(basic_derivation(&drv_path, &basic, &dir).is_err());
    }
}
