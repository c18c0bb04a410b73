//! The Nix ARchive (NAR) format: a bounded, iterative streaming reader and a writer.
//!
//! A NAR is a sequence of length-prefixed strings (8-byte little-endian length, bytes, zero
//! padding to a multiple of 8). It starts with `nix-archive-1` and holds one node:
//!
//! ```text
//! ( type regular [executable ""] contents <data> )
//! ( type symlink target <target> )
//! ( type directory entry ( name <name> node <node> ) ... )
//! ```
//!
//! Directory entries are strictly sorted by name (bytewise); names are non-empty, contain
//! neither `/` nor NUL, and are not `.` or `..`.
//!
//! [`NarReader`] turns bytes into [`NarEvent`]s without recursion, never reads past the end of
//! the archive (so a NAR embedded in a protocol stream can be followed by other data), and
//! enforces [`NarLimits`]. [`NarWriter`] turns the same events back into bytes; a reader feeding
//! a writer reproduces its input byte for byte.
//!
//! Beyond the grammar, the reader applies the checks of Nix 2.35's `parseDump`: padding must be
//! zero, the `executable` marker must carry an empty string and come before `contents`, entry
//! names must be valid (see [`check_entry_name`]; this includes refusing names that carry Nix's
//! case-hack suffix `~nix~case~hack~`), symlink targets must be non-empty and free of NUL, and
//! keyword tokens longer than [`MAX_TOKEN_LEN`] are refused before they are read.
//!
//! ```
//! use pkgchain_store_model::nar::{NarEvent, NarReader, NarWriter};
//!
//! // A NAR of a directory holding one file, as events.
//! let mut writer = NarWriter::new(Vec::new());
//! for event in [
//!     NarEvent::DirectoryStart { name: None },
//!     NarEvent::File { name: Some(b"hello"), executable: false, size: 6 },
//!     NarEvent::FileChunk(b"hello\n"),
//!     NarEvent::FileEnd,
//!     NarEvent::DirectoryEnd,
//! ] {
//!     writer.write_event(&event)?;
//! }
//! let nar = writer.finish()?;
//!
//! // Read it back, followed by unrelated bytes that stay unread; copy it event by event.
//! let input = [&nar[..], b"next message"].concat();
//! let mut reader = NarReader::new(&input[..]);
//! let mut copy = NarWriter::new(Vec::new());
//! while let Some(event) = reader.next_event()? {
//!     copy.write_event(&event)?;
//! }
//! assert_eq!(copy.finish()?, nar);
//! assert_eq!(reader.into_inner(), b"next message");
//! # Ok::<(), pkgchain_store_model::nar::NarError>(())
//! ```

use std::io;

use thiserror::Error;

mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use reader::NarReader;
pub use writer::NarWriter;

/// The first string of every NAR.
pub const NAR_MAGIC: &[u8] = b"nix-archive-1";

/// Longest keyword token (`(`, `type`, `directory`, ...) the reader accepts, in bytes; longer
/// strings in a keyword position are refused before they are read. The longest real keyword,
/// `executable`, has 10 bytes; Nix uses the same bound of 32.
pub const MAX_TOKEN_LEN: usize = 32;

/// The suffix Nix appends to case-colliding entry names on case-insensitive file systems.
/// Nix refuses NAR entry names that contain it, on every platform.
pub const CASE_HACK_SUFFIX: &[u8] = b"~nix~case~hack~";

/// Size of the reader's buffer for file contents: [`NarEvent::FileChunk`]s are at most this
/// long.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Bounds the reader enforces on untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarLimits {
    /// Longest directory entry name in bytes (Linux `NAME_MAX` is 255).
    pub max_name_len: usize,
    /// Deepest directory nesting; the root node is depth 0.
    pub max_depth: usize,
    /// Most nodes (files, symlinks, directories) in the whole archive.
    pub max_nodes: u64,
    /// Largest regular file in bytes.
    pub max_file_size: u64,
    /// Longest symlink target in bytes (Linux `PATH_MAX` - 1 is 4095).
    pub max_symlink_target_len: usize,
}

impl Default for NarLimits {
    fn default() -> Self {
        NarLimits {
            max_name_len: 255,
            max_depth: 1024,
            max_nodes: 50_000_000,
            max_file_size: 1 << 40,
            max_symlink_target_len: 4095,
        }
    }
}

/// One step of a NAR, as read or to be written.
///
/// `name` is `None` for the root node and `Some(entry name)` for a node inside a directory.
/// A `File` is followed by `FileChunk`s carrying exactly `size` bytes in total (none when
/// `size` is 0), then `FileEnd`. A `DirectoryStart` is followed by its entries' events and then
/// `DirectoryEnd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NarEvent<'a> {
    /// A regular file begins.
    File {
        /// Entry name, `None` at the root.
        name: Option<&'a [u8]>,
        /// Whether the executable bit is set.
        executable: bool,
        /// Length of the contents in bytes.
        size: u64,
    },
    /// A piece of the current file's contents.
    FileChunk(&'a [u8]),
    /// The current file's contents are complete.
    FileEnd,
    /// A symbolic link.
    Symlink {
        /// Entry name, `None` at the root.
        name: Option<&'a [u8]>,
        /// The link target, as stored (not resolved).
        target: &'a [u8],
    },
    /// A directory begins; its entries follow in sorted order.
    DirectoryStart {
        /// Entry name, `None` at the root.
        name: Option<&'a [u8]>,
    },
    /// The current directory is complete.
    DirectoryEnd,
}

impl NarEvent<'_> {
    /// A short name of the event's kind (`"File"`, `"FileChunk"`, ...), for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            NarEvent::File { .. } => "File",
            NarEvent::FileChunk(_) => "FileChunk",
            NarEvent::FileEnd => "FileEnd",
            NarEvent::Symlink { .. } => "Symlink",
            NarEvent::DirectoryStart { .. } => "DirectoryStart",
            NarEvent::DirectoryEnd => "DirectoryEnd",
        }
    }
}

/// Why a NAR was rejected, or why a [`NarWriter`] refused an event.
///
/// Every variant that concerns the input carries the byte offset at which the problem was
/// found (for a keyword, name or target: where its length prefix starts). When a
/// [`NarWriter`] reports a variant shared with the reader (an invalid name, unsorted entries,
/// an invalid symlink target), the offset is the number of bytes written so far.
/// Untrusted strings in messages are escaped and shortened.
#[derive(Debug, Error)]
pub enum NarError {
    /// Reading the input or writing the output failed.
    #[error("reading NAR: {0}")]
    Io(#[from] io::Error),
    /// The input ended inside the archive.
    #[error("unexpected end of NAR while reading {what} (at byte {offset})")]
    UnexpectedEof {
        /// What was being read.
        what: &'static str,
        /// Where the input ended.
        offset: u64,
    },
    /// The input does not start with [`NAR_MAGIC`].
    #[error("input doesn't look like a Nix archive: expected 'nix-archive-1' (at byte {offset})")]
    NotANar {
        /// Where the magic was expected.
        offset: u64,
    },
    /// A keyword other than the one the grammar requires.
    #[error("bad archive: expected {expected}, got '{found}' (at byte {offset})")]
    UnexpectedTag {
        /// The keyword(s) the grammar allows here.
        expected: &'static str,
        /// What the archive holds instead (escaped, shortened).
        found: String,
        /// Where the string starts.
        offset: u64,
    },
    /// A string in a keyword position is longer than [`MAX_TOKEN_LEN`]; it was not read.
    #[error(
        "bad archive: expected {expected}, got a string of {len} bytes (longer than any NAR keyword) (at byte {offset})"
    )]
    TagTooLong {
        /// The keyword(s) the grammar allows here.
        expected: &'static str,
        /// The announced length.
        len: u64,
        /// Where the string starts.
        offset: u64,
    },
    /// The node type is not `regular`, `symlink` or `directory`.
    #[error("bad archive: unknown file type '{found}' (at byte {offset})")]
    UnknownType {
        /// The type found (escaped, shortened).
        found: String,
        /// Where the string starts.
        offset: u64,
    },
    /// The string after `executable` is not empty.
    #[error("bad archive: executable marker has non-empty value ({len} bytes) (at byte {offset})")]
    ExecutableMarkerNotEmpty {
        /// The announced length of the value.
        len: u64,
        /// Where the value starts.
        offset: u64,
    },
    /// A padding byte is not zero.
    #[error(
        "bad archive: non-zero padding: NAR padding is not zero after {what} (at byte {offset})"
    )]
    NonZeroPadding {
        /// What the padding follows.
        what: &'static str,
        /// Where the padding starts.
        offset: u64,
    },
    /// A directory entry name that Nix refuses.
    #[error("bad archive: NAR contains invalid file name '{name}': {reason} (at byte {offset})")]
    InvalidName {
        /// The name (escaped, shortened).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
        /// Where the name starts.
        offset: u64,
    },
    /// A directory entry name longer than [`NarLimits::max_name_len`]; it was not read.
    #[error(
        "bad archive: NAR entry name of {len} bytes exceeds the limit of {max} (at byte {offset})"
    )]
    NameTooLong {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
        /// Where the name starts.
        offset: u64,
    },
    /// A directory entry name not greater than the one before it.
    #[error(
        "bad archive: NAR directory entries not sorted: '{name}' after '{prev}' (at byte {offset})"
    )]
    NotSorted {
        /// The entry name (escaped, shortened).
        name: String,
        /// The previous entry name (escaped, shortened).
        prev: String,
        /// Where the name starts.
        offset: u64,
    },
    /// The same directory entry name twice in a row.
    #[error(
        "bad archive: NAR directory entries not sorted: duplicate entry '{name}' (at byte {offset})"
    )]
    DuplicateName {
        /// The entry name (escaped, shortened).
        name: String,
        /// Where the second occurrence starts.
        offset: u64,
    },
    /// A symlink target that Nix refuses (empty, or containing NUL).
    #[error(
        "bad archive: NAR contains invalid symlink target '{target}': {reason} (at byte {offset})"
    )]
    InvalidSymlinkTarget {
        /// The target (escaped, shortened).
        target: String,
        /// What is wrong with it.
        reason: &'static str,
        /// Where the target starts.
        offset: u64,
    },
    /// A symlink target longer than [`NarLimits::max_symlink_target_len`]; it was not read.
    #[error(
        "bad archive: NAR symlink target of {len} bytes exceeds the limit of {max} (at byte {offset})"
    )]
    SymlinkTargetTooLong {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
        /// Where the target starts.
        offset: u64,
    },
    /// A regular file larger than [`NarLimits::max_file_size`]; its contents were not read.
    #[error("bad archive: NAR file of {size} bytes exceeds the limit of {max} (at byte {offset})")]
    FileTooLarge {
        /// The announced size.
        size: u64,
        /// The limit.
        max: u64,
        /// Where the size starts.
        offset: u64,
    },
    /// Directories nested deeper than [`NarLimits::max_depth`].
    #[error("bad archive: NAR directory nesting exceeds maximum depth of {max} (at byte {offset})")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Where the entry that is too deep starts.
        offset: u64,
    },
    /// More nodes than [`NarLimits::max_nodes`].
    #[error("bad archive: NAR has more than {max} nodes (at byte {offset})")]
    TooManyNodes {
        /// The limit.
        max: u64,
        /// Where the node over the limit starts.
        offset: u64,
    },
    /// [`NarReader::next_event`] was called again after it returned an error.
    #[error("NAR reader used again after an error")]
    ReaderFailed,
    /// [`NarWriter::write_event`] got an event the NAR grammar does not allow at this point.
    #[error("NAR writer: unexpected {event} event: expected {expected}")]
    UnexpectedEvent {
        /// The kind of event given ([`NarEvent::kind`]).
        event: &'static str,
        /// What was allowed instead.
        expected: &'static str,
    },
    /// [`NarWriter`] got file chunks that do not add up to the announced size.
    #[error("NAR writer: file announced as {size} bytes but {written} bytes were given")]
    FileSizeMismatch {
        /// The size of the `File` event.
        size: u64,
        /// The bytes given so far (including the chunk that overflowed).
        written: u64,
    },
    /// [`NarWriter::finish`] was called before the root node was complete.
    #[error("NAR writer: archive is incomplete: {0}")]
    Incomplete(&'static str),
    /// [`NarWriter::write_event`] was called again after writing failed.
    #[error("NAR writer used again after a write error")]
    WriterFailed,
}

impl NarError {
    /// The byte offset the error concerns, when it concerns a position in the archive.
    pub fn offset(&self) -> Option<u64> {
        match self {
            NarError::UnexpectedEof { offset, .. }
            | NarError::NotANar { offset }
            | NarError::UnexpectedTag { offset, .. }
            | NarError::TagTooLong { offset, .. }
            | NarError::UnknownType { offset, .. }
            | NarError::ExecutableMarkerNotEmpty { offset, .. }
            | NarError::NonZeroPadding { offset, .. }
            | NarError::InvalidName { offset, .. }
            | NarError::NameTooLong { offset, .. }
            | NarError::NotSorted { offset, .. }
            | NarError::DuplicateName { offset, .. }
            | NarError::InvalidSymlinkTarget { offset, .. }
            | NarError::SymlinkTargetTooLong { offset, .. }
            | NarError::FileTooLarge { offset, .. }
            | NarError::TooDeep { offset, .. }
            | NarError::TooManyNodes { offset, .. } => Some(*offset),
            NarError::Io(_)
            | NarError::ReaderFailed
            | NarError::UnexpectedEvent { .. }
            | NarError::FileSizeMismatch { .. }
            | NarError::Incomplete(_)
            | NarError::WriterFailed => None,
        }
    }
}

/// Checks a directory entry name as Nix's NAR parser does. On failure, says what is wrong.
///
/// A valid name is non-empty, is not `.` or `..`, contains neither `/` nor NUL, and does not
/// contain [`CASE_HACK_SUFFIX`]. Length limits are not checked here (see
/// [`NarLimits::max_name_len`]).
pub fn check_entry_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("name is empty")
    } else if name == b"." {
        Err("'.' is not allowed")
    } else if name == b".." {
        Err("'..' is not allowed")
    } else if memchr::memchr(b'/', name).is_some() {
        Err("name contains '/'")
    } else if memchr::memchr(0, name).is_some() {
        Err("name contains a NUL byte")
    } else if memchr::memmem::find(name, CASE_HACK_SUFFIX).is_some() {
        Err("name contains the case-hack suffix '~nix~case~hack~'")
    } else {
        Ok(())
    }
}

/// Checks a symlink target as Nix's NAR parser does: non-empty and free of NUL bytes.
pub fn check_symlink_target(target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() {
        Err("target is empty")
    } else if memchr::memchr(0, target).is_some() {
        Err("target contains a NUL byte")
    } else {
        Ok(())
    }
}

/// Number of zero bytes that follow a string of `len` bytes.
pub(crate) fn padding_len(len: u64) -> usize {
    // The result is below 8, so the cast is lossless.
    ((8 - (len % 8)) % 8) as usize
}

/// Renders untrusted bytes for an error message: valid UTF-8 stays readable, control
/// characters, quotes and backslashes are escaped, other bytes become `\xNN`, and long input is
/// cut after about 200 characters.
pub(crate) fn escape_for_error(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    let mut cut = false;
    'outer: for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if out.len() >= MAX {
                cut = true;
                break 'outer;
            }
            if c.is_control() || c == '\'' || c == '\\' {
                out.extend(c.escape_debug());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            if out.len() >= MAX {
                cut = true;
                break 'outer;
            }
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if cut {
        out.push_str("...");
    }
    out
}
