//! The one error type of the wire layer: what was being read or written, where, and what was
//! wrong with it.

use std::borrow::Cow;
use std::fmt;

use thiserror::Error;

/// What was wrong (the "why" of a [`WireError`]).
#[derive(Debug, Error)]
pub enum WireErrorKind {
    /// The input ended in the middle of a value.
    #[error("unexpected end of input")]
    UnexpectedEof,
    /// A length or count is larger than the [`Limits`](crate::wire::Limits) allow. Checked
    /// before anything is allocated for it.
    #[error("length {len} exceeds limit {limit}")]
    TooLong {
        /// The length the peer announced.
        len: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The zero bytes that pad a string to a multiple of 8 were not zero.
    #[error("non-zero padding byte {byte:#04x}")]
    NonZeroPadding {
        /// The offending byte.
        byte: u8,
    },
    /// A string that must be text is not valid UTF-8.
    #[error("not valid UTF-8 (first bad byte at index {valid_up_to} of the string)")]
    InvalidUtf8 {
        /// How many leading bytes were valid.
        valid_up_to: usize,
    },
    /// An integer is too large for the type it is read into.
    #[error("integer {value} is too large (maximum {max})")]
    IntegerTooLarge {
        /// The value on the wire.
        value: u64,
        /// The largest value the type holds.
        max: u64,
    },
    /// A number that must be one of a fixed set of values is not.
    #[error("unknown value {value}")]
    UnknownValue {
        /// The value on the wire.
        value: u64,
    },
    /// A magic number did not match.
    #[error("bad magic number {got:#x} (expected {expected:#x})")]
    BadMagic {
        /// The value on the wire.
        got: u64,
        /// The expected magic.
        expected: u64,
    },
    /// The text of a value does not parse (store path, hash, content address, ...).
    #[error("{0}")]
    Invalid(String),
    /// A value has no encoding at the negotiated protocol version or feature set.
    #[error("cannot be encoded: {0}")]
    NotRepresentable(String),
    /// A read budget set on the reader (see [`ReadState::set_budget`](crate::wire::ReadState::set_budget))
    /// is exhausted.
    #[error("read budget of {budget} bytes exhausted")]
    BudgetExhausted {
        /// The budget that was set.
        budget: u64,
    },
    /// A synchronous reader returned `Pending`, which only a broken `WireRead` implementation
    /// does.
    #[error("a synchronous reader was not ready")]
    NotReady,
    /// The underlying reader or writer failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// An error while decoding or encoding a protocol value.
///
/// Its message names the field (`what`), the byte offset in the stream where the offending
/// value started (when reading), and the problem, e.g.
/// `store path list (at byte 8): length 18446744073709551615 exceeds limit 1048576`.
#[derive(Debug, Error)]
pub struct WireError {
    what: Cow<'static, str>,
    offset: Option<u64>,
    /// What was wrong (already part of the message, so not reported again as a source).
    pub kind: WireErrorKind,
}

impl WireError {
    /// An error about `what` at byte `offset` of the input.
    pub fn at(what: impl Into<Cow<'static, str>>, offset: u64, kind: WireErrorKind) -> WireError {
        WireError {
            what: what.into(),
            offset: Some(offset),
            kind,
        }
    }

    /// An error about `what` with no position (encoding, or a check after reading).
    pub fn new(what: impl Into<Cow<'static, str>>, kind: WireErrorKind) -> WireError {
        WireError {
            what: what.into(),
            offset: None,
            kind,
        }
    }

    /// A value that does not parse.
    pub fn invalid(
        what: impl Into<Cow<'static, str>>,
        offset: Option<u64>,
        msg: impl fmt::Display,
    ) -> WireError {
        WireError {
            what: what.into(),
            offset,
            kind: WireErrorKind::Invalid(msg.to_string()),
        }
    }

    /// A value that has no encoding in this context.
    pub fn not_representable(
        what: impl Into<Cow<'static, str>>,
        msg: impl fmt::Display,
    ) -> WireError {
        WireError::new(what, WireErrorKind::NotRepresentable(msg.to_string()))
    }

    /// The field the error is about.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The byte offset of the offending value in the input, when reading.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// Prefixes the field name with an outer context: `outer: what`.
    pub fn context(mut self, outer: &str) -> WireError {
        self.what = Cow::Owned(format!("{outer}: {}", self.what));
        self
    }

    /// Whether the input ended early (as opposed to being malformed).
    pub fn is_eof(&self) -> bool {
        matches!(self.kind, WireErrorKind::UnexpectedEof)
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{} (at byte {offset}): {}", self.what, self.kind),
            None => write!(f, "{}: {}", self.what, self.kind),
        }
    }
}
