//! Configuration: `provider.toml` ([`provider`]) and `authority.toml`
//! ([`authority`]), each parsed in full (serde, `deny_unknown_fields`) and
//! then made into a **finished** configuration before anything runs: every
//! file it names read, every certificate and key loaded and matched, every
//! age recipient, schedule and table spec parsed and checked. A mistake
//! fails at start, naming the file, the key (or line and column) and the
//! reason, never at the first send.
//!
//! Relative paths are resolved against the directory holding the config
//! file, so a daemon started from anywhere reads the same files.

pub mod authority;
pub mod provider;

use std::path::{Path, PathBuf};

pub use authority::AuthorityConfig;
pub use provider::ProviderConfig;

use crate::reference::ReferenceError;

/// Why a configuration file cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// There is no file at the path.
    #[error(
        "no configuration file at {path}; run the command in the directory that holds \
         {expected}, or name the file with --config FILE"
    )]
    NotFound {
        path: PathBuf,
        /// The file's usual name: `provider.toml` or `authority.toml`.
        expected: &'static str,
    },
    /// The file exists but could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown, missing or mistyped key.
    #[error("{path}: line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key has a value that parses but is not allowed.
    #[error("{path}: `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// The reference data the config names cannot be loaded.
    #[error("{path}: `{key}`: {source}")]
    Reference {
        path: PathBuf,
        key: &'static str,
        #[source]
        source: ReferenceError,
    },
}

/// Reads a configuration file, telling a missing file from an unreadable one.
fn read(path: &Path, expected: &'static str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_path_buf(),
                expected,
            }
        } else {
            ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Parses TOML into raw structs, naming the line and column of a mistake.
fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let (line, column) = e
            .span()
            .map_or((1, 1), |span| line_column(text, span.start));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Where the TLS files of a side are, as configured (resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Trust anchors for the peers (PEM).
    pub ca: PathBuf,
    /// Revocation lists for the peers' certificates (PEM), if any.
    pub crls: Vec<PathBuf>,
}

/// What every check of one file shares: the file's path, for messages and
/// for resolving relative paths.
struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new(""));
        if p.is_absolute() || dir.as_os_str().is_empty() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    }

    fn non_empty(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        if value.trim().is_empty() {
            return Err(self.invalid(key, "must not be empty"));
        }
        Ok(())
    }

    fn address(&self, key: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
        value.parse().map_err(|_| {
            self.invalid(
                key,
                format!("{value:?} is not an address and port such as 127.0.0.1:7443"),
            )
        })
    }

    /// `[metrics] listen`, if given: a loopback address only.
    fn metrics(
        &self,
        raw: Option<&RawMetrics>,
    ) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let addr = self.address("metrics.listen", &raw.listen)?;
        if !addr.ip().is_loopback() {
            return Err(self.invalid(
                "metrics.listen",
                format!(
                    "{addr} is not a loopback address; the metrics endpoint is plain HTTP with \
                     no authentication and its labels name LAs and providers, so it listens on \
                     127.0.0.1 or [::1] only: scrape it with an agent on this machine"
                ),
            ));
        }
        Ok(Some(addr))
    }

    fn tls_paths(&self, raw: &RawTls) -> TlsPaths {
        TlsPaths {
            cert: self.resolve(&raw.cert),
            key: self.resolve(&raw.key),
            ca: self.resolve(&raw.ca),
            crls: raw.crls.iter().map(|p| self.resolve(p)).collect(),
        }
    }

    /// Loads the trust anchors in `ca` with the revocation lists in `crls`
    /// (a mistake in `ca` is reported under `ca_key`, one in a list under
    /// `crls_key`, naming the file).
    fn load_anchors(
        &self,
        ca: &Path,
        crls: &[PathBuf],
        ca_key: &str,
        crls_key: &str,
    ) -> Result<crate::tls::TrustAnchors, ConfigError> {
        let anchors =
            crate::tls::TrustAnchors::load(ca).map_err(|e| self.invalid(ca_key, e.to_string()))?;
        let now = rustls_pki_types::UnixTime::now();
        let mut lists = Vec::new();
        for path in crls {
            lists.extend(
                crate::tls::load_crls(path, now)
                    .map_err(|e| self.invalid(crls_key, e.to_string()))?,
            );
        }
        Ok(anchors.with_crls(lists))
    }

    /// Loads `[tls]`: the identity (chain and key, matched, the key
    /// owner-only) and the trust anchors for peers, with their revocation
    /// lists.
    fn load_tls(
        &self,
        paths: &TlsPaths,
    ) -> Result<(crate::tls::Identity, crate::tls::TrustAnchors), ConfigError> {
        // Before the key is read: a key others can read is refused as ssh
        // refuses one, even if nothing else is wrong.
        crate::tls::check_key_permissions(&paths.key)
            .map_err(|e| self.invalid("tls.key", e.to_string()))?;
        let identity = crate::tls::Identity::load(&paths.cert, &paths.key)
            .map_err(|e| self.invalid("tls.cert", e.to_string()))?;
        let anchors = self.load_anchors(&paths.ca, &paths.crls, "tls.ca", "tls.crls")?;
        Ok((identity, anchors))
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    #[serde(default)]
    crls: Vec<PathBuf>,
}

/// `[metrics]`: the Prometheus endpoint, off unless given.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 3));
    }
}
