//! The reference's canonical form: the exact bytes ATP signs (docs/protocol.md §3).
//!
//! It is *not* RFC 8785 (see [`crate::jcs`] for that): object keys are sorted by Unicode code point,
//! integers are written at arbitrary precision exactly as received, and floats follow Python's
//! `repr` (shortest round-trip digits, exponent form below 1e-4 and from 1e16 up, `.0` on large
//! integral values), with integral floats below 2^53 written as integers. It relies on serde_json's
//! `arbitrary_precision` feature to see each number's original text.
//!
//! [`parse_json`] is the strict JSON parser behind [`canonicalize_str`] and
//! [`crate::jcs::canonicalize_jcs_str`]. Unlike `serde_json::from_str::<Value>`, it reads an object
//! whose only key is `"$serde_json::private::Number"` as that object (serde_json, with
//! `arbitrary_precision`, turns it into a number, so its canonical text would differ from the
//! reference's), and it reports nesting deeper than [`MAX_DEPTH`] as [`CanonError::TooDeep`].

use std::str::FromStr;

use serde_json::{Map, Number, Value};

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    /// The input text is not JSON (includes invalid `\u` escapes such as lone surrogates).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A number that is not finite as a double (e.g. `1e400`) where a double is needed.
    #[error("number out of range: {0}")]
    NumberOutOfRange(String),
    /// The same key twice in one object (RFC 8785 / I-JSON only). Holds the key, cut to
    /// [`ERROR_SNIPPET`] characters.
    #[error("duplicate object key {0:?}")]
    DuplicateKey(String),
}

/// Deepest nesting of arrays/objects accepted: 128 levels, so `[[…]]` with 128 `[` is fine and
/// 129 is [`CanonError::TooDeep`]. serde_json's parser, which reads message bodies, stops one level
/// earlier (127 levels; 128 `[` is "recursion limit exceeded"), so everything it parses has a
/// canonical form.
pub const MAX_DEPTH: usize = 128;

/// Longest piece of input (a key, a number) quoted in an error, in characters.
pub const ERROR_SNIPPET: usize = 64;

/// 2^53: below it every integer is exactly representable as a double.
const TWO_POW_53: f64 = 9_007_199_254_740_992.0;

/// Canonical text of a JSON value, per the reference's rules (docs/protocol.md §3).
pub fn canonicalize(value: &Value) -> Result<String, CanonError> {
    let mut out = String::new();
    write_value(value, &mut out, 0)?;
    Ok(out)
}

/// Parses JSON text (duplicate keys: the last one wins, as in Python) and returns its canonical text.
pub fn canonicalize_str(json: &str) -> Result<String, CanonError> {
    canonicalize(&parse_json(json)?)
}

/// Parses strict JSON text (RFC 8259) into a [`Value`], keeping every number's text.
///
/// Duplicate keys: the last value wins (Python's `json.loads`). Errors: [`CanonError::InvalidJson`]
/// (syntax, lone surrogates in `\u` escapes, raw control characters in strings, trailing text) and
/// [`CanonError::TooDeep`] (more than [`MAX_DEPTH`] levels). Never panics and never recurses
/// deeper than [`MAX_DEPTH`].
pub fn parse_json(json: &str) -> Result<Value, CanonError> {
    Parser::new(json, false).parse_document()
}

/// [`parse_json`] on bytes, which must be UTF-8 (no byte-order mark).
pub fn parse_json_slice(json: &[u8]) -> Result<Value, CanonError> {
    let text = std::str::from_utf8(json)
        .map_err(|e| CanonError::InvalidJson(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    parse_json(text)
}

/// [`parse_json`], but a repeated key in any object is [`CanonError::DuplicateKey`] (I-JSON).
pub(crate) fn parse_json_unique_keys(json: &str) -> Result<Value, CanonError> {
    Parser::new(json, true).parse_document()
}

/// The first [`ERROR_SNIPPET`] characters of `s`.
fn snippet(s: &str) -> String {
    s.chars().take(ERROR_SNIPPET).collect()
}

/// A recursive-descent JSON parser over UTF-8 text; recursion is bounded by [`MAX_DEPTH`].
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    unique_keys: bool,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, unique_keys: bool) -> Self {
        Parser { text, bytes: text.as_bytes(), pos: 0, unique_keys }
    }

    fn error(&self, what: &str) -> CanonError {
        CanonError::InvalidJson(format!("{what} at byte {}", self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn parse_document(mut self) -> Result<Value, CanonError> {
        let v = self.parse_value(0)?;
        self.skip_whitespace();
        if self.pos != self.bytes.len() {
            return Err(self.error("trailing characters"));
        }
        Ok(v)
    }

    /// Skips whitespace, then parses one value; `depth` is the number of enclosing containers.
    fn parse_value(&mut self, depth: usize) -> Result<Value, CanonError> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'{') => self.parse_object(depth),
            Some(b'[') => self.parse_array(depth),
            Some(b'"') => Ok(Value::String(self.parse_string()?)),
            Some(b'-' | b'0'..=b'9') => self.parse_number(),
            Some(b't') => self.parse_literal("true", Value::Bool(true)),
            Some(b'f') => self.parse_literal("false", Value::Bool(false)),
            Some(b'n') => self.parse_literal("null", Value::Null),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn parse_literal(&mut self, word: &str, v: Value) -> Result<Value, CanonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn parse_array(&mut self, depth: usize) -> Result<Value, CanonError> {
        if depth >= MAX_DEPTH {
            return Err(CanonError::TooDeep);
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.parse_value(depth + 1)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn parse_object(&mut self, depth: usize) -> Result<Value, CanonError> {
        if depth >= MAX_DEPTH {
            return Err(CanonError::TooDeep);
        }
        self.pos += 1; // '{'
        let mut map = Map::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.parse_string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            let value = self.parse_value(depth + 1)?;
            if self.unique_keys && map.contains_key(&key) {
                return Err(CanonError::DuplicateKey(snippet(&key)));
            }
            // The last of duplicate keys wins, as in Python's json.loads.
            map.insert(key, value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    /// Parses a string literal starting at its opening quote.
    fn parse_string(&mut self) -> Result<String, CanonError> {
        self.pos += 1; // '"'
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // `start` and `pos` sit next to ASCII bytes (or the ends), so both are char boundaries.
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.parse_escape()?;
                    out.push(c);
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
    }

    /// Parses the escape after a backslash.
    fn parse_escape(&mut self) -> Result<char, CanonError> {
        let Some(b) = self.peek() else {
            return Err(self.error("unterminated string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.parse_hex4()?;
                match hi {
                    0xd800..=0xdbff => {
                        if self.bytes[self.pos..].starts_with(b"\\u") {
                            self.pos += 2;
                            let lo = self.parse_hex4()?;
                            if !(0xdc00..=0xdfff).contains(&lo) {
                                return Err(self.error("lone surrogate in \\u escape"));
                            }
                            let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                            char::from_u32(c).ok_or_else(|| self.error("invalid \\u escape"))?
                        } else {
                            return Err(self.error("lone surrogate in \\u escape"));
                        }
                    }
                    0xdc00..=0xdfff => return Err(self.error("lone surrogate in \\u escape")),
                    c => char::from_u32(c).ok_or_else(|| self.error("invalid \\u escape"))?,
                }
            }
            _ => {
                self.pos -= 1;
                return Err(self.error("invalid escape"));
            }
        })
    }

    fn parse_hex4(&mut self) -> Result<u32, CanonError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.error("invalid \\u escape")),
            };
            v = v * 16 + u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, kept as text.
    fn parse_number(&mut self) -> Result<Value, CanonError> {
        let start = self.pos;
        let len = number_token_len(&self.bytes[start..]).ok_or_else(|| self.error("invalid number"))?;
        self.pos += len;
        let token = &self.text[start..self.pos];
        let n = Number::from_str(token).map_err(|_| self.error("invalid number"))?;
        Ok(Value::Number(n))
    }
}

/// Length of the JSON number token at the start of `b`, or `None` if there is none.
fn number_token_len(b: &[u8]) -> Option<usize> {
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = usize::from(b.first() == Some(&b'-'));
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return None;
        }
        i += n;
    }
    Some(i)
}

/// True when all of `text` is one JSON number token.
pub(crate) fn is_number_token(text: &str) -> bool {
    number_token_len(text.as_bytes()) == Some(text.len())
}

/// The two things that differ between the reference's form and RFC 8785: the order of object keys
/// and how a number token is written. Everything else (literals, string escapes, structure, the
/// depth limit) is shared.
pub(crate) struct Rules {
    pub key_order: fn(&str, &str) -> std::cmp::Ordering,
    pub number: fn(&str, &mut String) -> Result<(), CanonError>,
}

/// The reference's rules (docs/protocol.md §3): code-point key order, Python number formatting.
const REFERENCE: Rules = Rules {
    // `str`'s order is UTF-8 byte order, which is code-point order (Python's `sorted`).
    key_order: |a, b| a.cmp(b),
    number: write_number,
};

fn write_value(v: &Value, out: &mut String, depth: usize) -> Result<(), CanonError> {
    write_value_with(v, out, depth, &REFERENCE)
}

/// Writes `v` canonically under `rules`, failing beyond [`MAX_DEPTH`] nested containers.
pub(crate) fn write_value_with(v: &Value, out: &mut String, depth: usize, rules: &Rules) -> Result<(), CanonError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => (rules.number)(n.as_str(), out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(CanonError::TooDeep);
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value_with(item, out, depth + 1, rules)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(CanonError::TooDeep);
            }
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| (rules.key_order)(a.0, b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value_with(v, out, depth + 1, rules)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Writes a JSON string with the reference's escapes; RFC 8785 (ECMAScript `JSON.stringify`)
/// escapes exactly the same way.
pub(crate) fn write_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is an ASCII byte, so a char boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// True when a number token is a JSON integer (no fraction, no exponent).
pub(crate) fn is_integer_token(text: &str) -> bool {
    !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// Parses a number token as a finite double (Rust's parsing is correctly rounded, at any length).
pub(crate) fn to_finite_f64(text: &str) -> Result<f64, CanonError> {
    if !is_number_token(text) {
        return Err(CanonError::InvalidJson(format!("invalid number {:?}", snippet(text))));
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(CanonError::NumberOutOfRange(snippet(text))),
    }
}

/// Shortest round-trip decimal digits of a finite, non-zero `|x|` and its decimal-point position
/// (`|x| ≈ 0.d1d2… × 10^decpt`), without trailing zeros.
///
/// Python's `repr` (David Gay's mode 0) and ECMAScript's `Number::toString` agree: the fewest digits
/// that read back as `x`, and among those the ones closest to `x` (a tie goes to an even last
/// digit). Rust's `{:e}` finds the shortest length but may pick the other candidate of a tie
/// (`756301265721143.25` → `…143.3` where Python writes `…143.2`), so the digits are re-derived by
/// exact rounding at that length (`{:.*e}`, half to even). That nearest number does not always
/// read back: just above a power of two the gap below `x` is half the gap above, and the nearest
/// candidate can fall outside the lower half-gap (2^-24 = 5.9604644775390625e-08: nearest 16 digits
/// …5062 does not round-trip, Python writes …5063). Then the round-tripping candidate found by `{:e}`
/// is the answer: it is the only one of that length on the wide side.
pub(crate) fn shortest_digits(x: f64) -> (String, i32) {
    let split = |sci: &str| -> (String, i32) {
        let (mant, exp) = sci.split_once('e').unwrap_or((sci, "0"));
        (mant.chars().filter(|c| *c != '.').collect(), exp.parse::<i32>().unwrap_or(0) + 1)
    };
    let x = x.abs();
    let shortest = split(&format!("{x:e}"));
    let nearest = split(&format!("{:.*e}", shortest.0.len() - 1, x));
    if nearest != shortest && format!("0.{}e{}", nearest.0, nearest.1).parse::<f64>() != Ok(x) {
        return shortest;
    }
    nearest
}

fn write_number(text: &str, out: &mut String) -> Result<(), CanonError> {
    if is_integer_token(text) {
        if !is_number_token(text) {
            return Err(CanonError::InvalidJson(format!("invalid number {:?}", snippet(text))));
        }
        // Arbitrary precision, exactly as received; `-0` is Python's int 0.
        if text.trim_start_matches('-').bytes().all(|b| b == b'0') {
            out.push('0');
        } else {
            out.push_str(text);
        }
        return Ok(());
    }
    let x = to_finite_f64(text)?;
    if x == 0.0 {
        out.push('0');
    } else if x.fract() == 0.0 && x.abs() < TWO_POW_53 {
        // Exact: |x| < 2^53 fits i64.
        out.push_str(&(x as i64).to_string());
    } else {
        python_float_repr(x, out);
    }
    Ok(())
}

/// Python's `repr(float)` for finite non-zero `x` (float_repr_style "short": format code 'r',
/// Gay's mode 0, exponent form when `decpt <= -4 || decpt > 16`, i.e. |x| < 1e-4 or |x| >= 1e16).
fn python_float_repr(x: f64, out: &mut String) {
    if x < 0.0 {
        out.push('-');
    }
    let (digits, decpt) = shortest_digits(x);
    let k = digits.len() as i32;
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        out.push_str(&format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()));
    } else if decpt <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-decpt) as usize));
        out.push_str(&digits);
    } else if decpt < k {
        out.push_str(&digits[..decpt as usize]);
        out.push('.');
        out.push_str(&digits[decpt as usize..]);
    } else {
        out.push_str(&digits);
        out.push_str(&"0".repeat((decpt - k) as usize));
        out.push_str(".0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(json: &str) -> String {
        canonicalize_str(json).unwrap_or_else(|e| panic!("{json:.80}: {e}"))
    }

    fn invalid(json: &str) -> bool {
        matches!(canonicalize_str(json), Err(CanonError::InvalidJson(_)))
    }

    #[test]
    fn objects_sorted_by_code_point_without_whitespace() {
        assert_eq!(
            c(r#"{ "b" : 1, "a" : [ 1 , { "d": null, "c": true } ] }"#),
            r#"{"a":[1,{"c":true,"d":null}],"b":1}"#
        );
        assert_eq!(
            c(r#"{"B":1,"_":2,"a":3,"":4,"aa":5,"a\u0000":6}"#),
            r#"{"":4,"B":1,"_":2,"a":3,"a\u0000":6,"aa":5}"#
        );
        // code-point order puts U+E000 and U+FFFF before U+1F600; UTF-16 order (RFC 8785) does not
        assert_eq!(c("{\"\u{1F600}\":1,\"\u{E000}\":2}"), "{\"\u{E000}\":2,\"\u{1F600}\":1}");
        assert_eq!(
            c("{\"\u{1F600}\":1,\"\u{FFFF}\":2,\"\u{D7FF}\":3}"),
            "{\"\u{D7FF}\":3,\"\u{FFFF}\":2,\"\u{1F600}\":1}"
        );
        // keys are compared after unescaping
        assert_eq!(c(r#"{"\u0062":1,"a":2}"#), r#"{"a":2,"b":1}"#);
        assert_eq!(c("[]"), "[]");
        assert_eq!(c("{}"), "{}");
        assert_eq!(c(" \t\r\n[ 1 ,\n2 ] \n"), "[1,2]");
        assert_eq!(c("[true,false,null]"), "[true,false,null]");
        assert_eq!(c(r#"[[],{},[{}],{"a":[]}]"#), r#"[[],{},[{}],{"a":[]}]"#);
    }

    #[test]
    fn duplicate_keys_last_one_wins() {
        assert_eq!(c(r#"{"a":1,"a":2}"#), r#"{"a":2}"#);
        assert_eq!(c(r#"{"a":1,"b":0,"a":{"x":1,"x":[3]}}"#), r#"{"a":{"x":[3]},"b":0}"#);
        assert_eq!(c(r#"{"a":1,"\u0061":"esc"}"#), r#"{"a":"esc"}"#);
        // serde_json (preserve_order) agrees on the value
        let v: Value = serde_json::from_str(r#"{"a":1,"b":0,"a":2}"#).unwrap();
        assert_eq!(canonicalize(&v).unwrap(), r#"{"a":2,"b":0}"#);
    }

    #[test]
    fn arrays_keep_their_order() {
        assert_eq!(c(r#"[3,1,"b","a",[2,1]]"#), r#"[3,1,"b","a",[2,1]]"#);
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            c(r#""q\" b\\ n\n t\t r\r b\b f\f \u0001\u001f \u007f / \/ \u2028\u2029 é 😀""#),
            "\"q\\\" b\\\\ n\\n t\\t r\\r b\\b f\\f \\u0001\\u001f \u{7f} / / \u{2028}\u{2029} é 😀\""
        );
        assert_eq!(c(r#""\u00e9\ud83d\ude00\uD83D\uDE00\u0000""#), "\"é😀😀\\u0000\"");
        // every control character
        for b in 0u8..0x20 {
            let s = (b as char).to_string();
            let want = match b {
                8 => "\"\\b\"".to_string(),
                9 => "\"\\t\"".to_string(),
                10 => "\"\\n\"".to_string(),
                12 => "\"\\f\"".to_string(),
                13 => "\"\\r\"".to_string(),
                _ => format!("\"\\u{:04x}\"", b),
            };
            assert_eq!(canonicalize(&Value::String(s)).unwrap(), want);
        }
        assert_eq!(
            canonicalize(&Value::String("\u{1b}[0m\u{7f}\u{80}\u{ffff}".into())).unwrap(),
            "\"\\u001b[0m\u{7f}\u{80}\u{ffff}\""
        );
        // raw control characters are not JSON
        assert!(invalid("\"a\nb\""));
        assert!(invalid("\"a\u{0}b\""));
    }

    #[test]
    fn integers_are_exact() {
        assert_eq!(
            c("[0,-0,-42,1152921504606846976,123456789012345678901234567890,-18446744073709551617]"),
            "[0,0,-42,1152921504606846976,123456789012345678901234567890,-18446744073709551617]"
        );
        let huge = format!("-1{}", "0".repeat(10_000));
        assert_eq!(c(&huge), huge);
        assert_eq!(c(&format!("[{huge}]")), format!("[{huge}]"));
        // not JSON
        for bad in ["01", "-", "+1", "1.", ".5", "1e", "1e+", "0x10", "1_000", "--1", "NaN", "Infinity", "-Infinity"] {
            assert!(invalid(bad), "{bad}");
        }
    }

    #[test]
    fn floats_follow_python_repr() {
        let cases = [
            ("1.0", "1"),
            ("1e2", "100"),
            ("1E2", "100"),
            ("1e+2", "100"),
            ("100.0", "100"),
            ("-1.0", "-1"),
            ("-0.0", "0"),
            ("0.0", "0"),
            ("0e10", "0"),
            ("-0e-10", "0"),
            ("1e-400", "0"),
            ("0.5", "0.5"),
            ("-0.5", "-0.5"),
            ("1e-05", "1e-05"),
            ("0.00001", "1e-05"),
            ("1e-07", "1e-07"),
            ("1e-4", "0.0001"),
            ("0.0001", "0.0001"),
            ("-0.0001", "-0.0001"),
            ("0.00009999999999999999", "9.999999999999999e-05"),
            ("0.00012", "0.00012"),
            ("1e+16", "1e+16"),
            ("1e16", "1e+16"),
            ("-1e16", "-1e+16"),
            ("10000000000000000.0", "1e+16"),
            ("9007199254740994.0", "9007199254740994.0"),
            ("9007199254740992.0", "9007199254740992.0"),
            ("-9007199254740992.0", "-9007199254740992.0"),
            ("9007199254740993.0", "9007199254740992.0"),
            ("9007199254740991.0", "9007199254740991"),
            ("-9007199254740991.0", "-9007199254740991"),
            ("9999999999999998.0", "9999999999999998.0"),
            ("1234567890123456.7", "1234567890123456.8"),
            ("3.141592653589793", "3.141592653589793"),
            ("0.1", "0.1"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("1.5e+300", "1.5e+300"),
            ("-2.5e-10", "-2.5e-10"),
            ("1e22", "1e+22"),
            ("1e21", "1e+21"),
            ("1.2345e17", "1.2345e+17"),
            ("123456789.125", "123456789.125"),
            ("5e-324", "5e-324"),
            ("-5e-324", "-5e-324"),
            ("2.4703282292062328e-324", "5e-324"),
            ("2.2250738585072014e-308", "2.2250738585072014e-308"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("2.5", "2.5"),
            ("1e100", "1e+100"),
            ("1.5e-100", "1.5e-100"),
            // ties: Python keeps the even digit
            ("756301265721143.25", "756301265721143.2"),
            // just above a power of two: the nearest 16 digits do not round-trip
            ("5.9604644775390625e-08", "5.960464477539063e-08"),
            ("2.98023223876953125e-08", "2.9802322387695312e-08"),
            ("1e23", "1e+23"),
            ("-1.5", "-1.5"),
        ];
        for (input, want) in cases {
            assert_eq!(c(input), want, "{input}");
        }
        assert!(matches!(canonicalize_str("1e400"), Err(CanonError::NumberOutOfRange(_))));
        assert!(matches!(canonicalize_str("-1.8e308"), Err(CanonError::NumberOutOfRange(_))));
        assert!(matches!(canonicalize_str("1e99999999999999999999"), Err(CanonError::NumberOutOfRange(_))));
        assert_eq!(c("1e-99999999999999999999"), "0");
        // 10k digits: parsed correctly rounded
        assert_eq!(c(&format!("1.{}", "5".repeat(10_000))), "1.5555555555555556");
        assert_eq!(c(&format!("0.{}1", "0".repeat(10_000))), "0");
        assert!(matches!(
            canonicalize_str(&format!("1{}.0", "0".repeat(10_000))),
            Err(CanonError::NumberOutOfRange(_))
        ));
        // numbers made in code (serde_json formats f64 itself)
        for (x, want) in [
            (0.1, "0.1"),
            (1.0, "1"),
            (1e16, "1e+16"),
            (1e-7, "1e-07"),
            (-0.0, "0"),
            (2f64.powi(53), "9007199254740992.0"),
        ] {
            assert_eq!(canonicalize(&Value::from(x)).unwrap(), want, "{x}");
        }
        assert_eq!(canonicalize(&Value::from(u64::MAX)).unwrap(), "18446744073709551615");
        assert_eq!(canonicalize(&Value::from(i64::MIN)).unwrap(), "-9223372036854775808");
    }

    /// CPython repr (and ECMAScript) of edge-case and random doubles: `tests/data/jcs/doubles.tsv`.
    #[test]
    fn python_repr_table() {
        let mut n = 0;
        for line in include_str!("../tests/data/jcs/doubles.tsv").lines().filter(|l| !l.starts_with('#')) {
            let cols: Vec<&str> = line.split('\t').collect();
            let x = f64::from_bits(u64::from_str_radix(cols[0], 16).unwrap());
            assert_eq!(cols[1].parse::<f64>().unwrap().to_bits(), x.to_bits(), "{line}");
            assert_eq!(c(cols[1]), cols[2], "{line}");
            // the reference's own text reads back as the same double and is a fixed point
            assert_eq!(cols[2].parse::<f64>().unwrap(), x, "{line}");
            assert_eq!(c(cols[2]), cols[2], "{line}");
            n += 1;
        }
        assert!(n > 1400, "{n}");
    }

    #[test]
    fn shortest_digits_round_trip_at_every_power_of_two() {
        for e in -1074..=1023 {
            let bits: u64 = if e >= -1022 { ((e + 1023) as u64) << 52 } else { 1 << (e + 1074) };
            assert_eq!(f64::from_bits(bits), 2f64.powf(f64::from(e)));
            for x in [bits - 1, bits, bits + 1].map(f64::from_bits) {
                if x == 0.0 || !x.is_finite() {
                    continue;
                }
                let (d, decpt) = shortest_digits(x);
                assert_eq!(format!("0.{d}e{decpt}").parse::<f64>().unwrap(), x, "{x:e}");
                assert!(!d.ends_with('0') && d.len() <= 17, "{x:e}: {d}");
                // as short as Rust's shortest round-trip output
                let rust = format!("{x:e}");
                assert_eq!(d.len(), rust.split('e').next().unwrap().replace('.', "").len(), "{x:e}");
            }
        }
    }

    #[test]
    fn parser_matches_serde_json() {
        let docs = [
            r#"{"from":"a@b.test","payload":{"n":[1,2.50,-0,1E+2,3e-5],"s":"\u00e9\n\"x\""},"z":null,"t":true}"#,
            r#"[{"a":{"b":{"c":[[[]]]}}},"",0,-1.5e-300]"#,
            "\"\\ud83d\\ude00 \\u2028\"",
            "  42  ",
        ];
        for doc in docs {
            let ours = parse_json(doc).unwrap();
            let theirs: Value = serde_json::from_str(doc).unwrap();
            assert_eq!(ours, theirs, "{doc}");
            assert_eq!(ours.to_string(), theirs.to_string(), "{doc}");
        }
        assert_eq!(parse_json_slice(b"[1]").unwrap(), serde_json::json!([1]));
        assert!(matches!(parse_json_slice(b"[\"\xff\"]"), Err(CanonError::InvalidJson(_))));
        assert!(matches!(parse_json_slice(b"\xef\xbb\xbf[1]"), Err(CanonError::InvalidJson(_))));
    }

    /// Random byte mutations of JSON documents: accepted and rejected exactly when serde_json does,
    /// with the same value, and canonicalisation never panics.
    #[test]
    fn parser_differential_fuzz() {
        let seeds = [
            r#"{"a":[1,-2.5e+3,0.0,true,false,null],"b\u00e9\n":{"c":"\ud83d\ude00x"},"d":-0}"#,
            r#"[{"":[]},"\"\\\/\b\f\n\r\t",12345678901234567890123,1E-7]"#,
        ];
        let alphabet = b"{}[]:,\"\\/ -+.0123456789eEabfnrtuxlsDd\n\t\x01\x7f";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut accepted, mut rejected) = (0, 0);
        for i in 0..40_000 {
            let mut doc = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(doc.len() + 1);
                match next(3) {
                    0 if at < doc.len() => {
                        doc.remove(at);
                    }
                    1 => doc.insert(at, alphabet[next(alphabet.len())]),
                    _ if at < doc.len() => doc[at] = alphabet[next(alphabet.len())],
                    _ => {}
                }
            }
            let Ok(text) = std::str::from_utf8(&doc) else { continue };
            let ours = parse_json(text);
            let theirs = serde_json::from_str::<Value>(text);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b, "{text}");
                    accepted += 1;
                }
                (Err(_), Err(_)) => rejected += 1,
                _ => panic!("{text}: ours {ours:?}, serde_json {theirs:?}"),
            }
            let _ = canonicalize_str(text);
            let _ = crate::jcs::canonicalize_jcs_str(text);
        }
        assert!(accepted > 1000 && rejected > 1000, "{accepted} {rejected}");
    }

    #[test]
    fn serde_json_private_number_key_stays_an_object() {
        // serde_json (arbitrary_precision) reads this object as the number 1.5; Python, and we, do not.
        let doc = r#"{"$serde_json::private::Number":"1.5"}"#;
        assert_eq!(serde_json::from_str::<Value>(doc).unwrap(), serde_json::json!(1.5));
        assert_eq!(c(doc), doc);
        let v = parse_json(doc).unwrap();
        assert!(v.is_object());
        assert_eq!(canonicalize(&v).unwrap(), doc);
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        for bad in [
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\udc00""#,
            r#""\udc00\ud800""#,
            r#""\ud800\ud800""#,
            r#""\ud800\u0041""#,
            r#""\ud800\""#,
            r#""\uZZZZ""#,
            r#""\u12""#,
            r#""\u""#,
            r#""\x41""#,
            r#""\'""#,
            "\"\\",
            "\"abc",
            "",
            "   ",
            "[1,]",
            "[1 2]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "{'a':1}",
            "{\"a\":1",
            "[",
            "]",
            "nul",
            "truex",
            "[1]x",
            "1 2",
            "/* c */ 1",
            "\u{feff}1",
        ] {
            assert!(invalid(bad), "{bad:?}");
        }
        // too deep: parsed or built in code
        assert_eq!(canonicalize_str(&"[".repeat(100_000)), Err(CanonError::TooDeep));
        assert_eq!(canonicalize_str(&"{\"a\":".repeat(100_000)), Err(CanonError::TooDeep));
        assert_eq!(canonicalize_str(&("[".repeat(129) + &"]".repeat(129))), Err(CanonError::TooDeep));
        let deepest = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(c(&deepest), deepest);
        let mut v = Value::Null;
        for _ in 0..MAX_DEPTH {
            v = Value::Array(vec![v]);
        }
        assert!(canonicalize(&v).is_ok());
        let v = Value::Array(vec![v]);
        assert_eq!(canonicalize(&v), Err(CanonError::TooDeep));
        let mut o = Value::Null;
        for _ in 0..1000 {
            let mut m = Map::new();
            m.insert("k".into(), o);
            o = Value::Object(m);
        }
        assert_eq!(canonicalize(&o), Err(CanonError::TooDeep));
        // everything serde_json accepts we accept, at its depth limit too
        let serde_deepest = "[".repeat(127) + &"]".repeat(127);
        let v: Value = serde_json::from_str(&serde_deepest).unwrap();
        assert_eq!(canonicalize(&v).unwrap(), serde_deepest);
        // …and it stops one level before us (found by fuzz/targets.rs `canonical`)
        assert!(serde_json::from_str::<Value>(&deepest).unwrap_err().to_string().contains("recursion limit"));
        // numbers that could only come from serde_json's hidden constructor
        for bad in ["abc", "1.2.3", "", "-", "0x1"] {
            let v = Value::Number(Number::from_string_unchecked(bad.into()));
            assert!(matches!(canonicalize(&v), Err(CanonError::InvalidJson(_))), "{bad}");
        }
        // errors quote at most ERROR_SNIPPET characters
        let Err(CanonError::NumberOutOfRange(s)) = canonicalize_str(&format!("9{}.0", "9".repeat(1000))) else {
            panic!()
        };
        assert_eq!(s.len(), ERROR_SNIPPET);
    }

    #[test]
    fn big_strings() {
        let big = format!("\"{}\"", "x".repeat(10 << 20));
        assert_eq!(c(&big), big);
        let mixed = format!("\"{}\"", "é\\n😀\\u0001".repeat(1 << 20));
        let want = format!("\"{}\"", "é\\n😀\\u0001".repeat(1 << 20));
        assert_eq!(c(&mixed), want);
        let key = "k".repeat(10 << 20);
        assert_eq!(c(&format!("{{\"{key}\":1}}")), format!("{{\"{key}\":1}}"));
    }
}
