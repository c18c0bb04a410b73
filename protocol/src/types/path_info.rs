//! Path metadata: `UnkeyedValidPathInfo` (the model's [`PathInfo`]) and `ValidPathInfo`.
//!
//! UnkeyedValidPathInfo (the body of a `QueryPathInfo` reply):
//! `Option<StorePath> deriver`, `str narHash` (base16, no algorithm; readers also accept the
//! other encodings), `[StorePath] references`, `u64 registrationTime` (unix seconds, 0 for
//! unknown), `u64 narSize`; from 1.16 also `bool ultimate`, `[Signature] sigs`,
//! `Option<ContentAddress> ca`. ValidPathInfo is the `StorePath` followed by that.
//!
//! Decoding sets [`PathInfo::store_dir`] to [`WireContext::store_dir`]; encoding prints paths
//! in the context's store directory.

use std::collections::BTreeSet;

use pkgchain_store_model::content_address::ContentAddress;
use pkgchain_store_model::hash::{Hash, HashAlgo, HashEncoding};
use pkgchain_store_model::path_info::{PathInfo, ValidPathInfo};
use pkgchain_store_model::signature::Signature;
use pkgchain_store_model::store_path::StorePath;

use super::store::read_parsed;
use crate::context::WireContext;
use crate::wire::read::{read_bool, read_i64, read_u64};
use crate::wire::{Decode, Encode, WireError, WireRead, WireWriter};

impl Encode for PathInfo {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        self.deriver.encode(w, cx)?;
        w.put_str(&self.nar_hash.encode(HashEncoding::Base16));
        self.references.encode(w, cx)?;
        let time = match self.registration_time {
            None => 0,
            Some(t) => u64::try_from(t).map_err(|_| {
                WireError::not_representable(
                    "path info registration time",
                    format!("negative time {t}"),
                )
            })?,
        };
        w.put_u64(time);
        w.put_u64(self.nar_size);
        if cx.at_least(16) {
            w.put_bool(self.ultimate);
            self.sigs.encode(w, cx)?;
            self.ca.encode(w, cx)?;
        }
        Ok(())
    }
}

impl Decode for PathInfo {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        let deriver = Option::<StorePath>::decode(r, cx, "path info deriver").await?;
        let nar_hash = read_parsed(r, cx, "path info NAR hash", |s| {
            Hash::parse_any(s, Some(HashAlgo::Sha256))
        })
        .await?;
        let references = BTreeSet::<StorePath>::decode(r, cx, "path info references").await?;
        let registration_time = read_i64(r, "path info registration time").await?;
        let nar_size = read_u64(r, "path info NAR size").await?;
        let mut info = PathInfo::new(cx.store_dir.clone(), nar_hash, nar_size);
        info.deriver = deriver;
        info.references = references;
        info.registration_time = (registration_time != 0).then_some(registration_time);
        if cx.at_least(16) {
            info.ultimate = read_bool(r, "path info ultimate").await?;
            info.sigs = BTreeSet::<Signature>::decode(r, cx, "path info signatures").await?;
            info.ca = Option::<ContentAddress>::decode(r, cx, "path info content address").await?;
        }
        Ok(info)
    }
}

impl Encode for ValidPathInfo {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        self.path.encode(w, cx)?;
        self.info.encode(w, cx)
    }
}

impl Decode for ValidPathInfo {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> Result<Self, WireError> {
        let path = StorePath::decode(r, cx, "path info path").await?;
        let info = PathInfo::decode(r, cx, what).await?;
        Ok(ValidPathInfo { path, info })
    }
}
