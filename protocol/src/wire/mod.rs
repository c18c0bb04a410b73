//! Wire primitives of the Nix worker protocol.
//!
//! * Integers are 8-byte little-endian u64; booleans are 0/1 (any non-zero reads as true).
//! * A string is a u64 length, the bytes, then zero bytes up to a multiple of 8. Readers
//!   reject non-zero padding (as Nix 2.3 and 2.35 do). Nix strings are bytes:
//!   [`ByteString`] keeps them so; `String` is used only where the value is text and
//!   requires UTF-8.
//! * Lists, sets and maps: see [`codec`].
//!
//! Decoding is bounded by [`Limits`] (checked before allocating), iterative, and never panics;
//! every failure is a [`WireError`] naming the field, the byte offset and the problem.
//!
//! The same decoders serve blocking I/O ([`SyncReader`], driven by [`run_ready`]) and tokio
//! ([`AsyncReader`]); see [`read`] for how.

pub mod codec;
pub mod error;
pub mod limits;
pub mod read;
pub mod sync;
pub mod tokio_io;
pub mod write;

pub use codec::{ByteString, Decode, Encode};
pub use error::{WireError, WireErrorKind};
pub use limits::Limits;
pub use read::{ReadState, WireRead};
pub use sync::{SyncReader, run_ready};
pub use tokio_io::AsyncReader;
pub use write::{WireWriter, encode_to_vec};
