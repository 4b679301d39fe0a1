//! What expires on the provider's side, for `status`, `plan` and the
//! daemon's warnings: agreements, the provider's own certificate, and the
//! endpoints' certificates it has seen. The thresholds and the once-a-day
//! rule are [`crate::common::expiry`]'s; this adds the provider's facts and
//! the one question only the schedule answers: which run is the first the
//! gate will refuse because an agreement has expired.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::common::expiry::{self, Expiring, What};
use crate::config::provider::ProviderConfig;
use crate::cron::Schedule;
use crate::provider::store::{PeerCertificate, Store, StoreError};

/// The first run of `schedule` after `after` that the gate refuses because
/// an agreement whose last covered day is `expires_on` has expired. The
/// gate reads `expires_on` as inclusive, on London dates
/// ([`crate::provider::gate::agreement_standing`]): a run on that day is
/// still allowed, one from the next London midnight is not.
pub fn first_refused_run(
    schedule: &Schedule,
    expires_on: NaiveDate,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let ends = expiry::agreement_ends(expires_on);
    // `next_after` is strictly after: a run at the very moment it ends counts.
    schedule.next_after(after.max(ends - Duration::seconds(1)))
}

/// Everything tracked that expires: agreements (current, not revoked,
/// with an expiry), the provider's own certificate and the endpoints'
/// certificates seen.
pub fn tracked(config: &ProviderConfig, store: &Store) -> Result<Vec<Expiring>, StoreError> {
    let mut items: Vec<Expiring> = store
        .agreement_expiries()?
        .into_iter()
        .map(|(la, last_day)| agreement(la, last_day))
        .collect();
    items.extend(crate::provider::metrics::own_certificate(config));
    items.extend(store.peer_certificates()?.iter().map(peer));
    Ok(items)
}

/// `la`'s agreement whose last covered day is `last_day`, as an expiring
/// thing: it ends at the start of the next London day.
pub fn agreement(la: String, last_day: NaiveDate) -> Expiring {
    Expiring {
        what: What::Agreement,
        role: "agreement".into(),
        subject: la,
        ends: expiry::agreement_ends(last_day),
    }
}

/// A peer's certificate as last seen, as an expiring thing.
pub fn peer(certificate: &PeerCertificate) -> Expiring {
    Expiring {
        what: What::Certificate,
        role: certificate.role.clone(),
        subject: certificate.subject.clone(),
        ends: certificate.not_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::time::london_date;
    use crate::provider::gate::{AgreementFacts, Reason, agreement_standing};

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    /// The run found is the first the gate itself refuses, and the run
    /// before it is one the gate allows.
    #[test]
    fn the_first_refused_run_is_the_gates_own() {
        let monthly: Schedule = "0 6 2 * *".parse().expect("schedule");
        let now = at("2026-11-30T12:00:00Z");
        let cases = [
            // Expires the day before a run: that run is refused.
            ("2026-12-01", "2026-12-02T06:00:00Z"),
            // Expires on a run's day: that run is still allowed.
            ("2026-12-02", "2027-01-02T06:00:00Z"),
            // In summer time: 06:00 London is 05:00 UTC.
            ("2027-07-01", "2027-07-02T05:00:00Z"),
        ];
        for (expires, want) in cases {
            let run = first_refused_run(&monthly, date(expires), now).expect("a run");
            assert_eq!(run, at(want), "{expires}");
            let facts = AgreementFacts {
                signed_on: date("2020-01-01"),
                expires_on: Some(date(expires)),
                revoked: false,
            };
            let refused = agreement_standing(Some(&facts), london_date(run)).map(|f| f.reason);
            assert_eq!(refused, Some(Reason::AgreementExpired), "{expires}");
            let before = monthly.runs_between(now, run - Duration::seconds(1)).last();
            if let Some(before) = before {
                assert_eq!(agreement_standing(Some(&facts), london_date(before)), None);
            }
        }
    }

    /// An agreement that has already expired makes the next run refused.
    #[test]
    fn an_expired_agreement_refuses_the_next_run() {
        let daily: Schedule = "30 7 * * *".parse().expect("schedule");
        let now = at("2026-11-30T12:00:00Z");
        let run = first_refused_run(&daily, date("2026-11-01"), now).expect("a run");
        assert_eq!(run, at("2026-12-01T07:30:00Z"));
    }

    /// A run at the very London midnight the agreement ends is refused.
    #[test]
    fn a_run_at_the_moment_it_ends_is_refused() {
        let midnight: Schedule = "0 0 * * *".parse().expect("schedule");
        let run = first_refused_run(&midnight, date("2026-12-10"), at("2026-11-30T12:00:00Z"))
            .expect("a run");
        assert_eq!(run, at("2026-12-11T00:00:00Z"));
    }
}
