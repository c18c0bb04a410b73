//! `SetOptions` (19): the client's settings, sent as the first request of a connection.
//!
//! On the wire, in this order, twelve numbers that Nix reads as `unsigned int` (a u64 above
//! 2^32 - 1 is refused):
//!
//! | # | field | notes |
//! |---|---|---|
//! | 1 | keepFailed | bool |
//! | 2 | keepGoing | bool |
//! | 3 | tryFallback | bool |
//! | 4 | verbosity | 0 error ... 7 vomit (2.3: no "notice", 6 is vomit) |
//! | 5 | maxBuildJobs | |
//! | 6 | maxSilentTime | seconds |
//! | 7 | useBuildHook | obsolete; clients send 1, ignored |
//! | 8 | verboseBuild | a verbosity: 0 (error) means "verbose builds"; clients send 6/7 otherwise |
//! | 9 | logType | obsolete; clients send 0, ignored |
//! | 10 | printBuildTrace | obsolete; clients send 0, ignored |
//! | 11 | buildCores | |
//! | 12 | useSubstitutes | bool |
//!
//! then, from 1.12, `{str name : str value}`: every setting the client has set in its own
//! configuration (the overrides). The reply is nothing but `STDERR_LAST`.

use std::collections::BTreeMap;

use crate::context::WireContext;
use crate::wire::read::{read_len, read_string, read_u64_max};
use crate::wire::{WireError, WireRead, WireWriter};

/// Nix's `lvlError`: in the `verboseBuild` field it means "show build output".
const VERBOSE_BUILD_ON: u64 = 0;
/// Nix's `lvlVomit` (2.4+), what clients send in `verboseBuild` when builds are quiet.
const VERBOSE_BUILD_OFF: u64 = 7;

/// The settings a client sends with `SetOptions`.
///
/// The obsolete fields (`useBuildHook`, `logType`, `printBuildTrace`) are read and dropped;
/// encoding writes what Nix clients write (1, 0, 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Keep the build directory of failed builds (`keep-failed`).
    pub keep_failed: bool,
    /// Go on with other builds after one failed (`keep-going`).
    pub keep_going: bool,
    /// Build from source when substitution fails (`fallback`).
    pub try_fallback: bool,
    /// The client's verbosity (log lines above it are not sent to it).
    pub verbosity: u32,
    /// `max-jobs`.
    pub max_build_jobs: u32,
    /// `max-silent-time`, seconds (0: no limit).
    pub max_silent_time: u32,
    /// Whether build output should be shown (the wire carries verbosity 0 for yes).
    pub verbose_build: bool,
    /// `cores` (0: all).
    pub build_cores: u32,
    /// `substitute`.
    pub use_substitutes: bool,
    /// Settings by canonical name, with their full values (1.12+; empty below).
    pub overrides: BTreeMap<String, String>,
}

impl Default for ClientSettings {
    /// What a Nix client with an empty configuration sends: verbosity 3 (info), one job, no
    /// silence limit, quiet builds, all cores, substitutes on, no overrides.
    fn default() -> ClientSettings {
        ClientSettings {
            keep_failed: false,
            keep_going: false,
            try_fallback: false,
            verbosity: 3,
            max_build_jobs: 1,
            max_silent_time: 0,
            verbose_build: false,
            build_cores: 0,
            use_substitutes: true,
            overrides: BTreeMap::new(),
        }
    }
}

async fn read_uint<R: WireRead>(r: &mut R, what: &'static str) -> Result<u32, WireError> {
    let value = read_u64_max(r, u64::from(u32::MAX), what).await?;
    Ok(u32::try_from(value).unwrap_or(u32::MAX))
}

impl ClientSettings {
    /// Appends the request arguments.
    pub fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        w.put_bool(self.keep_failed);
        w.put_bool(self.keep_going);
        w.put_bool(self.try_fallback);
        w.put_u64(u64::from(self.verbosity));
        w.put_u64(u64::from(self.max_build_jobs));
        w.put_u64(u64::from(self.max_silent_time));
        w.put_u64(1); // useBuildHook
        w.put_u64(if self.verbose_build {
            VERBOSE_BUILD_ON
        } else {
            VERBOSE_BUILD_OFF
        });
        w.put_u64(0); // logType
        w.put_u64(0); // printBuildTrace
        w.put_u64(u64::from(self.build_cores));
        w.put_bool(self.use_substitutes);
        if cx.at_least(12) {
            w.put_u64(self.overrides.len() as u64);
            for (name, value) in &self.overrides {
                w.put_str(name);
                w.put_str(value);
            }
        } else if !self.overrides.is_empty() {
            return Err(WireError::not_representable(
                "SetOptions overrides",
                "setting overrides need protocol 1.12",
            ));
        }
        Ok(())
    }

    /// Reads the request arguments.
    pub async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
    ) -> Result<ClientSettings, WireError> {
        let keep_failed = read_uint(r, "SetOptions keepFailed").await? != 0;
        let keep_going = read_uint(r, "SetOptions keepGoing").await? != 0;
        let try_fallback = read_uint(r, "SetOptions tryFallback").await? != 0;
        let verbosity = read_uint(r, "SetOptions verbosity").await?;
        let max_build_jobs = read_uint(r, "SetOptions maxBuildJobs").await?;
        let max_silent_time = read_uint(r, "SetOptions maxSilentTime").await?;
        read_uint(r, "SetOptions useBuildHook (obsolete)").await?;
        let verbose_build = u64::from(read_uint(r, "SetOptions verboseBuild").await?);
        read_uint(r, "SetOptions logType (obsolete)").await?;
        read_uint(r, "SetOptions printBuildTrace (obsolete)").await?;
        let build_cores = read_uint(r, "SetOptions buildCores").await?;
        let use_substitutes = read_uint(r, "SetOptions useSubstitutes").await? != 0;
        let mut overrides = BTreeMap::new();
        if cx.at_least(12) {
            let what = "SetOptions overrides";
            let len = read_len(r, cx.limits.max_list_len, what).await?;
            for _ in 0..len {
                let name =
                    read_string(r, cx.limits.max_string_len, "SetOptions setting name").await?;
                let value =
                    read_string(r, cx.limits.max_string_len, "SetOptions setting value").await?;
                overrides.insert(name, value);
            }
        }
        Ok(ClientSettings {
            keep_failed,
            keep_going,
            try_fallback,
            verbosity,
            max_build_jobs,
            max_silent_time,
            verbose_build: verbose_build == VERBOSE_BUILD_ON,
            build_cores,
            use_substitutes,
            overrides,
        })
    }
}
