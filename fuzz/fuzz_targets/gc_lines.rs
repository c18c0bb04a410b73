#![no_main]
//! Fuzzes what the garbage collector reads from files and sockets other processes write: a
//! temp-pins file, the collector's trash journal, and a line on the GC socket.
//!
//! Properties: no panic; a temp-pins text that parses lists only CIDs that print back to a
//! line of it; every CID of the journal is one of its lines; a GC socket root is a store path
//! whose name is in the line.
use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use pkgchain_blockstore::{parse_trash_journal, pins::parse_pins};

fuzz_target!(|data: &[u8]| {
    let lines: HashSet<&[u8]> = data.split(|&b| b == b'\n').collect();
    let mut pins = HashSet::new();
    if parse_pins(data, &mut pins).is_ok() {
        for cid in &pins {
            assert!(lines.contains(cid.to_string().as_bytes()), "a pin not in the text");
        }
    }
    for cid in parse_trash_journal(data) {
        assert!(lines.contains(cid.to_string().as_bytes()), "a journal CID not in the text");
    }
    if let Some(name) = pkgchain_daemon::fuzzing::gc_socket_root(data) {
        let text = String::from_utf8_lossy(data);
        assert!(text.contains(&name), "a root not named by the line");
    }
});
