//! Verification: every valid path's blocks exist and match their CIDs, and the NAR rebuilt from
//! them has the hash and size the database records.
//!
//! First every block the database lists for a path is checked against its CID (each distinct
//! block once per run), so every missing or corrupt block is named. When they are all sound,
//! the path is exported into a SHA-256 sink: the NAR rebuilt from the DAG must have the
//! registered hash and size, which also proves the database's block list and the DAG agree.

use std::fmt;
use std::io::{self, Write};

use std::collections::HashMap;

use pkgchain_blockstore::{BlockError, BlockState};
use pkgchain_dag::Cid;
use pkgchain_dag::walk::WalkError;
use pkgchain_store_model::hash::{Hash, HashAlgo, Hasher};
use pkgchain_store_model::store_path::StorePath;
use tracing::{Instrument, debug, info_span};

use crate::export::{ExportError, export_nar};
use crate::{Store, StoreError};

/// One thing wrong with one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A block of the path is missing.
    MissingBlock {
        /// The path.
        path: StorePath,
        /// The block.
        cid: Cid,
    },
    /// A block of the path does not match its CID.
    CorruptBlock {
        /// The path.
        path: StorePath,
        /// The block.
        cid: Cid,
        /// The block's file.
        file: String,
    },
    /// The rebuilt NAR differs from what was registered.
    ContentsChanged {
        /// The path.
        path: StorePath,
        /// Registered NAR hash.
        expected: Hash,
        /// Hash of the rebuilt NAR.
        actual: Hash,
        /// Registered NAR size.
        expected_size: u64,
        /// Size of the rebuilt NAR.
        actual_size: u64,
    },
    /// The DAG cannot be read for another reason.
    Unreadable {
        /// The path.
        path: StorePath,
        /// Why.
        reason: String,
    },
}

impl Problem {
    /// The path the problem is with.
    pub fn path(&self) -> &StorePath {
        match self {
            Problem::MissingBlock { path, .. }
            | Problem::CorruptBlock { path, .. }
            | Problem::ContentsChanged { path, .. }
            | Problem::Unreadable { path, .. } => path,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingBlock { path, cid } => {
                write!(f, "path '{path}': block {cid} is missing")
            }
            Problem::CorruptBlock { path, cid, file } => {
                write!(f, "path '{path}': block {cid} is corrupt ({file})")
            }
            Problem::ContentsChanged {
                path,
                expected,
                actual,
                expected_size,
                actual_size,
            } => write!(
                f,
                "path '{path}' was modified! expected hash '{}' ({expected_size} bytes), got '{}' ({actual_size} bytes)",
                expected.to_nix32_prefixed(),
                actual.to_nix32_prefixed()
            ),
            Problem::Unreadable { path, reason } => write!(f, "path '{path}': {reason}"),
        }
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Valid paths checked.
    pub paths: u64,
    /// NAR bytes rebuilt and hashed.
    pub nar_bytes: u64,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
}

struct HashSink {
    hasher: Hasher,
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How much [`verify`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyDepth {
    /// Every block of every path is present (`nix-store --verify` without
    /// `--check-contents`): a file-existence check per block, nothing read.
    Presence,
    /// Every block read and checked against its CID, every NAR rebuilt and hashed
    /// (`--check-contents`, `pkgchain store verify`).
    Contents,
}

/// Checks every valid path of `store` to `depth`.
pub async fn verify(store: &Store, depth: VerifyDepth) -> Result<VerifyReport, StoreError> {
    let span = info_span!("verify");
    let _enter = span.enter();
    let paths = store.db().all_paths().await?;
    let mut report = VerifyReport::default();
    let mut checked: HashMap<Cid, BlockState> = HashMap::new();
    for path in paths {
        report.paths += 1;
        let (bytes, problems) = check_path(store, &path, depth, &mut checked).await?;
        report.nar_bytes += bytes;
        report.problems.extend(problems);
    }
    for p in &report.problems {
        debug!(problem = %p, "verify");
    }
    Ok(report)
}

/// Checks one valid path's contents (every block against its CID, then the rebuilt NAR against
/// the registered hash and size), as `nix-build --repair` checks outputs. A path that is not
/// valid has no problems.
pub async fn verify_path(store: &Store, path: &StorePath) -> Result<Vec<Problem>, StoreError> {
    let (_, problems) = check_path(store, path, VerifyDepth::Contents, &mut HashMap::new())
        .instrument(info_span!("verify_path", path = %path))
        .await?;
    Ok(problems)
}

/// Checks `path` to `depth`, skipping blocks already in `checked` (and adding the ones it
/// checks). Returns the NAR bytes rebuilt and the problems found.
async fn check_path(
    store: &Store,
    path: &StorePath,
    depth: VerifyDepth,
    checked: &mut HashMap<Cid, BlockState>,
) -> Result<(u64, Vec<Problem>), StoreError> {
    let mut problems = Vec::new();
    let Some(info) = store.db().path_info(path).await? else {
        // Removed while we were looking.
        return Ok((0, problems));
    };
    // Every block the database lists for the path, each checked once per run.
    let listed = store.db().path_blocks(path).await?;
    let fresh: Vec<Cid> = listed
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| !checked.contains_key(c))
        .collect();
    let s = store.clone();
    let states = tokio::task::spawn_blocking(move || {
        fresh
            .into_iter()
            .map(|c| {
                let state = match depth {
                    VerifyDepth::Contents => s.blocks().check(&c),
                    VerifyDepth::Presence => s.blocks().contains(&c).map(|present| {
                        if present {
                            BlockState::Ok
                        } else {
                            BlockState::Missing
                        }
                    }),
                };
                state.map(|st| (c, st))
            })
            .collect::<Result<Vec<_>, BlockError>>()
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))??;
    checked.extend(states);
    for (cid, _) in &listed {
        match checked.get(cid) {
            Some(BlockState::Missing) => problems.push(Problem::MissingBlock {
                path: path.clone(),
                cid: *cid,
            }),
            Some(BlockState::Corrupt) => problems.push(Problem::CorruptBlock {
                path: path.clone(),
                cid: *cid,
                file: store.blocks().path_of(cid).display().to_string(),
            }),
            _ => {}
        }
    }
    if !problems.is_empty() || depth == VerifyDepth::Presence {
        // With bad blocks the NAR cannot be rebuilt (every bad block has been named);
        // a presence check stops here.
        return Ok((0, problems));
    }
    let blocks = store.clone();
    let root = info.root;
    let exported = tokio::task::spawn_blocking(move || {
        let mut sink = HashSink {
            hasher: Hasher::new(HashAlgo::Sha256),
        };
        let size = export_nar(blocks.blocks(), &root, &mut sink)?;
        Ok::<_, ExportError>((size, sink.hasher.finish()))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?;
    let mut bytes = 0;
    match exported {
        Ok((size, hash)) => {
            bytes = size;
            if hash != info.nar_hash || size != info.nar_size {
                problems.push(Problem::ContentsChanged {
                    path: path.clone(),
                    expected: info.nar_hash.clone(),
                    actual: hash,
                    expected_size: info.nar_size,
                    actual_size: size,
                });
            }
        }
        Err(ExportError::Dag(WalkError::Get(BlockError::Missing(cid)))) => {
            problems.push(Problem::MissingBlock {
                path: path.clone(),
                cid,
            });
        }
        Err(ExportError::Dag(WalkError::Get(
            BlockError::Corrupt { cid, path: file } | BlockError::TooLarge { cid, path: file },
        ))) => problems.push(Problem::CorruptBlock {
            path: path.clone(),
            cid,
            file: file.display().to_string(),
        }),
        Err(e) => problems.push(Problem::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        }),
    }
    Ok((bytes, problems))
}
