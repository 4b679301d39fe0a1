//! The gate: whether a file may go to LA *a* at time *t*.
//!
//! A file may leave only if all of DESIGN.md's four rules hold:
//!
//! 1. an agreement with *a* is on file, signed on or before *t*'s date, not
//!    revoked, and not expired (the expiry date is the last day covered);
//! 2. *a* lies in one of the provider's contract package areas (from the
//!    reference data);
//! 3. *a* is a recipient of the report;
//! 4. no suspension covers *a*, whoever made it.
//!
//! Dates are compared in Europe/London: an agreement that expires on
//! 2013-03-31 allows sharing until 2013-03-31 23:59:59 London time.
//!
//! [`decide`] is the pure rule set. [`Gate`] reads the facts from the
//! database **at every check** and writes every decision, permit or refusal,
//! to the audit log in the same transaction. Because it reads at every check
//! and the database is in WAL mode, a suspension an operator makes with
//! `mishare suspend` is seen by a running daemon at its very next check. It
//! fails closed: if anything goes wrong while deciding, the answer is a
//! refusal with [`Reason::GateError`].
//!
//! # A permit is good only at the moment it is checked
//!
//! [`Gate::authorise`] hands a [`Permit`] to a closure and never returns it.
//! The permit is branded with a lifetime the closure cannot name, so it
//! cannot be stored, returned or sent elsewhere, and it is neither `Clone`
//! nor `Copy`. The steps that send data (starting a transfer, committing it)
//! take a `Permit` by value, so each of them must ask the gate again.
//!
//! Using a permit where it is handed over compiles:
//!
//! ```
//! # fn demo(gate: &mut mishare::provider::gate::Gate<'_>, at: chrono::DateTime<chrono::Utc>) {
//! use mishare::provider::gate::Stage;
//! let started = gate.authorise("E09000002", "referrals-monthly", at, Stage::TransferStart, |permit| {
//!     // The network layer's `start_transfer(permit, …)` takes it here.
//!     permit.la().to_string()
//! });
//! # }
//! ```
//!
//! A permit cannot leave the closure:
//!
//! ```compile_fail
//! # fn demo(gate: &mut mishare::provider::gate::Gate<'_>, at: chrono::DateTime<chrono::Utc>) {
//! use mishare::provider::gate::Stage;
//! let kept = gate.authorise("E09000002", "referrals-monthly", at, Stage::Plan, |permit| permit);
//! # }
//! ```
//!
//! nor be smuggled out through a captured variable:
//!
//! ```compile_fail
//! # fn demo(gate: &mut mishare::provider::gate::Gate<'_>, at: chrono::DateTime<chrono::Utc>) {
//! use mishare::provider::gate::Stage;
//! let mut kept = None;
//! let _ = gate.authorise("E09000002", "referrals-monthly", at, Stage::Plan, |permit| {
//!     kept = Some(permit);
//! });
//! # }
//! ```
//!
//! nor be copied:
//!
//! ```compile_fail
//! # fn demo(gate: &mut mishare::provider::gate::Gate<'_>, at: chrono::DateTime<chrono::Utc>) {
//! use mishare::provider::gate::Stage;
//! let _ = gate.authorise("E09000002", "referrals-monthly", at, Stage::Plan, |permit| {
//!     let again = permit.clone();
//! });
//! # }
//! ```

use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::Connection;
use serde_json::json;

use crate::common::audit::{self, Kind};
use crate::common::names::is_la_code;
use crate::common::time::{london_date, timestamp};
use crate::config::ProviderConfig;
use crate::provider::store::{Maker, Store, StoreError, agreements, suspensions};

/// Why the gate refused. [`Reason::as_str`] gives the code the audit log
/// records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No agreement on file, or not signed yet at the time checked.
    NoAgreement,
    /// The agreement was revoked.
    AgreementRevoked,
    /// The agreement expired before the date checked.
    AgreementExpired,
    /// The LA is not in one of the provider's contract package areas.
    OutsideContractArea,
    /// The provider's operator suspended sharing with the LA or with all.
    SuspendedByProvider,
    /// DWP required sharing with the LA or with all to be suspended.
    SuspendedByDwp,
    /// The report does not go to the LA.
    NotARecipient,
    /// The reference data does not know the LA.
    UnknownLa,
    /// The gate could not decide (database or internal failure): refused.
    GateError,
}

impl Reason {
    /// The reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoAgreement => "NO_AGREEMENT",
            Reason::AgreementRevoked => "AGREEMENT_REVOKED",
            Reason::AgreementExpired => "AGREEMENT_EXPIRED",
            Reason::OutsideContractArea => "OUTSIDE_CONTRACT_AREA",
            Reason::SuspendedByProvider => "SUSPENDED_BY_PROVIDER",
            Reason::SuspendedByDwp => "SUSPENDED_BY_DWP",
            Reason::NotARecipient => "NOT_A_RECIPIENT",
            Reason::UnknownLa => "UNKNOWN_LA",
            Reason::GateError => "GATE_ERROR",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the gate is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A run is being planned.
    Plan,
    /// A transfer is about to send its first byte.
    TransferStart,
    /// A transfer is about to be committed by the endpoint.
    BeforeCommit,
}

impl Stage {
    /// The name recorded in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Plan => "plan",
            Stage::TransferStart => "transfer_start",
            Stage::BeforeCommit => "before_commit",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The agreement facts the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementFacts {
    pub signed_on: NaiveDate,
    /// The last day covered.
    pub expires_on: Option<NaiveDate>,
    pub revoked: bool,
}

/// An active suspension covering the LA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspensionFacts {
    pub id: i64,
    pub made_by: Maker,
}

/// Everything the rules look at, for one LA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The reference data lists the LA.
    pub known: bool,
    /// Its contract package area is one of the provider's.
    pub in_contract_area: bool,
    /// The report goes to it.
    pub recipient: bool,
    /// Its current agreement, if any.
    pub agreement: Option<AgreementFacts>,
    /// Active suspensions covering it.
    pub suspensions: Vec<SuspensionFacts>,
}

/// One rule that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub reason: Reason,
    /// In words, for the operator.
    pub detail: String,
}

/// What the rules say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every rule holds.
    Permit,
    /// At least one rule does not hold; the first finding is the reason
    /// recorded, the rest say what else would also have to change.
    Refuse(Vec<Finding>),
}

impl Decision {
    /// Whether the decision is a permit.
    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit)
    }

    /// The reason recorded for a refusal.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Decision::Permit => None,
            Decision::Refuse(findings) => findings.first().map(|f| f.reason),
        }
    }

    /// Every rule that does not hold, in words, joined with "; " (empty for
    /// a permit).
    pub fn detail(&self) -> String {
        match self {
            Decision::Permit => String::new(),
            Decision::Refuse(findings) => findings
                .iter()
                .map(|f| f.detail.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    /// The decision in words: `permit`, or `refuse CODE: why; …`.
    pub fn text(&self) -> String {
        match self {
            Decision::Permit => "permit".into(),
            Decision::Refuse(_) => format!(
                "refuse {}: {}",
                self.reason().map_or("GATE_ERROR", Reason::as_str),
                self.detail()
            ),
        }
    }

    /// The decision for the audit log and JSON output.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Decision::Permit => json!({ "permitted": true, "reason": null, "findings": [] }),
            Decision::Refuse(findings) => json!({
                "permitted": false,
                "reason": self.reason().map(Reason::as_str),
                "findings": findings
                    .iter()
                    .map(|f| json!({ "reason": f.reason.as_str(), "detail": f.detail }))
                    .collect::<Vec<_>>(),
            }),
        }
    }
}

/// Rule 1 alone: whether an agreement allows sharing on `today` (London).
pub fn agreement_standing(agreement: Option<&AgreementFacts>, today: NaiveDate) -> Option<Finding> {
    let finding = |reason, detail| Some(Finding { reason, detail });
    match agreement {
        None => finding(Reason::NoAgreement, "no agreement is on file".to_string()),
        Some(a) if a.revoked => finding(
            Reason::AgreementRevoked,
            "the agreement was revoked".to_string(),
        ),
        Some(a) if a.signed_on > today => finding(
            Reason::NoAgreement,
            format!("the agreement is signed on {}, after {today}", a.signed_on),
        ),
        Some(AgreementFacts {
            expires_on: Some(expires),
            ..
        }) if *expires < today => finding(
            Reason::AgreementExpired,
            format!("the agreement expired on {expires}"),
        ),
        Some(_) => None,
    }
}

/// The rules, on facts already gathered. Pure.
pub fn decide(facts: &Facts, at: DateTime<Utc>) -> Decision {
    if !facts.known {
        return Decision::Refuse(vec![Finding {
            reason: Reason::UnknownLa,
            detail: "the LA is not in the reference data".to_string(),
        }]);
    }
    let mut findings = Vec::new();
    findings.extend(agreement_standing(
        facts.agreement.as_ref(),
        london_date(at),
    ));
    if !facts.in_contract_area {
        findings.push(Finding {
            reason: Reason::OutsideContractArea,
            detail: "the LA is not in one of the provider's contract package areas".to_string(),
        });
    }
    if !facts.recipient {
        findings.push(Finding {
            reason: Reason::NotARecipient,
            detail: "the report does not go to this LA".to_string(),
        });
    }
    for (maker, reason) in [
        (Maker::Dwp, Reason::SuspendedByDwp),
        (Maker::Provider, Reason::SuspendedByProvider),
    ] {
        let ids: Vec<String> = facts
            .suspensions
            .iter()
            .filter(|s| s.made_by == maker)
            .map(|s| s.id.to_string())
            .collect();
        if !ids.is_empty() {
            findings.push(Finding {
                reason,
                detail: format!("suspended by {maker} (suspension {})", ids.join(", ")),
            });
        }
    }
    if findings.is_empty() {
        Decision::Permit
    } else {
        Decision::Refuse(findings)
    }
}

/// Reads the facts for `la` from the configuration and the database.
fn gather(
    config: &ProviderConfig,
    conn: &Connection,
    la: &str,
    recipient: bool,
) -> Result<Facts, StoreError> {
    let entry = if is_la_code(la) {
        config.reference.get(la)
    } else {
        None
    };
    let agreement = agreements::current(conn, la)?.map(|a| AgreementFacts {
        signed_on: a.signed_on,
        expires_on: a.expires_on,
        revoked: a.revoked_at.is_some(),
    });
    let suspensions = suspensions::covering(conn, la)?
        .into_iter()
        .map(|s| SuspensionFacts {
            id: s.id,
            made_by: s.made_by,
        })
        .collect();
    Ok(Facts {
        known: entry.is_some(),
        in_contract_area: entry.is_some_and(|e| config.contract_areas.contains(&e.cpa)),
        recipient,
        agreement,
        suspensions,
    })
}

/// A refusal from the gate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the gate refused {la} at {stage}: {reason} ({})", self.detail())]
pub struct Refusal {
    pub la: String,
    pub report: String,
    pub stage: Stage,
    pub reason: Reason,
    /// Every rule that did not hold, the recorded reason first.
    pub findings: Vec<Finding>,
    /// The audit entry recording it, if it could be written.
    pub audit_seq: Option<i64>,
}

impl Refusal {
    /// A refusal because the gate could not decide at all (it fails closed).
    pub fn gate_error(la: &str, report: &str, stage: Stage, why: String) -> Self {
        Self {
            la: la.to_string(),
            report: report.to_string(),
            stage,
            reason: Reason::GateError,
            findings: vec![Finding {
                reason: Reason::GateError,
                detail: why,
            }],
            audit_seq: None,
        }
    }

    /// The findings in words.
    pub fn detail(&self) -> String {
        self.findings
            .iter()
            .map(|f| f.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Proof that the gate allowed a file to go to an LA **just now**. Only
/// [`Gate::authorise`] makes one, and only inside its closure; see the
/// module documentation.
#[derive(Debug)]
#[must_use = "a permit is only useful when handed to the step it allows"]
pub struct Permit<'p> {
    la: String,
    report: String,
    stage: Stage,
    at: DateTime<Utc>,
    audit_seq: i64,
    /// Invariant in `'p`, so the permit is tied to exactly one call.
    _brand: PhantomData<fn(&'p ()) -> &'p ()>,
}

impl Permit<'_> {
    /// The LA the file may go to.
    pub fn la(&self) -> &str {
        &self.la
    }

    /// The report the file belongs to.
    pub fn report(&self) -> &str {
        &self.report
    }

    /// The step the permit was asked for.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The time the rules were checked against.
    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    /// The audit entry recording the permit.
    pub fn audit_seq(&self) -> i64 {
        self.audit_seq
    }
}

/// The gate over one store and configuration.
#[derive(Debug)]
pub struct Gate<'a> {
    config: &'a ProviderConfig,
    store: &'a mut Store,
    actor: String,
}

impl<'a> Gate<'a> {
    /// A gate that records its decisions as `actor` (for example `daemon`).
    pub fn new(config: &'a ProviderConfig, store: &'a mut Store, actor: impl Into<String>) -> Self {
        Self {
            config,
            store,
            actor: actor.into(),
        }
    }

    /// Decides whether a file of `report` may go to `la` at `at`, records
    /// the decision in the audit log, and on a permit runs `then` with it.
    ///
    /// The facts are read from the database now, in the same transaction as
    /// the audit entry, so the decision recorded is the one the state gave.
    /// Any failure refuses with [`Reason::GateError`].
    pub fn authorise<R>(
        &mut self,
        la: &str,
        report: &str,
        at: DateTime<Utc>,
        stage: Stage,
        then: impl for<'p> FnOnce(Permit<'p>) -> R,
    ) -> Result<R, Refusal> {
        let recipient = self
            .config
            .report(report)
            .is_some_and(|r| r.recipients.includes(la, &self.config.authorities));
        let detail = |decision: &Decision| {
            let mut d = decision.to_json();
            d["stage"] = json!(stage.as_str());
            d["report"] = json!(report);
            d["at"] = json!(timestamp(at));
            d
        };
        let decided = (|| -> Result<(Decision, i64), StoreError> {
            let tx = self.store.write()?;
            let facts = gather(self.config, &tx, la, recipient)?;
            let decision = decide(&facts, at);
            let kind = if decision.is_permit() {
                Kind::GatePermit
            } else {
                Kind::GateRefusal
            };
            let entry = audit::append(
                &tx,
                Utc::now(),
                kind,
                &self.actor,
                Some(la),
                &detail(&decision),
            )?;
            tx.commit()?;
            Ok((decision, entry.seq))
        })();
        let refusal = |findings: Vec<Finding>, audit_seq| Refusal {
            la: la.to_string(),
            report: report.to_string(),
            stage,
            reason: findings.first().map_or(Reason::GateError, |f| f.reason),
            findings,
            audit_seq,
        };
        match decided {
            Ok((Decision::Permit, audit_seq)) => Ok(then(Permit {
                la: la.to_string(),
                report: report.to_string(),
                stage,
                at,
                audit_seq,
                _brand: PhantomData,
            })),
            Ok((Decision::Refuse(findings), seq)) => Err(refusal(findings, Some(seq))),
            Err(error) => {
                tracing::error!(%la, %report, %stage, %error, "the gate could not decide; refusing");
                let findings = vec![Finding {
                    reason: Reason::GateError,
                    detail: format!("the gate could not decide: {error}"),
                }];
                let decision = Decision::Refuse(findings.clone());
                let seq = self.record_failure(la, &detail(&decision));
                Err(refusal(findings, seq))
            }
        }
    }

    /// What the rules say about `la` at `at` for a file that would go to any
    /// `[[authority]]`, without recording it or giving a permit: for
    /// `mishare status`, which sends nothing.
    pub fn evaluate(&self, la: &str, at: DateTime<Utc>) -> Decision {
        let recipient = self.config.authority(la).is_some();
        match gather(self.config, self.store.conn(), la, recipient) {
            Ok(facts) => decide(&facts, at),
            Err(error) => Decision::Refuse(vec![Finding {
                reason: Reason::GateError,
                detail: format!("the gate could not decide: {error}"),
            }]),
        }
    }

    /// Best effort: records a refusal the gate could not decide normally.
    fn record_failure(&mut self, la: &str, detail: &serde_json::Value) -> Option<i64> {
        let attempt = (|| -> Result<i64, StoreError> {
            let tx = self.store.write()?;
            let entry = audit::append(
                &tx,
                Utc::now(),
                Kind::GateRefusal,
                &self.actor,
                Some(la),
                detail,
            )?;
            tx.commit()?;
            Ok(entry.seq)
        })();
        match attempt {
            Ok(seq) => Some(seq),
            Err(error) => {
                tracing::error!(%la, %error, "cannot record the gate's refusal in the audit log");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
    }

    fn allowed() -> Facts {
        Facts {
            known: true,
            in_contract_area: true,
            recipient: true,
            agreement: Some(AgreementFacts {
                signed_on: date("2012-06-01"),
                expires_on: Some(date("2013-03-31")),
                revoked: false,
            }),
            suspensions: Vec::new(),
        }
    }

    #[test]
    fn table() {
        let noon = at("2012-10-01T12:00:00Z");
        type Change = fn(&mut Facts);
        let cases: &[(&str, Change, Option<Reason>)] = &[
            ("all rules hold", |_| {}, None),
            ("unknown LA", |f| f.known = false, Some(Reason::UnknownLa)),
            (
                "no agreement",
                |f| f.agreement = None,
                Some(Reason::NoAgreement),
            ),
            (
                "not yet signed",
                |f| {
                    if let Some(a) = &mut f.agreement {
                        a.signed_on = date("2012-10-02");
                    }
                },
                Some(Reason::NoAgreement),
            ),
            (
                "revoked",
                |f| {
                    if let Some(a) = &mut f.agreement {
                        a.revoked = true;
                    }
                },
                Some(Reason::AgreementRevoked),
            ),
            (
                "expired",
                |f| {
                    if let Some(a) = &mut f.agreement {
                        a.expires_on = Some(date("2012-09-30"));
                    }
                },
                Some(Reason::AgreementExpired),
            ),
            (
                "outside area",
                |f| f.in_contract_area = false,
                Some(Reason::OutsideContractArea),
            ),
            (
                "not a recipient",
                |f| f.recipient = false,
                Some(Reason::NotARecipient),
            ),
            (
                "provider suspension",
                |f| {
                    f.suspensions.push(SuspensionFacts {
                        id: 1,
                        made_by: Maker::Provider,
                    })
                },
                Some(Reason::SuspendedByProvider),
            ),
            (
                "DWP suspension outranks the provider's",
                |f| {
                    f.suspensions.push(SuspensionFacts {
                        id: 1,
                        made_by: Maker::Provider,
                    });
                    f.suspensions.push(SuspensionFacts {
                        id: 2,
                        made_by: Maker::Dwp,
                    });
                },
                Some(Reason::SuspendedByDwp),
            ),
        ];
        for (name, change, want) in cases {
            let mut facts = allowed();
            change(&mut facts);
            assert_eq!(decide(&facts, noon).reason(), *want, "{name}");
        }
    }

    #[test]
    fn every_failing_rule_is_reported() {
        let mut facts = allowed();
        facts.agreement = None;
        facts.recipient = false;
        facts.suspensions.push(SuspensionFacts {
            id: 4,
            made_by: Maker::Provider,
        });
        let Decision::Refuse(findings) = decide(&facts, at("2012-10-01T12:00:00Z")) else {
            panic!("refused");
        };
        let reasons: Vec<_> = findings.iter().map(|f| f.reason).collect();
        assert_eq!(
            reasons,
            [
                Reason::NoAgreement,
                Reason::NotARecipient,
                Reason::SuspendedByProvider
            ]
        );
        assert!(findings[2].detail.contains("suspension 4"));
    }

    #[test]
    fn expiry_day_is_inclusive_in_london() {
        let facts = allowed();
        // GMT on the expiry day: London = UTC.
        assert!(decide(&facts, at("2013-03-31T00:00:00Z")).is_permit());
        // Clocks went forward at 01:00 UTC on 31 March 2013, so 22:59 UTC is
        // 23:59 BST, still the 31st; 23:00 UTC is already 1 April in London.
        assert!(decide(&facts, at("2013-03-31T22:59:59Z")).is_permit());
        assert_eq!(
            decide(&facts, at("2013-03-31T23:00:00Z")).reason(),
            Some(Reason::AgreementExpired)
        );
        assert_eq!(
            decide(&facts, at("2013-04-01T00:00:00Z")).reason(),
            Some(Reason::AgreementExpired)
        );
    }

    #[test]
    fn signed_day_counts_in_london() {
        let mut facts = allowed();
        if let Some(a) = &mut facts.agreement {
            a.signed_on = date("2012-07-01");
        }
        // 23:30 UTC on 30 June is 00:30 BST on 1 July.
        assert!(decide(&facts, at("2012-06-30T23:30:00Z")).is_permit());
        assert_eq!(
            decide(&facts, at("2012-06-30T22:30:00Z")).reason(),
            Some(Reason::NoAgreement)
        );
    }

    #[test]
    fn codes_are_fixed() {
        let all = [
            (Reason::NoAgreement, "NO_AGREEMENT"),
            (Reason::AgreementRevoked, "AGREEMENT_REVOKED"),
            (Reason::AgreementExpired, "AGREEMENT_EXPIRED"),
            (Reason::OutsideContractArea, "OUTSIDE_CONTRACT_AREA"),
            (Reason::SuspendedByProvider, "SUSPENDED_BY_PROVIDER"),
            (Reason::SuspendedByDwp, "SUSPENDED_BY_DWP"),
            (Reason::NotARecipient, "NOT_A_RECIPIENT"),
            (Reason::UnknownLa, "UNKNOWN_LA"),
            (Reason::GateError, "GATE_ERROR"),
        ];
        for (reason, code) in all {
            assert_eq!(reason.as_str(), code);
        }
    }
}
