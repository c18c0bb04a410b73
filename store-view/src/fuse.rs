//! The FUSE view: the store served read-only from its blocks.
//!
//! One [`ViewFs`] serves either the store directory (children are valid store paths, looked up
//! in the database) or `/ipfs/store` (children are CIDs). Below that, everything comes from the
//! DAG: directory nodes give entries, file nodes give contents, symlink nodes give targets.
//!
//! * Contents never change, so entries and attributes get long kernel cache lifetimes and files
//!   are opened with `FOPEN_KEEP_CACHE`: a warm read never reaches this process.
//! * A file stored as one block is checked against its CID when opened and then handed to the
//!   kernel with FUSE passthrough (Linux 6.9+, root): reads go straight to the block file. Where
//!   passthrough is unavailable the verified file is read with `pread`.
//! * Larger files are read chunk by chunk; every chunk is checked against its CID before a byte
//!   of it is returned. A block that fails the check makes the read fail with `EIO`; a file
//!   found corrupt at open is opened in direct-I/O mode so even cached pages are not served.
//! * Inode numbers are derived from the parent's inode number and the entry name (BLAKE3), so
//!   they are the same on every mount; the rare collision is resolved by probing.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use pkgchain_blockstore::BlockError;
use pkgchain_dag::{Cid, Codec, DirEntry, FileLink, Node};
use pkgchain_store::Store;
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use tokio::runtime::Handle;
use tracing::{debug, debug_span, warn};

/// The root inode.
const ROOT_INO: u64 = 1;
/// How long the kernel may cache entries and attributes (contents never change; deletion by
/// the garbage collector invalidates explicitly).
const TTL: Duration = Duration::from_secs(3600);
/// Decoded nodes kept in memory.
const NODE_CACHE_ITEMS: usize = 65_536;
/// Bytes of verified chunks kept in memory.
const CHUNK_CACHE_BYTES: u64 = 128 * 1024 * 1024;
/// Reported block size: large, so `cat`/`cp` read in big pieces.
const BLKSIZE: u32 = 128 * 1024;
/// Every time stamp in the store is 1 second after the epoch, as in Nix.
const STORE_TIME: Duration = Duration::from_secs(1);

/// What the mount's root lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// The store directory: one entry per valid store path.
    StorePaths,
    /// `/ipfs/store`: one entry per CID looked up (not listed).
    Cids,
}

#[derive(Clone)]
enum Kind {
    Root,
    Dir(Cid),
    File {
        cid: Cid,
        size: u64,
        executable: bool,
        /// The raw block holding the whole file, if it is one block.
        single: Option<Cid>,
    },
    Symlink(Arc<[u8]>),
}

struct Inode {
    kind: Kind,
    parent: u64,
    name: Box<[u8]>,
    lookups: u64,
}

/// A decoded dag-pb node with what reads need precomputed.
enum Decoded {
    Dir(Vec<DirEntry>),
    Symlink(Arc<[u8]>),
    File {
        inline: Vec<u8>,
        links: Vec<FileLink>,
        /// Content offset at which each link starts (after the inline bytes).
        starts: Vec<u64>,
        size: u64,
        executable: bool,
    },
}

enum OpenFile {
    Passthrough(#[allow(dead_code)] BackingId),
    Single(File),
    Multi(Cid),
    Corrupt(Cid),
}

#[derive(Clone)]
struct ChunkWeight;

impl Weighter<Cid, Arc<Vec<u8>>> for ChunkWeight {
    fn weight(&self, _key: &Cid, val: &Arc<Vec<u8>>) -> u64 {
        val.len() as u64 + 64
    }
}

/// Identity of a block file when it was last verified: a changed file is verified again.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
    size: u64,
}

/// Why an operation maps to an errno.
enum FsError {
    NotFound,
    Io(String),
    NotDir,
    IsDir,
}

impl FsError {
    fn errno(&self) -> Errno {
        match self {
            FsError::NotFound => Errno::ENOENT,
            FsError::Io(_) => Errno::EIO,
            FsError::NotDir => Errno::ENOTDIR,
            FsError::IsDir => Errno::EISDIR,
        }
    }
}

impl From<BlockError> for FsError {
    fn from(e: BlockError) -> Self {
        FsError::Io(e.to_string())
    }
}

/// A directory's entries as readdir returns them: inode, type, name.
type Listing = Vec<(u64, FileType, Box<[u8]>)>;

/// The file system; see the module documentation.
pub struct ViewFs {
    store: Store,
    rt: Handle,
    root_kind: RootKind,
    inodes: RwLock<HashMap<u64, Inode>>,
    nodes: Cache<Cid, Arc<Decoded>>,
    chunks: Cache<Cid, Arc<Vec<u8>>, ChunkWeight>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
    verified: Mutex<HashMap<Cid, Stamp>>,
    passthrough: AtomicBool,
}

fn child_ino(parent: u64, name: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&parent.to_le_bytes());
    h.update(name);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    // Keep clear of 0 and the root, and of the top bit (some tools treat inodes as signed).
    (u64::from_le_bytes(b) >> 1).max(ROOT_INO + 1)
}

fn decode(block: &[u8]) -> Result<Decoded, FsError> {
    match Node::decode(block).map_err(|e| FsError::Io(e.to_string()))? {
        Node::Directory(entries) => Ok(Decoded::Dir(entries)),
        Node::Symlink(target) => Ok(Decoded::Symlink(target.into())),
        Node::File {
            inline,
            links,
            size,
            executable,
        } => {
            let mut starts = Vec::with_capacity(links.len());
            let mut at = inline.len() as u64;
            for l in &links {
                starts.push(at);
                at += l.content_size;
            }
            Ok(Decoded::File {
                inline,
                links,
                starts,
                size,
                executable,
            })
        }
    }
}

impl ViewFs {
    /// A file system over `store`; `rt` runs the database queries.
    pub fn new(store: Store, rt: Handle, root_kind: RootKind) -> ViewFs {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT_INO,
            Inode {
                kind: Kind::Root,
                parent: ROOT_INO,
                name: Box::from(&b""[..]),
                lookups: 1,
            },
        );
        ViewFs {
            store,
            rt,
            root_kind,
            inodes: RwLock::new(inodes),
            nodes: Cache::new(NODE_CACHE_ITEMS),
            chunks: Cache::with_weighter(1024, CHUNK_CACHE_BYTES, ChunkWeight),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            verified: Mutex::new(HashMap::new()),
            passthrough: AtomicBool::new(false),
        }
    }

    fn node(&self, cid: &Cid) -> Result<Arc<Decoded>, FsError> {
        if let Some(n) = self.nodes.get(cid) {
            return Ok(n);
        }
        let block = self.store.blocks().read(cid)?;
        let decoded = Arc::new(decode(&block)?);
        self.nodes.insert(*cid, decoded.clone());
        Ok(decoded)
    }

    fn chunk(&self, cid: &Cid) -> Result<Arc<Vec<u8>>, FsError> {
        if let Some(c) = self.chunks.get(cid) {
            return Ok(c);
        }
        let data = Arc::new(self.store.blocks().read(cid)?);
        self.chunks.insert(*cid, data.clone());
        Ok(data)
    }

    /// The kind of the node a link points at.
    fn kind_of(&self, cid: Cid) -> Result<Kind, FsError> {
        match cid.codec() {
            Codec::Raw => {
                let meta =
                    std::fs::symlink_metadata(self.store.blocks().path_of(&cid)).map_err(|e| {
                        match e.kind() {
                            std::io::ErrorKind::NotFound => {
                                FsError::Io(format!("block {cid} is missing"))
                            }
                            _ => FsError::Io(e.to_string()),
                        }
                    })?;
                Ok(Kind::File {
                    cid,
                    size: meta.len(),
                    executable: false,
                    single: Some(cid),
                })
            }
            Codec::DagPb => Ok(match &*self.node(&cid)? {
                Decoded::Dir(_) => Kind::Dir(cid),
                Decoded::Symlink(t) => Kind::Symlink(t.clone()),
                Decoded::File {
                    inline,
                    links,
                    size,
                    executable,
                    ..
                } => Kind::File {
                    cid,
                    size: *size,
                    executable: *executable,
                    single: pkgchain_dag::unixfs::single_block(inline, links),
                },
            }),
        }
    }

    fn attr(ino: u64, kind: &Kind) -> FileAttr {
        let (ftype, perm, size, nlink) = match kind {
            Kind::Root | Kind::Dir(_) => (FileType::Directory, 0o555, 4096, 2),
            Kind::File {
                size, executable, ..
            } => (
                FileType::RegularFile,
                if *executable { 0o555 } else { 0o444 },
                *size,
                1,
            ),
            Kind::Symlink(t) => (FileType::Symlink, 0o777, t.len() as u64, 1),
        };
        let t = UNIX_EPOCH + STORE_TIME;
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: ftype,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    fn file_type(kind: &Kind) -> FileType {
        match kind {
            Kind::Root | Kind::Dir(_) => FileType::Directory,
            Kind::File { .. } => FileType::RegularFile,
            Kind::Symlink(_) => FileType::Symlink,
        }
    }

    fn inodes_read(&self) -> Result<std::sync::RwLockReadGuard<'_, HashMap<u64, Inode>>, FsError> {
        self.inodes
            .read()
            .map_err(|_| FsError::Io("inode table poisoned".into()))
    }

    fn get(&self, ino: u64) -> Result<Kind, FsError> {
        let inodes = self.inodes_read()?;
        inodes
            .get(&ino)
            .map(|i| i.kind.clone())
            .ok_or(FsError::NotFound)
    }

    /// Records a looked-up child and returns its inode number.
    fn remember(&self, parent: u64, name: &[u8], kind: Kind) -> Result<u64, FsError> {
        let mut inodes = self
            .inodes
            .write()
            .map_err(|_| FsError::Io("inode table poisoned".into()))?;
        let mut ino = child_ino(parent, name);
        loop {
            match inodes.get_mut(&ino) {
                Some(existing) if existing.parent == parent && &*existing.name == name => {
                    existing.lookups += 1;
                    existing.kind = kind;
                    return Ok(ino);
                }
                Some(_) => ino = ino.wrapping_add(1).max(ROOT_INO + 1),
                None => {
                    inodes.insert(
                        ino,
                        Inode {
                            kind,
                            parent,
                            name: name.into(),
                            lookups: 1,
                        },
                    );
                    return Ok(ino);
                }
            }
        }
    }

    fn lookup_child(&self, parent: u64, name: &[u8]) -> Result<Kind, FsError> {
        match self.get(parent)? {
            Kind::Root => match self.root_kind {
                RootKind::StorePaths => {
                    let name_str = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
                    if pkgchain_store_model::store_path::StorePath::from_base_name(name_str)
                        .is_err()
                    {
                        return Err(FsError::NotFound);
                    }
                    let root = self
                        .rt
                        .block_on(self.store.db().root_of(name_str))
                        .map_err(|e| FsError::Io(e.to_string()))?
                        .ok_or(FsError::NotFound)?;
                    self.kind_of(root)
                }
                RootKind::Cids => {
                    let cid: Cid = std::str::from_utf8(name)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or(FsError::NotFound)?;
                    if !self.store.blocks().contains(&cid)? {
                        return Err(FsError::NotFound);
                    }
                    self.kind_of(cid)
                }
            },
            Kind::Dir(cid) => {
                let node = self.node(&cid)?;
                let Decoded::Dir(entries) = &*node else {
                    return Err(FsError::NotDir);
                };
                let i = entries
                    .binary_search_by(|e| e.name.as_slice().cmp(name))
                    .map_err(|_| FsError::NotFound)?;
                self.kind_of(entries[i].cid)
            }
            _ => Err(FsError::NotDir),
        }
    }

    fn listing(&self, ino: u64) -> Result<Listing, FsError> {
        let parent = {
            let inodes = self.inodes_read()?;
            inodes
                .get(&ino)
                .map(|i| i.parent)
                .ok_or(FsError::NotFound)?
        };
        let mut out: Listing = vec![
            (ino, FileType::Directory, Box::from(&b"."[..])),
            (parent, FileType::Directory, Box::from(&b".."[..])),
        ];
        match self.get(ino)? {
            Kind::Root => {
                if self.root_kind == RootKind::StorePaths {
                    let roots = self
                        .rt
                        .block_on(self.store.db().all_roots())
                        .map_err(|e| FsError::Io(e.to_string()))?;
                    for (name, cid) in roots {
                        let kind = self.kind_of(cid)?;
                        out.push((
                            child_ino(ino, name.as_bytes()),
                            Self::file_type(&kind),
                            name.into_bytes().into(),
                        ));
                    }
                }
            }
            Kind::Dir(cid) => {
                let node = self.node(&cid)?;
                let Decoded::Dir(entries) = &*node else {
                    return Err(FsError::NotDir);
                };
                for e in entries {
                    let kind = self.kind_of(e.cid)?;
                    out.push((
                        child_ino(ino, &e.name),
                        Self::file_type(&kind),
                        e.name.clone().into(),
                    ));
                }
            }
            _ => return Err(FsError::NotDir),
        }
        Ok(out)
    }

    /// Verifies a single-block file's block and returns the open file.
    fn open_single(&self, cid: &Cid) -> Result<File, FsError> {
        let path = self.store.blocks().path_of(cid);
        let meta = std::fs::metadata(&path)
            .map_err(|e| FsError::Io(format!("{}: {e}", path.display())))?;
        let stamp = Stamp {
            ino: meta.ino(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            size: meta.len(),
        };
        let known = self
            .verified
            .lock()
            .map(|v| v.get(cid) == Some(&stamp))
            .unwrap_or(false);
        if known {
            return File::open(&path).map_err(|e| FsError::Io(e.to_string()));
        }
        let file = self.store.blocks().open_verified(cid)?;
        if let Ok(mut v) = self.verified.lock() {
            if v.len() > 1_000_000 {
                v.clear();
            }
            v.insert(*cid, stamp);
        }
        Ok(file)
    }

    /// Reads `len` bytes at `offset` of a multi-block file.
    fn read_range(&self, root: &Cid, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let mut out = Vec::with_capacity(len);
        let mut pos = offset;
        while out.len() < len {
            let mut cid = *root;
            let mut base = 0u64;
            let mut depth = 0;
            loop {
                depth += 1;
                if depth > 64 {
                    return Err(FsError::Io(format!("file tree under {root} too deep")));
                }
                if cid.codec() == Codec::Raw {
                    let chunk = self.chunk(&cid)?;
                    let start = (pos - base) as usize;
                    if start >= chunk.len() {
                        return Err(FsError::Io(format!(
                            "chunk {cid} shorter than its node says"
                        )));
                    }
                    let take = (chunk.len() - start).min(len - out.len());
                    out.extend_from_slice(&chunk[start..start + take]);
                    pos += take as u64;
                    break;
                }
                let node = self.node(&cid)?;
                let Decoded::File {
                    inline,
                    links,
                    starts,
                    size,
                    ..
                } = &*node
                else {
                    return Err(FsError::Io(format!("{cid} is not a file node")));
                };
                let rel = pos - base;
                if rel >= *size {
                    return Ok(out);
                }
                if rel < inline.len() as u64 {
                    let start = rel as usize;
                    let take = (inline.len() - start).min(len - out.len());
                    out.extend_from_slice(&inline[start..start + take]);
                    pos += take as u64;
                    break;
                }
                let i = match starts.binary_search(&rel) {
                    Ok(i) => i,
                    Err(i) => i.saturating_sub(1),
                };
                let Some(link) = links.get(i) else {
                    return Err(FsError::Io(format!("{cid}: offset outside its links")));
                };
                base += starts[i];
                cid = link.cid;
            }
        }
        Ok(out)
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }
}

impl Filesystem for ViewFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_CACHE_SYMLINKS | InitFlags::FUSE_PARALLEL_DIROPS;
        if let Err(unsupported) = config.add_capabilities(wanted) {
            debug!(?unsupported, "kernel lacks some FUSE capabilities");
        }
        let _ = config
            .set_max_readahead(1024 * 1024)
            .or_else(|max| config.set_max_readahead(max));
        let euid_root = rustix::process::geteuid().is_root();
        if euid_root
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
            debug!("FUSE passthrough enabled");
        } else {
            debug!(
                "FUSE passthrough unavailable; single-block files are read through this process"
            );
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _span = debug_span!("fuse_lookup", parent = parent.0, name = ?name).entered();
        let name = name.as_bytes();
        match self
            .lookup_child(parent.0, name)
            .and_then(|kind| Ok((self.remember(parent.0, name, kind.clone())?, kind)))
        {
            Ok((ino, kind)) => reply.entry(&TTL, &Self::attr(ino, &kind), Generation(0)),
            Err(e) => {
                if let FsError::Io(msg) = &e {
                    warn!(error = %msg, "lookup failed");
                }
                reply.error(e.errno());
            }
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 == ROOT_INO {
            return;
        }
        if let Ok(mut inodes) = self.inodes.write()
            && let Some(i) = inodes.get_mut(&ino.0)
        {
            i.lookups = i.lookups.saturating_sub(nlookup);
            if i.lookups == 0 {
                inodes.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.get(ino.0) {
            Ok(kind) => reply.attr(&TTL, &Self::attr(ino.0, &kind)),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.get(ino.0) {
            Ok(Kind::Symlink(target)) => reply.data(&target),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _span = debug_span!("fuse_open", ino = ino.0).entered();
        if flags.0 & (libc_o_accmode()) != 0 {
            // Not O_RDONLY: the store is read-only.
            reply.error(Errno::EROFS);
            return;
        }
        let kind = match self.get(ino.0) {
            Ok(k) => k,
            Err(e) => return reply.error(e.errno()),
        };
        let Kind::File { cid, single, .. } = kind else {
            return reply.error(FsError::IsDir.errno());
        };
        let fh = self.new_fh();
        let (handle, flags) = match single {
            Some(block) => match self.open_single(&block) {
                Ok(file) => {
                    if self.passthrough.load(Ordering::Relaxed) {
                        match reply.open_backing(&file) {
                            Ok(backing) => {
                                let handle = Arc::new(OpenFile::Passthrough(backing));
                                if let Ok(mut files) = self.files.lock() {
                                    files.insert(fh, handle.clone());
                                }
                                if let OpenFile::Passthrough(b) = &*handle {
                                    // No FOPEN_KEEP_CACHE: the kernel refuses it together with
                                    // passthrough (open fails with EIO), and the page cache
                                    // is the block file's anyway.
                                    reply.opened_passthrough(
                                        FileHandle(fh),
                                        FopenFlags::empty(),
                                        b,
                                    );
                                }
                                return;
                            }
                            Err(e) => {
                                warn!(error = %e, "FUSE passthrough refused; reading through this process");
                                self.passthrough.store(false, Ordering::Relaxed);
                            }
                        }
                    }
                    (OpenFile::Single(file), FopenFlags::FOPEN_KEEP_CACHE)
                }
                Err(FsError::Io(msg)) => {
                    warn!(block = %block, error = %msg, "block failed verification at open");
                    (OpenFile::Corrupt(block), FopenFlags::FOPEN_DIRECT_IO)
                }
                Err(e) => return reply.error(e.errno()),
            },
            None => (OpenFile::Multi(cid), FopenFlags::FOPEN_KEEP_CACHE),
        };
        if let Ok(mut files) = self.files.lock() {
            files.insert(fh, Arc::new(handle));
        }
        reply.opened(FileHandle(fh), flags);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let handle = self.files.lock().ok().and_then(|f| f.get(&fh.0).cloned());
        let Some(handle) = handle else {
            return reply.error(Errno::EBADF);
        };
        match &*handle {
            OpenFile::Single(file) => {
                let mut buf = vec![0u8; size as usize];
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return reply.error(Errno::EIO),
                    }
                }
                reply.data(&buf[..filled]);
            }
            OpenFile::Multi(cid) => match self.read_range(cid, offset, size as usize) {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    if let FsError::Io(msg) = &e {
                        warn!(file = %cid, error = %msg, "read failed");
                    }
                    reply.error(e.errno());
                }
            },
            OpenFile::Corrupt(cid) => {
                warn!(block = %cid, "read of a corrupt block refused");
                reply.error(Errno::EIO);
            }
            OpenFile::Passthrough(_) => {
                warn!(fh = fh.0, "read reached a passthrough handle");
                reply.error(Errno::EIO)
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut files) = self.files.lock() {
            files.remove(&fh.0);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _span = debug_span!("fuse_opendir", ino = ino.0).entered();
        match self.listing(ino.0) {
            Ok(list) => {
                let fh = self.new_fh();
                if let Ok(mut dirs) = self.dirs.lock() {
                    dirs.insert(fh, Arc::new(list));
                }
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                );
            }
            Err(e) => {
                if let FsError::Io(msg) = &e {
                    warn!(error = %msg, "listing failed");
                }
                reply.error(e.errno());
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = self.dirs.lock().ok().and_then(|d| d.get(&fh.0).cloned());
        let Some(list) = list else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.remove(&fh.0);
        }
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to flush.
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // Store paths have no extended attributes (a NAR cannot hold them). ENOSYS makes the
        // kernel stop asking for the rest of the mount's life.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // `default_permissions` makes the kernel check modes; ENOSYS means "always allowed"
        // from here on.
        reply.error(Errno::ENOSYS);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(self.store.blocks().root()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                0,
                0,
                s.f_files,
                0,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(_) => reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096),
        }
    }
}

/// `O_ACCMODE`: the access-mode bits of open flags.
const fn libc_o_accmode() -> i32 {
    0o3
}
