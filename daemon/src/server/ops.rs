//! What each operation does to the store, and its reply.
//!
//! Operations this daemon does not support answer with an error naming the operation, never a
//! hang or a dropped connection.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom};

use pkgchain_protocol::framed::AsyncFramedReader;
use pkgchain_protocol::nar_copy::{NarCopyLimits, copy_nar};
use pkgchain_protocol::reply::{Missing, Reply, SubstitutablePathInfo};
use pkgchain_protocol::request::add::multiple;
use pkgchain_protocol::request::{Payload, Request};
use pkgchain_protocol::stderr::StderrMessage;
use pkgchain_protocol::tunnel::StderrReadSource;
use pkgchain_protocol::types::{BuildMode, DerivedPath, OutputsSpec};
use pkgchain_protocol::wire::AsyncReader;
use pkgchain_store::StoreError;
use pkgchain_store::{CaAddRequest, DumpFormat};
use pkgchain_store_model::content_address::ContentAddressMethod;
use pkgchain_store_model::hash::HashAlgo;
use pkgchain_store_model::path_info::ValidPathInfo;
use pkgchain_store_model::signature::TrustedKeys;
use pkgchain_store_model::store_path::StorePath;
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::DaemonState;
use super::connection::{Conn, ConnError};
use crate::auth::Trust;
use crate::channel_writer::ChannelWriter;

/// Bytes per piece of a NAR sent to the client.
const NAR_CHUNK: usize = 64 * 1024;
/// Data pulled per `STDERR_READ` (Nix 2.3's `AddToStoreNar`).
const TUNNEL_CHUNK: u64 = 64 * 1024;

/// How an operation ended.
pub(super) enum Outcome {
    /// Send `STDERR_LAST` and this reply.
    Reply(Box<Reply>),
    /// The operation already sent `STDERR_LAST` and its answer.
    Done,
}

/// An operation that failed.
#[derive(Debug)]
pub(super) enum OpError {
    /// Report to the client; the connection goes on.
    Failed(String),
    /// Report to the client and close the connection (the stream is out of step).
    Fatal(String),
    /// Close the connection without a word: the answer had already begun (after
    /// `STDERR_LAST`), so an error message would be read as part of it.
    Abort(String),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> OpError {
        OpError::Failed(e.to_string())
    }
}

impl From<ConnError> for OpError {
    fn from(e: ConnError) -> OpError {
        OpError::Fatal(e.to_string())
    }
}

pub(super) fn failed(message: impl Into<String>) -> OpError {
    OpError::Failed(message.into())
}

impl Conn {
    /// Runs one decoded request.
    pub(super) async fn handle(&mut self, request: Request) -> Result<Outcome, OpError> {
        let store = self.state.store.clone();
        let dir = store.store_dir().clone();
        let payload = request.payload(&self.cx);
        let not_valid = |p: &StorePath| failed(format!("path '{}' is not valid", dir.display(p)));
        let reply = match request {
            Request::SetOptions(s) => {
                self.set_options(s).await?;
                Reply::Nothing
            }
            Request::IsValidPath(p) => Reply::IsValidPath(store.is_valid_path(&p).await?),
            Request::QueryPathInfo(p) => match store.query_path_info(&p).await? {
                Some(info) => Reply::QueryPathInfo(Some(self.valid_info(&info)?.info)),
                None if self.cx.at_least(17) => Reply::QueryPathInfo(None),
                None => return Err(not_valid(&p)),
            },
            Request::QueryPathHash(p) => match store.query_path_info(&p).await? {
                Some(info) => Reply::QueryPathHash(info.nar_hash),
                None => return Err(not_valid(&p)),
            },
            Request::QueryReferences(p) => match store.query_path_info(&p).await? {
                Some(info) => Reply::QueryReferences(info.references),
                None => return Err(not_valid(&p)),
            },
            Request::QueryReferrers(p) => Reply::QueryReferrers(store.query_referrers(&p).await?),
            Request::QueryDeriver(p) => {
                if !store.is_valid_path(&p).await? {
                    return Err(not_valid(&p));
                }
                Reply::QueryDeriver(store.query_deriver(&p).await?)
            }
            Request::QueryValidDerivers(p) => {
                Reply::QueryValidDerivers(store.query_valid_derivers(&p).await?)
            }
            Request::QueryDerivationOutputs(p) => {
                Reply::QueryDerivationOutputs(store.query_derivation_outputs(&p).await?)
            }
            Request::QueryDerivationOutputNames(p) => {
                Reply::QueryDerivationOutputNames(store.query_derivation_output_names(&p).await?)
            }
            Request::QueryDerivationOutputMap(p) => {
                Reply::QueryDerivationOutputMap(store.query_derivation_output_map(&p).await?)
            }
            Request::QueryAllValidPaths => Reply::QueryAllValidPaths(
                store.query_all_valid_paths().await?.into_iter().collect(),
            ),
            Request::QueryPathFromHashPart(h) => {
                Reply::QueryPathFromHashPart(store.query_path_from_hash_part(&h).await?)
            }
            Request::QueryValidPaths(q) => {
                let paths: Vec<StorePath> = q.paths.into_iter().collect();
                if q.substitute {
                    // Nix substitutes what it can and answers with what is valid then.
                    let valid = store.query_valid_paths(&paths).await?;
                    let missing: Vec<StorePath> = paths
                        .iter()
                        .filter(|p| !valid.contains(*p))
                        .cloned()
                        .collect();
                    if !missing.is_empty() && self.substituters()?.is_some() {
                        let offered: BTreeSet<StorePath> = missing.into_iter().collect();
                        let offered: Vec<StorePath> = self
                            .substitutable_infos(&offered)
                            .await?
                            .into_keys()
                            .collect();
                        if !offered.is_empty() {
                            self.substitute_paths(&offered).await?;
                        }
                    }
                }
                Reply::QueryValidPaths(store.query_valid_paths(&paths).await?)
            }
            Request::HasSubstitutes(p) => {
                let asked = BTreeSet::from([p]);
                Reply::HasSubstitutes(!self.substitutable_infos(&asked).await?.is_empty())
            }
            Request::QuerySubstitutablePaths(paths) => Reply::QuerySubstitutablePaths(
                self.substitutable_infos(&paths)
                    .await?
                    .into_keys()
                    .collect(),
            ),
            Request::QuerySubstitutablePathInfo(p) => {
                let asked = BTreeSet::from([p]);
                Reply::QuerySubstitutablePathInfo(
                    self.substitutable_infos(&asked).await?.into_values().next(),
                )
            }
            Request::QuerySubstitutablePathInfos(paths) => {
                let asked: BTreeSet<StorePath> = paths.into_keys().collect();
                Reply::QuerySubstitutablePathInfos(self.substitutable_infos(&asked).await?)
            }
            Request::EnsurePath(p) => {
                if !store.is_valid_path(&p).await? {
                    self.substitute_paths(std::slice::from_ref(&p)).await?;
                }
                Reply::Ack
            }
            Request::AddTempRoot(p) => {
                self.add_temp_root(&p).await.map_err(failed)?;
                Reply::Ack
            }
            Request::SyncWithGC => {
                self.sync_with_gc().await?;
                Reply::Ack
            }
            Request::AddIndirectRoot(link) => {
                self.add_indirect_root(&link).await?;
                Reply::Ack
            }
            Request::FindRoots => Reply::FindRoots(self.find_roots().await?),
            Request::AddPermRoot { path, gc_root } => {
                Reply::AddPermRoot(self.add_perm_root(&path, &gc_root).await?)
            }
            Request::RegisterDrvOutput(req) => {
                self.register_drv_output(req).await?;
                Reply::Nothing
            }
            Request::QueryRealisation(key) => {
                Reply::QueryRealisation(self.query_realisation(key).await?)
            }
            Request::OptimiseStore => {
                self.log_line(
                    "the store is deduplicated by design (every file chunk is a shared, \
                     content-addressed block): there is nothing to optimise",
                )
                .await?;
                Reply::Ack
            }
            Request::VerifyStore {
                check_contents,
                repair,
            } => {
                if repair && self.trust != Trust::Trusted {
                    return Err(failed("you are not privileged to repair paths".to_owned()));
                }
                // Nix's progress lines, then the check: block presence, or every block read.
                self.log_line("reading the Nix store...").await?;
                self.log_line("checking path existence...").await?;
                if check_contents {
                    self.log_line("checking store hashes...").await?;
                }
                let report = if check_contents {
                    store.verify().await?
                } else {
                    store.verify_presence().await?
                };
                let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
                for line in &problems {
                    self.log_line(line).await?;
                }
                if repair && !report.problems.is_empty() {
                    let damaged: BTreeSet<StorePath> =
                        report.problems.iter().map(|p| p.path().clone()).collect();
                    let repaired = self.repair_paths(damaged.into_iter().collect()).await?;
                    Reply::VerifyStore(!repaired)
                } else {
                    Reply::VerifyStore(!problems.is_empty())
                }
            }
            Request::AddSignatures { path, sigs } => {
                if !store.is_valid_path(&path).await? {
                    return Err(not_valid(&path));
                }
                store.add_signatures(&path, sigs).await?;
                Reply::Ack
            }
            Request::NarFromPath(p) => {
                if !store.is_valid_path(&p).await? {
                    return Err(not_valid(&p));
                }
                self.send(&StderrMessage::Last).await?;
                self.send_nar(&p).await?;
                return Ok(Outcome::Done);
            }
            Request::AddToStoreNar(req) => {
                let mut info = req.info;
                if self.trust != Trust::Trusted {
                    info.info.ultimate = false;
                }
                let check_sigs = self.trust != Trust::Trusted || !req.dont_check_sigs;
                let state = self.state.clone();
                let size = info.info.nar_size;
                // Rooted before it becomes valid, as Nix does, so a collector never sees it
                // valid and unrooted.
                let path = info.path.clone();
                let rooted = self.add_temp_root(&path).await;
                self.with_payload(payload, Some(size), move |data| {
                    Box::pin(async move {
                        rooted.map_err(failed)?;
                        add_nar(&state, &info, data, req.repair, check_sigs).await
                    })
                })
                .await?;
                Reply::Nothing
            }
            Request::AddMultipleToStore(req) => {
                let check_sigs = self.trust != Trust::Trusted || !req.dont_check_sigs;
                // Each path is rooted as it arrives, before it becomes valid.
                self.add_multiple(payload, req.repair, check_sigs).await?;
                Reply::Nothing
            }
            Request::AddToStore(req) => {
                let dump = match req.method {
                    ContentAddressMethod::NixArchive => DumpFormat::Nar,
                    _ => DumpFormat::Flat,
                };
                let ca = CaAddRequest {
                    name: req.name,
                    method: req.method,
                    algo: req.hash_algo,
                    references: req.references,
                    dump,
                    repair: req.repair,
                    keep: Some(self.keeper()),
                };
                let store2 = store.clone();
                let info = self
                    .with_payload(payload, None, move |data| {
                        Box::pin(async move { Ok(store2.add_to_store_ca(ca, data).await?) })
                    })
                    .await?;
                self.state.publish(&info).await.map_err(failed)?;
                self.add_temp_root(&info.path).await.map_err(failed)?;
                Reply::AddToStore(self.valid_info(&info)?)
            }
            Request::AddToStoreOld(req) => {
                let (method, algo) = req
                    .method_and_algo()
                    .map_err(|e| failed(format!("AddToStore: {e}")))?;
                let ca = CaAddRequest {
                    name: req.name,
                    method,
                    algo,
                    references: BTreeSet::new(),
                    dump: DumpFormat::Nar,
                    repair: false,
                    keep: Some(self.keeper()),
                };
                let store2 = store.clone();
                let info = self
                    .with_payload(payload, None, move |data| {
                        Box::pin(async move { Ok(store2.add_to_store_ca(ca, data).await?) })
                    })
                    .await?;
                self.state.publish(&info).await.map_err(failed)?;
                self.add_temp_root(&info.path).await.map_err(failed)?;
                Reply::AddToStoreOld(info.path)
            }
            Request::AddTextToStore(req) => {
                let ca = CaAddRequest {
                    name: req.name,
                    method: ContentAddressMethod::Text,
                    algo: HashAlgo::Sha256,
                    references: req.references,
                    dump: DumpFormat::Flat,
                    repair: false,
                    keep: Some(self.keeper()),
                };
                let mut text: &[u8] = &req.text.0;
                let info = store.add_to_store_ca(ca, &mut text).await?;
                self.state.publish(&info).await.map_err(failed)?;
                self.add_temp_root(&info.path).await.map_err(failed)?;
                Reply::AddTextToStore(info.path)
            }
            Request::QueryMissing(paths) => Reply::QueryMissing(self.query_missing(paths).await?),
            Request::BuildPaths { paths, mode } => {
                self.refuse_repair(mode)?;
                let results = self.build_paths(paths, mode).await?;
                let (logged, error) = super::building::build_failure(&results, &dir);
                for message in logged {
                    self.send(&StderrMessage::Next(
                        super::building::error_line(&message).into(),
                    ))
                    .await?;
                }
                if let Some(message) = error {
                    return Err(failed(message));
                }
                Reply::Ack
            }
            Request::BuildPathsWithResults { paths, mode } => {
                self.refuse_repair(mode)?;
                Reply::BuildPathsWithResults(self.build_paths(paths, mode).await?)
            }
            Request::BuildDerivation(req) => {
                Reply::BuildDerivation(self.build_derivation(req).await?)
            }
            Request::CollectGarbage(req) => Reply::CollectGarbage(self.collect_garbage(req).await?),
            Request::AddBuildLog(req) => {
                // Consumed whole in any case, so the connection stays in step.
                let trusted = self.trust == Trust::Trusted;
                let state = self.state.clone();
                self.with_payload(payload, None, move |data| {
                    Box::pin(async move {
                        if !trusted {
                            return Err(failed("you are not privileged to add logs"));
                        }
                        Conn::store_build_log(&state, &req.drv_path, data).await
                    })
                })
                .await?;
                Reply::Ack
            }
            Request::ExportPath { .. } | Request::ImportPaths => {
                return Err(failed(format!(
                    "operation '{}' is obsolete (Nix 2.0 and later never send it) and not served",
                    "ExportPath/ImportPaths"
                )));
            }
        };
        Ok(Outcome::Reply(Box::new(reply)))
    }

    fn refuse_repair(&self, mode: BuildMode) -> Result<(), OpError> {
        if mode == BuildMode::Repair && self.trust != Trust::Trusted {
            return Err(failed(
                "repairing is not allowed because you are not in 'trusted-users'",
            ));
        }
        Ok(())
    }

    fn valid_info(&self, info: &pkgchain_store::PathInfo) -> Result<ValidPathInfo, OpError> {
        info.to_valid_path_info(self.state.store.store_dir())
            .map_err(|e| failed(e.to_string()))
    }

    /// Runs `op` over the data that follows the request, then makes sure all of it was
    /// consumed (a framed stream to its terminator) whatever `op` did.
    async fn with_payload<T>(
        &mut self,
        payload: Payload,
        size: Option<u64>,
        op: impl for<'a> FnOnce(
            &'a mut (dyn AsyncRead + Unpin + Send),
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, OpError>> + Send + 'a>,
        >,
    ) -> Result<T, OpError> {
        match payload {
            Payload::None => {
                let mut empty: &[u8] = &[];
                op(&mut empty).await
            }
            Payload::Framed => {
                let mut framed =
                    AsyncFramedReader::new(self.reader.get_mut(), self.cx.limits.max_frame_len);
                let result = op(&mut framed).await;
                // Whatever the operation did, the stream is read to its terminator.
                match framed.drain().await {
                    Ok(_) => result,
                    Err(e) => Err(OpError::Fatal(format!("framed data: {e}"))),
                }
            }
            Payload::RawNar | Payload::StderrRead => {
                // Spool the NAR to an unnamed temporary file first: its end is only known by
                // parsing it (raw) or it arrives in requested pieces (STDERR_READ).
                let spool = tempfile::tempfile().map_err(|e| failed(e.to_string()))?;
                let mut spool = std::io::BufWriter::new(spool);
                if payload == Payload::RawNar {
                    let limits = NarCopyLimits::from_limits(&self.cx.limits);
                    copy_nar(&mut self.reader, &mut spool, &limits)
                        .await
                        .map_err(|e| OpError::Fatal(e.to_string()))?;
                } else {
                    let mut source = StderrReadSource::new(size, TUNNEL_CHUNK);
                    while let Some(n) = source.next_request() {
                        self.send(&StderrMessage::Read(n)).await?;
                        self.writer()
                            .flush()
                            .await
                            .map_err(|e| OpError::Fatal(e.to_string()))?;
                        let data = source
                            .read_answer(&mut self.reader, n)
                            .await
                            .map_err(|e| OpError::Fatal(e.to_string()))?;
                        std::io::Write::write_all(&mut spool, &data)
                            .map_err(|e| failed(e.to_string()))?;
                    }
                }
                let mut file = spool.into_inner().map_err(|e| failed(e.to_string()))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| failed(e.to_string()))?;
                let mut file = tokio::fs::File::from_std(file);
                op(&mut file).await
            }
        }
    }

    async fn add_multiple(
        &mut self,
        payload: Payload,
        repair: bool,
        check_sigs: bool,
    ) -> Result<Vec<StorePath>, OpError> {
        let cx = self.cx.clone();
        let state = self.state.clone();
        let keep = self.keeper();
        self.with_payload(payload, None, move |data| {
            Box::pin(async move {
                let mut r = AsyncReader::new(data);
                let count = multiple::decode_count(&mut r)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let mut added = Vec::new();
                for _ in 0..count {
                    let mut info = multiple::decode_info(&mut r, &cx)
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                    info.info.ultimate = false;
                    // Rooted before it becomes valid, as each path of AddToStoreNar is.
                    let (keep, path) = (keep.clone(), info.path.clone());
                    tokio::task::spawn_blocking(move || (keep.0)(&path))
                        .await
                        .map_err(|e| failed(e.to_string()))?
                        .map_err(failed)?;
                    add_nar(&state, &info, r.get_mut(), repair, check_sigs).await?;
                    added.push(info.path);
                }
                Ok(added)
            })
        })
        .await
    }

    /// Streams a path's NAR to the client after `STDERR_LAST`.
    async fn send_nar(&mut self, path: &StorePath) -> Result<(), OpError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let store = self.state.store.clone();
        let p = path.clone();
        // The NAR writer writes token by token: batch them before they cross the channel.
        let out = std::io::BufWriter::with_capacity(NAR_CHUNK, ChannelWriter(tx, <[u8]>::to_vec));
        let dump = tokio::spawn(async move { store.dump(&p, out).await });
        while let Some(chunk) = rx.recv().await {
            self.writer()
                .write_all(&chunk)
                .await
                .map_err(|e| OpError::Abort(e.to_string()))?;
        }
        match dump.await {
            Ok(Ok(_)) => Ok(()),
            // After STDERR_LAST an error cannot be reported: the connection must close.
            Ok(Err(e)) => Err(OpError::Abort(e.to_string())),
            Err(e) => Err(OpError::Abort(e.to_string())),
        }
    }

    /// `QueryMissing`: opaque paths that are not valid will be substituted when a cache has
    /// them (with their references that are not valid), else they are unknown; derivations
    /// whose missing outputs the caches have will be substituted, the others built. Download
    /// and NAR sizes add up what will be substituted.
    async fn query_missing(&mut self, paths: Vec<DerivedPath>) -> Result<Missing, OpError> {
        let store = self.state.store.clone();
        let mut missing = Missing::default();
        // What may be substituted: (the paths, the derivation that needs them, if any).
        let mut wanted: Vec<(Vec<StorePath>, Option<StorePath>)> = Vec::new();
        // The opaque paths' validity in one query.
        let opaque: Vec<StorePath> = paths
            .iter()
            .filter_map(|p| match p {
                DerivedPath::Opaque(path) => Some(path.clone()),
                DerivedPath::Built { .. } => None,
            })
            .collect();
        let valid_opaque = store.query_valid_paths(&opaque).await?;
        for p in paths {
            match p {
                DerivedPath::Opaque(path) => {
                    if !valid_opaque.contains(&path) {
                        wanted.push((vec![path], None));
                    }
                }
                DerivedPath::Built { drv_path, outputs } => {
                    if !drv_path.outputs.is_empty() {
                        return Err(failed(
                            "dynamic derivations (derivations producing derivations) are not supported",
                        ));
                    }
                    let drv = drv_path.root;
                    if !store.is_valid_path(&drv).await? {
                        missing.unknown.insert(drv);
                        continue;
                    }
                    let map = store.query_derivation_output_map(&drv).await?;
                    let chosen: Vec<&Option<StorePath>> = match &outputs {
                        OutputsSpec::All => map.values().collect(),
                        OutputsSpec::Names(names) => {
                            names.iter().filter_map(|n| map.get(n)).collect()
                        }
                    };
                    let mut absent = Vec::new();
                    let mut unknown_output = false;
                    for out in chosen {
                        match out {
                            Some(o) if store.is_valid_path(o).await? => {}
                            Some(o) => absent.push(o.clone()),
                            None => unknown_output = true,
                        }
                    }
                    if unknown_output {
                        missing.will_build.insert(drv);
                    } else if !absent.is_empty() {
                        wanted.push((absent, Some(drv)));
                    }
                }
            }
        }
        // Asked of the caches level by level: the wanted paths, then their references.
        let mut offers: BTreeMap<StorePath, SubstitutablePathInfo> = BTreeMap::new();
        let mut level: BTreeSet<StorePath> = wanted.iter().flat_map(|(p, _)| p.clone()).collect();
        while !level.is_empty() {
            let found = self.substitutable_infos(&level).await?;
            let mut next = BTreeSet::new();
            for info in found.values() {
                for r in &info.references {
                    if !offers.contains_key(r) && !found.contains_key(r) && !level.contains(r) {
                        next.insert(r.clone());
                    }
                }
            }
            offers.extend(found);
            level = next;
        }
        // A path is substitutable when it and everything it refers to (valid or offered) is.
        let closure_offered = |start: &StorePath| -> Option<BTreeSet<StorePath>> {
            let mut todo = vec![start.clone()];
            let mut seen = BTreeSet::new();
            while let Some(p) = todo.pop() {
                if !seen.insert(p.clone()) {
                    continue;
                }
                let info = offers.get(&p)?;
                todo.extend(
                    info.references
                        .iter()
                        .filter(|r| offers.contains_key(*r))
                        .cloned(),
                );
            }
            Some(seen)
        };
        for (paths, drv) in wanted {
            let mut closure = BTreeSet::new();
            let mut all = true;
            for p in &paths {
                match closure_offered(p) {
                    Some(c) => closure.extend(c),
                    None => all = false,
                }
            }
            match (all, drv) {
                (true, _) => {
                    for p in closure {
                        if missing.will_substitute.insert(p.clone())
                            && let Some(info) = offers.get(&p)
                        {
                            missing.download_size += info.download_size;
                            missing.nar_size += info.nar_size;
                        }
                    }
                }
                (false, Some(drv)) => {
                    missing.will_build.insert(drv);
                }
                (false, None) => missing.unknown.extend(paths),
            }
        }
        Ok(missing)
    }
}

/// Adds one path from a NAR stream, checking signatures first when asked.
async fn add_nar(
    state: &DaemonState,
    info: &ValidPathInfo,
    data: &mut (dyn AsyncRead + Unpin + Send),
    repair: bool,
    check_sigs: bool,
) -> Result<(), OpError> {
    if check_sigs {
        check_signatures(state, info)?;
    }
    let added = state.store.add_nar(info, data, repair).await?;
    state.publish(&added).await.map_err(failed)?;
    Ok(())
}

/// Nix's rule for imported paths: with `require-sigs` (the default), a path must be
/// content-addressed or signed by a key in `trusted-public-keys`.
fn check_signatures(state: &DaemonState, info: &ValidPathInfo) -> Result<(), OpError> {
    if !state
        .config
        .bool("require-sigs", true)
        .map_err(|e| failed(e.to_string()))?
    {
        return Ok(());
    }
    if info.info.ca.is_some() {
        // The store checks the content address against the contents.
        return Ok(());
    }
    let keys = TrustedKeys::parse_list(
        state
            .config
            .get_or_default("trusted-public-keys")
            .unwrap_or(""),
    )
    .map_err(|e| failed(format!("setting 'trusted-public-keys': {e}")))?;
    if info.count_valid_signatures(&keys) > 0 {
        return Ok(());
    }
    Err(failed(format!(
        "cannot add path '{}' because it lacks a signature by a trusted key",
        state.store.store_dir().display(&info.path)
    )))
}
