//! The build operations (`BuildPaths`, `BuildPathsWithResults`): the connection hands the
//! wanted outputs to the scheduler ([`crate::build`]) and forwards, while it waits, each
//! build's activity and log lines to the client as nix-daemon does.

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
use crate::build::{BuildEvent, BuildOptions};

/// Nix's `lvlInfo`.
const LEVEL_INFO: u64 = 3;

impl Conn {
    /// The build options of this connection's settings for `mode`.
    fn build_options(&self, mode: BuildMode) -> BuildOptions {
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
        BuildOptions {
            mode,
            max_jobs: s.max_build_jobs,
            cores: s.build_cores,
            timeout: setting("timeout").and_then(seconds),
            max_silent: max_silent.and_then(seconds),
            max_log_size: setting("max-build-log-size").filter(|n| *n > 0),
            keep_going: s.keep_going,
            keep_failed: s.keep_failed,
        }
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
        for (i, p) in paths.iter().enumerate() {
            match p {
                DerivedPath::Opaque(path) => {
                    results[i] = Some(if store.is_valid_path(path).await? {
                        BuildResult::new(BuildStatus::AlreadyValid)
                    } else {
                        let msg = format!(
                            "path '{}' is required, but there is no substituter that can build it",
                            dir.display(path)
                        );
                        let mut r = BuildResult::new(BuildStatus::NoSubstituters);
                        r.error_msg = msg;
                        r
                    });
                }
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
        let opts = self.build_options(mode);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let builds = self.state.builds.clone();
        let run = async move { builds.realise(&store, wanted, &opts, tx).await };
        tokio::pin!(run);
        let built = loop {
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

    async fn forward(&mut self, event: BuildEvent) -> Result<(), ConnError> {
        let dir = self.state.store.store_dir().clone();
        let message = match event {
            BuildEvent::Started(id, drv) => {
                let shown = dir.display(&drv);
                StderrMessage::StartActivity {
                    id,
                    level: LEVEL_INFO,
                    activity_type: ActivityType::Build,
                    text: format!("building '{shown}'").into_bytes().into(),
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
        };
        self.send(&message).await
    }
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
