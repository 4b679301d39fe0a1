//! Suspensions of sharing: for one LA or for all, made by the provider's
//! operator or required by DWP. Each maker lifts only its own.

use std::fmt;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};
use serde_json::json;

use super::{Store, StoreError};
use crate::common::audit::{self, Kind};
use crate::common::db::{DbError, Optional, time_column};
use crate::common::time::timestamp;

/// What a suspension covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every LA.
    All,
    /// One LA, by code.
    La(String),
}

impl Scope {
    /// The LA code, or `None` for all.
    pub fn la(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::La(code) => Some(code),
        }
    }

    /// Whether the scope covers `la`.
    pub fn covers(&self, la: &str) -> bool {
        self.la().is_none_or(|code| code == la)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("sharing with every LA"),
            Scope::La(code) => write!(f, "sharing with {code}"),
        }
    }
}

/// Who made a suspension, and so who may lift it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maker {
    /// The provider's operator (`mishare suspend`, `mishare resume`).
    Provider,
    /// DWP, through the `Directive` service.
    Dwp,
}

impl Maker {
    /// The name stored and shown in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Maker::Provider => "provider",
            Maker::Dwp => "dwp",
        }
    }
}

impl fmt::Display for Maker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Maker::Provider => "the provider",
            Maker::Dwp => "DWP",
        })
    }
}

/// A suspension as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub id: i64,
    pub scope: Scope,
    pub made_by: Maker,
    pub reason: String,
    /// The maker's own reference (a ticket, a letter), if given.
    pub reference: Option<String>,
    pub made_at: DateTime<Utc>,
    /// Who made it: `provider:<user>` or `dwp:<identity>`.
    pub made_actor: String,
    pub lifted_at: Option<DateTime<Utc>>,
    pub lifted_by: Option<String>,
}

impl Suspension {
    /// Whether it is in force.
    pub fn is_active(&self) -> bool {
        self.lifted_at.is_none()
    }

    /// The suspension for the audit log and JSON output.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "scope": self.scope.la().unwrap_or("all"),
            "made_by": self.made_by.as_str(),
            "reason": self.reason,
            "reference": self.reference,
            "made_at": timestamp(self.made_at),
            "made_actor": self.made_actor,
            "lifted_at": self.lifted_at.map(timestamp),
            "lifted_by": self.lifted_by,
        })
    }
}

macro_rules! select_suspensions {
    ($rest:literal) => {
        concat!(
            "SELECT id, la_code, made_by, reason, reference, made_at, made_actor, lifted_at, \
             lifted_by FROM suspensions ",
            $rest
        )
    };
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Result<Suspension, StoreError>> {
    let build = || -> Result<Suspension, StoreError> {
        let made_by: String = r.get(2)?;
        Ok(Suspension {
            id: r.get(0)?,
            scope: r.get::<_, Option<String>>(1)?.map_or(Scope::All, Scope::La),
            made_by: match made_by.as_str() {
                "provider" => Maker::Provider,
                "dwp" => Maker::Dwp,
                _ => return Err(DbError::corrupt("suspension maker", made_by).into()),
            },
            reason: r.get(3)?,
            reference: r.get(4)?,
            made_at: time_column(&r.get::<_, String>(5)?)?,
            made_actor: r.get(6)?,
            lifted_at: r
                .get::<_, Option<String>>(7)?
                .as_deref()
                .map(time_column)
                .transpose()?,
            lifted_by: r.get(8)?,
        })
    };
    Ok(build())
}

fn collect(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Suspension>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, from_row)?;
    rows.map(|r| r?).collect()
}

/// Active suspensions that cover `la` (its own and those for all LAs).
pub(crate) fn covering(conn: &Connection, la: &str) -> Result<Vec<Suspension>, StoreError> {
    collect(
        conn,
        select_suspensions!(
            "WHERE lifted_at IS NULL AND (la_code IS NULL OR la_code = ?1) ORDER BY id"
        ),
        [la],
    )
}

fn by_id(conn: &Connection, id: i64) -> Result<Option<Suspension>, StoreError> {
    conn.query_row(select_suspensions!("WHERE id = ?1"), [id], from_row)
        .optional()?
        .transpose()
}

impl Store {
    /// Suspends sharing for `scope`. Refused if the same maker already has
    /// an active suspension of the same scope.
    pub fn suspend(
        &mut self,
        scope: Scope,
        maker: Maker,
        reason: &str,
        reference: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Suspension, StoreError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(StoreError::NoReason);
        }
        let reference = reference.map(str::trim).filter(|r| !r.is_empty());
        let tx = self.write()?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM suspensions
                 WHERE lifted_at IS NULL AND made_by = ?1 AND la_code IS ?2",
                params![maker.as_str(), scope.la()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Err(StoreError::AlreadySuspended { id, scope, maker });
        }
        tx.execute(
            "INSERT INTO suspensions (la_code, made_by, reason, reference, made_at, made_actor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                scope.la(),
                maker.as_str(),
                reason,
                reference,
                timestamp(now),
                actor
            ],
        )?;
        let id = tx.last_insert_rowid();
        let suspension = by_id(&tx, id)?.ok_or(StoreError::UnknownSuspension { id })?;
        audit::append(
            &tx,
            now,
            Kind::SuspensionMade,
            actor,
            scope.la(),
            &json!({ "suspension": suspension.to_json() }),
        )?;
        tx.commit()?;
        Ok(suspension)
    }

    /// Lifts suspension `id` on behalf of `maker`, which must be the one that
    /// made it.
    pub fn lift(
        &mut self,
        id: i64,
        maker: Maker,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Suspension, StoreError> {
        let tx = self.write()?;
        let suspension = by_id(&tx, id)?.ok_or(StoreError::UnknownSuspension { id })?;
        match (suspension.made_by, maker) {
            (Maker::Dwp, Maker::Provider) => return Err(StoreError::OnlyDwpCanLift { id }),
            (Maker::Provider, Maker::Dwp) => return Err(StoreError::OnlyProviderCanLift { id }),
            _ => {}
        }
        if let (Some(at), Some(by)) = (suspension.lifted_at, &suspension.lifted_by) {
            return Err(StoreError::AlreadyLifted {
                id,
                at: timestamp(at),
                by: by.clone(),
            });
        }
        tx.execute(
            "UPDATE suspensions SET lifted_at = ?1, lifted_by = ?2 WHERE id = ?3",
            params![timestamp(now), actor, id],
        )?;
        let suspension = by_id(&tx, id)?.ok_or(StoreError::UnknownSuspension { id })?;
        audit::append(
            &tx,
            now,
            Kind::SuspensionLifted,
            actor,
            suspension.scope.la(),
            &json!({ "suspension": suspension.to_json() }),
        )?;
        tx.commit()?;
        Ok(suspension)
    }

    /// A suspension DWP requires, arriving through the `Directive` service
    /// from the DWP client identity `identity`.
    pub fn suspend_by_dwp(
        &mut self,
        scope: Scope,
        reason: &str,
        reference: Option<&str>,
        identity: &str,
        now: DateTime<Utc>,
    ) -> Result<Suspension, StoreError> {
        let actor = format!("dwp:{identity}");
        self.suspend(scope, Maker::Dwp, reason, reference, &actor, now)
    }

    /// Lifts a DWP suspension on DWP's direction.
    pub fn lift_by_dwp(
        &mut self,
        id: i64,
        identity: &str,
        now: DateTime<Utc>,
    ) -> Result<Suspension, StoreError> {
        let actor = format!("dwp:{identity}");
        self.lift(id, Maker::Dwp, &actor, now)
    }

    /// The suspension with this id, active or lifted.
    pub fn suspension(&self, id: i64) -> Result<Option<Suspension>, StoreError> {
        by_id(self.conn(), id)
    }

    /// Suspensions in id order: only those in force, or all.
    pub fn suspensions(&self, active_only: bool) -> Result<Vec<Suspension>, StoreError> {
        collect(
            self.conn(),
            select_suspensions!("WHERE ?1 = 0 OR lifted_at IS NULL ORDER BY id"),
            [active_only],
        )
    }

    /// Active suspensions covering `la`.
    pub fn suspensions_covering(&self, la: &str) -> Result<Vec<Suspension>, StoreError> {
        covering(self.conn(), la)
    }

    /// Suspensions covering `la` that were in force at some time since
    /// `since` and have been lifted (those still in force the gate sees for
    /// itself), oldest first. The history is kept, so this holds whether or
    /// not a daemon was running to see them.
    pub fn lifted_suspensions_since(
        &self,
        la: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Suspension>, StoreError> {
        collect(
            self.conn(),
            select_suspensions!(
                "WHERE lifted_at IS NOT NULL AND lifted_at >= ?2
                     AND (la_code IS NULL OR la_code = ?1) ORDER BY id"
            ),
            params![la, timestamp(since)],
        )
    }
}
