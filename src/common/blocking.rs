//! Blocking work (SQLite, fsync, hashing, age over large files, CSV passes)
//! run off the async reactor, on tokio's blocking pool.

/// Blocking work that did not return: it panicked, or the runtime was
/// shutting down before it ran.
#[derive(Debug, thiserror::Error)]
#[error("a blocking task did not finish: {0}")]
pub struct TaskFailed(#[from] tokio::task::JoinError);

/// Runs `f` on the blocking pool and waits for it.
pub async fn blocking<T, F>(f: F) -> Result<T, TaskFailed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Ok(tokio::task::spawn_blocking(f).await?)
}
