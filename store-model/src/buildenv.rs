//! The `derivations` attribute of `builtin:buildenv`: which packages a user environment (what
//! `nix-env` installs) links, as Nix's `buildenv.nix` writes them.
//!
//! The attribute is a whitespace-separated list of groups, one per installed derivation:
//!
//! ```text
//! ACTIVE PRIORITY N PATH1 ... PATHN
//! ```
//!
//! * `ACTIVE` is `false` for an inactive package (`nix-env --set-flag active false`) and anything
//!   else for an active one, as Nix reads it.
//! * `PRIORITY` is a decimal integer in the range of a C `int` (Nix reads it with `stoi`); a
//!   lower number wins collisions.
//! * `N` is how many output paths follow; each becomes one [`Package`] with the group's flag and
//!   priority.
//!
//! Nix trusts the attribute to be well formed (a short group reads past the end of its list);
//! [`parse_derivations`] refuses a malformed one with a [`BuildenvError`] naming the group. It
//! allocates one [`Package`] per path present in the text, whatever `N` announces.
//!
//! ```
//! use pkgchain_store_model::buildenv::parse_derivations;
//!
//! let p = parse_derivations("true 5 2 /nix/store/a-x /nix/store/a-x-man false 6 1 /nix/store/b").unwrap();
//! assert_eq!(p.len(), 3);
//! assert!(p[1].active && p[1].priority == 5 && p[1].path == "/nix/store/a-x-man");
//! assert!(!p[2].active);
//! ```

use thiserror::Error;

/// One package to link into a user environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Its store path (an output of an installed derivation), as written in the attribute.
    pub path: String,
    /// Whether it is linked (`nix-env --set-flag active false` turns it off).
    pub active: bool,
    /// Lower wins collisions; always within the range of an `i32`.
    pub priority: i64,
}

/// Why a `derivations` attribute could not be parsed. `group` is the 1-based number of the
/// group the problem is in.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BuildenvError {
    /// The text ends after a group's `ACTIVE` flag.
    #[error("malformed 'derivations' attribute: group {group} ends after its 'active' flag")]
    MissingPriority {
        /// Which group.
        group: usize,
    },
    /// The priority is not a decimal integer within the range of an `i32`.
    #[error("malformed 'derivations' attribute: invalid priority '{priority}' in group {group}")]
    InvalidPriority {
        /// Which group.
        group: usize,
        /// The word found.
        priority: String,
    },
    /// The text ends after a group's priority.
    #[error("malformed 'derivations' attribute: group {group} ends after its priority")]
    MissingCount {
        /// Which group.
        group: usize,
    },
    /// The number of outputs is not a non-negative decimal integer.
    #[error(
        "malformed 'derivations' attribute: invalid number of outputs '{count}' in group {group}"
    )]
    InvalidCount {
        /// Which group.
        group: usize,
        /// The word found.
        count: String,
    },
    /// The text ends before all the paths a group announces.
    #[error(
        "malformed 'derivations' attribute: fewer output paths than announced in group {group} \
         ({announced} announced, {found} found)"
    )]
    MissingPaths {
        /// Which group.
        group: usize,
        /// `N`.
        announced: usize,
        /// Paths present.
        found: usize,
    },
}

/// Parses `derivations`: groups of `ACTIVE PRIORITY N PATH1 ... PATHN`, in order.
pub fn parse_derivations(text: &str) -> Result<Vec<Package>, BuildenvError> {
    let mut words = text.split_whitespace();
    let mut packages = Vec::new();
    let mut group = 0;
    while let Some(active) = words.next() {
        group += 1;
        let priority = words
            .next()
            .ok_or(BuildenvError::MissingPriority { group })?;
        let priority: i64 =
            priority
                .parse::<i32>()
                .map(i64::from)
                .map_err(|_| BuildenvError::InvalidPriority {
                    group,
                    priority: priority.to_owned(),
                })?;
        let count = words.next().ok_or(BuildenvError::MissingCount { group })?;
        let announced: usize = count.parse().map_err(|_| BuildenvError::InvalidCount {
            group,
            count: count.to_owned(),
        })?;
        for found in 0..announced {
            let path = words.next().ok_or(BuildenvError::MissingPaths {
                group,
                announced,
                found,
            })?;
            packages.push(Package {
                path: path.to_owned(),
                active: active != "false",
                priority,
            });
        }
    }
    Ok(packages)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_groups() {
        let p = parse_derivations("true 5 2 /s/a-out /s/a-dev\nfalse -3 1 /s/b").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].active, p[0].priority), (true, 5));
        assert_eq!(p[0].path, "/s/a-out");
        assert_eq!(p[1].path, "/s/a-dev");
        assert_eq!((p[2].active, p[2].priority), (false, -3));
        assert!(parse_derivations("").unwrap().is_empty());
        assert!(parse_derivations(" \n\t ").unwrap().is_empty());
        // A group with no outputs links nothing; any flag but `false` is active.
        let p = parse_derivations("1 0 0 yes 7 1 /s/c").unwrap();
        assert_eq!(
            p,
            vec![Package {
                path: "/s/c".into(),
                active: true,
                priority: 7
            }]
        );
    }

    #[test]
    fn priorities_stay_within_an_int() {
        let p = parse_derivations("true -2147483648 1 /a true 2147483647 1 /b").unwrap();
        assert_eq!(
            (p[0].priority, p[1].priority),
            (i64::from(i32::MIN), 2147483647)
        );
        for bad in [
            "true 2147483648 1 /a",
            "true -2147483649 1 /a",
            "true 1.5 1 /a",
        ] {
            assert!(
                matches!(
                    parse_derivations(bad),
                    Err(BuildenvError::InvalidPriority { group: 1, .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_groups_are_refused_with_their_number() {
        for (bad, want) in [
            ("true", BuildenvError::MissingPriority { group: 1 }),
            (
                "true x 1 /a",
                BuildenvError::InvalidPriority {
                    group: 1,
                    priority: "x".into(),
                },
            ),
            ("1 5", BuildenvError::MissingCount { group: 1 }),
            (
                "true 5 1 /a true 5 2 /s/a",
                BuildenvError::MissingPaths {
                    group: 2,
                    announced: 2,
                    found: 1,
                },
            ),
            (
                "true 5 -1",
                BuildenvError::InvalidCount {
                    group: 1,
                    count: "-1".into(),
                },
            ),
        ] {
            let e = parse_derivations(bad).unwrap_err();
            assert_eq!(e, want, "{bad}");
            assert!(
                e.to_string()
                    .starts_with("malformed 'derivations' attribute: "),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            BuildenvError::MissingPaths {
                group: 2,
                announced: 2,
                found: 1
            }
            .to_string(),
            "malformed 'derivations' attribute: fewer output paths than announced in group 2 \
             (2 announced, 1 found)"
        );
    }

    #[test]
    fn a_huge_count_allocates_nothing_up_front() {
        let e = parse_derivations("true 5 18446744073709551615 /a").unwrap_err();
        assert!(matches!(
            e,
            BuildenvError::MissingPaths {
                found: 1,
                announced: usize::MAX,
                ..
            }
        ));
    }
}
