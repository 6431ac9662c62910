//! Just enough DER to read a certificate's validity (RFC 5280 §4.1.2.5): the chain and the name
//! are checked by webpki, which does not expose the dates.

/// One TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// `notBefore` and `notAfter` of a DER certificate, as Unix seconds.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (SEQUENCE, cert, _) = tlv(der)? else { return None };
    let (SEQUENCE, tbs, _) = tlv(cert)? else { return None };
    let mut rest = tbs;
    // [0] EXPLICIT version, optional
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    let rest = tlv(rest)?.2; // serialNumber
    let rest = tlv(rest)?.2; // signature AlgorithmIdentifier
    let rest = tlv(rest)?.2; // issuer
    let (SEQUENCE, validity, _) = tlv(rest)? else { return None };
    let (t1, not_before, rest) = tlv(validity)?;
    let (t2, not_after, _) = tlv(rest)?;
    Some((time(t1, not_before)?, time(t2, not_after)?))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 12 => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day, h, m, s) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec!["x.test".to_owned()]).unwrap();
        p.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        p.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        // 2026-01-01 and 2049-12-31 are UTCTime; 2051-03-01 is GeneralizedTime (RFC 5280).
        assert_eq!(validity(&cert((2026, 1, 1), (2049, 12, 31))), Some((1_767_225_600, 2_524_521_600)));
        assert_eq!(validity(&cert((2000, 2, 29), (2051, 3, 1))), Some((951_782_400, 2_561_241_600)));
        assert_eq!(validity(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(validity(&[]), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(time(UTC_TIME, b"991231235959Z"), Some(946_684_799));
        assert_eq!(time(UTC_TIME, b"991331235959Z"), None);
    }
}
