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
//! ## Modules, in the order data meets them
//!
//! - [`config`]: `provider.toml`, parsed in full and validated into a
//!   finished configuration before anything runs.
//! - [`reference`](mod@reference): payment groups, LAs and contract package areas, loaded
//!   from versioned files.
//! - [`schedule`]: five-field cron in Europe/London, clock changes included.
//! - [`report`]: a report run: the source read once, one sanitised CSV per
//!   recipient LA, in memory, for the last complete period.
//! - [`sanitiser`]: the disclosure-control engine. Reads counts or
//!   participant records, rounds to 20, recomputes totals, turns outcome
//!   measures into shares, labels the output and reports findings.
//! - [`gate`]: whether a file may go to an LA now; permits that cannot be
//!   kept, refusals with reason codes, failing closed.
//! - [`store`]: the provider's SQLite state: agreements with their history,
//!   suspensions, migrations; owner-only, WAL mode.
//! - [`audit`]: the append-only, hash-chained audit log and its verification.
//! - [`seal`]: age encryption of each LA's file to its X25519 recipients,
//!   streaming, with the ciphertext's size and SHA-256; decryption and keys.
//! - [`outbox`]: report runs and deliveries; ciphertext sealed and spooled
//!   with its SHA-256 before the first byte goes out; receipts.
//! - [`push`]: one delivery streamed to its LA's endpoint, the gate asked at
//!   transfer start and before commit, cut off in flight by a suspension,
//!   resumed after a dropped connection.
//! - [`tls`]: mutual TLS 1.3 for every connection; peers identified by the
//!   DNS name in their certificate, against an allow-list.
//! - [`certs`]: a development PKI (never for production).
//! - [`wire`]: the gRPC contract (`proto/mishare/v1/exchange.proto`).
//! - [`receipt`]: receipts signed with the endpoint's TLS key, and their
//!   offline verification.
//! - [`authority`]: the LA's endpoint: receives pushes, verifies and stores
//!   files in its inbox, answers with signed receipts.
//! - [`directive`]: DWP's `Directive` service (suspend, lift, list), over
//!   mutual TLS to DWP identities only.
//! - [`scheduler`]: which runs of each report are due, missed runs
//!   (`run-once` or `skip`), and the per-report mark that makes a restart
//!   neither repeat nor lose a run.
//! - [`provider`]: the provider daemon (`provider run`: the schedule, the
//!   retrying outbox, single instance per `data_dir`) and `send-now`.
//! - [`fault`]: a test-only hook that aborts the process at a named stage,
//!   for the crash-safety suite. Never set in production.

pub mod audit;
pub mod authority;
pub mod certs;
pub mod config;
pub mod directive;
pub mod fault;
pub mod gate;
pub mod outbox;
pub mod provider;
pub mod push;
pub mod receipt;
pub mod reference;
pub mod report;
pub mod sanitiser;
pub mod schedule;
pub mod scheduler;
pub mod seal;
pub mod store;
pub mod tls;
pub mod wire;
