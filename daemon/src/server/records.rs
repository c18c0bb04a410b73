//! Operations that record things beside store paths: GC roots (temp, indirect, permanent,
//! and finding them), realisations of derivation outputs, and build logs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pkgchain_protocol::reply::{RealisationReply, Roots};
use pkgchain_protocol::request::{DrvOutputKey, RegisterDrvOutput};
use pkgchain_protocol::types::{
    LegacyDrvOutput, LegacyRealisation, Realisation, UnkeyedRealisation,
};
use pkgchain_protocol::wire::ByteString;
use pkgchain_store::{DrvHashOutput, RealisationKey, RealisationValue};
use pkgchain_store_model::signature::Signature;
use pkgchain_store_model::store_path::StorePath;
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::debug;

use super::connection::Conn;
use super::ops::{OpError, failed};
use crate::auth::Trust;

/// Largest build log kept (uncompressed); a longer one is refused and nothing is stored.
const MAX_BUILD_LOG: u64 = 1 << 30;

fn blocking_failed(e: tokio::task::JoinError) -> OpError {
    failed(format!("internal error: {e}"))
}

impl Conn {
    /// `FindRoots`: every root whose store path is valid, with where it comes from. Untrusted
    /// clients see `{censored}` for roots of running processes and other connections.
    pub(super) async fn find_roots(&self) -> Result<Roots, OpError> {
        let layout = self.state.roots.clone();
        let censor = self.trust != Trust::Trusted;
        let found =
            tokio::task::spawn_blocking(move || pkgchain_gc_roots::find_roots(&layout, censor))
                .await
                .map_err(blocking_failed)?
                .map_err(|e| failed(e.to_string()))?;
        let candidates: Vec<StorePath> = found.keys().cloned().collect();
        let valid = self.state.store.query_valid_paths(&candidates).await?;
        let mut roots = BTreeMap::new();
        for (path, links) in found {
            if valid.contains(&path) {
                let links: BTreeSet<ByteString> = links
                    .into_iter()
                    .map(|l| ByteString(l.into_bytes()))
                    .collect();
                roots.insert(path, links);
            } else {
                debug!(path = %path, "skipping a root to a path that is not valid");
            }
        }
        Ok(Roots(roots))
    }

    /// `AddIndirectRoot`: `gcroots/auto/<hash>` → the client's link.
    pub(super) async fn add_indirect_root(&self, link: &ByteString) -> Result<(), OpError> {
        let link = PathBuf::from(OsStr::from_bytes(&link.0));
        let layout = self.state.roots.clone();
        tokio::task::spawn_blocking(move || pkgchain_gc_roots::add_indirect_root(&layout, &link))
            .await
            .map_err(blocking_failed)?
            .map_err(|e| failed(e.to_string()))?;
        Ok(())
    }

    /// `AddPermRoot` (trusted clients only, as in Nix): the link `gc_root` → `path`, made by
    /// the daemon and registered as an indirect root.
    pub(super) async fn add_perm_root(
        &mut self,
        path: &StorePath,
        gc_root: &ByteString,
    ) -> Result<ByteString, OpError> {
        if self.trust != Trust::Trusted {
            return Err(failed(
                "you are not privileged to create perm roots\n\nhint: you can just do this \
                 client-side without special privileges, and probably want to do that instead.",
            ));
        }
        self.add_temp_root(path).await.map_err(failed)?;
        let gc_root = PathBuf::from(OsStr::from_bytes(&gc_root.0));
        let layout = self.state.roots.clone();
        let p = path.clone();
        let made = tokio::task::spawn_blocking(move || {
            pkgchain_gc_roots::add_perm_root(&layout, &p, &gc_root)
        })
        .await
        .map_err(blocking_failed)?
        .map_err(|e| failed(e.to_string()))?;
        Ok(ByteString(made.as_os_str().as_bytes().to_vec()))
    }

    /// `SyncWithGC`: waits until a running collector is done (takes `gc.lock` shared, then
    /// lets it go).
    pub(super) async fn sync_with_gc(&self) -> Result<(), OpError> {
        let layout = self.state.roots.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let file = layout.open_gc_lock().map_err(|e| e.to_string())?;
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(blocking_failed)?
        .map_err(|e| failed(format!("waiting for the garbage collector: {e}")))
    }

    /// `RegisterDrvOutput`. Nix lets any client register a realisation without checking its
    /// signatures; a realisation decides what a derivation's output *is*, so here only
    /// trusted clients may (the protocol reference's recommendation). Like Nix, it needs
    /// the `ca-derivations` experimental feature in the daemon's configuration.
    pub(super) async fn register_drv_output(&self, req: RegisterDrvOutput) -> Result<(), OpError> {
        // `extra-experimental-features` lines are already merged in (see `NixConfig`).
        if !self
            .state
            .config
            .list("experimental-features", &[])
            .iter()
            .any(|f| f == "ca-derivations")
        {
            return Err(failed(
                "experimental Nix feature 'ca-derivations' is disabled; add \
                 '--extra-experimental-features ca-derivations' to enable it",
            ));
        }
        if self.trust != Trust::Trusted {
            return Err(failed(
                "you are not privileged to register realisations (only trusted users may)",
            ));
        }
        let (key, value) = match req {
            RegisterDrvOutput::Pre1_31 { id, out_path } => (
                RealisationKey::DrvHash(hash_key(&id)),
                RealisationValue {
                    out_path,
                    signatures: BTreeSet::new(),
                    dependencies: BTreeMap::new(),
                },
            ),
            RegisterDrvOutput::Legacy(r) => (
                RealisationKey::DrvHash(hash_key(&r.id)),
                RealisationValue {
                    out_path: r.out_path,
                    signatures: r.signatures.iter().map(ToString::to_string).collect(),
                    dependencies: r
                        .dependent_realisations
                        .iter()
                        .map(|(k, v)| (hash_key(k), v.clone()))
                        .collect(),
                },
            ),
            RegisterDrvOutput::Realisation(Realisation { id, value }) => (
                RealisationKey::DrvPath {
                    drv_path: id.drv_path,
                    output_name: id.output_name,
                },
                RealisationValue {
                    out_path: value.out_path,
                    signatures: value.signatures.iter().map(ToString::to_string).collect(),
                    dependencies: BTreeMap::new(),
                },
            ),
        };
        self.state.store.register_realisation(key, value).await?;
        Ok(())
    }

    /// `QueryRealisation`, answered in the connection's form.
    pub(super) async fn query_realisation(
        &self,
        key: DrvOutputKey,
    ) -> Result<RealisationReply, OpError> {
        let store = &self.state.store;
        Ok(match key {
            DrvOutputKey::Path(id) => {
                let found = store
                    .query_realisation(&RealisationKey::DrvPath {
                        drv_path: id.drv_path,
                        output_name: id.output_name,
                    })
                    .await?;
                RealisationReply::Realisation(found.map(|v| UnkeyedRealisation {
                    out_path: v.out_path,
                    signatures: signatures(&v.signatures),
                }))
            }
            DrvOutputKey::Legacy(id) => {
                let found = store
                    .query_realisation(&RealisationKey::DrvHash(hash_key(&id)))
                    .await?;
                if self.cx.at_least(31) {
                    RealisationReply::Legacy(found.map(|v| {
                        LegacyRealisation {
                            id,
                            out_path: v.out_path,
                            signatures: signatures(&v.signatures),
                            dependent_realisations: v
                                .dependencies
                                .into_iter()
                                .map(|(k, p)| {
                                    (
                                        LegacyDrvOutput {
                                            drv_hash: k.drv_hash,
                                            output_name: k.output_name,
                                        },
                                        p,
                                    )
                                })
                                .collect(),
                        }
                    }))
                } else {
                    RealisationReply::OutPath(found.map(|v| v.out_path))
                }
            }
        })
    }

    /// `AddBuildLog` (trusted clients only, as in Nix): stores the log, bzip2-compressed, at
    /// `<log dir>/drvs/<first 2 chars>/<rest of the base name>.bz2`, unless a log is there
    /// already. The log is written beside its final name and renamed into place when
    /// complete, so a cut-off upload leaves nothing.
    pub(super) async fn store_build_log(
        state: &super::DaemonState,
        drv_path: &StorePath,
        data: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), OpError> {
        let base = drv_path.base_name();
        let (first, rest) = base.split_at(2);
        let dir = state.log_dir.join("drvs").join(first);
        let target = dir.join(format!("{rest}.bz2"));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let t = target.clone();
        let writer =
            tokio::task::spawn_blocking(move || write_log(&dir, &t, || rx.blocking_recv(), false));
        let shown = state.store.store_dir().display(drv_path);
        let read = async {
            let mut total: u64 = 0;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = data
                    .read(&mut buf)
                    .await
                    .map_err(|e| failed(format!("reading the build log: {e}")))?;
                if n == 0 {
                    return Ok(());
                }
                total += n as u64;
                if total > MAX_BUILD_LOG {
                    return Err(failed(format!(
                        "build log of '{shown}' is larger than {MAX_BUILD_LOG} bytes"
                    )));
                }
                if tx.send(buf[..n].to_vec()).await.is_err() {
                    // The writer stopped; its error is the one reported.
                    return Ok(());
                }
            }
        }
        .await;
        // An empty chunk marks the end: only then is the log renamed into place. Without it
        // (the log was refused or cut off) the writer discards its file.
        if read.is_ok() {
            let _ = tx.send(Vec::new()).await;
        }
        drop(tx);
        let written = writer.await.map_err(blocking_failed)?;
        read?;
        written.map_err(|e| {
            failed(format!(
                "storing the build log at '{}': {e}",
                target.display()
            ))
        })
    }
}

/// Logs up to this size are compressed with bzip2's smallest block size (100 kB), which
/// compresses them as well as the largest (they fit in one block either way) while the
/// compressor allocates, and zeroes, 1 MB instead of 7.6 MB: for a trivial build that
/// allocation was a fifth of the daemon's CPU time.
const SMALL_LOG: usize = 90 * 1024;

/// Compresses what arrives on `rx` into a temporary file in `dir` and renames it to `target`
/// when the end marker (an empty chunk) comes; without it the file is removed. A log already
/// at `target` is kept (`AddBuildLog`, Nix keeps the first) unless `replace` (a new build).
///
/// The log is not synced before the rename (nor is it by Nix), which saves a disk flush per
/// build: a crash in the seconds after may leave that build's log empty or cut short under its
/// name (`nix log` then says it cannot decompress it). Logs are no store paths: nothing
/// registered depends on them.
pub(crate) fn write_log(
    dir: &Path,
    target: &Path,
    mut next: impl FnMut() -> Option<Vec<u8>>,
    replace: bool,
) -> std::io::Result<()> {
    use bzip2::Compression;
    use bzip2::write::BzEncoder;
    std::fs::create_dir_all(dir)?;
    if !replace && target.exists() {
        // Nix keeps the first log of a derivation.
        while next().is_some() {}
        return Ok(());
    }
    let mut temp = Some(tempfile::NamedTempFile::new_in(dir)?);
    // The start of the log, until it is known to be more than a small one.
    let mut small: Vec<u8> = Vec::new();
    let mut encoder: Option<BzEncoder<tempfile::NamedTempFile>> = None;
    let mut complete = false;
    while let Some(chunk) = next() {
        if chunk.is_empty() {
            complete = true;
            break;
        }
        match (&mut encoder, temp.take()) {
            (Some(e), _) => e.write_all(&chunk)?,
            (None, Some(file)) if small.len() + chunk.len() > SMALL_LOG => {
                let mut e = BzEncoder::new(file, Compression::best());
                e.write_all(&small)?;
                e.write_all(&chunk)?;
                small = Vec::new();
                encoder = Some(e);
            }
            (None, file) => {
                temp = file;
                small.extend_from_slice(&chunk);
            }
        }
    }
    if !complete {
        return Ok(());
    }
    let temp = match (encoder, temp) {
        (Some(e), _) => e.finish()?,
        (None, Some(file)) => {
            let mut e = BzEncoder::new(file, Compression::fast());
            e.write_all(&small)?;
            e.finish()?
        }
        (None, None) => return Err(std::io::Error::other("the log's file was lost")),
    };
    if replace {
        return temp.persist(target).map(drop).map_err(|e| e.error);
    }
    match temp.persist_noclobber(target) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.error),
    }
}

fn hash_key(id: &LegacyDrvOutput) -> DrvHashOutput {
    DrvHashOutput {
        drv_hash: id.drv_hash.clone(),
        output_name: id.output_name.clone(),
    }
}

/// Stored signatures, parsed (they were checked when registered).
fn signatures(stored: &BTreeSet<String>) -> BTreeSet<Signature> {
    stored
        .iter()
        .filter_map(|s| Signature::parse(s).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn round_trip(chunks: Vec<Vec<u8>>) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("log.bz2");
        let mut it = chunks.into_iter().chain([Vec::new()]);
        write_log(dir.path(), &target, || it.next(), true).expect("write");
        let mut text = Vec::new();
        bzip2::read::BzDecoder::new(std::fs::File::open(&target).expect("open"))
            .read_to_end(&mut text)
            .expect("decompress");
        text
    }

    #[test]
    fn small_and_large_logs_are_stored_whole() {
        assert_eq!(
            round_trip(vec![b"one\n".to_vec(), b"two\n".to_vec()]),
            b"one\ntwo\n"
        );
        assert_eq!(round_trip(vec![]), b"");
        // Past the small-log size, in pieces that straddle it.
        let pieces: Vec<Vec<u8>> = (0..300u32)
            .map(|i| format!("line {i} {}\n", "x".repeat(1000)).into_bytes())
            .collect();
        let whole: Vec<u8> = pieces.concat();
        assert!(whole.len() > SMALL_LOG * 3);
        assert_eq!(round_trip(pieces), whole);
    }

    #[test]
    fn an_unfinished_log_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("log.bz2");
        let mut it = [b"partial".to_vec()].into_iter();
        write_log(dir.path(), &target, || it.next(), true).expect("write");
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}
