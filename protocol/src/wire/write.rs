//! The encoder's output buffer.

use super::codec::Encode;
use super::error::WireError;
use super::read::padding;
use crate::context::WireContext;

/// Protocol bytes being built in memory. Encoding is pure; the caller writes the buffer out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireWriter {
    buf: Vec<u8>,
}

impl WireWriter {
    /// An empty buffer.
    pub fn new() -> WireWriter {
        WireWriter::default()
    }

    /// Appends a little-endian u64.
    pub fn put_u64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    /// Appends a boolean as 0 or 1.
    pub fn put_bool(&mut self, value: bool) {
        self.put_u64(u64::from(value));
    }

    /// Appends a length-prefixed byte string and its zero padding.
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        self.put_u64(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
        self.buf
            .extend_from_slice(&[0u8; 8][..padding(bytes.len())]);
    }

    /// Appends a string (as its UTF-8 bytes).
    pub fn put_str(&mut self, text: &str) {
        self.put_bytes(text.as_bytes());
    }

    /// Appends raw bytes with no length and no padding (framed-stream payloads, NARs).
    pub fn put_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends an encodable value.
    pub fn put<T: Encode + ?Sized>(
        &mut self,
        value: &T,
        cx: &WireContext,
    ) -> Result<(), WireError> {
        value.encode(self, cx)
    }

    /// The bytes so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Empties the buffer, keeping its allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// Encodes one value into a new buffer.
pub fn encode_to_vec<T: Encode + ?Sized>(
    value: &T,
    cx: &WireContext,
) -> Result<Vec<u8>, WireError> {
    let mut w = WireWriter::new();
    value.encode(&mut w, cx)?;
    Ok(w.into_inner())
}
