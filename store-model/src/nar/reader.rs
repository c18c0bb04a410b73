//! The streaming NAR reader: an explicit state machine, no recursion.

use std::io::{self, Read};

use super::{
    CHUNK_SIZE, MAX_TOKEN_LEN, NAR_MAGIC, NarError, NarEvent, NarLimits, check_entry_name,
    check_symlink_target, escape_for_error, padding_len,
};

/// The input with a count of the bytes taken from it. Every read is exact: nothing beyond
/// what the grammar asks for is ever requested from `inner`.
struct Input<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Input<R> {
    /// One `read` call that yields at least one byte (retrying on `Interrupted`).
    fn read_some(&mut self, buf: &mut [u8], what: &'static str) -> Result<usize, NarError> {
        loop {
            match self.inner.read(buf) {
                Ok(0) => {
                    return Err(NarError::UnexpectedEof {
                        what,
                        offset: self.pos,
                    });
                }
                Ok(n) => {
                    // A `Read` impl claiming more than it was given is broken; never trust it
                    // with an index.
                    let n = n.min(buf.len());
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NarError::Io(e)),
            }
        }
    }

    /// Fills `buf` completely.
    fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), NarError> {
        let mut filled = 0;
        while let Some(rest) = buf.get_mut(filled..) {
            if rest.is_empty() {
                break;
            }
            filled += self.read_some(rest, what)?;
        }
        Ok(())
    }

    /// A little-endian `u64`.
    fn read_u64(&mut self, what: &'static str) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The zero padding after a string of `len` bytes.
    fn read_padding(&mut self, len: u64, what: &'static str) -> Result<(), NarError> {
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding_len(len)];
        let offset = self.pos;
        self.read_exact(pad, what)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(NarError::NonZeroPadding { what, offset });
        }
        Ok(())
    }
}

/// Where the reader is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read yet.
    Start,
    /// Inside a regular file's contents; `remaining` bytes are still to come.
    FileData { size: u64, remaining: u64 },
    /// Inside a directory, before `entry` or `)`.
    DirEntries,
    /// A node is complete: the enclosing entry must be closed, or the archive ends.
    NodeDone,
    /// The root node is complete.
    Done,
    /// An error was returned.
    Failed,
}

/// An event without borrows, turned into a [`NarEvent`] by [`NarReader::next_event`].
#[derive(Debug, Clone, Copy)]
enum Step {
    File { executable: bool, size: u64 },
    Chunk(usize),
    FileEnd,
    Symlink,
    DirectoryStart,
    DirectoryEnd,
}

/// Reads a NAR from `R` as a sequence of [`NarEvent`]s.
///
/// The reader does its own exact, length-prefixed reads and never asks `R` for a byte beyond
/// the end of the archive. It does not buffer: give it a buffered reader (e.g.
/// `std::io::BufReader`) when `R` is a socket or file, since keywords are read a few bytes at a
/// time. File contents are read straight into an internal buffer of [`super::CHUNK_SIZE`]
/// bytes and handed out as [`NarEvent::FileChunk`]s.
pub struct NarReader<R> {
    input: Input<R>,
    limits: NarLimits,
    state: State,
    /// Nodes seen so far.
    nodes: u64,
    /// For each open directory, where its last entry name starts in `names`; the name runs
    /// to the start of the next directory's slot (or the end of `names`).
    frames: Vec<usize>,
    /// The last entry name of each open directory, concatenated.
    names: Vec<u8>,
    /// The range in `names` of the current node's name; `None` for the root.
    current_name: Option<(usize, usize)>,
    /// A name being read, before it is checked against the previous one.
    name_scratch: Vec<u8>,
    /// The current symlink's target.
    target: Vec<u8>,
    /// The keyword being read, with its padding.
    token: [u8; MAX_TOKEN_LEN],
    /// File contents; allocated at the first non-empty file.
    buf: Vec<u8>,
}

impl<R: Read> NarReader<R> {
    /// A reader with the default limits.
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, NarLimits::default())
    }

    /// A reader with the given limits.
    pub fn with_limits(inner: R, limits: NarLimits) -> Self {
        NarReader {
            input: Input { inner, pos: 0 },
            limits,
            state: State::Start,
            nodes: 0,
            frames: Vec::new(),
            names: Vec::new(),
            current_name: None,
            name_scratch: Vec::new(),
            target: Vec::new(),
            token: [0; MAX_TOKEN_LEN],
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` once the root node is complete. After `None` or an error, the
    /// reader must not be used again.
    ///
    /// (Calling it again anyway is safe: after `None` it returns `None`, after an error
    /// [`NarError::ReaderFailed`].)
    pub fn next_event(&mut self) -> Result<Option<NarEvent<'_>>, NarError> {
        let step = match self.step() {
            Ok(Some(step)) => step,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.state = State::Failed;
                return Err(e);
            }
        };
        let name = self
            .current_name
            .and_then(|(start, end)| self.names.get(start..end));
        Ok(Some(match step {
            Step::File { executable, size } => NarEvent::File {
                name,
                executable,
                size,
            },
            Step::Chunk(n) => NarEvent::FileChunk(self.buf.get(..n).unwrap_or_default()),
            Step::FileEnd => NarEvent::FileEnd,
            Step::Symlink => NarEvent::Symlink {
                name,
                target: &self.target,
            },
            Step::DirectoryStart => NarEvent::DirectoryStart { name },
            Step::DirectoryEnd => NarEvent::DirectoryEnd,
        }))
    }

    /// Inside a file's contents (after its [`NarEvent::File`] and before its
    /// [`NarEvent::FileEnd`]): how many bytes of them are still to come. `None` elsewhere.
    pub fn file_remaining(&self) -> Option<u64> {
        match self.state {
            State::FileData { remaining, .. } => Some(remaining),
            _ => None,
        }
    }

    /// Reads the next `buf.len()` bytes of the current file's contents straight into `buf`,
    /// instead of through the reader's own buffer as [`NarEvent::FileChunk`]s (which saves a
    /// copy of every byte). `buf` must not be longer than [`NarReader::file_remaining`].
    /// Then [`NarReader::next_event`] goes on with the rest of the contents, or the file's
    /// end.
    pub fn read_file_contents(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        let State::FileData { size, remaining } = self.state else {
            self.state = State::Failed;
            return Err(NarError::ReaderFailed);
        };
        if buf.len() as u64 > remaining {
            self.state = State::Failed;
            return Err(NarError::ReaderFailed);
        }
        if let Err(e) = self.input.read_exact(buf, "file contents") {
            self.state = State::Failed;
            return Err(e);
        }
        self.state = State::FileData {
            size,
            remaining: remaining - buf.len() as u64,
        };
        Ok(())
    }

    /// Bytes consumed from the input so far.
    pub fn bytes_read(&self) -> u64 {
        self.input.pos
    }

    /// The limits this reader enforces.
    pub fn limits(&self) -> &NarLimits {
        &self.limits
    }

    /// Whether the root node is complete (`next_event` returned `None`).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The underlying reader, positioned just after the NAR once `next_event` returned `None`.
    pub fn into_inner(self) -> R {
        self.input.inner
    }

    /// Advances the state machine by one event.
    fn step(&mut self) -> Result<Option<Step>, NarError> {
        loop {
            match self.state {
                State::Start => {
                    self.read_magic()?;
                    self.current_name = None;
                    return self.read_node().map(Some);
                }
                State::FileData { size, remaining } => {
                    if remaining > 0 {
                        return self.read_chunk(size, remaining).map(Some);
                    }
                    self.input.read_padding(size, "file contents padding")?;
                    self.expect(b")", "tag ')'")?;
                    self.state = State::NodeDone;
                    return Ok(Some(Step::FileEnd));
                }
                State::DirEntries => return self.read_entry().map(Some),
                State::NodeDone => {
                    if self.frames.is_empty() {
                        self.state = State::Done;
                        return Ok(None);
                    }
                    // Close the entry the node was in; the directory goes on.
                    self.expect(b")", "tag ')'")?;
                    self.state = State::DirEntries;
                }
                State::Done => return Ok(None),
                State::Failed => return Err(NarError::ReaderFailed),
            }
        }
    }

    /// `nix-archive-1`.
    fn read_magic(&mut self) -> Result<(), NarError> {
        let offset = self.input.pos;
        let len = self.input.read_u64("magic")?;
        if len != NAR_MAGIC.len() as u64 {
            return Err(NarError::NotANar { offset });
        }
        let mut magic = [0u8; 16];
        self.input.read_exact(&mut magic, "magic")?;
        if magic.get(..NAR_MAGIC.len()) != Some(NAR_MAGIC) {
            return Err(NarError::NotANar { offset });
        }
        if magic
            .get(NAR_MAGIC.len()..)
            .is_some_and(|p| p.iter().any(|&b| b != 0))
        {
            return Err(NarError::NonZeroPadding {
                what: "magic",
                offset: offset + 8 + NAR_MAGIC.len() as u64,
            });
        }
        Ok(())
    }

    /// Reads a keyword into `self.token`; returns its length and offset. `expected` says
    /// which keyword(s) the grammar allows here.
    fn read_token(&mut self, expected: &'static str) -> Result<(usize, u64), NarError> {
        let offset = self.input.pos;
        let len = self.input.read_u64(expected)?;
        if len > MAX_TOKEN_LEN as u64 {
            return Err(NarError::TagTooLong {
                expected,
                len,
                offset,
            });
        }
        // Lossless: at most MAX_TOKEN_LEN, a multiple of 8.
        let len = len as usize;
        let padded = len + padding_len(len as u64);
        let Some(buf) = self.token.get_mut(..padded) else {
            return Err(NarError::TagTooLong {
                expected,
                len: len as u64,
                offset,
            });
        };
        self.input.read_exact(buf, expected)?;
        if buf.get(len..).is_some_and(|p| p.iter().any(|&b| b != 0)) {
            return Err(NarError::NonZeroPadding {
                what: expected,
                offset: offset + 8 + len as u64,
            });
        }
        Ok((len, offset))
    }

    /// The keyword just read.
    fn token(&self, len: usize) -> &[u8] {
        self.token.get(..len).unwrap_or_default()
    }

    /// Reads a keyword and checks it is `tag`.
    fn expect(&mut self, tag: &[u8], expected: &'static str) -> Result<(), NarError> {
        let (len, offset) = self.read_token(expected)?;
        let token = self.token(len);
        if token != tag {
            return Err(NarError::UnexpectedTag {
                expected,
                found: escape_for_error(token),
                offset,
            });
        }
        Ok(())
    }

    /// `( type <type> ...` up to the node's first event.
    fn read_node(&mut self) -> Result<Step, NarError> {
        let offset = self.input.pos;
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(NarError::TooManyNodes {
                max: self.limits.max_nodes,
                offset,
            });
        }
        self.expect(b"(", "tag '('")?;
        self.expect(b"type", "tag 'type'")?;
        let (len, offset) = self.read_token("file type")?;
        match self.token(len) {
            b"regular" => self.read_file_header(),
            b"symlink" => self.read_symlink(),
            b"directory" => {
                self.frames.push(self.names.len());
                self.state = State::DirEntries;
                Ok(Step::DirectoryStart)
            }
            other => Err(NarError::UnknownType {
                found: escape_for_error(other),
                offset,
            }),
        }
    }

    /// `[executable ""] contents <size>`.
    fn read_file_header(&mut self) -> Result<Step, NarError> {
        let (len, mut offset) = self.read_token("tag 'executable' or 'contents'")?;
        let mut token_len = len;
        let executable = self.token(len) == b"executable";
        if executable {
            let value_offset = self.input.pos;
            let value_len = self.input.read_u64("executable marker value")?;
            if value_len != 0 {
                return Err(NarError::ExecutableMarkerNotEmpty {
                    len: value_len,
                    offset: value_offset,
                });
            }
            (token_len, offset) = self.read_token("tag 'contents'")?;
        }
        let token = self.token(token_len);
        if token != b"contents" {
            return Err(NarError::UnexpectedTag {
                expected: "tag 'contents'",
                found: escape_for_error(token),
                offset,
            });
        }
        let offset = self.input.pos;
        let size = self.input.read_u64("file size")?;
        if size > self.limits.max_file_size {
            return Err(NarError::FileTooLarge {
                size,
                max: self.limits.max_file_size,
                offset,
            });
        }
        self.state = State::FileData {
            size,
            remaining: size,
        };
        Ok(Step::File { executable, size })
    }

    /// Reads the next piece of file contents into `self.buf`.
    fn read_chunk(&mut self, size: u64, remaining: u64) -> Result<Step, NarError> {
        if self.buf.is_empty() {
            self.buf = vec![0; CHUNK_SIZE];
        }
        let want = usize::try_from(remaining).map_or(CHUNK_SIZE, |r| r.min(CHUNK_SIZE));
        let Some(buf) = self.buf.get_mut(..want) else {
            return Err(NarError::ReaderFailed);
        };
        let n = self.input.read_some(buf, "file contents")?;
        self.state = State::FileData {
            size,
            remaining: remaining - n as u64,
        };
        Ok(Step::Chunk(n))
    }

    /// `target <target> )`.
    fn read_symlink(&mut self) -> Result<Step, NarError> {
        self.expect(b"target", "tag 'target'")?;
        let offset = self.input.pos;
        let len = self.input.read_u64("symlink target")?;
        let max = self.limits.max_symlink_target_len;
        if len > max as u64 {
            return Err(NarError::SymlinkTargetTooLong { len, max, offset });
        }
        // Lossless: at most `max`, a usize.
        self.target.resize(len as usize, 0);
        self.input.read_exact(&mut self.target, "symlink target")?;
        self.input.read_padding(len, "symlink target")?;
        if let Err(reason) = check_symlink_target(&self.target) {
            return Err(NarError::InvalidSymlinkTarget {
                target: escape_for_error(&self.target),
                reason,
                offset,
            });
        }
        self.expect(b")", "tag ')'")?;
        self.state = State::NodeDone;
        Ok(Step::Symlink)
    }

    /// `entry ( name <name> node <node>` or the directory's `)`.
    fn read_entry(&mut self) -> Result<Step, NarError> {
        let (len, offset) = self.read_token("tag 'entry' or ')'")?;
        match self.token(len) {
            b")" => {
                if let Some(start) = self.frames.pop() {
                    self.names.truncate(start);
                }
                self.state = State::NodeDone;
                return Ok(Step::DirectoryEnd);
            }
            b"entry" => {}
            other => {
                return Err(NarError::UnexpectedTag {
                    expected: "tag 'entry' or ')'",
                    found: escape_for_error(other),
                    offset,
                });
            }
        }
        // The entry's node is one level below the innermost open directory.
        if self.frames.len() > self.limits.max_depth {
            return Err(NarError::TooDeep {
                max: self.limits.max_depth,
                offset,
            });
        }
        self.expect(b"(", "tag '('")?;
        self.expect(b"name", "tag 'name'")?;
        self.read_name()?;
        self.expect(b"node", "tag 'node'")?;
        self.read_node()
    }

    /// The entry name: checked, compared with the previous one, and stored as the innermost
    /// directory's last name.
    fn read_name(&mut self) -> Result<(), NarError> {
        let offset = self.input.pos;
        let len = self.input.read_u64("entry name")?;
        let max = self.limits.max_name_len;
        if len > max as u64 {
            return Err(NarError::NameTooLong { len, max, offset });
        }
        // Lossless: at most `max`, a usize.
        self.name_scratch.resize(len as usize, 0);
        self.input
            .read_exact(&mut self.name_scratch, "entry name")?;
        self.input.read_padding(len, "entry name")?;
        let name = &self.name_scratch;
        if let Err(reason) = check_entry_name(name) {
            return Err(NarError::InvalidName {
                name: escape_for_error(name),
                reason,
                offset,
            });
        }
        let start = self.frames.last().copied().unwrap_or(0);
        let prev = self.names.get(start..).unwrap_or_default();
        if name.as_slice() == prev {
            return Err(NarError::DuplicateName {
                name: escape_for_error(name),
                offset,
            });
        }
        if name.as_slice() < prev {
            return Err(NarError::NotSorted {
                name: escape_for_error(name),
                prev: escape_for_error(prev),
                offset,
            });
        }
        self.names.truncate(start);
        self.names.extend_from_slice(name);
        self.current_name = Some((start, self.names.len()));
        Ok(())
    }
}
