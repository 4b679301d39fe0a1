//! Expiry warnings, pure: what expires soon (an agreement, a certificate of
//! this process or of a peer it has seen), how urgent it is, and when a
//! daemon should say so in its log. Both programs use it; the times are
//! passed in, so the rules are tested without a clock.
//!
//! Anything expiring within [`WARN_DAYS`] is shown, and again, as urgent,
//! within [`URGENT_DAYS`]. A daemon logs each such thing at most once per
//! Europe/London day ([`DailyWarnings`]), and at once when it becomes more
//! urgent.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::common::time::{london_date, london_midnight, timestamp};

/// Anything expiring within this many days is shown and logged.
pub const WARN_DAYS: i64 = 30;

/// Within this many days it is urgent.
pub const URGENT_DAYS: i64 = 7;

/// How soon something expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// Within [`WARN_DAYS`].
    Soon,
    /// Within [`URGENT_DAYS`].
    Urgent,
    /// Already expired.
    Expired,
}

/// How urgent an expiry at `ends` is at `now`; `None` if it is more than
/// [`WARN_DAYS`] away.
pub fn urgency(ends: DateTime<Utc>, now: DateTime<Utc>) -> Option<Urgency> {
    let left = ends - now;
    if left <= Duration::zero() {
        Some(Urgency::Expired)
    } else if left <= Duration::days(URGENT_DAYS) {
        Some(Urgency::Urgent)
    } else if left <= Duration::days(WARN_DAYS) {
        Some(Urgency::Soon)
    } else {
        None
    }
}

/// The moment an agreement whose last covered day is `expires_on` (London,
/// inclusive, as the gate reads it) stops covering: the start of the next
/// London day.
pub fn agreement_ends(expires_on: NaiveDate) -> DateTime<Utc> {
    let next = expires_on.succ_opt().unwrap_or(expires_on);
    london_midnight(next).unwrap_or_else(|| next.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// A certificate's `notAfter`, from its DER; `None` if it does not parse.
pub fn certificate_not_after(der: &[u8]) -> Option<DateTime<Utc>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

/// A process's own certificate as an expiring thing: its first DNS name
/// and its `notAfter`, with `role` (`provider` or `authority`); `None` if
/// the certificate does not parse.
pub fn own_certificate(identity: &crate::tls::Identity, role: &str) -> Option<Expiring> {
    Some(Expiring {
        what: What::Certificate,
        role: role.into(),
        subject: identity.names().ok()?.into_iter().next()?,
        ends: certificate_not_after(identity.leaf())?,
    })
}

/// What kind of thing expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum What {
    /// An LA's confidentiality agreement.
    Agreement,
    /// A TLS certificate.
    Certificate,
}

/// One thing that expires, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub what: What,
    /// For a certificate, whose it is: this process's own (`provider`,
    /// `authority`) or a peer's (`endpoint`, `provider`); for an agreement,
    /// `agreement`.
    pub role: String,
    /// The LA code (an agreement) or the DNS name (a certificate).
    pub subject: String,
    /// When it stops being valid.
    pub ends: DateTime<Utc>,
}

impl Expiring {
    /// A key that names it apart from everything else tracked.
    pub fn key(&self) -> String {
        format!("{:?}/{}/{}", self.what, self.role, self.subject)
    }

    /// In words, for `status` and the log.
    pub fn describe(&self, urgency: Urgency) -> String {
        match self.what {
            What::Agreement => format!(
                "the agreement with {} {} (it covers up to {})",
                self.subject,
                urgency_phrase(urgency),
                timestamp(self.ends)
            ),
            What::Certificate => format!(
                "the {} certificate of {} {} (not after {})",
                self.role,
                self.subject,
                urgency_phrase(urgency),
                timestamp(self.ends)
            ),
        }
    }
}

fn urgency_phrase(urgency: Urgency) -> &'static str {
    match urgency {
        Urgency::Soon => "expires within 30 days",
        Urgency::Urgent => "expires within 7 days",
        Urgency::Expired => "has expired",
    }
}

/// Those of `items` that expire within [`WARN_DAYS`] of `now` (or have
/// expired), soonest first, with their urgency.
pub fn expiring(items: &[Expiring], now: DateTime<Utc>) -> Vec<(Expiring, Urgency)> {
    let mut soon: Vec<_> = items
        .iter()
        .filter_map(|i| urgency(i.ends, now).map(|u| (i.clone(), u)))
        .collect();
    soon.sort_by_cached_key(|(item, _)| (item.ends, item.key()));
    soon
}

/// Which warnings a daemon has logged, so each thing expiring is logged at
/// most once per London day, and at once when it becomes more urgent.
#[derive(Debug, Default)]
pub struct DailyWarnings {
    logged: HashMap<String, (NaiveDate, Urgency)>,
}

impl DailyWarnings {
    /// Those of `items` to log now: expiring within [`WARN_DAYS`] and not
    /// yet logged today at this urgency. Records them as logged.
    pub fn due(&mut self, items: &[Expiring], now: DateTime<Utc>) -> Vec<(Expiring, Urgency)> {
        let today = london_date(now);
        let mut due = Vec::new();
        for (item, urgency) in expiring(items, now) {
            let key = item.key();
            let again = match self.logged.get(&key) {
                None => true,
                Some((day, was)) => *day != today || urgency > *was,
            };
            if again {
                self.logged.insert(key, (today, urgency));
                due.push((item, urgency));
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn cert(subject: &str, ends: &str) -> Expiring {
        Expiring {
            what: What::Certificate,
            role: "endpoint".into(),
            subject: subject.into(),
            ends: at(ends),
        }
    }

    #[test]
    fn urgency_has_two_thresholds_and_expired() {
        let now = at("2026-11-30T12:00:00Z");
        let cases = [
            ("2027-01-30T12:00:00Z", None),
            ("2026-12-30T12:00:01Z", None),
            ("2026-12-30T12:00:00Z", Some(Urgency::Soon)),
            ("2026-12-07T12:00:01Z", Some(Urgency::Soon)),
            ("2026-12-07T12:00:00Z", Some(Urgency::Urgent)),
            ("2026-11-30T12:00:01Z", Some(Urgency::Urgent)),
            ("2026-11-30T12:00:00Z", Some(Urgency::Expired)),
            ("2020-01-01T00:00:00Z", Some(Urgency::Expired)),
        ];
        for (ends, want) in cases {
            assert_eq!(urgency(at(ends), now), want, "{ends}");
        }
    }

    /// The gate lets an agreement cover its `expires_on` day (London), so it
    /// ends at the next London midnight: 00:00 GMT in winter, 23:00 UTC the
    /// evening before in summer.
    #[test]
    fn an_agreement_ends_at_the_london_midnight_after_its_last_day() {
        let winter = NaiveDate::from_ymd_opt(2026, 12, 31).expect("date");
        assert_eq!(agreement_ends(winter), at("2027-01-01T00:00:00Z"));
        let summer = NaiveDate::from_ymd_opt(2026, 7, 31).expect("date");
        assert_eq!(agreement_ends(summer), at("2026-07-31T23:00:00Z"));
    }

    #[test]
    fn a_warning_is_logged_once_a_day_and_again_when_it_becomes_urgent() {
        let items = [
            cert("la-a.test", "2026-12-20T12:00:00Z"),
            cert("la-far.test", "2027-06-01T00:00:00Z"),
        ];
        let mut warnings = DailyWarnings::default();
        let first = warnings.due(&items, at("2026-11-30T09:00:00Z"));
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].0.subject, "la-a.test");
        assert_eq!(first[0].1, Urgency::Soon);
        // The same London day: nothing, however often the loop runs.
        for hour in ["09:00:05", "13:00:00", "23:59:59"] {
            let again = warnings.due(&items, at(&format!("2026-11-30T{hour}Z")));
            assert!(again.is_empty(), "{hour}: {again:?}");
        }
        // The next day: once more.
        assert_eq!(warnings.due(&items, at("2026-12-01T00:00:00Z")).len(), 1);
        assert!(warnings.due(&items, at("2026-12-01T10:00:00Z")).is_empty());
        // Logged in the morning of the day it comes within seven days, then
        // at once when it does.
        let morning = warnings.due(&items, at("2026-12-13T09:00:00Z"));
        assert_eq!(morning.len(), 1);
        assert_eq!(morning[0].1, Urgency::Soon);
        let urgent = warnings.due(&items, at("2026-12-13T12:00:01Z"));
        assert_eq!(urgent.len(), 1);
        assert_eq!(urgent[0].1, Urgency::Urgent);
        let later = warnings.due(&items, at("2026-12-13T12:00:02Z"));
        assert!(later.is_empty(), "{later:?}");
    }

    #[test]
    fn expiring_is_soonest_first_and_leaves_out_what_is_far() {
        let items = [
            cert("b.test", "2026-12-20T00:00:00Z"),
            cert("a.test", "2026-12-02T00:00:00Z"),
            cert("far.test", "2028-01-01T00:00:00Z"),
        ];
        let soon = expiring(&items, at("2026-11-30T00:00:00Z"));
        let names: Vec<_> = soon.iter().map(|(i, _)| i.subject.as_str()).collect();
        assert_eq!(names, ["a.test", "b.test"]);
        assert_eq!(soon[0].1, Urgency::Urgent);
    }

    #[test]
    fn a_certificate_that_does_not_parse_has_no_expiry() {
        assert_eq!(certificate_not_after(b"not a certificate"), None);
    }
}
