//! The release ledger's rows (R11): every release to an LA, written in the
//! transaction that records its delivery as spooled, and the figures each LA
//! knows from elsewhere. Rounded figures only: a release row holds the
//! [`ReleaseTable`] as JSON, and nothing else this module writes holds a
//! count.
//!
//! # Tamper evidence
//!
//! Every row is covered by the audit chain ([`crate::common::audit`]): the
//! transaction that writes a row (or removes a known figure, or sets a
//! release's delivery time) appends an audit entry holding the SHA-256 of the
//! row's canonical form ([`row_digest`]: the columns, in a fixed order, as
//! JSON, read back from the database). [`Store::verify_ledger`] recomputes
//! the chain and then every row's digest: a row changed, deleted, added or
//! un-removed outside mishare no longer matches its entry, or has none, or an
//! entry has no row. The ledger is then **unverified** for the LAs concerned
//! (for every LA if the chain itself is broken), and the pipeline spools
//! nothing for them ([`LedgerCheck::refusal`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Store, StoreError};
use crate::common::audit::{self, Break, Kind, Verification};
use crate::common::db::{DbError, Optional, time_column};
use crate::common::encoding::hex;
use crate::common::time::timestamp;
use crate::provider::ledger::{Known, KnownPeriod, KnownValue, ReleaseTable, Released};
use crate::reference::LA_CODE;
use crate::sanitiser::{Classification, Finding, Measure};

/// The columns of a release row its digest covers: all but `delivered_at`,
/// which is set later and covered by its own entry.
const RELEASE_COLUMNS: &str = "id, delivery_id, run_id, report, transfer_id, la_code, measure, \
     view, period_range, dimensions, filters, classification, figures, plaintext_sha256, \
     spooled_at";

/// The columns of a release's delivery time.
const DELIVERED_COLUMNS: &str = "id, delivered_at";

/// The columns of a known figure its digest covers: all but the removal.
const KNOWN_COLUMNS: &str = "id, la_code, measure, period, categories, value_lo, value_hi, \
     exact, source, added_at, added_by";

/// The columns of a known figure's removal.
const REMOVAL_COLUMNS: &str = "id, removed_at, removed_by, remove_reason";

/// What the chain vouches for, of one kind: row id → (LA, digest).
type Vouched = BTreeMap<i64, (Option<String>, String)>;

/// One ledger table as [`Store::verify_ledger`] checks it: each row is
/// vouched for by an entry of `added` (its fixed columns), and once its
/// `later_set` column is set (delivered, removed) by an entry of `later`.
struct LedgerRows {
    table: &'static str,
    /// In messages: "release", "known figure".
    noun: &'static str,
    later_set: &'static str,
    added: Kind,
    added_columns: &'static str,
    later: Kind,
    later_columns: &'static str,
    /// What is wrong, after "{noun} {id}": the later step set with no
    /// entry, cleared after its entry, and changed since its entry.
    later_unvouched: &'static str,
    later_undone: &'static str,
    later_changed: &'static str,
}

const RELEASE_ROWS: LedgerRows = LedgerRows {
    table: "releases",
    noun: "release",
    later_set: "delivered_at",
    added: Kind::LedgerRelease,
    added_columns: RELEASE_COLUMNS,
    later: Kind::LedgerReleaseDelivered,
    later_columns: DELIVERED_COLUMNS,
    later_unvouched: "'s delivery time has no audit entry",
    later_undone: "'s delivery time was cleared outside mishare",
    later_changed: "'s delivery time no longer matches its audit entry",
};

const KNOWN_ROWS: LedgerRows = LedgerRows {
    table: "known_figures",
    noun: "known figure",
    later_set: "removed_at",
    added: Kind::KnownAdded,
    added_columns: KNOWN_COLUMNS,
    later: Kind::KnownRemoved,
    later_columns: REMOVAL_COLUMNS,
    later_unvouched: " was marked removed outside mishare",
    later_undone: " was removed, and restored outside mishare",
    later_changed: "'s removal no longer matches its audit entry",
};

/// Checks every row of `rows.table` against the entries in `vouched`,
/// taking the entries it matches (what is left was deleted from the
/// ledger); returns how many rows there are. One query reads the table
/// once, in id order, with every column either digest covers.
fn check_rows(
    conn: &Connection,
    rows: &LedgerRows,
    vouched: &mut BTreeMap<&'static str, Vouched>,
    problems: &mut Vec<LedgerProblem>,
) -> Result<usize, StoreError> {
    let (noun, table) = (rows.noun, rows.table);
    let added: Vec<&str> = column_names(rows.added_columns);
    let later: Vec<&str> = column_names(rows.later_columns);
    // The query's columns, each once (the added ones first, `id` among
    // them), and where each digest's columns are in it.
    let mut columns: Vec<&str> = Vec::new();
    let mut place = |name: &'static str| match columns.iter().position(|c| *c == name) {
        Some(i) => i,
        None => {
            columns.push(name);
            columns.len() - 1
        }
    };
    let added_at: Vec<usize> = added.iter().map(|n| place(n)).collect();
    let later_at: Vec<usize> = later.iter().map(|n| place(n)).collect();
    let (la_at, done_at) = (columns.len(), columns.len() + 1);
    let mut stmt = conn.prepare(&format!(
        "SELECT {}, la_code, {} IS NOT NULL FROM {table} ORDER BY id",
        columns.join(", "),
        rows.later_set
    ))?;
    let mut found = stmt.query([])?;
    let mut take = |kind: Kind, id: i64| vouched.get_mut(kind.as_str()).and_then(|m| m.remove(&id));
    let mut n = 0;
    while let Some(r) = found.next()? {
        n += 1;
        let id: i64 = r.get(0)?;
        let later_done: bool = r.get(done_at)?;
        let values = (0..columns.len())
            .map(|i| r.get_ref(i))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // A digest is worked out only when an entry is there to compare.
        let digest = |names: &[&str], at: &[usize]| {
            let picked: Vec<ValueRef<'_>> = at.iter().map(|&i| values[i]).collect();
            digest_of(table, names, &picked)
        };
        // (the LA of the entry, if any; what is wrong)
        let mut wrong: Vec<(Option<String>, String)> = Vec::new();
        match take(rows.added, id) {
            None => wrong.push((
                None,
                format!("{noun} {id} has no audit entry (it was added outside mishare)"),
            )),
            Some((la, want)) if want != digest(&added, &added_at) => wrong.push((
                la,
                format!("{noun} {id} no longer matches its audit entry (it was changed)"),
            )),
            Some(_) => {}
        }
        match (take(rows.later, id), later_done) {
            (None, false) => {}
            (None, true) => wrong.push((None, format!("{noun} {id}{}", rows.later_unvouched))),
            (Some((la, _)), false) => wrong.push((la, format!("{noun} {id}{}", rows.later_undone))),
            (Some((la, want)), true) if want != digest(&later, &later_at) => {
                wrong.push((la, format!("{noun} {id}{}", rows.later_changed)));
            }
            (Some(_), true) => {}
        }
        if wrong.is_empty() {
            continue;
        }
        let row_la = match r.get_ref(la_at)? {
            ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        };
        for (entry_la, message) in wrong {
            let mut las: Vec<String> = entry_la.into_iter().chain(row_la.clone()).collect();
            las.dedup();
            problems.push(LedgerProblem { las, message });
        }
    }
    Ok(n)
}

/// The names in a list of columns.
fn column_names(columns: &str) -> Vec<&str> {
    columns.split(',').map(str::trim).collect()
}

/// The SHA-256 of row `id` of `table` over `columns`, or `None` if there is
/// no such row ([`digest_of`]).
fn row_digest(
    conn: &Connection,
    table: &'static str,
    columns: &'static str,
    id: i64,
) -> Result<Option<String>, StoreError> {
    let names = column_names(columns);
    let sql = format!("SELECT {columns} FROM {table} WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut found = stmt.query([id])?;
    let Some(r) = found.next()? else {
        return Ok(None);
    };
    let values = (0..names.len())
        .map(|i| r.get_ref(i))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(digest_of(table, &names, &values)))
}

/// The SHA-256 of a row's canonical form: the JSON object
/// `{"row": [[column, value], ...], "table": table}`, columns in the order
/// given, each value as SQLite holds it (a number, text, null, a real as
/// `{"real": text}`, a blob as `{"blob": hex}`), so a value stored with
/// another type is a different row. Text that is not UTF-8 (mishare never
/// writes it) is `{"text_bytes": hex}`: it cannot match a row mishare
/// wrote. Lower-case hex. Serialised straight into the hash.
fn digest_of(table: &str, names: &[&str], values: &[ValueRef<'_>]) -> String {
    struct Column<'a>(ValueRef<'a>);
    impl Serialize for Column<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let tagged = |s: S, tag: &str, v: &str| {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(tag, v)?;
                m.end()
            };
            match self.0 {
                ValueRef::Null => s.serialize_unit(),
                ValueRef::Integer(i) => s.serialize_i64(i),
                ValueRef::Real(f) => tagged(s, "real", &f.to_string()),
                ValueRef::Text(t) => match std::str::from_utf8(t) {
                    Ok(t) => s.serialize_str(t),
                    Err(_) => tagged(s, "text_bytes", &hex(t)),
                },
                ValueRef::Blob(b) => tagged(s, "blob", &hex(b)),
            }
        }
    }
    struct Row<'a>(&'a [&'a str], &'a [ValueRef<'a>]);
    impl Serialize for Row<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for (name, value) in self.0.iter().zip(self.1) {
                seq.serialize_element(&(name, Column(*value)))?;
            }
            seq.end()
        }
    }
    let mut h = Sha256::new();
    let mut out = serde_json::Serializer::new(&mut h);
    let written = (|| {
        let mut m = out.serialize_map(Some(2))?;
        m.serialize_entry("row", &Row(names, values))?;
        m.serialize_entry("table", table)?;
        SerializeMap::end(m)
    })();
    // Text keys and a writer that cannot fail: nothing here can.
    written.expect("a row serialises into its hash");
    hex(&h.finalize())
}

/// A release about to be recorded with its delivery.
#[derive(Debug, Clone, Copy)]
pub struct NewRelease<'a> {
    /// What the LA is sent, rounded.
    pub table: &'a ReleaseTable,
    /// The SHA-256 of the plaintext the LA will decrypt.
    pub plaintext_sha256: &'a [u8; 32],
    /// The audit's findings that did not block (warnings and notes), for
    /// the audit log.
    pub findings: &'a [Finding],
}

/// A release as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRow {
    pub id: i64,
    pub delivery_id: i64,
    pub run_id: i64,
    pub report: String,
    pub transfer_id: String,
    pub la: String,
    pub classification: Classification,
    pub table: ReleaseTable,
    /// Lower-case hex.
    pub plaintext_sha256: String,
    pub spooled_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A release as the audit reads it.
impl From<ReleaseRow> for Released {
    fn from(row: ReleaseRow) -> Self {
        Self {
            id: row.id,
            table: row.table,
        }
    }
}

impl ReleaseRow {
    /// The dimensions laid out, rows first (`payment_group × period`).
    pub fn dimensions(&self) -> String {
        std::iter::once(self.table.rows.dimension.as_str())
            .chain(self.table.cols.as_ref().map(|c| c.dimension.as_str()))
            .collect::<Vec<_>>()
            .join(" × ")
    }

    /// As JSON, for `ledger list` and `ledger show`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "la": self.la,
            "report": self.report,
            "run": self.run_id,
            "delivery": self.delivery_id,
            "transfer_id": self.transfer_id,
            "measure": self.table.measure,
            "view": self.table.view,
            "period": self.table.range.to_string(),
            "dimensions": std::iter::once(&self.table.rows.dimension)
                .chain(self.table.cols.as_ref().map(|c| &c.dimension))
                .collect::<Vec<_>>(),
            "filters": self.table.fixed.iter()
                .map(|(d, c)| (d.clone(), json!(c)))
                .collect::<serde_json::Map<_, _>>(),
            "classification": self.classification.as_str(),
            "table": self.table,
            "plaintext_sha256": self.plaintext_sha256,
            "spooled_at": timestamp(self.spooled_at),
            "delivered_at": self.delivered_at.map(timestamp),
        })
    }
}

/// A known figure as the ledger holds it, with its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRow {
    pub known: Known,
    pub la: String,
    pub added_at: DateTime<Utc>,
    pub added_by: String,
    /// When, by whom and why it was removed.
    pub removed: Option<(DateTime<Utc>, String, String)>,
}

impl KnownRow {
    /// As JSON, for `known list`.
    pub fn to_json(&self) -> serde_json::Value {
        let k = &self.known;
        json!({
            "id": k.id,
            "la": self.la,
            "measure": k.measure,
            "period": k.period.to_string(),
            "categories": k.fixed.iter()
                .filter(|(d, _)| d != LA_CODE)
                .map(|(d, c)| (d.clone(), json!(c)))
                .collect::<serde_json::Map<_, _>>(),
            "value": match k.value {
                KnownValue::Exact(v) => json!(v),
                KnownValue::Range(lo, hi) => json!({ "lo": lo, "hi": hi }),
            },
            "source": k.source,
            "added_at": timestamp(self.added_at),
            "added_by": self.added_by,
            "removed": self.removed.as_ref().map(|(at, by, reason)| json!({
                "at": timestamp(*at), "by": by, "reason": reason,
            })),
        })
    }
}

/// One way the ledger fails to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerProblem {
    /// The LAs whose audit it undermines (from the audit entry, and from
    /// the row if that names another).
    pub las: Vec<String>,
    pub message: String,
}

/// What [`Store::verify_ledger`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCheck {
    /// The audit chain's own break, if any: then nothing in the ledger can
    /// be vouched for.
    pub chain: Option<Break>,
    /// Audit entries in an intact chain.
    pub entries: i64,
    pub releases: usize,
    pub known: usize,
    /// Rows that do not match their entries, in row order.
    pub problems: Vec<LedgerProblem>,
}

impl LedgerCheck {
    /// Whether the chain and every ledger row verify.
    pub fn is_intact(&self) -> bool {
        self.chain.is_none() && self.problems.is_empty()
    }

    /// Why nothing may be spooled for `la`, if the ledger cannot be
    /// trusted for it.
    pub fn refusal(&self, la: &str) -> Option<String> {
        if let Some(b) = &self.chain {
            return Some(format!(
                "the ledger cannot be verified: {b}; nothing is spooled until `mishare audit \
                 verify` passes"
            ));
        }
        let mine: Vec<&str> = (self.problems.iter())
            .filter(|p| p.las.iter().any(|l| l == la))
            .map(|p| p.message.as_str())
            .collect();
        (!mine.is_empty()).then(|| {
            format!(
                "the ledger for {la} does not verify against the audit chain: {}; nothing is \
                 spooled for {la} until `mishare audit verify` passes",
                mine.join("; ")
            )
        })
    }
}

/// Why a known figure or a ledger command was refused by the store.
fn no_such(what: &str, id: i64) -> StoreError {
    StoreError::Db(DbError::corrupt(
        "ledger id",
        format!("there is no {what} {id}"),
    ))
}

impl Store {
    /// Inserts the release row of delivery `delivery_id` and its audit
    /// entry, inside the caller's transaction (the one recording the
    /// delivery as spooled).
    pub(super) fn insert_release(
        tx: &rusqlite::Transaction<'_>,
        delivery_id: i64,
        to: &super::deliveries::Addressed<'_>,
        transfer_id: &str,
        release: &NewRelease<'_>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let t = release.table;
        let dimensions: Vec<&str> = std::iter::once(t.rows.dimension.as_str())
            .chain(t.cols.as_ref().map(|c| c.dimension.as_str()))
            .collect();
        let figures = serde_json::to_string(t)
            .map_err(|e| StoreError::Db(DbError::corrupt("release record", e.to_string())))?;
        tx.execute(
            "INSERT INTO releases (delivery_id, run_id, report, transfer_id, la_code, measure,
                 view, period_range, dimensions, filters, classification, figures,
                 plaintext_sha256, spooled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                delivery_id,
                to.run_id,
                to.report,
                transfer_id,
                to.la,
                t.measure.as_str(),
                t.view.as_str(),
                t.range.to_string(),
                json!(dimensions).to_string(),
                json!(t.fixed).to_string(),
                to.classification.as_str(),
                figures,
                hex(release.plaintext_sha256),
                timestamp(now),
            ],
        )?;
        let id = tx.last_insert_rowid();
        let digest = row_digest(tx, "releases", RELEASE_COLUMNS, id)?
            .ok_or_else(|| no_such("release", id))?;
        audit::append(
            tx,
            now,
            Kind::LedgerRelease,
            actor,
            Some(to.la),
            &json!({
                "release": id,
                "delivery": delivery_id,
                "run": to.run_id,
                "report": to.report,
                "row_sha256": digest,
                "findings": release.findings,
            }),
        )?;
        Ok(id)
    }

    /// Sets the delivery time of delivery `delivery_id`'s release, with its
    /// audit entry, inside the caller's transaction (the one storing the
    /// receipt). A delivery with no release (none made before the ledger)
    /// is left alone.
    pub(super) fn release_delivered(
        tx: &rusqlite::Transaction<'_>,
        delivery_id: i64,
        la: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id: Option<i64> = tx
            .query_row(
                "SELECT id FROM releases WHERE delivery_id = ?1 AND delivered_at IS NULL",
                [delivery_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else {
            return Ok(());
        };
        tx.execute(
            "UPDATE releases SET delivered_at = ?2 WHERE id = ?1",
            params![id, timestamp(now)],
        )?;
        let digest = row_digest(tx, "releases", DELIVERED_COLUMNS, id)?
            .ok_or_else(|| no_such("release", id))?;
        audit::append(
            tx,
            now,
            Kind::LedgerReleaseDelivered,
            actor,
            Some(la),
            &json!({ "release": id, "delivery": delivery_id, "row_sha256": digest }),
        )?;
        Ok(())
    }

    /// Records that the ledger audit withheld `la`'s file of run `run_id`:
    /// the run remembers it (a run finished after a restart does not try
    /// again) and the audit log holds the findings.
    #[allow(
        clippy::too_many_arguments,
        reason = "every field is recorded; a struct would only rename them"
    )]
    pub fn record_audit_refusal(
        &mut self,
        run_id: i64,
        report: &str,
        la: &str,
        blocking: &[Finding],
        findings: &[Finding],
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut codes: Vec<&str> = Vec::new();
        for f in blocking {
            if !codes.contains(&f.code.as_str()) {
                codes.push(f.code.as_str());
            }
        }
        let tx = self.write()?;
        tx.execute(
            "INSERT OR IGNORE INTO run_refusals (run_id, la_code, reason) VALUES (?1, ?2, ?3)",
            params![run_id, la, codes.join(",")],
        )?;
        audit::append(
            &tx,
            now,
            Kind::LedgerAuditBlocked,
            actor,
            Some(la),
            &json!({ "run": run_id, "report": report, "codes": codes, "findings": findings }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Registers a known figure (checked by [`Known::new`] already) and
    /// audits it. Returns it with its id.
    pub fn add_known(
        &mut self,
        known: &Known,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<KnownRow, StoreError> {
        let la = (known.fixed.iter())
            .find(|(d, _)| d == LA_CODE)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| StoreError::Db(DbError::corrupt("known figure", "no la_code")))?;
        let (lo, hi) = known.value.bounds();
        let (lo, hi) = (
            i64::try_from(lo).map_err(|_| StoreError::KnownTooLarge(lo))?,
            i64::try_from(hi).map_err(|_| StoreError::KnownTooLarge(hi))?,
        );
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO known_figures (la_code, measure, period, categories, value_lo, value_hi,
                 exact, source, added_at, added_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                la,
                known.measure.as_str(),
                known.period.to_string(),
                json!(known.fixed).to_string(),
                lo,
                hi,
                matches!(known.value, KnownValue::Exact(_)),
                known.source,
                timestamp(now),
                actor,
            ],
        )?;
        let id = tx.last_insert_rowid();
        let digest = row_digest(&tx, "known_figures", KNOWN_COLUMNS, id)?
            .ok_or_else(|| no_such("known figure", id))?;
        audit::append(
            &tx,
            now,
            Kind::KnownAdded,
            actor,
            Some(&la),
            &json!({ "known": id, "row_sha256": digest }),
        )?;
        tx.commit()?;
        self.known(id)
    }

    /// Removes known figure `id` (it is kept, marked removed) and audits it.
    pub fn remove_known(
        &mut self,
        id: i64,
        reason: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<KnownRow, StoreError> {
        if reason.trim().is_empty() {
            return Err(StoreError::NoReason);
        }
        let row = self.known(id)?;
        if let Some((at, by, _)) = &row.removed {
            return Err(StoreError::KnownAlreadyRemoved {
                id,
                at: timestamp(*at),
                by: by.clone(),
            });
        }
        let tx = self.write()?;
        tx.execute(
            "UPDATE known_figures SET removed_at = ?2, removed_by = ?3, remove_reason = ?4
             WHERE id = ?1",
            params![id, timestamp(now), actor, reason],
        )?;
        let digest = row_digest(&tx, "known_figures", REMOVAL_COLUMNS, id)?
            .ok_or_else(|| no_such("known figure", id))?;
        audit::append(
            &tx,
            now,
            Kind::KnownRemoved,
            actor,
            Some(&row.la),
            &json!({ "known": id, "reason": reason, "row_sha256": digest }),
        )?;
        tx.commit()?;
        self.known(id)
    }

    /// Known figure `id`.
    pub fn known(&self, id: i64) -> Result<KnownRow, StoreError> {
        self.known_where("WHERE id = ?1", [id])?
            .pop()
            .ok_or(StoreError::UnknownKnown(id))
    }

    /// Known figures, of `la` only if given, removed ones too if `removed`,
    /// in id order.
    pub fn known_figures(
        &self,
        la: Option<&str>,
        removed: bool,
    ) -> Result<Vec<KnownRow>, StoreError> {
        // One statement each way: `?1 IS NULL OR la_code = ?1` would
        // read the whole table, not use the index on la_code.
        match la {
            Some(la) => self.known_where(
                "WHERE la_code = ?1 AND (?2 OR removed_at IS NULL) ORDER BY id",
                params![la, removed],
            ),
            None => self.known_where("WHERE ?1 OR removed_at IS NULL ORDER BY id", [removed]),
        }
    }

    fn known_where(
        &self,
        clause: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<KnownRow>, StoreError> {
        let sql = format!(
            "SELECT id, la_code, measure, period, categories, value_lo, value_hi, exact, source,
                 added_at, added_by, removed_at, removed_by, remove_reason
             FROM known_figures {clause}"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, bool>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, String>(9)?,
                r.get::<_, String>(10)?,
                (
                    r.get::<_, Option<String>>(11)?,
                    r.get::<_, Option<String>>(12)?,
                    r.get::<_, Option<String>>(13)?,
                ),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, la, measure, period, categories, lo, hi, exact, source, at, by, removal) =
                row?;
            let corrupt = |what: &'static str, v: &str| {
                StoreError::Db(DbError::corrupt(what, format!("known figure {id}: {v}")))
            };
            let measure: Measure =
                serde_json::from_value(json!(measure)).map_err(|_| corrupt("measure", &measure))?;
            let period: KnownPeriod = period.parse().map_err(|_| corrupt("period", &period))?;
            let fixed: Vec<(String, String)> = serde_json::from_str(&categories)
                .map_err(|_| corrupt("categories", &categories))?;
            let (lo, hi) = (
                u64::try_from(lo).map_err(|_| corrupt("value", "negative"))?,
                u64::try_from(hi).map_err(|_| corrupt("value", "negative"))?,
            );
            let value = if exact {
                KnownValue::Exact(lo)
            } else {
                KnownValue::Range(lo, hi)
            };
            let removed = match removal {
                (Some(at), Some(by), Some(reason)) => Some((time_column(&at)?, by, reason)),
                _ => None,
            };
            out.push(KnownRow {
                known: Known {
                    id,
                    measure,
                    period,
                    fixed,
                    value,
                    source,
                },
                la,
                added_at: time_column(&at)?,
                added_by: by,
                removed,
            });
        }
        Ok(out)
    }

    /// Release `id`.
    pub fn release(&self, id: i64) -> Result<ReleaseRow, StoreError> {
        self.releases_where("WHERE id = ?1", [id])?
            .pop()
            .ok_or(StoreError::UnknownRelease(id))
    }

    /// Releases, to `la` only if given, in id order.
    pub fn releases(&self, la: Option<&str>) -> Result<Vec<ReleaseRow>, StoreError> {
        // As in `known_figures`: the index on la_code, not the whole table.
        match la {
            Some(la) => self.releases_where("WHERE la_code = ?1 ORDER BY id", [la]),
            None => self.releases_where("ORDER BY id", []),
        }
    }

    fn releases_where(
        &self,
        clause: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<ReleaseRow>, StoreError> {
        let sql = format!(
            "SELECT id, delivery_id, run_id, report, transfer_id, la_code, classification,
                 figures, plaintext_sha256, spooled_at, delivered_at
             FROM releases {clause}"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ),
                (
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let ((id, delivery_id, run_id, report, transfer_id, la), rest) = row?;
            let (classification, figures, plaintext_sha256, spooled_at, delivered_at) = rest;
            let table: ReleaseTable = serde_json::from_str(&figures).map_err(|e| {
                StoreError::Db(DbError::corrupt(
                    "release record",
                    format!("release {id}: {e}"),
                ))
            })?;
            out.push(ReleaseRow {
                id,
                delivery_id,
                run_id,
                report,
                transfer_id,
                la,
                classification: match classification.as_str() {
                    "internal" => Classification::Internal,
                    "published" => Classification::Published,
                    other => return Err(DbError::corrupt("classification", other).into()),
                },
                table,
                plaintext_sha256,
                spooled_at: time_column(&spooled_at)?,
                delivered_at: delivered_at.as_deref().map(time_column).transpose()?,
            });
        }
        Ok(out)
    }

    /// Recomputes the audit chain, then every ledger row's digest against
    /// the entry that recorded it ([module documentation](self)).
    pub fn verify_ledger(&self) -> Result<LedgerCheck, StoreError> {
        let conn = self.conn();
        let mut check = LedgerCheck {
            chain: None,
            entries: 0,
            releases: 0,
            known: 0,
            problems: Vec::new(),
        };
        match audit::verify(conn)? {
            Verification::Broken(b) => {
                check.chain = Some(b);
                return Ok(check);
            }
            Verification::Intact { entries, .. } => check.entries = entries,
        }
        let mut vouched: BTreeMap<&'static str, Vouched> = BTreeMap::new();
        let kinds = [
            (Kind::LedgerRelease, "release"),
            (Kind::LedgerReleaseDelivered, "release"),
            (Kind::KnownAdded, "known"),
            (Kind::KnownRemoved, "known"),
        ];
        let mut stmt = conn.prepare(
            "SELECT seq, kind, la, detail FROM audit_log WHERE kind IN (?1, ?2, ?3, ?4)
             ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![
            kinds[0].0.as_str(),
            kinds[1].0.as_str(),
            kinds[2].0.as_str(),
            kinds[3].0.as_str()
        ])?;
        while let Some(row) = rows.next()? {
            let (seq, kind, la, detail): (i64, String, Option<String>, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            let Some(&(k, key)) = kinds.iter().find(|(k, _)| k.as_str() == kind) else {
                continue;
            };
            let detail: serde_json::Value = serde_json::from_str(&detail).unwrap_or_default();
            let (Some(id), Some(digest)) = (detail[key].as_i64(), detail["row_sha256"].as_str())
            else {
                check.problems.push(LedgerProblem {
                    las: la.into_iter().collect(),
                    message: format!("audit entry {seq} ({kind}) does not name its row"),
                });
                continue;
            };
            let entry = vouched.entry(k.as_str()).or_default();
            if entry.insert(id, (la.clone(), digest.to_string())).is_some() {
                check.problems.push(LedgerProblem {
                    las: la.into_iter().collect(),
                    message: format!("audit entry {seq} records {key} {id} a second time"),
                });
            }
        }
        drop(rows);
        drop(stmt);

        for rows in [RELEASE_ROWS, KNOWN_ROWS] {
            let n = check_rows(conn, &rows, &mut vouched, &mut check.problems)?;
            match rows.table {
                "releases" => check.releases = n,
                _ => check.known = n,
            }
        }
        for (kind, left) in vouched {
            for (id, (la, _)) in left {
                let what = if kind.starts_with("known") {
                    "known figure"
                } else {
                    "release"
                };
                check.problems.push(LedgerProblem {
                    las: la.into_iter().collect(),
                    message: format!(
                        "{what} {id} is in the audit log ({kind}) but gone from the ledger \
                         (it was deleted)"
                    ),
                });
            }
        }
        Ok(check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical form as it was first written, value by value with
    /// `json!`: the digests in existing audit entries were made with it.
    fn digest_as_first_written(table: &str, names: &[&str], values: &[ValueRef<'_>]) -> String {
        let pairs: Vec<serde_json::Value> = names
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let v = match *value {
                    ValueRef::Null => serde_json::Value::Null,
                    ValueRef::Integer(i) => json!(i),
                    ValueRef::Real(f) => json!({ "real": f.to_string() }),
                    ValueRef::Text(t) => json!(std::str::from_utf8(t).expect("UTF-8")),
                    ValueRef::Blob(b) => json!({ "blob": hex(b) }),
                };
                json!([name, v])
            })
            .collect();
        let canonical = json!({ "table": table, "row": pairs }).to_string();
        hex(&Sha256::digest(canonical.as_bytes()))
    }

    #[test]
    fn the_canonical_form_is_the_one_existing_entries_hold() {
        let figures = r#"{"measure":"referrals","cells":[[20],[140]],"note":"a \"quoted\" é\n"}"#;
        let names = [
            "id", "report", "figures", "size", "share", "blob", "gone", "negative",
        ];
        let values = [
            ValueRef::Integer(7),
            ValueRef::Text(b"referrals-monthly"),
            ValueRef::Text(figures.as_bytes()),
            ValueRef::Integer(i64::MAX),
            ValueRef::Real(0.1),
            ValueRef::Blob(&[0, 1, 0xfe, 0xff]),
            ValueRef::Null,
            ValueRef::Integer(-3),
        ];
        for n in 0..=names.len() {
            assert_eq!(
                digest_of("releases", &names[..n], &values[..n]),
                digest_as_first_written("releases", &names[..n], &values[..n]),
                "{n} columns"
            );
        }
        // Pinned: the form itself must not drift with serde_json either.
        assert_eq!(
            digest_of("releases", &names[..2], &values[..2]),
            hex(&Sha256::digest(
                br#"{"row":[["id",7],["report","referrals-monthly"]],"table":"releases"}"#
            ))
        );
    }

    #[test]
    fn a_value_of_another_type_or_not_utf8_is_another_row() {
        let d = |v: ValueRef<'_>| digest_of("releases", &["report"], &[v]);
        let text = d(ValueRef::Text(b"7"));
        assert_ne!(text, d(ValueRef::Integer(7)));
        assert_ne!(text, d(ValueRef::Blob(b"7")));
        assert_ne!(text, d(ValueRef::Real(7.0)));
        let bad = d(ValueRef::Text(&[0xff, 0x37]));
        assert_ne!(bad, d(ValueRef::Blob(&[0xff, 0x37])));
        assert_ne!(bad, d(ValueRef::Text("\u{fffd}7".as_bytes())));
    }
}
