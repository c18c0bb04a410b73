#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use pkgchain_store_model::nar::{NarEvent, NarReader, NarWriter};

use super::*;
use crate::wire::AsyncReader;

fn nar(events: &[NarEvent<'_>]) -> Vec<u8> {
    let mut w = NarWriter::new(Vec::new());
    for e in events {
        w.write_event(e).unwrap();
    }
    w.finish().unwrap()
}

fn file(contents: &[u8]) -> Vec<u8> {
    nar(&[
        NarEvent::File {
            name: None,
            executable: false,
            size: contents.len() as u64,
        },
        NarEvent::FileChunk(contents),
        NarEvent::FileEnd,
    ])
}

/// A tree with every kind of node, nested, with an empty directory and an executable.
fn tree() -> Vec<u8> {
    nar(&[
        NarEvent::DirectoryStart { name: None },
        NarEvent::DirectoryStart { name: Some(b"bin") },
        NarEvent::File {
            name: Some(b"hello"),
            executable: true,
            size: 3,
        },
        NarEvent::FileChunk(b"#!x"),
        NarEvent::FileEnd,
        NarEvent::DirectoryEnd,
        NarEvent::DirectoryStart {
            name: Some(b"empty"),
        },
        NarEvent::DirectoryEnd,
        NarEvent::File {
            name: Some(b"f"),
            executable: false,
            size: 0,
        },
        NarEvent::FileEnd,
        NarEvent::Symlink {
            name: Some(b"link"),
            target: b"bin/hello",
        },
        NarEvent::DirectoryEnd,
    ])
}

fn symlink() -> Vec<u8> {
    nar(&[NarEvent::Symlink {
        name: None,
        target: b"/etc/passwd",
    }])
}

fn big_file() -> Vec<u8> {
    let contents: Vec<u8> = (0..200_003u32).map(|i| (i % 251) as u8).collect();
    file(&contents)
}

fn copy(input: &[u8], limits: &NarCopyLimits) -> Result<(u64, Vec<u8>, u64), WireError> {
    let mut r = SyncReader::new(input);
    let mut out = Vec::new();
    let len = copy_nar_sync(&mut r, &mut out, limits)?;
    Ok((len, out, r.position()))
}

/// What the store model's reader says: the NAR's length, or that it is invalid.
fn reference(input: &[u8], limits: &NarLimits) -> Option<u64> {
    let mut reader = NarReader::with_limits(input, *limits);
    loop {
        match reader.next_event() {
            Ok(Some(_)) => {}
            Ok(None) => return Some(reader.bytes_read()),
            Err(_) => return None,
        }
    }
}

#[test]
fn copies_exactly_one_nar_and_stops() {
    for nar in [file(b"hello\n"), file(b""), tree(), symlink(), big_file()] {
        let input = [&nar[..], b"NEXT REQUEST"].concat();
        let (len, out, pos) = copy(&input, &NarCopyLimits::default()).unwrap();
        assert_eq!(len, nar.len() as u64);
        assert_eq!(out, nar);
        assert_eq!(pos, nar.len() as u64);
    }
}

#[tokio::test]
async fn async_reader_in_small_pieces() {
    let nar = tree();
    {
        let (mut client, server) = tokio::io::duplex(5);
        let data = [&nar[..], b"after"].concat();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&data).await.unwrap();
        });
        let mut r = AsyncReader::new(server);
        let mut out = Vec::new();
        let len = copy_nar(&mut r, &mut out, &NarCopyLimits::default())
            .await
            .unwrap();
        assert_eq!(len, nar.len() as u64);
        assert_eq!(out, nar);
        let mut rest = [0u8; 5];
        r.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"after");
        writer.await.unwrap();
    }
}

#[test]
fn nix_invalid_nars_are_refused_like_the_reader_does() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/nix-2.35.2/libutil-tests/data/nars");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert_eq!(reference(&bytes, &NarLimits::default()), None);
        assert!(copy(&bytes, &NarCopyLimits::default()).is_err());
        seen += 1;
    }
    assert_eq!(seen, 8);
}

#[test]
fn limits_are_enforced_and_named() {
    let small = |f: &dyn Fn(&mut NarCopyLimits)| {
        let mut l = NarCopyLimits::default();
        f(&mut l);
        l
    };
    let e = copy(&tree(), &small(&|l| l.max_total_len = 100)).unwrap_err();
    assert!(e.to_string().contains("exceeds limit 100"), "{e}");
    let e = copy(&tree(), &small(&|l| l.nar.max_depth = 1)).unwrap_err();
    assert!(e.to_string().starts_with("NAR entry (at byte "), "{e}");
    assert!(e.to_string().contains("nested deeper than 1"), "{e}");
    let e = copy(&tree(), &small(&|l| l.nar.max_name_len = 3)).unwrap_err();
    assert!(e.to_string().starts_with("NAR entry name (at byte "), "{e}");
    let e = copy(&tree(), &small(&|l| l.nar.max_nodes = 3)).unwrap_err();
    assert!(e.to_string().contains("more than 3 nodes"), "{e}");
    let e = copy(&big_file(), &small(&|l| l.nar.max_file_size = 1000)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "NAR file size (at byte 88): length 200003 exceeds limit 1000"
    );
    let e = copy(&symlink(), &small(&|l| l.nar.max_symlink_target_len = 4)).unwrap_err();
    assert!(
        e.to_string().starts_with("NAR symlink target (at byte "),
        "{e}"
    );
    // A huge announced size with no data: end of input, nothing allocated for it.
    let mut w = crate::wire::WireWriter::new();
    for t in ["nix-archive-1", "(", "type", "regular", "contents"] {
        w.put_str(t);
    }
    w.put_u64(1 << 39);
    let e = copy(w.as_slice(), &NarCopyLimits::default()).unwrap_err();
    assert!(e.is_eof(), "{e}");
    let e = copy(b"", &NarCopyLimits::default()).unwrap_err();
    assert!(e.is_eof(), "{e}");
    let mut w = crate::wire::WireWriter::new();
    w.put_str("nix-archive-2");
    let e = copy(w.as_slice(), &NarCopyLimits::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "NAR magic (at byte 0): input doesn't look like a Nix archive"
    );
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutated NARs: the copier accepts exactly what the store model's reader accepts, and stops
/// at the same byte.
#[test]
fn agrees_with_the_store_model_reader() {
    let limits = NarCopyLimits {
        nar: NarLimits {
            max_name_len: 16,
            max_depth: 3,
            max_nodes: 20,
            max_file_size: 1 << 12,
            max_symlink_target_len: 32,
        },
        max_total_len: 1 << 20,
    };
    let bases = [file(b"hello\n"), tree(), symlink(), file(&[7u8; 100])];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let mut input = bases[rng.below(bases.len())].clone();
        for _ in 0..=rng.below(3) {
            if input.is_empty() {
                break;
            }
            let i = rng.below(input.len());
            match rng.below(6) {
                0 => input[i] = rng.next() as u8,
                1 => input[i] ^= 1 << rng.below(8),
                2 => input.truncate(i),
                3 => input.insert(i, rng.next() as u8),
                // Copy an aligned 8-byte word elsewhere: keeps most of the structure.
                4 if input.len() >= 16 => {
                    let from = rng.below(input.len() / 8 - 1) * 8;
                    let to = rng.below(input.len() / 8 - 1) * 8;
                    let word: Vec<u8> = input[from..from + 8].to_vec();
                    input[to..to + 8].copy_from_slice(&word);
                }
                _ => {
                    let from = rng.below(input.len() / 8 + 1) * 8;
                    let word = (rng.below(40) as u64).to_le_bytes();
                    if from + 8 <= input.len() {
                        input[from..from + 8].copy_from_slice(&word);
                    }
                }
            }
        }
        let expected = reference(&input, &limits.nar);
        let got = copy(&input, &limits);
        match (expected, got) {
            (Some(len), Ok((copied, out, pos))) => {
                assert_eq!(copied, len);
                assert_eq!(pos, len);
                assert_eq!(out[..], input[..out.len()]);
                accepted += 1;
            }
            (None, Err(_)) => refused += 1,
            (expected, got) => panic!("{input:?}: reader {expected:?}, copier {got:?}"),
        }
    }
    assert!(accepted > 100 && refused > 100, "{accepted} {refused}");
}
