//! The Nix store model as pure code: no file, socket or clock access happens here.
//!
//! Everything package chain says to a Nix client or a binary cache is defined in this crate:
//!
//! * [`nixbase32`]: Nix's own base-32 alphabet and bit order.
//! * [`hash`]: md5, sha1, sha256, sha512 (and blake3, which Nix 2.35 knows) in base16, nix32,
//!   base64 and SRI form.
//! * [`store_path`]: store paths, their names, and how Nix computes them.
//! * [`content_address`]: `text:` and `fixed:` content addresses.
//! * [`nar`]: the Nix ARchive format, a bounded iterative streaming reader and a writer.
//! * [`derivation`]: derivations in ATerm and JSON form, `hashDerivationModulo` and output paths.
//! * [`narinfo`]: binary-cache `.narinfo` files and path fingerprints.
//! * [`path_info`]: the JSON forms of path information (`nix path-info --json`, versions 1-3).
//! * [`signature`]: Ed25519 keys and signatures in the format of
//!   `nix-store --generate-binary-cache-key`.
//! * [`references`]: a streaming scanner that finds which candidate store paths a byte stream
//!   mentions.
//! * [`buildenv`]: the `derivations` attribute of `builtin:buildenv` (the packages of a user
//!   environment, with their priorities and whether they are active).
//! * [`structured_attrs`]: structured attributes (`__json`) as the bash declarations of a
//!   builder's `.attrs.sh`.
//!
//! Parsers in this crate never recurse on input structure, never panic on malformed input, and
//! bound every length they accept; errors say what was wrong and where.

pub mod buildenv;
pub mod cache_info;
pub mod content_address;
pub mod derivation;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod nixbase32;
pub mod path_info;
pub mod references;
pub mod signature;
pub mod store_path;
pub mod structured_attrs;
