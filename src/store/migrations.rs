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
];
