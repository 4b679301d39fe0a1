//! What the two readers share: the error type, the header and messages that
//! name where a problem is.

use std::io;

use super::findings::{Blocked, Code};

/// Why an input could not become a table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The input could not be read at all (not a problem with its contents).
    #[error("cannot read {input}: {error}")]
    Io {
        /// The input as the user named it.
        input: String,
        #[source]
        error: io::Error,
    },
    /// The contents are blocked: each error names its line and column.
    #[error(transparent)]
    Blocked(#[from] Blocked),
}

/// A CSV header: column names, unique and non-empty.
#[derive(Debug)]
pub(crate) struct Header {
    names: Vec<String>,
}

impl Header {
    /// Parses the first record. A UTF-8 byte-order mark is dropped and names
    /// are trimmed.
    pub(crate) fn parse(record: &csv::ByteRecord, input: &str) -> Result<Self, Blocked> {
        let malformed =
            |why: String| Blocked::one(Code::MalformedCsv, format!("{input} line 1: {why}"));
        let mut names: Vec<String> = Vec::with_capacity(record.len());
        for (i, field) in record.iter().enumerate() {
            let field = if i == 0 {
                field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
            } else {
                field
            };
            let name = std::str::from_utf8(field)
                .map_err(|_| malformed(format!("header field {} is not valid UTF-8", i + 1)))?
                .trim();
            if name.is_empty() {
                return Err(malformed(format!("header field {} is empty", i + 1)));
            }
            if names.iter().any(|n| n == name) {
                return Err(malformed(format!("the header names `{name}` twice")));
            }
            names.push(name.to_string());
        }
        Ok(Self { names })
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The position of `name`, or a block with `code` that lists the columns
    /// the header does have.
    pub(crate) fn require(
        &self,
        name: &str,
        code: Code,
        input: &str,
        why: impl FnOnce() -> String,
    ) -> Result<usize, Blocked> {
        self.position(name).ok_or_else(|| {
            Blocked::one(
                code,
                format!(
                    "{input}: {}; its columns are: {}",
                    why(),
                    self.names.join(", ")
                ),
            )
        })
    }

    pub(crate) fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// A `csv` crate error as an [`InputError`] naming the input and line.
pub(crate) fn csv_error(input: &str, error: csv::Error) -> InputError {
    let line = error.position().map_or(0, |p| p.line());
    match error.into_kind() {
        csv::ErrorKind::Io(error) => InputError::Io {
            input: input.to_string(),
            error,
        },
        kind => Blocked::one(
            Code::MalformedCsv,
            format!("{input} line {line}: not valid CSV ({kind:?})"),
        )
        .into(),
    }
}

/// A value quoted for a message: control characters escaped, long values cut.
pub(crate) fn quote(value: &str) -> String {
    const MAX: usize = 40;
    let mut shown: String = value.chars().take(MAX).collect();
    if value.chars().nth(MAX).is_some() {
        shown.push('…');
    }
    format!("\"{}\"", shown.escape_debug())
}

/// The same as [`quote`] for raw bytes (lossy for invalid UTF-8).
pub(crate) fn quote_bytes(value: &[u8]) -> String {
    quote(&String::from_utf8_lossy(value))
}
