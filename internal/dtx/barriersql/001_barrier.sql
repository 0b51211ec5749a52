-- The participant barrier (DTM-style): one row per (gid, branch, op) that
-- ran, written in the same local transaction as the business change.
-- reason is the op whose call inserted the row: a 'try' row inserted by a
-- cancel marks an empty cancel and fences off a late try.
CREATE TABLE dtx_barrier (
    gid        text        NOT NULL,
    branch     text        NOT NULL,
    op         text        NOT NULL CHECK (op IN ('try', 'confirm', 'cancel')),
    reason     text        NOT NULL CHECK (reason IN ('try', 'confirm', 'cancel')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gid, branch, op)
);
