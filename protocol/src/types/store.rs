//! Store paths, content addresses and signatures: text values whose wire form is one string.
//!
//! * [`StorePath`]: the absolute path (`/nix/store/<hash>-<name>`), parsed against
//!   [`WireContext::store_dir`].
//! * `Option<StorePath>`: the empty string means none (derivers, `QueryPathFromHashPart`).
//! * [`ContentAddress`]: `text:sha256:<nix32>`, `fixed:r:sha256:<nix32>`, ...;
//!   `Option<ContentAddress>`: the empty string means none.
//! * [`Signature`]: `<key name>:<base64>`, which must parse (Nix 2.35 parses it too).

use std::future::Future;

use pkgchain_store_model::content_address::ContentAddress;
use pkgchain_store_model::signature::Signature;
use pkgchain_store_model::store_path::StorePath;

use crate::context::WireContext;
use crate::wire::read::read_string;
use crate::wire::{Decode, Encode, WireError, WireRead, WireWriter};

/// Reads a string and parses it with `parse`, reporting failures at the string's offset.
pub(crate) async fn read_parsed<R, T, E, F>(
    r: &mut R,
    cx: &WireContext,
    what: &'static str,
    parse: F,
) -> Result<T, WireError>
where
    R: WireRead,
    E: std::fmt::Display,
    F: FnOnce(&str) -> Result<T, E>,
{
    let at = r.position();
    let text = read_string(r, cx.limits.max_string_len, what).await?;
    parse(&text).map_err(|e| WireError::invalid(what, Some(at), e))
}

impl Encode for StorePath {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        w.put_str(&cx.store_dir.display(self));
        Ok(())
    }
}

impl Decode for StorePath {
    fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_parsed(r, cx, what, |s| cx.store_dir.parse(s))
    }
}

impl Encode for Option<StorePath> {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        match self {
            Some(path) => path.encode(w, cx),
            None => {
                w.put_str("");
                Ok(())
            }
        }
    }
}

impl Decode for Option<StorePath> {
    fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_parsed(r, cx, what, |s| {
            if s.is_empty() {
                Ok(None)
            } else {
                cx.store_dir.parse(s).map(Some)
            }
        })
    }
}

impl Encode for ContentAddress {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_str(&self.render());
        Ok(())
    }
}

impl Decode for ContentAddress {
    fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_parsed(r, cx, what, ContentAddress::parse)
    }
}

impl Encode for Option<ContentAddress> {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_str(
            &self
                .as_ref()
                .map(ContentAddress::render)
                .unwrap_or_default(),
        );
        Ok(())
    }
}

impl Decode for Option<ContentAddress> {
    fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_parsed(r, cx, what, ContentAddress::parse_opt)
    }
}

impl Encode for Signature {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_str(&self.to_string());
        Ok(())
    }
}

impl Decode for Signature {
    fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        what: &'static str,
    ) -> impl Future<Output = Result<Self, WireError>> + Send {
        read_parsed(r, cx, what, Signature::parse)
    }
}
