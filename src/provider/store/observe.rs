//! What the daemon reads to observe itself (the gauges of its metrics, the
//! expiry warnings, its health), and the certificates of peers it has
//! seen. Reads are single statements; none writes an audit entry.

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::params;

use super::{Store, StoreError};
use crate::common::db::{date_column, time_column};
use crate::common::time::timestamp;

/// The outbox at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxSummary {
    /// Deliveries queued, sending or waiting to retry.
    pub undelivered: i64,
    /// When the oldest of them began its age (queued, or retried by hand).
    pub oldest: Option<DateTime<Utc>>,
    /// Dead deliveries.
    pub dead: i64,
}

/// A peer's certificate as last seen: what its expiry is tracked by. (The
/// table also keeps its LA, digest and when it was first and last seen.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// `endpoint`: an LA's endpoint.
    pub role: String,
    /// The DNS name required of it.
    pub subject: String,
    pub not_after: DateTime<Utc>,
}

impl Store {
    /// How many deliveries are undelivered and dead, and the oldest's age.
    pub fn outbox_summary(&self) -> Result<OutboxSummary, StoreError> {
        let (undelivered, oldest, dead) = self.conn().query_row(
            "SELECT
                 (SELECT count(*) FROM deliveries WHERE state IN ('queued', 'sending', 'failed')),
                 (SELECT min(coalesce(age_from, created_at)) FROM deliveries
                     WHERE state IN ('queued', 'sending', 'failed')),
                 (SELECT count(*) FROM deliveries WHERE state = 'dead' AND abandoned_at IS NULL)",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )?;
        Ok(OutboxSummary {
            undelivered,
            oldest: oldest.as_deref().map(time_column).transpose()?,
            dead,
        })
    }

    /// For each report, when the receipt of its latest delivered file was
    /// stored.
    pub fn last_success_per_report(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let mut statement = self.conn().prepare_cached(
            "SELECT d.report, max(r.stored_at) FROM receipts r
                 JOIN deliveries d ON d.id = r.delivery_id GROUP BY d.report ORDER BY d.report",
        )?;
        let rows =
            statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (report, at) = row?;
            out.push((report, time_column(&at)?));
        }
        Ok(out)
    }

    /// Each LA's current agreement that is not revoked and has an expiry:
    /// (LA code, last covered day).
    pub fn agreement_expiries(&self) -> Result<Vec<(String, NaiveDate)>, StoreError> {
        let mut statement = self.conn().prepare_cached(
            "SELECT la_code, expires_on FROM agreements
                 WHERE replaced_at IS NULL AND revoked_at IS NULL AND expires_on IS NOT NULL
                 ORDER BY la_code",
        )?;
        let rows =
            statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (la, expires) = row?;
            out.push((la, date_column(&expires)?));
        }
        Ok(out)
    }

    /// Records that `la`'s endpoint, required to name `subject`, showed a
    /// certificate with this digest and `notAfter`.
    pub fn record_peer_certificate(
        &mut self,
        subject: &str,
        la: &str,
        not_after: DateTime<Utc>,
        sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO peer_certificates
                 (role, subject, la_code, not_after, sha256, first_seen, last_seen)
                 VALUES ('endpoint', ?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (role, subject) DO UPDATE SET
                 la_code = excluded.la_code,
                 not_after = excluded.not_after,
                 first_seen = CASE WHEN sha256 = excluded.sha256 THEN first_seen
                                   ELSE excluded.first_seen END,
                 sha256 = excluded.sha256,
                 last_seen = excluded.last_seen",
            params![subject, la, timestamp(not_after), sha256, timestamp(now)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The peers' certificates seen, by role and subject.
    pub fn peer_certificates(&self) -> Result<Vec<PeerCertificate>, StoreError> {
        let mut statement = self.conn().prepare_cached(
            "SELECT role, subject, not_after FROM peer_certificates ORDER BY role, subject",
        )?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (role, subject, not_after) = row?;
            out.push(PeerCertificate {
                role,
                subject,
                not_after: time_column(&not_after)?,
            });
        }
        Ok(out)
    }

    /// Whether the database can be written now: takes the write lock and
    /// lets it go, changing nothing.
    pub fn probe_write(&mut self) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.rollback()?;
        Ok(())
    }
}
