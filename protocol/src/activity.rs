//! Log verbosity, activity types, result types and the typed fields of activity messages.

use std::fmt;

use crate::wire::ByteString;

macro_rules! numbered {
    ($(#[$meta:meta])* $ty:ident { $( $(#[$doc:meta])* $name:ident = $num:literal, )* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $ty {
            $( $(#[$doc])* $name, )*
        }

        impl $ty {
            /// Every value.
            pub const ALL: &'static [$ty] = &[$($ty::$name,)*];

            /// The wire number.
            pub const fn to_wire(self) -> u64 {
                match self {
                    $( $ty::$name => $num, )*
                }
            }

            /// From the wire number.
            pub const fn from_wire(value: u64) -> Option<$ty> {
                match value {
                    $( $num => Some($ty::$name), )*
                    _ => None,
                }
            }

            /// Nix's name.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $ty::$name => stringify!($name), )*
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

numbered! {
    /// Log verbosity (Nix 2.4+ numbering; Nix 2.3 has no `Notice`, so its 2..6 are Info..Vomit).
    Verbosity {
        /// 0
        Error = 0,
        /// 1
        Warn = 1,
        /// 2 (2.4+)
        Notice = 2,
        /// 3
        Info = 3,
        /// 4
        Talkative = 4,
        /// 5
        Chatty = 5,
        /// 6
        Debug = 6,
        /// 7
        Vomit = 7,
    }
}

numbered! {
    /// What an activity is (the progress bar groups them by type).
    ActivityType {
        /// 0
        Unknown = 0,
        /// 100: fields storePath, srcUri, dstUri; progress in bytes.
        CopyPath = 100,
        /// 101 (2.3: Download): field uri.
        FileTransfer = 101,
        /// 102: the worker's root activity.
        Realise = 102,
        /// 103: substitution counters.
        CopyPaths = 103,
        /// 104: build counters.
        Builds = 104,
        /// 105: fields drvPath, machineName, curRound, nrRounds.
        Build = 105,
        /// 106
        OptimiseStore = 106,
        /// 107
        VerifyPaths = 107,
        /// 108: fields storePath, substituterUri.
        Substitute = 108,
        /// 109: fields storePath, substituterUri.
        QueryPathInfo = 109,
        /// 110: field drvPath.
        PostBuildHook = 110,
        /// 111 (2.4+): waiting for a lock, machine or build user.
        BuildWaiting = 111,
        /// 112 (2.20+): client-side fetcher.
        FetchTree = 112,
    }
}

numbered! {
    /// What a result message reports about an activity.
    ResultType {
        /// 100: bytes, blocks.
        FileLinked = 100,
        /// 101: one line of build output.
        BuildLogLine = 101,
        /// 102: path.
        UntrustedPath = 102,
        /// 103: path.
        CorruptedPath = 103,
        /// 104: phase name.
        SetPhase = 104,
        /// 105: done, expected, running, failed.
        Progress = 105,
        /// 106: activity type, expected.
        SetExpected = 106,
        /// 107: one line of post-build-hook output.
        PostBuildLogLine = 107,
        /// 108 (2.20+): status text.
        FetchStatus = 108,
    }
}

/// One field of an activity or result message: u64 kind 0 and a u64, or kind 1 and a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// A number.
    Int(u64),
    /// A string (bytes: log lines need not be UTF-8).
    String(ByteString),
}

impl From<u64> for Field {
    fn from(value: u64) -> Field {
        Field::Int(value)
    }
}

impl From<&str> for Field {
    fn from(value: &str) -> Field {
        Field::String(value.into())
    }
}
