//! # mishare
//!
//! Shares management information (MI) from an employment-programme provider
//! with local authorities (LAs): nothing unrounded, nothing unencrypted and
//! nothing unauthorised ever leaves.
//!
//! ## Data flow
//!
//! ```text
//! schedule ─► report run ─► sanitise ─► per-LA file ─► gate ─► seal (age) ─► outbox ─► push (gRPC, mTLS) ─► authority inbox
//!                              │                        │                      │                               │
//!                           findings                 refusal                spooled                        receipt
//!                              └─────────────► audit log (hash chain) ◄────────┴───────────────────────────────┘
//! ```
//!
//! ## The two programs, and what they share
//!
//! - [`provider`]: the provider daemon and its commands: the scheduler, the
//!   pipeline (plan → run → seal → spool, written once), the gate, the
//!   outbox, the push, DWP's `Directive` service, status, and the
//!   provider's store (its only SQL).
//! - [`authority`]: the LA's endpoint: receives pushes, verifies and stores
//!   files in its inbox, answers with signed receipts; its own store.
//!
//! Both build on:
//!
//! - [`config`]: `provider.toml` and `authority.toml`, parsed and finished
//!   (every file read, every key, certificate, recipient, schedule and table
//!   spec checked) before anything runs.
//! - [`common`]: the database, the audit chain, encodings, times, durable
//!   files, names, blocking work, the shutdown tree, reloads on SIGHUP,
//!   systemd notifications, the Prometheus endpoint, gRPC health, expiry
//!   warnings, refused handshakes coalesced for the audit, the test-only
//!   fault hook.
//! - [`sanitiser`]: the disclosure-control engine, pure library code.
//! - [`reference`](mod@reference): payment groups, LAs and contract package
//!   areas, from versioned files.
//! - [`cron`]: five-field cron in Europe/London, clock changes included.
//! - [`seal`]: age encryption to each LA's X25519 recipients, streaming;
//!   decryption and keys.
//! - [`tls`]: mutual TLS 1.3 for every connection; peers identified by the
//!   DNS name in their certificate, against an allow-list.
//! - [`wire`]: the gRPC contract (`proto/mishare/v1/exchange.proto`).
//! - [`receipt`]: receipts signed with the endpoint's TLS key, and their
//!   offline verification.
//! - [`certs`]: a development PKI (never for production).
//!
//! `provider` and `authority` never import each other.

pub mod authority;
pub mod certs;
pub mod common;
pub mod config;
pub mod cron;
pub mod provider;
pub mod receipt;
pub mod reference;
pub mod sanitiser;
pub mod seal;
pub mod tls;
pub mod wire;
