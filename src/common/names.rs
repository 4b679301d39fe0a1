//! The shapes of names that reach paths, keys and file names. Each is
//! checked here, once, wherever it comes from: a configuration file, the
//! command line, a peer's manifest or a DWP directive.

/// Whether `code` has the shape of an LA code: 1 to 16 ASCII letters and
/// digits. Codes end up in file names and database keys, so nothing else is
/// accepted.
pub fn is_la_code(code: &str) -> bool {
    (1..=16).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `name` is a report name: `[a-z0-9][a-z0-9-]{0,63}`.
pub fn is_report_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `id` is a DNS name usable as a provider identity (and so as a
/// folder name in an LA's inbox): labels of ASCII letters, digits and '-',
/// joined by '.', no wildcard.
pub fn is_provider_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `id` is a transfer id as the wire contract allows:
/// `[A-Za-z0-9-]{8,64}`.
pub fn is_transfer_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether `period` is a period as the wire contract allows: `YYYY-MM`
/// (01 to 12), `YYYY-Qn` (1 to 4) or `YYYY`.
pub fn is_period(period: &str) -> bool {
    let b = period.as_bytes();
    let year = |y: &[u8]| y.len() == 4 && y.iter().all(u8::is_ascii_digit);
    match b.len() {
        4 => year(b),
        7 if b[4] == b'-' && b[5] == b'Q' => year(&b[..4]) && (b'1'..=b'4').contains(&b[6]),
        7 if b[4] == b'-' => {
            year(&b[..4])
                && b[5..].iter().all(u8::is_ascii_digit)
                && matches!((b[5] - b'0') * 10 + (b[6] - b'0'), 1..=12)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn la_codes() {
        for good in ["E09000002", "a", &"A".repeat(16)] {
            assert!(is_la_code(good), "{good}");
        }
        for bad in ["", "../etc", "E09 000002", "E09000002\n", &"A".repeat(17)] {
            assert!(!is_la_code(bad), "{bad}");
        }
    }

    #[test]
    fn report_names() {
        for good in ["a", "referrals-monthly", "0-x", &"a".repeat(64)] {
            assert!(is_report_name(good), "{good}");
        }
        for bad in ["", "-a", "A", "a_b", "a b", "a/b", &"a".repeat(65)] {
            assert!(!is_report_name(bad), "{bad}");
        }
    }

    #[test]
    fn provider_ids() {
        for good in ["provider.test", "a", "a-b.c0.example"] {
            assert!(is_provider_id(good), "{good}");
        }
        for bad in [
            "", ".", "..", "../x", "a..b", ".a", "a.", "*.test", "a/b", "-a.test", "a_b",
        ] {
            assert!(!is_provider_id(bad), "{bad}");
        }
    }

    #[test]
    fn transfer_ids() {
        for good in ["abcdEF12", "a-b-c-d-e", "abcdEFG-12", &"a".repeat(64)] {
            assert!(is_transfer_id(good), "{good}");
        }
        for bad in [
            "short",
            "",
            "has space1",
            "abc/defgh",
            "abc.defgh",
            "a_b_c_d_e",
            "../../etc",
            &"a".repeat(65),
        ] {
            assert!(!is_transfer_id(bad), "{bad}");
        }
    }

    #[test]
    fn periods() {
        for good in [
            "2012", "2012-10", "2012-01", "2012-12", "2012-Q1", "2012-Q4",
        ] {
            assert!(is_period(good), "{good}");
        }
        for bad in [
            "",
            "12",
            "2012-13",
            "2012-00",
            "2012-Q0",
            "2012-Q5",
            "2012-1",
            "2012/10",
            "../..",
            "2012-10x",
            "２０１２",
        ] {
            assert!(!is_period(bad), "{bad}");
        }
    }
}
