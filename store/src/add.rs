//! Adding store objects from a byte stream: what the worker protocol's `AddToStoreNar`,
//! `AddMultipleToStore`, `AddToStore` and `AddTextToStore` do to the store.
//!
//! * [`Store::add_nar`]: a NAR with its metadata given by the client (Nix's
//!   `LocalStore::addToStore(info, source, repair, checkSigs)`).
//! * [`Store::add_to_store_ca`]: file data whose store path the store computes from a content
//!   address (Nix's `addToStoreFromDump`).
//!
//! Each comes in an async form over a borrowed `AsyncRead` and a blocking form over a borrowed
//! `Read` (for blocking threads only). Either way the data is ingested into blocks in one pass,
//! the blocks are durable before the database hears of the path, and the path becomes valid in
//! one transaction together with its references and (for a `.drv`) its derivation outputs, or
//! not at all: nothing half-written ever becomes valid. Blocks of a failed add stay behind
//! unreferenced, for the collector.
//!
//! Two adds of one path in this process take turns on a per-path lock, and the second finds the
//! path valid (as Nix's `PathLocks` make them do between processes).

use std::collections::BTreeSet;
use std::io::{self, BufReader, Read, Write};

use memchr::memmem;
use pkgchain_store_db::PathInfo;
use pkgchain_store_model::content_address::{
    ContentAddress, ContentAddressError, ContentAddressMethod,
};
use pkgchain_store_model::hash::{Hash, HashAlgo, Hasher};
use pkgchain_store_model::nar::{NarError, NarEvent, NarReader};
use pkgchain_store_model::path_info::ValidPathInfo;
use pkgchain_store_model::store_path::{StorePath, validate_name};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{Instrument, debug, info, info_span};

use crate::ingest::{self, DATA_PIECE, IngestError, IngestOptions, Ingested, Producer};
use crate::stream::{self, ChannelReader};
use crate::tree::{self, Entry};
use crate::{Store, StoreError, export};

/// Flat data up to this size is kept in memory; beyond it, in an unnamed temporary file.
const SPOOL_IN_MEMORY: usize = 4 << 20;

/// How an add begins: the path is valid already, or its lock is held for the add.
enum Begin {
    Valid(Box<PathInfo>),
    Locked(tokio::sync::OwnedMutexGuard<()>),
}

/// How the data given to [`Store::add_to_store_ca`] is serialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// The bytes of one regular file (new-form `AddToStore` with `text:` or flat methods,
    /// `AddTextToStore`).
    Flat,
    /// A NAR (new-form `AddToStore` with `r:`; old-form `AddToStore`, which sends a NAR even
    /// for flat hashing, of which only the single regular file's contents count).
    Nar,
}

impl Store {
    /// Adds the NAR read from `nar` as `info.path`, with `info`'s metadata (`AddToStoreNar`, and
    /// each path of `AddMultipleToStore`).
    ///
    /// Exactly `info.info.nar_size` bytes are read from `nar` and no more, so the stream may
    /// carry more data after the NAR. The NAR must end exactly there and hash to
    /// `info.info.nar_hash`; a given content address must match the contents (hashed modulo the
    /// path's own hash part, as Nix does) and give `info.path` with `info`'s references;
    /// every reference must be valid (or be the path itself); a `.drv` must pass Nix's
    /// derivation checks. A registration time of `None` means now. Signatures are stored as
    /// given (checking them is the caller's business).
    ///
    /// If the path is already valid and `repair` is false, the NAR is read and discarded and
    /// the path's current metadata returned. With `repair` the path is ingested and registered
    /// again. Returns the path's metadata as registered.
    ///
    /// On error the stream may have been read partly: how far is unspecified.
    pub async fn add_nar<R>(
        &self,
        info: &ValidPathInfo,
        nar: &mut R,
        repair: bool,
    ) -> Result<PathInfo, StoreError>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let span = info_span!("add_nar", path = %info.path, nar_size = info.info.nar_size, repair);
        let (tx, reader) = stream::channel();
        stream::with_pump(
            self.add_nar_from(info.clone(), repair, reader),
            stream::pump_async(nar, Some(info.info.nar_size), tx),
        )
        .instrument(span)
        .await
    }

    /// [`Store::add_nar`] over a blocking reader. It blocks the calling thread, which must not
    /// be one running async tasks (use it from `spawn_blocking` or a thread of your own).
    ///
    /// The NAR is parsed and hashed on the calling thread, straight from `nar`: no copy of it
    /// goes through a channel to another thread (a decompressor handed in as `nar` then feeds
    /// the ingest directly).
    pub fn add_nar_blocking<R>(
        &self,
        info: &ValidPathInfo,
        nar: &mut R,
        repair: bool,
    ) -> Result<PathInfo, StoreError>
    where
        R: Read + ?Sized,
    {
        let span = info_span!("add_nar", path = %info.path, nar_size = info.info.nar_size, repair);
        let _entered = span.enter();
        let runtime = self.runtime();
        let _lock = match runtime.block_on(self.begin_add(&info.path, repair))? {
            Begin::Valid(existing) => {
                let skipped = io::copy(&mut nar.take(info.info.nar_size), &mut io::sink())
                    .map_err(StoreError::Read)?;
                debug!(path = %existing.path, skipped, "already valid");
                return Ok(*existing);
            }
            Begin::Locked(lock) => lock,
        };
        let ingested = self.ingest_nar(info, nar, repair)?;
        runtime.block_on(self.finish_add(info, ingested))
    }

    async fn add_nar_from(
        &self,
        info: ValidPathInfo,
        repair: bool,
        reader: ChannelReader,
    ) -> Result<PathInfo, StoreError> {
        let _lock = match self.begin_add(&info.path, repair).await? {
            Begin::Valid(existing) => return self.skip_valid(*existing, reader).await,
            Begin::Locked(lock) => lock,
        };
        let store = self.clone();
        let owned = info.clone();
        let ingested = crate::blocking(move || {
            let mut reader = reader;
            store.ingest_nar(&owned, &mut reader, repair)
        })
        .await?;
        self.finish_add(&info, ingested).await
    }

    /// Before adding `path`: its metadata if it is valid already (and not to be repaired),
    /// else its lock, to hold until the add is over.
    async fn begin_add(&self, path: &StorePath, repair: bool) -> Result<Begin, StoreError> {
        if !repair && let Some(existing) = self.db().path_info(path).await? {
            return Ok(Begin::Valid(Box::new(existing)));
        }
        let lock = self.0.locks.lock(path).await;
        if !repair && let Some(existing) = self.db().path_info(path).await? {
            // Draining a slow client's data must not hold up other adds of this path.
            drop(lock);
            return Ok(Begin::Valid(Box::new(existing)));
        }
        Ok(Begin::Locked(lock))
    }

    /// Ingests exactly `info.info.nar_size` bytes of `nar` (blocking): the NAR must end there.
    fn ingest_nar<R>(
        &self,
        info: &ValidPathInfo,
        nar: &mut R,
        repair: bool,
    ) -> Result<Ingested, StoreError>
    where
        R: Read + ?Sized,
    {
        let nar_size = info.info.nar_size;
        // Whether the NAR mentions the path's own hash part decides whether a NAR-hashed
        // SHA-256 content address can be checked against the NAR hash directly.
        let scan_self = matches!(
            &info.info.ca,
            Some(ca) if ca.method == ContentAddressMethod::NixArchive
                && ca.hash.algo() == HashAlgo::Sha256
        );
        let options = IngestOptions {
            reference_candidates: if scan_self {
                vec![info.path.clone()]
            } else {
                Vec::new()
            },
            repair,
        };
        let mut input = nar.take(nar_size);
        let result = ingest::ingest(self.blocks(), &options, |p| {
            ingest::produce_from_nar(NarReader::new(&mut input), p).map(drop)
        });
        match result {
            Ok((ingested, ())) => Ok(ingested),
            // The NAR wants more than the announced size: it is longer.
            Err(IngestError::Nar(NarError::UnexpectedEof { .. })) if input.limit() == 0 => {
                Err(StoreError::SizeMismatch {
                    path: self.store_dir().display(&info.path),
                    specified: nar_size,
                    got: format!("more than {nar_size}"),
                })
            }
            Err(e) => Err(StoreError::from(e)),
        }
    }

    /// After ingest: checks what was ingested against `info` and registers the path.
    async fn finish_add(
        &self,
        info: &ValidPathInfo,
        mut ingested: Ingested,
    ) -> Result<PathInfo, StoreError> {
        let path = info.path.clone();
        let shown = self.store_dir().display(&path);
        let nar_size = info.info.nar_size;
        if ingested.nar_hash != info.info.nar_hash {
            return Err(StoreError::HashMismatch {
                path: shown,
                specified: info.info.nar_hash.to_sri(),
                got: ingested.nar_hash.to_sri(),
            });
        }
        if ingested.nar_size != nar_size {
            return Err(StoreError::SizeMismatch {
                path: shown,
                specified: nar_size,
                got: ingested.nar_size.to_string(),
            });
        }
        if let Some(ca) = &info.info.ca {
            let seen = ingested.references.contains(&path);
            let got = self
                .content_hash(
                    ca.method,
                    ca.hash.algo(),
                    &ingested,
                    Some(path.hash_part()),
                    seen,
                    &shown,
                )
                .await?;
            if got != ca.hash {
                return Err(StoreError::CaHashMismatch {
                    path: shown,
                    specified: ca.hash.to_nix32_prefixed(),
                    got: got.to_nix32_prefixed(),
                });
            }
            // Nix's `ValidPathInfo::isContentAddressed`.
            let self_reference = info.info.references.contains(&path);
            let others = info.info.references.iter().filter(|r| **r != path);
            let implied = ca.store_path(self.store_dir(), path.name(), others, self_reference);
            if implied.as_ref() != Ok(&path) {
                return Err(StoreError::NotContentAddressed(shown));
            }
        }
        let record = PathInfo {
            path: path.clone(),
            nar_hash: ingested.nar_hash.clone(),
            nar_size,
            root: ingested.root,
            deriver: info.info.deriver.clone(),
            registration_time: info
                .info
                .registration_time
                .filter(|t| *t != 0)
                .unwrap_or_else(crate::now),
            ultimate: info.info.ultimate,
            sigs: info.info.sigs.iter().map(ToString::to_string).collect(),
            ca: info.info.ca.as_ref().map(ContentAddress::render),
            references: info.info.references.clone(),
        };
        self.register_checked(record, std::mem::take(&mut ingested.blocks))
            .await?;
        info!(
            store_path = %path,
            nar_size,
            new_blocks = ingested.new_blocks,
            new_bytes = ingested.new_bytes,
            "added NAR"
        );
        self.db()
            .path_info(&path)
            .await?
            .ok_or(StoreError::NotValid(shown))
    }

    /// A valid path offered again without repair: read and discard its data.
    async fn skip_valid(
        &self,
        existing: PathInfo,
        mut reader: ChannelReader,
    ) -> Result<PathInfo, StoreError> {
        let skipped =
            crate::blocking(move || stream::drain(&mut reader).map_err(StoreError::Read)).await?;
        debug!(path = %existing.path, skipped, "already valid");
        Ok(existing)
    }

    /// Adds file data under the store path its content address gives (new-form `AddToStore`,
    /// `AddTextToStore`, old-form `AddToStore`); see [`CaAddRequest`] for the parameters.
    ///
    /// `data` is read to its end. If the computed path is valid already and `repair` is false,
    /// its current metadata is returned and nothing changes. A `.drv` must pass Nix's
    /// derivation checks; its outputs go into `DerivationOutputs`. Returns the path's metadata
    /// as registered (what the daemon answers new-form `AddToStore` with).
    pub async fn add_to_store_ca<R>(
        &self,
        request: CaAddRequest,
        data: &mut R,
    ) -> Result<PathInfo, StoreError>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let span = request.span();
        async {
            // A small file (a `.drv`, a `builtins.toFile` text) is read into memory here and
            // added in one blocking call; anything longer streams as before.
            if request.dump == DumpFormat::Flat
                && request.method != ContentAddressMethod::NixArchive
            {
                check_ca_request(
                    &request.name,
                    request.method,
                    request.algo,
                    &request.references,
                )?;
                let mut head = Vec::new();
                (&mut *data)
                    .take(ingest::SMALL_FILE + 1)
                    .read_to_end(&mut head)
                    .await
                    .map_err(StoreError::Read)?;
                if head.len() as u64 <= ingest::SMALL_FILE {
                    let store = self.clone();
                    return crate::blocking(move || store.add_small_flat(request, &head)).await;
                }
                let mut rest = AsyncReadExt::chain(&head[..], data);
                let (tx, reader) = stream::channel();
                return stream::with_pump(
                    self.add_ca_from(request, reader),
                    stream::pump_async(&mut rest, None, tx),
                )
                .await;
            }
            let (tx, reader) = stream::channel();
            stream::with_pump(
                self.add_ca_from(request, reader),
                stream::pump_async(data, None, tx),
            )
            .await
        }
        .instrument(span)
        .await
    }

    /// [`Store::add_to_store_ca`] of a small flat or text file held in memory: the hash, the
    /// validity check, the blocks, the derivation checks and the registration on the calling
    /// thread, which it blocks.
    fn add_small_flat(&self, request: CaAddRequest, data: &[u8]) -> Result<PathInfo, StoreError> {
        let CaAddRequest {
            name,
            method,
            algo,
            references,
            repair,
            keep,
            ..
        } = request;
        let mut hasher = Hasher::new(algo);
        hasher.update(data);
        let ca = ContentAddress::new(method, hasher.finish());
        let path = ca.store_path(self.store_dir(), &name, &references, false)?;
        keep_path(keep.as_ref(), &path)?;
        let db = self.db();
        if !repair
            && db.is_valid_blocking(&path)?
            && let Some(existing) = self.runtime().block_on(db.path_info(&path))?
        {
            debug!(path = %path, "already valid");
            return Ok(existing);
        }
        let ingested = ingest::ingest_file_bytes(self.blocks(), data, repair)?;
        self.register_ca_blocking(path, ingested, &ca, references)
    }

    /// Registers a new content-addressed path over what was ingested (after the derivation
    /// checks for a `.drv`) and returns its metadata as stored. Blocking.
    fn register_ca_blocking(
        &self,
        path: StorePath,
        ingested: Ingested,
        ca: &ContentAddress,
        references: BTreeSet<StorePath>,
    ) -> Result<PathInfo, StoreError> {
        let record = PathInfo {
            path: path.clone(),
            nar_hash: ingested.nar_hash,
            nar_size: ingested.nar_size,
            root: ingested.root,
            deriver: None,
            registration_time: crate::now(),
            ultimate: false,
            sigs: BTreeSet::new(),
            ca: Some(ca.render()),
            references,
        };
        self.register_checked_blocking(record, ingested.blocks)?;
        info!(
            store_path = %path,
            nar_size = ingested.nar_size,
            new_blocks = ingested.new_blocks,
            "added content-addressed path"
        );
        self.runtime()
            .block_on(self.db().path_info(&path))?
            .ok_or_else(|| StoreError::NotValid(self.store_dir().display(&path)))
    }

    /// [`Store::add_to_store_ca`] over a blocking reader. It blocks the calling thread, which
    /// must not be one running async tasks.
    pub fn add_to_store_ca_blocking<R>(
        &self,
        request: CaAddRequest,
        data: &mut R,
    ) -> Result<PathInfo, StoreError>
    where
        R: Read + ?Sized,
    {
        let span = request.span();
        let (tx, reader) = stream::channel();
        let store = self.clone();
        let task = self
            .runtime()
            .spawn(async move { store.add_ca_from(request, reader).await }.instrument(span));
        stream::pump_blocking(data, None, tx);
        self.runtime()
            .block_on(task)
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    async fn add_ca_from(
        &self,
        request: CaAddRequest,
        reader: ChannelReader,
    ) -> Result<PathInfo, StoreError> {
        let CaAddRequest {
            name,
            method,
            algo,
            references,
            dump,
            repair,
            keep,
        } = request;
        check_ca_request(&name, method, algo, &references)?;
        let spool_dir = self
            .config()
            .db_file
            .parent()
            .map(ToOwned::to_owned)
            .unwrap_or_else(std::env::temp_dir);
        let store = self.clone();
        let flat = method != ContentAddressMethod::NixArchive;
        let (name_, references_, keep_) = (name.clone(), references.clone(), keep.clone());
        // Where the hash is known once the data is in, whether the path is valid is asked on
        // the same blocking thread (no hand-off to a database thread; most adds are new).
        let (ingested, file_hash, known_valid) = crate::blocking(move || {
            let (ingested, file_hash) =
                ingest_data(&store, reader, dump, flat, algo, &spool_dir, repair)?;
            let known_valid = match &file_hash {
                Some(hash) if !repair => {
                    let ca = ContentAddress::new(method, hash.clone());
                    let path = ca.store_path(store.store_dir(), &name_, &references_, false)?;
                    keep_path(keep_.as_ref(), &path)?;
                    Some(store.db().is_valid_blocking(&path)?)
                }
                _ => None,
            };
            Ok((ingested, file_hash, known_valid))
        })
        .await?;
        let hash = match file_hash {
            Some(h) => h,
            None => {
                let shown = format!("<data for '{name}'>");
                self.content_hash(method, algo, &ingested, None, false, &shown)
                    .await?
            }
        };
        let ca = ContentAddress::new(method, hash);
        let path = ca.store_path(self.store_dir(), &name, &references, false)?;
        if known_valid.is_none() {
            let keep = keep.clone();
            let kept = path.clone();
            crate::blocking(move || keep_path(keep.as_ref(), &kept)).await?;
        }
        let _lock = self.0.locks.lock(&path).await;
        // (A path found not valid above and registered meanwhile is registered again, with
        // the same contents: harmless.)
        if !repair
            && known_valid != Some(false)
            && let Some(existing) = self.db().path_info(&path).await?
        {
            debug!(path = %path, "already valid");
            return Ok(existing);
        }
        let store = self.clone();
        crate::blocking(move || store.register_ca_blocking(path, ingested, &ca, references)).await
    }

    /// The hash a content address of `method` and `algo` has over what was ingested: of the
    /// NAR (`NixArchive`) or of the single regular file (`Flat`, `Text`), modulo `modulus` (a
    /// path's own hash part, replaced by zeros as Nix's `HashModuloSink` does) if given.
    /// `modulus_seen` says whether the NAR was found to contain `modulus`.
    async fn content_hash(
        &self,
        method: ContentAddressMethod,
        algo: HashAlgo,
        ingested: &Ingested,
        modulus: Option<&str>,
        modulus_seen: bool,
        shown: &str,
    ) -> Result<Hash, StoreError> {
        if method == ContentAddressMethod::NixArchive && algo == HashAlgo::Sha256 && !modulus_seen {
            // Nothing to rewrite: the modulo hash is the NAR hash.
            return Ok(ingested.nar_hash.clone());
        }
        if method == ContentAddressMethod::Git {
            return Err(StoreError::Unsupported(
                "Git-hashed objects ('git:' content addresses)".to_owned(),
            ));
        }
        let store = self.clone();
        let root = ingested.root;
        let modulus = modulus.map(str::as_bytes).map(<[u8]>::to_vec);
        let shown = shown.to_owned();
        crate::blocking(move || {
            let mut hasher = HashModulo::new(algo, modulus);
            if method == ContentAddressMethod::NixArchive {
                export::export_nar(store.blocks(), &root, &mut hasher)?;
            } else {
                match tree::stat(store.blocks(), &root)? {
                    Entry::File { .. } => {}
                    _ => return Err(StoreError::NotRegularFile(shown)),
                }
                tree::cat(store.blocks(), &root, &shown, &mut hasher)?;
            }
            Ok(hasher.finish())
        })
        .await
    }
}

/// What to add with [`Store::add_to_store_ca`], besides the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaAddRequest {
    /// The store path name.
    pub name: String,
    /// How the content address is computed: `Text` (SHA-256 of the file; `.drv` files and
    /// `builtins.toFile`), `Flat` (the file hashed with `algo`) or `NixArchive` (the NAR hashed
    /// with `algo`; the NAR hash recorded is SHA-256 whatever `algo` is). `Git` is refused.
    pub method: ContentAddressMethod,
    /// The hash algorithm of the content address (`Text` takes SHA-256 only).
    pub algo: HashAlgo,
    /// The references. Only `Text` and NAR-hashed SHA-256 objects may have any, and none may
    /// name the path itself.
    pub references: BTreeSet<StorePath>,
    /// What the data holds.
    pub dump: DumpFormat,
    /// Ingest and register again even if the path is valid.
    pub repair: bool,
    /// Called with the path as soon as it is known, before it is looked up or registered
    /// (the daemon records a temp root there, as Nix does, so a collection running meanwhile
    /// never finds the path valid and unkept). An error fails the add.
    pub keep: Option<KeepPath>,
}

/// Records that a path is in use (see [`CaAddRequest::keep`]).
pub type KeepFn = dyn Fn(&StorePath) -> Result<(), String> + Send + Sync;

/// See [`CaAddRequest::keep`].
#[derive(Clone)]
pub struct KeepPath(pub std::sync::Arc<KeepFn>);

impl std::fmt::Debug for KeepPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeepPath")
    }
}

/// The same hook (the same allocation).
impl PartialEq for KeepPath {
    fn eq(&self, other: &KeepPath) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for KeepPath {}

fn keep_path(keep: Option<&KeepPath>, path: &StorePath) -> Result<(), StoreError> {
    match keep {
        Some(k) => (k.0)(path).map_err(|e| StoreError::Keep(path.to_string(), e)),
        None => Ok(()),
    }
}

impl CaAddRequest {
    fn span(&self) -> tracing::Span {
        info_span!(
            "add_to_store_ca",
            name = %self.name,
            method = %self.method,
            algo = %self.algo,
            repair = self.repair
        )
    }
}

/// Refuses what cannot have a content-addressed path, before any data is read.
fn check_ca_request(
    name: &str,
    method: ContentAddressMethod,
    algo: HashAlgo,
    references: &BTreeSet<StorePath>,
) -> Result<(), StoreError> {
    validate_name(name)?;
    match method {
        ContentAddressMethod::Git => Err(StoreError::Unsupported(
            "adding Git-hashed objects ('git:' content addresses)".to_owned(),
        )),
        ContentAddressMethod::Text if algo != HashAlgo::Sha256 => {
            Err(ContentAddressError::TextNotSha256(algo).into())
        }
        ContentAddressMethod::Flat | ContentAddressMethod::NixArchive => {
            let source = method == ContentAddressMethod::NixArchive && algo == HashAlgo::Sha256;
            if !references.is_empty() && !source {
                return Err(ContentAddressError::ReferencesNotAllowed(name.to_owned()).into());
            }
            Ok(())
        }
        ContentAddressMethod::Text => Ok(()),
    }
}

fn read_error(e: io::Error) -> IngestError {
    IngestError::Io {
        op: "reading",
        path: "the data to add".to_owned(),
        source: e,
    }
}

/// Ingests the data of a content-addressed add. With `flat`, the object is one regular file
/// (never executable) and its contents' hash with `algo` is returned too. Reads `reader` to its
/// end (data after a NAR is ignored, as Nix does).
fn ingest_data(
    store: &Store,
    mut reader: ChannelReader,
    dump: DumpFormat,
    flat: bool,
    algo: HashAlgo,
    spool_dir: &std::path::Path,
    repair: bool,
) -> Result<(Ingested, Option<Hash>), StoreError> {
    let options = IngestOptions {
        repair,
        ..IngestOptions::default()
    };
    let (ingested, file_hash) = match dump {
        DumpFormat::Flat => {
            let mut spool = Spool::new(spool_dir);
            // The file's own hash is wanted only for flat content addresses.
            let mut hasher = flat.then(|| Hasher::new(algo));
            // The reader hands out the pump's chunks; a small buffer copies them as well.
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(StoreError::Read(e)),
                };
                if let Some(h) = &mut hasher {
                    h.update(&buf[..n]);
                }
                spool.write(&buf[..n])?;
            }
            let (size, mut contents) = spool.finish()?;
            let (ingested, ()) = ingest::ingest(store.blocks(), &options, |p| {
                produce_file(p, size, &mut contents)
            })?;
            (ingested, hasher.map(Hasher::finish))
        }
        DumpFormat::Nar => {
            let mut input = &mut reader;
            let (ingested, hash) = ingest::ingest(store.blocks(), &options, |p| {
                let nar = NarReader::new(&mut input);
                if flat {
                    produce_flat_from_nar(nar, p, algo).map(Some)
                } else {
                    ingest::produce_from_nar(nar, p).map(|_| None)
                }
            })?;
            let trailing = stream::drain(&mut input).map_err(StoreError::Read)?;
            if trailing > 0 {
                debug!(trailing, "ignored data after the NAR");
            }
            (ingested, hash)
        }
    };
    Ok((ingested, file_hash))
}

/// Produces one regular, non-executable file of `size` bytes read from `src`.
fn produce_file(p: &mut Producer, size: u64, src: &mut impl Read) -> Result<(), IngestError> {
    p.file(None, false, size)?;
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(DATA_PIECE, |l| l.min(DATA_PIECE));
        p.data_with(n, |slot| src.read_exact(slot).map_err(read_error))?;
        left -= n as u64;
    }
    p.file_end()
}

/// Produces the single regular file of a NAR as a non-executable file (flat content addresses
/// cannot record the executable bit) and returns its contents' hash with `algo`.
fn produce_flat_from_nar<R: Read>(
    mut nar: NarReader<R>,
    p: &mut Producer,
    algo: HashAlgo,
) -> Result<Hash, IngestError> {
    let mut hasher = Hasher::new(algo);
    while let Some(event) = nar.next_event()? {
        match event {
            NarEvent::File {
                name: None, size, ..
            } => p.file(None, false, size)?,
            NarEvent::FileChunk(data) => {
                hasher.update(data);
                for piece in data.chunks(DATA_PIECE) {
                    p.data_with(piece.len(), |slot| {
                        slot.copy_from_slice(piece);
                        Ok(())
                    })?;
                }
            }
            NarEvent::FileEnd => p.file_end()?,
            _ => {
                return Err(IngestError::Io {
                    op: "hashing",
                    path: "the data to add".to_owned(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        "flat hashing needs a single regular file, the NAR holds something else",
                    ),
                });
            }
        }
    }
    Ok(hasher.finish())
}

/// Flat data of unknown length: in memory while small, then in an unnamed temporary file.
struct Spool<'a> {
    dir: &'a std::path::Path,
    memory: Vec<u8>,
    file: Option<std::fs::File>,
    size: u64,
}

impl<'a> Spool<'a> {
    fn new(dir: &'a std::path::Path) -> Spool<'a> {
        Spool {
            dir,
            memory: Vec::new(),
            file: None,
            size: 0,
        }
    }

    fn spool_error(&self, op: &'static str, e: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: self.dir.display().to_string(),
            source: e,
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.size += data.len() as u64;
        if self.file.is_none() && self.memory.len() + data.len() <= SPOOL_IN_MEMORY {
            self.memory.extend_from_slice(data);
            return Ok(());
        }
        if self.file.is_none() {
            let mut file = tempfile::tempfile_in(self.dir)
                .map_err(|e| self.spool_error("creating a temporary file in", e))?;
            file.write_all(&self.memory)
                .map_err(|e| self.spool_error("writing a temporary file in", e))?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        let result = match self.file.as_mut() {
            Some(file) => file.write_all(data),
            None => Ok(()),
        };
        result.map_err(|e| self.spool_error("writing a temporary file in", e))
    }

    /// The size and a reader over everything written.
    fn finish(self) -> Result<(u64, Box<dyn Read + Send>), StoreError> {
        use std::io::Seek;
        match self.file {
            None => Ok((self.size, Box::new(io::Cursor::new(self.memory)))),
            Some(mut file) => {
                file.rewind().map_err(|e| StoreError::Io {
                    op: "rewinding a temporary file in",
                    path: self.dir.display().to_string(),
                    source: e,
                })?;
                Ok((self.size, Box::new(BufReader::new(file))))
            }
        }
    }
}

/// A hash over a byte stream with every occurrence of `modulus` replaced by zeros and the
/// offsets of the occurrences hashed at the end (`|<offset>` each): Nix's `HashModuloSink`,
/// with which Nix checks content addresses of paths that may refer to themselves. Without a
/// modulus it is a plain hash.
struct HashModulo {
    hasher: Hasher,
    modulus: Option<Vec<u8>>,
    /// The last `modulus.len() - 1` bytes seen (an occurrence may straddle two writes).
    pending: Vec<u8>,
    /// Bytes hashed so far.
    pos: u64,
    /// Offsets of the occurrences.
    matches: Vec<u64>,
}

impl HashModulo {
    fn new(algo: HashAlgo, modulus: Option<Vec<u8>>) -> HashModulo {
        HashModulo {
            hasher: Hasher::new(algo),
            modulus: modulus.filter(|m| !m.is_empty()),
            pending: Vec::new(),
            pos: 0,
            matches: Vec::new(),
        }
    }

    fn update(&mut self, data: &[u8]) {
        let Some(modulus) = &self.modulus else {
            self.hasher.update(data);
            return;
        };
        let mut s = std::mem::take(&mut self.pending);
        s.extend_from_slice(data);
        let finder = memmem::Finder::new(modulus);
        let mut from = 0;
        while let Some(i) = s.get(from..).and_then(|rest| finder.find(rest)) {
            let at = from + i;
            self.matches.push(self.pos + at as u64);
            if let Some(hit) = s.get_mut(at..at + modulus.len()) {
                hit.fill(0);
            }
            from = at + modulus.len();
        }
        let keep = if s.len() < modulus.len() {
            s.len()
        } else {
            modulus.len() - 1
        };
        let consumed = s.len() - keep;
        self.hasher.update(&s[..consumed]);
        self.pos += consumed as u64;
        self.pending = s[consumed..].to_vec();
    }

    fn finish(mut self) -> Hash {
        let pending = std::mem::take(&mut self.pending);
        self.hasher.update(&pending);
        for m in &self.matches {
            self.hasher.update(format!("|{m}").as_bytes());
        }
        self.hasher.finish()
    }
}

impl Write for HashModulo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_modulo_without_occurrence_is_the_plain_hash() {
        let data = b"no self reference in here".repeat(1000);
        let mut h = HashModulo::new(HashAlgo::Sha256, Some(b"abcdefgh".to_vec()));
        for piece in data.chunks(7) {
            h.update(piece);
        }
        assert_eq!(h.finish(), Hash::digest(HashAlgo::Sha256, &data));
    }

    #[test]
    fn hash_modulo_zeroes_occurrences_across_writes_and_hashes_offsets() {
        let modulus = b"0123456789abcdefghijklmnopqrstuv";
        let mut data = b"head ".to_vec();
        data.extend_from_slice(modulus);
        data.extend_from_slice(b" middle ");
        data.extend_from_slice(modulus);
        let mut expected = data.clone();
        expected[5..37].fill(0);
        expected[45..77].fill(0);
        expected.extend_from_slice(b"|5|45");
        for split in [1, 3, 31, 32, 33, 1000] {
            let mut h = HashModulo::new(HashAlgo::Sha256, Some(modulus.to_vec()));
            for piece in data.chunks(split) {
                h.update(piece);
            }
            assert_eq!(
                h.finish(),
                Hash::digest(HashAlgo::Sha256, &expected),
                "split {split}"
            );
        }
    }
}
