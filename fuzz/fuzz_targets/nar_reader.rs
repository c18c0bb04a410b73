#![no_main]
//! Fuzzes the NAR reader with small limits.
//!
//! Properties checked on every input:
//! * the reader never panics, and every error it returns (reading from a slice, so never an
//!   I/O error) names an offset within the input;
//! * the writer accepts every event the reader yields, as it yields them;
//! * when the whole NAR is accepted, the writer's output equals the consumed input prefix
//!   byte for byte, and nothing past that prefix was consumed.
//!
//! Inputs of odd length read file contents with `read_file_contents` (as the ingest does),
//! in pieces of a size taken from the input's length, instead of as `FileChunk` events.
use libfuzzer_sys::fuzz_target;
use pkgchain_store_model::nar::{NarError, NarEvent, NarLimits, NarReader, NarWriter};

/// Reads the current file's contents into the writer with `read_file_contents`.
fn contents_directly(
    reader: &mut NarReader<&[u8]>,
    writer: &mut NarWriter<Vec<u8>>,
    piece: usize,
) -> Result<(), NarError> {
    while let Some(remaining) = reader.file_remaining().filter(|r| *r > 0) {
        let mut buf = vec![0u8; (remaining as usize).min(piece)];
        reader.read_file_contents(&mut buf)?;
        if let Err(e) = writer.write_event(&NarEvent::FileChunk(&buf)) {
            panic!("writer refused contents read directly: {e}");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let limits = NarLimits {
        max_name_len: 64,
        max_depth: 16,
        max_nodes: 1000,
        max_file_size: 1 << 16,
        max_symlink_target_len: 256,
    };
    let direct = data.len() % 2 == 1;
    let piece = 1 + data.len() % 97;
    let mut reader = NarReader::with_limits(data, limits);
    let mut writer = NarWriter::new(Vec::new());
    loop {
        let step = match reader.next_event() {
            Ok(Some(event)) => {
                let is_file = matches!(event, NarEvent::File { .. });
                if let Err(e) = writer.write_event(&event) {
                    panic!("writer refused {event:?} from the reader: {e}");
                }
                if direct && is_file {
                    contents_directly(&mut reader, &mut writer, piece).map(Some)
                } else {
                    Ok(Some(()))
                }
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match step {
            Ok(Some(())) => {}
            Ok(None) => break,
            Err(e) => {
                let message = e.to_string();
                let Some(offset) = e.offset() else {
                    panic!("reader error without an offset: {message}");
                };
                assert!(offset <= data.len() as u64, "{message}");
                assert!(reader.bytes_read() <= data.len() as u64);
                return;
            }
        }
    }
    let consumed = reader.bytes_read();
    assert!(consumed <= data.len() as u64);
    let out = match writer.finish() {
        Ok(out) => out,
        Err(e) => panic!("writer incomplete after the reader finished: {e}"),
    };
    assert_eq!(out.len() as u64, consumed);
    assert!(data.starts_with(&out), "reader -> writer changed the bytes");
});
