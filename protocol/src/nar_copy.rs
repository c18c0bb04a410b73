//! Finding the end of a NAR sent raw (unframed) on the wire, and copying it.
//!
//! The old `AddToStore` form (below 1.25, every Nix 2.3 client) and `AddToStoreNar` below 1.21
//! send a NAR with no length and no framing: only the NAR grammar says where it ends. [`copy_nar`]
//! reads exactly one NAR from a [`WireRead`] — never a byte past its end — and hands every byte
//! it consumed to a [`NarSink`], unchanged. It is an explicit state machine (no recursion) over
//! the same reader trait as every decoder in this crate, so the one implementation serves both
//! the tokio reader ([`AsyncReader`](crate::wire::AsyncReader)) and the blocking one
//! ([`copy_nar_sync`] over a [`SyncReader`]).
//!
//! It checks what `pkgchain_store_model::nar::NarReader` checks (and is tested against it to
//! accept the same archives and stop at the same byte): keywords, zero padding, the empty
//! `executable` marker before `contents`, entry names (valid, strictly increasing), symlink
//! targets, and [`NarLimits`] (name length, depth, node count, file size, target length), plus
//! a bound on the archive's total size ([`NarCopyLimits::max_total_len`], from
//! [`Limits::max_nar_len`]). It allocates at most 64 KiB for file contents and, per open
//! directory, the last entry name.
//!
//! (`NarReader` itself works on `std::io::Read` only, so it cannot read from an async socket;
//! hence this reader. A daemon that wants the NAR's events afterwards runs `NarReader` over the
//! copied bytes.)
//!
//! Error offsets are relative to the start of the NAR.

use std::io;

use pkgchain_store_model::nar::{
    MAX_TOKEN_LEN, NAR_MAGIC, NarLimits, check_entry_name, check_symlink_target,
};

use crate::wire::read::{read_bytes, read_padding, read_u64};
use crate::wire::{Limits, SyncReader, WireError, WireErrorKind, WireRead, run_ready};

/// Contents are copied through a buffer of at most this many bytes.
const COPY_CHUNK: usize = 64 * 1024;

/// Where the bytes of a NAR go.
pub trait NarSink: Send {
    /// Takes the next bytes of the NAR, in order.
    fn write_nar(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl<W: io::Write + Send> NarSink for W {
    fn write_nar(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }
}

/// Bounds on a NAR read by [`copy_nar`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarCopyLimits {
    /// Bounds on names, depth, nodes, file sizes and symlink targets.
    pub nar: NarLimits,
    /// Most bytes the whole archive may have.
    pub max_total_len: u64,
}

impl NarCopyLimits {
    /// The NAR reader's default limits and the total size bound of `limits`.
    pub fn from_limits(limits: &Limits) -> NarCopyLimits {
        NarCopyLimits {
            nar: NarLimits::default(),
            max_total_len: limits.max_nar_len,
        }
    }
}

impl Default for NarCopyLimits {
    fn default() -> NarCopyLimits {
        NarCopyLimits::from_limits(&Limits::DEFAULT)
    }
}

/// A reader that passes everything it reads to the sink and counts it.
struct Tee<'a, R, S> {
    inner: &'a mut R,
    sink: &'a mut S,
    copied: u64,
    max: u64,
}

impl<R: WireRead, S: NarSink> WireRead for Tee<'_, R, S> {
    async fn read_exact<'b>(&'b mut self, buf: &'b mut [u8]) -> Result<(), WireErrorKind> {
        let end = self.copied.saturating_add(buf.len() as u64);
        if end > self.max {
            return Err(WireErrorKind::TooLong {
                len: end,
                limit: self.max,
            });
        }
        self.inner.read_exact(buf).await?;
        self.sink.write_nar(buf).map_err(WireErrorKind::Io)?;
        self.copied = end;
        Ok(())
    }

    fn position(&self) -> u64 {
        self.copied
    }
}

/// Where the copier is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A node starts: `( type ...`.
    Node,
    /// Inside a directory: `entry ...` or `)`.
    Entries,
    /// A node is complete: close its entry, or the archive ends.
    NodeDone,
}

/// Reads a keyword (at most [`MAX_TOKEN_LEN`] bytes).
async fn token<R: WireRead>(r: &mut R, what: &'static str) -> Result<Vec<u8>, WireError> {
    read_bytes(r, MAX_TOKEN_LEN as u64, what).await
}

/// Reads a keyword that must be `tag`.
async fn expect<R: WireRead>(r: &mut R, tag: &[u8], what: &'static str) -> Result<(), WireError> {
    let at = r.position();
    let got = token(r, what).await?;
    if got != tag {
        return Err(bad_tag(what, at, &got));
    }
    Ok(())
}

fn bad_tag(what: &'static str, at: u64, got: &[u8]) -> WireError {
    WireError::invalid(
        what,
        Some(at),
        format!(
            "bad archive: got '{}'",
            String::from_utf8_lossy(got).escape_debug()
        ),
    )
}

/// Copies exactly one NAR from `r` to `sink`; returns its length. `r` is left just after the
/// NAR. On error the stream position is wherever reading stopped (the connection is lost).
pub async fn copy_nar<R: WireRead, S: NarSink>(
    r: &mut R,
    sink: &mut S,
    limits: &NarCopyLimits,
) -> Result<u64, WireError> {
    let mut r = Tee {
        inner: r,
        sink,
        copied: 0,
        max: limits.max_total_len,
    };
    let r = &mut r;
    let lim = &limits.nar;
    let at = r.position();
    if token(r, "NAR magic").await? != NAR_MAGIC {
        return Err(WireError::invalid(
            "NAR magic",
            Some(at),
            "input doesn't look like a Nix archive",
        ));
    }
    // Per open directory, its last entry name (`None` before the first entry).
    let mut dirs: Vec<Option<Vec<u8>>> = Vec::new();
    let mut nodes: u64 = 0;
    let mut buf: Vec<u8> = Vec::new();
    let mut state = State::Node;
    loop {
        match state {
            State::Node => {
                let at = r.position();
                nodes += 1;
                if nodes > lim.max_nodes {
                    return Err(WireError::invalid(
                        "NAR node",
                        Some(at),
                        format!("bad archive: more than {} nodes", lim.max_nodes),
                    ));
                }
                expect(r, b"(", "NAR tag '('").await?;
                expect(r, b"type", "NAR tag 'type'").await?;
                let at = r.position();
                let kind = token(r, "NAR file type").await?;
                state = match kind.as_slice() {
                    b"regular" => {
                        copy_file(r, lim, &mut buf).await?;
                        State::NodeDone
                    }
                    b"symlink" => {
                        expect(r, b"target", "NAR tag 'target'").await?;
                        let at = r.position();
                        let target =
                            read_bytes(r, lim.max_symlink_target_len as u64, "NAR symlink target")
                                .await?;
                        check_symlink_target(&target).map_err(|reason| {
                            WireError::invalid("NAR symlink target", Some(at), reason)
                        })?;
                        expect(r, b")", "NAR tag ')'").await?;
                        State::NodeDone
                    }
                    b"directory" => {
                        dirs.push(None);
                        State::Entries
                    }
                    other => return Err(bad_tag("NAR file type", at, other)),
                };
            }
            State::Entries => {
                let at = r.position();
                let tag = token(r, "NAR tag 'entry' or ')'").await?;
                match tag.as_slice() {
                    b")" => {
                        dirs.pop();
                        state = State::NodeDone;
                    }
                    b"entry" => {
                        if dirs.len() > lim.max_depth {
                            return Err(WireError::invalid(
                                "NAR entry",
                                Some(at),
                                format!(
                                    "bad archive: directories nested deeper than {}",
                                    lim.max_depth
                                ),
                            ));
                        }
                        expect(r, b"(", "NAR tag '('").await?;
                        expect(r, b"name", "NAR tag 'name'").await?;
                        let at = r.position();
                        let name = read_bytes(r, lim.max_name_len as u64, "NAR entry name").await?;
                        check_entry_name(&name).map_err(|reason| {
                            WireError::invalid("NAR entry name", Some(at), reason)
                        })?;
                        let last = dirs.last_mut().ok_or_else(|| {
                            WireError::invalid("NAR entry", Some(at), "entry outside a directory")
                        })?;
                        if last.as_ref().is_some_and(|prev| name <= *prev) {
                            return Err(WireError::invalid(
                                "NAR entry name",
                                Some(at),
                                format!(
                                    "bad archive: entries not sorted: '{}' after '{}'",
                                    String::from_utf8_lossy(&name).escape_debug(),
                                    String::from_utf8_lossy(last.as_deref().unwrap_or_default())
                                        .escape_debug()
                                ),
                            ));
                        }
                        *last = Some(name);
                        expect(r, b"node", "NAR tag 'node'").await?;
                        state = State::Node;
                    }
                    other => return Err(bad_tag("NAR tag 'entry' or ')'", at, other)),
                }
            }
            State::NodeDone => {
                if dirs.is_empty() {
                    return Ok(r.copied);
                }
                expect(r, b")", "NAR tag ')'").await?;
                state = State::Entries;
            }
        }
    }
}

/// `[executable ""] contents <size> <bytes> )` of a regular file.
async fn copy_file<R: WireRead>(
    r: &mut R,
    lim: &NarLimits,
    buf: &mut Vec<u8>,
) -> Result<(), WireError> {
    let what = "NAR tag 'executable' or 'contents'";
    let mut at = r.position();
    let mut tag = token(r, what).await?;
    if tag == b"executable" {
        let marker_at = r.position();
        let len = read_u64(r, "NAR executable marker").await?;
        if len != 0 {
            return Err(WireError::invalid(
                "NAR executable marker",
                Some(marker_at),
                format!("bad archive: executable marker has a non-empty value ({len} bytes)"),
            ));
        }
        at = r.position();
        tag = token(r, "NAR tag 'contents'").await?;
    }
    if tag != b"contents" {
        return Err(bad_tag("NAR tag 'contents'", at, &tag));
    }
    let at = r.position();
    let size = read_u64(r, "NAR file size").await?;
    if size > lim.max_file_size {
        return Err(WireError::at(
            "NAR file size",
            at,
            WireErrorKind::TooLong {
                len: size,
                limit: lim.max_file_size,
            },
        ));
    }
    let mut remaining = size;
    while remaining > 0 {
        let step = usize::try_from(remaining).map_or(COPY_CHUNK, |n| n.min(COPY_CHUNK));
        buf.resize(step, 0);
        let at = r.position();
        r.read_exact(&mut buf[..step])
            .await
            .map_err(|kind| WireError::at("NAR file contents", at, kind))?;
        remaining -= step as u64;
    }
    let len = usize::try_from(size % 8).unwrap_or(0);
    read_padding(r, len, "NAR file contents padding").await?;
    expect(r, b")", "NAR tag ')'").await
}

/// [`copy_nar`] over a blocking reader.
pub fn copy_nar_sync<R: io::Read + Send, S: NarSink>(
    r: &mut SyncReader<R>,
    sink: &mut S,
    limits: &NarCopyLimits,
) -> Result<u64, WireError> {
    run_ready(copy_nar(r, sink, limits))
}

#[cfg(test)]
#[path = "nar_copy_tests.rs"]
mod tests;
