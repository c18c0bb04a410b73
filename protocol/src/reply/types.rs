//! Values that only appear in one reply: substitute info, `QueryMissing`'s answer, GC
//! results and roots, and the three forms of a `QueryRealisation` answer.

use std::collections::{BTreeMap, BTreeSet};

use pkgchain_store_model::store_path::StorePath;

use crate::context::WireContext;
use crate::request::read_short_bytes;
use crate::types::{LegacyRealisation, UnkeyedRealisation};
use crate::version::FEATURE_REALISATION_WITH_PATH_NOT_HASH;
use crate::wire::read::{read_len, read_tag, read_u64};
use crate::wire::{ByteString, Decode, Encode, WireError, WireRead, WireWriter};

/// What a substituter knows about a path (ops 21 and 30): `Option<StorePath> deriver`,
/// `[StorePath] references`, u64 downloadSize, u64 narSize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstitutablePathInfo {
    /// The derivation that built the path.
    pub deriver: Option<StorePath>,
    /// Its references.
    pub references: BTreeSet<StorePath>,
    /// Bytes to download (compressed NAR; 0 unknown).
    pub download_size: u64,
    /// Size of the NAR (0 unknown).
    pub nar_size: u64,
}

impl Encode for SubstitutablePathInfo {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        self.deriver.encode(w, cx)?;
        self.references.encode(w, cx)?;
        w.put_u64(self.download_size);
        w.put_u64(self.nar_size);
        Ok(())
    }
}

impl Decode for SubstitutablePathInfo {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        Ok(SubstitutablePathInfo {
            deriver: Option::<StorePath>::decode(r, cx, "substitutable path deriver").await?,
            references: BTreeSet::decode(r, cx, "substitutable path references").await?,
            download_size: read_u64(r, "substitutable path download size").await?,
            nar_size: read_u64(r, "substitutable path NAR size").await?,
        })
    }
}

/// The answer to `QueryMissing` (40).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Missing {
    /// Derivations that would be built.
    pub will_build: BTreeSet<StorePath>,
    /// Paths that would be substituted.
    pub will_substitute: BTreeSet<StorePath>,
    /// Paths that can be neither built nor substituted.
    pub unknown: BTreeSet<StorePath>,
    /// Total bytes to download.
    pub download_size: u64,
    /// Total NAR bytes of the substituted paths.
    pub nar_size: u64,
}

impl Encode for Missing {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        self.will_build.encode(w, cx)?;
        self.will_substitute.encode(w, cx)?;
        self.unknown.encode(w, cx)?;
        w.put_u64(self.download_size);
        w.put_u64(self.nar_size);
        Ok(())
    }
}

impl Decode for Missing {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        Ok(Missing {
            will_build: BTreeSet::decode(r, cx, "QueryMissing willBuild").await?,
            will_substitute: BTreeSet::decode(r, cx, "QueryMissing willSubstitute").await?,
            unknown: BTreeSet::decode(r, cx, "QueryMissing unknown").await?,
            download_size: read_u64(r, "QueryMissing downloadSize").await?,
            nar_size: read_u64(r, "QueryMissing narSize").await?,
        })
    }
}

/// The answer to `CollectGarbage` (20): `[str] paths`, u64 bytesFreed, u64 0 (obsolete).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcResults {
    /// The paths deleted, or the live/dead paths for the `Return*` actions, sent in this
    /// order: nix-daemon sends a set, sorted and without duplicates, and so should a server.
    pub paths: Vec<String>,
    /// Bytes freed.
    pub bytes_freed: u64,
}

impl Encode for GcResults {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        self.paths.encode(w, cx)?;
        w.put_u64(self.bytes_freed);
        w.put_u64(0);
        Ok(())
    }
}

impl Decode for GcResults {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        let paths = Vec::decode(r, cx, "CollectGarbage result paths").await?;
        let bytes_freed = read_u64(r, "CollectGarbage bytes freed").await?;
        read_u64(r, "CollectGarbage obsolete field").await?;
        Ok(GcResults { paths, bytes_freed })
    }
}

/// The GC roots (`FindRoots`, 14): each store path with the links that keep it alive (symlink
/// paths, `{temp:...}`, `{censored}`, `/proc/...`).
///
/// On the wire: u64 total number of links, then per link `str link`, `StorePath target`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Roots(pub BTreeMap<StorePath, BTreeSet<ByteString>>);

impl Encode for Roots {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        let count: usize = self.0.values().map(BTreeSet::len).sum();
        w.put_u64(count as u64);
        for (target, links) in &self.0 {
            for link in links {
                link.encode(w, cx)?;
                target.encode(w, cx)?;
            }
        }
        Ok(())
    }
}

impl Decode for Roots {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        let len = read_len(r, cx.limits.max_list_len, "FindRoots roots").await?;
        let mut roots: BTreeMap<StorePath, BTreeSet<ByteString>> = BTreeMap::new();
        for _ in 0..len {
            let link = read_short_bytes(r, cx, "FindRoots link").await?;
            let target = StorePath::decode(r, cx, "FindRoots target").await?;
            roots.entry(target).or_default().insert(link);
        }
        Ok(Roots(roots))
    }
}

/// The answer to `QueryRealisation` (43), in the form of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealisationReply {
    /// Below 1.31: `[StorePath]` with zero or one output path.
    OutPath(Option<StorePath>),
    /// 1.31 and later without the feature: `[str]` with zero or one JSON realisation.
    Legacy(Option<LegacyRealisation>),
    /// With `realisation-with-path-not-hash`: u64 tag 0 (none) or 1 and the realisation.
    Realisation(Option<UnkeyedRealisation>),
}

fn has_feature(cx: &WireContext) -> bool {
    cx.has_feature(FEATURE_REALISATION_WITH_PATH_NOT_HASH)
}

impl Encode for RealisationReply {
    fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        match self {
            RealisationReply::Realisation(value) if has_feature(cx) => match value {
                None => w.put_u64(0),
                Some(value) => {
                    w.put_u64(1);
                    value.encode(w, cx)?;
                }
            },
            RealisationReply::Legacy(value) if !has_feature(cx) && cx.at_least(31) => {
                w.put_u64(u64::from(value.is_some()));
                if let Some(value) = value {
                    value.encode(w, cx)?;
                }
            }
            RealisationReply::OutPath(value) if !has_feature(cx) && !cx.at_least(31) => {
                w.put_u64(u64::from(value.is_some()));
                if let Some(value) = value {
                    value.encode(w, cx)?;
                }
            }
            _ => {
                return Err(WireError::not_representable(
                    "QueryRealisation reply",
                    format!(
                        "this form is not the one of protocol {} with features {:?}",
                        cx.version, cx.features
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Decode for RealisationReply {
    async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
        _what: &'static str,
    ) -> Result<Self, WireError> {
        let what = "QueryRealisation reply";
        Ok(if has_feature(cx) {
            RealisationReply::Realisation(if read_tag(r, 1, what).await? == 1 {
                Some(UnkeyedRealisation::decode(r, cx, what).await?)
            } else {
                None
            })
        } else if cx.at_least(31) {
            RealisationReply::Legacy(if read_len(r, 1, what).await? == 1 {
                Some(LegacyRealisation::decode(r, cx, what).await?)
            } else {
                None
            })
        } else {
            RealisationReply::OutPath(if read_len(r, 1, what).await? == 1 {
                Some(StorePath::decode(r, cx, what).await?)
            } else {
                None
            })
        })
    }
}
