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
/// The first read's size; each read that fills the buffer doubles it, up to [`CHUNK`]. Most
/// adds are small (a `.drv`): zeroing a whole chunk for each cost more than reading it.
const FIRST_READ: usize = 16 * 1024;

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
    let mut pump = Pump::new(limit);
    while let Some(want) = pump.want() {
        let read = src.read(&mut pump.buf[..want]).await;
        match pump.chunk(read) {
            Step::Retry => continue,
            Step::End => return,
            Step::Send(chunk, last) => {
                if tx.send(chunk).await.is_err() || last {
                    return;
                }
            }
        }
    }
}

/// [`pump_async`] for a blocking stream; runs on the calling (non-async) thread.
pub(crate) fn pump_blocking<R>(src: &mut R, limit: Option<u64>, tx: mpsc::Sender<Chunk>)
where
    R: Read + ?Sized,
{
    let mut pump = Pump::new(limit);
    while let Some(want) = pump.want() {
        let read = src.read(&mut pump.buf[..want]);
        match pump.chunk(read) {
            Step::Retry => continue,
            Step::End => return,
            Step::Send(chunk, last) => {
                if tx.blocking_send(chunk).is_err() || last {
                    return;
                }
            }
        }
    }
}

/// What both pumps share: how much to read next and what a read result becomes.
struct Pump {
    buf: Vec<u8>,
    total: u64,
    limit: Option<u64>,
}

/// What to do after one read.
enum Step {
    /// Interrupted: read again.
    Retry,
    /// The stream ended where it may.
    End,
    /// Send this chunk; `true` if it is the last (an error).
    Send(Chunk, bool),
}

impl Pump {
    fn new(limit: Option<u64>) -> Pump {
        Pump {
            buf: vec![0u8; FIRST_READ],
            total: 0,
            limit,
        }
    }

    /// Bytes to read next, or `None` when the limit is reached.
    fn want(&self) -> Option<usize> {
        match self.limit {
            Some(l) if self.total >= l => None,
            Some(l) => Some(
                self.buf
                    .len()
                    .min(usize::try_from(l - self.total).unwrap_or(CHUNK)),
            ),
            None => Some(self.buf.len()),
        }
    }

    fn chunk(&mut self, read: io::Result<usize>) -> Step {
        match read {
            Ok(0) => match self.limit {
                Some(l) => Step::Send(Err(short_stream(self.total, l)), true),
                None => Step::End,
            },
            Ok(n) => {
                self.total += n as u64;
                let chunk = self.buf[..n].to_vec();
                if n == self.buf.len() && n < CHUNK {
                    self.buf.resize((n * 2).min(CHUNK), 0);
                }
                Step::Send(Ok(chunk), false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Retry,
            Err(e) => Step::Send(Err(e), true),
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
