//! Worker operation numbers: the u64 that starts every request.

use std::fmt;

use thiserror::Error;

/// A number that names no operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("invalid operation {0}")]
pub struct UnknownOpcode(pub u64);

macro_rules! opcodes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, )*) => {
        /// A worker operation (`WorkerProto::Op`). Request and reply formats per operation are
        /// described in the protocol reference, §3.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u64)]
        pub enum Opcode {
            $( $(#[$doc])* $name = $num, )*
        }

        impl Opcode {
            /// Every operation, in numeric order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name,)*];

            /// Nix's name of the operation.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Opcode::$name => stringify!($name), )*
                }
            }
        }

        impl TryFrom<u64> for Opcode {
            type Error = UnknownOpcode;
            fn try_from(value: u64) -> Result<Opcode, UnknownOpcode> {
                match value {
                    $( $num => Ok(Opcode::$name), )*
                    other => Err(UnknownOpcode(other)),
                }
            }
        }
    };
}

opcodes! {
    /// 1: is the path valid? (StorePath → bool)
    IsValidPath = 1,
    /// 3: obsolete since 1.12; removed from the daemon in Nix 2.34.
    HasSubstitutes = 3,
    /// 4: obsolete since 1.16; removed in Nix 2.34.
    QueryPathHash = 4,
    /// 5: obsolete since 1.16; removed in Nix 2.34.
    QueryReferences = 5,
    /// 6: paths referring to a path.
    QueryReferrers = 6,
    /// 7: add a file system object (old form below 1.25, framed form from 1.25).
    AddToStore = 7,
    /// 8: add a text file (sent by Nix 2.3 clients and towards daemons below 1.25).
    AddTextToStore = 8,
    /// 9: build or substitute derived paths.
    BuildPaths = 9,
    /// 10: make a path valid (substitute it).
    EnsurePath = 10,
    /// 11: add a temporary GC root for the connection.
    AddTempRoot = 11,
    /// 12: register an indirect GC root.
    AddIndirectRoot = 12,
    /// 13: no-op since Nix 2.5 (sent by 2.3/2.4 clients).
    SyncWithGC = 13,
    /// 14: list GC roots.
    FindRoots = 14,
    /// 16: obsolete; no client from 2.0 on sends it; removed in Nix 2.32.
    ExportPath = 16,
    /// 18: obsolete since 1.16 but still served.
    QueryDeriver = 18,
    /// 19: client settings; the first request of a connection.
    SetOptions = 19,
    /// 20: garbage collection.
    CollectGarbage = 20,
    /// 21: substitutable path info of one path (towards daemons below 1.12).
    QuerySubstitutablePathInfo = 21,
    /// 22: output paths of a derivation (Nix 2.3 clients).
    QueryDerivationOutputs = 22,
    /// 23: every valid path.
    QueryAllValidPaths = 23,
    /// 24: removed (not handled by the Nix 2.3 daemon).
    QueryFailedPaths = 24,
    /// 25: removed (not handled by the Nix 2.3 daemon).
    ClearFailedPaths = 25,
    /// 26: path info of a path.
    QueryPathInfo = 26,
    /// 27: import an export stream (towards daemons below 1.18); removed in Nix 2.32.
    ImportPaths = 27,
    /// 28: output names of a derivation (Nix 2.3 clients).
    QueryDerivationOutputNames = 28,
    /// 29: full path from a hash part.
    QueryPathFromHashPart = 29,
    /// 30: substitutable path infos (1.12+).
    QuerySubstitutablePathInfos = 30,
    /// 31: which of these paths are valid (1.12+).
    QueryValidPaths = 31,
    /// 32: which of these paths are substitutable (1.12+).
    QuerySubstitutablePaths = 32,
    /// 33: valid derivations that produce an output (1.13+).
    QueryValidDerivers = 33,
    /// 34: deduplicate the store.
    OptimiseStore = 34,
    /// 35: verify the store.
    VerifyStore = 35,
    /// 36: build a derivation sent in the request.
    BuildDerivation = 36,
    /// 37: add signatures to a path.
    AddSignatures = 37,
    /// 38: the NAR of a path.
    NarFromPath = 38,
    /// 39: add a path with its NAR (1.18+).
    AddToStoreNar = 39,
    /// 40: what a build would do (1.19+).
    QueryMissing = 40,
    /// 41: output name to path map of a derivation (1.22+).
    QueryDerivationOutputMap = 41,
    /// 42: register a realisation (Nix 2.4+).
    RegisterDrvOutput = 42,
    /// 43: look up a realisation (Nix 2.4+).
    QueryRealisation = 43,
    /// 44: add many paths in one framed stream (1.32+).
    AddMultipleToStore = 44,
    /// 45: store a build log (Nix 2.6+, no version bump).
    AddBuildLog = 45,
    /// 46: build with one result per derived path (1.34+).
    BuildPathsWithResults = 46,
    /// 47: add a permanent GC root (1.36+; only `ssh-ng` mounted stores send it).
    AddPermRoot = 47,
    /// 48: reserved on Nix master after 2.35; no released client sends it.
    QueryActiveBuilds = 48,
    /// 49: reserved on Nix master after 2.35; no released client sends it.
    AddTempRoots = 49,
    /// 50: reserved on Nix master after 2.35; no released client sends it.
    QueryPathInfos = 50,
    /// 1000: Nix master after 2.35, builder RPC feature `submit-output` only.
    SubmitOutput = 1000,
    /// 1001: Nix master after 2.35, builder RPC feature `add-to-store-scanning` only.
    AddToStoreScanning = 1001,
}

impl From<Opcode> for u64 {
    fn from(op: Opcode) -> u64 {
        op as u64
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for &op in Opcode::ALL {
            assert_eq!(Opcode::try_from(u64::from(op)), Ok(op));
        }
        assert_eq!(Opcode::try_from(26), Ok(Opcode::QueryPathInfo));
        assert_eq!(Opcode::AddPermRoot.to_string(), "AddPermRoot (47)");
        assert_eq!(Opcode::ALL.len(), 49);
    }

    #[test]
    fn unknown_opcode_is_named() {
        for n in [0u64, 2, 15, 17, 51, 999, u64::MAX] {
            let err = Opcode::try_from(n).unwrap_err();
            assert_eq!(err.to_string(), format!("invalid operation {n}"));
        }
    }
}
