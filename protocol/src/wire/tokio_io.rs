//! The asynchronous decoder: a [`WireRead`] over `tokio::io::AsyncRead`.

use std::io::ErrorKind;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::codec::Decode;
use super::error::{WireError, WireErrorKind};
use super::read::{ReadState, WireRead};
use crate::context::WireContext;

/// A [`WireRead`] over a tokio reader.
///
/// Wrap sockets in a `tokio::io::BufReader`: the decoder reads 8 bytes at a time. If a read
/// fails or the future is dropped half-way, the stream position is lost and the connection must
/// be closed.
#[derive(Debug)]
pub struct AsyncReader<R> {
    inner: R,
    state: ReadState,
}

impl<R: AsyncRead + Unpin + Send> AsyncReader<R> {
    /// Wraps a reader.
    pub fn new(inner: R) -> AsyncReader<R> {
        AsyncReader {
            inner,
            state: ReadState::default(),
        }
    }

    /// Decodes one value.
    pub async fn decode<T: Decode>(
        &mut self,
        cx: &WireContext,
        what: &'static str,
    ) -> Result<T, WireError> {
        T::decode(self, cx, what).await
    }

    /// Position and budget.
    pub fn state_mut(&mut self) -> &mut ReadState {
        &mut self.state
    }

    /// The wrapped reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps the reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin + Send> WireRead for AsyncReader<R> {
    async fn read_exact<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<(), WireErrorKind> {
        self.state.check(buf.len())?;
        match self.inner.read_exact(buf).await {
            Ok(_) => {
                self.state.advance(buf.len());
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(WireErrorKind::UnexpectedEof),
            Err(e) => Err(WireErrorKind::Io(e)),
        }
    }

    fn position(&self) -> u64 {
        self.state.position()
    }
}
