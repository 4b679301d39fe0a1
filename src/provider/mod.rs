//! The provider: its daemon and the one-off commands that act on the same
//! state.
//!
//! Data meets it in this order:
//!
//! - [`scheduler`]: which runs of each report are due (pure);
//! - [`pipeline`]: **plan → run → seal → spool**, written once, for
//!   `send-now`, the daemon and `mishare retry`:
//!   - [`gate`]: whether a file may go to an LA now; permits that cannot be
//!     kept, refusals with reason codes, failing closed;
//!   - [`report`]: a report run, its source read once, one sanitised file
//!     per LA, in memory;
//!   - [`spool`]: each file sealed with age and written durably;
//!   - [`ledger`]: what each LA has received and knows, audited together
//!     before a file is spooled (R11);
//! - [`outbox`]: the deliveries' state machine, backoff and retry;
//! - [`push`]: a spooled file streamed to its LA's endpoint, the gate asked
//!   at the start and before the commit, cut off in flight by a suspension
//!   ([`watch`]);
//! - [`daemon`]: `provider run`, the loop that ties them together;
//!   [`send`]: `send-now`, which hands its deliveries to a running daemon
//!   rather than race it ([`lock`]);
//! - [`directive`]: DWP's `Directive` service;
//! - [`status`]: what `status` and `plan` show;
//! - [`agreement`]: what an operator asks to put on file, checked;
//! - [`store`]: the provider's SQLite state, and the only place its SQL
//!   lives.

pub mod agreement;
pub mod daemon;
pub mod directive;
pub mod expiry;
pub mod gate;
pub mod ledger;
pub mod lock;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod push;
mod reload;
pub mod report;
pub mod scheduler;
pub mod send;
pub mod spool;
pub mod status;
pub mod store;
pub mod watch;

pub use daemon::{Daemon, DaemonError, DaemonOptions, ScheduledRun};
pub use send::{LaOutcome, LaResult, Progress, SendError, SendOptions, send_now};
