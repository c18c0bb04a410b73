//! The [`Encode`] and [`Decode`] traits and their implementations for scalars, strings and
//! containers.
//!
//! Containers: a list (`Vec`) and a set (`BTreeSet`) are a u64 count and the elements; a map
//! (`BTreeMap`) is a u64 count and key, value pairs. Sets and maps are written in ascending
//! order, as Nix writes them; readers accept any order (duplicates collapse). Counts are
//! bounded by [`Limits::max_list_len`](crate::wire::Limits::max_list_len) and checked before
//! anything is allocated. Nesting is by type only (`Vec<Vec<String>>`), never by input, so
//! decoding does not recurse on input.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;

use super::error::WireError;
use super::read::{WireRead, read_bool, read_bytes, read_len, read_string, read_u64};
use super::write::WireWriter;
use crate::context::WireContext;

/// Entries allocated ahead of the entries that have actually arrived.
const LIST_PREALLOC: usize = 1024;

/// A value with a wire encoding (possibly depending on the negotiated version).
pub trait Encode {
    /// Appends the encoding of `self` to `w`.
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError>;
}

/// A value that can be read from the wire.
pub trait Decode: Sized + Send {
    /// Reads one value. `what` names the field for error messages.
    fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send;
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        (**self).encode(w, cx)
    }
}

impl Encode for u64 {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_u64(*self);
        Ok(())
    }
}

impl Decode for u64 {
    fn decode<R: WireRead>(
        r: &mut R,
        _: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_u64(r, what)
    }
}

impl Encode for bool {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_bool(*self);
        Ok(())
    }
}

impl Decode for bool {
    fn decode<R: WireRead>(
        r: &mut R,
        _: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_bool(r, what)
    }
}

impl Encode for str {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_str(self);
        Ok(())
    }
}

impl Encode for String {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_str(self);
        Ok(())
    }
}

/// Text: must be UTF-8, at most [`Limits::max_string_len`](crate::wire::Limits) bytes.
impl Decode for String {
    fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_string(r, cx.limits.max_string_len, what)
    }
}

/// A Nix string read as the bytes it is, with no UTF-8 requirement: file contents, environment
/// values, log output. At most [`Limits::max_bytes_len`](crate::wire::Limits) bytes.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteString(pub Vec<u8>);

impl ByteString {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as text, with invalid UTF-8 replaced (for display).
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl fmt::Debug for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteString({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl From<Vec<u8>> for ByteString {
    fn from(bytes: Vec<u8>) -> Self {
        ByteString(bytes)
    }
}

impl From<&[u8]> for ByteString {
    fn from(bytes: &[u8]) -> Self {
        ByteString(bytes.to_vec())
    }
}

impl From<&str> for ByteString {
    fn from(text: &str) -> Self {
        ByteString(text.as_bytes().to_vec())
    }
}

impl Encode for ByteString {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_bytes(&self.0);
        Ok(())
    }
}

impl Decode for ByteString {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> Result<Self, WireError> {
        read_bytes(r, cx.limits.max_bytes_len, what)
            .await
            .map(ByteString)
    }
}

/// Writes a count and then each item.
pub fn encode_seq<'a, T: Encode + 'a>(
    w: &mut WireWriter,
    cx: &WireContext,
    len: usize,
    items: impl IntoIterator<Item = &'a T>,
) -> Result<(), WireError> {
    w.put_u64(len as u64);
    for item in items {
        item.encode(w, cx)?;
    }
    Ok(())
}

impl<T: Encode> Encode for [T] {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        encode_seq(w, cx, self.len(), self)
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        encode_seq(w, cx, self.len(), self)
    }
}

impl<T: Decode> Decode for Vec<T> {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> Result<Self, WireError> {
        let len = read_len(r, cx.limits.max_list_len, what).await?;
        let mut items = Vec::with_capacity(len.min(LIST_PREALLOC));
        for _ in 0..len {
            items.push(T::decode(r, cx, what).await?);
        }
        Ok(items)
    }
}

impl<T: Encode> Encode for BTreeSet<T> {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        encode_seq(w, cx, self.len(), self)
    }
}

impl<T: Decode + Ord> Decode for BTreeSet<T> {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> Result<Self, WireError> {
        let len = read_len(r, cx.limits.max_list_len, what).await?;
        let mut items = BTreeSet::new();
        for _ in 0..len {
            items.insert(T::decode(r, cx, what).await?);
        }
        Ok(items)
    }
}

impl<K: Encode, V: Encode> Encode for BTreeMap<K, V> {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        w.put_u64(self.len() as u64);
        for (k, v) in self {
            k.encode(w, cx)?;
            v.encode(w, cx)?;
        }
        Ok(())
    }
}

impl<K: Decode + Ord, V: Decode> Decode for BTreeMap<K, V> {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> Result<Self, WireError> {
        let len = read_len(r, cx.limits.max_list_len, what).await?;
        let mut map = BTreeMap::new();
        for _ in 0..len {
            let k = K::decode(r, cx, what).await?;
            let v = V::decode(r, cx, what).await?;
            map.insert(k, v);
        }
        Ok(map)
    }
}
