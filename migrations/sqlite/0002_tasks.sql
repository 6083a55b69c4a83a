-- Manual steps (calls, LinkedIn, custom) waiting for a rep. A task step of
-- a sequence creates one row when it falls due; the enrollment waits in
-- phase 'task' until the row leaves 'open'. Keep migrations/postgres/ in step.

CREATE TABLE tasks (
    id            INTEGER PRIMARY KEY,
    enrollment_id INTEGER NOT NULL REFERENCES enrollments (id),
    lead_id       INTEGER NOT NULL REFERENCES leads (id),
    rep           TEXT    NOT NULL,
    step          INTEGER NOT NULL,                -- 0-based index of the task step
    kind          TEXT    NOT NULL,                -- call | linkedin | custom
    instructions  TEXT    NOT NULL,                -- the rendered instructions template
    due_at        INTEGER NOT NULL,
    timeout_at    INTEGER,                         -- NULL: waits for the rep however long
    state         TEXT    NOT NULL DEFAULT 'open', -- open done skipped timed_out cancelled
    note          TEXT,
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER
);
-- A rep's open tasks, by due time: what `cadence tasks` and the agenda read.
CREATE INDEX tasks_open ON tasks (rep, due_at) WHERE state = 'open';
CREATE INDEX tasks_enrollment ON tasks (enrollment_id, state);
-- At most one open task per enrollment.
CREATE UNIQUE INDEX tasks_one_open ON tasks (enrollment_id) WHERE state = 'open';
-- The report's per-variant figures group sends by variant.
CREATE INDEX sends_variant ON sends (variant) WHERE variant IS NOT NULL;
