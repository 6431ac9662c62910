//! The reference's canonical form: the exact bytes ATP signs (protocol.md §3).
//!
//! It is *not* RFC 8785 (see [`crate::jcs`] for that): object keys are sorted by Unicode code point,
//! integers are written at arbitrary precision exactly as received, and floats follow Python's
//! `repr` (shortest round-trip digits, exponent form below 1e-4 and from 1e16 up, `.0` on large
//! integral values), with integral floats below 2^53 written as integers. It relies on serde_json's
//! `arbitrary_precision` feature to see each number's original text.

use serde_json::{Number, Value};

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
    /// The same key twice in one object (RFC 8785 / I-JSON only).
    #[error("duplicate object key {0:?}")]
    DuplicateKey(String),
}

/// Deepest nesting of arrays/objects accepted (serde_json's parser stops at 128 as well).
pub const MAX_DEPTH: usize = 128;

/// 2^53: below it every integer is exactly representable as a double.
const TWO_POW_53: f64 = 9_007_199_254_740_992.0;

/// Canonical text of a JSON value, per the reference's rules (protocol.md §3).
pub fn canonicalize(value: &Value) -> Result<String, CanonError> {
    let mut out = String::new();
    write_value(value, &mut out, 0)?;
    Ok(out)
}

/// Parses JSON text (duplicate keys: the last one wins, as in Python) and returns its canonical text.
pub fn canonicalize_str(json: &str) -> Result<String, CanonError> {
    let v: Value = serde_json::from_str(json).map_err(|e| CanonError::InvalidJson(e.to_string()))?;
    canonicalize(&v)
}

fn write_value(v: &Value, out: &mut String, depth: usize) -> Result<(), CanonError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out)?,
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
                write_value(item, out, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(CanonError::TooDeep);
            }
            let mut entries: Vec<_> = map.iter().collect();
            // `str`'s order is UTF-8 byte order, which is code-point order.
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Writes a JSON string with the reference's escapes (shared with RFC 8785, whose rules agree).
pub(crate) fn write_string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 0xf] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// True when a number token is a JSON integer (no fraction, no exponent).
pub(crate) fn is_integer_token(text: &str) -> bool {
    !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// Parses a number token as a finite double.
pub(crate) fn to_finite_f64(text: &str) -> Result<f64, CanonError> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(CanonError::NumberOutOfRange(text.chars().take(40).collect())),
    }
}

/// Shortest round-trip decimal digits of a finite, non-zero `|x|` and its decimal-point position
/// (`x = 0.d1d2… × 10^decpt`).
///
/// Among the shortest digit strings that round-trip, the one closest to `x` is chosen, ties to an
/// even last digit — as Python's `repr` (David Gay's mode 0) and ECMAScript's `Number::toString`
/// both require. Rust's `{:e}` finds the shortest length but may pick the other candidate of a tie
/// (`756301265721143.25` → `…143.3`), so the digits are re-derived by exact rounding at that length,
/// which is correctly rounded, half to even.
pub(crate) fn shortest_digits(x: f64) -> (String, i32) {
    let split = |sci: &str| -> (String, i32) {
        let (mant, exp) = sci.split_once('e').unwrap_or((sci, "0"));
        (mant.chars().filter(|c| *c != '.').collect(), exp.parse().unwrap_or(0) + 1)
    };
    let (shortest, _) = split(&format!("{:e}", x.abs()));
    split(&format!("{:.*e}", shortest.len() - 1, x.abs()))
}

fn write_number(n: &Number, out: &mut String) -> Result<(), CanonError> {
    let text = n.to_string();
    if is_integer_token(&text) {
        // Arbitrary precision, exactly as received; `-0` is Python's int 0.
        if text.trim_start_matches('-').bytes().all(|b| b == b'0') {
            out.push('0');
        } else {
            out.push_str(&text);
        }
        return Ok(());
    }
    let x = to_finite_f64(&text)?;
    if x == 0.0 {
        out.push('0');
    } else if x.fract() == 0.0 && x.abs() < TWO_POW_53 {
        out.push_str(&format!("{}", x as i64));
    } else {
        python_float_repr(x, out);
    }
    Ok(())
}

/// Python's `repr(float)` for finite non-zero `x` (float_repr_style "short").
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
        canonicalize_str(json).unwrap()
    }

    #[test]
    fn objects_sorted_by_code_point_without_whitespace() {
        assert_eq!(
            c(r#"{ "b" : 1, "a" : [ 1 , { "d": null, "c": true } ] }"#),
            r#"{"a":[1,{"c":true,"d":null}],"b":1}"#
        );
        // code-point order puts U+E000 before U+1F600; UTF-16 order (RFC 8785) would not
        assert_eq!(c("{\"\u{1F600}\":1,\"\u{E000}\":2}"), "{\"\u{E000}\":2,\"\u{1F600}\":1}");
        assert_eq!(c(r#"{"B":1,"_":2,"a":3,"":4}"#), r#"{"":4,"B":1,"_":2,"a":3}"#);
        assert_eq!(c(r#"{"a":1,"a":2}"#), r#"{"a":2}"#, "last duplicate wins");
        assert_eq!(c("[]"), "[]");
        assert_eq!(c("{}"), "{}");
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            c(r#""q\" b\\ n\n t\t r\r b\b f\f \u0001\u001f \u007f / \u2028 é 😀""#),
            "\"q\\\" b\\\\ n\\n t\\t r\\r b\\b f\\f \\u0001\\u001f \u{7f} / \u{2028} é 😀\""
        );
        assert_eq!(c(r#""\u00e9\ud83d\ude00""#), "\"é😀\"");
    }

    #[test]
    fn integers_are_exact() {
        assert_eq!(
            c("[0,-0,-42,1152921504606846976,123456789012345678901234567890]"),
            "[0,0,-42,1152921504606846976,123456789012345678901234567890]"
        );
        let huge = format!("1{}", "0".repeat(10_000));
        assert_eq!(c(&huge), huge);
    }

    #[test]
    fn floats_follow_python_repr() {
        let cases = [
            ("1.0", "1"),
            ("1e2", "100"),
            ("100.0", "100"),
            ("-0.0", "0"),
            ("0.0", "0"),
            ("0e10", "0"),
            ("0.5", "0.5"),
            ("1e-05", "1e-05"),
            ("0.00001", "1e-05"),
            ("1e-07", "1e-07"),
            ("0.0001", "0.0001"),
            ("0.00012", "0.00012"),
            ("1e+16", "1e+16"),
            ("1e16", "1e+16"),
            ("9007199254740994.0", "9007199254740994.0"),
            ("9007199254740992.0", "9007199254740992.0"),
            ("9007199254740991.0", "9007199254740991"),
            ("-9007199254740991.0", "-9007199254740991"),
            ("9999999999999998.0", "9999999999999998.0"),
            ("3.141592653589793", "3.141592653589793"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("1.5e+300", "1.5e+300"),
            ("-2.5e-10", "-2.5e-10"),
            ("1e22", "1e+22"),
            ("1.2345e17", "1.2345e+17"),
            ("123456789.125", "123456789.125"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("2.5", "2.5"),
            ("756301265721143.25", "756301265721143.2"),
            ("1e23", "1e+23"),
            ("-1.5", "-1.5"),
            ("1E400", ""),
        ];
        for (input, want) in cases {
            match canonicalize_str(input) {
                Ok(got) => assert_eq!(got, want, "{input}"),
                Err(e) => assert!(want.is_empty(), "{input}: {e}"),
            }
        }
        assert!(matches!(canonicalize_str("1e400"), Err(CanonError::NumberOutOfRange(_))));
        assert!(matches!(canonicalize_str(&format!("1.{}", "5".repeat(10_000))), Ok(s) if s == "1.5555555555555556"));
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        assert!(matches!(canonicalize_str(r#""\ud800""#), Err(CanonError::InvalidJson(_))));
        assert!(matches!(canonicalize_str(r#""\udc00x""#), Err(CanonError::InvalidJson(_))));
        assert!(matches!(canonicalize_str(r#""\uZZZZ""#), Err(CanonError::InvalidJson(_))));
        assert!(matches!(canonicalize_str(&"[".repeat(100_000)), Err(CanonError::InvalidJson(_))));
        assert!(canonicalize_str("").is_err());
        assert!(canonicalize_str("NaN").is_err());
        // a value nested deeper than the limit, built in code rather than parsed
        let mut v = Value::Null;
        for _ in 0..(MAX_DEPTH + 1) {
            v = Value::Array(vec![v]);
        }
        assert_eq!(canonicalize(&v), Err(CanonError::TooDeep));
        // everything the parser accepts can be canonicalised
        let deepest = "[".repeat(127) + &"]".repeat(127);
        assert_eq!(c(&deepest), deepest);
        let big = format!("\"{}\"", "x".repeat(10 << 20));
        assert_eq!(c(&big).len(), big.len());
    }
}
