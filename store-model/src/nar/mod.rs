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

use std::io::{self, Read, Write};

use thiserror::Error;

/// The first string of every NAR.
pub const NAR_MAGIC: &[u8] = b"nix-archive-1";

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

/// Why a NAR was rejected. Every variant that concerns the input carries the byte offset at
/// which the problem was found.
#[derive(Debug, Error)]
pub enum NarError {
    /// Reading the input failed.
    #[error("reading NAR: {0}")]
    Io(#[from] io::Error),
    /// Placeholder until the reader is written.
    #[error("NAR reader not implemented")]
    Unimplemented,
}

/// Reads a NAR from `R` as a sequence of [`NarEvent`]s.
pub struct NarReader<R> {
    #[allow(dead_code)]
    inner: R,
    #[allow(dead_code)]
    limits: NarLimits,
}

impl<R: Read> NarReader<R> {
    /// A reader with the default limits.
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, NarLimits::default())
    }

    /// A reader with the given limits.
    pub fn with_limits(inner: R, limits: NarLimits) -> Self {
        NarReader { inner, limits }
    }

    /// The next event, or `None` once the root node is complete. After `None` or an error, the
    /// reader must not be used again.
    pub fn next_event(&mut self) -> Result<Option<NarEvent<'_>>, NarError> {
        Err(NarError::Unimplemented)
    }

    /// Bytes consumed from the input so far.
    pub fn bytes_read(&self) -> u64 {
        0
    }

    /// The underlying reader, positioned just after the NAR once `next_event` returned `None`.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Writes [`NarEvent`]s as NAR bytes.
pub struct NarWriter<W> {
    inner: W,
}

impl<W: Write> NarWriter<W> {
    /// A writer; the magic is written with the first event.
    pub fn new(inner: W) -> Self {
        NarWriter { inner }
    }

    /// Writes one event.
    pub fn write_event(&mut self, _event: &NarEvent<'_>) -> Result<(), NarError> {
        Err(NarError::Unimplemented)
    }

    /// Checks that the root node is complete and returns the output.
    pub fn finish(self) -> Result<W, NarError> {
        Ok(self.inner)
    }
}
