//! Nix's builtin builders (`builtin:fetchurl`, `builtin:buildenv`, `builtin:unpack-channel`),
//! run by the daemon itself instead of a sandboxed program. Each writes its outputs into a
//! staging directory that stands for the store directory; the scheduler then checks, ingests
//! and registers them like any build's outputs.

mod buildenv;
mod fetchurl;
pub(crate) mod unpack_channel;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a builtin builder gets.
pub(crate) struct BuiltinRequest<'a> {
    /// `builtin:fetchurl`, ...
    pub builder: &'a str,
    /// The builder's environment (the derivation's, with output placeholders replaced;
    /// `out` and the other outputs are absolute store paths).
    pub env: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    /// The store directory (`/nix/store`).
    pub store_dir: &'a str,
    /// Where outputs go: the output `/nix/store/X` is written at `staging/X`.
    pub staging: &'a Path,
    /// `hashed-mirrors` from `nix.conf`.
    pub hashed_mirrors: &'a [String],
    /// `ssl-cert-file` and `netrc-file`, for `builtin:fetchurl`.
    pub downloads: &'a super::DownloadSettings,
}

impl BuiltinRequest<'_> {
    /// An environment variable as text.
    pub fn var(&self, name: &str) -> Option<String> {
        self.env
            .get(name.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Where the output whose store path is in variable `output` (e.g. `out`) is written.
    pub fn output_dir(&self, output: &str) -> Result<PathBuf, String> {
        let path = self
            .var(output)
            .ok_or_else(|| format!("the output variable '{output}' is not set"))?;
        let base = path
            .strip_prefix(self.store_dir)
            .and_then(|p| p.strip_prefix('/'))
            .filter(|b| !b.is_empty() && !b.contains('/'))
            .ok_or_else(|| format!("output '{path}' is not a store path"))?;
        Ok(self.staging.join(base))
    }
}

/// Runs the builtin builder `req.builder`; `log` receives its log lines. The error is the
/// message Nix would print.
pub(crate) async fn run(
    req: &BuiltinRequest<'_>,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<(), String> {
    match req.builder {
        "builtin:fetchurl" => fetchurl::run(req, log).await,
        "builtin:buildenv" => buildenv::run(req, log).await,
        "builtin:unpack-channel" => unpack_channel::run(req, log).await,
        other => Err(format!("unsupported builtin builder '{other}'")),
    }
}
