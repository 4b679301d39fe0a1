//! Writing a [`Sanitised`] table: the CSV file an LA receives, or the JSON
//! object (with findings) the provider's own tools read.

use serde::Serialize;

use super::findings::Finding;
use super::rules::{Body, Sanitised};

/// The CSV an LA receives: the label and the method note as leading `#`
/// lines, then the table; with a `Total` column and row in the counts view,
/// `[c]` for suppressed shares. Findings are never part of it (R13).
pub fn csv(table: &Sanitised) -> Vec<u8> {
    let mut out = String::new();
    out.push_str("# ");
    out.push_str(table.label());
    out.push('\n');
    out.push_str("# ");
    out.push_str(table.method());
    out.push('\n');

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
    let guarded;
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{value}");
        &guarded
    } else {
        value
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

#[derive(Serialize)]
struct Json<'a> {
    measure: &'static str,
    view: &'static str,
    classification: &'static str,
    recipient: Option<&'a str>,
    label: &'a str,
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
}
