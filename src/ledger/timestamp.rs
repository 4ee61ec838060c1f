//! The form of `ts`: an RFC 3339 §5.6 `date-time`.
//!
//! The contract checks the form, not the truth (the producer's clock is its
//! own business), so this is the ABNF plus the ranges RFC 3339 §5.7 puts on
//! each field: `2026-02-30T…` and `…T24:00:00Z` are refused, a leap second
//! (`:60`) is accepted. `T` and `Z` may be lower case (RFC 3339 §5.6 NOTE);
//! a space instead of `T` is not §5.6 and is refused.

/// True when `s` is an RFC 3339 `date-time`.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    // full-date "T" partial-time: at least "YYYY-MM-DDTHH:MM:SS" + offset.
    if b.len() < 20 {
        return false;
    }
    let (Some(year), Some(month), Some(day)) = (num(b, 0, 4), num(b, 5, 2), num(b, 8, 2)) else {
        return false;
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return false;
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return false;
    }
    let (Some(hour), Some(minute), Some(second)) = (num(b, 11, 2), num(b, 14, 2), num(b, 17, 2))
    else {
        return false;
    };
    if b[13] != b':' || b[16] != b':' || hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        i += 1 + digits;
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', ..] if b.len() - i == 6 => {
            let (Some(oh), Some(om)) = (num(b, i + 1, 2), num(b, i + 4, 2)) else {
                return false;
            };
            b[i + 3] == b':' && oh <= 23 && om <= 59
        }
        _ => false,
    }
}

fn num(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let digits = b.get(at..at + len)?;
    digits.iter().try_fold(0u32, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::is_rfc3339;

    #[test]
    fn accepts_rfc3339_date_times() {
        for ok in [
            "2026-11-21T23:48:37Z",
            "2026-11-21T23:48:37.123456Z",
            "2026-11-21t23:48:37z",
            "2024-02-29T00:00:00+05:30",
            "1990-12-31T23:59:60Z",
            "2026-01-01T00:00:00.1-08:00",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
    }

    #[test]
    fn refuses_other_forms() {
        for bad in [
            "",
            "2026-11-21",
            "2026-11-21 23:48:37Z",
            "2026-11-21T23:48:37",
            "2026-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T23:60:00Z",
            "2026-11-21T23:48:37.Z",
            "2026-11-21T23:48:37+0530",
            "2026-11-21T23:48:37+24:00",
            "2026-11-21T23:48:37ZZ",
            "26-11-21T23:48:37Z",
            "２０２６-11-21T23:48:37Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
