//! `CollectGarbage` (20): the request and its `GCAction`.
//!
//! Request: u64 action ([`GcAction`]); the paths, in one of two forms:
//! * without `delete-dead-specific-referrers`: `[StorePath]`; an empty list with an action
//!   other than [`GcAction::DeleteSpecific`] means the whole store;
//! * with the feature (Nix 2.35): u64 tag 1 (whole store), or tag 0, `[StorePath]` and
//!   `bool deleteReferrers`;
//!
//! then `bool ignoreLiveness`, u64 maxFreed (2^64 - 1: no limit) and three obsolete u64s.
//! The reply is [`crate::reply::GcResults`].

use std::collections::BTreeSet;

use pkgchain_store_model::store_path::StorePath;

use crate::context::WireContext;
use crate::version::FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS;
use crate::wire::read::{read_bool, read_enum, read_tag, read_u64};
use crate::wire::{Decode, Encode, WireError, WireRead, WireWriter};

/// What the garbage collector is asked to do (u64 0-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GcAction {
    /// 0: return the live paths.
    ReturnLive,
    /// 1: return the dead paths.
    ReturnDead,
    /// 2: delete the dead paths.
    DeleteDead,
    /// 3: delete the given paths (if dead).
    DeleteSpecific,
}

impl GcAction {
    /// The wire number.
    pub const fn to_wire(self) -> u64 {
        match self {
            GcAction::ReturnLive => 0,
            GcAction::ReturnDead => 1,
            GcAction::DeleteDead => 2,
            GcAction::DeleteSpecific => 3,
        }
    }

    /// From the wire number.
    pub const fn from_wire(value: u64) -> Option<GcAction> {
        match value {
            0 => Some(GcAction::ReturnLive),
            1 => Some(GcAction::ReturnDead),
            2 => Some(GcAction::DeleteDead),
            3 => Some(GcAction::DeleteSpecific),
            _ => None,
        }
    }
}

impl Encode for GcAction {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_u64(self.to_wire());
        Ok(())
    }
}

impl Decode for GcAction {
    async fn decode<R: WireRead>(
        r: &mut R,
        _: &WireContext,
        what: &'static str,
    ) -> Result<Self, WireError> {
        read_enum(r, what, GcAction::from_wire).await
    }
}

/// Which paths a collection is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcPaths {
    /// The whole store (without the feature: an empty list with an action other than
    /// [`GcAction::DeleteSpecific`]).
    WholeStore,
    /// These paths.
    Specific {
        /// The paths.
        paths: BTreeSet<StorePath>,
        /// Also delete their referrers (only with `delete-dead-specific-referrers`; always
        /// false without it).
        delete_referrers: bool,
    },
}

/// The `CollectGarbage` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectGarbage {
    /// What to do.
    pub action: GcAction,
    /// Which paths.
    pub paths: GcPaths,
    /// Ignore the GC roots (upstream refuses this for everyone).
    pub ignore_liveness: bool,
    /// Stop after freeing this many bytes (`u64::MAX`: no limit).
    pub max_freed: u64,
}

impl CollectGarbage {
    /// Appends the request arguments.
    pub fn encode(&self, w: &mut WireWriter, cx: &WireContext) -> Result<(), WireError> {
        self.action.encode(w, cx)?;
        if cx.has_feature(FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS) {
            match &self.paths {
                GcPaths::WholeStore => w.put_u64(1),
                GcPaths::Specific {
                    paths,
                    delete_referrers,
                } => {
                    w.put_u64(0);
                    paths.encode(w, cx)?;
                    w.put_bool(*delete_referrers);
                }
            }
        } else {
            match &self.paths {
                GcPaths::WholeStore => w.put_u64(0),
                GcPaths::Specific {
                    delete_referrers: true,
                    ..
                } => {
                    return Err(WireError::not_representable(
                        "CollectGarbage paths",
                        format!(
                            "deleting referrers needs the '{FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS}' protocol feature"
                        ),
                    ));
                }
                GcPaths::Specific { paths, .. } => paths.encode(w, cx)?,
            }
        }
        w.put_bool(self.ignore_liveness);
        w.put_u64(self.max_freed);
        for _ in 0..3 {
            w.put_u64(0);
        }
        Ok(())
    }

    /// Reads the request arguments.
    pub async fn decode<R: WireRead>(
        r: &mut R,
        cx: &WireContext,
    ) -> Result<CollectGarbage, WireError> {
        let action = GcAction::decode(r, cx, "CollectGarbage action").await?;
        let paths = if cx.has_feature(FEATURE_DELETE_DEAD_SPECIFIC_REFERRERS) {
            if read_tag(r, 1, "CollectGarbage whole-store tag").await? == 1 {
                GcPaths::WholeStore
            } else {
                let paths = BTreeSet::decode(r, cx, "CollectGarbage paths").await?;
                let delete_referrers = read_bool(r, "CollectGarbage deleteReferrers").await?;
                GcPaths::Specific {
                    paths,
                    delete_referrers,
                }
            }
        } else {
            let paths: BTreeSet<StorePath> =
                BTreeSet::decode(r, cx, "CollectGarbage paths").await?;
            if paths.is_empty() && action != GcAction::DeleteSpecific {
                GcPaths::WholeStore
            } else {
                GcPaths::Specific {
                    paths,
                    delete_referrers: false,
                }
            }
        };
        let ignore_liveness = read_bool(r, "CollectGarbage ignoreLiveness").await?;
        let max_freed = read_u64(r, "CollectGarbage maxFreed").await?;
        for _ in 0..3 {
            read_u64(r, "CollectGarbage obsolete field").await?;
        }
        Ok(CollectGarbage {
            action,
            paths,
            ignore_liveness,
            max_freed,
        })
    }
}
