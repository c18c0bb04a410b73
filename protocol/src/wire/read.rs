//! The reader abstraction shared by the synchronous and the asynchronous decoder, and the
//! primitive reads built on it.
//!
//! Every value decoder in this crate is an `async fn` generic over [`WireRead`]. The tokio
//! reader ([`AsyncReader`](crate::wire::AsyncReader)) really suspends; the synchronous one
//! ([`SyncReader`](crate::wire::SyncReader)) finishes every read before returning, so its
//! futures complete on their first poll and [`run_ready`](crate::wire::run_ready) drives them
//! without an executor. One decoder, two kinds of I/O.

use std::future::Future;

use super::error::{WireError, WireErrorKind};

/// Bytes allocated ahead of the data that has actually arrived, when reading a long string.
const GROW_STEP: usize = 64 * 1024;

/// A source of protocol bytes.
pub trait WireRead: Send {
    /// Fills `buf` completely, or fails with [`WireErrorKind::UnexpectedEof`],
    /// [`WireErrorKind::Io`] or [`WireErrorKind::BudgetExhausted`].
    fn read_exact<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = Result<(), WireErrorKind>> + Send + 'a;

    /// How many bytes have been consumed so far (for error messages).
    fn position(&self) -> u64;
}

/// Position and optional byte budget of a reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadState {
    position: u64,
    /// Absolute position the reader may not go past, and the budget it came from.
    budget: Option<(u64, u64)>,
}

impl ReadState {
    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Allows at most `budget` more bytes to be read (`None`: no limit). A connection sets this
    /// before reading a request to bound what one request can make it read.
    pub fn set_budget(&mut self, budget: Option<u64>) {
        self.budget = budget.map(|b| (self.position.saturating_add(b), b));
    }

    /// Checks that `len` more bytes fit in the budget.
    pub fn check(&self, len: usize) -> Result<(), WireErrorKind> {
        if let Some((end, budget)) = self.budget
            && self.position.saturating_add(len as u64) > end
        {
            return Err(WireErrorKind::BudgetExhausted { budget });
        }
        Ok(())
    }

    /// Records that `len` bytes were consumed.
    pub fn advance(&mut self, len: usize) {
        self.position = self.position.saturating_add(len as u64);
    }
}

/// Reads one little-endian u64.
pub async fn read_u64<R: WireRead>(r: &mut R, what: &'static str) -> Result<u64, WireError> {
    let at = r.position();
    let mut buf = [0u8; 8];
    r.read_exact(&mut buf)
        .await
        .map_err(|kind| WireError::at(what, at, kind))?;
    Ok(u64::from_le_bytes(buf))
}

/// Reads a u64 that must not exceed `max` (Nix's `readNum<T>` for narrower types).
pub async fn read_u64_max<R: WireRead>(
    r: &mut R,
    max: u64,
    what: &'static str,
) -> Result<u64, WireError> {
    let at = r.position();
    let value = read_u64(r, what).await?;
    if value > max {
        return Err(WireError::at(
            what,
            at,
            WireErrorKind::IntegerTooLarge { value, max },
        ));
    }
    Ok(value)
}

/// Reads a u64 that must be one of `0..=max`, reporting others as unknown values (for enums).
pub async fn read_tag<R: WireRead>(
    r: &mut R,
    max: u64,
    what: &'static str,
) -> Result<u64, WireError> {
    let at = r.position();
    let value = read_u64(r, what).await?;
    if value > max {
        return Err(WireError::at(
            what,
            at,
            WireErrorKind::UnknownValue { value },
        ));
    }
    Ok(value)
}

/// Reads a u64 naming one value of an enum (`from_wire` maps it); any other number is reported
/// as an unknown value of `what`.
pub async fn read_enum<R: WireRead, T>(
    r: &mut R,
    what: &'static str,
    from_wire: impl FnOnce(u64) -> Option<T>,
) -> Result<T, WireError> {
    let at = r.position();
    let value = read_u64(r, what).await?;
    from_wire(value).ok_or_else(|| WireError::at(what, at, WireErrorKind::UnknownValue { value }))
}

/// Reads a signed 64-bit number that Nix reads with `readNum<int64_t>`/`readNum<time_t>`:
/// values above `i64::MAX` are rejected, so negative numbers do not cross the wire.
pub async fn read_i64<R: WireRead>(r: &mut R, what: &'static str) -> Result<i64, WireError> {
    let value = read_u64_max(r, i64::MAX as u64, what).await?;
    Ok(i64::try_from(value).unwrap_or(i64::MAX))
}

/// Reads a boolean: any non-zero value is true, as in Nix.
pub async fn read_bool<R: WireRead>(r: &mut R, what: &'static str) -> Result<bool, WireError> {
    Ok(read_u64(r, what).await? != 0)
}

/// Reads a length or count and checks it against `limit` before anything is allocated.
pub async fn read_len<R: WireRead>(
    r: &mut R,
    limit: u64,
    what: &'static str,
) -> Result<usize, WireError> {
    let at = r.position();
    let len = read_u64(r, what).await?;
    if len > limit {
        return Err(WireError::at(
            what,
            at,
            WireErrorKind::TooLong { len, limit },
        ));
    }
    usize::try_from(len).map_err(|_| {
        WireError::at(
            what,
            at,
            WireErrorKind::TooLong {
                len,
                limit: usize::MAX as u64,
            },
        )
    })
}

/// Reads exactly `len` raw bytes (no length prefix, no padding), growing the buffer with the
/// data that arrives rather than allocating `len` up front.
pub async fn read_raw<R: WireRead>(
    r: &mut R,
    len: usize,
    what: &'static str,
) -> Result<Vec<u8>, WireError> {
    let at = r.position();
    let mut buf = Vec::with_capacity(len.min(GROW_STEP));
    while buf.len() < len {
        let old = buf.len();
        let step = (len - old).min(GROW_STEP);
        buf.resize(old + step, 0);
        r.read_exact(&mut buf[old..])
            .await
            .map_err(|kind| WireError::at(what, at, kind))?;
    }
    Ok(buf)
}

/// Reads and checks the zero padding after a string of `len` bytes.
pub async fn read_padding<R: WireRead>(
    r: &mut R,
    len: usize,
    what: &'static str,
) -> Result<(), WireError> {
    let pad = padding(len);
    if pad == 0 {
        return Ok(());
    }
    let at = r.position();
    let mut buf = [0u8; 8];
    r.read_exact(&mut buf[..pad])
        .await
        .map_err(|kind| WireError::at(what, at, kind))?;
    if let Some((i, &byte)) = buf[..pad].iter().enumerate().find(|(_, b)| **b != 0) {
        return Err(WireError::at(
            what,
            at + i as u64,
            WireErrorKind::NonZeroPadding { byte },
        ));
    }
    Ok(())
}

/// Reads a length-prefixed, zero-padded byte string of at most `limit` bytes.
pub async fn read_bytes<R: WireRead>(
    r: &mut R,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, WireError> {
    let len = read_len(r, limit, what).await?;
    let data = read_raw(r, len, what).await?;
    read_padding(r, len, what).await?;
    Ok(data)
}

/// Reads a byte string that must be UTF-8 text.
pub async fn read_string<R: WireRead>(
    r: &mut R,
    limit: u64,
    what: &'static str,
) -> Result<String, WireError> {
    let at = r.position();
    let bytes = read_bytes(r, limit, what).await?;
    String::from_utf8(bytes).map_err(|e| {
        WireError::at(
            what,
            at,
            WireErrorKind::InvalidUtf8 {
                valid_up_to: e.utf8_error().valid_up_to(),
            },
        )
    })
}

/// Reads a u64 that must equal `expected` (magic numbers).
pub async fn expect_u64<R: WireRead>(
    r: &mut R,
    expected: u64,
    what: &'static str,
) -> Result<(), WireError> {
    let at = r.position();
    let got = read_u64(r, what).await?;
    if got != expected {
        return Err(WireError::at(
            what,
            at,
            WireErrorKind::BadMagic { got, expected },
        ));
    }
    Ok(())
}

/// Bytes of zero padding after a string of `len` bytes.
pub const fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}
