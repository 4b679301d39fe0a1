//! A manifest, validated field by field before any of it touches a path or
//! the database.

use crate::common::names::{is_period, is_report_name, is_transfer_id};
use crate::wire::v1;

use super::error::ExchangeError;

/// The age v1 magic every payload starts with.
pub const AGE_MAGIC: &[u8] = crate::seal::AGE_V1_MAGIC;

/// A manifest whose every field has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `[A-Za-z0-9-]{8,64}`.
    pub transfer_id: String,
    /// `[a-z0-9][a-z0-9-]{0,63}`.
    pub report: String,
    /// `YYYY-MM`, `YYYY-Qn` or `YYYY`.
    pub period: String,
    /// `internal` or `published`.
    pub classification: &'static str,
    /// Ciphertext bytes, at least the age magic and at most the limit.
    pub size: u64,
    pub sha256: [u8; 32],
    /// Where the stream starts.
    pub offset: u64,
}

impl Manifest {
    /// The file name in the provider's inbox folder:
    /// `<period>_<report>_<transfer_id>.age`. Every part was validated, so
    /// it holds no separator and cannot be `.` or `..`.
    pub fn stored_as(&self) -> String {
        format!("{}_{}_{}.age", self.period, self.report, self.transfer_id)
    }
}

/// Checks a manifest from the wire against this endpoint's code and limit.
pub fn validate(
    wire: v1::Manifest,
    own_code: &str,
    max_file_bytes: u64,
) -> Result<Manifest, ExchangeError> {
    let bad = |what: String| Err(ExchangeError::Invalid(format!("bad manifest: {what}")));
    if !is_transfer_id(&wire.transfer_id) {
        return bad(format!(
            "transfer_id {} is not 8 to 64 ASCII letters, digits and '-'",
            shown(&wire.transfer_id)
        ));
    }
    if !is_report_name(&wire.report) {
        return bad(format!(
            "report {} is not a report name ([a-z0-9][a-z0-9-]{{0,63}})",
            shown(&wire.report)
        ));
    }
    if !is_period(&wire.period) {
        return bad(format!(
            "period {} is not YYYY-MM, YYYY-Qn or YYYY",
            shown(&wire.period)
        ));
    }
    let classification = match v1::Classification::try_from(wire.classification) {
        Ok(v1::Classification::Internal) => "internal",
        Ok(v1::Classification::Published) => "published",
        Ok(v1::Classification::Unspecified) | Err(_) => {
            return bad(format!(
                "classification {} is neither INTERNAL nor PUBLISHED",
                wire.classification
            ));
        }
    };
    let Ok(sha256) = <[u8; 32]>::try_from(wire.sha256.as_slice()) else {
        return bad(format!("sha256 is {} bytes, not 32", wire.sha256.len()));
    };
    if wire.size < AGE_MAGIC.len() as u64 {
        return bad(format!(
            "size {} is too small for an age v1 file",
            wire.size
        ));
    }
    if wire.offset > wire.size {
        return bad(format!(
            "offset {} is beyond size {}",
            wire.offset, wire.size
        ));
    }
    if wire.la_code != own_code {
        return Err(ExchangeError::NotPermitted(format!(
            "this endpoint receives files for {own_code}, not for {}",
            shown(&wire.la_code)
        )));
    }
    if wire.size > max_file_bytes {
        return Err(ExchangeError::OverLimit(format!(
            "the file is {} bytes; this endpoint accepts at most {max_file_bytes}",
            wire.size
        )));
    }
    Ok(Manifest {
        transfer_id: wire.transfer_id,
        report: wire.report,
        period: wire.period,
        classification,
        size: wire.size,
        sha256,
        offset: wire.offset,
    })
}

/// A peer's string, quoted and cut short, for messages and logs.
pub fn shown(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> v1::Manifest {
        v1::Manifest {
            transfer_id: "transfer-0001".into(),
            report: "referrals-monthly".into(),
            period: "2012-10".into(),
            classification: v1::Classification::Internal as i32,
            la_code: "E09000002".into(),
            size: 100,
            sha256: vec![0; 32],
            offset: 0,
        }
    }

    #[test]
    fn a_good_manifest_passes_and_names_its_file() {
        let m = validate(wire(), "E09000002", 1000).expect("valid");
        assert_eq!(m.stored_as(), "2012-10_referrals-monthly_transfer-0001.age");
    }

    #[test]
    fn each_bad_field_is_refused_with_its_code() {
        type Change = fn(&mut v1::Manifest);
        let cases: Vec<(Change, tonic::Code)> = vec![
            (
                |m| m.transfer_id = "../x".into(),
                tonic::Code::InvalidArgument,
            ),
            (
                |m| m.report = "../../etc".into(),
                tonic::Code::InvalidArgument,
            ),
            (
                |m| m.period = "2012-13".into(),
                tonic::Code::InvalidArgument,
            ),
            (|m| m.classification = 0, tonic::Code::InvalidArgument),
            (|m| m.classification = 9, tonic::Code::InvalidArgument),
            (|m| m.sha256 = vec![0; 31], tonic::Code::InvalidArgument),
            (|m| m.size = 3, tonic::Code::InvalidArgument),
            (|m| m.offset = 101, tonic::Code::InvalidArgument),
            (
                |m| m.la_code = "E09000030".into(),
                tonic::Code::PermissionDenied,
            ),
            (|m| m.size = 1001, tonic::Code::ResourceExhausted),
        ];
        for (i, (change, code)) in cases.into_iter().enumerate() {
            let mut m = wire();
            change(&mut m);
            let err = validate(m, "E09000002", 1000).expect_err("refused");
            assert_eq!(err.code(), code, "case {i}: {err}");
        }
    }
}
