//! The synchronous decoder: a [`WireRead`] over `std::io::Read` (byte slices included) whose
//! futures are always ready, and [`run_ready`] to drive them.

use std::future::Future;
use std::io::{ErrorKind, Read};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::codec::Decode;
use super::error::{WireError, WireErrorKind};
use super::read::{ReadState, WireRead};
use crate::context::WireContext;

/// Runs a decoder future over a [`SyncReader`] to completion.
///
/// The future is polled once with a no-op waker; a synchronous reader never suspends, so it is
/// then complete. A future that does suspend (a reader that is not synchronous) gives
/// [`WireErrorKind::NotReady`] instead of blocking or panicking. The error type is any that a
/// [`WireError`] converts into (usually `WireError` itself).
pub fn run_ready<T, E, F>(future: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: From<WireError>,
{
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => {
            Err(WireError::new("synchronous decoding", WireErrorKind::NotReady).into())
        }
    }
}

/// A [`WireRead`] over a blocking reader.
#[derive(Debug)]
pub struct SyncReader<R> {
    inner: R,
    state: ReadState,
}

impl<R: Read + Send> SyncReader<R> {
    /// Wraps a reader. Wrap sockets and files in a `BufReader`: the decoder reads 8 bytes at
    /// a time.
    pub fn new(inner: R) -> SyncReader<R> {
        SyncReader {
            inner,
            state: ReadState::default(),
        }
    }

    /// Decodes one value.
    pub fn decode<T: Decode>(
        &mut self,
        cx: &WireContext,
        what: &'static str,
    ) -> Result<T, WireError> {
        run_ready(T::decode(self, cx, what))
    }

    /// Position and budget.
    pub fn state_mut(&mut self) -> &mut ReadState {
        &mut self.state
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Unwraps the reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_now(&mut self, buf: &mut [u8]) -> Result<(), WireErrorKind> {
        self.state.check(buf.len())?;
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.state.advance(buf.len());
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(WireErrorKind::UnexpectedEof),
            Err(e) => Err(WireErrorKind::Io(e)),
        }
    }
}

impl<R: Read + Send> WireRead for SyncReader<R> {
    fn read_exact<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = Result<(), WireErrorKind>> + Send + 'a {
        std::future::ready(self.read_now(buf))
    }

    fn position(&self) -> u64 {
        self.state.position()
    }
}
