//! Framed streams: a sequence of chunks `u64 length` + that many raw bytes (no padding),
//! terminated by a chunk of length 0.
//!
//! Clients send file data this way in `AddToStore` (1.25+), `AddToStoreNar` (1.23+),
//! `AddMultipleToStore` and `AddBuildLog`. The readers here present the payload as one byte
//! stream that ends at the terminator, and bound each chunk by
//! [`Limits::max_frame_len`](crate::wire::Limits::max_frame_len) (checked before reading it;
//! nothing is allocated per chunk). A daemon must read a stream up to its terminator even after
//! an error ([`FramedReader::drain`], [`AsyncFramedReader::drain`]) or the connection loses
//! its place.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::wire::WireWriter;

/// A chunk announced longer than allowed. Returned inside an `io::Error` of kind
/// `InvalidData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("framed stream: frame length {len} exceeds limit {limit}")]
pub struct FrameTooLong {
    /// The announced length.
    pub len: u64,
    /// The limit.
    pub limit: u64,
}

fn eof_in_frame() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "framed stream: input ended before the terminating empty frame",
    )
}

/// Appends one chunk. An empty `data` writes nothing (an empty chunk would end the stream).
pub fn encode_frame(w: &mut WireWriter, data: &[u8]) {
    if !data.is_empty() {
        w.put_u64(data.len() as u64);
        w.put_raw(data);
    }
}

/// Appends the terminating empty chunk.
pub fn encode_terminator(w: &mut WireWriter) {
    w.put_u64(0);
}

/// What both framed readers track.
#[derive(Debug, Clone, Copy)]
struct FrameState {
    /// Bytes left in the current chunk.
    remaining: u64,
    /// The terminator was read.
    finished: bool,
    /// A chunk header announced too much: the stream's place is lost for good, and every
    /// later read fails the same way (never reading the payload as headers).
    too_long: Option<FrameTooLong>,
    max_frame_len: u64,
}

impl FrameState {
    fn new(max_frame_len: u64) -> FrameState {
        FrameState {
            remaining: 0,
            finished: false,
            too_long: None,
            max_frame_len,
        }
    }

    /// The error of a stream that announced a chunk over the limit.
    fn check(&self) -> io::Result<()> {
        match self.too_long {
            Some(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            None => Ok(()),
        }
    }

    /// Takes a chunk header.
    fn start(&mut self, len: u64) -> io::Result<()> {
        if len == 0 {
            self.finished = true;
        } else if len > self.max_frame_len {
            self.too_long = Some(FrameTooLong {
                len,
                limit: self.max_frame_len,
            });
            return self.check();
        } else {
            self.remaining = len;
        }
        Ok(())
    }

    fn want(&self, buf_len: usize) -> usize {
        usize::try_from(self.remaining).map_or(buf_len, |r| r.min(buf_len))
    }
}

/// Reads the payload of a framed stream from a blocking reader; `read` returns 0 at the
/// terminator.
#[derive(Debug)]
pub struct FramedReader<R> {
    inner: R,
    state: FrameState,
}

impl<R: Read> FramedReader<R> {
    /// A reader whose chunks may be at most `max_frame_len` bytes.
    pub fn new(inner: R, max_frame_len: u64) -> FramedReader<R> {
        FramedReader {
            inner,
            state: FrameState::new(max_frame_len),
        }
    }

    /// Whether the terminator has been read.
    pub fn is_finished(&self) -> bool {
        self.state.finished
    }

    /// Reads and discards everything up to the terminator; returns how many payload bytes
    /// were skipped.
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }

    /// Unwraps the reader (positioned after the terminator if [`Self::is_finished`]).
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for FramedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.state.check()?;
        while !self.state.finished && self.state.remaining == 0 {
            let mut header = [0u8; 8];
            self.inner.read_exact(&mut header).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    eof_in_frame()
                } else {
                    e
                }
            })?;
            self.state.start(u64::from_le_bytes(header))?;
        }
        if self.state.finished || buf.is_empty() {
            return Ok(0);
        }
        let want = self.state.want(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(eof_in_frame());
        }
        self.state.remaining = self.state.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}

/// Reads the payload of a framed stream from a tokio reader; reading returns no bytes at the
/// terminator.
#[derive(Debug)]
pub struct AsyncFramedReader<R> {
    inner: R,
    state: FrameState,
    header: [u8; 8],
    header_filled: usize,
}

impl<R: AsyncRead + Unpin> AsyncFramedReader<R> {
    /// A reader whose chunks may be at most `max_frame_len` bytes.
    pub fn new(inner: R, max_frame_len: u64) -> AsyncFramedReader<R> {
        AsyncFramedReader {
            inner,
            state: FrameState::new(max_frame_len),
            header: [0; 8],
            header_filled: 0,
        }
    }

    /// Whether the terminator has been read.
    pub fn is_finished(&self) -> bool {
        self.state.finished
    }

    /// Reads and discards everything up to the terminator; returns how many payload bytes
    /// were skipped.
    pub async fn drain(&mut self) -> io::Result<u64> {
        let mut skipped = 0u64;
        let mut buf = [0u8; 8192];
        loop {
            let n = self.read(&mut buf).await?;
            if n == 0 {
                return Ok(skipped);
            }
            skipped += n as u64;
        }
    }

    /// Unwraps the reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncFramedReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.check()?;
        while !this.state.finished && this.state.remaining == 0 {
            while this.header_filled < 8 {
                let mut hb = ReadBuf::new(&mut this.header[this.header_filled..]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut hb))?;
                let n = hb.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(eof_in_frame()));
                }
                this.header_filled += n;
            }
            this.header_filled = 0;
            this.state.start(u64::from_le_bytes(this.header))?;
        }
        if this.state.finished || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let want = this.state.want(buf.remaining());
        let dest = buf.initialize_unfilled_to(want);
        let mut sub = ReadBuf::new(dest);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
        let n = sub.filled().len();
        if n == 0 {
            return Poll::Ready(Err(eof_in_frame()));
        }
        buf.advance(n);
        this.state.remaining = this.state.remaining.saturating_sub(n as u64);
        Poll::Ready(Ok(()))
    }
}

/// Writes a framed stream to a blocking writer: each `write` becomes chunks of at most
/// `max_frame_len` bytes; [`FramedWriter::finish`] writes the terminator.
#[derive(Debug)]
pub struct FramedWriter<W> {
    inner: W,
    max_frame_len: usize,
}

impl<W: Write> FramedWriter<W> {
    /// A writer producing chunks of at most `max_frame_len` bytes (at least 1).
    pub fn new(inner: W, max_frame_len: usize) -> FramedWriter<W> {
        FramedWriter {
            inner,
            max_frame_len: max_frame_len.max(1),
        }
    }

    /// Writes the terminator and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&0u64.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for FramedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.max_frame_len);
        if n > 0 {
            self.inner.write_all(&(n as u64).to_le_bytes())?;
            self.inner.write_all(&buf[..n])?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a framed stream to a tokio writer.
#[derive(Debug)]
pub struct AsyncFramedWriter<W> {
    inner: W,
    max_frame_len: usize,
}

impl<W: AsyncWrite + Unpin> AsyncFramedWriter<W> {
    /// A writer producing chunks of at most `max_frame_len` bytes (at least 1).
    pub fn new(inner: W, max_frame_len: usize) -> AsyncFramedWriter<W> {
        AsyncFramedWriter {
            inner,
            max_frame_len: max_frame_len.max(1),
        }
    }

    /// Writes `data` as one or more chunks.
    pub async fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(self.max_frame_len) {
            self.inner
                .write_all(&(chunk.len() as u64).to_le_bytes())
                .await?;
            self.inner.write_all(chunk).await?;
        }
        Ok(())
    }

    /// Writes the terminator, flushes and returns the writer.
    pub async fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&0u64.to_le_bytes()).await?;
        self.inner.flush().await?;
        Ok(self.inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn framed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut w = WireWriter::new();
        for c in chunks {
            encode_frame(&mut w, c);
        }
        encode_terminator(&mut w);
        w.into_inner()
    }

    #[test]
    fn sync_round_trip_and_trailing_data() {
        let mut bytes = framed(&[b"hello ", b"", b"world"]);
        bytes.extend_from_slice(b"after");
        let mut r = FramedReader::new(&bytes[..], 16);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello world");
        assert!(r.is_finished());
        assert_eq!(r.into_inner(), b"after");

        let mut w = FramedWriter::new(Vec::new(), 4);
        w.write_all(b"hello world").unwrap();
        let written = w.finish().unwrap();
        let mut out = Vec::new();
        FramedReader::new(&written[..], 4)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello world");
    }

    /// After a chunk over the limit the stream's place is lost: later reads and a drain fail
    /// the same way instead of reading the payload as chunk headers (a zero word there would
    /// pass for the terminator).
    #[tokio::test]
    async fn a_chunk_over_the_limit_poisons_the_stream() {
        let mut bytes = WireWriter::new();
        bytes.put_u64(100);
        let mut data = bytes.into_inner();
        data.extend_from_slice(&[0u8; 8]);
        data.extend_from_slice(b"NEXTREQ!");
        let mut r = AsyncFramedReader::new(&data[..], 16);
        let mut buf = [0u8; 8];
        assert!(r.read(&mut buf).await.is_err());
        let err = r.drain().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "framed stream: frame length 100 exceeds limit 16"
        );
        assert!(!r.is_finished());

        let mut r = FramedReader::new(&data[..], 16);
        assert!(r.read(&mut buf).is_err());
        assert!(r.drain().is_err());
        assert!(!r.is_finished());
    }

    #[test]
    fn sync_limits_and_truncation() {
        let bytes = framed(&[b"0123456789"]);
        let err = FramedReader::new(&bytes[..], 4).drain().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            "framed stream: frame length 10 exceeds limit 4"
        );

        let mut huge = WireWriter::new();
        huge.put_u64(u64::MAX);
        let err = FramedReader::new(huge.as_slice(), 1 << 20)
            .drain()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("frame length 18446744073709551615 exceeds limit 1048576")
        );

        let err = FramedReader::new(&bytes[..bytes.len() - 8], 16)
            .drain()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = FramedReader::new(&bytes[..12], 16).drain().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn async_round_trip_in_small_pieces() {
        let (client, server) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            let mut w = AsyncFramedWriter::new(client, 5);
            w.write_data(b"abcdefghijklmnopqrstuvwxyz").await.unwrap();
            w.finish().await.unwrap();
        });
        let mut r = AsyncFramedReader::new(server, 5);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"abcdefghijklmnopqrstuvwxyz");
        assert!(r.is_finished());
        writer.await.unwrap();

        let bytes = framed(&[b"0123456789"]);
        let err = AsyncFramedReader::new(&bytes[..], 4)
            .drain()
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "framed stream: frame length 10 exceeds limit 4"
        );
        let mut r = AsyncFramedReader::new(&bytes[..], 16);
        assert_eq!(r.drain().await.unwrap(), 10);
    }
}
