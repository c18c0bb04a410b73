//! Whether the daemon trusts the client (sent from protocol 1.35 on).

use crate::context::WireContext;
use crate::wire::read::read_tag;
use crate::wire::{Decode, Encode, WireError, WireRead, WireWriter};

/// The daemon's answer to "do you trust me?". `Option<TrustedFlag>` is one u64: 0 none
/// (unknown), 1 trusted, 2 not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustedFlag {
    /// The client may do everything (`trusted-users`, or a local store).
    Trusted,
    /// The client is an ordinary user.
    NotTrusted,
}

impl Encode for Option<TrustedFlag> {
    fn encode(&self, w: &mut WireWriter, _: &WireContext) -> Result<(), WireError> {
        w.put_u64(match self {
            None => 0,
            Some(TrustedFlag::Trusted) => 1,
            Some(TrustedFlag::NotTrusted) => 2,
        });
        Ok(())
    }
}

impl Decode for Option<TrustedFlag> {
    async fn decode<R: WireRead>(
        r: &mut R,
        _: &WireContext,
        what: &'static str,
    ) -> Result<Self, WireError> {
        Ok(match read_tag(r, 2, what).await? {
            0 => None,
            1 => Some(TrustedFlag::Trusted),
            _ => Some(TrustedFlag::NotTrusted),
        })
    }
}
