#![no_main]
//! Feeds arbitrary bytes as a derivation's `__json` through the path the daemon takes to write
//! `.attrs.sh`: `Derivation::structured_attrs` (serde_json with its nesting limit of 128, an
//! object required) then `structured_attrs::attrs_shell`.
//!
//! Nothing may panic, and the output must read back: a small reader of the bash subset the
//! renderer writes (`declare [-a|-A] NAME=...` lines, words made of `'...'` quoted runs, `\'`
//! and the bare characters of numbers) must take the whole text and find exactly the
//! declarations expected from the JSON, each string value byte for byte. A character outside
//! quotes that is not part of a number (`$`, `;`, a space inside a value...) fails the target:
//! no value may end its quoting.
use libfuzzer_sys::fuzz_target;
use pkgchain_store_model::derivation::Derivation;
use pkgchain_store_model::structured_attrs::attrs_shell;
use serde_json::Value;

/// A declaration: its flag (`""`, `"-a"`, `"-A"`), name and words (key, value pairs for `-A`).
#[derive(Debug, PartialEq)]
struct Decl {
    flag: &'static str,
    name: String,
    values: Vec<(Option<String>, Word)>,
}

/// A word as the reader decoded it, or as the JSON says it must be.
#[derive(Debug, PartialEq)]
enum Word {
    Text(String),
    /// A number: its text, unquoted.
    Number(String),
}

fuzz_target!(|data: &[u8]| {
    let mut drv = Derivation::default();
    drv.env_set("__json", data);
    let Ok(Some(attrs)) = drv.structured_attrs() else {
        return;
    };
    let sh = attrs_shell(&attrs).expect("structured_attrs gives an object, which renders");
    let Value::Object(map) = &attrs else {
        panic!("structured_attrs gave a non-object");
    };
    let expected: Vec<Decl> = map.iter().filter_map(|(k, v)| expect(k, v)).collect();
    let got = read_all(&sh);
    assert_eq!(got.len(), expected.len(), "{sh}");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.flag, e.flag, "{sh}");
        assert_eq!(g.name, e.name, "{sh}");
        assert_eq!(g.values.len(), e.values.len(), "{sh}");
        for ((gk, gv), (ek, ev)) in g.values.iter().zip(&e.values) {
            assert_eq!(gk, ek, "{sh}");
            match (gv, ev) {
                (Word::Number(g), Word::Number(e)) => {
                    let (gf, ef) = (g.parse::<f64>(), e.parse::<f64>());
                    assert!(g == e || (gf.is_ok() && gf == ef), "{g} for {e} in {sh}");
                }
                _ => assert_eq!(gv, ev, "{sh}"),
            }
        }
    }
});

fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// The word for a simple value, `None` for arrays and objects.
fn simple(v: &Value) -> Option<Word> {
    Some(match v {
        Value::String(s) => Word::Text(s.clone()),
        Value::Bool(true) => Word::Number("1".into()),
        Value::Bool(false) | Value::Null => Word::Text(String::new()),
        // Nix keeps integral numbers (as a C float) only, written as a C int.
        Value::Number(n) => {
            let f = n.as_f64()?;
            // Beyond f32's range it is infinite, which C's ceil keeps: integral.
            let single = f as f32;
            if single.is_finite() && single.fract() != 0.0 {
                return None;
            }
            let wide = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => i,
                (None, Some(u)) => u as i64,
                _ if f.abs() < 2_147_483_648.0 => f as i64,
                _ => i64::from(i32::MIN),
            };
            Word::Number((wide as i32).to_string())
        }
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// What the attribute `k` must become, if anything.
fn expect(k: &str, v: &Value) -> Option<Decl> {
    if !is_identifier(k) {
        return None;
    }
    let decl = |flag, values| Decl {
        flag,
        name: k.to_owned(),
        values,
    };
    if let Some(w) = simple(v) {
        return Some(decl("", vec![(None, w)]));
    }
    match v {
        Value::Array(items) => {
            let words: Option<Vec<_>> =
                items.iter().map(|i| simple(i).map(|w| (None, w))).collect();
            words.map(|w| decl("-a", w))
        }
        Value::Object(fields) => {
            let words: Option<Vec<_>> = fields
                .iter()
                .map(|(fk, fv)| simple(fv).map(|w| (Some(fk.clone()), w)))
                .collect();
            words.map(|w| decl("-A", w))
        }
        _ => None,
    }
}

/// Reads every declaration of `sh`, failing on anything else.
fn read_all(sh: &str) -> Vec<Decl> {
    let mut r = Reader {
        s: sh.as_bytes(),
        i: 0,
        sh,
    };
    let mut decls = Vec::new();
    while r.i < r.s.len() {
        decls.push(r.decl());
    }
    decls
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    sh: &'a str,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn must(&mut self, lit: &str) {
        assert!(
            self.eat(lit),
            "expected {lit:?} at byte {} of:\n{}",
            self.i,
            self.sh
        );
    }

    fn decl(&mut self) -> Decl {
        self.must("declare ");
        let flag = if self.eat("-a ") {
            "-a"
        } else if self.eat("-A ") {
            "-A"
        } else {
            ""
        };
        let start = self.i;
        while self.peek().is_some_and(|c| c != b'=') {
            self.i += 1;
        }
        let name = String::from_utf8(self.s[start..self.i].to_vec()).expect("UTF-8 name");
        assert!(
            is_identifier(&name),
            "declared name {name:?} in:\n{}",
            self.sh
        );
        self.must("=");
        let mut values = Vec::new();
        if flag.is_empty() {
            values.push((None, self.word()));
        } else {
            self.must("(");
            while !self.eat(")") {
                let key = if flag == "-A" {
                    self.must("[");
                    let Word::Text(k) = self.word() else {
                        panic!("an unquoted key in:\n{}", self.sh);
                    };
                    self.must("]=");
                    Some(k)
                } else {
                    None
                };
                values.push((key, self.word()));
                self.must(" ");
            }
        }
        self.must("\n");
        Decl { flag, name, values }
    }

    /// One word: quoted runs, `\'`, and the bare characters of a number.
    fn word(&mut self) -> Word {
        let mut text = Vec::new();
        let mut quoted = false;
        while let Some(c) = self.peek() {
            match c {
                b'\'' => {
                    quoted = true;
                    self.i += 1;
                    let end = self.s[self.i..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .unwrap_or_else(|| panic!("an unclosed quote in:\n{}", self.sh));
                    text.extend_from_slice(&self.s[self.i..self.i + end]);
                    self.i += end + 1;
                }
                b'\\' => {
                    quoted = true;
                    self.i += 1;
                    self.must("'");
                    text.push(b'\'');
                }
                b'0'..=b'9' | b'.' | b'-' => {
                    text.push(c);
                    self.i += 1;
                }
                b' ' | b'\n' | b']' | b')' => break,
                _ => panic!(
                    "unquoted {:?} at byte {} of:\n{}",
                    char::from(c),
                    self.i,
                    self.sh
                ),
            }
        }
        let text = String::from_utf8(text).expect("UTF-8 value");
        if quoted || text.is_empty() {
            Word::Text(text)
        } else {
            Word::Number(text)
        }
    }
}
