//! Strict RFC 8785 JSON Canonicalization Scheme (JCS), for callers who want the standard rather
//! than the reference's form ([`crate::canonical`]).
//!
//! Differences from the reference's form: keys sorted by UTF-16 code units; every number is an
//! IEEE-754 double written as ECMAScript's `Number.prototype.toString` does; duplicate keys are an
//! error (I-JSON, RFC 7493).

use serde_json::Value;

pub use crate::canonical::CanonError;
use crate::canonical::{parse_json_unique_keys, shortest_digits, to_finite_f64, write_value_with, Rules};

/// RFC 8785 canonical text of a JSON value.
///
/// Every number is read as an IEEE-754 double (integers too: `12345678901234567890` becomes
/// `12345678901234567000`); one that is not finite as a double is [`CanonError::NumberOutOfRange`].
/// A [`Value`] cannot hold duplicate keys, so only [`canonicalize_jcs_str`] can see them.
pub fn canonicalize_jcs(value: &Value) -> Result<String, CanonError> {
    let mut out = String::new();
    write_value(value, &mut out, 0)?;
    Ok(out)
}

/// Parses JSON text and returns its RFC 8785 canonical text. Duplicate keys are
/// [`CanonError::DuplicateKey`] (I-JSON, RFC 7493 §2.3); lone surrogates are
/// [`CanonError::InvalidJson`] (RFC 7493 §2.1).
pub fn canonicalize_jcs_str(json: &str) -> Result<String, CanonError> {
    canonicalize_jcs(&parse_json_unique_keys(json)?)
}

/// RFC 8785 rules: keys by UTF-16 code units (§3.2.3; UTF-8 byte order differs only for
/// U+E000..U+FFFF against non-BMP characters), every number an IEEE double (§3.2.2.3).
const JCS: Rules = Rules {
    key_order: |a, b| a.encode_utf16().cmp(b.encode_utf16()),
    number: |text, out| {
        write_number(to_finite_f64(text)?, out);
        Ok(())
    },
};

fn write_value(v: &Value, out: &mut String, depth: usize) -> Result<(), CanonError> {
    write_value_with(v, out, depth, &JCS)
}

/// ECMAScript `Number::toString(x)` (ECMA-262 §6.1.6.1.20) for a finite double.
fn write_number(x: f64, out: &mut String) {
    if x == 0.0 {
        out.push('0');
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    let (digits, n) = shortest_digits(x);
    let k = digits.len() as i32;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.push_str(&"0".repeat((n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        out.push_str(&e.abs().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::MAX_DEPTH;

    /// RFC 8785 Appendix B: IEEE-754 bit patterns and their canonical text.
    const APPENDIX_B: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];

    #[test]
    fn rfc8785_appendix_b_numbers() {
        for &(bits, want) in APPENDIX_B {
            let x = f64::from_bits(bits);
            let mut out = String::new();
            write_number(x, &mut out);
            assert_eq!(out, want, "{bits:#018x}");
            // and through the parser, from Rust's own shortest text of the double
            assert_eq!(canonicalize_jcs_str(&format!("{x:e}")).unwrap(), want, "{bits:#018x}");
        }
    }

    #[test]
    fn rfc8785_section_3_2_example() {
        // RFC 8785 §3.2.2 input, with its escapes, and the canonical output of §3.2.3.
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let want = r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#;
        assert_eq!(canonicalize_jcs_str(input).unwrap(), want);
    }

    #[test]
    fn utf16_key_order() {
        // RFC 8785 §3.2.3 sorting example.
        let input = "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\",\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}";
        let got = canonicalize_jcs_str(input).unwrap();
        let keys: Vec<String> = {
            let v: Value = serde_json::from_str(&got).unwrap();
            // preserve_order keeps the canonical order on re-parse
            v.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(keys, ["\r", "1", "\u{80}", "\u{f6}", "\u{20ac}", "\u{1f600}", "\u{fb33}"]);
        // differs from code-point order exactly here
        assert_eq!(
            crate::canonical::canonicalize_str("{\"\u{fb33}\":1,\"\u{1f600}\":2}").unwrap(),
            "{\"\u{fb33}\":1,\"\u{1f600}\":2}"
        );
        assert_eq!(
            canonicalize_jcs_str("{\"\u{fb33}\":1,\"\u{1f600}\":2}").unwrap(),
            "{\"\u{1f600}\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn numbers_differ_from_the_reference_form() {
        for (input, jcs, reference) in [
            ("1e-05", "0.00001", "1e-05"),
            ("1e-07", "1e-7", "1e-07"),
            ("1e16", "10000000000000000", "1e+16"),
            ("9007199254740994.0", "9007199254740994", "9007199254740994.0"),
            ("12345678901234567890", "12345678901234567000", "12345678901234567890"),
            ("-0", "0", "0"),
        ] {
            assert_eq!(canonicalize_jcs_str(input).unwrap(), jcs, "{input}");
            assert_eq!(crate::canonical::canonicalize_str(input).unwrap(), reference, "{input}");
        }
    }

    #[test]
    fn ecmascript_number_formatting() {
        for (input, want) in [
            ("1e-7", "1e-7"),
            ("1.5e-7", "1.5e-7"),
            ("1e-6", "0.000001"),
            ("1.5e-6", "0.0000015"),
            ("-1e-6", "-0.000001"),
            ("1e20", "100000000000000000000"),
            ("1e21", "1e+21"),
            ("-1e21", "-1e+21"),
            ("1.5e21", "1.5e+21"),
            ("123e18", "123000000000000000000"),
            ("1.0", "1"),
            ("-0.0", "0"),
            ("0e5", "0"),
            ("4.50", "4.5"),
            ("0.1", "0.1"),
            ("1e300", "1e+300"),
            ("9007199254740993", "9007199254740992"),
            ("756301265721143.25", "756301265721143.2"),
            ("5.9604644775390625e-08", "5.960464477539063e-8"),
            (&format!("1.{}", "5".repeat(10_000)), "1.5555555555555556"),
        ] {
            assert_eq!(canonicalize_jcs_str(input).unwrap(), want, "{input:.40}");
        }
    }

    /// ECMAScript `String(x)` (Node.js) of edge-case and random doubles: `tests/data/jcs/doubles.tsv`.
    #[test]
    fn ecmascript_table() {
        let mut n = 0;
        for line in include_str!("../tests/data/jcs/doubles.tsv").lines().filter(|l| !l.starts_with('#')) {
            let cols: Vec<&str> = line.split('\t').collect();
            let x = f64::from_bits(u64::from_str_radix(cols[0], 16).unwrap());
            let mut out = String::new();
            write_number(x, &mut out);
            assert_eq!(out, cols[3], "{line}");
            assert_eq!(canonicalize_jcs_str(cols[1]).unwrap(), cols[3], "{line}");
            assert_eq!(canonicalize_jcs_str(cols[3]).unwrap(), cols[3], "{line}");
            n += 1;
        }
        assert!(n > 1400, "{n}");
    }

    #[test]
    fn strings_and_structures() {
        assert_eq!(
            canonicalize_jcs_str(r#""\u0000\u0008\u0009\u000a\u000b\u000c\u000d\u001f\u0020\u007f\u2028/\/""#).unwrap(),
            "\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f \u{7f}\u{2028}//\""
        );
        assert_eq!(canonicalize_jcs_str(" [ {\"b\":[],\"a\":{}} , true ] ").unwrap(), r#"[{"a":{},"b":[]},true]"#);
        // U+1F600 is D83D DE00 in UTF-16, below U+E000; code-point order says otherwise
        assert_eq!(
            canonicalize_jcs_str("{\"\u{e000}\":1,\"\u{1f600}\":2}").unwrap(),
            "{\"\u{1f600}\":2,\"\u{e000}\":1}"
        );
        assert_eq!(
            crate::canonical::canonicalize_str("{\"\u{e000}\":1,\"\u{1f600}\":2}").unwrap(),
            "{\"\u{e000}\":1,\"\u{1f600}\":2}"
        );
        // the serde_json private number key is an ordinary key
        let doc = r#"{"$serde_json::private::Number":"1.5"}"#;
        assert_eq!(canonicalize_jcs_str(doc).unwrap(), doc);
    }

    #[test]
    fn errors() {
        assert_eq!(canonicalize_jcs_str(r#"{"a":1,"b":{"c":1,"c":2}}"#), Err(CanonError::DuplicateKey("c".into())));
        assert_eq!(canonicalize_jcs_str(r#"{"a":1,"b":2,"a":1}"#), Err(CanonError::DuplicateKey("a".into())));
        assert_eq!(
            canonicalize_jcs_str(r#"[{"x":0},{"y":[{"\u0078":1,"x":2}]}]"#),
            Err(CanonError::DuplicateKey("x".into()))
        );
        let long = "k".repeat(1000);
        assert_eq!(
            canonicalize_jcs_str(&format!(r#"{{"{long}":1,"{long}":2}}"#)),
            Err(CanonError::DuplicateKey("k".repeat(crate::canonical::ERROR_SNIPPET)))
        );
        assert!(canonicalize_jcs_str(r#"{"a":{"a":1},"b":[{"a":2},{"a":3}]}"#).is_ok());
        assert!(matches!(canonicalize_jcs_str("1e400"), Err(CanonError::NumberOutOfRange(_))));
        assert!(matches!(canonicalize_jcs_str("[-1e400]"), Err(CanonError::NumberOutOfRange(_))));
        assert!(matches!(canonicalize_jcs_str(&format!("1{}", "0".repeat(400))), Err(CanonError::NumberOutOfRange(_))));
        assert!(matches!(
            canonicalize_jcs_str(&format!("1{}", "0".repeat(10_000))),
            Err(CanonError::NumberOutOfRange(_))
        ));
        for bad in [r#""\ud800""#, r#""\udc00""#, r#""\uZZZZ""#, "NaN", "Infinity", "[1,]", "", "{\"a\":1"] {
            assert!(matches!(canonicalize_jcs_str(bad), Err(CanonError::InvalidJson(_))), "{bad}");
        }
        assert_eq!(canonicalize_jcs_str(&"[".repeat(100_000)), Err(CanonError::TooDeep));
        let mut v = Value::Null;
        for _ in 0..=MAX_DEPTH {
            v = Value::Array(vec![v]);
        }
        assert_eq!(canonicalize_jcs(&v), Err(CanonError::TooDeep));
        let big = format!("\"{}\"", "é".repeat(5 << 20));
        assert_eq!(canonicalize_jcs_str(&big).unwrap(), big);
    }
}
