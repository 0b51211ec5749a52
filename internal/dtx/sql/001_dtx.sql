-- The coordinator's log: one row per global transaction, its branches in
-- order inside it. A state is written before the action it announces.
CREATE TABLE dtx_global (
    gid          text        PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('tcc', 'saga')),
    state        text        NOT NULL CHECK (state IN ('trying', 'confirming', 'cancelling', 'committed', 'cancelled')),
    branches     jsonb       NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    try_deadline timestamptz NOT NULL,
    next_attempt timestamptz NOT NULL,
    attempts     int         NOT NULL DEFAULT 0,
    last_error   text        NOT NULL DEFAULT '',
    owner        text        NOT NULL DEFAULT '',
    lease_until  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    CHECK ((state IN ('committed', 'cancelled')) = (finished_at IS NOT NULL))
);
-- Recovery scans only what is unfinished.
CREATE INDEX dtx_global_due ON dtx_global (next_attempt) WHERE finished_at IS NULL;
CREATE INDEX dtx_global_finished ON dtx_global (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX dtx_global_created ON dtx_global (created_at DESC);
