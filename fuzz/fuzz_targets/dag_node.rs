#![no_main]
//! Fuzzes the block-format parsers: dag-pb/UnixFS node decoding, binary CIDs, and the DAG
//! walker over a block set built from the input.
//!
//! Properties: no panic; a decoded node re-encodes (in our canonical form) to bytes that
//! decode to the same node; the walker ends in an event stream or an error, never a hang.
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use pkgchain_dag::walk::{BlockGet, DagWalker};
use pkgchain_dag::{Cid, Codec, Node};

struct Blocks(HashMap<Cid, Vec<u8>>);

impl BlockGet for Blocks {
    type Error = String;
    fn get(&self, cid: &Cid) -> Result<Vec<u8>, String> {
        self.0.get(cid).cloned().ok_or_else(|| format!("missing {cid}"))
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Cid::from_bytes(data);
    if let Ok(node) = Node::decode(data) {
        let again = match &node {
            Node::Directory(entries) => Some(Node::encode_directory(entries)),
            Node::Symlink(target) => Some(Node::encode_symlink(target)),
            Node::File { inline, links, executable, .. } if inline.is_empty() => {
                Some(Node::encode_file(links, *executable))
            }
            Node::File { .. } => None,
        };
        if let Some(bytes) = again {
            let decoded = Node::decode(&bytes).expect("our own encoding decodes");
            assert_eq!(decoded, node, "re-encoding changed the node");
        }
    }
    // Split the input into blocks at 0xff 0xfe markers; the first is the root.
    let mut blocks = HashMap::new();
    let mut root = None;
    for piece in data.split(|&b| b == 0xfe) {
        let codec = if piece.first() == Some(&0xff) { Codec::Raw } else { Codec::DagPb };
        let cid = Cid::of(codec, piece);
        root.get_or_insert(cid);
        blocks.insert(cid, piece.to_vec());
    }
    let Some(root) = root else { return };
    let blocks = Blocks(blocks);
    let mut walker = DagWalker::new(&blocks, root, 64);
    for _ in 0..100_000 {
        match walker.next_event() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
