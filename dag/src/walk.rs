//! Walking a DAG back into tree events (the inverse of [`crate::builder`]), without recursion.
//!
//! [`DagWalker`] fetches blocks through [`BlockGet`] (which must return bytes that match the
//! CID: verification is the getter's job) and yields [`WalkEvent`]s in NAR order. Every
//! structural promise of the DAG is checked on the way: file parts must add up to the sizes the
//! nodes state, and the depth is bounded, so a corrupt or hostile DAG produces an error, never
//! wrong output or unbounded work.

use thiserror::Error;

use crate::cid::{Cid, Codec};
use crate::unixfs::{DirEntry, FileLink, Node, NodeError};

/// Fetches verified blocks.
pub trait BlockGet {
    /// The getter's error.
    type Error;
    /// The bytes of `cid`, already checked against it.
    fn get(&self, cid: &Cid) -> Result<Vec<u8>, Self::Error>;
}

/// Why a walk failed.
#[derive(Debug, Error)]
pub enum WalkError<E> {
    /// The block source failed (missing or corrupt block).
    #[error("{0}")]
    Get(E),
    /// A block is not a valid node.
    #[error("block {cid}: {source}")]
    Node {
        /// The block.
        cid: Cid,
        /// Why.
        source: NodeError,
    },
    /// The DAG's structure contradicts itself.
    #[error("block {cid}: {reason}")]
    Structure {
        /// The block.
        cid: Cid,
        /// What is inconsistent.
        reason: String,
    },
    /// Deeper than the walker allows.
    #[error("DAG deeper than {0} levels")]
    TooDeep(usize),
}

/// One step of a tree, as a NAR lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEvent<'a> {
    /// A regular file begins.
    File {
        /// Entry name, `None` at the root.
        name: Option<&'a [u8]>,
        /// Executable bit.
        executable: bool,
        /// Content size.
        size: u64,
        /// The raw block holding the whole content, when the file is stored as one block.
        single_block: Option<Cid>,
    },
    /// File content, in order.
    FileChunk(&'a [u8]),
    /// File content to be fetched by the caller (only from [`DagWalker::deferring_chunks`]):
    /// the raw block `cid`, which must hold exactly `size` bytes. The walker has not read or
    /// checked it; the caller must (for example with a block getter that verifies CIDs) and
    /// must reject a block of another length.
    ChunkRef {
        /// The raw block.
        cid: Cid,
        /// Its length, as its parent node states it.
        size: u64,
    },
    /// The current file is complete.
    FileEnd,
    /// A symlink.
    Symlink {
        /// Entry name, `None` at the root.
        name: Option<&'a [u8]>,
        /// Target.
        target: &'a [u8],
    },
    /// A directory begins.
    DirectoryStart {
        /// Entry name, `None` at the root.
        name: Option<&'a [u8]>,
    },
    /// The current directory is complete.
    DirectoryEnd,
}

enum Frame {
    /// A directory whose entries are being listed.
    Dir { entries: Vec<DirEntry>, next: usize },
    /// One level of a file tree: links still to read, and the content they must hold.
    FileLevel {
        cid: Cid,
        links: Vec<FileLink>,
        next: usize,
    },
    /// The file being emitted; `remaining` counts content bytes not yet produced.
    File { remaining: u64, root: Cid },
}

/// Walks one DAG; see the module documentation.
pub struct DagWalker<'g, G: BlockGet> {
    getter: &'g G,
    stack: Vec<Frame>,
    /// The next node to start: entry name, CID, and its link's Tsize (`None` at the root).
    pending: Option<(Option<Vec<u8>>, Cid, Option<u64>)>,
    /// Emit raw chunks as [`WalkEvent::ChunkRef`] instead of reading them.
    defer_chunks: bool,
    /// A raw chunk to announce next (deferred mode).
    chunk_ref_pending: Option<(Cid, u64)>,
    /// Holds the bytes that the last event borrows.
    current: Vec<u8>,
    name: Option<Vec<u8>>,
    max_depth: usize,
    root: Cid,
    /// `current` holds file content to be returned as the next event.
    chunk_pending: bool,
}

impl<'g, G: BlockGet> DagWalker<'g, G> {
    /// A walker over the DAG rooted at `root`; `max_depth` bounds directory nesting plus file
    /// tree height.
    pub fn new(getter: &'g G, root: Cid, max_depth: usize) -> Self {
        DagWalker {
            getter,
            stack: Vec::new(),
            pending: Some((None, root, None)),
            defer_chunks: false,
            chunk_ref_pending: None,
            current: Vec::new(),
            name: None,
            max_depth,
            root,
            chunk_pending: false,
        }
    }

    /// A walker that reads only the structure (directory, file and symlink nodes) and hands
    /// raw chunks to the caller as [`WalkEvent::ChunkRef`], so they can be fetched in parallel.
    pub fn deferring_chunks(getter: &'g G, root: Cid, max_depth: usize) -> Self {
        let mut w = DagWalker::new(getter, root, max_depth);
        w.defer_chunks = true;
        w
    }

    fn get(&self, cid: &Cid) -> Result<Vec<u8>, WalkError<G::Error>> {
        self.getter.get(cid).map_err(WalkError::Get)
    }

    fn push(&mut self, frame: Frame) -> Result<(), WalkError<G::Error>> {
        if self.stack.len() >= self.max_depth {
            return Err(WalkError::TooDeep(self.max_depth));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// The next event, or `None` when the root is complete.
    pub fn next_event(&mut self) -> Result<Option<WalkEvent<'_>>, WalkError<G::Error>> {
        // Start of a node named by a directory entry (or the root).
        if let Some((name, cid, size_hint)) = self.pending.take() {
            return self.start_node(name, cid, size_hint);
        }
        if let Some((cid, size)) = self.chunk_ref_pending.take() {
            self.consume_content(size)?;
            return Ok(Some(WalkEvent::ChunkRef { cid, size }));
        }
        if self.chunk_pending {
            self.chunk_pending = false;
            self.consume_content(self.current.len() as u64)?;
            return Ok(Some(WalkEvent::FileChunk(&self.current)));
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            match top {
                Frame::Dir { entries, next } => {
                    if *next == entries.len() {
                        self.stack.pop();
                        return Ok(Some(WalkEvent::DirectoryEnd));
                    }
                    let entry = &mut entries[*next];
                    *next += 1;
                    let name = std::mem::take(&mut entry.name);
                    let (cid, tsize) = (entry.cid, entry.tsize);
                    return self.start_node(Some(name), cid, Some(tsize));
                }
                Frame::FileLevel { cid, links, next } => {
                    if *next == links.len() {
                        self.stack.pop();
                        continue;
                    }
                    let link = links[*next];
                    let parent = *cid;
                    *next += 1;
                    if self.defer_chunks && link.cid.codec() == Codec::Raw {
                        self.consume_content(link.content_size)?;
                        return Ok(Some(WalkEvent::ChunkRef {
                            cid: link.cid,
                            size: link.content_size,
                        }));
                    }
                    let block = self.get(&link.cid)?;
                    match link.cid.codec() {
                        Codec::Raw => {
                            if block.len() as u64 != link.content_size {
                                return Err(WalkError::Structure {
                                    cid: parent,
                                    reason: format!(
                                        "chunk {} holds {} bytes, the node says {}",
                                        link.cid,
                                        block.len(),
                                        link.content_size
                                    ),
                                });
                            }
                            self.consume_content(block.len() as u64)?;
                            self.current = block;
                            return Ok(Some(WalkEvent::FileChunk(&self.current)));
                        }
                        Codec::DagPb => {
                            let node = Node::decode(&block).map_err(|source| WalkError::Node {
                                cid: link.cid,
                                source,
                            })?;
                            let Node::File {
                                inline,
                                links,
                                size,
                                ..
                            } = node
                            else {
                                return Err(WalkError::Structure {
                                    cid: parent,
                                    reason: format!("file part {} is not a file node", link.cid),
                                });
                            };
                            if size != link.content_size {
                                return Err(WalkError::Structure {
                                    cid: parent,
                                    reason: format!(
                                        "file part {} holds {size} bytes, the node says {}",
                                        link.cid, link.content_size
                                    ),
                                });
                            }
                            self.push(Frame::FileLevel {
                                cid: link.cid,
                                links,
                                next: 0,
                            })?;
                            if !inline.is_empty() {
                                self.consume_content(inline.len() as u64)?;
                                self.current = inline;
                                return Ok(Some(WalkEvent::FileChunk(&self.current)));
                            }
                        }
                    }
                }
                Frame::File { remaining, root } => {
                    if *remaining != 0 {
                        return Err(WalkError::Structure {
                            cid: *root,
                            reason: format!("file is {remaining} bytes short of its size"),
                        });
                    }
                    self.stack.pop();
                    return Ok(Some(WalkEvent::FileEnd));
                }
            }
        }
    }

    /// Accounts `n` content bytes against the innermost file.
    fn consume_content(&mut self, n: u64) -> Result<(), WalkError<G::Error>> {
        for frame in self.stack.iter_mut().rev() {
            if let Frame::File { remaining, root } = frame {
                if *remaining < n {
                    return Err(WalkError::Structure {
                        cid: *root,
                        reason: "file content exceeds its size".into(),
                    });
                }
                *remaining -= n;
                return Ok(());
            }
        }
        Err(WalkError::Structure {
            cid: self.root,
            reason: "file content outside a file".into(),
        })
    }

    fn start_node(
        &mut self,
        name: Option<Vec<u8>>,
        cid: Cid,
        size_hint: Option<u64>,
    ) -> Result<Option<WalkEvent<'_>>, WalkError<G::Error>> {
        self.name = name;
        // A whole file in one raw block whose size the parent states: announce it unread.
        if let (true, Codec::Raw, Some(size)) = (self.defer_chunks, cid.codec(), size_hint)
            && size > 0
        {
            self.push(Frame::File {
                remaining: size,
                root: cid,
            })?;
            self.chunk_ref_pending = Some((cid, size));
            return Ok(Some(WalkEvent::File {
                name: self.name.as_deref(),
                executable: false,
                size,
                single_block: Some(cid),
            }));
        }
        let block = self.get(&cid)?;
        match cid.codec() {
            Codec::Raw => {
                // A whole file in one raw block: its bytes are the next chunk.
                let size = block.len() as u64;
                self.push(Frame::File {
                    remaining: size,
                    root: cid,
                })?;
                self.current = block;
                self.chunk_pending = size > 0;
                Ok(Some(WalkEvent::File {
                    name: self.name.as_deref(),
                    executable: false,
                    size,
                    single_block: Some(cid),
                }))
            }
            Codec::DagPb => {
                let node =
                    Node::decode(&block).map_err(|source| WalkError::Node { cid, source })?;
                match node {
                    Node::Directory(entries) => {
                        self.push(Frame::Dir { entries, next: 0 })?;
                        Ok(Some(WalkEvent::DirectoryStart {
                            name: self.name.as_deref(),
                        }))
                    }
                    Node::Symlink(target) => {
                        self.current = target;
                        Ok(Some(WalkEvent::Symlink {
                            name: self.name.as_deref(),
                            target: &self.current,
                        }))
                    }
                    Node::File {
                        inline,
                        links,
                        size,
                        executable,
                    } => {
                        self.push(Frame::File {
                            remaining: size,
                            root: cid,
                        })?;
                        let single_block = crate::unixfs::single_block(&inline, &links);
                        self.push(Frame::FileLevel {
                            cid,
                            links,
                            next: 0,
                        })?;
                        self.current = inline;
                        self.chunk_pending = !self.current.is_empty();
                        Ok(Some(WalkEvent::File {
                            name: self.name.as_deref(),
                            executable,
                            size,
                            single_block,
                        }))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::builder::{BlockSink, DagBuilder};

    #[derive(Default)]
    struct Mem(HashMap<Cid, Vec<u8>>);

    impl BlockSink for Mem {
        type Error = std::convert::Infallible;
        fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), Self::Error> {
            self.0.insert(*cid, data.to_vec());
            Ok(())
        }
    }

    impl BlockGet for Mem {
        type Error = String;
        fn get(&self, cid: &Cid) -> Result<Vec<u8>, String> {
            let b = self.0.get(cid).ok_or_else(|| format!("missing {cid}"))?;
            if !cid.verifies(b) {
                return Err(format!("corrupt {cid}"));
            }
            Ok(b.clone())
        }
    }

    /// An owned event, for comparing sequences.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        File(Option<Vec<u8>>, bool, u64),
        Data(Vec<u8>),
        FileEnd,
        Link(Option<Vec<u8>>, Vec<u8>),
        Dir(Option<Vec<u8>>),
        DirEnd,
    }

    fn build(events: &[Ev]) -> (Cid, Mem) {
        let mut b = DagBuilder::new(Mem::default());
        for e in events {
            match e {
                Ev::File(n, x, s) => b.file_start(n.as_deref(), *x, *s),
                Ev::Data(d) => b.file_data(d),
                Ev::FileEnd => b.file_end(),
                Ev::Link(n, t) => b.symlink(n.as_deref(), t),
                Ev::Dir(n) => b.directory_start(n.as_deref()),
                Ev::DirEnd => b.directory_end(),
            }
            .expect("build");
        }
        b.finish().expect("finish")
    }

    fn walk(root: Cid, mem: &Mem) -> Result<Vec<Ev>, WalkError<String>> {
        walk_with(DagWalker::new(mem, root, 64), mem)
    }

    fn walk_with(mut w: DagWalker<'_, Mem>, mem: &Mem) -> Result<Vec<Ev>, WalkError<String>> {
        let mut out: Vec<Ev> = Vec::new();
        let mut fetched;
        while let Some(e) = w.next_event()? {
            let e = match e {
                WalkEvent::ChunkRef { cid, size } => {
                    fetched = mem.get(&cid).map_err(WalkError::Get)?;
                    if fetched.len() as u64 != size {
                        return Err(WalkError::Get(format!("{cid}: wrong length")));
                    }
                    WalkEvent::FileChunk(&fetched)
                }
                other => other,
            };
            let owned = match e {
                WalkEvent::File {
                    name,
                    executable,
                    size,
                    ..
                } => Ev::File(name.map(<[u8]>::to_vec), executable, size),
                WalkEvent::FileChunk(d) => {
                    // Merge chunks: chunk boundaries differ between input and blocks.
                    if let Some(Ev::Data(prev)) = out.last_mut() {
                        prev.extend_from_slice(d);
                        continue;
                    }
                    Ev::Data(d.to_vec())
                }
                WalkEvent::FileEnd => Ev::FileEnd,
                WalkEvent::Symlink { name, target } => {
                    Ev::Link(name.map(<[u8]>::to_vec), target.to_vec())
                }
                WalkEvent::DirectoryStart { name } => Ev::Dir(name.map(<[u8]>::to_vec)),
                WalkEvent::DirectoryEnd => Ev::DirEnd,
                WalkEvent::ChunkRef { .. } => unreachable!("resolved above"),
            };
            out.push(owned);
        }
        Ok(out)
    }

    fn n(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    fn sample_tree() -> Vec<Ev> {
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        vec![
            Ev::Dir(None),
            Ev::File(n("big"), true, big.len() as u64),
            Ev::Data(big),
            Ev::FileEnd,
            Ev::File(n("empty"), false, 0),
            Ev::FileEnd,
            Ev::Dir(n("empty-dir")),
            Ev::DirEnd,
            Ev::Link(n("link"), b"../x".to_vec()),
            Ev::Dir(n("sub")),
            Ev::File(n("small"), false, 5),
            Ev::Data(b"hello".to_vec()),
            Ev::FileEnd,
            Ev::DirEnd,
            Ev::DirEnd,
        ]
    }

    #[test]
    fn round_trips_every_node_kind() {
        let tree = sample_tree();
        let (root, mem) = build(&tree);
        assert_eq!(walk(root, &mem).expect("walk"), tree);
        for single in [
            vec![Ev::File(None, false, 0), Ev::FileEnd],
            vec![
                Ev::File(None, true, 2),
                Ev::Data(b"hi".to_vec()),
                Ev::FileEnd,
            ],
            vec![Ev::Link(None, b"/nix/store".to_vec())],
            vec![Ev::Dir(None), Ev::DirEnd],
        ] {
            let (root, mem) = build(&single);
            assert_eq!(walk(root, &mem).expect("walk"), single);
        }
    }

    #[test]
    fn deferred_chunks_give_the_same_tree_without_reading_chunks() {
        let tree = sample_tree();
        let (root, mem) = build(&tree);
        assert_eq!(
            walk_with(DagWalker::deferring_chunks(&mem, root, 64), &mem).expect("walk"),
            tree
        );
        // The structure walk reads no raw block but empty ones (a zero Tsize cannot be told
        // from an absent one): remove the others and it still runs.
        let structure_only = Mem(mem
            .0
            .iter()
            .filter(|(c, b)| c.codec() == Codec::DagPb || b.is_empty())
            .map(|(c, b)| (*c, b.clone()))
            .collect());
        let mut w = DagWalker::deferring_chunks(&structure_only, root, 64);
        let mut refs = 0;
        while let Some(e) = w.next_event().expect("structure walk") {
            if matches!(e, WalkEvent::ChunkRef { .. }) {
                refs += 1;
            }
        }
        assert!(refs > 3, "{refs} chunk references");
    }

    #[test]
    fn corrupt_or_missing_blocks_are_errors() {
        let tree = sample_tree();
        let (root, mem) = build(&tree);
        for cid in mem.0.keys().copied().collect::<Vec<_>>() {
            let mut broken = Mem(mem.0.clone());
            broken.0.get_mut(&cid).expect("block").push(0);
            assert!(walk(root, &broken).is_err(), "corrupt {cid} went unnoticed");
            let mut missing = Mem(mem.0.clone());
            missing.0.remove(&cid);
            assert!(
                walk(root, &missing).is_err(),
                "missing {cid} went unnoticed"
            );
        }
    }

    #[test]
    fn lying_sizes_are_structure_errors() {
        // A file node that claims more content than its chunk holds, with a valid CID.
        let chunk = b"abc";
        let link = FileLink {
            cid: Cid::of(Codec::Raw, chunk),
            content_size: 4,
            tsize: 3,
        };
        let node = Node::encode_file(&[link], false);
        let root = Cid::of(Codec::DagPb, &node);
        let mut mem = Mem::default();
        mem.0.insert(root, node);
        mem.0.insert(link.cid, chunk.to_vec());
        let err = walk(root, &mem).expect_err("lie");
        assert!(err.to_string().contains("holds 3 bytes"), "{err}");
    }
}
