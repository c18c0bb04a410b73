//! Building a store path's DAG from a stream of tree events, without recursion.
//!
//! [`DagBuilder`] receives the same sequence a NAR describes (file start, data, file end,
//! symlink, directory start/end; entries of a directory in sorted order) and hands every block
//! it makes to a [`BlockSink`] as soon as the block is complete, children before parents. Memory
//! is bounded by one file's chunking buffer, one open File-node level per 174 chunks, and the
//! entries of the directories currently open.

use thiserror::Error;

use crate::chunker::Chunker;
use crate::cid::{Cid, Codec};
use crate::layout::{MAX_BLOCK_SIZE, MAX_LINKS_PER_NODE};
use crate::unixfs::{self, DirEntry, FileLink, Node, NodeError};

/// Where finished blocks go.
pub trait BlockSink {
    /// The sink's error.
    type Error;
    /// Takes one block. `data` is the block's bytes; `cid` was computed from them.
    fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), Self::Error>;
}

/// Why a build failed.
#[derive(Debug, Error)]
pub enum BuildError<E> {
    /// The sink failed to take a block.
    #[error("storing a block: {0}")]
    Sink(E),
    /// Events arrived in an order no tree has.
    #[error("invalid tree event sequence: {0}")]
    Sequence(&'static str),
    /// A file delivered more or fewer bytes than it announced.
    #[error("file announced {announced} bytes but delivered {delivered}")]
    FileSize {
        /// Size from the file start.
        announced: u64,
        /// Bytes received.
        delivered: u64,
    },
    /// An entry name a NAR cannot hold, or entries out of order.
    #[error(transparent)]
    Name(#[from] NodeError),
    /// A directory node would exceed the block size limit.
    #[error(
        "directory with {entries} entries needs a {size}-byte node, over the {MAX_BLOCK_SIZE}-byte block limit (sharded directories are not implemented)"
    )]
    DirectoryTooLarge {
        /// Entries in the directory.
        entries: usize,
        /// Encoded node size.
        size: usize,
    },
}

struct OpenFile {
    name: Option<Vec<u8>>,
    executable: bool,
    announced: u64,
    delivered: u64,
    /// `levels[0]` holds chunk links; `levels[i]` links to nodes over `levels[i-1]`.
    levels: Vec<Vec<FileLink>>,
}

struct OpenDir {
    name: Option<Vec<u8>>,
    entries: Vec<DirEntry>,
}

/// Builds one DAG; see the module documentation.
pub struct DagBuilder<S: BlockSink> {
    sink: S,
    chunker: Chunker,
    file: Option<OpenFile>,
    dirs: Vec<OpenDir>,
    root: Option<Cid>,
}

impl<S: BlockSink> DagBuilder<S> {
    /// A builder handing blocks to `sink`.
    pub fn new(sink: S) -> Self {
        DagBuilder {
            sink,
            chunker: Chunker::new(0),
            file: None,
            dirs: Vec::new(),
            root: None,
        }
    }

    /// The sink, e.g. to inspect what it collected so far.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    fn check_can_start(&self, name: &Option<&[u8]>) -> Result<(), BuildError<S::Error>> {
        if self.file.is_some() {
            return Err(BuildError::Sequence("node started inside a file"));
        }
        if self.root.is_some() {
            return Err(BuildError::Sequence("node after the root was complete"));
        }
        match (name, self.dirs.last()) {
            (None, None) => Ok(()),
            (Some(_), None) => Err(BuildError::Sequence("named node outside a directory")),
            (None, Some(_)) => Err(BuildError::Sequence("unnamed node inside a directory")),
            (Some(n), Some(dir)) => {
                unixfs::check_name(n)?;
                if let Some(last) = dir.entries.last()
                    && last.name.as_slice() >= *n
                {
                    return Err(NodeError::Unsorted {
                        before: String::from_utf8_lossy(&last.name).into_owned(),
                        after: String::from_utf8_lossy(n).into_owned(),
                    }
                    .into());
                }
                Ok(())
            }
        }
    }

    /// A regular file of `size` bytes begins.
    pub fn file_start(
        &mut self,
        name: Option<&[u8]>,
        executable: bool,
        size: u64,
    ) -> Result<(), BuildError<S::Error>> {
        self.check_can_start(&name)?;
        self.chunker.reset(size);
        self.file = Some(OpenFile {
            name: name.map(<[u8]>::to_vec),
            executable,
            announced: size,
            delivered: 0,
            levels: vec![Vec::new()],
        });
        Ok(())
    }

    /// Contents of the current file.
    pub fn file_data(&mut self, data: &[u8]) -> Result<(), BuildError<S::Error>> {
        let Some(file) = self.file.as_mut() else {
            return Err(BuildError::Sequence("file data outside a file"));
        };
        file.delivered += data.len() as u64;
        if file.delivered > file.announced {
            return Err(BuildError::FileSize {
                announced: file.announced,
                delivered: file.delivered,
            });
        }
        let sink = &mut self.sink;
        self.chunker
            .push(data, |chunk| push_chunk(sink, &mut file.levels, chunk))
    }

    /// The current file is complete.
    pub fn file_end(&mut self) -> Result<(), BuildError<S::Error>> {
        let Some(mut file) = self.file.take() else {
            return Err(BuildError::Sequence("file end outside a file"));
        };
        if file.delivered != file.announced {
            return Err(BuildError::FileSize {
                announced: file.announced,
                delivered: file.delivered,
            });
        }
        let sink = &mut self.sink;
        self.chunker
            .finish(|chunk| push_chunk(sink, &mut file.levels, chunk))?;
        let (cid, tsize) = finish_file(&mut self.sink, file.levels, file.executable)?;
        self.node_done(file.name, cid, tsize)
    }

    /// A symlink.
    pub fn symlink(
        &mut self,
        name: Option<&[u8]>,
        target: &[u8],
    ) -> Result<(), BuildError<S::Error>> {
        self.check_can_start(&name)?;
        let block = Node::encode_symlink(target);
        let cid = Cid::of(Codec::DagPb, &block);
        self.sink.put(&cid, &block).map_err(BuildError::Sink)?;
        self.node_done(name.map(<[u8]>::to_vec), cid, block.len() as u64)
    }

    /// A directory begins.
    pub fn directory_start(&mut self, name: Option<&[u8]>) -> Result<(), BuildError<S::Error>> {
        self.check_can_start(&name)?;
        self.dirs.push(OpenDir {
            name: name.map(<[u8]>::to_vec),
            entries: Vec::new(),
        });
        Ok(())
    }

    /// The current directory is complete.
    pub fn directory_end(&mut self) -> Result<(), BuildError<S::Error>> {
        if self.file.is_some() {
            return Err(BuildError::Sequence("directory end inside a file"));
        }
        let Some(dir) = self.dirs.pop() else {
            return Err(BuildError::Sequence("directory end outside a directory"));
        };
        let block = Node::encode_directory(&dir.entries);
        if block.len() > MAX_BLOCK_SIZE {
            return Err(BuildError::DirectoryTooLarge {
                entries: dir.entries.len(),
                size: block.len(),
            });
        }
        let tsize = block.len() as u64 + dir.entries.iter().map(|e| e.tsize).sum::<u64>();
        let cid = Cid::of(Codec::DagPb, &block);
        self.sink.put(&cid, &block).map_err(BuildError::Sink)?;
        self.node_done(dir.name, cid, tsize)
    }

    fn node_done(
        &mut self,
        name: Option<Vec<u8>>,
        cid: Cid,
        tsize: u64,
    ) -> Result<(), BuildError<S::Error>> {
        match (name, self.dirs.last_mut()) {
            (Some(name), Some(dir)) => {
                dir.entries.push(DirEntry { name, cid, tsize });
                Ok(())
            }
            (None, None) => {
                self.root = Some(cid);
                Ok(())
            }
            _ => Err(BuildError::Sequence(
                "node name does not match its position",
            )),
        }
    }

    /// The root CID, once the root node is complete, and the sink.
    pub fn finish(self) -> Result<(Cid, S), BuildError<S::Error>> {
        match self.root {
            Some(root) if self.file.is_none() && self.dirs.is_empty() => Ok((root, self.sink)),
            _ => Err(BuildError::Sequence(
                "tree ended before its root was complete",
            )),
        }
    }
}

fn push_chunk<S: BlockSink>(
    sink: &mut S,
    levels: &mut Vec<Vec<FileLink>>,
    chunk: &[u8],
) -> Result<(), BuildError<S::Error>> {
    let cid = Cid::of(Codec::Raw, chunk);
    sink.put(&cid, chunk).map_err(BuildError::Sink)?;
    let size = chunk.len() as u64;
    levels[0].push(FileLink {
        cid,
        content_size: size,
        tsize: size,
    });
    // Carry full levels upwards.
    let mut level = 0;
    while levels[level].len() == MAX_LINKS_PER_NODE {
        let full = std::mem::take(&mut levels[level]);
        let link = store_file_node(sink, &full, false)?;
        if levels.len() == level + 1 {
            levels.push(Vec::new());
        }
        levels[level + 1].push(link);
        level += 1;
    }
    Ok(())
}

fn store_file_node<S: BlockSink>(
    sink: &mut S,
    links: &[FileLink],
    executable: bool,
) -> Result<FileLink, BuildError<S::Error>> {
    let block = Node::encode_file(links, executable);
    let cid = Cid::of(Codec::DagPb, &block);
    sink.put(&cid, &block).map_err(BuildError::Sink)?;
    Ok(FileLink {
        cid,
        content_size: links.iter().map(|l| l.content_size).sum(),
        tsize: block.len() as u64 + links.iter().map(|l| l.tsize).sum::<u64>(),
    })
}

/// Closes the partial levels bottom-up and returns the file's root CID and tsize.
fn finish_file<S: BlockSink>(
    sink: &mut S,
    mut levels: Vec<Vec<FileLink>>,
    executable: bool,
) -> Result<(Cid, u64), BuildError<S::Error>> {
    let top = levels.len() - 1;
    for level in 0..top {
        if !levels[level].is_empty() {
            let partial = std::mem::take(&mut levels[level]);
            let link = store_file_node(sink, &partial, false)?;
            levels[level + 1].push(link);
        }
    }
    let top_links = std::mem::take(&mut levels[top]);
    match top_links.as_slice() {
        // A non-executable file of one chunk is that raw block; one node is the root as is.
        [only] if !executable && (top > 0 || only.cid.codec() == Codec::Raw) => {
            Ok((only.cid, only.tsize))
        }
        // The chunker always emits at least one (possibly empty) chunk, so `top_links` is never
        // empty; an empty list still encodes a valid empty file.
        links => {
            let link = store_file_node(sink, links, executable)?;
            Ok((link.cid, link.tsize))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Collects blocks in memory.
    #[derive(Default)]
    pub(crate) struct MemSink(pub HashMap<Cid, Vec<u8>>);

    impl BlockSink for MemSink {
        type Error = std::convert::Infallible;
        fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<(), Self::Error> {
            assert!(cid.verifies(data));
            self.0.insert(*cid, data.to_vec());
            Ok(())
        }
    }

    fn file(b: &mut DagBuilder<MemSink>, name: &[u8], exec: bool, data: &[u8]) {
        b.file_start(Some(name), exec, data.len() as u64)
            .expect("start");
        for piece in data.chunks(100_000) {
            b.file_data(piece).expect("data");
        }
        b.file_end().expect("end");
    }

    #[test]
    fn small_plain_file_is_its_raw_block() {
        let mut b = DagBuilder::new(MemSink::default());
        b.file_start(None, false, 5).expect("start");
        b.file_data(b"hello").expect("data");
        b.file_end().expect("end");
        let (root, sink) = b.finish().expect("finish");
        assert_eq!(root, Cid::of(Codec::Raw, b"hello"));
        assert_eq!(sink.0.len(), 1);
    }

    #[test]
    fn executable_and_large_files_get_nodes() {
        let mut b = DagBuilder::new(MemSink::default());
        b.file_start(None, true, 5).expect("start");
        b.file_data(b"hello").expect("data");
        b.file_end().expect("end");
        let (root, sink) = b.finish().expect("finish");
        assert_eq!(root.codec(), Codec::DagPb);
        match Node::decode(&sink.0[&root]).expect("node") {
            Node::File {
                executable, size, ..
            } => assert!(executable && size == 5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multi_level_file_tree() {
        // Repeating data makes FastCDC cut at the maximum: 200 chunks need two levels.
        let data = vec![0u8; 200 * crate::layout::CDC_MAX];
        let mut b = DagBuilder::new(MemSink::default());
        b.file_start(None, false, data.len() as u64).expect("start");
        for p in data.chunks(1 << 20) {
            b.file_data(p).expect("data");
        }
        b.file_end().expect("end");
        let (root, sink) = b.finish().expect("finish");
        // Equal chunks are one block: the sink dedups by CID.
        assert!(sink.0.len() < 10, "{}", sink.0.len());
        let Node::File { links, size, .. } = Node::decode(&sink.0[&root]).expect("root") else {
            panic!("root is not a file");
        };
        assert_eq!(size, data.len() as u64);
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].content_size, 174 * crate::layout::CDC_MAX as u64);
    }

    #[test]
    fn directories_and_order() {
        let mut b = DagBuilder::new(MemSink::default());
        b.directory_start(None).expect("root");
        file(&mut b, b"a", false, b"x");
        b.directory_start(Some(b"b")).expect("b");
        b.directory_end().expect("b end");
        b.symlink(Some(b"c"), b"a").expect("c");
        b.directory_end().expect("root end");
        let (root, sink) = b.finish().expect("finish");
        let Node::Directory(entries) = Node::decode(&sink.0[&root]).expect("dir") else {
            panic!("root is not a directory");
        };
        let names: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
        assert_eq!(names, [b"a".as_slice(), b"b", b"c"]);

        let mut b = DagBuilder::new(MemSink::default());
        b.directory_start(None).expect("root");
        file(&mut b, b"b", false, b"x");
        let err = b.file_start(Some(b"a"), false, 0).expect_err("unsorted");
        assert!(err.to_string().contains("not sorted"), "{err}");
    }

    #[test]
    fn sequence_and_size_errors() {
        let mut b = DagBuilder::new(MemSink::default());
        b.file_start(None, false, 3).expect("start");
        assert!(matches!(
            b.file_data(b"abcd"),
            Err(BuildError::FileSize { .. })
        ));
        let mut b = DagBuilder::new(MemSink::default());
        b.file_start(None, false, 3).expect("start");
        b.file_data(b"ab").expect("data");
        assert!(matches!(b.file_end(), Err(BuildError::FileSize { .. })));
        let b = DagBuilder::new(MemSink::default());
        assert!(b.finish().is_err());
        let mut b = DagBuilder::new(MemSink::default());
        assert!(b.directory_end().is_err());
        assert!(b.file_start(Some(b"x"), false, 0).is_err());
    }
}
