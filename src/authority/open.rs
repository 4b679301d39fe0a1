//! Received files for LA staff: a file from the inbox, decrypted, as a CSV
//! that Excel reads as UTF-8 (a byte-order mark first) or as an XLSX
//! workbook (a cover sheet saying what the file is, the table as numbers,
//! the label printed at the top of every page).
//!
//! The file a provider sends stays the CSV the sanitiser writes (SANITISER.md
//! R10): `#` lines (the label, the method note, provider, report, period,
//! when made), then the table. Spreadsheets are made here, at the LA, from
//! the decrypted file; nothing here changes a figure.

use std::io::Read;

use rust_xlsxwriter::{Format, FormatAlign, Workbook, XlsxError};
use zeroize::Zeroizing;

use crate::common::encoding::hex;
use crate::common::time::timestamp;
use crate::seal::{self, Identities, SealError};

use super::store::Transfer;

/// The byte-order mark that makes Excel read a CSV as UTF-8.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The longest page header Excel accepts, in characters.
const MAX_HEADER_CHARS: usize = 255;

/// Why a received file could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The key does not open it, it is not age, or it is damaged.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Reading the ciphertext failed (not a decryption failure).
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    /// It decrypted to more than its recorded size allows.
    #[error(
        "the file decrypts to more than its {size} bytes could hold: it is not the file received"
    )]
    TooLong { size: u64 },
    /// The plaintext is not the sanitiser's CSV.
    #[error("the decrypted file is not a mishare table: {0}")]
    NotATable(String),
    /// The workbook could not be made.
    #[error("cannot make the workbook: {0}")]
    Xlsx(#[from] XlsxError),
}

/// A decrypted table: its `#` lines, in order, and its rows (the first is
/// the header), as the provider wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The `#` lines without the `# `: the label first, then the method
    /// note, then what the file is (`Provider: …`, `Report: …`, `Period: …`,
    /// `Made: …`).
    pub notes: Vec<String>,
    /// The header row, then the table's rows.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The label (published, or internal MI for one LA only).
    pub fn label(&self) -> &str {
        self.notes.first().map_or("", String::as_str)
    }

    /// The method note.
    pub fn method(&self) -> &str {
        self.notes.get(1).map_or("", String::as_str)
    }
}

/// Decrypts `ciphertext` (the received file of `size` bytes) with
/// `identities`, reading it whole and authenticating every chunk: the
/// plaintext is returned only when all of it is authentic.
pub fn decrypt(
    ciphertext: impl Read,
    size: u64,
    identities: &Identities,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let opened = seal::open(ciphertext, identities)?;
    let mut plaintext = Zeroizing::new(Vec::new());
    // An age payload is never longer than its ciphertext.
    let read = opened
        .take(size.saturating_add(1))
        .read_to_end(&mut plaintext);
    if let Err(e) = read {
        return Err(match SealError::from_io(&e) {
            Some(SealError::Damaged { detail }) => SealError::Damaged {
                detail: detail.clone(),
            }
            .into(),
            _ => OpenError::Read(e),
        });
    }
    if plaintext.len() as u64 > size {
        return Err(OpenError::TooLong { size });
    }
    Ok(plaintext)
}

/// The CSV for a spreadsheet: the plaintext as it came, UTF-8 with a
/// byte-order mark before it (once, if the provider did not put one).
pub fn csv_for_excel(plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(plaintext.len() + UTF8_BOM.len()));
    if !plaintext.starts_with(UTF8_BOM) {
        out.extend_from_slice(UTF8_BOM);
    }
    out.extend_from_slice(plaintext);
    out
}

/// Reads the sanitiser's CSV: `#` lines, then RFC 4180 rows. Refuses text
/// that is not UTF-8, has no label line, or has no table.
pub fn parse(plaintext: &[u8]) -> Result<Table, OpenError> {
    let text = std::str::from_utf8(plaintext)
        .map_err(|e| OpenError::NotATable(format!("it is not UTF-8 text ({e})")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut notes = Vec::new();
    let mut rest = text;
    while let Some(line) = rest.strip_prefix('#') {
        let (line, after) = line.split_once('\n').unwrap_or((line, ""));
        let line = line.strip_suffix('\r').unwrap_or(line);
        notes.push(line.strip_prefix(' ').unwrap_or(line).to_string());
        rest = after;
    }
    if notes.len() < 2 {
        return Err(OpenError::NotATable(
            "it does not start with the label and method note (`#` lines)".into(),
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(rest.as_bytes());
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            OpenError::NotATable(format!(
                "table line {} is not CSV: {e}",
                notes.len() + i + 1
            ))
        })?;
        rows.push(record.iter().map(str::to_string).collect());
    }
    if rows.is_empty() {
        return Err(OpenError::NotATable(
            "it has no table after its `#` lines".into(),
        ));
    }
    Ok(Table { notes, rows })
}

/// The XLSX workbook of `table`, received as `transfer`: a cover sheet
/// ("About") with the label, the method note and what the file is, and the
/// table ("Table") with every figure as a number; both sheets print the
/// label at the top of every page.
pub fn xlsx(table: &Table, transfer: &Transfer) -> Result<Vec<u8>, OpenError> {
    let mut workbook = Workbook::new();
    let header = page_header(table.label());
    let bold = Format::new().set_bold();
    let wrap = Format::new().set_text_wrap().set_align(FormatAlign::Top);

    let about = workbook.add_worksheet();
    about.set_name("About")?;
    about.set_header(&header);
    about.set_column_width(0, 22)?;
    about.set_column_width(1, 90)?;
    let mut lines: Vec<(String, String)> = vec![
        ("Label".into(), table.label().to_string()),
        ("Method".into(), table.method().to_string()),
    ];
    for note in &table.notes[2..] {
        lines.push(match note.split_once(": ") {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (String::new(), note.clone()),
        });
    }
    lines.extend([
        ("Sent by".into(), transfer.provider.clone()),
        ("Report name".into(), transfer.report.clone()),
        ("Period (file)".into(), transfer.period.clone()),
        ("Classification".into(), transfer.classification.clone()),
        (
            "Received".into(),
            transfer
                .receipt
                .as_ref()
                .and_then(|r| chrono::DateTime::from_timestamp_millis(r.received_unix_ms))
                .map(timestamp)
                .unwrap_or_default(),
        ),
        ("Transfer id".into(), transfer.transfer_id.clone()),
        ("SHA-256 (as received)".into(), hex(&transfer.sha256)),
    ]);
    for (row, (key, value)) in (0u32..).zip(&lines) {
        about.write_string_with_format(row, 0, key, &bold)?;
        about.write_string_with_format(row, 1, value, &wrap)?;
    }

    let sheet = workbook.add_worksheet();
    sheet.set_name("Table")?;
    sheet.set_header(&header);
    sheet.set_repeat_rows(0, 0)?;
    sheet.set_freeze_panes(1, 1)?;
    for (r, row) in (0u32..).zip(&table.rows) {
        for (c, field) in (0u16..).zip(row) {
            let value = unguard(field);
            match (r, c, number(value)) {
                (0, _, _) | (_, 0, _) | (_, _, None) => {
                    if r == 0 {
                        sheet.write_string_with_format(r, c, value, &bold)?;
                    } else {
                        sheet.write_string(r, c, value)?;
                    }
                }
                (_, _, Some(n)) => {
                    sheet.write_number(r, c, n)?;
                }
            }
        }
    }
    sheet.set_column_width(0, 28)?;
    Ok(workbook.save_to_buffer()?)
}

/// The label as a centred page header: `&` doubled (Excel's escape), cut
/// to what Excel accepts.
fn page_header(label: &str) -> String {
    let mut header = String::from("&C");
    for ch in label.chars() {
        let add = if ch == '&' { "&&" } else { "" };
        if header.chars().count() + add.len().max(1) > MAX_HEADER_CHARS {
            break;
        }
        if add.is_empty() {
            header.push(ch);
        } else {
            header.push_str(add);
        }
    }
    header
}

/// A figure as the sanitiser writes one: digits, at most one `.`, at most a
/// leading `-`. Anything else (`[c]`, a label) stays text.
fn number(field: &str) -> Option<f64> {
    let digits = field.strip_prefix('-').unwrap_or(field);
    let ok = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && digits.chars().next().is_some_and(|c| c.is_ascii_digit());
    ok.then(|| field.parse().ok()).flatten()
}

/// The sanitiser puts a `'` before a label that a spreadsheet would read
/// as a formula; in a workbook every label is written as text, so the guard
/// is taken off.
fn unguard(field: &str) -> &str {
    match field.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => field,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Internal MI – for Lambeth (E09000022) only\n\
        # Figures rounded to the nearest 20.\n\
        # Provider: Acme & Co\n\
        # Report: referrals; measure: referrals; view: counts\n\
        # Period: 2026-07 to 2026-09\n\
        payment_group,2026-07,2026-08,Total\n\
        \"'=JSA, 18-24\",20,0,20\n\
        ESA,[c],40.5,40\n\
        Total,20,40,60\n";

    #[test]
    fn the_csv_for_excel_starts_with_one_byte_order_mark() {
        let out = csv_for_excel(FILE.as_bytes());
        assert!(out.starts_with(UTF8_BOM));
        assert_eq!(&out[3..], FILE.as_bytes());
        let again = csv_for_excel(&out);
        assert_eq!(&again[..], &out[..], "a BOM is never doubled");
    }

    #[test]
    fn parse_keeps_the_notes_and_rows_as_written() {
        let table = parse(FILE.as_bytes()).expect("parse");
        assert_eq!(table.label(), "Internal MI – for Lambeth (E09000022) only");
        assert_eq!(table.method(), "Figures rounded to the nearest 20.");
        assert_eq!(table.notes.len(), 5);
        assert_eq!(table.rows.len(), 4);
        assert_eq!(table.rows[1][0], "'=JSA, 18-24");
    }

    #[test]
    fn parse_refuses_what_is_not_a_table() {
        for (input, says) in [
            (&b"\xff\xfe"[..], "not UTF-8"),
            (b"a,b\n1,2\n", "label and method note"),
            (b"# label\n# method\n", "no table"),
        ] {
            let err = parse(input).expect_err("refused").to_string();
            assert!(err.contains(says), "{err} should say {says}");
        }
    }

    #[test]
    fn only_figures_become_numbers() {
        assert_eq!(number("20"), Some(20.0));
        assert_eq!(number("40.5"), Some(40.5));
        assert_eq!(number("-3"), Some(-3.0));
        for text in ["[c]", "", "-", ".5", "1.2.3", "inf", "NaN", "1e3", "ESA"] {
            assert_eq!(number(text), None, "{text}");
        }
        assert_eq!(unguard("'=SUM(A1)"), "=SUM(A1)");
        assert_eq!(unguard("'quoted"), "'quoted");
    }

    #[test]
    fn the_page_header_escapes_ampersands_and_fits_excel() {
        assert_eq!(page_header("A & B"), "&CA && B");
        let long = "x".repeat(400);
        assert_eq!(page_header(&long).chars().count(), MAX_HEADER_CHARS);
    }
}
