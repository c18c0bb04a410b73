//! A binary cache's `nix-cache-info` file: which store directory its paths are for, whether
//! it wants to be asked for many paths at once, and its priority (lower is asked first).
//!
//! ```text
//! StoreDir: /nix/store
//! WantMassQuery: 1
//! Priority: 40
//! ```
//!
//! Nix reads it line by line: a line without `:` is skipped, the value is trimmed, unknown keys
//! are ignored, `WantMassQuery` is true only for `1`, and a `Priority` that is not a number is
//! an error. This parser does the same within [`MAX_CACHE_INFO_BYTES`]; a repeated key keeps
//! its last value, as Nix does.

use thiserror::Error;

/// The largest `nix-cache-info` accepted (cache.nixos.org's is 51 bytes).
pub const MAX_CACHE_INFO_BYTES: usize = 64 * 1024;

/// What a cache's `nix-cache-info` says (absent keys are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheInfo {
    /// `StoreDir`: the store its paths belong to.
    pub store_dir: Option<String>,
    /// `WantMassQuery`.
    pub want_mass_query: Option<bool>,
    /// `Priority`.
    pub priority: Option<i32>,
}

/// Why a `nix-cache-info` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CacheInfoError {
    /// Larger than [`MAX_CACHE_INFO_BYTES`].
    #[error("nix-cache-info is {0} bytes, more than the limit of {MAX_CACHE_INFO_BYTES}")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("nix-cache-info is not valid UTF-8")]
    NotUtf8,
    /// A `Priority` that is no integer.
    #[error("nix-cache-info line {line}: Priority '{value}' is not an integer")]
    BadPriority {
        /// 1-based line number.
        line: usize,
        /// The value (cut to 64 bytes).
        value: String,
    },
}

impl CacheInfo {
    /// Parses the file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<CacheInfo, CacheInfoError> {
        if bytes.len() > MAX_CACHE_INFO_BYTES {
            return Err(CacheInfoError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| CacheInfoError::NotUtf8)?;
        let mut info = CacheInfo::default();
        for (n, line) in text.split('\n').enumerate() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "StoreDir" => info.store_dir = Some(value.to_owned()),
                "WantMassQuery" => info.want_mass_query = Some(value == "1"),
                "Priority" => {
                    let priority =
                        value
                            .parse::<i32>()
                            .map_err(|_| CacheInfoError::BadPriority {
                                line: n + 1,
                                value: value.chars().take(64).collect(),
                            })?;
                    info.priority = Some(priority);
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_nixos_org_and_nix_copy_files_parse() {
        let info = CacheInfo::parse(b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
            .expect("parses");
        assert_eq!(
            info,
            CacheInfo {
                store_dir: Some("/nix/store".into()),
                want_mass_query: Some(true),
                priority: Some(40),
            }
        );
        // What `nix copy --to file://` writes: the store directory alone.
        let info = CacheInfo::parse(b"StoreDir: /nix/store\n").expect("parses");
        assert_eq!(info.priority, None);
        assert_eq!(info.want_mass_query, None);
    }

    #[test]
    fn odd_lines_are_skipped_and_bad_values_named() {
        let info = CacheInfo::parse(b"junk\nWantMassQuery: yes\nX-Other: 1\nPriority:  -3 \n")
            .expect("parses");
        assert_eq!(info.want_mass_query, Some(false));
        assert_eq!(info.priority, Some(-3));
        assert_eq!(
            CacheInfo::parse(b"StoreDir: /nix/store\nPriority: high\n"),
            Err(CacheInfoError::BadPriority {
                line: 2,
                value: "high".into()
            })
        );
        assert_eq!(
            CacheInfo::parse(&[0xff, b'\n']),
            Err(CacheInfoError::NotUtf8)
        );
        let big = vec![b'a'; MAX_CACHE_INFO_BYTES + 1];
        assert!(matches!(
            CacheInfo::parse(&big),
            Err(CacheInfoError::TooLarge(_))
        ));
    }
}
