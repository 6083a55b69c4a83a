-- cadence schema (SQLite). Times are INTEGER milliseconds since the Unix
-- epoch (UTC) so that the same SQL runs on PostgreSQL (BIGINT) and sorts
-- and compares cheaply. Keep migrations/postgres/ in step, same file names.

CREATE TABLE leads (
    id               INTEGER PRIMARY KEY,
    email            TEXT    NOT NULL UNIQUE,      -- lower-cased: unique case-insensitively
    domain           TEXT    NOT NULL,             -- part after @, for caps and same-company stop
    first_name       TEXT,
    last_name        TEXT,
    company          TEXT,
    title            TEXT,
    timezone         TEXT,
    region           TEXT,
    value            REAL,
    fields           TEXT    NOT NULL DEFAULT '{}', -- JSON object of custom fields
    owner            TEXT,                          -- rep id
    stage            TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'active', -- active | archived
    stale            INTEGER NOT NULL DEFAULT 0,
    stage_changed_at INTEGER NOT NULL,
    last_touch_at    INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX leads_owner_stage ON leads (owner, stage);
CREATE INDEX leads_stage ON leads (stage, status);
CREATE INDEX leads_domain ON leads (domain);

CREATE TABLE enrollments (
    id             INTEGER PRIMARY KEY,
    lead_id        INTEGER NOT NULL REFERENCES leads (id),
    sequence       TEXT    NOT NULL,
    rep            TEXT    NOT NULL,
    state          TEXT    NOT NULL,               -- active paused replied bounced unsubscribed completed archived failed
    phase          TEXT    NOT NULL DEFAULT 'step', -- step | last_chance | archive: what the next action is
    step           INTEGER NOT NULL DEFAULT 0,      -- 0-based index of the next step
    touches        INTEGER NOT NULL DEFAULT 0,      -- emails sent in this enrollment
    due_at         INTEGER,                         -- when the next action falls due (before the window)
    next_at        INTEGER,                         -- when the engine acts (window applied); NULL = nothing scheduled
    paused_until   INTEGER,                         -- automatic resume (out-of-office)
    attempts       INTEGER NOT NULL DEFAULT 0,      -- transient failures of the current step
    thread_subject TEXT,
    thread_refs    TEXT    NOT NULL DEFAULT '',     -- space-separated Message-IDs, oldest first
    last_sent_at   INTEGER,
    enrolled_at    INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    end_reason     TEXT
);
-- At most one live enrollment per lead.
CREATE UNIQUE INDEX enrollments_one_live ON enrollments (lead_id) WHERE state IN ('active', 'paused');
-- Finding due work costs in proportion to what is due.
CREATE INDEX enrollments_due ON enrollments (next_at) WHERE state = 'active' AND next_at IS NOT NULL;
CREATE INDEX enrollments_resume ON enrollments (paused_until) WHERE state = 'paused' AND paused_until IS NOT NULL;
CREATE INDEX enrollments_lead ON enrollments (lead_id);
CREATE INDEX enrollments_sequence ON enrollments (sequence, state);

-- The outbox. A row is committed as 'sending' before SMTP starts.
CREATE TABLE sends (
    id               INTEGER PRIMARY KEY,
    enrollment_id    INTEGER REFERENCES enrollments (id),
    lead_id          INTEGER REFERENCES leads (id),
    rep              TEXT    NOT NULL,
    kind             TEXT    NOT NULL,             -- step | last_chance | digest
    step             INTEGER,
    template         TEXT,
    template_hash    TEXT,
    sequence_hash    TEXT,
    variant          TEXT,
    recipient        TEXT    NOT NULL,
    recipient_domain TEXT    NOT NULL,
    message_id       TEXT    NOT NULL UNIQUE,
    subject          TEXT,
    state            TEXT    NOT NULL,             -- sending sent retry failed bounced send_unknown
    attempt          INTEGER NOT NULL DEFAULT 1,
    claimed_by       TEXT,
    claimed_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    error            TEXT
);
CREATE INDEX sends_rep_time ON sends (rep, claimed_at);
CREATE INDEX sends_rep_domain_time ON sends (rep, recipient_domain, claimed_at);
CREATE INDEX sends_in_flight ON sends (claimed_by) WHERE state = 'sending';
CREATE INDEX sends_enrollment ON sends (enrollment_id);
CREATE INDEX sends_state_time ON sends (state, claimed_at);

CREATE TABLE touchpoints (
    id            INTEGER PRIMARY KEY,
    lead_id       INTEGER NOT NULL REFERENCES leads (id),
    enrollment_id INTEGER REFERENCES enrollments (id),
    kind          TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    rep           TEXT,
    subject       TEXT,
    message_id    TEXT,
    detail        TEXT,
    step          INTEGER,
    created_at    INTEGER NOT NULL
);
CREATE INDEX touchpoints_lead ON touchpoints (lead_id, at);
CREATE INDEX touchpoints_kind_at ON touchpoints (kind, at);
CREATE INDEX touchpoints_enrollment ON touchpoints (enrollment_id, kind);

CREATE TABLE suppressions (
    pattern    TEXT    PRIMARY KEY,                -- an address, or @domain
    reason     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- IMAP sync state per mailbox, and the lease that lets one instance watch it.
CREATE TABLE mailboxes (
    rep          TEXT    NOT NULL,
    mailbox      TEXT    NOT NULL,
    uid_validity INTEGER,
    last_uid     INTEGER NOT NULL DEFAULT 0,
    synced_at    INTEGER,
    lease_holder TEXT,
    lease_until  INTEGER,
    PRIMARY KEY (rep, mailbox)
);

-- Inbound messages already acted on: a message is processed once even if seen twice.
CREATE TABLE inbound_seen (
    rep          TEXT    NOT NULL,
    message_key  TEXT    NOT NULL,                 -- Message-ID, or a hash of the bytes when absent
    kind         TEXT    NOT NULL,
    lead_id      INTEGER,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (rep, message_key)
);

-- Cron fires already run (hygiene, agenda): each fire runs once.
CREATE TABLE cron_fires (
    job        TEXT    NOT NULL,
    fire_at    INTEGER NOT NULL,
    claimed_by TEXT,
    claimed_at INTEGER NOT NULL,
    done_at    INTEGER,
    PRIMARY KEY (job, fire_at)
);

-- Running daemons (PostgreSQL: several share the work).
CREATE TABLE instances (
    id           TEXT    PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
