//! Pulling client data through the stderr channel: the `STDERR_READ` exchange that
//! `AddToStoreNar` uses at 1.21 and 1.22 (Nix 2.1 to 2.3) and `ImportPaths` uses always.
//!
//! After `startWork` the daemon sends `STDERR_READ n` (u64 [`STDERR_READ`], u64 n: "send me up
//! to n bytes"); the client answers with a `str` of at most n bytes, outside the stderr
//! stream. A 0-length answer means the client has no more data, which Nix treats as an error;
//! a client asked for more than it has left fails, so the daemon must ask for no more than it
//! still needs (for `AddToStoreNar` it knows the NAR size).
//!
//! Pure encode/decode steps; the daemon drives the I/O:
//!
//! ```
//! use pkgchain_protocol::tunnel::{StderrReadSource, encode_read_answer};
//! use pkgchain_protocol::wire::{SyncReader, WireWriter, run_ready};
//! use pkgchain_protocol::{ProtocolVersion, WireContext};
//!
//! let mut source = StderrReadSource::new(Some(5), 4);
//! let mut nar = Vec::new();
//! // The client's answers, as they would arrive.
//! let mut answers = WireWriter::new();
//! encode_read_answer(&mut answers, b"abcd");
//! encode_read_answer(&mut answers, b"e");
//! let mut r = SyncReader::new(answers.as_slice());
//! while let Some(n) = source.next_request() {
//!     let mut to_client = WireWriter::new();
//!     StderrReadSource::encode_request(&mut to_client, n); // send, flush
//!     let data = run_ready(source.read_answer(&mut r, n))?;
//!     nar.extend_from_slice(&data);
//! }
//! assert_eq!(nar, b"abcde");
//! # Ok::<(), pkgchain_protocol::wire::WireError>(())
//! ```

use crate::stderr::STDERR_READ;
use crate::wire::read::read_bytes;
use crate::wire::{WireError, WireErrorKind, WireRead, WireWriter};

/// The daemon's side of a `STDERR_READ` exchange: how much to ask for, and reading the answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StderrReadSource {
    /// Bytes still wanted (`None`: unknown, until the client stops).
    remaining: Option<u64>,
    /// Most bytes asked for at once.
    max_chunk: u64,
    /// Bytes received so far.
    received: u64,
}

impl StderrReadSource {
    /// A source of `total` bytes (`None` if unknown), asked for at most `max_chunk` (at least
    /// 1) bytes at a time. The answer buffer is at most `max_chunk` bytes.
    pub fn new(total: Option<u64>, max_chunk: u64) -> StderrReadSource {
        StderrReadSource {
            remaining: total,
            max_chunk: max_chunk.max(1),
            received: 0,
        }
    }

    /// How many bytes to ask for next, or `None` once all `total` bytes have arrived.
    pub fn next_request(&self) -> Option<u64> {
        match self.remaining {
            Some(0) => None,
            Some(n) => Some(n.min(self.max_chunk)),
            None => Some(self.max_chunk),
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Appends the request `STDERR_READ n`.
    pub fn encode_request(w: &mut WireWriter, n: u64) {
        w.put_u64(STDERR_READ);
        w.put_u64(n);
    }

    /// Reads the client's answer to a request for `requested` bytes. An answer longer than
    /// requested, or an empty one (the client has no more data), is an error.
    pub async fn read_answer<R: WireRead>(
        &mut self,
        r: &mut R,
        requested: u64,
    ) -> Result<Vec<u8>, WireError> {
        let what = "STDERR_READ answer";
        let at = r.position();
        let data = read_bytes(r, requested, what).await?;
        if data.is_empty() {
            return Err(WireError::at(what, at, WireErrorKind::UnexpectedEof));
        }
        let len = data.len() as u64;
        self.received = self.received.saturating_add(len);
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(len);
        }
        Ok(data)
    }
}

/// The client's side: appends the answer to a `STDERR_READ` (at most the bytes asked for;
/// empty when there is no more data).
pub fn encode_read_answer(w: &mut WireWriter, data: &[u8]) {
    w.put_bytes(data);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::{SyncReader, run_ready};

    #[test]
    fn asks_for_what_is_left_and_checks_answers() {
        let mut source = StderrReadSource::new(Some(10), 8);
        assert_eq!(source.next_request(), Some(8));
        let mut w = WireWriter::new();
        StderrReadSource::encode_request(&mut w, 8);
        assert_eq!(w.as_slice()[..8], STDERR_READ.to_le_bytes());

        let mut answers = WireWriter::new();
        encode_read_answer(&mut answers, b"0123456");
        encode_read_answer(&mut answers, b"789");
        let mut r = SyncReader::new(answers.as_slice());
        assert_eq!(
            run_ready(source.read_answer(&mut r, 8)).unwrap(),
            b"0123456"
        );
        assert_eq!(source.next_request(), Some(3));
        assert_eq!(run_ready(source.read_answer(&mut r, 3)).unwrap(), b"789");
        assert_eq!(source.next_request(), None);
        assert_eq!(source.received(), 10);
    }

    #[test]
    fn too_long_and_empty_answers_are_errors() {
        let mut source = StderrReadSource::new(None, 4);
        let mut answers = WireWriter::new();
        encode_read_answer(&mut answers, b"12345");
        let err =
            run_ready(source.read_answer(&mut SyncReader::new(answers.as_slice()), 4)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "STDERR_READ answer (at byte 0): length 5 exceeds limit 4"
        );

        let mut answers = WireWriter::new();
        encode_read_answer(&mut answers, b"");
        let err =
            run_ready(source.read_answer(&mut SyncReader::new(answers.as_slice()), 4)).unwrap_err();
        assert!(err.is_eof(), "{err}");
        assert_eq!(source.next_request(), Some(4));
    }
}
