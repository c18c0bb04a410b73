//! Tests of the NAR reader and writer: Nix's golden vectors, hand-built archives, limits,
//! truncation, padding, trailing data, interop with `nix-store --dump`, and throughput.

#![allow(clippy::unwrap_used)]

use std::io::{self, Cursor, Read};
use std::path::Path;

use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// An encoder written independently of [`NarWriter`]: NAR strings appended one by one. It
/// records where padding bytes are, so tests can corrupt exactly those.
struct Enc {
    out: Vec<u8>,
    pads: Vec<usize>,
}

impl Enc {
    /// Starts with the magic.
    fn new() -> Enc {
        let mut e = Enc {
            out: Vec::new(),
            pads: Vec::new(),
        };
        e.s(NAR_MAGIC);
        e
    }

    fn s(&mut self, b: &[u8]) -> &mut Enc {
        self.out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.out.extend_from_slice(b);
        while !self.out.len().is_multiple_of(8) {
            self.pads.push(self.out.len());
            self.out.push(0);
        }
        self
    }

    fn tags(&mut self, tags: &[&str]) -> &mut Enc {
        for t in tags {
            self.s(t.as_bytes());
        }
        self
    }

    fn file(&mut self, executable: bool, contents: &[u8]) -> &mut Enc {
        self.tags(&["(", "type", "regular"]);
        if executable {
            self.tags(&["executable", ""]);
        }
        self.tags(&["contents"]).s(contents).tags(&[")"])
    }

    fn symlink(&mut self, target: &[u8]) -> &mut Enc {
        self.tags(&["(", "type", "symlink", "target"])
            .s(target)
            .tags(&[")"])
    }

    fn dir(&mut self) -> &mut Enc {
        self.tags(&["(", "type", "directory"])
    }

    fn entry(&mut self, name: &[u8]) -> &mut Enc {
        self.tags(&["entry", "(", "name"]).s(name).tags(&["node"])
    }

    /// Closes an entry or a directory.
    fn close(&mut self) -> &mut Enc {
        self.tags(&[")"])
    }

    fn bytes(&self) -> Vec<u8> {
        self.out.clone()
    }
}

/// An owned event; a file's chunks are gathered into `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    File {
        name: Option<Vec<u8>>,
        executable: bool,
        data: Vec<u8>,
    },
    Symlink {
        name: Option<Vec<u8>>,
        target: Vec<u8>,
    },
    Dir {
        name: Option<Vec<u8>>,
    },
    DirEnd,
}

fn file(name: &str, executable: bool, data: &[u8]) -> Ev {
    Ev::File {
        name: Some(name.as_bytes().to_vec()),
        executable,
        data: data.to_vec(),
    }
}

fn symlink(name: &str, target: &str) -> Ev {
    Ev::Symlink {
        name: Some(name.as_bytes().to_vec()),
        target: target.as_bytes().to_vec(),
    }
}

fn dir(name: &str) -> Ev {
    Ev::Dir {
        name: Some(name.as_bytes().to_vec()),
    }
}

/// A file being read: name, executable, size, data so far.
type OpenFile = (Option<Vec<u8>>, bool, u64, Vec<u8>);

/// Reads a whole NAR from `input` into owned events, checking the chunk protocol.
fn read_events<R: Read>(reader: &mut NarReader<R>) -> Result<Vec<Ev>, NarError> {
    let mut events = Vec::new();
    let mut open: Option<OpenFile> = None;
    while let Some(event) = reader.next_event()? {
        match event {
            NarEvent::File {
                name,
                executable,
                size,
            } => {
                assert!(open.is_none(), "File inside a file");
                open = Some((name.map(<[u8]>::to_vec), executable, size, Vec::new()));
            }
            NarEvent::FileChunk(chunk) => {
                let (_, _, size, data) = open.as_mut().expect("chunk outside a file");
                assert!(!chunk.is_empty(), "empty chunk");
                assert!(chunk.len() <= CHUNK_SIZE);
                data.extend_from_slice(chunk);
                assert!(data.len() as u64 <= *size, "chunks exceed size");
            }
            NarEvent::FileEnd => {
                let (name, executable, size, data) = open.take().expect("FileEnd outside a file");
                assert_eq!(data.len() as u64, size, "chunks do not add up to size");
                events.push(Ev::File {
                    name,
                    executable,
                    data,
                });
            }
            NarEvent::Symlink { name, target } => events.push(Ev::Symlink {
                name: name.map(<[u8]>::to_vec),
                target: target.to_vec(),
            }),
            NarEvent::DirectoryStart { name } => events.push(Ev::Dir {
                name: name.map(<[u8]>::to_vec),
            }),
            NarEvent::DirectoryEnd => events.push(Ev::DirEnd),
        }
    }
    assert!(open.is_none(), "archive ended inside a file");
    Ok(events)
}

fn parse(bytes: &[u8]) -> Result<Vec<Ev>, NarError> {
    parse_with(bytes, NarLimits::default())
}

fn parse_with(bytes: &[u8], limits: NarLimits) -> Result<Vec<Ev>, NarError> {
    let mut reader = NarReader::with_limits(bytes, limits);
    let events = read_events(&mut reader)?;
    assert_eq!(
        reader.bytes_read(),
        bytes.len() as u64,
        "did not consume all"
    );
    Ok(events)
}

/// Writes owned events with [`NarWriter`], cutting file data into chunks of `chunk` bytes.
fn write_events(events: &[Ev], chunk: usize) -> Result<Vec<u8>, NarError> {
    let mut w = NarWriter::new(Vec::new());
    for ev in events {
        match ev {
            Ev::File {
                name,
                executable,
                data,
            } => {
                w.write_event(&NarEvent::File {
                    name: name.as_deref(),
                    executable: *executable,
                    size: data.len() as u64,
                })?;
                for c in data.chunks(chunk) {
                    w.write_event(&NarEvent::FileChunk(c))?;
                }
                w.write_event(&NarEvent::FileEnd)?;
            }
            Ev::Symlink { name, target } => w.write_event(&NarEvent::Symlink {
                name: name.as_deref(),
                target,
            })?,
            Ev::Dir { name } => w.write_event(&NarEvent::DirectoryStart {
                name: name.as_deref(),
            })?,
            Ev::DirEnd => w.write_event(&NarEvent::DirectoryEnd)?,
        }
    }
    w.finish()
}

/// Streams `input` through a reader straight into a writer; returns the output.
fn pipe<R: Read>(input: R, limits: NarLimits) -> Result<Vec<u8>, NarError> {
    let mut reader = NarReader::with_limits(input, limits);
    let mut writer = NarWriter::new(Vec::new());
    while let Some(event) = reader.next_event()? {
        writer.write_event(&event)?;
    }
    writer.finish()
}

/// Asserts that `bytes` parse, that the events are `expected`, and that both the streaming
/// pipe and the owned events written back reproduce `bytes` exactly.
fn assert_round_trip(bytes: &[u8], expected: &[Ev]) {
    let events = parse(bytes).unwrap();
    assert_eq!(events, expected);
    assert_eq!(pipe(bytes, NarLimits::default()).unwrap(), bytes);
    for chunk in [1, 3, 8, 4096] {
        assert_eq!(write_events(&events, chunk).unwrap(), bytes);
    }
}

/// A reader that hands out at most one byte per call, to exercise partial reads.
struct OneByte<'a>(&'a [u8]);

impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(slot)) => {
                *slot = b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

fn err_of(bytes: &[u8]) -> NarError {
    err_with(bytes, NarLimits::default())
}

fn err_with(bytes: &[u8], limits: NarLimits) -> NarError {
    match parse_with(bytes, limits) {
        Ok(events) => panic!("accepted: {events:?}"),
        Err(e) => e,
    }
}

/// An archive with every node type and padding case.
fn rich_nar() -> (Vec<u8>, Vec<Ev>) {
    let mut e = Enc::new();
    e.dir();
    e.entry(b"a-empty-dir").dir().close().close();
    e.entry(b"b-empty-file").file(false, b"").close();
    e.entry(b"c-exec")
        .file(true, b"#!/bin/sh\necho hi\n")
        .close();
    e.entry(b"d-link").symlink(b"../some/target").close();
    e.entry(b"e-nested").dir();
    e.entry(b"inner").dir();
    e.entry(b"x").file(false, b"1234567").close();
    e.close().close();
    e.entry(b"y").file(false, b"12345678").close();
    e.close().close();
    e.entry(b"f").file(false, b"123456789").close();
    e.close();
    let events = vec![
        Ev::Dir { name: None },
        dir("a-empty-dir"),
        Ev::DirEnd,
        file("b-empty-file", false, b""),
        file("c-exec", true, b"#!/bin/sh\necho hi\n"),
        symlink("d-link", "../some/target"),
        dir("e-nested"),
        dir("inner"),
        file("x", false, b"1234567"),
        Ev::DirEnd,
        file("y", false, b"12345678"),
        Ev::DirEnd,
        file("f", false, b"123456789"),
        Ev::DirEnd,
    ];
    (e.bytes(), events)
}

// ---------------------------------------------------------------------------------------------
// Nix's golden vectors

fn golden_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/nix-2.35.2/libutil-tests/data/nars")
}

/// Each of Nix's invalid NARs (`src/libutil-tests/archive.cc`, `InvalidNarTest`) is rejected
/// with an error containing the phrase Nix's own test expects, at the offset of the culprit.
#[test]
fn golden_invalid_nars_are_rejected_like_nix() {
    let dir = golden_dir();
    if !dir.is_dir() {
        println!("skipped: {} not found", dir.display());
        return;
    }
    let cases: &[(&str, &str, u64)] = &[
        (
            "invalid-tag-instead-of-contents",
            "expected tag 'contents', got 'AAAAAAAA'",
            0x48,
        ),
        ("nul-character", "NAR contains invalid file name 'f", 0x80),
        ("dot", "NAR contains invalid file name '.'", 0x80),
        ("dotdot", "NAR contains invalid file name '..'", 0x80),
        ("slash", "NAR contains invalid file name 'x/y'", 0x80),
        ("empty", "NAR contains invalid file name ''", 0x80),
        (
            "executable-after-contents",
            "expected tag ')', got 'executable'",
            0xf0,
        ),
        ("name-after-node", "expected tag 'name', got 'node'", 0x70),
    ];
    for &(name, message, offset) in cases {
        let bytes = std::fs::read(dir.join(format!("{name}.nar"))).unwrap();
        let err = err_of(&bytes);
        let text = err.to_string();
        assert!(
            text.contains(message),
            "{name}: error '{text}' lacks '{message}'"
        );
        assert_eq!(err.offset(), Some(offset), "{name}: {text}");
        assert!(text.contains(&format!("(at byte {offset})")), "{text}");
        // Partial reads find the same fault at the same place.
        let mut r = NarReader::new(OneByte(&bytes));
        let err = read_events(&mut r).unwrap_err();
        assert!(err.to_string().contains(message), "{err}");
        assert_eq!(err.offset(), Some(offset));
    }
    let nul = err_of(&std::fs::read(dir.join("nul-character.nar")).unwrap()).to_string();
    assert!(nul.contains("'f\\0o'"), "NUL is escaped: {nul}");
}

/// The golden vectors whose only fault is the entry name become valid when the name is
/// replaced by a legal one of the same length, and then round-trip byte for byte: the
/// rejection above is due to the name alone.
#[test]
fn golden_vectors_with_repaired_name_round_trip() {
    let dir = golden_dir();
    if !dir.is_dir() {
        println!("skipped: {} not found", dir.display());
        return;
    }
    for (name, fixed) in [
        ("dot", b"a" as &[u8]),
        ("dotdot", b"ab"),
        ("slash", b"x-y"),
        ("nul-character", b"f-o"),
    ] {
        let mut bytes = std::fs::read(dir.join(format!("{name}.nar"))).unwrap();
        bytes[0x88..0x88 + fixed.len()].copy_from_slice(fixed);
        assert_round_trip(
            &bytes,
            &[
                Ev::Dir { name: None },
                Ev::File {
                    name: Some(fixed.to_vec()),
                    executable: false,
                    data: b"hello\n".to_vec(),
                },
                Ev::DirEnd,
            ],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-built archives

#[test]
fn root_regular_file_round_trips() {
    assert_round_trip(
        &Enc::new().file(false, b"hello\n").bytes(),
        &[Ev::File {
            name: None,
            executable: false,
            data: b"hello\n".to_vec(),
        }],
    );
}

#[test]
fn root_executable_file_round_trips() {
    let bytes = Enc::new().file(true, b"#!/bin/sh\n").bytes();
    assert_round_trip(
        &bytes,
        &[Ev::File {
            name: None,
            executable: true,
            data: b"#!/bin/sh\n".to_vec(),
        }],
    );
}

#[test]
fn root_empty_file_round_trips() {
    let bytes = Enc::new().file(false, b"").bytes();
    assert_round_trip(
        &bytes,
        &[Ev::File {
            name: None,
            executable: false,
            data: vec![],
        }],
    );
    // An empty file has no chunks at all.
    let mut r = NarReader::new(&bytes[..]);
    assert!(matches!(
        r.next_event().unwrap(),
        Some(NarEvent::File { size: 0, .. })
    ));
    assert_eq!(r.next_event().unwrap(), Some(NarEvent::FileEnd));
    assert_eq!(r.next_event().unwrap(), None);
    assert!(r.is_done());
}

#[test]
fn root_symlink_round_trips() {
    assert_round_trip(
        &Enc::new().symlink(b"/nix/store/foo").bytes(),
        &[Ev::Symlink {
            name: None,
            target: b"/nix/store/foo".to_vec(),
        }],
    );
}

#[test]
fn root_empty_directory_round_trips() {
    assert_round_trip(
        &Enc::new().dir().close().bytes(),
        &[Ev::Dir { name: None }, Ev::DirEnd],
    );
}

#[test]
fn every_padding_length_round_trips() {
    for len in 0..=17usize {
        let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
        let name = vec![b'n'; len.max(1)];
        let target = vec![b't'; len.max(1)];
        let mut e = Enc::new();
        e.dir();
        e.entry(&name).file(len % 2 == 0, &data).close();
        e.entry(&[&name[..], b"z"].concat())
            .symlink(&target)
            .close();
        e.close();
        assert_round_trip(
            &e.bytes(),
            &[
                Ev::Dir { name: None },
                Ev::File {
                    name: Some(name.clone()),
                    executable: len % 2 == 0,
                    data,
                },
                Ev::Symlink {
                    name: Some([&name[..], b"z"].concat()),
                    target,
                },
                Ev::DirEnd,
            ],
        );
    }
}

#[test]
fn nested_tree_with_every_node_type_round_trips() {
    let (bytes, events) = rich_nar();
    assert_round_trip(&bytes, &events);
    // Partial reads (one byte per `read`) give the same events and bytes.
    let mut r = NarReader::new(OneByte(&bytes));
    assert_eq!(read_events(&mut r).unwrap(), events);
    assert_eq!(pipe(OneByte(&bytes), NarLimits::default()).unwrap(), bytes);
}

#[test]
fn large_file_is_delivered_in_buffer_sized_chunks() {
    let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 12345))
        .map(|i| (i % 251) as u8)
        .collect();
    let bytes = Enc::new().file(false, &data).bytes();
    let mut r = NarReader::new(&bytes[..]);
    r.next_event().unwrap();
    let mut sizes = Vec::new();
    while let Some(NarEvent::FileChunk(c)) = r.next_event().unwrap() {
        sizes.push(c.len());
    }
    assert_eq!(sizes, [CHUNK_SIZE, CHUNK_SIZE, 12345]);
    assert_round_trip(
        &bytes,
        &[Ev::File {
            name: None,
            executable: false,
            data,
        }],
    );
}

#[test]
fn names_sort_bytewise_not_by_locale_or_case() {
    let names: [&[u8]; 6] = [b"-", b"B", b"Z", b"a", b"b", b"\xc3\xa9\xff"];
    let mut e = Enc::new();
    e.dir();
    let mut events = vec![Ev::Dir { name: None }];
    for n in names {
        e.entry(n).file(false, n).close();
        events.push(Ev::File {
            name: Some(n.to_vec()),
            executable: false,
            data: n.to_vec(),
        });
    }
    e.close();
    events.push(Ev::DirEnd);
    assert_round_trip(&e.bytes(), &events);
}

// ---------------------------------------------------------------------------------------------
// Invalid archives

#[test]
fn unsorted_and_duplicate_entries_are_rejected() {
    let mut e = Enc::new();
    e.dir().entry(b"c").file(false, b"").close();
    let at = e.out.len() as u64 + 3 * 16;
    e.entry(b"b").file(false, b"").close().close();
    let err = err_of(&e.bytes());
    assert!(matches!(err, NarError::NotSorted { offset, .. } if offset == at));
    assert!(
        err.to_string()
            .contains("NAR directory entries not sorted: 'b' after 'c'"),
        "{err}"
    );

    let mut e = Enc::new();
    e.dir().entry(b"a").file(false, b"").close();
    e.entry(b"a").symlink(b"x").close().close();
    let err = err_of(&e.bytes());
    assert!(matches!(err, NarError::DuplicateName { .. }), "{err}");
    assert!(err.to_string().contains("duplicate entry 'a'"), "{err}");

    // Sorting is per directory: a name smaller than the parent's last entry is fine inside.
    let mut e = Enc::new();
    e.dir().entry(b"m").dir();
    e.entry(b"a").file(false, b"").close().close().close();
    e.entry(b"z").file(false, b"").close().close();
    parse(&e.bytes()).unwrap();
}

#[test]
fn invalid_names_are_rejected() {
    for (name, reason) in [
        (b"" as &[u8], "empty"),
        (b".", "'.' is not allowed"),
        (b"..", "'..' is not allowed"),
        (b"a/b", "contains '/'"),
        (b"/", "contains '/'"),
        (b"a\0", "NUL"),
        (b"foo~nix~case~hack~1", "case-hack suffix"),
    ] {
        let mut e = Enc::new();
        e.dir().entry(name).file(false, b"").close().close();
        let err = err_of(&e.bytes());
        assert!(matches!(err, NarError::InvalidName { .. }), "{err}");
        assert!(err.to_string().contains(reason), "{err}");
        // The writer refuses them too.
        let mut w = NarWriter::new(Vec::new());
        w.write_event(&NarEvent::DirectoryStart { name: None })
            .unwrap();
        let werr = w
            .write_event(&NarEvent::DirectoryStart { name: Some(name) })
            .unwrap_err();
        assert!(werr.to_string().contains(reason), "{werr}");
    }
    // Dots elsewhere and odd bytes are fine.
    for name in [
        b"..." as &[u8],
        b".a",
        b"a.",
        b"\xff",
        b"\n",
        b"~nix~case~hac",
        b"Foo~NIX~CASE~HACK~1",
    ] {
        let mut e = Enc::new();
        e.dir().entry(name).file(false, b"").close().close();
        parse(&e.bytes()).unwrap();
    }
}

#[test]
fn invalid_symlink_targets_are_rejected() {
    for (target, reason) in [(b"" as &[u8], "empty"), (b"a\0b", "NUL")] {
        let err = err_of(&Enc::new().symlink(target).bytes());
        assert!(
            matches!(err, NarError::InvalidSymlinkTarget { offset: 88, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(reason), "{err}");
        let werr = NarWriter::new(Vec::new())
            .write_event(&NarEvent::Symlink { name: None, target })
            .unwrap_err();
        assert!(werr.to_string().contains(reason), "{werr}");
    }
}

#[test]
fn grammar_violations_are_rejected_with_what_was_expected() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            vec![],
            "unexpected end of NAR while reading magic (at byte 0)",
        ),
        (
            {
                let mut e = Enc {
                    out: vec![],
                    pads: vec![],
                };
                e.s(b"nix-archive-2");
                e.bytes()
            },
            "doesn't look like a Nix archive",
        ),
        (
            {
                let mut e = Enc {
                    out: vec![],
                    pads: vec![],
                };
                e.s(b"nix-archive-1-longer");
                e.bytes()
            },
            "doesn't look like a Nix archive",
        ),
        (
            Enc::new().tags(&["type"]).bytes(),
            "expected tag '(', got 'type' (at byte 24)",
        ),
        (
            Enc::new().tags(&["(", "kind"]).bytes(),
            "expected tag 'type', got 'kind'",
        ),
        (
            Enc::new().tags(&["(", "type", "fifo"]).bytes(),
            "unknown file type 'fifo'",
        ),
        (
            Enc::new()
                .tags(&["(", "type", "regular", "executable", "x"])
                .bytes(),
            "executable marker has non-empty value",
        ),
        (
            Enc::new()
                .tags(&["(", "type", "regular", "executable", "", "executable"])
                .bytes(),
            "expected tag 'contents', got 'executable'",
        ),
        (
            Enc::new()
                .tags(&["(", "type", "symlink", "contents"])
                .bytes(),
            "expected tag 'target', got 'contents'",
        ),
        (
            Enc::new().dir().tags(&["name"]).bytes(),
            "expected tag 'entry' or ')', got 'name'",
        ),
        (
            Enc::new().dir().tags(&["entry", "name"]).bytes(),
            "expected tag '(', got 'name'",
        ),
        (
            Enc::new().dir().entry(b"a").tags(&["(", "name"]).bytes(),
            "expected tag 'type', got 'name'",
        ),
        (
            Enc::new()
                .dir()
                .entry(b"a")
                .file(false, b"")
                .tags(&["entry"])
                .bytes(),
            "expected tag ')', got 'entry'",
        ),
    ];
    for (bytes, message) in cases {
        let err = err_of(&bytes);
        assert!(
            err.to_string().contains(message),
            "'{err}' lacks '{message}'"
        );
        assert!(err.offset().is_some());
    }
}

/// Lengths in keyword positions are bounded before anything is read or allocated, so a
/// length of 2^64-1 is refused at once.
#[test]
fn huge_lengths_are_refused_before_reading() {
    let mut bytes = Enc::new().bytes();
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    let err = err_of(&bytes);
    assert!(
        matches!(
            err,
            NarError::TagTooLong {
                len: u64::MAX,
                offset: 24,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("expected tag '('"), "{err}");

    let mut bytes = Enc::new().bytes();
    bytes.extend_from_slice(&33u64.to_le_bytes());
    assert!(matches!(
        err_of(&bytes),
        NarError::TagTooLong { len: 33, .. }
    ));
    // 32 is still read (and then found to be the wrong tag).
    let mut bytes = Enc::new().bytes();
    bytes.extend_from_slice(&32u64.to_le_bytes());
    bytes.extend_from_slice(&[b'x'; 32]);
    assert!(matches!(err_of(&bytes), NarError::UnexpectedTag { .. }));

    let mut bytes = Enc::new().dir().tags(&["entry", "(", "name"]).bytes();
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(err_of(&bytes), NarError::NameTooLong { .. }));

    let mut bytes = Enc::new().tags(&["(", "type", "symlink", "target"]).bytes();
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        err_of(&bytes),
        NarError::SymlinkTargetTooLong { .. }
    ));

    let mut bytes = Enc::new()
        .tags(&["(", "type", "regular", "contents"])
        .bytes();
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(err_of(&bytes), NarError::FileTooLarge { .. }));

    let mut bytes = Enc::new()
        .tags(&["(", "type", "regular", "executable"])
        .bytes();
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        err_of(&bytes),
        NarError::ExecutableMarkerNotEmpty { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn name_length_limit() {
    let build = |len: usize| {
        let mut e = Enc::new();
        e.dir()
            .entry(&vec![b'a'; len])
            .file(false, b"")
            .close()
            .close();
        e.bytes()
    };
    parse(&build(255)).unwrap();
    let err = err_of(&build(256));
    assert!(
        matches!(
            err,
            NarError::NameTooLong {
                len: 256,
                max: 255,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("exceeds the limit of 255"),
        "{err}"
    );
    let limits = NarLimits {
        max_name_len: 3,
        ..NarLimits::default()
    };
    parse_with(&build(3), limits).unwrap();
    assert!(matches!(
        err_with(&build(4), limits),
        NarError::NameTooLong { len: 4, max: 3, .. }
    ));
}

#[test]
fn symlink_target_length_limit() {
    let build = |len: usize| Enc::new().symlink(&vec![b'x'; len]).bytes();
    parse(&build(4095)).unwrap();
    let err = err_of(&build(4096));
    assert!(
        matches!(
            err,
            NarError::SymlinkTargetTooLong {
                len: 4096,
                max: 4095,
                offset: 88
            }
        ),
        "{err}"
    );
    let limits = NarLimits {
        max_symlink_target_len: 10,
        ..NarLimits::default()
    };
    parse_with(&build(10), limits).unwrap();
    assert!(matches!(
        err_with(&build(11), limits),
        NarError::SymlinkTargetTooLong { .. }
    ));
}

#[test]
fn file_size_limit() {
    let limits = NarLimits {
        max_file_size: 10,
        ..NarLimits::default()
    };
    parse_with(&Enc::new().file(false, &[7; 10]).bytes(), limits).unwrap();
    let err = err_with(&Enc::new().file(false, &[7; 11]).bytes(), limits);
    assert!(
        matches!(
            err,
            NarError::FileTooLarge {
                size: 11,
                max: 10,
                offset: 88
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("11 bytes exceeds the limit of 10"));
}

/// `depth` nested directories named `d`, the innermost holding a file.
fn nested(depth: usize) -> Vec<u8> {
    let mut e = Enc::new();
    e.dir();
    for _ in 0..depth {
        e.entry(b"d").dir();
    }
    e.entry(b"f").file(false, b"x").close();
    for _ in 0..depth {
        e.close().close();
    }
    e.close();
    e.bytes()
}

#[test]
fn depth_limit() {
    // The file sits at depth `depth + 1`.
    let limits = |max_depth| NarLimits {
        max_depth,
        ..NarLimits::default()
    };
    parse_with(&nested(4), limits(5)).unwrap();
    let err = err_with(&nested(5), limits(5));
    assert!(matches!(err, NarError::TooDeep { max: 5, .. }), "{err}");
    assert!(
        err.to_string()
            .contains("nesting exceeds maximum depth of 5"),
        "{err}"
    );
    // Depth 0: only the root, which may be an empty directory.
    parse_with(&Enc::new().dir().close().bytes(), limits(0)).unwrap();
    assert!(matches!(
        err_with(&nested(0), limits(0)),
        NarError::TooDeep { max: 0, .. }
    ));
    // The default admits 1024 levels.
    parse(&nested(1023)).unwrap();
    assert!(matches!(err_of(&nested(1024)), NarError::TooDeep { .. }));
}

/// 100,000 nested directories: refused by the default depth limit, and with the limit lifted
/// read and written back without recursion (a recursive parser would overflow the test
/// thread's stack here).
#[test]
fn deep_nesting_without_stack_overflow() {
    let bytes = nested(100_000);
    let err = err_of(&bytes);
    assert!(matches!(err, NarError::TooDeep { max: 1024, .. }), "{err}");
    let unlimited = NarLimits {
        max_depth: usize::MAX,
        ..NarLimits::default()
    };
    assert_eq!(pipe(&bytes[..], unlimited).unwrap(), bytes);
}

#[test]
fn node_count_limit() {
    let (bytes, events) = rich_nar();
    let nodes = events.iter().filter(|e| **e != Ev::DirEnd).count() as u64;
    let limits = |max_nodes| NarLimits {
        max_nodes,
        ..NarLimits::default()
    };
    parse_with(&bytes, limits(nodes)).unwrap();
    let err = err_with(&bytes, limits(nodes - 1));
    assert!(matches!(err, NarError::TooManyNodes { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("more than {}", nodes - 1))
    );
    assert!(matches!(
        err_with(&Enc::new().file(false, b"").bytes(), limits(0)),
        NarError::TooManyNodes { max: 0, offset: 24 }
    ));
}

// ---------------------------------------------------------------------------------------------
// Truncation, padding, trailing data, corruption

/// Cutting a valid NAR anywhere gives an "unexpected end" error at exactly the cut, never a
/// panic and never an early `Ok(None)`.
#[test]
fn truncation_at_every_offset_is_an_error() {
    let (bytes, _) = rich_nar();
    for cut in 0..bytes.len() {
        let mut r = NarReader::new(&bytes[..cut]);
        let err = loop {
            match r.next_event() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("truncated NAR accepted at {cut}"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err, NarError::UnexpectedEof { offset, .. } if offset == cut as u64),
            "cut {cut}: {err}"
        );
        assert!(
            err.to_string()
                .contains("unexpected end of NAR while reading")
        );
        // And the reader stays failed.
        assert!(matches!(r.next_event(), Err(NarError::ReaderFailed)));
    }
    // Inside file contents, the message says so.
    let bytes = Enc::new().file(false, b"0123456789").bytes();
    let err = err_of(&bytes[..100]);
    assert_eq!(
        err.to_string(),
        "unexpected end of NAR while reading file contents (at byte 100)"
    );
}

#[test]
fn non_zero_padding_is_rejected_everywhere() {
    let mut e = Enc::new();
    e.dir();
    e.entry(b"abc").file(true, b"hello").close();
    e.entry(b"l").symlink(b"tgt").close();
    e.close();
    let pads = e.pads.clone();
    let bytes = e.bytes();
    assert!(
        pads.len() > 40,
        "padding in magic, tags, name, contents, target"
    );
    parse(&bytes).unwrap();
    for &p in &pads {
        let mut bad = bytes.clone();
        bad[p] = 0x01;
        let err = err_of(&bad);
        assert!(
            matches!(err, NarError::NonZeroPadding { .. }),
            "at {p}: {err}"
        );
        assert!(err.to_string().contains("padding is not zero"));
        // The offset is where that string's padding starts.
        let start = err.offset().unwrap() as usize;
        assert!(start <= p && p < start + 8 && bad[start..p].iter().all(|&b| b == 0));
    }
}

#[test]
fn trailing_bytes_remain_unread() {
    let (nar, events) = rich_nar();
    let mut input = nar.clone();
    input.extend_from_slice(b"sentinel and more");
    let mut r = NarReader::new(Cursor::new(input));
    assert_eq!(read_events(&mut r).unwrap(), events);
    assert_eq!(r.next_event().unwrap(), None);
    assert_eq!(r.bytes_read(), nar.len() as u64);
    let mut rest = r.into_inner();
    assert_eq!(rest.position(), nar.len() as u64);
    let mut tail = String::new();
    rest.read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "sentinel and more");

    // Same with a root file whose contents end the archive, read one byte at a time.
    let nar = Enc::new().file(false, b"12345").bytes();
    let input = [&nar[..], b"next"].concat();
    let mut src = OneByte(&input);
    let mut r = NarReader::new(&mut src);
    while r.next_event().unwrap().is_some() {}
    drop(r);
    assert_eq!(src.0, b"next");
}

/// Flipping any single byte of a valid archive never panics; when the result is still
/// accepted, writing its events back reproduces it exactly.
#[test]
fn single_byte_corruptions_never_panic() {
    let (bytes, _) = rich_nar();
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            let mut r = NarReader::new(&bad[..]);
            if let Ok(events) = read_events(&mut r) {
                let n = r.bytes_read() as usize;
                assert_eq!(write_events(&events, 5).unwrap(), &bad[..n], "byte {i}");
            }
        }
    }
}

#[test]
fn io_errors_are_reported_and_interrupts_retried() {
    struct Flaky<'a> {
        data: &'a [u8],
        calls: usize,
    }
    impl Read for Flaky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.data.is_empty() {
                return Err(io::Error::other("connection reset"));
            }
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }
    let (bytes, events) = rich_nar();
    let mut r = NarReader::new(Flaky {
        data: &bytes,
        calls: 0,
    });
    assert_eq!(read_events(&mut r).unwrap(), events);
    let mut r = NarReader::new(Flaky {
        data: &bytes[..50],
        calls: 0,
    });
    let err = read_events(&mut r).unwrap_err();
    assert!(matches!(err, NarError::Io(_)), "{err}");
    assert!(err.to_string().contains("connection reset"));
}

#[test]
fn untrusted_strings_in_errors_are_escaped_and_shortened() {
    assert_eq!(escape_for_error(b"a\0b\n'\\"), "a\\0b\\n\\'\\\\");
    assert_eq!(escape_for_error(b"\xff\xc3\xa9"), "\\xffé");
    let long = escape_for_error(&[b'x'; 5000]);
    assert!(long.len() < 210 && long.ends_with("..."));
    let mut bytes = Enc::new().tags(&["(", "type"]).bytes();
    bytes.extend_from_slice(&32u64.to_le_bytes());
    bytes.extend_from_slice(&[0xff; 32]);
    let err = err_of(&bytes).to_string();
    assert!(err.contains("unknown file type '\\xff\\xff"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Writer misuse

#[test]
fn writer_rejects_invalid_sequences() {
    let root_file = NarEvent::File {
        name: None,
        executable: false,
        size: 3,
    };
    let named = |n: &'static [u8]| NarEvent::File {
        name: Some(n),
        executable: false,
        size: 0,
    };

    // Nothing written.
    let err = NarWriter::new(Vec::new()).finish().unwrap_err();
    assert!(err.to_string().contains("no node was written"), "{err}");

    // Events out of place at the start.
    for ev in [
        NarEvent::FileChunk(b"x"),
        NarEvent::FileEnd,
        NarEvent::DirectoryEnd,
        named(b"a"),
    ] {
        let err = NarWriter::new(Vec::new()).write_event(&ev).unwrap_err();
        assert!(matches!(err, NarError::UnexpectedEvent { .. }), "{err}");
    }

    // Chunks must add up to the size.
    let mut w = NarWriter::new(Vec::new());
    w.write_event(&root_file).unwrap();
    w.write_event(&NarEvent::FileChunk(b"ab")).unwrap();
    let err = w.write_event(&NarEvent::FileChunk(b"cd")).unwrap_err();
    assert!(
        matches!(
            err,
            NarError::FileSizeMismatch {
                size: 3,
                written: 4
            }
        ),
        "{err}"
    );
    let err = w.write_event(&NarEvent::FileEnd).unwrap_err();
    assert!(
        err.to_string()
            .contains("announced as 3 bytes but 2 bytes were given"),
        "{err}"
    );
    let err = w.write_event(&NarEvent::DirectoryEnd).unwrap_err();
    assert!(err.to_string().contains("FileChunk or FileEnd"), "{err}");
    // The refused events changed nothing: the file can still be completed.
    w.write_event(&NarEvent::FileChunk(b"c")).unwrap();
    w.write_event(&NarEvent::FileEnd).unwrap();
    assert!(w.is_done());
    let err = w.write_event(&root_file).unwrap_err();
    assert!(err.to_string().contains("root node is complete"), "{err}");
    assert_eq!(w.finish().unwrap(), Enc::new().file(false, b"abc").bytes());

    // Incomplete file and directory.
    let mut w = NarWriter::new(Vec::new());
    w.write_event(&root_file).unwrap();
    assert!(
        w.finish()
            .unwrap_err()
            .to_string()
            .contains("file is not complete")
    );
    let mut w = NarWriter::new(Vec::new());
    w.write_event(&NarEvent::DirectoryStart { name: None })
        .unwrap();
    w.write_event(&NarEvent::DirectoryStart { name: Some(b"a") })
        .unwrap();
    w.write_event(&NarEvent::DirectoryEnd).unwrap();
    assert!(
        w.finish()
            .unwrap_err()
            .to_string()
            .contains("directory is not complete")
    );

    // Entries need names, in order.
    let mut w = NarWriter::new(Vec::new());
    w.write_event(&NarEvent::DirectoryStart { name: None })
        .unwrap();
    let err = w
        .write_event(&NarEvent::DirectoryStart { name: None })
        .unwrap_err();
    assert!(err.to_string().contains("has a name"), "{err}");
    w.write_event(&named(b"b")).unwrap();
    w.write_event(&NarEvent::FileEnd).unwrap();
    let err = w.write_event(&named(b"a")).unwrap_err();
    assert!(
        err.to_string().contains("not sorted: 'a' after 'b'"),
        "{err}"
    );
    let err = w.write_event(&named(b"b")).unwrap_err();
    assert!(err.to_string().contains("duplicate entry 'b'"), "{err}");
    let err = w.write_event(&NarEvent::FileChunk(b"")).unwrap_err();
    assert!(err.to_string().contains("no file is open"), "{err}");
    w.write_event(&named(b"c")).unwrap();
    w.write_event(&NarEvent::FileEnd).unwrap();
    w.write_event(&NarEvent::DirectoryEnd).unwrap();
    let mut e = Enc::new();
    e.dir();
    e.entry(b"b").file(false, b"").close();
    e.entry(b"c").file(false, b"").close();
    e.close();
    assert_eq!(w.finish().unwrap(), e.bytes());
}

#[test]
fn writer_write_errors_poison_it() {
    struct Broken;
    impl io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut w = NarWriter::new(Broken);
    let err = w
        .write_event(&NarEvent::DirectoryStart { name: None })
        .unwrap_err();
    assert!(err.to_string().contains("disk full"));
    assert!(matches!(
        w.write_event(&NarEvent::DirectoryEnd),
        Err(NarError::WriterFailed)
    ));
}

// ---------------------------------------------------------------------------------------------
// Interop with the real Nix

#[cfg(unix)]
mod interop {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::Path;
    use std::process::Command;

    use super::*;

    /// The events Nix should produce for `path`, from walking it ourselves.
    fn expected_events(path: &Path, name: Option<Vec<u8>>, out: &mut Vec<Ev>) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(path).unwrap();
            out.push(Ev::Symlink {
                name,
                target: target.as_os_str().as_bytes().to_vec(),
            });
        } else if ft.is_file() {
            out.push(Ev::File {
                name,
                executable: meta.permissions().mode() & 0o100 != 0,
                data: std::fs::read(path).unwrap(),
            });
        } else {
            out.push(Ev::Dir { name });
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            entries.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for entry in entries {
                expected_events(&path.join(&entry), Some(entry.as_bytes().to_vec()), out);
            }
            out.push(Ev::DirEnd);
        }
    }

    fn dump(path: &Path) -> Option<Vec<u8>> {
        match Command::new("nix-store").arg("--dump").arg(path).output() {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "nix-store --dump failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Some(out.stdout)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => panic!("running nix-store: {e}"),
        }
    }

    fn write(path: &Path, data: &[u8], mode: u32) {
        std::fs::write(path, data).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn check(path: &Path) -> bool {
        let Some(nar) = dump(path) else {
            println!("skipped: nix-store not found");
            return false;
        };
        let mut expected = Vec::new();
        expected_events(path, None, &mut expected);
        let events = parse(&nar).unwrap();
        assert_eq!(events, expected, "events differ from the tree");
        assert_eq!(pipe(&nar[..], NarLimits::default()).unwrap(), nar);
        assert_eq!(pipe(OneByte(&nar), NarLimits::default()).unwrap(), nar);
        assert_eq!(write_events(&events, 1000).unwrap(), nar);
        true
    }

    /// `nix-store --dump` of a tree with every node type and odd but legal names: our
    /// reader's events match the tree, and reader→writer reproduces Nix's bytes exactly.
    #[test]
    fn nix_store_dump_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        for len in 0..=17 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            write(&root.join(format!("size-{len:02}")), &data, 0o644);
        }
        let big: Vec<u8> = (0..(CHUNK_SIZE * 3 + 5)).map(|i| (i % 253) as u8).collect();
        write(&root.join("big"), &big, 0o644);
        write(&root.join("empty"), b"", 0o644);
        write(&root.join("exec"), b"#!/bin/sh\nexit 0\n", 0o755);
        write(&root.join("exec-empty"), b"", 0o700);
        write(&root.join("readonly"), b"r", 0o444);
        std::fs::create_dir(root.join("empty-dir")).unwrap();
        let mut deep = root.join("nested");
        for i in 0..6 {
            deep = deep.join(format!("level{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        write(&deep.join("leaf"), b"leaf\n", 0o644);
        symlink("../../leaf", deep.join("up-link")).unwrap();
        symlink("relative/target", root.join("link-rel")).unwrap();
        symlink("/nix/store/abc-absolute", root.join("link-abs")).unwrap();
        symlink("does-not-exist", root.join("link-dangling")).unwrap();
        symlink("empty-dir", root.join("link-to-dir")).unwrap();
        symlink(
            OsStr::from_bytes(b"odd \xff\n target"),
            root.join("link-odd"),
        )
        .unwrap();
        let odd: [&[u8]; 13] = [
            b"with space",
            b"UPPER",
            b"lower",
            b".hidden",
            b"...",
            b"-dash",
            b"~tilde",
            b"quote'\"",
            b"back\\slash",
            b"new\nline",
            b"\x01ctl\x7f",
            b"\xc3\xbcnic\xc3\xb6de",
            b"not-utf8-\xff\xfe",
        ];
        for name in odd {
            write(&root.join(OsStr::from_bytes(name)), name, 0o644);
        }
        write(&root.join("n".repeat(255)), b"long name", 0o644);

        if !check(&root) {
            return;
        }
        // Roots that are not directories.
        check(&root.join("exec"));
        check(&root.join("empty"));
        check(&root.join("link-odd"));
        check(&root.join("empty-dir"));
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput

/// A reader producing a NAR of one root file of `size` zero bytes without holding it in
/// memory.
struct ZeroNar {
    head: Vec<u8>,
    size: u64,
    tail: Vec<u8>,
    pos: u64,
}

impl ZeroNar {
    fn new(size: u64) -> ZeroNar {
        let mut head = Enc::new()
            .tags(&["(", "type", "regular", "contents"])
            .bytes();
        head.extend_from_slice(&size.to_le_bytes());
        let mut tail = vec![0; padding_len(size)];
        tail.extend_from_slice(
            &Enc {
                out: vec![],
                pads: vec![],
            }
            .tags(&[")"])
            .bytes(),
        );
        ZeroNar {
            head,
            size,
            tail,
            pos: 0,
        }
    }

    fn len(&self) -> u64 {
        self.head.len() as u64 + self.size + self.tail.len() as u64
    }
}

impl Read for ZeroNar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let head = self.head.len() as u64;
        let n = if self.pos < head {
            let src = &self.head[self.pos as usize..];
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            n
        } else if self.pos < head + self.size {
            let n = ((head + self.size - self.pos) as usize).min(buf.len());
            buf[..n].fill(0);
            n
        } else {
            let src = &self.tail[(self.pos - head - self.size) as usize..];
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

fn measure(label: &str, bytes: u64, f: impl FnOnce()) {
    let start = std::time::Instant::now();
    f();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label}: {} MiB in {secs:.3} s = {:.0} MB/s",
        bytes >> 20,
        bytes as f64 / secs / 1e6
    );
}

/// A 64 MiB archive streams through correctly (runs in every test pass).
#[test]
fn synthetic_large_file_streams() {
    let size = 64 << 20;
    let mut src = ZeroNar::new(size);
    let total = src.len();
    let mut r = NarReader::new(&mut src);
    let mut got = 0u64;
    while let Some(ev) = r.next_event().unwrap() {
        if let NarEvent::FileChunk(c) = ev {
            got += c.len() as u64;
        }
    }
    assert_eq!(got, size);
    assert_eq!(r.bytes_read(), total);
}

/// Throughput on 1 GiB. Run with
/// `cargo test --release -p pkgchain-store-model nar::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn throughput() {
    let size: u64 = 1 << 30;
    measure("read 1 GiB file (generated)", size, || {
        let mut r = NarReader::new(ZeroNar::new(size));
        let mut got = 0u64;
        while let Some(ev) = r.next_event().unwrap() {
            if let NarEvent::FileChunk(c) = ev {
                got += c.len() as u64;
            }
        }
        assert_eq!(got, size);
    });
    measure("read+write 1 GiB file (generated -> sink)", size, || {
        let mut r = NarReader::new(ZeroNar::new(size));
        let mut w = NarWriter::new(io::sink());
        while let Some(ev) = r.next_event().unwrap() {
            w.write_event(&ev).unwrap();
        }
        w.finish().unwrap();
    });
    let in_memory = {
        let mut v = Vec::new();
        ZeroNar::new(size).read_to_end(&mut v).unwrap();
        v
    };
    measure("read 1 GiB file (from memory)", size, || {
        let mut r = NarReader::new(&in_memory[..]);
        while r.next_event().unwrap().is_some() {}
    });
    drop(in_memory);

    // Many small files: 200,000 files of 0..2000 bytes in 200 directories.
    let mut e = Enc::new();
    e.dir();
    for d in 0..200 {
        e.entry(format!("dir{d:04}").as_bytes()).dir();
        for f in 0..1000 {
            let len = (d * 1000 + f) * 7919 % 2000;
            e.entry(format!("file{f:05}").as_bytes())
                .file(f % 10 == 0, &vec![b'x'; len])
                .close();
        }
        e.close().close();
    }
    e.close();
    let small = e.bytes();
    measure(
        "read 200k small files (from memory)",
        small.len() as u64,
        || {
            let mut r = NarReader::new(&small[..]);
            let mut events = 0u64;
            while r.next_event().unwrap().is_some() {
                events += 1;
            }
            println!("  {events} events");
        },
    );
    measure(
        "read+write 200k small files (memory -> sink)",
        small.len() as u64,
        || {
            let mut r = NarReader::new(&small[..]);
            let mut w = NarWriter::new(io::sink());
            while let Some(ev) = r.next_event().unwrap() {
                w.write_event(&ev).unwrap();
            }
            w.finish().unwrap();
        },
    );
    assert_eq!(pipe(&small[..], NarLimits::default()).unwrap(), small);
}

/// File contents read with `read_file_contents`, in pieces, mixed with `FileChunk` events:
/// the same bytes and the same events after them; misuse is an error, not a panic.
#[test]
fn file_contents_read_into_the_callers_buffer() {
    let contents: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut e = Enc::new();
    e.dir().entry(b"a").file(false, &contents).close();
    e.entry(b"b").symlink(b"a").close();
    e.close();
    let bytes = e.bytes();
    let mut r = NarReader::new(Cursor::new(&bytes));
    assert!(matches!(
        r.next_event(),
        Ok(Some(NarEvent::DirectoryStart { .. }))
    ));
    assert_eq!(r.file_remaining(), None);
    let mut misplaced = [0u8; 4];
    let mut elsewhere = NarReader::new(Cursor::new(&bytes));
    assert!(matches!(
        elsewhere.read_file_contents(&mut misplaced),
        Err(NarError::ReaderFailed)
    ));
    assert!(matches!(
        r.next_event(),
        Ok(Some(NarEvent::File { size: 10_000, .. }))
    ));
    assert_eq!(r.file_remaining(), Some(10_000));
    let mut got = vec![0u8; 4000];
    r.read_file_contents(&mut got).unwrap();
    assert_eq!(r.file_remaining(), Some(6000));
    // The rest as events, then the file's end and the rest of the tree.
    let Ok(Some(NarEvent::FileChunk(rest))) = r.next_event() else {
        panic!("a chunk of the rest")
    };
    got.extend_from_slice(rest);
    assert_eq!(got, contents);
    assert_eq!(r.file_remaining(), Some(0));
    assert!(matches!(r.next_event(), Ok(Some(NarEvent::FileEnd))));
    assert!(matches!(r.next_event(), Ok(Some(NarEvent::Symlink { .. }))));
    assert!(matches!(r.next_event(), Ok(Some(NarEvent::DirectoryEnd))));
    assert!(matches!(r.next_event(), Ok(None)));

    // Asking for more than the file holds fails and leaves the reader failed.
    let mut r = NarReader::new(Cursor::new(&bytes));
    r.next_event().unwrap();
    r.next_event().unwrap();
    let mut too_long = vec![0u8; 10_001];
    assert!(matches!(
        r.read_file_contents(&mut too_long),
        Err(NarError::ReaderFailed)
    ));
    assert!(matches!(r.next_event(), Err(NarError::ReaderFailed)));

    // A NAR cut inside the contents: an error naming where.
    let mut r = NarReader::new(Cursor::new(&bytes[..bytes.len() / 2]));
    r.next_event().unwrap();
    r.next_event().unwrap();
    let mut all = vec![0u8; 10_000];
    assert!(matches!(
        r.read_file_contents(&mut all),
        Err(NarError::UnexpectedEof {
            what: "file contents",
            ..
        })
    ));
}
