//! The FUSE view: the store served read-only from its blocks.
//!
//! One [`ViewFs`] serves either the store directory (children are valid store paths, looked up
//! in the database) or `/ipfs/store` (children are CIDs). Below that, everything comes from the
//! DAG: directory nodes give entries, file nodes give contents, symlink nodes give targets.
//!
//! * Contents never change, so entries and attributes get long kernel cache lifetimes and files
//!   are opened with `FOPEN_KEEP_CACHE`: a warm read never reaches this process.
//! * A file stored as one block is checked against its CID when first opened and then handed to
//!   the kernel with FUSE passthrough (Linux 6.9+, root): reads go straight to the block file.
//!   The backing registration is kept for the inode's life, so opening it again costs this
//!   process nothing but the reply. Where passthrough is unavailable the verified file is read
//!   with `pread`.
//! * Directory listings are cached per directory CID and returned with attributes
//!   (`readdirplus`), so walking a tree takes one request per directory, not one per entry. The
//!   size of a file stored as one block comes from its parent's link, not from the block file.
//! * `FLUSH` is answered with `ENOSYS` (nothing is ever written), so the kernel stops sending it.
//! * Larger files are read chunk by chunk; every chunk is checked against its CID before a byte
//!   of it is returned. A block that fails the check makes the read fail with `EIO`; a file
//!   found corrupt at open is opened in direct-I/O mode so even cached pages are not served.
//! * Inode numbers are derived from the parent's inode number and the entry name (BLAKE3), so
//!   they are the same on every mount; the rare collision is resolved by probing.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr,
    Request,
};
use pkgchain_blockstore::BlockError;
use pkgchain_dag::{Cid, Codec, DirEntry, FileLink, Node};
use pkgchain_store::Store;
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use rustix::fs::{Mode, OFlags};
use tokio::runtime::Handle;
use tracing::{debug, debug_span, warn};

/// The root inode.
pub const ROOT_INO: u64 = 1;
/// How long the kernel may cache entries and attributes (contents never change; deletion by
/// the garbage collector invalidates explicitly).
const TTL: Duration = Duration::from_secs(3600);
/// Decoded nodes kept in memory.
const NODE_CACHE_ITEMS: usize = 65_536;
/// The number of entries each cache is first sized for.
const CACHE_START_ITEMS: usize = 256;
/// Bytes of verified chunks kept in memory.
const CHUNK_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Directory listings kept in memory.
const LISTING_CACHE_ITEMS: usize = 16_384;
/// `fh` of handles without state (passthrough opens, multi-block files).
const STATELESS_FH: u64 = 0;
/// Reported block size: large, so `cat`/`cp` read in big pieces.
const BLKSIZE: u32 = 128 * 1024;
/// Every time stamp in the store is 1 second after the epoch, as in Nix.
const STORE_TIME: Duration = Duration::from_secs(1);

/// How files are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Every open is answered here: single-block files are verified and handed to the kernel
    /// with FUSE passthrough (reads go straight to the block file, whose page cache is shared
    /// by every path holding that block). Costs a request per open and per close.
    Passthrough,
    /// Zero-message open: the first open is answered `ENOSYS` and the kernel never asks again,
    /// keeping file pages cached across opens. Warm opens cost nothing here; first reads come
    /// through this process (every block verified), and passthrough is not used.
    #[default]
    KernelCache,
}

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
    /// The passthrough registration of a single-block file, kept for the inode's life.
    backing: Option<Arc<BackingId>>,
}

/// One entry of a cached directory listing.
struct Child {
    name: Box<[u8]>,
    kind: Kind,
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

/// What a non-passthrough file handle reads from. Passthrough opens and multi-block files need
/// no handle state (`fh` 0: reads of multi-block files find their CID through the inode).
enum OpenFile {
    Single(File),
    Corrupt(Cid),
}

#[derive(Clone)]
struct ChunkWeight;

impl Weighter<Cid, Arc<Vec<u8>>> for ChunkWeight {
    fn weight(&self, _key: &Cid, val: &Arc<Vec<u8>>) -> u64 {
        val.len() as u64 + 64
    }
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

/// A directory being listed: its inode, its parent's, and its entries.
struct DirHandle {
    ino: u64,
    parent: u64,
    children: Arc<Vec<Child>>,
}

/// The file system; see the module documentation.
pub struct ViewFs {
    store: Store,
    rt: Handle,
    root_kind: RootKind,
    inodes: RwLock<HashMap<u64, Inode>>,
    nodes: Cache<Cid, Arc<Decoded>>,
    chunks: Cache<Cid, Arc<Vec<u8>>, ChunkWeight>,
    listings: Cache<Cid, Arc<Vec<Child>>>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    /// Blocks checked against their CID since the mount (each is checked when first opened).
    verified: Mutex<HashSet<Cid>>,
    passthrough: AtomicBool,
    open_mode: OpenMode,
    /// Block files to hand to the kernel's readahead (see [`ViewFs::read_ahead_children`]).
    read_ahead: crossbeam_channel::Sender<Vec<std::path::PathBuf>>,
}

/// Single-block files of a listed directory whose blocks are read ahead, at most.
const READ_AHEAD_FILES: usize = 256;
/// Bytes of those blocks read ahead, at most.
const READ_AHEAD_BYTES: u64 = 32 * 1024 * 1024;

/// The read-ahead thread: asks the kernel to read block files into its cache
/// (`posix_fadvise(WILLNEED)` starts the reads and returns at once).
fn read_ahead_blocks(jobs: crossbeam_channel::Receiver<Vec<std::path::PathBuf>>) {
    for paths in jobs {
        for path in paths {
            if let Ok(fd) = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            {
                let _ = rustix::fs::fadvise(&fd, 0, None, rustix::fs::Advice::WillNeed);
            }
        }
    }
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
    pub fn new(store: Store, rt: Handle, root_kind: RootKind, open_mode: OpenMode) -> ViewFs {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT_INO,
            Inode {
                kind: Kind::Root,
                parent: ROOT_INO,
                name: Box::from(&b""[..]),
                lookups: 1,
                backing: None,
            },
        );
        ViewFs {
            store,
            rt,
            root_kind,
            inodes: RwLock::new(inodes),
            // Sized for what an idle daemon needs; they grow to their capacity under use (a
            // table sized for the capacity up front made 17 MiB of an idle daemon's 27 MiB).
            nodes: Cache::with_weighter(
                CACHE_START_ITEMS,
                NODE_CACHE_ITEMS as u64,
                quick_cache::UnitWeighter,
            ),
            chunks: Cache::with_weighter(CACHE_START_ITEMS, CHUNK_CACHE_BYTES, ChunkWeight),
            listings: Cache::with_weighter(
                CACHE_START_ITEMS,
                LISTING_CACHE_ITEMS as u64,
                quick_cache::UnitWeighter,
            ),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            verified: Mutex::new(HashSet::new()),
            passthrough: AtomicBool::new(false),
            open_mode,
            read_ahead: {
                // Bounded: when the thread falls behind, further hints are dropped.
                let (tx, rx) = crossbeam_channel::bounded(64);
                let spawned = std::thread::Builder::new()
                    .name("pkgchain-readahead".into())
                    .spawn(move || read_ahead_blocks(rx));
                if let Err(e) = spawned {
                    warn!(error = %e, "no read-ahead thread; first reads will wait for the disk");
                }
                tx
            },
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

    /// The kind of the node a link points at. `size_hint` is the link's Tsize: for a raw block
    /// it is the file's size (checked against the block when the file is opened), which saves
    /// reading the block file's metadata.
    fn kind_of(&self, cid: Cid, size_hint: Option<u64>) -> Result<Kind, FsError> {
        match cid.codec() {
            Codec::Raw => {
                let size = match size_hint {
                    Some(size) => size,
                    None => std::fs::symlink_metadata(self.store.blocks().path_of(&cid))
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::NotFound => {
                                FsError::Io(format!("block {cid} is missing"))
                            }
                            _ => FsError::Io(e.to_string()),
                        })?
                        .len(),
                };
                Ok(Kind::File {
                    cid,
                    size,
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

    /// The entries of directory `cid` with their kinds, cached (a CID's listing never changes).
    fn children(&self, cid: &Cid) -> Result<Arc<Vec<Child>>, FsError> {
        if let Some(c) = self.listings.get(cid) {
            return Ok(c);
        }
        let node = self.node(cid)?;
        let Decoded::Dir(entries) = &*node else {
            return Err(FsError::NotDir);
        };
        let children = entries
            .iter()
            .map(|e| {
                Ok(Child {
                    name: e.name.clone().into(),
                    kind: self.kind_of(e.cid, Some(e.tsize))?,
                })
            })
            .collect::<Result<Vec<_>, FsError>>()?;
        let children = Arc::new(children);
        self.listings.insert(*cid, children.clone());
        Ok(children)
    }

    /// Cold reads of a tree arrive file after file, each waiting for its block: when a
    /// directory is listed, its single-block files' blocks are handed to the kernel's
    /// readahead, so the reads that follow find them cached (in file order, bounded).
    fn read_ahead_children(&self, children: &[Child]) {
        if self.open_mode != OpenMode::KernelCache {
            // With passthrough the kernel reads block files itself, with its own readahead.
            return;
        }
        let mut bytes = 0u64;
        let paths: Vec<std::path::PathBuf> = children
            .iter()
            .filter_map(|c| match &c.kind {
                Kind::File {
                    single: Some(block),
                    size,
                    ..
                } => Some((block, *size)),
                _ => None,
            })
            .take(READ_AHEAD_FILES)
            .take_while(|(_, size)| {
                bytes += size;
                bytes <= READ_AHEAD_BYTES
            })
            .map(|(block, _)| self.store.blocks().path_of(block))
            .collect();
        if !paths.is_empty() {
            let _ = self.read_ahead.try_send(paths);
        }
    }

    /// The valid store paths with their kinds (the store directory's listing; never cached, as
    /// paths come and go).
    fn store_paths(&self) -> Result<Arc<Vec<Child>>, FsError> {
        if self.root_kind == RootKind::Cids {
            return Ok(Arc::new(Vec::new()));
        }
        let roots = self
            .rt
            .block_on(self.store.db().all_roots())
            .map_err(|e| FsError::Io(e.to_string()))?;
        let children = roots
            .into_iter()
            .map(|(name, cid)| {
                Ok(Child {
                    kind: self.kind_of(cid, None)?,
                    name: name.into_bytes().into(),
                })
            })
            .collect::<Result<Vec<_>, FsError>>()?;
        Ok(Arc::new(children))
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

    /// Attributes of a directory (all directories look alike).
    fn dir_attr(ino: u64) -> FileAttr {
        Self::attr(ino, &Kind::Root)
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
                            backing: None,
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
                    self.kind_of(root, None)
                }
                RootKind::Cids => {
                    let cid: Cid = std::str::from_utf8(name)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or(FsError::NotFound)?;
                    if !self.store.blocks().contains(&cid)? {
                        return Err(FsError::NotFound);
                    }
                    self.kind_of(cid, None)
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
                self.kind_of(entries[i].cid, Some(entries[i].tsize))
            }
            _ => Err(FsError::NotDir),
        }
    }

    fn open_dir(&self, ino: u64) -> Result<DirHandle, FsError> {
        let (kind, parent) = {
            let inodes = self.inodes_read()?;
            let i = inodes.get(&ino).ok_or(FsError::NotFound)?;
            (i.kind.clone(), i.parent)
        };
        let children = match kind {
            Kind::Root => self.store_paths()?,
            Kind::Dir(cid) => self.children(&cid)?,
            _ => return Err(FsError::NotDir),
        };
        Ok(DirHandle {
            ino,
            parent,
            children,
        })
    }

    /// Opens a single-block file's block, checking it against its CID and its expected size
    /// the first time it is opened since the mount.
    fn open_single(&self, cid: &Cid, size: u64) -> Result<File, FsError> {
        let known = self
            .verified
            .lock()
            .map(|v| v.contains(cid))
            .unwrap_or(false);
        let file = if known {
            File::open(self.store.blocks().path_of(cid)).map_err(|e| FsError::Io(e.to_string()))?
        } else {
            let file = self.store.blocks().open_verified(cid)?;
            if let Ok(mut v) = self.verified.lock() {
                if v.len() > 1_000_000 {
                    v.clear();
                }
                v.insert(*cid);
            }
            file
        };
        let len = file
            .metadata()
            .map_err(|e| FsError::Io(e.to_string()))?
            .len();
        if len != size {
            return Err(FsError::Io(format!(
                "block {cid} holds {len} bytes but its directory says {size}"
            )));
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
                        if cid == *root {
                            // A file that is one raw block: reading at or past its end.
                            return Ok(out);
                        }
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

    /// Drops `nlookup` references; the inode (and its passthrough registration) goes with the
    /// last one.
    fn forget_ino(&self, ino: u64, nlookup: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Ok(mut inodes) = self.inodes.write()
            && let Some(i) = inodes.get_mut(&ino)
        {
            i.lookups = i.lookups.saturating_sub(nlookup);
            if i.lookups == 0 {
                inodes.remove(&ino);
            }
        }
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }
}

impl Filesystem for ViewFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO;
        if let Err(unsupported) = config.add_capabilities(wanted) {
            debug!(?unsupported, "kernel lacks some FUSE capabilities");
        }
        let _ = config
            .set_max_readahead(1024 * 1024)
            .or_else(|max| config.set_max_readahead(max));
        let euid_root = rustix::process::geteuid().is_root();
        if self.open_mode == OpenMode::Passthrough
            && euid_root
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
        self.forget_ino(ino.0, nlookup);
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
        if self.open_mode == OpenMode::KernelCache {
            // Zero-message open (see `OpenMode::KernelCache`). The mount is read-only, so the
            // kernel refuses writable opens itself.
            return reply.error(Errno::ENOSYS);
        }
        if flags.0 & O_ACCMODE != 0 {
            // Not O_RDONLY: the store is read-only.
            return reply.error(Errno::EROFS);
        }
        let (kind, backing) = match self.inodes_read().and_then(|inodes| {
            inodes
                .get(&ino.0)
                .map(|i| (i.kind.clone(), i.backing.clone()))
                .ok_or(FsError::NotFound)
        }) {
            Ok(k) => k,
            Err(e) => return reply.error(e.errno()),
        };
        let Kind::File { single, size, .. } = kind else {
            return reply.error(FsError::IsDir.errno());
        };
        let Some(block) = single else {
            // Multi-block: reads find the file through the inode and verify every chunk.
            return reply.opened(FileHandle(STATELESS_FH), FopenFlags::FOPEN_KEEP_CACHE);
        };
        // No FOPEN_KEEP_CACHE with passthrough: the kernel refuses the combination (open fails
        // with EIO), and the page cache is the block file's anyway.
        if let Some(backing) = backing {
            return reply.opened_passthrough(
                FileHandle(STATELESS_FH),
                FopenFlags::empty(),
                &backing,
            );
        }
        let file = match self.open_single(&block, size) {
            Ok(file) => file,
            Err(FsError::Io(msg)) => {
                warn!(block = %block, error = %msg, "block failed verification at open");
                // Direct I/O, so not even cached pages are served: every read fails.
                let fh = self.new_fh();
                if let Ok(mut files) = self.files.lock() {
                    files.insert(fh, Arc::new(OpenFile::Corrupt(block)));
                }
                return reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => return reply.error(e.errno()),
        };
        if self.passthrough.load(Ordering::Relaxed) {
            match reply.open_backing(&file) {
                Ok(backing) => {
                    let backing = Arc::new(backing);
                    if let Ok(mut inodes) = self.inodes.write()
                        && let Some(i) = inodes.get_mut(&ino.0)
                    {
                        i.backing = Some(backing.clone());
                    }
                    return reply.opened_passthrough(
                        FileHandle(STATELESS_FH),
                        FopenFlags::empty(),
                        &backing,
                    );
                }
                Err(e) => {
                    warn!(error = %e, "FUSE passthrough refused; reading through this process");
                    self.passthrough.store(false, Ordering::Relaxed);
                }
            }
        }
        let fh = self.new_fh();
        if let Ok(mut files) = self.files.lock() {
            files.insert(fh, Arc::new(OpenFile::Single(file)));
        }
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if fh.0 == STATELESS_FH {
            let cid = match self.get(ino.0) {
                Ok(Kind::File { cid, .. }) => cid,
                Ok(_) => return reply.error(Errno::EISDIR),
                Err(e) => return reply.error(e.errno()),
            };
            return match self.read_range(&cid, offset, size as usize) {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    if let FsError::Io(msg) = &e {
                        warn!(file = %cid, error = %msg, "read failed");
                    }
                    reply.error(e.errno())
                }
            };
        }
        let handle = self.files.lock().ok().and_then(|f| f.get(&fh.0).cloned());
        match handle.as_deref() {
            Some(OpenFile::Single(file)) => {
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
            Some(OpenFile::Corrupt(cid)) => {
                warn!(block = %cid, "read of a corrupt block refused");
                reply.error(Errno::EIO);
            }
            None => reply.error(Errno::EBADF),
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
        if fh.0 != STATELESS_FH
            && let Ok(mut files) = self.files.lock()
        {
            files.remove(&fh.0);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Zero-message opendir: ENOSYS makes the kernel stop sending OPENDIR and RELEASEDIR and
        // keep every listing it has read (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR). Directories
        // inside store paths never change; the store directory's cached listing is invalidated
        // when paths are added or removed (see `watch_store_dir`).
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dir = match self.open_dir(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(e.errno()),
        };
        for i in offset as usize..dir.children.len() + 2 {
            let (ino, kind, name): (u64, FileType, &[u8]) = match i {
                0 => (dir.ino, FileType::Directory, b"."),
                1 => (dir.parent, FileType::Directory, b".."),
                _ => {
                    let c = &dir.children[i - 2];
                    (
                        child_ino(dir.ino, &c.name),
                        Self::file_type(&c.kind),
                        &c.name,
                    )
                }
            };
            if reply.add(INodeNo(ino), i as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dir = match self.open_dir(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(e.errno()),
        };
        if offset == 0 && dir.ino != ROOT_INO {
            self.read_ahead_children(&dir.children);
        }
        for i in offset as usize..dir.children.len() + 2 {
            let next = i as u64 + 1;
            let full = match i {
                // The kernel takes no lookup reference for `.` and `..`.
                0 => reply.add(
                    INodeNo(dir.ino),
                    next,
                    ".",
                    &TTL,
                    &Self::dir_attr(dir.ino),
                    Generation(0),
                ),
                1 => reply.add(
                    INodeNo(dir.parent),
                    next,
                    "..",
                    &TTL,
                    &Self::dir_attr(dir.parent),
                    Generation(0),
                ),
                _ => {
                    let c = &dir.children[i - 2];
                    let ino = match self.remember(dir.ino, &c.name, c.kind.clone()) {
                        Ok(ino) => ino,
                        Err(e) => return reply.error(e.errno()),
                    };
                    let full = reply.add(
                        INodeNo(ino),
                        next,
                        OsStr::from_bytes(&c.name),
                        &TTL,
                        &Self::attr(ino, &c.kind),
                        Generation(0),
                    );
                    if full {
                        // Not sent: the kernel will not forget what it never saw.
                        self.forget_ino(ino, 1);
                    }
                    full
                }
            };
            if full {
                break;
            }
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
        // Nothing is ever written, so there is nothing to flush; ENOSYS makes the kernel stop
        // sending FLUSH on every close.
        reply.error(Errno::ENOSYS);
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
const O_ACCMODE: i32 = 0o3;
