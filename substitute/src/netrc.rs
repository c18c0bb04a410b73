//! The `.netrc` format, as curl reads it for Nix's `netrc-file`: the login and password to send
//! to a host. Pure: text in, credentials out.
//!
//! The file is a sequence of whitespace-separated tokens. `machine NAME` starts the entry of a
//! host, `default` the entry for every host no `machine` names; within an entry `login X`,
//! `password Y` and `account Z` give its fields. `macdef NAME` defines a macro, whose body (up
//! to the next empty line) is skipped. A token may be written in double quotes, with `\"`,
//! `\\`, `\n`, `\r` and `\t` inside; `#` at the start of a token comments out the rest of the
//! line. The first entry naming a host wins (host names compare without regard to case).

use thiserror::Error;

/// The largest netrc text read (real ones are a few hundred bytes).
pub const MAX_NETRC_BYTES: usize = 1 << 20;

/// Why a netrc text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NetrcError {
    /// Longer than [`MAX_NETRC_BYTES`].
    #[error("larger than {MAX_NETRC_BYTES} bytes")]
    TooLarge,
    /// A keyword that needs a value came last.
    #[error("line {line}: '{keyword}' without a value")]
    MissingValue {
        /// The keyword.
        keyword: String,
        /// Its line (from 1).
        line: usize,
    },
    /// A field outside any `machine` or `default` entry.
    #[error("line {line}: '{keyword}' before any 'machine' or 'default'")]
    OutsideEntry {
        /// The keyword.
        keyword: String,
        /// Its line (from 1).
        line: usize,
    },
    /// A word that is no keyword where a keyword belongs.
    #[error("line {line}: unknown keyword '{word}'")]
    UnknownKeyword {
        /// The word.
        word: String,
        /// Its line (from 1).
        line: usize,
    },
    /// A quoted token without its closing quote.
    #[error("line {line}: a quoted value is not closed")]
    UnclosedQuote {
        /// The line it starts on (from 1).
        line: usize,
    },
}

/// What a netrc entry says: the host it is for (`None` for `default`) and its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetrcEntry {
    /// `machine NAME`, or `None` for the `default` entry.
    pub machine: Option<String>,
    /// `login`.
    pub login: Option<String>,
    /// `password`.
    pub password: Option<String>,
}

/// The entries of a netrc text, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netrc {
    entries: Vec<NetrcEntry>,
}

/// A token with the line it starts on.
struct Token {
    text: String,
    line: usize,
}

/// Whether a keyword takes the token after it as its value.
fn takes_value(word: &str) -> bool {
    matches!(
        word,
        "machine" | "login" | "password" | "account" | "macdef"
    )
}

/// Splits `text` into tokens (no recursion, one pass).
fn tokens(text: &str) -> Result<Vec<Token>, NetrcError> {
    let mut out: Vec<Token> = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    // Inside a `macdef` body: skip until an empty line.
    let mut in_macro = false;
    let mut last_was_newline = false;
    while let Some(&c) = chars.peek() {
        if in_macro {
            chars.next();
            if c == '\n' {
                line += 1;
                if last_was_newline {
                    in_macro = false;
                }
                last_was_newline = true;
            } else {
                last_was_newline = false;
            }
            continue;
        }
        if c == '\n' {
            chars.next();
            line += 1;
            continue;
        }
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' {
            while chars.peek().is_some_and(|&c| c != '\n') {
                chars.next();
            }
            continue;
        }
        let start = line;
        let mut word = String::new();
        if c == '"' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('r') => word.push('\r'),
                        Some('t') => word.push('\t'),
                        Some(other) => {
                            if other == '\n' {
                                line += 1;
                            }
                            word.push(other);
                        }
                        None => break,
                    },
                    '\n' => {
                        line += 1;
                        word.push('\n');
                    }
                    other => word.push(other),
                }
            }
            if !closed {
                return Err(NetrcError::UnclosedQuote { line: start });
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        // `macdef NAME` is followed by its body on the next lines, up to an empty line.
        let is_macro_name = match out.as_slice() {
            [.., before, last] => last.text == "macdef" && !takes_value(&before.text),
            [last] => last.text == "macdef",
            [] => false,
        };
        out.push(Token {
            text: word,
            line: start,
        });
        if is_macro_name {
            // The rest of this line, then the body.
            while chars.peek().is_some_and(|&c| c != '\n') {
                chars.next();
            }
            if chars.next().is_some() {
                line += 1;
            }
            in_macro = true;
            last_was_newline = true;
        }
    }
    Ok(out)
}

impl Netrc {
    /// Reads a netrc text.
    pub fn parse(text: &str) -> Result<Netrc, NetrcError> {
        if text.len() > MAX_NETRC_BYTES {
            return Err(NetrcError::TooLarge);
        }
        let tokens = tokens(text)?;
        let mut entries: Vec<NetrcEntry> = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let keyword = &tokens[i];
            let value = |i: usize| -> Result<String, NetrcError> {
                tokens
                    .get(i + 1)
                    .map(|t| t.text.clone())
                    .ok_or_else(|| NetrcError::MissingValue {
                        keyword: keyword.text.clone(),
                        line: keyword.line,
                    })
            };
            match keyword.text.as_str() {
                "machine" => {
                    entries.push(NetrcEntry {
                        machine: Some(value(i)?),
                        ..NetrcEntry::default()
                    });
                    i += 2;
                }
                "default" => {
                    entries.push(NetrcEntry::default());
                    i += 1;
                }
                "login" | "password" | "account" => {
                    let v = value(i)?;
                    let Some(entry) = entries.last_mut() else {
                        return Err(NetrcError::OutsideEntry {
                            keyword: keyword.text.clone(),
                            line: keyword.line,
                        });
                    };
                    match keyword.text.as_str() {
                        "login" => entry.login = Some(v),
                        "password" => entry.password = Some(v),
                        _ => {}
                    }
                    i += 2;
                }
                // The macro's body was skipped with it.
                "macdef" => i += 2,
                other => {
                    return Err(NetrcError::UnknownKeyword {
                        word: other.to_owned(),
                        line: keyword.line,
                    });
                }
            }
        }
        Ok(Netrc { entries })
    }

    /// The entries, in the order of the text.
    pub fn entries(&self) -> &[NetrcEntry] {
        &self.entries
    }

    /// The login and password for `host`: the first `machine` entry naming it, else the
    /// `default` entry. An entry without a login gives none.
    pub fn credentials(&self, host: &str) -> Option<(&str, Option<&str>)> {
        let named = self.entries.iter().find(|e| {
            e.machine
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(host))
        });
        let entry = named.or_else(|| self.entries.iter().find(|e| e.machine.is_none()))?;
        Some((entry.login.as_deref()?, entry.password.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_and_the_default_give_their_credentials() {
        let text = "\
# caches of the team
machine cache.example.org login alice password s3cret
machine Private.Example.ORG
  login bob
  password \"two words \\\"quoted\\\"\"
  account ignored
macdef init
cd /pub
machine not-a-host login nobody password nothing

default login anonymous password guest@
";
        let netrc = Netrc::parse(text).expect("parse");
        assert_eq!(
            netrc.credentials("cache.example.org"),
            Some(("alice", Some("s3cret")))
        );
        assert_eq!(
            netrc.credentials("private.example.org"),
            Some(("bob", Some("two words \"quoted\"")))
        );
        // The macro's body is not an entry.
        assert_eq!(
            netrc.credentials("not-a-host"),
            Some(("anonymous", Some("guest@")))
        );
        assert_eq!(netrc.entries().len(), 3);
        assert_eq!(
            netrc.credentials("elsewhere"),
            Some(("anonymous", Some("guest@")))
        );
        // The first entry of a host wins; no default means nothing for other hosts.
        let netrc = Netrc::parse("machine h login a password 1\nmachine h login b password 2\n")
            .expect("parse");
        assert_eq!(netrc.credentials("h"), Some(("a", Some("1"))));
        assert_eq!(netrc.credentials("other"), None);
        // An entry without a login gives nothing.
        let netrc = Netrc::parse("machine h password 1").expect("parse");
        assert_eq!(netrc.credentials("h"), None);
        assert_eq!(Netrc::parse("").expect("empty"), Netrc::default());
    }

    #[test]
    fn malformed_texts_are_refused_naming_the_line() {
        let cases: &[(&str, NetrcError)] = &[
            (
                "machine h login",
                NetrcError::MissingValue {
                    keyword: "login".into(),
                    line: 1,
                },
            ),
            (
                "\n\nlogin a",
                NetrcError::OutsideEntry {
                    keyword: "login".into(),
                    line: 3,
                },
            ),
            (
                "machine h\nuser a",
                NetrcError::UnknownKeyword {
                    word: "user".into(),
                    line: 2,
                },
            ),
            (
                "machine h password \"open",
                NetrcError::UnclosedQuote { line: 1 },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Netrc::parse(text).as_ref(), Err(expected), "{text:?}");
        }
        let long = "#".repeat(MAX_NETRC_BYTES + 1);
        assert_eq!(Netrc::parse(&long), Err(NetrcError::TooLarge));
    }
}
