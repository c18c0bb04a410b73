//! Bounds on everything a peer can make the decoder allocate.

/// Upper bounds on lengths and counts read from the wire.
///
/// Every length is checked against these before anything is allocated for it, and even then
/// buffers grow with the data that actually arrives (at most 64 KiB ahead of it), so a peer that
/// announces a large value and sends nothing costs nothing.
///
/// The defaults are generous for every real Nix client (the largest real lists are closures of
/// some ten thousand paths; the largest real strings are build-log lines, error messages and
/// `__json` environment values of a few MiB) and small enough that one connection cannot
/// exhaust memory with a single value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest text string: store paths, names, settings, messages, JSON realisations.
    /// Default 1 MiB.
    pub max_string_len: u64,
    /// Longest binary string ([`ByteString`](crate::wire::ByteString)): file contents of
    /// `AddTextToStore`, environment values of a derivation, log data. Default 64 MiB.
    pub max_bytes_len: u64,
    /// Most entries in a list, set or map. Default 2^20 (1,048,576).
    pub max_list_len: u64,
    /// Most entries of the small lists: fields of one activity or result message, traces of
    /// one error, names in a handshake feature list. Default 1024.
    pub max_fields: u64,
    /// Longest single chunk of a framed stream. Nix writes chunks of at most 32 KiB; the
    /// default is 16 MiB.
    pub max_frame_len: u64,
    /// Longest NAR read off the wire without framing (the old `AddToStore` form and
    /// `AddToStoreNar` below 1.21, see [`crate::nar_copy`]). Nothing is allocated for it; it
    /// bounds how much one request can make a daemon spool. Default 1 TiB (the NAR reader's
    /// default largest file); a daemon should set it to what it is willing to store.
    pub max_nar_len: u64,
}

impl Limits {
    /// The defaults described on each field.
    pub const DEFAULT: Limits = Limits {
        max_string_len: 1 << 20,
        max_bytes_len: 64 << 20,
        max_list_len: 1 << 20,
        max_fields: 1024,
        max_frame_len: 16 << 20,
        max_nar_len: 1 << 40,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
