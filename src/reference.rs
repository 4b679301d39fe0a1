//! Reference data: payment groups, local authorities and the contract package
//! areas (CPAs) they lie in.
//!
//! None of this is hard-coded policy. Payment groups have a built-in default
//! (the Work Programme's nine, in reference order) that a CSV can replace; LAs
//! and CPAs always come from a versioned file (`la_code,la_name,cpa`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The Work Programme payment groups, in reference order.
pub const DEFAULT_PAYMENT_GROUPS: [&str; 9] = [
    "JSA 18-24",
    "JSA 25+",
    "JSA Early Access",
    "JSA Ex-IB",
    "ESA Volunteers",
    "New ESA Claimants",
    "ESA Ex-IB",
    "IB/IS",
    "JSA Prison Leavers",
];

/// Why a reference file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// The file could not be opened or read.
    #[error("cannot read reference data {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed CSV (ragged row, bad UTF-8, ...).
    #[error("reference data {path} line {line}: {reason}")]
    Malformed {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    /// A required column is missing from the header.
    #[error("reference data {path}: the header has no `{column}` column (expected {expected})")]
    MissingColumn {
        path: PathBuf,
        column: &'static str,
        expected: &'static str,
    },
    /// The same key appears twice.
    #[error("reference data {path} line {line}: `{value}` appears twice (first on line {first})")]
    Duplicate {
        path: PathBuf,
        line: u64,
        first: u64,
        value: String,
    },
    /// The file has a header but no entries.
    #[error("reference data {path} has no entries")]
    Empty { path: PathBuf },
}

/// Payment groups in reference order.
#[derive(Debug, Clone)]
pub struct PaymentGroups {
    names: Vec<String>,
    position: HashMap<String, usize>,
}

impl Default for PaymentGroups {
    fn default() -> Self {
        Self::from_names(DEFAULT_PAYMENT_GROUPS.iter().map(|s| s.to_string()))
            .expect("the built-in payment groups are distinct")
    }
}

impl PaymentGroups {
    /// Builds the list from names in reference order; `Err` names a duplicate.
    pub fn from_names(names: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let names: Vec<String> = names.into_iter().collect();
        let mut position = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if position.insert(name.clone(), i).is_some() {
                return Err(name.clone());
            }
        }
        Ok(Self { names, position })
    }

    /// Loads a one-column CSV with the header `payment_group`, in reference order.
    pub fn load(path: &Path) -> Result<Self, ReferenceError> {
        let mut names = Vec::new();
        let mut first_line = HashMap::new();
        for_each_row(path, &["payment_group"], "payment_group", |line, row| {
            let name = row[0].trim().to_string();
            if let Some(&first) = first_line.get(&name) {
                return Err(ReferenceError::Duplicate {
                    path: path.to_path_buf(),
                    line,
                    first,
                    value: name,
                });
            }
            first_line.insert(name.clone(), line);
            names.push(name);
            Ok(())
        })?;
        if names.is_empty() {
            return Err(ReferenceError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self::from_names(names).expect("duplicates were rejected above"))
    }

    /// The position of `name` in reference order, if it is a known group.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.position.get(name).copied()
    }

    /// The groups in reference order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// One local authority as the reference data describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAuthority {
    /// The ONS code, for example `E09000002`.
    pub code: String,
    /// The authority's name, as it appears on labels.
    pub name: String,
    /// The contract package area the authority lies in.
    pub cpa: String,
}

/// The local authorities, keyed by code.
#[derive(Debug, Clone, Default)]
pub struct LaReference {
    las: BTreeMap<String, LocalAuthority>,
}

impl LaReference {
    /// Loads `la_code,la_name,cpa` (columns found by header name).
    pub fn load(path: &Path) -> Result<Self, ReferenceError> {
        let mut las = BTreeMap::new();
        let mut first_line: HashMap<String, u64> = HashMap::new();
        const COLUMNS: [&str; 3] = ["la_code", "la_name", "cpa"];
        for_each_row(path, &COLUMNS, "la_code,la_name,cpa", |line, row| {
            let code = row[0].trim().to_string();
            let name = row[1].trim().to_string();
            let cpa = row[2].trim().to_string();
            if !is_la_code(&code) {
                return Err(ReferenceError::Malformed {
                    path: path.to_path_buf(),
                    line,
                    reason: format!(
                        "la_code {code:?} is not an LA code (1 to 16 ASCII letters and digits)"
                    ),
                });
            }
            for (column, value) in [("la_name", &name), ("cpa", &cpa)] {
                if value.is_empty() {
                    return Err(ReferenceError::Malformed {
                        path: path.to_path_buf(),
                        line,
                        reason: format!("{column} is empty for {code}"),
                    });
                }
            }
            if let Some(&first) = first_line.get(&code) {
                return Err(ReferenceError::Duplicate {
                    path: path.to_path_buf(),
                    line,
                    first,
                    value: code,
                });
            }
            first_line.insert(code.clone(), line);
            las.insert(code.clone(), LocalAuthority { code, name, cpa });
            Ok(())
        })?;
        if las.is_empty() {
            return Err(ReferenceError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self { las })
    }

    /// Builds reference data from entries already validated elsewhere.
    pub fn from_entries(entries: impl IntoIterator<Item = LocalAuthority>) -> Self {
        Self {
            las: entries
                .into_iter()
                .map(|la| (la.code.clone(), la))
                .collect(),
        }
    }

    /// The authority with this code, if the reference data knows it.
    pub fn get(&self, code: &str) -> Option<&LocalAuthority> {
        self.las.get(code)
    }

    /// All authorities, in code order.
    pub fn iter(&self) -> impl Iterator<Item = &LocalAuthority> {
        self.las.values()
    }

    /// How many authorities the reference data lists.
    pub fn len(&self) -> usize {
        self.las.len()
    }

    /// Whether the reference data lists no authority.
    pub fn is_empty(&self) -> bool {
        self.las.is_empty()
    }
}

/// Whether `code` has the shape of an LA code: 1 to 16 ASCII letters and digits.
///
/// Codes end up in file names and database keys, so nothing else is accepted.
pub fn is_la_code(code: &str) -> bool {
    (1..=16).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Reads a headed CSV, finds `columns` by name and calls `row` with the
/// 1-based line number and the values in the order of `columns`.
fn for_each_row(
    path: &Path,
    columns: &[&'static str],
    expected: &'static str,
    mut row: impl FnMut(u64, Vec<String>) -> Result<(), ReferenceError>,
) -> Result<(), ReferenceError> {
    let file = std::fs::File::open(path).map_err(|source| ReferenceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(file);
    let malformed = |line: u64, reason: String| ReferenceError::Malformed {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let header = reader
        .headers()
        .map_err(|e| malformed(1, csv_reason(&e)))?
        .clone();
    let mut index = Vec::with_capacity(columns.len());
    for &column in columns {
        let at = header.iter().position(|h| h.trim() == column).ok_or(
            ReferenceError::MissingColumn {
                path: path.to_path_buf(),
                column,
                expected,
            },
        )?;
        index.push(at);
    }
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(malformed(line, csv_reason(&e))),
        }
        let line = record.position().map_or(line, |p| p.line());
        if record.len() == 1 && record[0].trim().is_empty() {
            continue;
        }
        let values = index.iter().map(|&i| record[i].to_string()).collect();
        row(line, values)?;
    }
}

/// A CSV error in words, without the crate's own position prefix.
pub(crate) fn csv_reason(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::Utf8 { err, .. } => {
            format!("invalid UTF-8 in field {}", err.field() + 1)
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("the row has {len} fields but the header has {expected_len}"),
        csv::ErrorKind::Io(e) => format!("read failed: {e}"),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(contents.as_bytes()).expect("write");
        f
    }

    #[test]
    fn default_payment_groups_are_in_reference_order() {
        let groups = PaymentGroups::default();
        assert_eq!(groups.position("JSA 18-24"), Some(0));
        assert_eq!(groups.position("JSA Prison Leavers"), Some(8));
        assert_eq!(groups.position("Total"), None);
    }

    #[test]
    fn payment_groups_file_overrides_the_default() {
        let f = file("payment_group\nJSA\nESA\nOther\n");
        let groups = PaymentGroups::load(f.path()).expect("loads");
        assert_eq!(groups.names(), ["JSA", "ESA", "Other"]);
    }

    #[test]
    fn duplicate_payment_group_names_the_line() {
        let f = file("payment_group\nJSA\nESA\nJSA\n");
        let err = PaymentGroups::load(f.path()).expect_err("duplicate");
        assert!(
            err.to_string().contains("line 4") && err.to_string().contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn las_load_by_header_name() {
        let f = file("cpa,la_code,la_name\nLondon East,E09000001,City\n");
        let las = LaReference::load(f.path()).expect("loads");
        let la = las.get("E09000001").expect("present");
        assert_eq!((la.name.as_str(), la.cpa.as_str()), ("City", "London East"));
    }

    #[test]
    fn las_reject_a_hostile_code() {
        let f = file("la_code,la_name,cpa\n../etc,City,London East\n");
        let err = LaReference::load(f.path()).expect_err("bad code");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn las_missing_column_is_named() {
        let f = file("la_code,la_name\nE1,City\n");
        let err = LaReference::load(f.path()).expect_err("no cpa");
        assert!(err.to_string().contains("`cpa`"), "{err}");
    }

    #[test]
    fn las_ragged_row_names_the_line() {
        let f = file("la_code,la_name,cpa\nE1,City,London East\nE2,Town\n");
        let err = LaReference::load(f.path()).expect_err("ragged");
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
