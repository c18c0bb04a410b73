//! The outcome of building one derivation or path: `BuildResult` and `KeyedBuildResult`.
//!
//! BuildResult, in order:
//! 1. u64 status ([`BuildStatus`]),
//! 2. `str errorMsg` ("" on success),
//! 3. from 1.29: u64 timesBuilt, bool isNonDeterministic, u64 startTime, u64 stopTime,
//! 4. from 1.37: cpuUser and cpuSystem, each u64 tag 0 (none) or tag 1 and i64 microseconds,
//! 5. with `realisation-with-path-not-hash`: `{str outputName : UnkeyedRealisation}`;
//!    otherwise from 1.28: `{str "sha256:<hex>!<output>" : str realisation JSON}`.
//!
//! KeyedBuildResult (an element of the `BuildPathsWithResults` reply) is the
//! [`DerivedPath`] followed by the BuildResult.

use std::collections::BTreeMap;
use std::time::Duration;

use pkgchain_store_model::hash::Hash;
use pkgchain_store_model::store_path::StorePath;

use super::derived_path::DerivedPath;
use super::legacy::{LegacyDrvOutput, LegacyRealisation};
use super::realisation::UnkeyedRealisation;
use crate::context::WireContext;
use crate::version::FEATURE_REALISATION_WITH_PATH_NOT_HASH;
use crate::wire::read::{
    read_bool, read_bytes, read_enum, read_i64, read_len, read_tag, read_u64_max,
};
use crate::wire::{Decode, Encode, WireError, WireRead, WireWriter};

/// `BuildResult::Status`: u64 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildStatus {
    /// 0: built.
    Built,
    /// 1: substituted.
    Substituted,
    /// 2: already valid, nothing done.
    AlreadyValid,
    /// 3: the builder failed.
    PermanentFailure,
    /// 4: an input was rejected.
    InputRejected,
    /// 5: an output was rejected (also hash mismatches).
    OutputRejected,
    /// 6: a failure that may go away on retry.
    TransientFailure,
    /// 7: cached failure (obsolete).
    CachedFailure,
    /// 8: timed out.
    TimedOut,
    /// 9: another failure.
    MiscFailure,
    /// 10: a dependency failed.
    DependencyFailed,
    /// 11: the log grew beyond the limit.
    LogLimitExceeded,
    /// 12: `--check` found a different result.
    NotDeterministic,
    /// 13: the resolved derivation's outputs were already valid.
    ResolvesToAlreadyValid,
    /// 14: no substituter had the path.
    NoSubstituters,
}

impl BuildStatus {
    const ALL: [BuildStatus; 15] = [
        BuildStatus::Built,
        BuildStatus::Substituted,
        BuildStatus::AlreadyValid,
        BuildStatus::PermanentFailure,
        BuildStatus::InputRejected,
        BuildStatus::OutputRejected,
        BuildStatus::TransientFailure,
        BuildStatus::CachedFailure,
        BuildStatus::TimedOut,
        BuildStatus::MiscFailure,
        BuildStatus::DependencyFailed,
        BuildStatus::LogLimitExceeded,
        BuildStatus::NotDeterministic,
        BuildStatus::ResolvesToAlreadyValid,
        BuildStatus::NoSubstituters,
    ];

    /// The wire number.
    pub fn to_wire(self) -> u64 {
        BuildStatus::ALL
            .iter()
            .position(|s| *s == self)
            .map_or(0, |i| i as u64)
    }

    /// From the wire number.
    pub fn from_wire(value: u64) -> Option<BuildStatus> {
        usize::try_from(value)
            .ok()
            .and_then(|i| BuildStatus::ALL.get(i).copied())
    }

    /// Nix's name, as in its JSON (`"Built"`, `"OutputRejected"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BuildStatus::Built => "Built",
            BuildStatus::Substituted => "Substituted",
            BuildStatus::AlreadyValid => "AlreadyValid",
            BuildStatus::PermanentFailure => "PermanentFailure",
            BuildStatus::InputRejected => "InputRejected",
            BuildStatus::OutputRejected => "OutputRejected",
            BuildStatus::TransientFailure => "TransientFailure",
            BuildStatus::CachedFailure => "CachedFailure",
            BuildStatus::TimedOut => "TimedOut",
            BuildStatus::MiscFailure => "MiscFailure",
            BuildStatus::DependencyFailed => "DependencyFailed",
            BuildStatus::LogLimitExceeded => "LogLimitExceeded",
            BuildStatus::NotDeterministic => "NotDeterministic",
            BuildStatus::ResolvesToAlreadyValid => "ResolvesToAlreadyValid",
            BuildStatus::NoSubstituters => "NoSubstituters",
        }
    }

    /// From Nix's name.
    pub fn from_name(name: &str) -> Option<BuildStatus> {
        BuildStatus::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether this status means the outputs are valid.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            BuildStatus::Built
                | BuildStatus::Substituted
                | BuildStatus::AlreadyValid
                | BuildStatus::ResolvesToAlreadyValid
        )
    }
}

/// One built output in [`BuildResult::built_outputs`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BuiltOutput {
    /// Where the output is, with its signatures.
    pub realisation: UnkeyedRealisation,
    /// Only in the legacy encoding: the derivation's hash modulo, part of the map key
    /// `sha256:<hex>!<output>`. Old clients only read the output name after `!`;
    /// [`BuiltOutput::new`] uses the all-zero hash Nix 2.35 writes.
    pub legacy_drv_hash: Hash,
    /// Only in the legacy encoding (full JSON forms): the realisation's dependencies.
    pub legacy_dependent_realisations: BTreeMap<LegacyDrvOutput, StorePath>,
}

impl BuiltOutput {
    /// An output at `out_path`, with no signatures and the dummy legacy hash.
    pub fn new(out_path: StorePath) -> BuiltOutput {
        BuiltOutput {
            realisation: UnkeyedRealisation::new(out_path),
            legacy_drv_hash: LegacyDrvOutput::dummy_hash(),
            legacy_dependent_realisations: BTreeMap::new(),
        }
    }
}

/// The result of building or substituting one thing.
///
/// The struct mirrors the wire, which predates Nix's split into success and failure: on
/// success `error_msg` is empty and `is_non_deterministic` false; on failure `built_outputs`
/// is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    /// What happened.
    pub status: BuildStatus,
    /// Why it failed ("" on success). Decoded lossily: invalid UTF-8 becomes U+FFFD, since the
    /// text (often a build-log tail) is only shown to people.
    pub error_msg: String,
    /// How many times the derivation was built (1.29+).
    pub times_built: u32,
    /// Whether `--check` rounds disagreed (1.29+).
    pub is_non_deterministic: bool,
    /// Unix time the build started, seconds (1.29+; 0 unknown).
    pub start_time: i64,
    /// Unix time the build stopped, seconds (1.29+; 0 unknown).
    pub stop_time: i64,
    /// User CPU time of the build, microsecond precision (1.37+).
    pub cpu_user: Option<Duration>,
    /// System CPU time of the build, microsecond precision (1.37+).
    pub cpu_system: Option<Duration>,
    /// The outputs built, by output name (1.28+).
    pub built_outputs: BTreeMap<String, BuiltOutput>,
}

impl BuildResult {
    /// A result with `status` and every other field empty or zero.
    pub fn new(status: BuildStatus) -> BuildResult {
        BuildResult {
            status,
            error_msg: String::new(),
            times_built: 0,
            is_non_deterministic: false,
            start_time: 0,
            stop_time: 0,
            cpu_user: None,
            cpu_system: None,
            built_outputs: BTreeMap::new(),
        }
    }
}

fn put_time(w: &mut WireWriter, value: i64, what: &'static str) -> Result<(), WireError> {
    let value = u64::try_from(value)
        .map_err(|_| WireError::not_representable(what, format!("negative time {value}")))?;
    w.put_u64(value);
    Ok(())
}

fn put_micros(
    w: &mut WireWriter,
    value: Option<Duration>,
    what: &'static str,
) -> Result<(), WireError> {
    match value {
        None => w.put_u64(0),
        Some(d) => {
            let micros = i64::try_from(d.as_micros())
                .map_err(|_| WireError::not_representable(what, format!("{d:?} is too long")))?;
            w.put_u64(1);
            put_time(w, micros, what)?;
        }
    }
    Ok(())
}

async fn read_micros<R: WireRead>(
    r: &mut R,
    what: &'static str,
) -> Result<Option<Duration>, WireError> {
    if read_tag(r, 1, what).await? == 0 {
        return Ok(None);
    }
    let micros = read_i64(r, what).await?;
    Ok(Some(Duration::from_micros(micros.unsigned_abs())))
}

impl Encode for BuildResult {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        w.put_u64(self.status.to_wire());
        w.put_str(&self.error_msg);
        if cx.at_least(29) {
            w.put_u64(u64::from(self.times_built));
            w.put_bool(self.is_non_deterministic);
            put_time(w, self.start_time, "build result start time")?;
            put_time(w, self.stop_time, "build result stop time")?;
        }
        if cx.at_least(37) {
            put_micros(w, self.cpu_user, "build result user CPU time")?;
            put_micros(w, self.cpu_system, "build result system CPU time")?;
        }
        if cx.has_feature(FEATURE_REALISATION_WITH_PATH_NOT_HASH) {
            w.put_u64(self.built_outputs.len() as u64);
            for (name, output) in &self.built_outputs {
                w.put_str(name);
                output.realisation.encode(w, cx)?;
            }
        } else if cx.at_least(28) {
            let mut map = BTreeMap::new();
            for (name, output) in &self.built_outputs {
                let id = LegacyDrvOutput {
                    drv_hash: output.legacy_drv_hash.clone(),
                    output_name: name.clone(),
                };
                let json = LegacyRealisation {
                    id: id.clone(),
                    out_path: output.realisation.out_path.clone(),
                    signatures: output.realisation.signatures.clone(),
                    dependent_realisations: output.legacy_dependent_realisations.clone(),
                }
                .to_json(cx.legacy_realisation_json);
                map.insert(id.to_string(), json);
            }
            map.encode(w, cx)?;
        }
        Ok(())
    }
}

impl Decode for BuildResult {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        let status = read_enum(r, "build result status", BuildStatus::from_wire).await?;
        let mut res = BuildResult::new(status);
        let msg = read_bytes(r, cx.limits.max_string_len, "build result error message").await?;
        res.error_msg = String::from_utf8_lossy(&msg).into_owned();
        if cx.at_least(29) {
            let times = read_u64_max(r, u64::from(u32::MAX), "build result times built").await?;
            res.times_built = u32::try_from(times).unwrap_or(u32::MAX);
            res.is_non_deterministic = read_bool(r, "build result non-determinism").await?;
            res.start_time = read_i64(r, "build result start time").await?;
            res.stop_time = read_i64(r, "build result stop time").await?;
        }
        if cx.at_least(37) {
            res.cpu_user = read_micros(r, "build result user CPU time").await?;
            res.cpu_system = read_micros(r, "build result system CPU time").await?;
        }
        if cx.has_feature(FEATURE_REALISATION_WITH_PATH_NOT_HASH) {
            let outputs =
                BTreeMap::<String, UnkeyedRealisation>::decode(r, cx, "build result built outputs")
                    .await?;
            res.built_outputs = outputs
                .into_iter()
                .map(|(name, realisation)| {
                    let mut output = BuiltOutput::new(realisation.out_path.clone());
                    output.realisation = realisation;
                    (name, output)
                })
                .collect();
        } else if cx.at_least(28) {
            let what = "build result built outputs";
            let len = read_len(r, cx.limits.max_list_len, what).await?;
            for _ in 0..len {
                let id = LegacyDrvOutput::decode(r, cx, what).await?;
                let realisation = LegacyRealisation::decode(r, cx, what).await?;
                res.built_outputs.insert(
                    id.output_name,
                    BuiltOutput {
                        realisation: UnkeyedRealisation {
                            out_path: realisation.out_path,
                            signatures: realisation.signatures,
                        },
                        legacy_drv_hash: id.drv_hash,
                        legacy_dependent_realisations: realisation.dependent_realisations,
                    },
                );
            }
        }
        Ok(res)
    }
}

/// A build result together with what was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedBuildResult {
    /// What the client asked for.
    pub path: DerivedPath,
    /// What happened.
    pub result: BuildResult,
}

impl Encode for KeyedBuildResult {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        self.path.encode(w, cx)?;
        self.result.encode(w, cx)
    }
}

impl Decode for KeyedBuildResult {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> Result<Self, WireError> {
        let path = DerivedPath::decode(r, cx, "keyed build result path").await?;
        let result = BuildResult::decode(r, cx, what).await?;
        Ok(KeyedBuildResult { path, result })
    }
}
