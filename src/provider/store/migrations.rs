//! The schema, as numbered migrations. `PRAGMA user_version` holds how many
//! have been applied. Append new ones; never edit one that has shipped.

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: agreements with history, suspensions, the audit log.
    r#"
CREATE TABLE agreements (
    id                   INTEGER PRIMARY KEY,
    la_code              TEXT NOT NULL,
    la_name              TEXT NOT NULL,
    representative_name  TEXT NOT NULL,
    representative_email TEXT NOT NULL,
    signed_on            TEXT NOT NULL,          -- YYYY-MM-DD
    expires_on           TEXT,                   -- YYYY-MM-DD, inclusive
    document_sha256      TEXT NOT NULL,          -- file name under agreements/
    document_name        TEXT NOT NULL,          -- the operator's file name, for display
    added_at             TEXT NOT NULL,
    added_by             TEXT NOT NULL,
    revoked_at           TEXT,
    revoked_by           TEXT,
    revoke_reason        TEXT,
    replaced_at          TEXT,                   -- set when a newer agreement took its place
    replaced_by          INTEGER REFERENCES agreements(id),
    CHECK (expires_on IS NULL OR expires_on >= signed_on),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
-- The current agreement of an LA is its one row not replaced.
CREATE UNIQUE INDEX agreements_current ON agreements(la_code) WHERE replaced_at IS NULL;

CREATE TABLE agreement_events (
    id           INTEGER PRIMARY KEY,
    agreement_id INTEGER NOT NULL REFERENCES agreements(id),
    la_code      TEXT NOT NULL,
    event        TEXT NOT NULL CHECK (event IN ('added', 'replaced', 'revoked')),
    at           TEXT NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT
);
CREATE INDEX agreement_events_la ON agreement_events(la_code, id);

CREATE TABLE suspensions (
    id        INTEGER PRIMARY KEY,
    la_code   TEXT,                              -- NULL: every LA
    made_by   TEXT NOT NULL CHECK (made_by IN ('provider', 'dwp')),
    reason    TEXT NOT NULL,
    reference TEXT,
    made_at   TEXT NOT NULL,
    made_actor TEXT NOT NULL,
    lifted_at TEXT,
    lifted_by TEXT,
    CHECK ((lifted_at IS NULL) = (lifted_by IS NULL))
);
-- At most one active suspension per scope and maker ('*' is not an LA code).
CREATE UNIQUE INDEX suspensions_active
    ON suspensions(coalesce(la_code, '*'), made_by) WHERE lifted_at IS NULL;

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    la        TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
-- The last entry's seq and hash, so that deleting the last entry is caught.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only against mistakes in this program. Someone with the sqlite3 tool
-- can drop these; `mishare audit verify` catches what they then change.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
    // 2: the outbox: report runs, one delivery per LA and run, receipts.
    r#"
CREATE TABLE report_runs (
    id            INTEGER PRIMARY KEY,
    report        TEXT NOT NULL,
    period        TEXT NOT NULL,                 -- 2012-09, 2012-Q3
    scheduled_for TEXT,                          -- NULL for send-now
    started_at    TEXT NOT NULL,
    actor         TEXT NOT NULL
);

CREATE TABLE deliveries (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES report_runs(id),
    la_code        TEXT NOT NULL,
    transfer_id    TEXT NOT NULL UNIQUE,
    report         TEXT NOT NULL,
    period         TEXT NOT NULL,
    classification TEXT NOT NULL CHECK (classification IN ('internal', 'published')),
    state          TEXT NOT NULL
        CHECK (state IN ('queued', 'sending', 'delivered', 'refused', 'dead', 'failed')),
    size           INTEGER NOT NULL CHECK (size >= 0),
    sha256         TEXT NOT NULL,                -- of the ciphertext, lower-case hex
    spool_file     TEXT,                         -- under data_dir/spool/; NULL once removed
    attempts       INTEGER NOT NULL DEFAULT 0,
    reason         TEXT,                         -- the gate's code when refused
    last_error     TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (run_id, la_code)
);
CREATE INDEX deliveries_state ON deliveries(state, id);
CREATE INDEX deliveries_la ON deliveries(la_code, id);

CREATE TABLE receipts (
    delivery_id      INTEGER PRIMARY KEY REFERENCES deliveries(id),
    transfer_id      TEXT NOT NULL UNIQUE,
    sha256           TEXT NOT NULL,
    size             INTEGER NOT NULL,
    stored_as        TEXT NOT NULL,
    received_unix_ms INTEGER NOT NULL,
    signature        BLOB NOT NULL,
    verification     TEXT NOT NULL,              -- how the signature was checked
    stored_at        TEXT NOT NULL
);
"#,
    // 3: the scheduler and the retrying outbox.
    r#"
-- The last scheduled time handled (run or skipped) per report, so a restart
-- neither repeats nor loses a run.
CREATE TABLE schedule_marks (
    report         TEXT PRIMARY KEY,
    handled_until  TEXT NOT NULL
);

-- 'ran': deliveries were made for it; 'skipped': missed while the daemon was
-- down and not run (missed = "skip"). spooled_at is set once every LA's
-- delivery is spooled: a scheduled run without it was interrupted and is
-- finished on the next start.
ALTER TABLE report_runs ADD COLUMN outcome TEXT NOT NULL DEFAULT 'ran'
    CHECK (outcome IN ('ran', 'skipped'));
ALTER TABLE report_runs ADD COLUMN spooled_at TEXT;
UPDATE report_runs SET spooled_at = started_at;

-- LAs the gate refused when a scheduled run was planned: a run finished
-- after a restart does not ask again for them (nothing withheld is sent
-- later by itself).
CREATE TABLE run_refusals (
    run_id  INTEGER NOT NULL REFERENCES report_runs(id),
    la_code TEXT NOT NULL,
    reason  TEXT NOT NULL,
    PRIMARY KEY (run_id, la_code)
);

-- When a failed delivery may be tried again (NULL: at once), and when its
-- age for max_age_hours began (NULL: created_at; reset by `mishare retry`).
ALTER TABLE deliveries ADD COLUMN next_attempt_at TEXT;
ALTER TABLE deliveries ADD COLUMN age_from TEXT;

-- Bumped by `mishare retry`, so a running daemon notices a requeued
-- delivery at once (its state watcher reads it).
CREATE TABLE outbox_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO outbox_generation (id, n) VALUES (1, 0);
"#,
    // 4: receipts that bind who sent what to whom (receipt version 2): the
    // version each was signed in, and what version 2 names besides the
    // file. Receipts stored before are version 1 and name none of it.
    r#"
ALTER TABLE receipts ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE receipts ADD COLUMN provider TEXT;
ALTER TABLE receipts ADD COLUMN la_code TEXT;
ALTER TABLE receipts ADD COLUMN report TEXT;
ALTER TABLE receipts ADD COLUMN period TEXT;
ALTER TABLE receipts ADD COLUMN classification INTEGER;
"#,
    // 5: the release ledger (R11): what each LA was sent, and the figures it
    // knows from elsewhere. Rounded figures only. Each row is covered by an
    // audit entry holding the SHA-256 of its canonical form, which `mishare
    // audit verify` and every run recompute; the triggers stop this program
    // from changing or deleting a row by mistake.
    r#"
CREATE TABLE releases (
    id               INTEGER PRIMARY KEY,
    delivery_id      INTEGER NOT NULL UNIQUE REFERENCES deliveries(id),
    run_id           INTEGER NOT NULL REFERENCES report_runs(id),
    report           TEXT NOT NULL,
    transfer_id      TEXT NOT NULL UNIQUE,
    la_code          TEXT NOT NULL,
    measure          TEXT NOT NULL,
    view             TEXT NOT NULL CHECK (view IN ('counts', 'shares')),
    period_range     TEXT NOT NULL,              -- 2012-09, 2012-07..2012-09
    dimensions       TEXT NOT NULL,              -- JSON: the dimensions laid out, rows first
    filters          TEXT NOT NULL,              -- JSON: [[dimension, code], ...], sorted
    classification   TEXT NOT NULL CHECK (classification IN ('internal', 'published')),
    figures          TEXT NOT NULL,              -- JSON: the ReleaseTable, rounded figures only
    plaintext_sha256 TEXT NOT NULL,              -- of the file the LA decrypts, lower-case hex
    spooled_at       TEXT NOT NULL,
    delivered_at     TEXT                        -- when the receipt was stored
);
CREATE INDEX releases_la ON releases(la_code, id);

CREATE TABLE known_figures (
    id            INTEGER PRIMARY KEY,
    la_code       TEXT NOT NULL,
    measure       TEXT NOT NULL,
    period        TEXT NOT NULL,                 -- 2012-09, 2012-Q3 or 2012
    categories    TEXT NOT NULL,                 -- JSON: [[dimension, code], ...], sorted, la_code included
    value_lo      INTEGER NOT NULL CHECK (value_lo >= 0),
    value_hi      INTEGER NOT NULL CHECK (value_hi >= value_lo),
    exact         INTEGER NOT NULL CHECK (exact IN (0, 1)),
    source        TEXT NOT NULL,
    added_at      TEXT NOT NULL,
    added_by      TEXT NOT NULL,
    removed_at    TEXT,                          -- removed figures are kept, never deleted
    removed_by    TEXT,
    remove_reason TEXT,
    CHECK ((removed_at IS NULL) = (removed_by IS NULL)),
    CHECK ((removed_at IS NULL) = (remove_reason IS NULL))
);
CREATE INDEX known_figures_la ON known_figures(la_code, id);

CREATE TRIGGER releases_no_delete BEFORE DELETE ON releases
    BEGIN SELECT RAISE(ABORT, 'the release ledger is append-only'); END;
CREATE TRIGGER releases_fixed BEFORE UPDATE OF id, delivery_id, run_id, report, transfer_id,
    la_code, measure, view, period_range, dimensions, filters, classification, figures,
    plaintext_sha256, spooled_at ON releases
    BEGIN SELECT RAISE(ABORT, 'a release record never changes'); END;
CREATE TRIGGER releases_delivered_once BEFORE UPDATE OF delivered_at ON releases
    WHEN OLD.delivered_at IS NOT NULL
    BEGIN SELECT RAISE(ABORT, 'a release is delivered once'); END;
CREATE TRIGGER known_figures_no_delete BEFORE DELETE ON known_figures
    BEGIN SELECT RAISE(ABORT, 'known figures are removed, never deleted'); END;
CREATE TRIGGER known_figures_fixed BEFORE UPDATE OF id, la_code, measure, period, categories,
    value_lo, value_hi, exact, source, added_at, added_by ON known_figures
    BEGIN SELECT RAISE(ABORT, 'a known figure never changes; remove it and add another'); END;
CREATE TRIGGER known_figures_removed_once BEFORE UPDATE OF removed_at, removed_by, remove_reason
    ON known_figures WHEN OLD.removed_at IS NOT NULL
    BEGIN SELECT RAISE(ABORT, 'a known figure is removed once'); END;
"#,
    // 6: `mishare abandon`: a dead delivery ended by hand. The row stays
    // (state 'dead', its release in the ledger, its audit entries); who ended
    // it, when and why are kept beside it, and its ciphertext is removed.
    // The triggers keep an abandoned delivery from ever being sent again.
    r#"
ALTER TABLE deliveries ADD COLUMN abandoned_at TEXT;
ALTER TABLE deliveries ADD COLUMN abandoned_by TEXT;
ALTER TABLE deliveries ADD COLUMN abandon_reason TEXT;
CREATE TRIGGER deliveries_abandoned_when_dead BEFORE UPDATE OF abandoned_at ON deliveries
    WHEN NEW.abandoned_at IS NOT NULL AND (OLD.state <> 'dead' OR OLD.abandoned_at IS NOT NULL)
    BEGIN SELECT RAISE(ABORT, 'only a dead delivery is abandoned, and only once'); END;
CREATE TRIGGER deliveries_abandoned_stay BEFORE UPDATE OF state, abandoned_at ON deliveries
    WHEN OLD.abandoned_at IS NOT NULL
        AND (NEW.state IS NOT OLD.state OR NEW.abandoned_at IS NOT OLD.abandoned_at)
    BEGIN SELECT RAISE(ABORT, 'an abandoned delivery is never sent'); END;
"#,
    // 7: the certificates of peers the provider has seen (each LA's
    // endpoint, as its TLS handshake showed it), so `status` can warn
    // before one expires. One row per role and DNS name: the latest seen.
    r#"
CREATE TABLE peer_certificates (
    role       TEXT NOT NULL CHECK (role IN ('endpoint')),
    subject    TEXT NOT NULL,                  -- the DNS name required of it (server_name)
    la_code    TEXT NOT NULL,
    not_after  TEXT NOT NULL,
    sha256     TEXT NOT NULL,                  -- of the certificate (DER), lower-case hex
    first_seen TEXT NOT NULL,                  -- when this certificate was first seen
    last_seen  TEXT NOT NULL,
    PRIMARY KEY (role, subject)
);
"#,
];
