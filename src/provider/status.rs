//! What an operator sees of the provider's state: `mishare status` and
//! `mishare plan`, built here and rendered as text or JSON, so the CLI only
//! prints. Neither records anything nor gives a permit: the gate is asked
//! with [`Gate::evaluate`].

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;

use crate::common::expiry::{self, Expiring, Urgency, What};
use crate::common::time::{london, london_date, timestamp};
use crate::config::provider::{ProviderConfig, ReportConfig};
use crate::provider::gate::{self, AgreementFacts, Decision, Finding, Gate, Reason};
use crate::provider::pipeline::{Verdict, audit_preview, check_of};
use crate::provider::report::{self, last_complete_period};
use crate::provider::store::{Agreement, Delivery, DeliveryState, Store, StoreError, Suspension};

/// One report's next run, for `plan` and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRun {
    pub report: String,
    /// `None` only for a schedule with no date in eight years.
    pub at: Option<DateTime<Utc>>,
    /// The period that run would send.
    pub period: Option<String>,
    /// Its recipients, in `[[authority]]` order.
    pub recipients: Vec<String>,
}

/// `report`'s next run after `after`.
pub fn next_run(config: &ProviderConfig, report: &ReportConfig, after: DateTime<Utc>) -> NextRun {
    let at = report.schedule.next_after(after);
    NextRun {
        report: report.name.clone(),
        at,
        period: at.map(|t| last_complete_period(report.period, t).to_string()),
        recipients: config.recipients_of(report),
    }
}

/// Each report's next run after `after`, in `[[report]]` order.
pub fn next_runs(config: &ProviderConfig, after: DateTime<Utc>) -> Vec<NextRun> {
    config
        .reports
        .iter()
        .map(|r| next_run(config, r, after))
        .collect()
}

/// An agreement's standing on `today`, in a word.
pub fn standing(a: &Agreement, today: NaiveDate) -> &'static str {
    let facts = AgreementFacts {
        signed_on: a.signed_on,
        expires_on: a.expires_on,
        revoked: a.revoked_at.is_some(),
    };
    match gate::agreement_standing(Some(&facts), today).map(|f| f.reason) {
        None => "active",
        Some(Reason::AgreementRevoked) => "revoked",
        Some(Reason::AgreementExpired) => "expired",
        Some(_) => "not yet signed",
    }
}

/// An agreement's dates in words.
pub fn dates(a: &Agreement) -> String {
    match a.expires_on {
        Some(e) => format!("signed {}, expires {e}", a.signed_on),
        None => format!("signed {}, no expiry", a.signed_on),
    }
}

/// A suspension in words.
pub fn describe(s: &Suspension) -> String {
    let reference = s
        .reference
        .as_deref()
        .map(|r| format!(" [{r}]"))
        .unwrap_or_default();
    format!(
        "suspension {} by {} since {} ({}): {}{reference}",
        s.id,
        s.made_by,
        timestamp(s.made_at),
        s.scope,
        s.reason
    )
}

/// One `[[authority]]` in `status`.
#[derive(Debug, Clone)]
pub struct AuthorityStatus {
    pub la: String,
    /// Its name and contract package area, if the reference data has it.
    pub name: Option<(String, String)>,
    pub agreement: Option<Agreement>,
    pub suspensions: Vec<Suspension>,
    /// What the gate would decide now.
    pub gate: Decision,
}

/// `mishare status`: agreements, suspensions, the gate per LA, the queue,
/// dead deliveries and next runs.
#[derive(Debug, Clone)]
pub struct Status {
    pub at: DateTime<Utc>,
    pub today: NaiveDate,
    pub authorities: Vec<AuthorityStatus>,
    /// Active suspensions.
    pub suspensions: Vec<Suspension>,
    /// Undelivered deliveries (queued, sending, failed), in id order.
    pub pending: Vec<Delivery>,
    pub dead: Vec<Delivery>,
    pub next_runs: Vec<NextRun>,
    /// What expires within 30 days (or has expired), soonest first:
    /// agreements, the provider's certificate, endpoints' certificates seen.
    pub expiring: Vec<(Expiring, Urgency)>,
    config_path: String,
    order: Vec<String>,
}

impl Status {
    /// The state at `at`. Reads only.
    pub fn read(
        config: &ProviderConfig,
        store: &mut Store,
        at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let mut authorities = Vec::new();
        for authority in &config.authorities {
            let la = authority.code.as_str();
            let agreement = store.agreement(la)?;
            let suspensions = store.suspensions_covering(la)?;
            let gate = Gate::new(config, store, "").evaluate(la, at);
            authorities.push(AuthorityStatus {
                la: la.to_string(),
                name: config
                    .reference
                    .get(la)
                    .map(|e| (e.name.clone(), e.cpa.clone())),
                agreement,
                suspensions,
                gate,
            });
        }
        Ok(Self {
            at,
            today: london_date(at),
            authorities,
            suspensions: store.suspensions(true)?,
            pending: store.pending_deliveries()?,
            dead: store.deliveries_in(DeliveryState::Dead)?,
            next_runs: next_runs(config, at),
            expiring: expiry::expiring(&crate::provider::expiry::tracked(config, store)?, at),
            config_path: config.path.display().to_string(),
            order: config.authorities.iter().map(|a| a.code.clone()).collect(),
        })
    }

    /// How many undelivered deliveries are in `state`.
    pub fn count(&self, state: DeliveryState) -> usize {
        self.pending.iter().filter(|d| d.state == state).count()
    }

    /// The oldest undelivered delivery per LA, in `[[authority]]` order.
    pub fn oldest_per_la(&self) -> Vec<&Delivery> {
        let mut oldest: Vec<&Delivery> = Vec::new();
        for d in &self.pending {
            if !oldest.iter().any(|o| o.la == d.la) {
                oldest.push(d);
            }
        }
        oldest.sort_by_key(|d| self.order.iter().position(|la| *la == d.la));
        oldest
    }

    /// As one JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        let authorities: Vec<_> = self
            .authorities
            .iter()
            .map(|a| {
                json!({
                    "la": a.la,
                    "name": a.name.as_ref().map(|(n, _)| n.as_str()),
                    "cpa": a.name.as_ref().map(|(_, c)| c.as_str()),
                    "agreement": a.agreement.as_ref().map(|ag| {
                        let mut j = ag.to_json();
                        j["standing"] = json!(standing(ag, self.today));
                        j
                    }),
                    "suspensions": a.suspensions.iter().map(Suspension::to_json).collect::<Vec<_>>(),
                    "gate": a.gate.to_json(),
                })
            })
            .collect();
        json!({
            "at": timestamp(self.at),
            "london_date": self.today.to_string(),
            "authorities": authorities,
            "suspensions": self.suspensions.iter().map(Suspension::to_json).collect::<Vec<_>>(),
            "queue": {
                "depth": self.pending.len(),
                "queued": self.count(DeliveryState::Queued),
                "sending": self.count(DeliveryState::Sending),
                "waiting_to_retry": self.count(DeliveryState::Failed),
                "oldest_per_la": self.oldest_per_la().into_iter().map(delivery_json).collect::<Vec<_>>(),
            },
            "dead": self.dead.iter().map(delivery_json).collect::<Vec<_>>(),
            "next_runs": self.next_runs.iter().map(|r| json!({
                "report": r.report,
                "at": r.at.map(timestamp),
                "period": r.period,
            })).collect::<Vec<_>>(),
            "expiring": self.expiring.iter().map(|(e, u)| json!({
                "what": match e.what { What::Agreement => "agreement", What::Certificate => "certificate" },
                "role": e.role,
                "subject": e.subject,
                "ends": timestamp(e.ends),
                "urgency": match u { Urgency::Soon => "30_days", Urgency::Urgent => "7_days", Urgency::Expired => "expired" },
                "text": e.describe(*u),
            })).collect::<Vec<_>>(),
        })
    }

    /// For people, one line per fact.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        out.push(format!(
            "status at {} ({} Europe/London)",
            timestamp(self.at),
            self.today
        ));
        if self.authorities.is_empty() {
            out.push(format!("no [[authority]] in {}", self.config_path));
        }
        for a in &self.authorities {
            match &a.name {
                Some((name, cpa)) => out.push(format!("{} {name} ({cpa})", a.la)),
                None => out.push(format!("{} (not in the reference data)", a.la)),
            }
            match &a.agreement {
                Some(ag) => out.push(format!(
                    "  agreement:   {} ({}), {}, {}",
                    ag.id,
                    standing(ag, self.today),
                    dates(ag),
                    ag.representative
                )),
                None => out.push("  agreement:   none".into()),
            }
            if a.suspensions.is_empty() {
                out.push("  suspensions: none".into());
            }
            for s in &a.suspensions {
                out.push(format!("  suspensions: {}", describe(s)));
            }
            match &a.gate {
                Decision::Permit => out.push("  gate now:    permit".into()),
                Decision::Refuse(_) => out.push(format!(
                    "  gate now:    refuse {} ({})",
                    a.gate.reason().map_or("", Reason::as_str),
                    a.gate.detail()
                )),
            }
        }
        if !self.suspensions.is_empty() {
            out.push("active suspensions:".into());
            for s in &self.suspensions {
                out.push(format!("  {}", describe(s)));
            }
        }
        out.push(format!(
            "queue: {} undelivered ({} queued, {} sending, {} waiting to retry)",
            self.pending.len(),
            self.count(DeliveryState::Queued),
            self.count(DeliveryState::Sending),
            self.count(DeliveryState::Failed)
        ));
        for d in self.oldest_per_la() {
            out.push(format!("  oldest for {}: {}", d.la, delivery_line(d)));
        }
        out.push(format!("dead: {}", self.dead.len()));
        for d in &self.dead {
            out.push(format!("  {} (mishare retry {})", delivery_line(d), d.id));
        }
        if self.next_runs.is_empty() {
            out.push("next runs: none (no [[report]])".into());
        } else {
            out.push("next runs:".into());
        }
        for r in &self.next_runs {
            match r.at {
                Some(t) => out.push(format!(
                    "  {} at {} ({}), period {}",
                    r.report,
                    london(t),
                    timestamp(t),
                    r.period.as_deref().unwrap_or("-")
                )),
                None => out.push(format!("  {}: no run in the next eight years", r.report)),
            }
        }
        if self.expiring.is_empty() {
            out.push("expiring within 30 days: nothing".into());
        } else {
            out.push("expiring within 30 days:".into());
        }
        for (e, u) in &self.expiring {
            let mark = match u {
                Urgency::Soon => "warning",
                Urgency::Urgent | Urgency::Expired => "URGENT",
            };
            out.push(format!("  {mark}: {}", e.describe(*u)));
        }
        lines(out)
    }
}

fn lines(out: Vec<String>) -> String {
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn delivery_line(d: &Delivery) -> String {
    let retry = d
        .next_attempt_at
        .filter(|_| d.state == DeliveryState::Failed)
        .map(|t| format!(", next attempt {}", timestamp(t)))
        .unwrap_or_default();
    format!(
        "delivery {} {} {} {}, {} since {}, {} attempts{retry}{}",
        d.id,
        d.la,
        d.report,
        d.period,
        d.state,
        timestamp(d.age_from),
        d.attempts,
        d.last_error
            .as_deref()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default()
    )
}

fn delivery_json(d: &Delivery) -> serde_json::Value {
    json!({
        "id": d.id,
        "la": d.la,
        "report": d.report,
        "period": d.period,
        "state": d.state.as_str(),
        "since": timestamp(d.age_from),
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(timestamp),
        "last_error": d.last_error,
    })
}

/// One report in `mishare plan`.
#[derive(Debug, Clone)]
pub struct PlannedReport {
    pub next: NextRun,
    pub schedule: String,
    pub missed: &'static str,
    /// What the gate would decide for each recipient at the run's time.
    pub decisions: Vec<(String, Decision)>,
    /// What the ledger audit would say of each recipient's file, made from
    /// the source as it is now; or why the tables cannot be made now.
    pub ledger: Result<Vec<(String, Verdict)>, String>,
    /// For each recipient whose agreement expires: its last covered day and
    /// the first run of this report the gate will refuse for it.
    pub expiries: Vec<(String, NaiveDate, Option<DateTime<Utc>>)>,
}

/// `mishare plan`: each report's next run after a time, its period, its
/// recipients and what the gate would decide for each then. Sends and
/// writes nothing.
#[derive(Debug, Clone)]
pub struct Plan {
    pub at: DateTime<Utc>,
    pub reports: Vec<PlannedReport>,
}

impl Plan {
    /// The plan at `at`. With no store (no database yet) there is no
    /// agreement either, and none is created.
    pub fn read(
        config: &ProviderConfig,
        mut store: Option<&mut Store>,
        at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let check = check_of(store.as_deref());
        let mut decide = |la: &str, when: DateTime<Utc>| match store.as_deref_mut() {
            Some(store) => Gate::new(config, store, "").evaluate(la, when),
            None => Decision::Refuse(vec![Finding {
                reason: Reason::NoAgreement,
                detail: format!(
                    "no state database at {} yet",
                    config.database_path().display()
                ),
            }]),
        };
        let reports = config
            .reports
            .iter()
            .map(|report| {
                let next = next_run(config, report, at);
                let when = next.at.unwrap_or(at);
                let decisions = next
                    .recipients
                    .iter()
                    .map(|la| (la.clone(), decide(la, when)))
                    .collect();
                PlannedReport {
                    next,
                    schedule: report.schedule.to_string(),
                    missed: report.missed.as_str(),
                    decisions,
                    ledger: Ok(Vec::new()),
                    expiries: Vec::new(),
                }
            })
            .collect::<Vec<PlannedReport>>();
        let mut reports = reports;
        let store = store.as_deref();
        // Each LA's current agreement that is not revoked and has an expiry.
        let expiring: HashMap<String, NaiveDate> = match store {
            Some(store) => store.agreement_expiries()?.into_iter().collect(),
            None => HashMap::new(),
        };
        for (r, report) in reports.iter_mut().zip(&config.reports) {
            r.expiries = (r.next.recipients.iter())
                .filter_map(|la| {
                    let expires = *expiring.get(la)?;
                    let first =
                        crate::provider::expiry::first_refused_run(&report.schedule, expires, at);
                    Some((la.clone(), expires, first))
                })
                .collect();
            let when = r.next.at.unwrap_or(at);
            // Only the LAs the gate would permit get a file to audit.
            let las: Vec<String> = (r.decisions.iter())
                .filter(|(_, d)| matches!(d, Decision::Permit))
                .map(|(la, _)| la.clone())
                .collect();
            if las.is_empty() {
                continue;
            }
            r.ledger = report::run_report(config, report, &las, when)
                .map(|run| {
                    // A table the sanitiser blocks is never audited.
                    (run.files.iter())
                        .filter_map(|f| {
                            let rendered = f.outcome.as_ref().ok()?;
                            let verdict = audit_preview(
                                config,
                                store,
                                &check,
                                &f.la,
                                &rendered.release,
                                false,
                            );
                            Some((f.la.clone(), verdict))
                        })
                        .collect()
                })
                .map_err(|e| e.to_string());
        }
        Ok(Self { at, reports })
    }

    /// For people.
    pub fn text(&self) -> String {
        let mut out = vec![format!(
            "plan at {} ({}); nothing is sent",
            timestamp(self.at),
            london(self.at)
        )];
        for r in &self.reports {
            match r.next.at {
                Some(t) => out.push(format!(
                    "{}: next run {} ({}), period {}, schedule \"{}\", missed {}",
                    r.next.report,
                    london(t),
                    timestamp(t),
                    r.next.period.as_deref().unwrap_or("-"),
                    r.schedule,
                    r.missed,
                )),
                None => out.push(format!(
                    "{}: no run in the next eight years (schedule \"{}\")",
                    r.next.report, r.schedule
                )),
            }
            if r.decisions.is_empty() {
                out.push("  no recipients".into());
            }
            for (la, d) in &r.decisions {
                out.push(format!("  {la} {}", d.text()));
                if let Ok(verdicts) = &r.ledger
                    && let Some((_, v)) = verdicts.iter().find(|(l, _)| l == la)
                {
                    out.push(format!("    {}", v.text()));
                }
                if let Some((_, expires, first)) = r.expiries.iter().find(|(l, _, _)| l == la) {
                    out.push(match first {
                        Some(t) => format!(
                            "    agreement covers up to {expires}: the gate refuses from the run at {} ({})",
                            london(*t),
                            timestamp(*t)
                        ),
                        None => format!(
                            "    agreement covers up to {expires}: no run of this schedule in the next eight years"
                        ),
                    });
                }
            }
            if let Err(e) = &r.ledger {
                out.push(format!(
                    "  the ledger audit cannot be previewed: the tables cannot be made now: {e}"
                ));
            }
        }
        lines(out)
    }

    /// As one JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "at": timestamp(self.at),
            "reports": self.reports.iter().map(|r| json!({
                "report": r.next.report,
                "schedule": r.schedule,
                "missed": r.missed,
                "next_run_utc": r.next.at.map(timestamp),
                "next_run_london": r.next.at.map(london),
                "period": r.next.period,
                "recipients": r.decisions.iter().map(|(la, d)| json!({
                    "la": la,
                    "gate": d.to_json(),
                    "ledger_audit": match &r.ledger {
                        Ok(verdicts) => verdicts.iter().find(|(l, _)| l == la)
                            .map(|(_, v)| v.to_json()),
                        Err(_) => None,
                    },
                    "agreement_expiry": r.expiries.iter().find(|(l, _, _)| l == la).map(|(_, e, first)| json!({
                        "expires_on": e.to_string(),
                        "first_refused_run_utc": first.map(timestamp),
                    })),
                })).collect::<Vec<_>>(),
                "ledger_audit_error": r.ledger.as_ref().err(),
            })).collect::<Vec<_>>(),
        })
    }
}
