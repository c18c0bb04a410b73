//! The NAR writer: checks the event sequence and emits Nix's serialization.

use std::io::Write;

use super::{
    NAR_MAGIC, NarError, NarEvent, check_entry_name, check_symlink_target, escape_for_error,
    padding_len,
};

/// Where the writer is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing written yet: the root node comes next.
    Start,
    /// Inside a regular file: `written` of `size` bytes given so far.
    File { size: u64, written: u64 },
    /// Inside a directory: an entry's node or `DirectoryEnd` comes next.
    Directory,
    /// The root node is complete.
    Done,
    /// Writing failed; the output is unusable.
    Failed,
}

/// Writes [`NarEvent`]s as NAR bytes.
///
/// Each event is checked against the grammar before anything is written: a refused event
/// leaves the writer as it was (an I/O error, however, leaves it failed). Keywords and headers
/// are gathered and handed to `W` in one `write_all` per event, file chunks are passed through
/// as they are; wrap unbuffered outputs in a `std::io::BufWriter` all the same.
pub struct NarWriter<W> {
    inner: W,
    state: State,
    /// For each open directory, where its last entry name starts in `names`.
    frames: Vec<usize>,
    /// The last entry name of each open directory, concatenated.
    names: Vec<u8>,
    /// Bytes of the current event, before they are written.
    staged: Vec<u8>,
    /// Bytes written so far.
    pos: u64,
}

/// Appends a NAR string: length, bytes, zero padding.
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    put_padding(out, s.len() as u64);
}

/// Appends the padding after `len` bytes.
fn put_padding(out: &mut Vec<u8>, len: u64) {
    out.extend_from_slice(&[0u8; 8][..padding_len(len)]);
}

impl<W: Write> NarWriter<W> {
    /// A writer; the magic is written with the first event.
    pub fn new(inner: W) -> Self {
        NarWriter {
            inner,
            state: State::Start,
            frames: Vec::new(),
            names: Vec::new(),
            staged: Vec::with_capacity(256),
            pos: 0,
        }
    }

    /// Writes one event.
    pub fn write_event(&mut self, event: &NarEvent<'_>) -> Result<(), NarError> {
        self.staged.clear();
        match (self.state, *event) {
            (State::Failed, _) => return Err(NarError::WriterFailed),
            (State::Done, _) => {
                return Err(NarError::UnexpectedEvent {
                    event: event.kind(),
                    expected: "no event: the root node is complete",
                });
            }
            (State::File { size, written }, NarEvent::FileChunk(data)) => {
                let written = written.saturating_add(data.len() as u64);
                if written > size {
                    return Err(NarError::FileSizeMismatch { size, written });
                }
                self.state = State::File { size, written };
                return self.emit(data);
            }
            (State::File { size, written }, NarEvent::FileEnd) => {
                if written != size {
                    return Err(NarError::FileSizeMismatch { size, written });
                }
                put_padding(&mut self.staged, size);
                put_str(&mut self.staged, b")");
                self.node_done();
            }
            (State::File { .. }, _) => {
                return Err(NarError::UnexpectedEvent {
                    event: event.kind(),
                    expected: "FileChunk or FileEnd",
                });
            }
            (State::Directory, NarEvent::DirectoryEnd) => {
                put_str(&mut self.staged, b")");
                if let Some(start) = self.frames.pop() {
                    self.names.truncate(start);
                }
                self.node_done();
            }
            (State::Start | State::Directory, NarEvent::FileChunk(_) | NarEvent::FileEnd) => {
                return Err(NarError::UnexpectedEvent {
                    event: event.kind(),
                    expected: "File, Symlink or DirectoryStart (no file is open)",
                });
            }
            (State::Start, NarEvent::DirectoryEnd) => {
                return Err(NarError::UnexpectedEvent {
                    event: event.kind(),
                    expected: "File, Symlink or DirectoryStart (no directory is open)",
                });
            }
            (
                State::Start | State::Directory,
                NarEvent::File { name, .. }
                | NarEvent::Symlink { name, .. }
                | NarEvent::DirectoryStart { name },
            ) => self.node(event, name)?,
        }
        let staged = std::mem::take(&mut self.staged);
        let result = self.emit(&staged);
        self.staged = staged;
        result
    }

    /// Checks that the root node is complete, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W, NarError> {
        match self.state {
            State::Done => {
                self.inner.flush()?;
                Ok(self.inner)
            }
            State::Start => Err(NarError::Incomplete("no node was written")),
            State::File { .. } => Err(NarError::Incomplete("a file is not complete")),
            State::Directory => Err(NarError::Incomplete("a directory is not complete")),
            State::Failed => Err(NarError::WriterFailed),
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.pos
    }

    /// Whether the root node is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Stages a node start (root or entry); checks come before any state changes.
    fn node(&mut self, event: &NarEvent<'_>, name: Option<&[u8]>) -> Result<(), NarError> {
        if let NarEvent::Symlink { target, .. } = event
            && let Err(reason) = check_symlink_target(target)
        {
            return Err(NarError::InvalidSymlinkTarget {
                target: escape_for_error(target),
                reason,
                offset: self.pos,
            });
        }
        match (self.state, name) {
            (State::Start, None) => put_str(&mut self.staged, NAR_MAGIC),
            (State::Start, Some(_)) => {
                return Err(NarError::UnexpectedEvent {
                    event: event.kind(),
                    expected: "a root node, which has no name",
                });
            }
            (_, None) => {
                return Err(NarError::UnexpectedEvent {
                    event: event.kind(),
                    expected: "a directory entry, which has a name",
                });
            }
            (_, Some(name)) => {
                self.check_entry(name)?;
                let start = self.frames.last().copied().unwrap_or(0);
                self.names.truncate(start);
                self.names.extend_from_slice(name);
                for tag in [b"entry" as &[u8], b"(", b"name"] {
                    put_str(&mut self.staged, tag);
                }
                put_str(&mut self.staged, name);
                put_str(&mut self.staged, b"node");
            }
        }
        put_str(&mut self.staged, b"(");
        put_str(&mut self.staged, b"type");
        match *event {
            NarEvent::File {
                executable, size, ..
            } => {
                put_str(&mut self.staged, b"regular");
                if executable {
                    put_str(&mut self.staged, b"executable");
                    put_str(&mut self.staged, b"");
                }
                put_str(&mut self.staged, b"contents");
                self.staged.extend_from_slice(&size.to_le_bytes());
                self.state = State::File { size, written: 0 };
            }
            NarEvent::Symlink { target, .. } => {
                put_str(&mut self.staged, b"symlink");
                put_str(&mut self.staged, b"target");
                put_str(&mut self.staged, target);
                put_str(&mut self.staged, b")");
                self.node_done();
            }
            NarEvent::DirectoryStart { .. } => {
                put_str(&mut self.staged, b"directory");
                self.frames.push(self.names.len());
                self.state = State::Directory;
            }
            NarEvent::FileChunk(_) | NarEvent::FileEnd | NarEvent::DirectoryEnd => {}
        }
        Ok(())
    }

    /// Checks an entry name and its order against the previous entry of the directory.
    fn check_entry(&self, name: &[u8]) -> Result<(), NarError> {
        let offset = self.pos;
        if let Err(reason) = check_entry_name(name) {
            return Err(NarError::InvalidName {
                name: escape_for_error(name),
                reason,
                offset,
            });
        }
        let start = self.frames.last().copied().unwrap_or(0);
        let prev = self.names.get(start..).unwrap_or_default();
        if name == prev {
            return Err(NarError::DuplicateName {
                name: escape_for_error(name),
                offset,
            });
        }
        if name < prev {
            return Err(NarError::NotSorted {
                name: escape_for_error(name),
                prev: escape_for_error(prev),
                offset,
            });
        }
        Ok(())
    }

    /// A node is complete: close its entry, or the archive.
    fn node_done(&mut self) {
        if self.frames.is_empty() {
            self.state = State::Done;
        } else {
            put_str(&mut self.staged, b")");
            self.state = State::Directory;
        }
    }

    /// Writes bytes to the output.
    fn emit(&mut self, bytes: &[u8]) -> Result<(), NarError> {
        if bytes.is_empty() {
            return Ok(());
        }
        match self.inner.write_all(bytes) {
            Ok(()) => {
                self.pos += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.state = State::Failed;
                Err(NarError::Io(e))
            }
        }
    }
}
