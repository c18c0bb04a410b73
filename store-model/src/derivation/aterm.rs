//! The `.drv` file format, a fragment of ATerm.
//!
//! ```text
//! Derive([("out","/nix/store/...-hello","","")],            outputs: name, path, method+algo, hash
//!        [("/nix/store/...-bash.drv",["out"])],              input derivations and wanted outputs
//!        ["/nix/store/...-builder.sh"],                      input sources
//!        "x86_64-linux","/nix/store/...-bash/bin/bash",      platform, builder
//!        ["-e","..."],                                       arguments
//!        [("name","hello"),("out","/nix/store/...")])        environment
//! ```
//!
//! Derivations that want outputs of dynamic derivations start with
//! `DrvWithVersion("xp-dyn-drv",` and may write an input as `(["out"],[("dev",["lib"])])`.
//!
//! Strings escape `"`, `\`, newline, carriage return and tab with a backslash; any other byte
//! stands for itself, so a string may hold arbitrary bytes. Output names, store paths and the
//! platform are printed by Nix without escaping, so the parser rejects values there that could not
//! be printed back.
//!
//! # Compatibility with Nix's parser
//!
//! [`parse`] accepts what Nix 2.35 accepts and gives it the same meaning (unsorted entries are
//! sorted, a repeated output keeps the first value, a repeated input derivation or environment
//! variable the last, a hash without an algorithm is ignored, any escaped byte stands for
//! itself), with three deliberate differences:
//!
//! * list items must be separated by exactly one comma (Nix's parser also takes `["a""b"]`);
//! * nothing may follow the closing parenthesis;
//! * the path of a fixed output must be the one its content address gives (as in Nix's current
//!   development version), because the printer recomputes it.
//!
//! [`parse_canonical`] additionally requires the input to be exactly what [`print()`] produces,
//! which holds for every `.drv` file Nix writes.
//!
//! The parser never recurses on its input (nested dynamic inputs use an explicit stack), never
//! panics, bounds string lengths, list lengths and nesting depth ([`ParseLimits`]), and reports
//! the byte offset of every error.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::{
    Derivation, DerivationError, DerivationOutput, InputOutputs, check_output_name,
    fixed_output_path, lossy,
};
use crate::content_address::{ContentAddress, ContentAddressError, ContentAddressMethod};
use crate::hash::{Hash, HashEncoding, HashError, truncate_for_error};
use crate::store_path::{StoreDir, StorePath, StorePathError};

/// The only ATerm format version besides the unversioned `Derive(` form.
pub const DYNAMIC_DERIVATIONS_VERSION: &str = "xp-dyn-drv";

/// Bounds the parser enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Longest string (after unescaping), in bytes.
    pub max_string_len: usize,
    /// Most items in one list (outputs, inputs, arguments, environment, output names).
    pub max_list_len: usize,
    /// Deepest nesting of dynamic input outputs (1 = no dynamic outputs).
    pub max_depth: usize,
}

impl Default for ParseLimits {
    /// 64 MiB strings, a million items per list, nesting depth 32.
    fn default() -> Self {
        ParseLimits {
            max_string_len: 64 << 20,
            max_list_len: 1 << 20,
            max_depth: 32,
        }
    }
}

/// What is wrong with a `.drv` file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AtermErrorKind {
    /// Something else was found where this literal must be.
    #[error("expected '{0}'")]
    Expected(&'static str),
    /// The input ended where this literal must be.
    #[error("unexpected end of derivation, expected '{0}'")]
    UnexpectedEof(&'static str),
    /// The file does not start with `Derive(` or `DrvWithVersion(`.
    #[error("derivation does not start with 'Derive(' or 'DrvWithVersion('")]
    BadStart,
    /// A string has no closing quote, or ends in a lone backslash.
    #[error("unterminated string in derivation")]
    UnterminatedString,
    /// A `DrvWithVersion` version other than `xp-dyn-drv`.
    #[error("unknown derivation ATerm format version '{0}'")]
    UnknownVersion(String),
    /// A string is longer than [`ParseLimits::max_string_len`].
    #[error("string longer than {0} bytes")]
    StringTooLong(usize),
    /// A list is longer than [`ParseLimits::max_list_len`].
    #[error("list longer than {0} items")]
    ListTooLong(usize),
    /// Dynamic input outputs nest deeper than [`ParseLimits::max_depth`].
    #[error("dynamic input derivation outputs nested deeper than {0} levels")]
    TooDeep(usize),
    /// A dynamic input in a derivation that does not declare the `xp-dyn-drv` version.
    #[error(
        "dynamic input derivation outputs need the 'DrvWithVersion(\"xp-dyn-drv\",' form of derivations"
    )]
    DynamicInOldFormat,
    /// A store path is malformed or outside the store.
    #[error("bad store path '{path}' in derivation: {error}")]
    BadStorePath {
        /// The text (possibly shortened).
        path: String,
        /// Why it is not a store path.
        error: StorePathError,
    },
    /// An output name is not a valid store path name.
    #[error("invalid derivation output name '{0}'")]
    BadOutputName(String),
    /// The derivation name given to the parser is invalid.
    #[error("invalid derivation name: {0}")]
    BadName(StorePathError),
    /// The platform contains `"` or `\`.
    #[error("derivation platform '{0}' contains '\"' or '\\'")]
    UnprintablePlatform(String),
    /// A hash or hash algorithm is malformed.
    #[error(transparent)]
    Hash(HashError),
    /// An impure output names a path.
    #[error("impure derivation output should not specify output path")]
    ImpureWithPath,
    /// A floating content-addressed output names a path.
    #[error("content-addressing derivation output should not specify output path")]
    FloatingWithPath,
    /// A fixed output's path is not the one its content address gives.
    #[error(
        "derivation output '{output}' has path '{path}', which does not match its content address (expected '{expected}')"
    )]
    FixedPathMismatch {
        /// The output name.
        output: String,
        /// The path in the file.
        path: String,
        /// The path Nix computes.
        expected: String,
    },
    /// A fixed output's content address cannot give a path (e.g. Git hashing with MD5).
    #[error(transparent)]
    ContentAddress(ContentAddressError),
    /// Bytes after the closing parenthesis.
    #[error("unexpected data after the end of the derivation")]
    TrailingData,
    /// [`parse_canonical`]: the input is valid but not in the form [`print()`] produces.
    #[error("derivation is not in canonical form (printing it back differs here)")]
    NotCanonical,
}

/// A `.drv` parse error: what and at which byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid derivation at byte {offset}: {kind}")]
pub struct AtermError {
    /// Byte offset into the input where the problem starts.
    pub offset: usize,
    /// What is wrong.
    pub kind: AtermErrorKind,
}

/// Parses a `.drv` file with the default [`ParseLimits`].
///
/// `name` is the derivation name, the `.drv` path's name without `.drv`; it is needed to check
/// the paths of fixed outputs.
pub fn parse(input: &[u8], name: &str, store_dir: &StoreDir) -> Result<Derivation, AtermError> {
    parse_with_limits(input, name, store_dir, &ParseLimits::default())
}

/// Parses a `.drv` file and requires it to be exactly what [`print()`] gives for the result.
pub fn parse_canonical(
    input: &[u8],
    name: &str,
    store_dir: &StoreDir,
) -> Result<Derivation, DerivationError> {
    let drv = parse(input, name, store_dir)?;
    let printed = print(&drv, store_dir)?;
    if printed != input {
        let offset = printed
            .iter()
            .zip(input)
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| printed.len().min(input.len()));
        return Err(AtermError {
            offset,
            kind: AtermErrorKind::NotCanonical,
        }
        .into());
    }
    Ok(drv)
}

/// Parses a `.drv` file with explicit limits.
pub fn parse_with_limits(
    input: &[u8],
    name: &str,
    store_dir: &StoreDir,
    limits: &ParseLimits,
) -> Result<Derivation, AtermError> {
    crate::store_path::validate_name(name).map_err(|e| AtermError {
        offset: 0,
        kind: AtermErrorKind::BadName(e),
    })?;
    let mut p = Parser {
        input,
        pos: 0,
        limits,
        store_dir,
    };
    p.derivation(name)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    Traditional,
    DynamicDerivations,
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    limits: &'a ParseLimits,
    store_dir: &'a StoreDir,
}

/// A partly parsed `(outputs,[(name,node),...])` dynamic input node.
struct Frame {
    node: InputOutputs,
    /// The output name whose child node is being parsed.
    pending: Option<String>,
    first: bool,
    count: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, offset: usize, kind: AtermErrorKind) -> AtermError {
        AtermError { offset, kind }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn rest(&self) -> &[u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn expect(&mut self, lit: &'static str) -> Result<(), AtermError> {
        let rest = self.rest();
        if rest.starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            Ok(())
        } else if lit.as_bytes().starts_with(rest) {
            Err(self.err(self.input.len(), AtermErrorKind::UnexpectedEof(lit)))
        } else {
            // Point at the first byte that differs.
            let same = rest
                .iter()
                .zip(lit.as_bytes())
                .take_while(|(a, b)| a == b)
                .count();
            Err(self.err(self.pos + same, AtermErrorKind::Expected(lit)))
        }
    }

    /// Moves to the next list item: `Ok(false)` after consuming the closing `]`.
    fn list_next(&mut self, first: &mut bool, count: &mut usize) -> Result<bool, AtermError> {
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(false);
        }
        if !*first {
            if self.peek().is_none() {
                return Err(self.err(self.pos, AtermErrorKind::UnexpectedEof("]")));
            }
            if self.peek() != Some(b',') {
                return Err(self.err(self.pos, AtermErrorKind::Expected(",' or ']")));
            }
            self.pos += 1;
        }
        *first = false;
        *count += 1;
        if *count > self.limits.max_list_len {
            return Err(self.err(
                self.pos,
                AtermErrorKind::ListTooLong(self.limits.max_list_len),
            ));
        }
        Ok(true)
    }

    /// A quoted string, unescaped. Borrowed when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, [u8]>, AtermError> {
        let start = self.pos;
        self.expect("\"")?;
        let input: &'a [u8] = self.input;
        let max = self.limits.max_string_len;
        let too_long = |len: usize| len > max;
        let mut owned: Option<Vec<u8>> = None;
        let mut pos = self.pos;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let Some(i) = memchr::memchr2(b'"', b'\\', rest) else {
                return Err(self.err(start, AtermErrorKind::UnterminatedString));
            };
            let chunk = &rest[..i];
            let at = pos + i;
            if input[at] == b'"' {
                self.pos = at + 1;
                let result = match owned {
                    None => Cow::Borrowed(&input[start + 1..at]),
                    Some(mut buf) => {
                        buf.extend_from_slice(chunk);
                        Cow::Owned(buf)
                    }
                };
                if too_long(result.len()) {
                    return Err(self.err(start, AtermErrorKind::StringTooLong(max)));
                }
                return Ok(result);
            }
            let Some(&escaped) = input.get(at + 1) else {
                return Err(self.err(start, AtermErrorKind::UnterminatedString));
            };
            let buf = owned.get_or_insert_with(|| input[start + 1..pos].to_vec());
            buf.extend_from_slice(chunk);
            buf.push(match escaped {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                other => other,
            });
            if too_long(buf.len()) {
                return Err(self.err(start, AtermErrorKind::StringTooLong(max)));
            }
            pos = at + 2;
        }
    }

    fn owned_string(&mut self) -> Result<Vec<u8>, AtermError> {
        Ok(self.string()?.into_owned())
    }

    fn store_path_from(&self, offset: usize, bytes: &[u8]) -> Result<StorePath, AtermError> {
        let text = std::str::from_utf8(bytes).map_err(|_| {
            self.err(
                offset,
                AtermErrorKind::BadStorePath {
                    path: lossy(bytes),
                    error: StorePathError::NotInStore(lossy(bytes)),
                },
            )
        })?;
        self.store_dir.parse(text).map_err(|error| {
            self.err(
                offset,
                AtermErrorKind::BadStorePath {
                    path: truncate_for_error(text),
                    error,
                },
            )
        })
    }

    fn store_path(&mut self) -> Result<StorePath, AtermError> {
        let offset = self.pos;
        let s = self.string()?.into_owned();
        self.store_path_from(offset, &s)
    }

    fn output_name(&mut self) -> Result<String, AtermError> {
        let offset = self.pos;
        let s = self.owned_string()?;
        let bad = |s: &[u8]| AtermError {
            offset,
            kind: AtermErrorKind::BadOutputName(lossy(s)),
        };
        let name = String::from_utf8(s).map_err(|e| bad(e.as_bytes()))?;
        check_output_name(&name).map_err(|_| bad(name.as_bytes()))?;
        Ok(name)
    }

    /// `["a","b",...]` of output names.
    fn output_names(&mut self) -> Result<BTreeSet<String>, AtermError> {
        self.expect("[")?;
        let mut set = BTreeSet::new();
        let (mut first, mut count) = (true, 0);
        while self.list_next(&mut first, &mut count)? {
            set.insert(self.output_name()?);
        }
        Ok(set)
    }

    fn derivation(&mut self, name: &str) -> Result<Derivation, AtermError> {
        let version = if self.rest().starts_with(b"Derive(") {
            self.pos += "Derive(".len();
            Version::Traditional
        } else if self.rest().starts_with(b"DrvWithVersion(") {
            self.pos += "DrvWithVersion(".len();
            let offset = self.pos;
            let v = self.string()?;
            if *v != *DYNAMIC_DERIVATIONS_VERSION.as_bytes() {
                let v = lossy(&v);
                return Err(self.err(offset, AtermErrorKind::UnknownVersion(v)));
            }
            self.expect(",")?;
            Version::DynamicDerivations
        } else {
            return Err(self.err(0, AtermErrorKind::BadStart));
        };

        let mut drv = Derivation {
            name: name.to_owned(),
            ..Derivation::default()
        };

        // Outputs.
        self.expect("[")?;
        let (mut first, mut count) = (true, 0);
        while self.list_next(&mut first, &mut count)? {
            let offset = self.pos;
            self.expect("(")?;
            let id = self.output_name()?;
            self.expect(",")?;
            let path_offset = self.pos;
            let path = self.owned_string()?;
            self.expect(",")?;
            let algo = self.owned_string()?;
            self.expect(",")?;
            let hash = self.owned_string()?;
            self.expect(")")?;
            let output = self.output(name, &id, (path_offset, &path), &algo, &hash, offset)?;
            // Nix keeps the first of repeated outputs.
            drv.outputs.entry(id).or_insert(output);
        }

        // Input derivations.
        self.expect(",[")?;
        let (mut first, mut count) = (true, 0);
        while self.list_next(&mut first, &mut count)? {
            self.expect("(")?;
            let path = self.store_path()?;
            self.expect(",")?;
            let node = self.input_node(version)?;
            self.expect(")")?;
            drv.input_drvs.insert(path, node);
        }

        // Input sources.
        self.expect(",[")?;
        let (mut first, mut count) = (true, 0);
        while self.list_next(&mut first, &mut count)? {
            let path = self.store_path()?;
            drv.input_srcs.insert(path);
        }

        self.expect(",")?;
        let offset = self.pos;
        drv.platform = self.owned_string()?;
        if drv.platform.iter().any(|&c| c == b'"' || c == b'\\') {
            let p = lossy(&drv.platform);
            return Err(self.err(offset, AtermErrorKind::UnprintablePlatform(p)));
        }
        self.expect(",")?;
        drv.builder = self.owned_string()?;

        // Arguments.
        self.expect(",[")?;
        let (mut first, mut count) = (true, 0);
        while self.list_next(&mut first, &mut count)? {
            let arg = self.owned_string()?;
            drv.args.push(arg);
        }

        // Environment; Nix keeps the last of repeated variables.
        self.expect(",[")?;
        let (mut first, mut count) = (true, 0);
        while self.list_next(&mut first, &mut count)? {
            self.expect("(")?;
            let key = self.owned_string()?;
            self.expect(",")?;
            let value = self.owned_string()?;
            self.expect(")")?;
            drv.env.insert(key, value);
        }

        self.expect(")")?;
        if self.pos != self.input.len() {
            return Err(self.err(self.pos, AtermErrorKind::TrailingData));
        }
        Ok(drv)
    }

    /// Interprets the four fields of an output the way Nix does.
    fn output(
        &self,
        drv_name: &str,
        output_name: &str,
        (path_offset, path): (usize, &[u8]),
        algo: &[u8],
        hash: &[u8],
        offset: usize,
    ) -> Result<DerivationOutput, AtermError> {
        if algo.is_empty() {
            // A hash without an algorithm is ignored, as in Nix.
            if path.is_empty() {
                return Ok(DerivationOutput::Deferred);
            }
            return Ok(DerivationOutput::InputAddressed(
                self.store_path_from(path_offset, path)?,
            ));
        }
        let hash_err = |e: HashError| AtermError {
            offset,
            kind: AtermErrorKind::Hash(e),
        };
        let algo = std::str::from_utf8(algo)
            .map_err(|_| hash_err(HashError::UnknownAlgorithm(lossy(algo))))?;
        let (method, hash_algo) =
            ContentAddressMethod::parse_method_algo(algo).map_err(hash_err)?;
        if hash == b"impure" {
            if !path.is_empty() {
                return Err(self.err(path_offset, AtermErrorKind::ImpureWithPath));
            }
            return Ok(DerivationOutput::Impure { method, hash_algo });
        }
        if hash.is_empty() {
            if !path.is_empty() {
                return Err(self.err(path_offset, AtermErrorKind::FloatingWithPath));
            }
            return Ok(DerivationOutput::CaFloating { method, hash_algo });
        }
        let stated = self.store_path_from(path_offset, path)?;
        let digest = std::str::from_utf8(hash).map_err(|_| {
            hash_err(HashError::InvalidDigest {
                text: lossy(hash),
                encoding: "base16",
            })
        })?;
        let hash = Hash::parse_digest(hash_algo, digest).map_err(hash_err)?;
        let ca = ContentAddress::new(method, hash);
        let expected = fixed_output_path(&ca, self.store_dir, drv_name, output_name)
            .map_err(|e| self.err(offset, AtermErrorKind::ContentAddress(e)))?;
        if expected != stated {
            return Err(self.err(
                path_offset,
                AtermErrorKind::FixedPathMismatch {
                    output: output_name.to_owned(),
                    path: self.store_dir.display(&stated),
                    expected: self.store_dir.display(&expected),
                },
            ));
        }
        Ok(DerivationOutput::CaFixed(ca))
    }

    /// The outputs wanted from one input derivation: `[...]`, or with dynamic derivations also
    /// `([...],[("out",<node>),...])`, parsed with an explicit stack.
    fn input_node(&mut self, version: Version) -> Result<InputOutputs, AtermError> {
        match (self.peek(), version) {
            (Some(b'['), _) => return Ok(InputOutputs::of(self.output_names()?)),
            (Some(b'('), Version::Traditional) => {
                return Err(self.err(self.pos, AtermErrorKind::DynamicInOldFormat));
            }
            (Some(b'('), Version::DynamicDerivations) => {}
            (None, _) => return Err(self.err(self.pos, AtermErrorKind::UnexpectedEof("["))),
            (Some(_), _) => return Err(self.err(self.pos, AtermErrorKind::Expected("[' or '("))),
        }
        let mut stack: Vec<Frame> = Vec::new();
        self.open_frame(&mut stack)?;
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else {
                // Unreachable: the loop returns when the outermost frame closes.
                return Err(self.err(self.pos, AtermErrorKind::Expected(")")));
            };
            let (mut first, mut count) = (top.first, top.count);
            let more = self.list_next(&mut first, &mut count)?;
            top.first = first;
            top.count = count;
            if more {
                self.expect("(")?;
                let key = self.output_name()?;
                self.expect(",")?;
                match self.peek() {
                    Some(b'[') => {
                        let child = InputOutputs::of(self.output_names()?);
                        self.expect(")")?;
                        top.node.dynamic_outputs.insert(key, child);
                    }
                    Some(b'(') => {
                        if depth + 1 >= self.limits.max_depth {
                            return Err(
                                self.err(self.pos, AtermErrorKind::TooDeep(self.limits.max_depth))
                            );
                        }
                        top.pending = Some(key);
                        self.open_frame(&mut stack)?;
                    }
                    None => return Err(self.err(self.pos, AtermErrorKind::UnexpectedEof("["))),
                    Some(_) => {
                        return Err(self.err(self.pos, AtermErrorKind::Expected("[' or '(")));
                    }
                }
            } else {
                self.expect(")")?;
                let Some(done) = stack.pop() else {
                    return Err(self.err(self.pos, AtermErrorKind::Expected(")")));
                };
                match stack.last_mut() {
                    None => return Ok(done.node),
                    Some(parent) => {
                        self.expect(")")?;
                        let key = parent.pending.take().unwrap_or_default();
                        // Nix keeps the last of repeated dynamic outputs.
                        parent.node.dynamic_outputs.insert(key, done.node);
                    }
                }
            }
        }
    }

    /// `(` `[outputs]` `,[` — the start of a dynamic node.
    fn open_frame(&mut self, stack: &mut Vec<Frame>) -> Result<(), AtermError> {
        self.expect("(")?;
        let outputs = self.output_names()?;
        self.expect(",[")?;
        stack.push(Frame {
            node: InputOutputs {
                outputs,
                dynamic_outputs: BTreeMap::new(),
            },
            pending: None,
            first: true,
            count: 0,
        });
        Ok(())
    }
}

/// Prints a derivation as Nix writes it to a `.drv` file.
///
/// Fails only for derivations that no `.drv` file can hold: an invalid output name, a platform
/// with `"` or `\`, or a fixed output whose content address gives no store path.
pub fn print(drv: &Derivation, store_dir: &StoreDir) -> Result<Vec<u8>, DerivationError> {
    print_with(drv, store_dir, false, None)
}

/// Prints `drv`, optionally with output paths (and the environment variables named after
/// outputs) blanked, and optionally with the input derivations replaced by `modulo_inputs`
/// (hex hash → output names), as `hashDerivationModulo` does.
pub(crate) fn print_with(
    drv: &Derivation,
    store_dir: &StoreDir,
    mask_outputs: bool,
    modulo_inputs: Option<&BTreeMap<String, BTreeSet<String>>>,
) -> Result<Vec<u8>, DerivationError> {
    check_printable(drv)?;
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    if drv.has_dynamic_inputs() {
        out.extend_from_slice(b"DrvWithVersion(");
        unquoted(&mut out, DYNAMIC_DERIVATIONS_VERSION.as_bytes());
        out.push(b',');
    } else {
        out.extend_from_slice(b"Derive(");
    }

    out.push(b'[');
    for (i, (name, output)) in drv.outputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'(');
        unquoted(&mut out, name.as_bytes());
        let (path, algo, hash): (String, String, String) = match output {
            DerivationOutput::InputAddressed(p) => {
                (store_dir.display(p), String::new(), String::new())
            }
            DerivationOutput::CaFixed(ca) => (
                store_dir.display(&fixed_output_path(ca, store_dir, &drv.name, name)?),
                ca.print_method_algo(),
                ca.hash.encode(HashEncoding::Base16),
            ),
            DerivationOutput::CaFloating { method, hash_algo } => (
                String::new(),
                method.render_method_algo(*hash_algo),
                String::new(),
            ),
            DerivationOutput::Deferred => (String::new(), String::new(), String::new()),
            DerivationOutput::Impure { method, hash_algo } => (
                String::new(),
                method.render_method_algo(*hash_algo),
                "impure".to_owned(),
            ),
        };
        out.push(b',');
        unquoted(&mut out, if mask_outputs { b"" } else { path.as_bytes() });
        out.push(b',');
        unquoted(&mut out, algo.as_bytes());
        out.push(b',');
        unquoted(&mut out, hash.as_bytes());
        out.push(b')');
    }

    out.extend_from_slice(b"],[");
    match modulo_inputs {
        Some(inputs) => {
            for (i, (hash, outputs)) in inputs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'(');
                unquoted(&mut out, hash.as_bytes());
                out.push(b',');
                unquoted_list(&mut out, outputs.iter().map(|s| s.as_bytes()));
                out.push(b')');
            }
        }
        None => {
            for (i, (path, node)) in drv.input_drvs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'(');
                unquoted(&mut out, store_dir.display(path).as_bytes());
                print_node(&mut out, node);
                out.push(b')');
            }
        }
    }

    out.extend_from_slice(b"],");
    let srcs: Vec<String> = drv
        .input_srcs
        .iter()
        .map(|p| store_dir.display(p))
        .collect();
    unquoted_list(&mut out, srcs.iter().map(|s| s.as_bytes()));
    out.push(b',');
    unquoted(&mut out, &drv.platform);
    out.push(b',');
    escaped(&mut out, &drv.builder);
    out.push(b',');
    out.push(b'[');
    for (i, arg) in drv.args.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        escaped(&mut out, arg);
    }
    out.extend_from_slice(b"],[");
    for (i, (key, value)) in drv.env.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'(');
        escaped(&mut out, key);
        out.push(b',');
        let masked =
            mask_outputs && std::str::from_utf8(key).is_ok_and(|k| drv.outputs.contains_key(k));
        escaped(&mut out, if masked { b"" } else { value });
        out.push(b')');
    }
    out.extend_from_slice(b"])");
    Ok(out)
}

/// Rejects what Nix would print unescaped and so could not be read back.
fn check_printable(drv: &Derivation) -> Result<(), DerivationError> {
    for name in drv.outputs.keys() {
        check_output_name(name)?;
    }
    let mut stack: Vec<&InputOutputs> = drv.input_drvs.values().collect();
    while let Some(node) = stack.pop() {
        for name in node.outputs.iter().chain(node.dynamic_outputs.keys()) {
            check_output_name(name)?;
        }
        stack.extend(node.dynamic_outputs.values());
    }
    if drv.platform.iter().any(|&c| c == b'"' || c == b'\\') {
        return Err(DerivationError::UnprintablePlatform(lossy(&drv.platform)));
    }
    Ok(())
}

/// Prints `,<node>` for one input derivation without recursion.
fn print_node(out: &mut Vec<u8>, node: &InputOutputs) {
    enum Step<'a> {
        Node(&'a InputOutputs),
        Text(&'static [u8]),
        Key(&'a str),
    }
    let mut stack = vec![Step::Node(node)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Text(t) => out.extend_from_slice(t),
            Step::Key(k) => {
                out.push(b'(');
                unquoted(out, k.as_bytes());
            }
            Step::Node(n) => {
                out.push(b',');
                if n.dynamic_outputs.is_empty() {
                    unquoted_list(out, n.outputs.iter().map(|s| s.as_bytes()));
                } else {
                    out.push(b'(');
                    unquoted_list(out, n.outputs.iter().map(|s| s.as_bytes()));
                    out.extend_from_slice(b",[");
                    stack.push(Step::Text(b"])"));
                    let children: Vec<_> = n.dynamic_outputs.iter().collect();
                    for (i, (key, child)) in children.into_iter().enumerate().rev() {
                        stack.push(Step::Text(b")"));
                        stack.push(Step::Node(child));
                        stack.push(Step::Key(key));
                        if i > 0 {
                            stack.push(Step::Text(b","));
                        }
                    }
                }
            }
        }
    }
}

fn unquoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}

fn unquoted_list<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a [u8]>) {
    out.push(b'[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        unquoted(out, s);
    }
    out.push(b']');
}

/// A quoted string with `"`, `\`, newline, carriage return and tab escaped.
fn escaped(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMPLE: &[u8] = br#"Derive([("out","/nix/store/rvq31qmi8x3zry4mnapqcfasvwhwzq6x-a","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo > $out"],[("builder","/bin/sh"),("name","a"),("out","/nix/store/rvq31qmi8x3zry4mnapqcfasvwhwzq6x-a"),("system","x86_64-linux")])"#;

    fn dir() -> StoreDir {
        StoreDir::default()
    }

    fn parse_err(input: &[u8]) -> AtermError {
        parse(input, "a", &dir()).expect_err(&String::from_utf8_lossy(input))
    }

    #[test]
    fn simple_round_trip() {
        let drv = parse(SIMPLE, "a", &dir()).expect("parse");
        assert_eq!(drv.args, vec![b"-c".to_vec(), b"echo > $out".to_vec()]);
        assert_eq!(print(&drv, &dir()).expect("print"), SIMPLE);
        assert_eq!(
            parse_canonical(SIMPLE, "a", &dir()).expect("canonical"),
            drv
        );
    }

    #[test]
    fn escapes_and_arbitrary_bytes() {
        let mut drv = parse(SIMPLE, "a", &dir()).expect("parse");
        let nasty: Vec<u8> = (1u8..=255)
            .chain(b"\\\"\n\r\t\\n".iter().copied())
            .collect();
        drv.env.insert(nasty.clone(), nasty.clone());
        drv.args.push(nasty.clone());
        drv.builder = b"a\"b\\c\nd\re\tf".to_vec();
        let printed = print(&drv, &dir()).expect("print");
        let text = String::from_utf8_lossy(&printed);
        assert!(text.contains(r#""a\"b\\c\nd\re\tf""#), "{text}");
        let again = parse(&printed, "a", &dir()).expect("reparse");
        assert_eq!(again, drv);
        // Escapes Nix never writes still mean the escaped byte.
        let odd = b"Derive([],[],[],\"s\",\"\\a\\$\\\\\",[],[])";
        let drv = parse(odd, "a", &dir()).expect("odd escapes");
        assert_eq!(drv.builder, b"a$\\");
        assert!(parse_canonical(odd, "a", &dir()).is_err());
    }

    #[test]
    fn errors_name_problem_and_offset() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"", 0, "does not start"),
            (b"Derive", 0, "does not start"),
            (b"Derive(", 7, "end of derivation, expected '['"),
            (b"Derive([(\"out\"", 14, "end of derivation, expected ','"),
            (b"Derive([],[],[],\"s\",\"b\",[],[]) ", 30, "after the end"),
            (b"Derive([],[],[],\"s\",\"b\",[],[(\"a\"])", 32, "expected ','"),
            (b"Derive([],[],[],\"s\",\"b\",[\"x\"\"y\"],[])", 28, "expected ',' or ']'"),
            (b"Derive([],[],[],\"s\",\"b\",[\"x],[])", 25, "unterminated string"),
            (b"Derive([],[],[],\"s\",\"b\",[\"x\\", 25, "unterminated string"),
            (b"Derive([],[],[\"/nix/store/x\"],\"s\",\"b\",[],[])", 14, "bad store path"),
            (b"Derive([(\"o\\\"ut\",\"\",\"\",\"\")],[],[],\"s\",\"b\",[],[])", 9, "output name"),
            (b"Derive([],[],[],\"s\\\"\",\"b\",[],[])", 16, "platform"),
            (b"Derive([(\"out\",\"\",\"r:sha255\",\"\")],[],[],\"s\",\"b\",[],[])", 8, "unknown hash algorithm"),
            (b"Derive([(\"out\",\"/nix/store/rvq31qmi8x3zry4mnapqcfasvwhwzq6x-a\",\"r:sha256\",\"\")],[],[],\"s\",\"b\",[],[])", 15, "should not specify output path"),
            (b"Derive([(\"out\",\"/nix/store/rvq31qmi8x3zry4mnapqcfasvwhwzq6x-a\",\"r:sha256\",\"impure\")],[],[],\"s\",\"b\",[],[])", 15, "impure"),
            (b"Derive([(\"out\",\"\",\"r:sha256\",\"abcd\")],[],[],\"s\",\"b\",[],[])", 15, "bad store path"),
            (b"Derive([(\"out\",\"/nix/store/rvq31qmi8x3zry4mnapqcfasvwhwzq6x-a\",\"r:sha256\",\"abcd\")],[],[],\"s\",\"b\",[],[])", 8, "wrong length"),
            (b"DrvWithVersion(\"v9\",[],[],[],\"s\",\"b\",[],[])", 15, "version 'v9'"),
            (b"Derive([],[(\"/nix/store/rvq31qmi8x3zry4mnapqcfasvwhwzq6x-a.drv\",([\"a\"],[]))],[],\"s\",\"b\",[],[])", 64, "DrvWithVersion"),
        ];
        for (input, offset, why) in cases {
            let err = parse_err(input);
            let text = err.to_string();
            assert!(
                text.contains(why),
                "{}: {text}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                err.offset,
                *offset,
                "{}: {text}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn fixed_output_path_must_match() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let path = ContentAddress::new(
            ContentAddressMethod::Flat,
            Hash::parse_digest(crate::hash::HashAlgo::Sha256, hex).expect("hex"),
        )
        .store_path(&dir(), "a", [], false)
        .expect("path");
        let good = format!(
            "Derive([(\"out\",\"{}\",\"sha256\",\"{hex}\")],[],[],\"s\",\"b\",[],[])",
            dir().display(&path)
        );
        let drv = parse(good.as_bytes(), "a", &dir()).expect("good");
        assert_eq!(print(&drv, &dir()).expect("print"), good.as_bytes());
        let err = parse(good.as_bytes(), "b", &dir()).expect_err("other name");
        assert!(
            matches!(err.kind, AtermErrorKind::FixedPathMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn lenient_like_nix() {
        // Unsorted and repeated entries: sorted, first output wins, last variable wins.
        let input = b"Derive([(\"z\",\"\",\"\",\"\"),(\"a\",\"\",\"\",\"\"),(\"z\",\"/nix/store/rvq31qmi8x3zry4mnapqcfasvwhwzq6x-a\",\"\",\"\")],[],[],\"s\",\"b\",[],[(\"k\",\"1\"),(\"j\",\"\"),(\"k\",\"2\")])";
        let drv = parse(input, "a", &dir()).expect("lenient");
        assert_eq!(drv.outputs.get("z"), Some(&DerivationOutput::Deferred));
        assert_eq!(drv.env_get("k"), Some(&b"2"[..]));
        let err = parse_canonical(input, "a", &dir()).expect_err("not canonical");
        assert!(err.to_string().contains("canonical"), "{err}");
    }

    #[test]
    fn limits_are_enforced() {
        let limits = ParseLimits {
            max_string_len: 4,
            max_list_len: 2,
            max_depth: 2,
        };
        let long = b"Derive([],[],[],\"s\",\"12345\",[],[])";
        let err = parse_with_limits(long, "a", &dir(), &limits).expect_err("long");
        assert_eq!(err.kind, AtermErrorKind::StringTooLong(4));
        let escaped_long = b"Derive([],[],[],\"s\",\"\\n\\n\\n\\n\\n\",[],[])";
        let err = parse_with_limits(escaped_long, "a", &dir(), &limits).expect_err("long");
        assert_eq!(err.kind, AtermErrorKind::StringTooLong(4));
        let many = b"Derive([],[],[],\"s\",\"b\",[\"1\",\"2\",\"3\"],[])";
        let err = parse_with_limits(many, "a", &dir(), &limits).expect_err("many");
        assert_eq!(err.kind, AtermErrorKind::ListTooLong(2));
        let p = "/nix/store/rvq31qmi8x3zry4mnapqcfasvwhwzq6x-a.drv";
        let deep = format!(
            "DrvWithVersion(\"xp-dyn-drv\",[],[(\"{p}\",([],[(\"a\",([],[(\"b\",[\"c\"])]))]))],[],\"s\",\"b\",[],[])"
        );
        let limits = ParseLimits {
            max_depth: 2,
            ..ParseLimits::default()
        };
        let err = parse_with_limits(deep.as_bytes(), "a", &dir(), &limits).expect_err("deep");
        assert_eq!(err.kind, AtermErrorKind::TooDeep(2));
        assert!(parse(deep.as_bytes(), "a", &dir()).is_ok());
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        // Depth 10 000 with a generous limit: parsing and printing use explicit stacks. The
        // value is dropped iteratively below so the test itself does not recurse either.
        let depth = 10_000;
        let p = "/nix/store/rvq31qmi8x3zry4mnapqcfasvwhwzq6x-a.drv";
        let mut s = format!("DrvWithVersion(\"xp-dyn-drv\",[],[(\"{p}\",");
        for _ in 0..depth {
            s.push_str("([\"o\"],[(\"d\",");
        }
        s.push_str("[\"x\"]");
        for _ in 0..depth {
            s.push_str(")])");
        }
        s.push_str(")],[],\"s\",\"b\",[],[])");
        let limits = ParseLimits {
            max_depth: depth + 2,
            ..ParseLimits::default()
        };
        let mut drv = parse_with_limits(s.as_bytes(), "a", &dir(), &limits).expect("deep");
        assert_eq!(print(&drv, &dir()).expect("print"), s.as_bytes());
        let mut nodes: Vec<InputOutputs> =
            std::mem::take(&mut drv.input_drvs).into_values().collect();
        let mut levels = 0;
        while let Some(mut n) = nodes.pop() {
            levels += 1;
            nodes.extend(std::mem::take(&mut n.dynamic_outputs).into_values());
        }
        assert_eq!(levels, depth + 1);
    }

    #[test]
    fn print_rejects_unprintable() {
        let mut drv = parse(SIMPLE, "a", &dir()).expect("parse");
        drv.platform = b"x\"y".to_vec();
        assert!(matches!(
            print(&drv, &dir()),
            Err(DerivationError::UnprintablePlatform(_))
        ));
        let mut drv = parse(SIMPLE, "a", &dir()).expect("parse");
        drv.outputs
            .insert("a b".to_owned(), DerivationOutput::Deferred);
        assert!(matches!(
            print(&drv, &dir()),
            Err(DerivationError::BadOutputName(_))
        ));
    }
}
