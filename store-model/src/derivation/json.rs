//! The JSON form of derivations, as Nix 2.35 prints and reads it (format version 4).
//!
//! ```json
//! {
//!   "name": "hello", "version": 4, "system": "x86_64-linux", "builder": "/bin/sh",
//!   "args": ["-c", "..."], "env": {"out": "/nix/store/...-hello"},
//!   "outputs": {"out": {"path": "...-hello"}},
//!   "inputs": {"srcs": ["...-builder.sh"],
//!              "drvs": {"...-bash.drv": {"outputs": ["out"], "dynamicOutputs": {}}}},
//!   "structuredAttrs": {"...": "..."}
//! }
//! ```
//!
//! Store paths are written without the store directory. Outputs are `{"path"}` (input-addressed),
//! `{"method", "hash"}` (fixed, SRI hash), `{"method", "hashAlgo"}` (floating), `{}` (deferred)
//! or `{"method", "hashAlgo", "impure": true}`. `structuredAttrs` holds what the `.drv` file
//! keeps as the JSON text of the `__json` environment variable; [`dump`] serialises it the way
//! Nix's JSON library does, so both forms describe the same `.drv` bytes.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

use super::{
    Derivation, DerivationError, DerivationOutput, InputOutputs, STRUCTURED_ATTRS_ENV,
    check_output_name,
};
use crate::content_address::{ContentAddress, ContentAddressMethod};
use crate::hash::{HashAlgo, truncate_for_error};
use crate::store_path::{StorePath, validate_name};

/// The derivation JSON format version this module reads and writes.
pub const FORMAT_VERSION: u64 = 4;

/// Deepest nesting of dynamic input outputs accepted and printed.
pub const MAX_DEPTH: usize = 32;

fn err(path: &str, message: impl Into<String>) -> DerivationError {
    DerivationError::Json {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn utf8<'a>(what: &str, bytes: &'a [u8]) -> Result<&'a str, DerivationError> {
    std::str::from_utf8(bytes).map_err(|_| DerivationError::NotUtf8(what.to_owned()))
}

/// The JSON form of one output.
pub fn output_to_json(output: &DerivationOutput) -> Value {
    let mut obj = Map::new();
    match output {
        DerivationOutput::InputAddressed(path) => {
            obj.insert("path".to_owned(), Value::String(path.to_string()));
        }
        DerivationOutput::CaFixed(ca) => return ca.to_json(),
        DerivationOutput::CaFloating { method, hash_algo } => {
            obj.insert("method".to_owned(), method.render().into());
            obj.insert("hashAlgo".to_owned(), hash_algo.name().into());
        }
        DerivationOutput::Deferred => {}
        DerivationOutput::Impure { method, hash_algo } => {
            obj.insert("method".to_owned(), method.render().into());
            obj.insert("hashAlgo".to_owned(), hash_algo.name().into());
            obj.insert("impure".to_owned(), Value::Bool(true));
        }
    }
    Value::Object(obj)
}

/// Parses the JSON form of one output; `at` names it in errors.
pub fn output_from_json(value: &Value, at: &str) -> Result<DerivationOutput, DerivationError> {
    let obj = value
        .as_object()
        .ok_or_else(|| err(at, "expected an object"))?;
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    let string = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| err(&format!("{at}.{key}"), "expected a string"))
    };
    let method_algo = || -> Result<(ContentAddressMethod, HashAlgo), DerivationError> {
        let method = ContentAddressMethod::parse(string("method")?)
            .map_err(|e| err(&format!("{at}.method"), e.to_string()))?;
        let algo = HashAlgo::from_name(string("hashAlgo")?)
            .map_err(|e| err(&format!("{at}.hashAlgo"), e.to_string()))?;
        Ok((method, algo))
    };
    let is = |expected: &[&str]| keys == expected.iter().copied().collect();
    if is(&["path"]) {
        let path = StorePath::from_base_name(string("path")?)
            .map_err(|e| err(&format!("{at}.path"), e.to_string()))?;
        Ok(DerivationOutput::InputAddressed(path))
    } else if is(&["hash", "method"]) {
        let ca = ContentAddress::from_json(value).map_err(|e| err(at, e.to_string()))?;
        Ok(DerivationOutput::CaFixed(ca))
    } else if is(&["hashAlgo", "method"]) {
        let (method, hash_algo) = method_algo()?;
        Ok(DerivationOutput::CaFloating { method, hash_algo })
    } else if keys.is_empty() {
        Ok(DerivationOutput::Deferred)
    } else if is(&["hashAlgo", "impure", "method"]) {
        if obj.get("impure") != Some(&Value::Bool(true)) {
            return Err(err(&format!("{at}.impure"), "expected true"));
        }
        let (method, hash_algo) = method_algo()?;
        Ok(DerivationOutput::Impure { method, hash_algo })
    } else {
        Err(err(at, "invalid JSON for derivation output"))
    }
}

fn node_to_json(node: &InputOutputs, depth: usize) -> Result<Value, DerivationError> {
    if depth > MAX_DEPTH {
        return Err(err(
            "inputs.drvs",
            format!("nested deeper than {MAX_DEPTH}"),
        ));
    }
    let mut obj = Map::new();
    obj.insert(
        "outputs".to_owned(),
        Value::Array(
            node.outputs
                .iter()
                .map(|s| Value::String(s.clone()))
                .collect(),
        ),
    );
    let mut dynamic = Map::new();
    for (name, child) in &node.dynamic_outputs {
        dynamic.insert(name.clone(), node_to_json(child, depth + 1)?);
    }
    obj.insert("dynamicOutputs".to_owned(), Value::Object(dynamic));
    Ok(Value::Object(obj))
}

fn node_from_json(value: &Value, at: &str, depth: usize) -> Result<InputOutputs, DerivationError> {
    if depth > MAX_DEPTH {
        return Err(err(at, format!("nested deeper than {MAX_DEPTH}")));
    }
    let obj = value
        .as_object()
        .ok_or_else(|| err(at, "expected an object"))?;
    let outputs = obj
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or_else(|| err(&format!("{at}.outputs"), "expected an array"))?;
    let mut node = InputOutputs::default();
    for o in outputs {
        let name = o
            .as_str()
            .ok_or_else(|| err(&format!("{at}.outputs"), "expected strings"))?;
        check_output_name(name).map_err(|e| err(&format!("{at}.outputs"), e.to_string()))?;
        node.outputs.insert(name.to_owned());
    }
    let dynamic = obj
        .get("dynamicOutputs")
        .and_then(Value::as_object)
        .ok_or_else(|| err(&format!("{at}.dynamicOutputs"), "expected an object"))?;
    for (name, child) in dynamic {
        let child_at = format!("{at}.dynamicOutputs.{}", truncate_for_error(name));
        check_output_name(name).map_err(|e| err(&child_at, e.to_string()))?;
        node.dynamic_outputs
            .insert(name.clone(), node_from_json(child, &child_at, depth + 1)?);
    }
    Ok(node)
}

/// The JSON form of a derivation.
///
/// Fails when a string is not UTF-8 (JSON cannot hold it; Nix fails too) or `__json` is not a
/// JSON object.
pub fn to_json(drv: &Derivation) -> Result<Value, DerivationError> {
    let mut res = Map::new();
    res.insert("name".to_owned(), drv.name.clone().into());
    res.insert("version".to_owned(), FORMAT_VERSION.into());
    let mut outputs = Map::new();
    for (name, output) in &drv.outputs {
        outputs.insert(name.clone(), output_to_json(output));
    }
    res.insert("outputs".to_owned(), Value::Object(outputs));

    let mut inputs = Map::new();
    inputs.insert(
        "srcs".to_owned(),
        Value::Array(
            drv.input_srcs
                .iter()
                .map(|p| p.to_string().into())
                .collect(),
        ),
    );
    let mut drvs = Map::new();
    for (path, node) in &drv.input_drvs {
        drvs.insert(path.to_string(), node_to_json(node, 1)?);
    }
    inputs.insert("drvs".to_owned(), Value::Object(drvs));
    res.insert("inputs".to_owned(), Value::Object(inputs));

    res.insert("system".to_owned(), utf8("system", &drv.platform)?.into());
    res.insert("builder".to_owned(), utf8("builder", &drv.builder)?.into());
    let args = drv
        .args
        .iter()
        .map(|a| Ok(utf8("an argument", a)?.into()))
        .collect::<Result<Vec<Value>, DerivationError>>()?;
    res.insert("args".to_owned(), Value::Array(args));
    let mut env = Map::new();
    for (key, value) in &drv.env {
        let key = utf8("an environment variable name", key)?;
        if key == STRUCTURED_ATTRS_ENV {
            continue;
        }
        let value = utf8(&format!("environment variable '{key}'"), value)?;
        env.insert(key.to_owned(), value.into());
    }
    res.insert("env".to_owned(), Value::Object(env));
    if let Some(attrs) = drv.structured_attrs()? {
        res.insert("structuredAttrs".to_owned(), attrs);
    }
    Ok(Value::Object(res))
}

/// The JSON form of a resolved derivation (Nix's `BasicDerivation`): like [`to_json`] but with
/// `inputs` a plain array of store paths. Fails when the derivation has input derivations.
pub fn to_basic_json(drv: &Derivation) -> Result<Value, DerivationError> {
    if !drv.input_drvs.is_empty() {
        return Err(err(
            "inputs",
            "a resolved derivation has no input derivations",
        ));
    }
    let mut value = to_json(drv)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "inputs".to_owned(),
            Value::Array(
                drv.input_srcs
                    .iter()
                    .map(|p| p.to_string().into())
                    .collect(),
            ),
        );
    }
    Ok(value)
}

/// Parses the JSON form of a derivation (format version 4), also in the resolved form whose
/// `inputs` is an array of store paths.
///
/// `structuredAttrs`, if present, becomes the `__json` environment variable serialised with
/// [`dump`]. An `env.__json` is accepted when it is a JSON object and agrees with
/// `structuredAttrs` (or there is none); its text is then kept as given.
pub fn from_json(value: &Value) -> Result<Derivation, DerivationError> {
    let obj = value
        .as_object()
        .ok_or_else(|| err("(root)", "expected an object"))?;
    let field = |key: &str| obj.get(key).ok_or_else(|| err(key, "missing"));
    let string = |key: &str| {
        field(key)?
            .as_str()
            .ok_or_else(|| err(key, "expected a string"))
    };

    let name = string("name")?;
    validate_name(name).map_err(|e| err("name", e.to_string()))?;
    let version = field("version")?;
    if version.as_u64() != Some(FORMAT_VERSION) {
        return Err(err(
            "version",
            format!(
                "unsupported derivation JSON format version {version}, only format version {FORMAT_VERSION} is supported"
            ),
        ));
    }

    let mut drv = Derivation {
        name: name.to_owned(),
        ..Derivation::default()
    };

    let outputs = field("outputs")?
        .as_object()
        .ok_or_else(|| err("outputs", "expected an object"))?;
    for (output_name, output) in outputs {
        let at = format!("outputs.{}", truncate_for_error(output_name));
        check_output_name(output_name).map_err(|e| err(&at, e.to_string()))?;
        drv.outputs
            .insert(output_name.clone(), output_from_json(output, &at)?);
    }

    let (srcs, drvs) = match field("inputs")? {
        // A resolved derivation (Nix's `BasicDerivation`): just the input paths.
        Value::Array(srcs) => (srcs, None),
        Value::Object(inputs) => (
            inputs
                .get("srcs")
                .and_then(Value::as_array)
                .ok_or_else(|| err("inputs.srcs", "expected an array"))?,
            Some(
                inputs
                    .get("drvs")
                    .and_then(Value::as_object)
                    .ok_or_else(|| err("inputs.drvs", "expected an object"))?,
            ),
        ),
        _ => return Err(err("inputs", "expected an object or an array")),
    };
    for src in srcs {
        let text = src
            .as_str()
            .ok_or_else(|| err("inputs.srcs", "expected strings"))?;
        let path =
            StorePath::from_base_name(text).map_err(|e| err("inputs.srcs", e.to_string()))?;
        drv.input_srcs.insert(path);
    }
    for (path, node) in drvs.into_iter().flatten() {
        let at = format!("inputs.drvs.{}", truncate_for_error(path));
        let path = StorePath::from_base_name(path).map_err(|e| err(&at, e.to_string()))?;
        drv.input_drvs.insert(path, node_from_json(node, &at, 1)?);
    }

    drv.platform = string("system")?.as_bytes().to_vec();
    drv.builder = string("builder")?.as_bytes().to_vec();
    let args = field("args")?
        .as_array()
        .ok_or_else(|| err("args", "expected an array"))?;
    for arg in args {
        let arg = arg
            .as_str()
            .ok_or_else(|| err("args", "expected strings"))?;
        drv.args.push(arg.as_bytes().to_vec());
    }
    let env = field("env")?
        .as_object()
        .ok_or_else(|| err("env", "expected an object"))?;
    for (key, value) in env {
        let at = format!("env.{}", truncate_for_error(key));
        let value = value
            .as_str()
            .ok_or_else(|| err(&at, "expected a string"))?;
        drv.env
            .insert(key.as_bytes().to_vec(), value.as_bytes().to_vec());
    }
    let at = "env.__json";
    let raw_attrs = drv.structured_attrs().map_err(|e| err(at, e.to_string()))?;
    if let Some(attrs) = obj.get("structuredAttrs") {
        if !attrs.is_object() {
            return Err(err("structuredAttrs", "expected an object"));
        }
        match raw_attrs {
            // Both given (as in some Nix 2.35 test data): they must agree; the `.drv` keeps the
            // text given in `env`.
            Some(raw) if raw != *attrs => {
                return Err(err(at, "disagrees with 'structuredAttrs'"));
            }
            Some(_) => {}
            None => drv.env_set(STRUCTURED_ATTRS_ENV, dump(attrs)),
        }
    }
    Ok(drv)
}

/// Serialises JSON compactly the way Nix's JSON library (nlohmann) does: object keys in byte
/// order, no spaces, `"`, `\` and control characters escaped (`\b \f \n \r \t`, else `\u00xx`),
/// everything else (including non-ASCII) as UTF-8, and floating-point numbers in nlohmann's
/// format (`1.0`, `0.001`, `1e+100`).
pub fn dump(value: &Value) -> String {
    enum Step<'a> {
        Value(&'a Value),
        Text(&'static str),
        Key(&'a str),
    }
    let mut out = String::new();
    let mut stack = vec![Step::Value(value)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Text(t) => out.push_str(t),
            Step::Key(k) => {
                dump_string(&mut out, k);
                out.push(':');
            }
            Step::Value(v) => match v {
                Value::Null => out.push_str("null"),
                Value::Bool(true) => out.push_str("true"),
                Value::Bool(false) => out.push_str("false"),
                Value::Number(n) => dump_number(&mut out, n),
                Value::String(s) => dump_string(&mut out, s),
                Value::Array(items) => {
                    out.push('[');
                    stack.push(Step::Text("]"));
                    for (i, item) in items.iter().enumerate().rev() {
                        stack.push(Step::Value(item));
                        if i > 0 {
                            stack.push(Step::Text(","));
                        }
                    }
                }
                Value::Object(map) => {
                    out.push('{');
                    stack.push(Step::Text("}"));
                    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                    for (i, (k, item)) in entries.into_iter().enumerate().rev() {
                        stack.push(Step::Value(item));
                        stack.push(Step::Key(k));
                        if i > 0 {
                            stack.push(Step::Text(","));
                        }
                    }
                }
            },
        }
    }
    out
}

fn dump_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn dump_number(out: &mut String, n: &Number) {
    if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(f) = n.as_f64() {
        dump_float(out, f);
    }
}

/// nlohmann's float format: shortest round-trip digits, plain notation for decimal exponents
/// in (-4, 15], scientific (`1.5e+20`, `1e-05`) otherwise, and always a `.0` on integers.
fn dump_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        out.push_str("null");
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    if f < 0.0 {
        out.push('-');
    }
    // Shortest digits and exponent from Rust's formatter: "d.ddddde-x".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    // Value = 0.digits * 10^n.
    let n = exp + 1;
    const MIN_EXP: i32 = -4;
    const MAX_EXP: i32 = 15;
    if k <= n && n <= MAX_EXP {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
        out.push_str(".0");
    } else if 0 < n && n <= MAX_EXP {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if MIN_EXP < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
}

impl Derivation {
    /// The JSON form (see [`to_json`]).
    pub fn to_json(&self) -> Result<Value, DerivationError> {
        to_json(self)
    }

    /// Parses the JSON form (see [`from_json`]).
    pub fn from_json(value: &Value) -> Result<Derivation, DerivationError> {
        from_json(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dump_matches_nlohmann() {
        let v = json!({
            "b": [1, -2, 1.5, 0.0001, 1e20, 1e100, 1.25e-7, 123456789012345.0, 1e15, 1e16],
            "a": "q\"\\\u{1}\u{8}\u{c}\n\r\t\u{7f}é/",
            "c": {"z": null, "y": true, "x": false},
            "": {},
            "d": []
        });
        assert_eq!(
            dump(&v),
            r#"{"":{},"a":"q\"\\\u0001\b\f\n\r\t"#.to_owned()
                + "\u{7f}é/\",\"b\":[1,-2,1.5,0.0001,1e+20,1e+100,1.25e-07,123456789012345.0,1e+15,1e+16],\"c\":{\"x\":false,\"y\":true,\"z\":null},\"d\":[]}"
        );
    }

    #[test]
    fn dump_agrees_with_serde_for_plain_documents() {
        let v = json!({"outputs": ["out", "dev"], "n": 5, "s": "x y", "o": {"k": [true]}});
        let back: Value = serde_json::from_str(&dump(&v)).expect("valid json");
        assert_eq!(back, v);
    }

    #[test]
    fn outputs_round_trip() {
        let cases = [
            json!({"path": "c015dhfh5l0lp6wxyvdn7bmwhbbr6hr9-drv-name-output-name"}),
            json!({"hash": "sha256-iUUXyRY8iW7DGirb0zwGgf1fRbLA7wimTJKgP7l/OQ8=", "method": "flat"}),
            json!({"hashAlgo": "sha256", "method": "nar"}),
            json!({}),
            json!({"hashAlgo": "sha256", "impure": true, "method": "nar"}),
        ];
        for c in cases {
            let o = output_from_json(&c, "o").expect("parse");
            assert_eq!(output_to_json(&o), c);
        }
        for bad in [
            json!({"path": "x"}),
            json!({"path": "c015dhfh5l0lp6wxyvdn7bmwhbbr6hr9-a", "method": "nar"}),
            json!({"hashAlgo": "sha255", "method": "nar"}),
            json!({"hashAlgo": "sha256", "method": "recursive"}),
            json!({"hashAlgo": "sha256", "impure": false, "method": "nar"}),
            json!([]),
        ] {
            assert!(output_from_json(&bad, "o").is_err(), "{bad}");
        }
    }
}
