//! Structured attributes as bash declarations: the `.attrs.sh` file a builder sources, made from
//! a derivation's `__json` (parsed by
//! [`Derivation::structured_attrs`](crate::derivation::Derivation::structured_attrs), which keeps
//! serde_json's nesting limit of 128), as Nix's `writeStructuredAttrsShell` makes it.
//!
//! Every top-level attribute whose name is a bash identifier (`[A-Za-z_][A-Za-z0-9_]*`) becomes
//! one line, in the object's key order, when its value is
//!
//! * simple: `declare NAME=VALUE`;
//! * an array of simple values: `declare -a NAME=(V1 V2 ... )` (each value followed by a space);
//! * an object of simple values: `declare -A NAME=([K1]=V1 [K2]=V2 ... )`, keys quoted.
//!
//! Anything else (other names, nested arrays or objects) is left out. A simple value is written
//! as bash reads it: a string single-quoted (a `'` inside becomes `'\''`), so that no value can
//! end its declaration or run a command; a number as Nix writes it (it reads the number as a
//! C `float`, and only if that is integral writes it as a C `int`: truncated to 32 bits, and a
//! float out of that range as `-2147483648`, what x86 gives; a number with a fraction is not
//! simple, so its attribute, or the array or object holding it, is left out); `true` as `1`;
//! `false` as nothing; `null` as `''`.
//! A string may hold newlines, so a declaration may span several lines of the file.
//!
//! ```
//! use pkgchain_store_model::structured_attrs::attrs_shell;
//!
//! let attrs = serde_json::json!({"bad-name": 1, "n": 3, "name": "it's", "srcs": ["a", "b"]});
//! assert_eq!(
//!     attrs_shell(&attrs).unwrap(),
//!     "declare n=3\ndeclare name='it'\\''s'\ndeclare -a srcs=('a' 'b' )\n"
//! );
//! ```

use serde_json::Value;
use thiserror::Error;

/// Why structured attributes cannot be written as bash declarations.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StructuredAttrsError {
    /// The value is not a JSON object.
    #[error("structured attributes are not an object")]
    NotAnObject,
}

/// `.attrs.sh` for the structured attributes `json` (an object); see the module documentation
/// for what each attribute becomes.
pub fn attrs_shell(json: &Value) -> Result<String, StructuredAttrsError> {
    let Value::Object(map) = json else {
        return Err(StructuredAttrsError::NotAnObject);
    };
    let mut out = String::new();
    for (key, value) in map {
        if !is_bash_identifier(key) {
            continue;
        }
        if let Some(s) = simple(value) {
            out.push_str("declare ");
            out.push_str(key);
            out.push('=');
            out.push_str(&s);
            out.push('\n');
        } else if let Value::Array(items) = value {
            let parts: Option<Vec<String>> = items.iter().map(simple).collect();
            if let Some(parts) = parts {
                out.push_str("declare -a ");
                out.push_str(key);
                out.push_str("=(");
                for p in parts {
                    out.push_str(&p);
                    out.push(' ');
                }
                out.push_str(")\n");
            }
        } else if let Value::Object(fields) = value {
            let parts: Option<Vec<(&String, String)>> = fields
                .iter()
                .map(|(k, v)| simple(v).map(|s| (k, s)))
                .collect();
            if let Some(parts) = parts {
                out.push_str("declare -A ");
                out.push_str(key);
                out.push_str("=(");
                for (k, v) in parts {
                    out.push('[');
                    out.push_str(&shell_escape(k));
                    out.push_str("]=");
                    out.push_str(&v);
                    out.push(' ');
                }
                out.push_str(")\n");
            }
        }
    }
    Ok(out)
}

/// Whether `s` is a name bash accepts for a variable.
pub fn is_bash_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `s` single-quoted for bash, always (Nix's `escapeShellArgAlways`).
pub fn shell_escape(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A simple JSON value as bash sees it, or `None` for arrays and objects.
fn simple(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(shell_escape(s)),
        Value::Number(n) => {
            // Nix: `if (ceil(value.get<float>()) == value.get<float>()) to_string(value.get<int>())`.
            let as_float = n.as_f64()? as f32;
            if as_float.ceil() != as_float {
                return None;
            }
            // Truncations are the point here: this is C's conversion to `int`.
            #[allow(clippy::cast_possible_truncation)]
            let as_int = if let Some(i) = n.as_i64() {
                i as i32
            } else if let Some(u) = n.as_u64() {
                u as i32
            } else {
                let f = n.as_f64()?;
                if f > -2_147_483_649.0 && f < 2_147_483_648.0 {
                    f as i32
                } else {
                    i32::MIN
                }
            };
            Some(as_int.to_string())
        }
        Value::Bool(true) => Some("1".to_owned()),
        Value::Bool(false) => Some(String::new()),
        Value::Null => Some("''".to_owned()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn simple_values_arrays_and_objects_are_declared() {
        // Written in sorted order, the order serde_json's map keeps (or, with its
        // `preserve_order` feature, the order written).
        let attrs = json!({
            "big": 18446744073709551615u64, "flag": true, "half": 0.5, "halves": [1, 0.5],
            "huge": 1e20, "wide": 4294967297i64,
            "list": ["a", "b'c", 1, null], "n": 3, "name": "x", "neg": -4, "none": null,
            "off": false, "set": {"it's": true, "k": "v"}, "two": 2.0,
        });
        let sh = attrs_shell(&attrs).unwrap();
        let lines: Vec<&str> = sh.lines().collect();
        assert_eq!(
            lines,
            [
                "declare big=-1",
                "declare flag=1",
                "declare huge=-2147483648",
                "declare -a list=('a' 'b'\\''c' 1 '' )",
                "declare n=3",
                "declare name='x'",
                "declare neg=-4",
                "declare none=''",
                "declare off=",
                "declare -A set=(['it'\\''s']=1 ['k']='v' )",
                "declare two=2",
                "declare wide=1",
            ]
        );
        assert!(sh.ends_with('\n'));
    }

    #[test]
    fn other_names_and_nested_values_are_left_out() {
        let attrs = json!({
            "bad-name": "y", "1x": "y", "": "y", "é": "y", "_ok9": "y",
            "nested": [[1]], "deep": {"k": {"k": 1}}, "mixed": ["a", ["b"]],
            "empty_list": [], "empty_set": {},
        });
        assert_eq!(
            attrs_shell(&attrs).unwrap(),
            "declare _ok9='y'\ndeclare -a empty_list=()\ndeclare -A empty_set=()\n"
        );
    }

    #[test]
    fn strings_cannot_leave_their_quotes() {
        let attrs = json!({"s": "a'; rm -rf / #\n$(x) `y` \\'"});
        assert_eq!(
            attrs_shell(&attrs).unwrap(),
            "declare s='a'\\''; rm -rf / #\n$(x) `y` \\'\\'''\n"
        );
    }

    #[test]
    fn only_objects_are_accepted() {
        for v in [json!([]), json!("x"), json!(1), json!(null)] {
            let e = attrs_shell(&v).unwrap_err();
            assert_eq!(e, StructuredAttrsError::NotAnObject);
            assert_eq!(e.to_string(), "structured attributes are not an object");
        }
        assert_eq!(attrs_shell(&json!({})).unwrap(), "");
    }

    #[test]
    fn identifiers() {
        for ok in ["a", "_", "A_1", "__json"] {
            assert!(is_bash_identifier(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "ä", "a.b"] {
            assert!(!is_bash_identifier(bad), "{bad}");
        }
    }
}
