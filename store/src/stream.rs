//! Moving a caller's byte stream to the blocking thread that ingests it.
//!
//! Ingest is blocking code (it runs its own threads and writes files), while callers hold
//! either an async stream (the daemon's socket) or a blocking one. A *pump* reads the caller's
//! stream, from the caller's side, and sends it in chunks over a bounded channel; the ingest
//! reads the chunks through [`ChannelReader`]. The caller's stream is only ever borrowed, so
//! nothing needs to be `'static` and the stream is the caller's again when the operation ends.
//!
//! With a limit the pump reads exactly that many bytes and no more, which is what lets a stream
//! carry more data after a NAR (`AddMultipleToStore`). If the stream ends before the limit, the
//! reader sees an error after the last byte. At most [`DEPTH`] chunks of [`CHUNK`] bytes are in
//! flight.

use std::future::Future;
use std::io::{self, Read};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::StoreError;

/// Largest chunk handed over.
pub(crate) const CHUNK: usize = 256 * 1024;
/// Chunks in flight.
pub(crate) const DEPTH: usize = 8;

type Chunk = io::Result<Vec<u8>>;

/// A fresh channel: the pump gets the sender, the ingest the reader.
pub(crate) fn channel() -> (mpsc::Sender<Chunk>, ChannelReader) {
    let (tx, rx) = mpsc::channel(DEPTH);
    (
        tx,
        ChannelReader {
            rx,
            current: Vec::new(),
            pos: 0,
            failed: None,
        },
    )
}

/// The blocking end of a pump. Reads block, so it belongs on a blocking thread.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    current: Vec<u8>,
    pos: usize,
    /// The pump's error, returned again on every later read.
    failed: Option<(io::ErrorKind, String)>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(rest) = self.current.get(self.pos..)
                && !rest.is_empty()
            {
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                self.pos += n;
                return Ok(n);
            }
            if let Some((kind, msg)) = &self.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => {
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
            }
        }
    }
}

fn short_stream(got: u64, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the stream ended after {got} of the {limit} bytes announced"),
    )
}

/// Pumps `src` into `tx`: exactly `limit` bytes, or everything up to the end of the stream.
/// Stops early when the reading side goes away.
pub(crate) async fn pump_async<R>(src: &mut R, limit: Option<u64>, tx: mpsc::Sender<Chunk>)
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let want = match limit {
            Some(l) if total >= l => return,
            Some(l) => CHUNK.min(usize::try_from(l - total).unwrap_or(CHUNK)),
            None => CHUNK,
        };
        let chunk = match src.read(&mut buf[..want]).await {
            Ok(0) => match limit {
                Some(l) => Err(short_stream(total, l)),
                None => return,
            },
            Ok(n) => {
                total += n as u64;
                Ok(buf[..n].to_vec())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
        let last = chunk.is_err();
        if tx.send(chunk).await.is_err() || last {
            return;
        }
    }
}

/// [`pump_async`] for a blocking stream; runs on the calling (non-async) thread.
pub(crate) fn pump_blocking<R>(src: &mut R, limit: Option<u64>, tx: mpsc::Sender<Chunk>)
where
    R: Read + ?Sized,
{
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let want = match limit {
            Some(l) if total >= l => return,
            Some(l) => CHUNK.min(usize::try_from(l - total).unwrap_or(CHUNK)),
            None => CHUNK,
        };
        let chunk = match src.read(&mut buf[..want]) {
            Ok(0) => match limit {
                Some(l) => Err(short_stream(total, l)),
                None => return,
            },
            Ok(n) => {
                total += n as u64;
                Ok(buf[..n].to_vec())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
        let last = chunk.is_err();
        if tx.blocking_send(chunk).is_err() || last {
            return;
        }
    }
}

/// Runs `work` (which reads the channel) while `pump` fills it. Returns as soon as `work` is
/// done: after a failure the rest of the stream is not read.
pub(crate) async fn with_pump<T>(
    work: impl Future<Output = Result<T, StoreError>>,
    pump: impl Future<Output = ()>,
) -> Result<T, StoreError> {
    tokio::pin!(work);
    tokio::pin!(pump);
    let mut pumping = true;
    loop {
        tokio::select! {
            result = &mut work => return result,
            () = &mut pump, if pumping => pumping = false,
        }
    }
}

/// Reads the rest of `reader`, discarding it; returns the byte count.
pub(crate) fn drain(reader: &mut impl Read) -> io::Result<u64> {
    io::copy(reader, &mut io::sink())
}
