//! What can go wrong serving `Exchange`, and the one place those errors
//! become `tonic::Status`.
//!
//! | error | gRPC code |
//! |---|---|
//! | a bad manifest or chunk, a payload that is not age | `INVALID_ARGUMENT` |
//! | an unknown provider identity, a file for another LA | `PERMISSION_DENIED` |
//! | a file, chunk or stream count over a limit, a provider's partial bytes over its limit, a disk below its free-space floor | `RESOURCE_EXHAUSTED` |
//! | size or SHA-256 wrong at commit | `DATA_LOSS` |
//! | an offset other than the committed size, a transfer busy on another stream | `FAILED_PRECONDITION` |
//! | a stream without progress for longer than `stream_idle_secs` | `DEADLINE_EXCEEDED` |
//! | a stream that ends or breaks before its `Commit` | `CANCELLED` |
//! | the endpoint shutting down | `UNAVAILABLE` |
//! | anything internal (I/O, SQLite) | `INTERNAL`, with a generic message; the cause is logged |

use std::path::PathBuf;

use tonic::{Code, Status};

use crate::common::blocking::TaskFailed;
use crate::common::db::DbError;
use crate::receipt::ReceiptError;

/// Why a push or query was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The manifest or a chunk is malformed, or the payload is not age.
    #[error("{0}")]
    Invalid(String),
    /// The peer may not do this (unknown identity, another LA's file).
    #[error("{0}")]
    NotPermitted(String),
    /// A file, chunk or stream count is over a limit.
    #[error("{0}")]
    OverLimit(String),
    /// The bytes received do not have the manifest's size or SHA-256; the
    /// partial transfer was discarded.
    #[error("{0}")]
    DataLoss(String),
    /// An offset other than what the endpoint has, or the transfer is busy.
    #[error("{0}")]
    WrongOffset(String),
    /// The peer sent nothing for too long.
    #[error("{0}")]
    Idle(String),
    /// The stream broke or ended before its Commit (the provider went
    /// away); what arrived is kept for a resume.
    #[error("{0}")]
    Disconnected(String),
    /// The endpoint is shutting down.
    #[error("the endpoint is shutting down; resume the transfer later from its committed offset")]
    ShuttingDown,
    /// Something inside the endpoint failed; never shown to the peer.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// An internal failure: logged, never sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InternalError {
    /// A file or directory could not be used.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A receipt could not be signed.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// A blocking task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] TaskFailed),
    /// The files and the database disagree in a way this program never
    /// leaves them.
    #[error("{0}")]
    Inconsistent(String),
}

impl From<rusqlite::Error> for InternalError {
    fn from(e: rusqlite::Error) -> Self {
        InternalError::Db(DbError::Sqlite(e))
    }
}

impl From<rusqlite::Error> for ExchangeError {
    fn from(e: rusqlite::Error) -> Self {
        ExchangeError::Internal(e.into())
    }
}

impl From<DbError> for ExchangeError {
    fn from(e: DbError) -> Self {
        ExchangeError::Internal(e.into())
    }
}

/// The message an internal failure sends.
pub const INTERNAL_MESSAGE: &str = "internal error; the endpoint logged the cause";

impl ExchangeError {
    /// The gRPC code this error is sent with.
    pub fn code(&self) -> Code {
        match self {
            ExchangeError::Invalid(_) => Code::InvalidArgument,
            ExchangeError::NotPermitted(_) => Code::PermissionDenied,
            ExchangeError::OverLimit(_) => Code::ResourceExhausted,
            ExchangeError::DataLoss(_) => Code::DataLoss,
            ExchangeError::WrongOffset(_) => Code::FailedPrecondition,
            ExchangeError::Idle(_) => Code::DeadlineExceeded,
            ExchangeError::Disconnected(_) => Code::Cancelled,
            ExchangeError::ShuttingDown => Code::Unavailable,
            ExchangeError::Internal(_) => Code::Internal,
        }
    }

    /// What the peer is told (and the audit log records): the message,
    /// except for internal failures.
    pub fn public_message(&self) -> String {
        match self {
            ExchangeError::Internal(_) => INTERNAL_MESSAGE.to_string(),
            other => other.to_string(),
        }
    }
}

impl From<ExchangeError> for Status {
    fn from(e: ExchangeError) -> Self {
        if let ExchangeError::Internal(cause) = &e {
            tracing::error!(
                error = %crate::tls::error_chain(cause),
                "internal error serving a provider"
            );
        }
        Status::new(e.code(), e.public_message())
    }
}

/// Runs blocking work (SQLite, fsync, hashing) off the reactor
/// ([`crate::common::blocking`]), a failed task being an internal error.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ExchangeError>
where
    F: FnOnce() -> Result<T, ExchangeError> + Send + 'static,
    T: Send + 'static,
{
    crate::common::blocking::blocking(f)
        .await
        .map_err(|e| ExchangeError::Internal(e.into()))?
}
