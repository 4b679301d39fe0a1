//! Reference data: the declared dimensions a table may be laid out by
//! (payment groups and characteristics such as disability), local
//! authorities and the contract package areas (CPAs) they lie in.
//!
//! None of this is hard-coded policy. The declared dimensions have a
//! built-in default (the Work Programme's nine payment groups, and disability
//! `Y`/`N`) that a versioned file (`dimension,category,label`) replaces; LAs
//! and CPAs always come from a versioned file (`la_code,la_name,cpa`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::common::names::is_la_code;

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

/// The built-in characteristic: disability, `Y` (Disabled) then `N` (Not
/// disabled), in reference order.
pub const DEFAULT_DISABILITY: [(&str, &str); 2] = [("Y", "Disabled"), ("N", "Not disabled")];

/// The name of the built-in characteristic.
pub const DISABILITY: &str = "disability";

/// The name of the dimension holding LA codes (from [`LaReference`]).
pub const LA_CODE: &str = "la_code";

/// The name of the dimension holding payment groups.
pub const PAYMENT_GROUP: &str = "payment_group";

/// The name of the derived period dimension (from a measure's stage date).
pub const PERIOD: &str = "period";

/// The column of a counts file holding the figures.
pub const COUNT: &str = "count";

/// The column that, in a counts file carrying several measures, says which
/// measure a row counts.
pub const MEASURE_COLUMN: &str = "measure";

/// The participant-record column that identifies a participant.
pub const PARTICIPANT_ID: &str = "participant_id";

/// The participant-record columns holding the date each stage was reached,
/// in programme order: referrals, attachments, job starts, job outcomes,
/// sustainments.
pub const STAGE_DATE_COLUMNS: [&str; 5] = [
    "referral_date",
    "attachment_date",
    "job_start_date",
    "job_outcome_date",
    "first_sustainment_date",
];

/// The most categories a characteristic may declare. A finer breakdown is
/// all small cells (R6) and only helps someone single a person out.
pub const MAX_CHARACTERISTIC_CATEGORIES: usize = 64;

/// The columns of participant records that are not characteristics: the
/// identifier and the five stage dates. None of them can be declared as a
/// dimension (R14).
pub fn record_columns_not_characteristics() -> impl Iterator<Item = &'static str> {
    std::iter::once(PARTICIPANT_ID).chain(STAGE_DATE_COLUMNS)
}

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
    /// The file has no entries (or is empty altogether).
    #[error("reference data {path} has no entries")]
    Empty { path: PathBuf },
    /// A dimensions file does not declare a dimension every table needs.
    #[error(
        "reference data {path} declares no `{dimension}` dimension; add one row per category \
         (`{dimension},CATEGORY,LABEL`), in reference order"
    )]
    MissingDimension {
        path: PathBuf,
        dimension: &'static str,
    },
}

/// One category of a declared dimension: the value the input holds, and the
/// label the output shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// As it appears in the input, for example `Y`.
    pub code: String,
    /// As tables show it, for example `Disabled`.
    pub label: String,
}

/// A declared dimension: its name and its full, ordered list of categories.
/// Every category is laid out in every table that uses the dimension,
/// whether or not anyone falls in it (R15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dimension {
    name: String,
    categories: Vec<Category>,
    position: HashMap<String, usize>,
}

impl Dimension {
    /// The dimension's name, as rows, columns and filters name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The categories in reference order.
    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// The position of the category whose code is `code`, in reference order.
    pub fn position(&self, code: &str) -> Option<usize> {
        self.position.get(code).copied()
    }

    /// How many categories it has (never 0).
    pub fn len(&self) -> usize {
        self.categories.len()
    }

    /// Always `false`: a dimension declares at least one category.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
    }

    /// Builds a dimension from categories already checked to be distinct.
    fn from_checked(name: &str, categories: Vec<Category>) -> Self {
        let position = (categories.iter().enumerate())
            .map(|(i, c)| (c.code.clone(), i))
            .collect();
        Self {
            name: name.to_string(),
            categories,
            position,
        }
    }
}

/// The declared dimensions: `payment_group` and the characteristics (such
/// as `disability`), each with its categories and labels, in reference
/// order. `period` (derived from dates) and `la_code` (from
/// [`LaReference`]) are declared elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dimensions {
    /// In file order; `payment_group` is always one of them.
    dims: Vec<Dimension>,
}

impl Default for Dimensions {
    /// The Work Programme's nine payment groups, then disability (`Y`
    /// Disabled, `N` Not disabled).
    fn default() -> Self {
        let groups = DEFAULT_PAYMENT_GROUPS.map(|g| Category {
            code: g.to_string(),
            label: g.to_string(),
        });
        let disability = DEFAULT_DISABILITY.map(|(code, label)| Category {
            code: code.to_string(),
            label: label.to_string(),
        });
        Self {
            dims: vec![
                Dimension::from_checked(PAYMENT_GROUP, groups.to_vec()),
                Dimension::from_checked(DISABILITY, disability.to_vec()),
            ],
        }
    }
}

impl Dimensions {
    /// Loads a declaration: a CSV with the header `dimension,category,label`
    /// and one row per category, in reference order (an empty label means
    /// the label is the category). It must declare `payment_group`; every
    /// other dimension is a characteristic of at most
    /// [`MAX_CHARACTERISTIC_CATEGORIES`] categories. Every mistake names the
    /// file and, where there is one, the line.
    pub fn load(path: &Path) -> Result<Self, ReferenceError> {
        const COLUMNS: [&str; 3] = ["dimension", "category", "label"];
        let mut dims: Vec<(Dimension, HashMap<String, u64>)> = Vec::new();
        let mut labels: HashMap<(String, String), (u64, String)> = HashMap::new();
        for_each_row(path, &COLUMNS, "dimension,category,label", |line, row| {
            let malformed = |reason: String| ReferenceError::Malformed {
                path: path.to_path_buf(),
                line,
                reason,
            };
            let name = row[0].trim();
            let code = row[1].trim();
            let label = match row[2].trim() {
                "" => code,
                label => label,
            };
            check_dimension_name(name).map_err(malformed)?;
            if code.is_empty() {
                return Err(malformed(format!("the category of `{name}` is empty")));
            }
            for (what, value) in [("category", code), ("label", label)] {
                if value.chars().any(char::is_control) {
                    return Err(malformed(format!(
                        "the {what} {value:?} of `{name}` holds a control character"
                    )));
                }
            }
            if code.eq_ignore_ascii_case("total") {
                return Err(malformed(format!(
                    "`{code}` cannot be a category of `{name}`: `Total` is reserved for \
                     declared totals"
                )));
            }
            let at = match dims.iter().position(|(d, _)| d.name == name) {
                Some(at) => at,
                None => {
                    dims.push((Dimension::from_checked(name, Vec::new()), HashMap::new()));
                    dims.len() - 1
                }
            };
            let (dim, first_line) = &mut dims[at];
            if let Some(first) = first_line.get(code) {
                return Err(malformed(format!(
                    "category `{code}` of `{name}` appears twice (first on line {first})"
                )));
            }
            if let Some((first, other)) = labels.get(&(name.to_string(), label.to_string())) {
                return Err(malformed(format!(
                    "label `{label}` of `{name}` is already the label of category `{other}` \
                     (line {first}); two categories with one label could not be told apart"
                )));
            }
            if name != PAYMENT_GROUP && dim.len() == MAX_CHARACTERISTIC_CATEGORIES {
                return Err(malformed(format!(
                    "`{name}` has more than {MAX_CHARACTERISTIC_CATEGORIES} categories; a \
                     breakdown that fine is all small cells — declare coarser bands"
                )));
            }
            first_line.insert(code.to_string(), line);
            labels.insert(
                (name.to_string(), label.to_string()),
                (line, code.to_string()),
            );
            dim.position.insert(code.to_string(), dim.categories.len());
            dim.categories.push(Category {
                code: code.to_string(),
                label: label.to_string(),
            });
            Ok(())
        })?;
        if dims.is_empty() {
            return Err(ReferenceError::Empty {
                path: path.to_path_buf(),
            });
        }
        if !dims.iter().any(|(d, _)| d.name == PAYMENT_GROUP) {
            return Err(ReferenceError::MissingDimension {
                path: path.to_path_buf(),
                dimension: PAYMENT_GROUP,
            });
        }
        Ok(Self {
            dims: dims.into_iter().map(|(d, _)| d).collect(),
        })
    }

    /// The same declaration with the payment groups replaced (as
    /// `--payment-groups FILE` does); each group's label is its name.
    pub fn with_payment_groups(mut self, groups: &PaymentGroups) -> Self {
        let categories = (groups.names().iter())
            .map(|g| Category {
                code: g.clone(),
                label: g.clone(),
            })
            .collect();
        let replacement = Dimension::from_checked(PAYMENT_GROUP, categories);
        for dim in &mut self.dims {
            if dim.name == PAYMENT_GROUP {
                *dim = replacement;
                break;
            }
        }
        self
    }

    /// The dimension with this name, if declared.
    pub fn get(&self, name: &str) -> Option<&Dimension> {
        self.dims.iter().find(|d| d.name == name)
    }

    /// The payment groups (always declared).
    pub fn payment_groups(&self) -> &Dimension {
        self.get(PAYMENT_GROUP)
            .expect("every declaration has payment_group")
    }

    /// Every declared dimension, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Dimension> {
        self.dims.iter()
    }
}

/// A dimension name: a lower-case letter, then up to 31 lower-case letters,
/// digits or `_`, and not one of the names a declaration may not take.
fn check_dimension_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let shaped = (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && (b.iter()).all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if !shaped {
        return Err(format!(
            "{name:?} is not a dimension name: a lower-case letter, then up to 31 lower-case \
             letters, digits or `_`"
        ));
    }
    let why = if name == PERIOD {
        "is derived from the measure's own stage date"
    } else if name == LA_CODE {
        "comes from the LA reference data (la_code,la_name,cpa)"
    } else if name == COUNT || name == MEASURE_COLUMN {
        "names the figures of a counts file, not a breakdown"
    } else if record_columns_not_characteristics().any(|c| c == name) {
        "is a column of participant records that is not a characteristic (an identifier \
         or a stage date)"
    } else {
        return Ok(());
    };
    Err(format!(
        "`{name}` cannot be declared as a dimension: it {why}"
    ))
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
            let reason = if name.is_empty() {
                Some("the payment group is empty".to_string())
            } else if name.eq_ignore_ascii_case("total") {
                Some(format!(
                    "`{name}` cannot be a payment group: `Total` is reserved for declared totals"
                ))
            } else if name.chars().any(char::is_control) {
                Some(format!("{name:?} holds a control character"))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ReferenceError::Malformed {
                    path: path.to_path_buf(),
                    line,
                    reason,
                });
            }
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

/// The local authorities, keyed by code, remembering the file's order.
#[derive(Debug, Clone, Default)]
pub struct LaReference {
    las: BTreeMap<String, LocalAuthority>,
    /// Codes in file order: the order of the `la_code` dimension.
    order: Vec<String>,
}

impl LaReference {
    /// Loads `la_code,la_name,cpa` (columns found by header name).
    pub fn load(path: &Path) -> Result<Self, ReferenceError> {
        let mut las = BTreeMap::new();
        let mut order = Vec::new();
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
            order.push(code.clone());
            las.insert(code.clone(), LocalAuthority { code, name, cpa });
            Ok(())
        })?;
        if las.is_empty() {
            return Err(ReferenceError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self { las, order })
    }

    /// Builds reference data from entries already validated elsewhere, in
    /// their given order (a repeated code keeps its first place and its
    /// last entry).
    pub fn from_entries(entries: impl IntoIterator<Item = LocalAuthority>) -> Self {
        let mut reference = Self::default();
        for la in entries {
            if !reference.las.contains_key(&la.code) {
                reference.order.push(la.code.clone());
            }
            reference.las.insert(la.code.clone(), la);
        }
        reference
    }

    /// The authority with this code, if the reference data knows it.
    pub fn get(&self, code: &str) -> Option<&LocalAuthority> {
        self.las.get(code)
    }

    /// The authority an operator or DWP means by `given`: its code exactly,
    /// or the one code that equals it but for case (an LA code's letters
    /// are never the only difference between two LAs, so case is
    /// unambiguous). `None` if the reference data does not list it.
    pub fn resolve(&self, given: &str) -> Option<&LocalAuthority> {
        let given = given.trim();
        self.get(given).or_else(|| {
            let mut matches = self
                .las
                .values()
                .filter(|la| la.code.eq_ignore_ascii_case(given));
            let first = matches.next()?;
            matches.next().is_none().then_some(first)
        })
    }

    /// All authorities, in code order.
    pub fn iter(&self) -> impl Iterator<Item = &LocalAuthority> {
        self.las.values()
    }

    /// The position of `code` in the reference file's order.
    pub fn position(&self, code: &str) -> Option<usize> {
        self.order.iter().position(|c| c == code)
    }

    /// All authorities in the order of the reference file: the order of the
    /// `la_code` dimension in a table.
    pub fn in_file_order(&self) -> impl Iterator<Item = &LocalAuthority> {
        self.order.iter().map(|code| &self.las[code])
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
    if header.iter().all(|h| h.trim().is_empty()) {
        return Err(ReferenceError::Empty {
            path: path.to_path_buf(),
        });
    }
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
    fn payment_groups_refuse_total() {
        let f = file("payment_group\nJSA\nTOTAL\n");
        let err = PaymentGroups::load(f.path()).expect_err("reserved");
        assert!(
            err.to_string()
                .contains("line 3: `TOTAL` cannot be a payment group"),
            "{err}"
        );
    }

    #[test]
    fn default_dimensions_are_the_nine_groups_and_disability() {
        let d = Dimensions::default();
        let names: Vec<&str> = d.iter().map(Dimension::name).collect();
        assert_eq!(names, ["payment_group", "disability"]);
        let groups: Vec<&str> = (d.payment_groups().categories().iter())
            .map(|c| c.label.as_str())
            .collect();
        assert_eq!(groups, DEFAULT_PAYMENT_GROUPS);
        let disability = d.get("disability").expect("built in");
        let codes: Vec<(&str, &str)> = (disability.categories().iter())
            .map(|c| (c.code.as_str(), c.label.as_str()))
            .collect();
        assert_eq!(codes, [("Y", "Disabled"), ("N", "Not disabled")]);
        assert_eq!(disability.position("N"), Some(1));
    }

    #[test]
    fn a_dimensions_file_declares_groups_and_characteristics_with_labels() {
        let f = file(
            "dimension,category,label\n\
             payment_group,JSA,\n\
             age_band,18-24,Aged 18 to 24\n\
             payment_group,ESA,Employment and Support Allowance\n\
             age_band,25+,\n",
        );
        let d = Dimensions::load(f.path()).expect("loads");
        let names: Vec<&str> = d.iter().map(Dimension::name).collect();
        assert_eq!(names, ["payment_group", "age_band"]);
        let age: Vec<(&str, &str)> = (d.get("age_band").expect("declared").categories().iter())
            .map(|c| (c.code.as_str(), c.label.as_str()))
            .collect();
        assert_eq!(age, [("18-24", "Aged 18 to 24"), ("25+", "25+")]);
        assert_eq!(
            d.payment_groups().categories()[1].label,
            "Employment and Support Allowance"
        );
        assert!(
            d.get("disability").is_none(),
            "the file is the whole declaration"
        );

        let groups = PaymentGroups::from_names(["A".to_string(), "B".to_string()]).expect("ok");
        let replaced = d.with_payment_groups(&groups);
        assert_eq!(replaced.payment_groups().len(), 2);
        assert!(replaced.get("age_band").is_some());
    }

    #[test]
    fn a_bad_dimensions_file_names_the_file_and_line() {
        let many: String = (0..=MAX_CHARACTERISTIC_CATEGORIES)
            .map(|i| format!("band,b{i},\n"))
            .collect();
        let cases = [
            (
                "payment_group,JSA,\npayment_group,JSA,x\n",
                "line 3: category `JSA` of `payment_group` appears twice (first on line 2)",
            ),
            (
                "payment_group,,\n",
                "line 2: the category of `payment_group` is empty",
            ),
            (
                "payment_group,JSA,\nAge Band,x,\n",
                "line 3: \"Age Band\" is not a dimension name",
            ),
            (
                "payment_group,JSA,\nperiod,2012-09,\n",
                "line 3: `period` cannot be declared",
            ),
            (
                "payment_group,JSA,\nla_code,E1,\n",
                "line 3: `la_code` cannot be declared",
            ),
            (
                "payment_group,JSA,\ncount,1,\n",
                "line 3: `count` cannot be declared",
            ),
            (
                "payment_group,JSA,\nmeasure,x,\n",
                "line 3: `measure` cannot be declared",
            ),
            (
                "payment_group,JSA,\nparticipant_id,P1,\n",
                "line 3: `participant_id` cannot be declared",
            ),
            (
                "payment_group,JSA,\njob_outcome_date,2012-09-01,\n",
                "line 3: `job_outcome_date` cannot be declared",
            ),
            (
                "payment_group,JSA,\npayment_group,Total,\n",
                "line 3: `Total` cannot be a category",
            ),
            (
                "payment_group,JSA,Same\npayment_group,ESA,Same\n",
                "line 3: label `Same` of `payment_group` is already",
            ),
            ("disability,Y,\n", "declares no `payment_group` dimension"),
            ("", "has no entries"),
        ];
        for (rows, expected) in cases {
            let f = file(&format!("dimension,category,label\n{rows}"));
            let err = Dimensions::load(f.path()).expect_err(rows);
            let text = err.to_string();
            assert!(text.contains(&f.path().display().to_string()), "{text}");
            assert!(text.contains(expected), "{rows:?}: {text}");
        }
        let f = file(&format!(
            "dimension,category,label\npayment_group,JSA,\n{many}"
        ));
        let err = Dimensions::load(f.path()).expect_err("too many");
        assert!(
            err.to_string()
                .contains("line 67: `band` has more than 64 categories"),
            "{err}"
        );
        let f = file("");
        let err = Dimensions::load(f.path()).expect_err("empty file");
        assert!(err.to_string().contains("has no entries"), "{err}");
        let f = file("dimension,category\npayment_group,JSA\n");
        let err = Dimensions::load(f.path()).expect_err("no label column");
        assert!(err.to_string().contains("`label`"), "{err}");
    }

    #[test]
    fn las_keep_the_file_order() {
        let f = file("la_code,la_name,cpa\nE3,C,X\nE1,A,X\nE2,B,X\n");
        let las = LaReference::load(f.path()).expect("loads");
        let order: Vec<&str> = las.in_file_order().map(|la| la.code.as_str()).collect();
        assert_eq!(order, ["E3", "E1", "E2"]);
        assert_eq!(las.position("E1"), Some(1));
        let codes: Vec<&str> = las.iter().map(|la| la.code.as_str()).collect();
        assert_eq!(codes, ["E1", "E2", "E3"], "iter stays in code order");
    }

    #[test]
    fn las_resolve_by_code_whatever_its_case() {
        let f = file(
            "la_code,la_name,cpa\nE09000002,Barking,London East\nE09000030,Tower,London East\n",
        );
        let las = LaReference::load(f.path()).expect("loads");
        assert_eq!(
            las.resolve("E09000002").map(|l| l.code.as_str()),
            Some("E09000002")
        );
        assert_eq!(
            las.resolve(" e09000002 ").map(|l| l.code.as_str()),
            Some("E09000002")
        );
        assert!(las.resolve("E99999999").is_none());
        assert!(las.resolve("").is_none());
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
