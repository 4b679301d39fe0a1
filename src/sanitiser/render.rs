//! Writing a [`Sanitised`] table: the CSV file an LA receives, or the JSON
//! object (with findings) the provider's own tools read.

use serde::Serialize;

use super::findings::Finding;
use super::rules::{Body, Sanitised, internal_label};
use super::spec::{Classification, Recipient};

/// What the file says about itself (R10), as `#` lines after the label and
/// the method note: who made it (when known), the report (when known) with
/// its measure and view, the period it covers, and when it was made (when
/// known). Free text (names from configuration and reference data) is
/// kept on its line and from being read as a formula.
fn about_lines(table: &Sanitised) -> Vec<String> {
    let about = table.about();
    let mut lines = Vec::new();
    if let Some(provider) = &about.provider {
        lines.push(format!("Provider: {}", comment_value(provider)));
    }
    let what = format!(
        "measure: {}; view: {}",
        table.measure().as_str(),
        table.view().as_str()
    );
    lines.push(match &about.report {
        Some(report) => format!("Report: {}; {what}", comment_value(report)),
        None => format!(
            "Measure: {}; view: {}",
            table.measure(),
            table.view().as_str()
        ),
    });
    lines.push(match table.periods() {
        Some(range) => format!("Period: {range}"),
        None => PERIOD_UNBOUNDED.to_string(),
    });
    if let Some(made) = about.made_at {
        lines.push(format!("Made: {}", made.format("%Y-%m-%dT%H:%M:%SZ")));
    }
    lines
}

/// The period line of a table made without a period range.
pub const PERIOD_UNBOUNDED: &str = "Period: every period in the input (no period range was given)";

/// The CSV an LA receives: the label and the method note as the first two
/// `#` lines, then what the file is (provider, report, measure and view,
/// period, date made) as more `#` lines, then the table; with a `Total`
/// column and row in the counts view, `[c]` for suppressed shares. Findings
/// are never part of it (R13).
pub fn csv(table: &Sanitised) -> Vec<u8> {
    let mut out = String::new();
    // The label as the Sanitised holds it, but with the LA's name and code
    // (reference data, free text) guarded.
    let label = match (table.classification(), table.recipient()) {
        (Classification::Internal, Some(r)) => internal_label(Some(&Recipient {
            code: comment_value(&r.code),
            name: comment_value(&r.name),
        })),
        _ => table.label().to_string(),
    };
    for line in [label, table.method().to_string()]
        .into_iter()
        .chain(about_lines(table))
    {
        out.push_str("# ");
        out.push_str(&line);
        out.push('\n');
    }

    let mut header = vec![field(table.row_dimension())];
    header.extend(table.cols().iter().map(|c| field(c)));
    match table.body() {
        Body::Counts {
            cells,
            row_totals,
            col_totals,
            total,
        } => {
            header.push("Total".into());
            line(&mut out, header);
            for ((name, row), row_total) in table.rows().iter().zip(cells).zip(row_totals) {
                let mut fields = vec![field(name)];
                fields.extend(row.iter().map(ToString::to_string));
                fields.push(row_total.to_string());
                line(&mut out, fields);
            }
            let mut fields = vec!["Total".to_string()];
            fields.extend(col_totals.iter().map(ToString::to_string));
            fields.push(total.to_string());
            line(&mut out, fields);
        }
        Body::Shares { cells } => {
            line(&mut out, header);
            for (name, row) in table.rows().iter().zip(cells) {
                let mut fields = vec![field(name)];
                fields.extend(
                    row.iter()
                        .map(|p| p.map_or_else(|| "[c]".to_string(), |p| p.to_string())),
                );
                line(&mut out, fields);
            }
        }
    }
    out.into_bytes()
}

fn line(out: &mut String, fields: Vec<String>) {
    out.push_str(&fields.join(","));
    out.push('\n');
}

/// A label as a CSV field: quoted where it must be (RFC 4180), and kept from
/// being read as a formula by a spreadsheet (a leading `=`, `+`, `-`, `@`,
/// tab or carriage return gets a `'` before it). **(choice)**
fn field(value: &str) -> String {
    quoted(&guard(value))
}

/// `value` with a `'` before it if a spreadsheet would run it as a formula.
fn guard(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    }
}

/// `value` quoted if it must be (RFC 4180).
fn quoted(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// Free text for a `#` line: kept on its line (control characters become
/// spaces), each piece a spreadsheet might split off at a comma kept from
/// being a formula, then quoted like a field. **(choice)**
fn comment_value(value: &str) -> String {
    let flat: String = (value.chars())
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let pieces: Vec<String> = (flat.split(','))
        .map(|piece| {
            let start = piece.len() - piece.trim_start().len();
            format!("{}{}", &piece[..start], guard(&piece[start..]))
        })
        .collect();
    quoted(&pieces.join(","))
}

#[derive(Serialize)]
struct Json<'a> {
    measure: &'static str,
    view: &'static str,
    classification: &'static str,
    recipient: Option<&'a str>,
    label: &'a str,
    provider: Option<&'a str>,
    report: Option<&'a str>,
    /// `null` when no range was given (every period in the input).
    periods: Option<JsonPeriods>,
    made_at: Option<String>,
    rows: &'a [String],
    cols: &'a [String],
    cells: Cells,
    #[serde(skip_serializing_if = "Option::is_none")]
    row_totals: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    col_totals: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    findings: &'a [Finding],
    method: &'static str,
}

#[derive(Serialize)]
struct JsonPeriods {
    grain: &'static str,
    first: String,
    last: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Cells {
    Counts(Vec<Vec<u64>>),
    Shares(Vec<Vec<Option<u8>>>),
}

/// The JSON object of the command-line contract: the table, its totals (in
/// the counts view only) and every finding.
pub fn json(table: &Sanitised) -> String {
    let values = |v: &[super::Rounded]| v.iter().map(|r| r.get()).collect::<Vec<_>>();
    let (cells, row_totals, col_totals, total) = match table.body() {
        Body::Counts {
            cells,
            row_totals,
            col_totals,
            total,
        } => (
            Cells::Counts(cells.iter().map(|r| values(r)).collect()),
            Some(values(row_totals)),
            Some(values(col_totals)),
            Some(total.get()),
        ),
        Body::Shares { cells } => (Cells::Shares(cells.clone()), None, None, None),
    };
    let json = Json {
        measure: table.measure().as_str(),
        view: table.view().as_str(),
        classification: table.classification().as_str(),
        recipient: table.recipient().map(|r| r.code.as_str()),
        label: table.label(),
        provider: table.about().provider.as_deref(),
        report: table.about().report.as_deref(),
        periods: table.periods().map(|r| JsonPeriods {
            grain: r.grain().as_str(),
            first: r.first().to_string(),
            last: r.last().to_string(),
        }),
        made_at: (table.about().made_at).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        rows: table.rows(),
        cols: table.cols(),
        cells,
        row_totals,
        col_totals,
        total,
        findings: table.findings(),
        method: table.method(),
    };
    let mut text = serde_json::to_string_pretty(&json).expect("plain data always serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_kept_from_formulas() {
        assert_eq!(field("JSA 25+"), "JSA 25+");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(field("-1,2"), "\"'-1,2\"");
    }

    /// R10: a file made by a report says who made it, which report and
    /// measure it is, the period it covers and when it was made, after the
    /// label and the method note.
    #[test]
    fn a_reports_file_says_who_made_it_for_which_period_and_when() {
        use crate::sanitiser::{About, CountTable, Measure, TableSpec, sanitise};
        let spec = TableSpec {
            classification: Some(Classification::Internal),
            recipient: Some(Recipient {
                code: "E06000023".into(),
                name: "Bristol, City of".into(),
            }),
            periods: Some("2012-07..2012-09".parse().expect("range")),
            about: About {
                provider: Some("Acme,=HYPERLINK(\"x\")\nLtd".into()),
                report: Some("referrals-quarterly".into()),
                made_at: "2012-10-02T05:00:00Z".parse().ok(),
            },
            ..TableSpec::new(Measure::Referrals, "payment_group")
        };
        let table = CountTable::column(vec!["JSA 25+".into()], vec![100]);
        let out = sanitise(&spec, &table).expect("ok");
        let csv = String::from_utf8(csv(&out)).expect("utf8");
        let head: Vec<&str> = csv.lines().take_while(|l| l.starts_with('#')).collect();
        assert_eq!(
            head,
            [
                "# Internal MI – for \"Bristol, City of\" (E06000023) only – not for publication",
                "# Rounded to nearest 20 (halves up); totals are sums of rounded figures; percentages are computed from rounded figures.",
                "# Provider: \"Acme,'=HYPERLINK(\"\"x\"\") Ltd\"",
                "# Report: referrals-quarterly; measure: referrals; view: counts",
                "# Period: 2012-07 to 2012-09",
                "# Made: 2012-10-02T05:00:00Z",
            ]
        );
        assert_eq!(
            out.label(),
            "Internal MI – for Bristol, City of (E06000023) only – not for publication",
            "the JSON keeps the label as it is"
        );
        let json: serde_json::Value = serde_json::from_str(&json(&out)).expect("json");
        assert_eq!(json["provider"], "Acme,=HYPERLINK(\"x\")\nLtd");
        assert_eq!(json["report"], "referrals-quarterly");
        assert_eq!(json["made_at"], "2012-10-02T05:00:00Z");
        assert_eq!(
            json["periods"],
            serde_json::json!({"grain": "month", "first": "2012-07", "last": "2012-09"})
        );
    }

    #[test]
    fn free_text_in_comment_lines_stays_on_its_line_and_is_no_formula() {
        assert_eq!(
            comment_value("Example Provider Ltd"),
            "Example Provider Ltd"
        );
        assert_eq!(comment_value("Bristol, City of"), "\"Bristol, City of\"");
        assert_eq!(comment_value("x,=1+1"), "\"x,'=1+1\"");
        assert_eq!(comment_value("a, @SUM(1)"), "\"a, '@SUM(1)\"");
        assert_eq!(comment_value("two\nlines"), "two lines");
        assert_eq!(comment_value("=cmd"), "'=cmd");
    }
}
