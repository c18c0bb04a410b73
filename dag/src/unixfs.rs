//! UnixFS nodes: files, directories and symlinks inside dag-pb.
//!
//! ```text
//! message Data {
//!   enum DataType { Raw = 0; Directory = 1; File = 2; Metadata = 3; Symlink = 4; HAMTShard = 5; }
//!   required DataType Type = 1; optional bytes Data = 2; optional uint64 filesize = 3;
//!   repeated uint64 blocksizes = 4; optional uint64 hashType = 5; optional uint64 fanout = 6;
//!   optional uint32 mode = 7; optional UnixTime mtime = 8;
//! }
//! ```
//!
//! Decoded nodes are checked for what a NAR needs: directory entries strictly sorted with valid
//! names, file sizes that add up, symlink targets within bounds. HAMT-sharded directories and
//! the Metadata type are not produced by this store and are rejected with a clear error.

use thiserror::Error;

use crate::cid::{Cid, Codec};
use crate::layout::{MAX_NAME_LEN, MAX_SYMLINK_TARGET_LEN};
use crate::pb::{self, Cursor, PbError, PbLink, PbNode};

const TYPE_RAW: u64 = 0;
const TYPE_DIRECTORY: u64 = 1;
const TYPE_FILE: u64 = 2;
const TYPE_SYMLINK: u64 = 4;
const TYPE_HAMT: u64 = 5;

/// The mode written for executable files (`rwxr-xr-x`).
pub const EXECUTABLE_MODE: u32 = 0o755;

/// Why a block is not a UnixFS node this store can serve.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeError {
    /// The dag-pb envelope is malformed.
    #[error(transparent)]
    Pb(#[from] PbError),
    /// No Data field (every UnixFS node has one).
    #[error("unixfs: node has no Data field")]
    NoData,
    /// A UnixFS type this store does not handle.
    #[error("unixfs: unsupported node type {0} (HAMT shards and metadata nodes are not used here)")]
    UnsupportedType(u64),
    /// A field that contradicts the node type or another field.
    #[error("unixfs: {0}")]
    Inconsistent(String),
    /// A directory entry name a NAR cannot hold.
    #[error("unixfs: invalid directory entry name {name:?}: {reason}")]
    BadName {
        /// The name, lossily decoded and shortened.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Directory entries not strictly increasing.
    #[error("unixfs: directory entries not sorted: {after:?} follows {before:?}")]
    Unsorted {
        /// The earlier name.
        before: String,
        /// The later, smaller-or-equal name.
        after: String,
    },
}

/// A link from a File node to a chunk or a subtree of chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLink {
    /// The linked block (raw chunk or File node).
    pub cid: Cid,
    /// Bytes of file content below this link (the UnixFS `blocksizes` entry).
    pub content_size: u64,
    /// Bytes of blocks below this link, the link's `Tsize`.
    pub tsize: u64,
}

/// An entry of a Directory node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Entry name: non-empty, no `/` or NUL, not `.` or `..`.
    pub name: Vec<u8>,
    /// The entry's root block.
    pub cid: Cid,
    /// Cumulative block size below this entry.
    pub tsize: u64,
}

/// A decoded UnixFS node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file: inline data (foreign nodes only) followed by linked content.
    File {
        /// Bytes stored in the node itself, before the links' content.
        inline: Vec<u8>,
        /// Content links in order.
        links: Vec<FileLink>,
        /// Total content size.
        size: u64,
        /// Whether any execute bit is set in `mode`.
        executable: bool,
    },
    /// A directory.
    Directory(Vec<DirEntry>),
    /// A symbolic link.
    Symlink(Vec<u8>),
}

/// Checks a directory entry name as a NAR requires.
pub fn check_name(name: &[u8]) -> Result<(), NodeError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("too long")
    } else if name == b"." || name == b".." {
        Some("'.' and '..' are not allowed")
    } else if name.contains(&b'/') {
        Some("contains '/'")
    } else if name.contains(&0) {
        Some("contains NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NodeError::BadName {
            name: shown(name),
            reason,
        }),
        None => Ok(()),
    }
}

fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(&name[..name.len().min(100)]).into_owned()
}

impl Node {
    /// Decodes a dag-pb block as a UnixFS node.
    pub fn decode(block: &[u8]) -> Result<Node, NodeError> {
        let pb = PbNode::decode(block)?;
        let data = pb.data.as_deref().ok_or(NodeError::NoData)?;
        let fields = DataFields::decode(data)?;
        match fields.kind {
            TYPE_FILE | TYPE_RAW => decode_file(&pb, fields),
            TYPE_DIRECTORY => decode_directory(&pb, &fields),
            TYPE_SYMLINK => {
                if !pb.links.is_empty() {
                    return Err(NodeError::Inconsistent("symlink node has links".into()));
                }
                let target = fields.data.unwrap_or_default();
                if target.is_empty() || target.len() > MAX_SYMLINK_TARGET_LEN {
                    return Err(NodeError::Inconsistent(format!(
                        "symlink target length {} outside 1..={MAX_SYMLINK_TARGET_LEN}",
                        target.len()
                    )));
                }
                if target.contains(&0) {
                    return Err(NodeError::Inconsistent(
                        "symlink target contains NUL".into(),
                    ));
                }
                Ok(Node::Symlink(target.to_vec()))
            }
            TYPE_HAMT => Err(NodeError::UnsupportedType(TYPE_HAMT)),
            other => Err(NodeError::UnsupportedType(other)),
        }
    }

    /// Encodes a File node over content links. `size` must equal the links' content sizes.
    pub fn encode_file(links: &[FileLink], executable: bool) -> Vec<u8> {
        let size: u64 = links.iter().map(|l| l.content_size).sum();
        let mut data = Vec::with_capacity(16 + links.len() * 4);
        data.push(0x08);
        pb::put_varint(&mut data, TYPE_FILE);
        data.push(0x18);
        pb::put_varint(&mut data, size);
        for l in links {
            data.push(0x20);
            pb::put_varint(&mut data, l.content_size);
        }
        if executable {
            data.push(0x38);
            pb::put_varint(&mut data, u64::from(EXECUTABLE_MODE));
        }
        PbNode {
            links: links
                .iter()
                .map(|l| PbLink {
                    cid: l.cid,
                    name: Some(Vec::new()),
                    tsize: Some(l.tsize),
                })
                .collect(),
            data: Some(data),
        }
        .encode()
    }

    /// Encodes a Directory node; `entries` must be sorted and valid (checked in debug builds).
    pub fn encode_directory(entries: &[DirEntry]) -> Vec<u8> {
        debug_assert!(entries.windows(2).all(|w| w[0].name < w[1].name));
        PbNode {
            links: entries
                .iter()
                .map(|e| PbLink {
                    cid: e.cid,
                    name: Some(e.name.clone()),
                    tsize: Some(e.tsize),
                })
                .collect(),
            data: Some(vec![0x08, TYPE_DIRECTORY as u8]),
        }
        .encode()
    }

    /// Encodes a Symlink node.
    pub fn encode_symlink(target: &[u8]) -> Vec<u8> {
        let mut data = Vec::with_capacity(target.len() + 8);
        data.push(0x08);
        pb::put_varint(&mut data, TYPE_SYMLINK);
        data.push(0x12);
        pb::put_varint(&mut data, target.len() as u64);
        data.extend_from_slice(target);
        PbNode {
            links: Vec::new(),
            data: Some(data),
        }
        .encode()
    }
}

fn decode_file(pb: &PbNode, fields: DataFields<'_>) -> Result<Node, NodeError> {
    if fields.blocksizes.len() != pb.links.len() {
        return Err(NodeError::Inconsistent(format!(
            "file node has {} links but {} blocksizes",
            pb.links.len(),
            fields.blocksizes.len()
        )));
    }
    let inline = fields.data.unwrap_or_default().to_vec();
    let mut total = inline.len() as u64;
    let mut links = Vec::with_capacity(pb.links.len());
    for (link, &content_size) in pb.links.iter().zip(&fields.blocksizes) {
        total = total
            .checked_add(content_size)
            .ok_or_else(|| NodeError::Inconsistent("file size overflows".into()))?;
        links.push(FileLink {
            cid: link.cid,
            content_size,
            tsize: link.tsize.unwrap_or(0),
        });
    }
    let size = fields.filesize.unwrap_or(total);
    if size != total {
        return Err(NodeError::Inconsistent(format!(
            "file node says {size} bytes but its parts hold {total}"
        )));
    }
    Ok(Node::File {
        inline,
        links,
        size,
        executable: fields.mode.is_some_and(|m| m & 0o111 != 0),
    })
}

fn decode_directory(pb: &PbNode, fields: &DataFields<'_>) -> Result<Node, NodeError> {
    if fields.data.is_some_and(|d| !d.is_empty()) || !fields.blocksizes.is_empty() {
        return Err(NodeError::Inconsistent(
            "directory node carries file data".into(),
        ));
    }
    let mut entries: Vec<DirEntry> = Vec::with_capacity(pb.links.len());
    for link in &pb.links {
        let name = link.name.clone().unwrap_or_default();
        check_name(&name)?;
        if let Some(prev) = entries.last()
            && prev.name >= name
        {
            return Err(NodeError::Unsorted {
                before: shown(&prev.name),
                after: shown(&name),
            });
        }
        entries.push(DirEntry {
            name,
            cid: link.cid,
            tsize: link.tsize.unwrap_or(0),
        });
    }
    Ok(Node::Directory(entries))
}

/// The fields of a UnixFS Data message that matter here.
struct DataFields<'a> {
    kind: u64,
    data: Option<&'a [u8]>,
    filesize: Option<u64>,
    blocksizes: Vec<u64>,
    mode: Option<u32>,
}

impl<'a> DataFields<'a> {
    fn decode(bytes: &'a [u8]) -> Result<DataFields<'a>, NodeError> {
        let mut cur = Cursor::new(bytes);
        let mut kind = None;
        let mut data = None;
        let mut filesize = None;
        let mut blocksizes = Vec::new();
        let mut mode = None;
        let mut last_field = 0;
        while !cur.is_empty() {
            let (field, wire_type) = cur.tag("unixfs tag")?;
            // Fields in number order; only blocksizes (4) may repeat.
            if field < last_field || (field == last_field && field != 4) {
                return Err(PbError::UnexpectedField {
                    field,
                    wire_type,
                    context: "unixfs data (fields out of order or repeated)",
                }
                .into());
            }
            last_field = field;
            match (field, wire_type) {
                (1, 0) => kind = Some(cur.varint("unixfs type")?),
                (2, 2) => data = Some(cur.bytes("unixfs data")?),
                (3, 0) => filesize = Some(cur.varint("unixfs filesize")?),
                (4, 0) => blocksizes.push(cur.varint("unixfs blocksizes")?),
                (5, 0) | (6, 0) => {
                    cur.varint("unixfs hamt field")?;
                }
                (7, 0) => {
                    let m = cur.varint("unixfs mode")?;
                    mode = Some(u32::try_from(m).map_err(|_| PbError::Varint("unixfs mode"))?);
                }
                (8, 2) => {
                    // mtime: not part of a NAR; accepted from foreign nodes and ignored.
                    cur.bytes("unixfs mtime")?;
                }
                _ => {
                    return Err(PbError::UnexpectedField {
                        field,
                        wire_type,
                        context: "unixfs data",
                    }
                    .into());
                }
            }
        }
        Ok(DataFields {
            kind: kind.ok_or_else(|| NodeError::Inconsistent("missing Type".into()))?,
            data,
            filesize,
            blocksizes,
            mode,
        })
    }
}

/// The raw block holding a File node's whole content, when there is exactly one (no inline
/// data, one raw link): such a file can be served straight from that block's file.
pub fn single_block(inline: &[u8], links: &[FileLink]) -> Option<Cid> {
    match links {
        [only] if inline.is_empty() && only.cid.codec() == Codec::Raw => Some(only.cid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(data: &[u8]) -> FileLink {
        FileLink {
            cid: Cid::of(Codec::Raw, data),
            content_size: data.len() as u64,
            tsize: data.len() as u64,
        }
    }

    #[test]
    fn file_round_trip() {
        for executable in [false, true] {
            let links = vec![raw(b"hello "), raw(b"world")];
            let block = Node::encode_file(&links, executable);
            let node = Node::decode(&block).expect("decode");
            assert_eq!(
                node,
                Node::File {
                    inline: vec![],
                    links,
                    size: 11,
                    executable
                }
            );
        }
    }

    #[test]
    fn directory_and_symlink_round_trip() {
        let entries = vec![
            DirEntry {
                name: b"a".to_vec(),
                cid: Cid::of(Codec::Raw, b"1"),
                tsize: 1,
            },
            DirEntry {
                name: b"b\xff".to_vec(),
                cid: Cid::of(Codec::DagPb, b"2"),
                tsize: 9,
            },
        ];
        let block = Node::encode_directory(&entries);
        assert_eq!(Node::decode(&block).expect("dir"), Node::Directory(entries));
        assert_eq!(
            Node::decode(&Node::encode_directory(&[])).expect("empty dir"),
            Node::Directory(vec![])
        );
        let block = Node::encode_symlink(b"../lib/x");
        assert_eq!(
            Node::decode(&block).expect("symlink"),
            Node::Symlink(b"../lib/x".to_vec())
        );
    }

    #[test]
    fn rejects_what_a_nar_cannot_hold() {
        let entry = |name: &[u8]| DirEntry {
            name: name.to_vec(),
            cid: Cid::of(Codec::Raw, b""),
            tsize: 0,
        };
        // Built through PbNode directly to bypass the encoder's debug checks.
        let dir = |names: &[&[u8]]| {
            PbNode {
                links: names
                    .iter()
                    .map(|n| {
                        let e = entry(n);
                        PbLink {
                            cid: e.cid,
                            name: Some(e.name),
                            tsize: Some(0),
                        }
                    })
                    .collect(),
                data: Some(vec![0x08, 0x01]),
            }
            .encode()
        };
        for (names, why) in [
            (&[b"b".as_slice(), b"a"][..], "not sorted"),
            (&[b"a".as_slice(), b"a"][..], "not sorted"),
            (&[b"..".as_slice()][..], "'.' and '..'"),
            (&[b"a/b".as_slice()][..], "contains '/'"),
            (&[b"a\0".as_slice()][..], "contains NUL"),
            (&[b"".as_slice()][..], "empty"),
        ] {
            let err = Node::decode(&dir(names)).expect_err(why).to_string();
            assert!(err.contains(why), "{err}");
        }
        // A file whose parts do not add up.
        let mut data = vec![0x08, 0x02, 0x18, 0x05];
        data.extend_from_slice(&[0x20, 0x03]);
        let bad = PbNode {
            links: vec![PbLink {
                cid: Cid::of(Codec::Raw, b"abc"),
                name: Some(vec![]),
                tsize: Some(3),
            }],
            data: Some(data),
        }
        .encode();
        assert!(
            Node::decode(&bad)
                .expect_err("size")
                .to_string()
                .contains("5 bytes")
        );
        // HAMT shards are refused by name.
        let hamt = PbNode {
            links: vec![],
            data: Some(vec![0x08, 0x05]),
        }
        .encode();
        assert!(matches!(
            Node::decode(&hamt),
            Err(NodeError::UnsupportedType(5))
        ));
        assert!(matches!(Node::decode(&[]), Err(NodeError::NoData)));
    }
}
