//! A strict codec for dag-pb, the protobuf envelope of UnixFS nodes.
//!
//! ```text
//! message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
//! message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
//! ```
//!
//! The DAG-PB specification fixes one canonical byte form (links before data, fields in
//! number order inside a link, minimal varints, no unknown fields), so this is written by hand
//! instead of through a general protobuf library, which would accept forms that give one node
//! two CIDs. Decoding is a single loop over the input with every length checked against what
//! remains; nothing recurses.

use thiserror::Error;

use crate::cid::{Cid, CidError};

/// Why bytes are not a canonical dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PbError {
    /// Input ended inside a field.
    #[error("dag-pb: truncated {0}")]
    Truncated(&'static str),
    /// A varint longer than 10 bytes, overflowing, or not minimally encoded.
    #[error("dag-pb: invalid varint in {0}")]
    Varint(&'static str),
    /// A field number or wire type the format does not have, or fields out of order.
    #[error("dag-pb: unexpected field {field} (wire type {wire_type}) in {context}")]
    UnexpectedField {
        /// Field number.
        field: u64,
        /// Protobuf wire type.
        wire_type: u64,
        /// Where.
        context: &'static str,
    },
    /// A link without the mandatory hash.
    #[error("dag-pb: link {0} has no hash")]
    LinkWithoutHash(usize),
    /// The link's hash is not a CID we handle.
    #[error("dag-pb: link {index}: {source}")]
    LinkCid {
        /// Link index.
        index: usize,
        /// Why.
        source: CidError,
    },
}

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The linked block.
    pub cid: Cid,
    /// The link name (a directory entry name; empty for file chunks). `None` when absent.
    pub name: Option<Vec<u8>>,
    /// Cumulative size in bytes of the linked DAG's blocks. `None` when absent.
    pub tsize: Option<u64>,
}

/// A decoded dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    /// Links in stored order.
    pub links: Vec<PbLink>,
    /// The Data field (a UnixFS message), `None` when absent.
    pub data: Option<Vec<u8>>,
}

/// Appends a protobuf varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes a varint of `v` takes.
#[cfg(test)]
pub(crate) fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

/// A cursor over untrusted bytes.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64, PbError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(PbError::Truncated(what))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(PbError::Varint(what));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                // Minimal encoding: a multi-byte varint must not end in a zero byte.
                if i > 0 && b == 0 {
                    return Err(PbError::Varint(what));
                }
                return Ok(v);
            }
        }
        Err(PbError::Varint(what))
    }

    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], PbError> {
        let len = self.varint(what)?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if len > remaining {
            return Err(PbError::Truncated(what));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// Reads a tag; returns (field number, wire type).
    pub(crate) fn tag(&mut self, what: &'static str) -> Result<(u64, u64), PbError> {
        let t = self.varint(what)?;
        Ok((t >> 3, t & 7))
    }
}

impl PbNode {
    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.data.as_ref().map_or(0, |d| d.len() + 8) + self.links.len() * 64,
        );
        let mut link_buf = Vec::with_capacity(96);
        for link in &self.links {
            link_buf.clear();
            let cid = link.cid.to_bytes();
            link_buf.push(0x0a);
            put_varint(&mut link_buf, cid.len() as u64);
            link_buf.extend_from_slice(&cid);
            if let Some(name) = &link.name {
                link_buf.push(0x12);
                put_varint(&mut link_buf, name.len() as u64);
                link_buf.extend_from_slice(name);
            }
            if let Some(tsize) = link.tsize {
                link_buf.push(0x18);
                put_varint(&mut link_buf, tsize);
            }
            out.push(0x12);
            put_varint(&mut out, link_buf.len() as u64);
            out.extend_from_slice(&link_buf);
        }
        if let Some(data) = &self.data {
            out.push(0x0a);
            put_varint(&mut out, data.len() as u64);
            out.extend_from_slice(data);
        }
        out
    }

    /// Strict decoding.
    pub fn decode(bytes: &[u8]) -> Result<PbNode, PbError> {
        let mut cur = Cursor::new(bytes);
        let mut node = PbNode::default();
        while !cur.is_empty() {
            let (field, wire_type) = cur.tag("node tag")?;
            match (field, wire_type) {
                (2, 2) if node.data.is_none() => {
                    let index = node.links.len();
                    let body = cur.bytes("link")?;
                    node.links.push(decode_link(body, index)?);
                }
                (1, 2) if node.data.is_none() => {
                    node.data = Some(cur.bytes("data")?.to_vec());
                }
                _ => {
                    return Err(PbError::UnexpectedField {
                        field,
                        wire_type,
                        context: "node",
                    });
                }
            }
        }
        Ok(node)
    }
}

fn decode_link(body: &[u8], index: usize) -> Result<PbLink, PbError> {
    let mut cur = Cursor::new(body);
    let mut cid = None;
    let mut name = None;
    let mut tsize = None;
    let mut last_field = 0;
    while !cur.is_empty() {
        let (field, wire_type) = cur.tag("link tag")?;
        if field <= last_field {
            return Err(PbError::UnexpectedField {
                field,
                wire_type,
                context: "link (fields out of order or repeated)",
            });
        }
        last_field = field;
        match (field, wire_type) {
            (1, 2) => {
                let raw = cur.bytes("link hash")?;
                cid = Some(
                    Cid::from_bytes(raw).map_err(|source| PbError::LinkCid { index, source })?,
                );
            }
            (2, 2) => name = Some(cur.bytes("link name")?.to_vec()),
            (3, 0) => tsize = Some(cur.varint("link tsize")?),
            _ => {
                return Err(PbError::UnexpectedField {
                    field,
                    wire_type,
                    context: "link",
                });
            }
        }
    }
    Ok(PbLink {
        cid: cid.ok_or(PbError::LinkWithoutHash(index))?,
        name,
        tsize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::Codec;

    #[test]
    fn round_trip() {
        let node = PbNode {
            links: vec![
                PbLink {
                    cid: Cid::of(Codec::Raw, b"a"),
                    name: Some(b"a".to_vec()),
                    tsize: Some(1),
                },
                PbLink {
                    cid: Cid::of(Codec::DagPb, b"b"),
                    name: None,
                    tsize: Some(300),
                },
            ],
            data: Some(vec![8, 1]),
        };
        let bytes = node.encode();
        assert_eq!(PbNode::decode(&bytes).expect("decode"), node);
        assert_eq!(PbNode::decode(&[]).expect("empty node"), PbNode::default());
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(Cursor::new(&b).varint("t").expect("varint"), v);
        }
        // Non-minimal, overlong and overflowing varints are rejected.
        assert!(Cursor::new(&[0x80, 0x00]).varint("t").is_err());
        assert!(Cursor::new(&[0xff; 11]).varint("t").is_err());
        assert!(
            Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint("t")
                .is_err()
        );
        assert!(Cursor::new(&[0x80]).varint("t").is_err());
    }

    #[test]
    fn rejects_non_canonical() {
        let link = PbLink {
            cid: Cid::of(Codec::Raw, b"a"),
            name: Some(vec![]),
            tsize: Some(1),
        };
        let node = PbNode {
            links: vec![link],
            data: Some(vec![8, 2]),
        };
        let good = node.encode();
        // Data before links.
        let data_first: Vec<u8> = {
            let data_at = good.len() - 4;
            let mut v = good[data_at..].to_vec();
            v.extend_from_slice(&good[..data_at]);
            v
        };
        assert!(PbNode::decode(&data_first).is_err());
        // Unknown field.
        let mut unknown = good.clone();
        unknown.extend_from_slice(&[0x20, 0x01]);
        assert!(PbNode::decode(&unknown).is_err());
        // Truncated anywhere but at the boundary between the link and the data field.
        let boundary = good.len() - 4;
        for cut in (1..good.len()).filter(|&c| c != boundary) {
            assert!(PbNode::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        // Huge length.
        assert!(PbNode::decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
