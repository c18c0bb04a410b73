//! The requests that add store objects: `AddToStore` (7, both forms), `AddTextToStore` (8),
//! `AddToStoreNar` (39), `AddMultipleToStore` (44) and `AddBuildLog` (45).
//!
//! None of them contain the data that follows them on the wire (a raw NAR, a framed stream or
//! an exchange of `STDERR_READ` messages); see [`super::Payload`] for which follows when.

use std::borrow::Cow;
use std::collections::BTreeSet;

use pkgchain_store_model::content_address::ContentAddressMethod;
use pkgchain_store_model::hash::{HashAlgo, HashError};
use pkgchain_store_model::path_info::ValidPathInfo;
use pkgchain_store_model::store_path::StorePath;

use crate::context::WireContext;
use crate::types::store::read_parsed;
use crate::version::ProtocolVersion;
use crate::wire::read::{read_bool, read_string, read_u64, read_u64_max};
use crate::wire::{ByteString, Decode, Encode, WireError, WireRead, WireWriter};

/// `AddToStore` below 1.25 (every Nix 2.3 client): `str name`, u64 fixed (obsolete),
/// u64 recursive (0 flat, 1 NAR; anything else is refused), `str hashAlgo`. A raw NAR follows,
/// even for flat ingestion (then of a single regular file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddToStoreOld {
    /// The store path name.
    pub name: String,
    /// Obsolete; `false` means "NAR, SHA-256" whatever the other fields say.
    pub fixed: bool,
    /// NAR hashing (`true`) or flat (`false`).
    pub recursive: bool,
    /// The hash algorithm's name, unparsed (Nix ignores it when `fixed` is false).
    pub hash_algo: String,
}

impl AddToStoreOld {
    /// The ingestion method and hash algorithm meant, with Nix's compatibility rule: when
    /// `fixed` is false, NAR and SHA-256.
    pub fn method_and_algo(&self) -> Result<(ContentAddressMethod, HashAlgo), HashError> {
        if !self.fixed {
            return Ok((ContentAddressMethod::NixArchive, HashAlgo::Sha256));
        }
        let method = if self.recursive {
            ContentAddressMethod::NixArchive
        } else {
            ContentAddressMethod::Flat
        };
        Ok((method, HashAlgo::from_name(&self.hash_algo)?))
    }

    pub(crate) fn encode(&self, w: &mut WireWriter) {
        w.put_str(&self.name);
        w.put_bool(self.fixed);
        w.put_bool(self.recursive);
        w.put_str(&self.hash_algo);
    }

    pub(crate) async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
    ) -> Result<AddToStoreOld, WireError> {
        let name = read_string(r, cx.limits.max_string_len, "AddToStore name").await?;
        let fixed = read_bool(r, "AddToStore fixed").await?;
        let at = r.position();
        let recursive = read_u64_max(r, u64::from(u8::MAX), "AddToStore recursive").await?;
        if recursive > 1 {
            return Err(WireError::invalid(
                "AddToStore recursive",
                Some(at),
                format!("unsupported file ingestion method {recursive} (0 is flat, 1 is NAR)"),
            ));
        }
        let hash_algo =
            read_string(r, cx.limits.max_string_len, "AddToStore hash algorithm").await?;
        Ok(AddToStoreOld {
            name,
            fixed,
            recursive: recursive == 1,
            hash_algo,
        })
    }
}

/// `AddToStore` from 1.25: `str name`, `str camStr` (`text:sha256`, `fixed:r:sha256`,
/// `fixed:sha1`, `fixed:git:sha1`, ...), `[StorePath] refs`, `bool repair`. A framed stream
/// follows: the file's bytes for text and flat, a NAR for NAR and Git hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddToStore {
    /// The store path name.
    pub name: String,
    /// How the data is hashed.
    pub method: ContentAddressMethod,
    /// With which algorithm.
    pub hash_algo: HashAlgo,
    /// References of the new object.
    pub references: BTreeSet<StorePath>,
    /// Rewrite the object if it exists.
    pub repair: bool,
}

impl AddToStore {
    pub(crate) fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        w.put_str(&self.name);
        w.put_str(&self.method.render_with_algo(self.hash_algo));
        self.references.encode(w, cx)?;
        w.put_bool(self.repair);
        Ok(())
    }

    pub(crate) async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
    ) -> Result<AddToStore, WireError> {
        let name = read_string(r, cx.limits.max_string_len, "AddToStore name").await?;
        let (method, hash_algo) = read_parsed(
            r,
            cx,
            "AddToStore content-address method",
            ContentAddressMethod::parse_with_algo,
        )
        .await?;
        let references = BTreeSet::decode(r, cx, "AddToStore references").await?;
        let repair = read_bool(r, "AddToStore repair").await?;
        Ok(AddToStore {
            name,
            method,
            hash_algo,
            references,
            repair,
        })
    }
}

/// `AddTextToStore` (8): `str name`, `str text`, `[StorePath] refs`. Sent by Nix 2.3 clients
/// and by newer ones towards daemons below 1.25.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddTextToStore {
    /// The store path name.
    pub name: String,
    /// The file's contents.
    pub text: ByteString,
    /// References of the new object.
    pub references: BTreeSet<StorePath>,
}

impl AddTextToStore {
    pub(crate) fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        w.put_str(&self.name);
        self.text.encode(w, cx)?;
        self.references.encode(w, cx)
    }

    pub(crate) async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
    ) -> Result<AddTextToStore, WireError> {
        Ok(AddTextToStore {
            name: read_string(r, cx.limits.max_string_len, "AddTextToStore name").await?,
            text: ByteString::decode(r, cx, "AddTextToStore text").await?,
            references: BTreeSet::decode(r, cx, "AddTextToStore references").await?,
        })
    }
}

/// `cx`, or a copy of it at 1.16 if it is older: the encodings that always carry the
/// `ultimate`, `sigs` and `ca` fields of path info (AddToStoreNar, AddMultipleToStore).
fn at_least_1_16(cx: &WireContext) -> Cow<'_, WireContext> {
    if cx.at_least(16) {
        Cow::Borrowed(cx)
    } else {
        let mut cx = cx.clone();
        cx.version = ProtocolVersion::new(1, 16);
        Cow::Owned(cx)
    }
}

/// `AddToStoreNar` (39): a `ValidPathInfo` in its 1.16 form (path, deriver, narHash, refs,
/// registrationTime, narSize, ultimate, sigs, ca), `bool repair`, `bool dontCheckSigs`. The NAR
/// follows: raw below 1.21, pulled with `STDERR_READ` at 1.21 and 1.22, framed from 1.23.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddToStoreNar {
    /// The path and its metadata, as the client claims them.
    pub info: ValidPathInfo,
    /// Rewrite the path if it exists.
    pub repair: bool,
    /// Skip signature checks (honoured for trusted clients only).
    pub dont_check_sigs: bool,
}

impl AddToStoreNar {
    pub(crate) fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        self.info.encode(w, &at_least_1_16(cx))?;
        w.put_bool(self.repair);
        w.put_bool(self.dont_check_sigs);
        Ok(())
    }

    pub(crate) async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
    ) -> Result<AddToStoreNar, WireError> {
        let info = ValidPathInfo::decode(r, &at_least_1_16(cx), "AddToStoreNar path info")
            .await
            .map_err(|e| e.context("AddToStoreNar"))?;
        let repair = read_bool(r, "AddToStoreNar repair").await?;
        let dont_check_sigs = read_bool(r, "AddToStoreNar dontCheckSigs").await?;
        Ok(AddToStoreNar {
            info,
            repair,
            dont_check_sigs,
        })
    }
}

/// Inside the framed stream of `AddMultipleToStore`: u64 count, then per path a
/// `ValidPathInfo` in its 1.16 form (the same as in every later version) followed by exactly
/// `narSize` raw NAR bytes.
///
/// These helpers read and write the count and the path infos; the NAR bytes between them are
/// the caller's (read exactly [`PathInfo::nar_size`](pkgchain_store_model::path_info::PathInfo)
/// bytes after each info).
pub mod multiple {
    use super::*;

    /// Appends the path count.
    pub fn encode_count(w: &mut WireWriter, count: u64) {
        w.put_u64(count);
    }

    /// Reads the path count. It is not bounded here (each path costs its own bytes); bound
    /// the stream instead.
    pub async fn decode_count<R: WireRead>(r: &mut R) -> Result<u64, WireError> {
        read_u64(r, "AddMultipleToStore path count").await
    }

    /// Appends one path info (the NAR must follow).
    pub fn encode_info(
        w: &mut WireWriter,
        info: &ValidPathInfo,
        cx: &WireContext,
    ) -> Result<(), WireError> {
        info.encode(w, &at_least_1_16(cx))
    }

    /// Reads one path info (its NAR follows).
    pub async fn decode_info<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
    ) -> Result<ValidPathInfo, WireError> {
        ValidPathInfo::decode(r, &at_least_1_16(cx), "AddMultipleToStore path info")
            .await
            .map_err(|e| e.context("AddMultipleToStore"))
    }
}

/// `AddMultipleToStore` (44): `bool repair`, `bool dontCheckSigs`; a framed stream follows
/// (see [`multiple`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddMultipleToStore {
    /// Rewrite paths that exist.
    pub repair: bool,
    /// Skip signature checks (honoured for trusted clients only).
    pub dont_check_sigs: bool,
}

/// `AddBuildLog` (45): the derivation as a **base name** (`<hash>-<name>.drv`, no store
/// directory); the log follows as a framed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddBuildLog {
    /// The derivation the log belongs to.
    pub drv_path: StorePath,
}

impl AddBuildLog {
    pub(crate) fn encode(&self, w: &mut WireWriter) {
        w.put_str(self.drv_path.base_name());
    }

    pub(crate) async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
    ) -> Result<AddBuildLog, WireError> {
        let drv_path =
            read_parsed(r, cx, "AddBuildLog derivation", StorePath::from_base_name).await?;
        Ok(AddBuildLog { drv_path })
    }
}
