-- The slot table (1024 slots -> ledger shard), one authoritative copy with
-- a version, in the coordinator's database; every node reads it and
-- follows its changes (NOTIFY hongbao_slots, and a poll).
CREATE TABLE slot_map (
    slot  int PRIMARY KEY CHECK (slot BETWEEN 0 AND 1023),
    shard int NOT NULL CHECK (shard >= 0)
);
CREATE TABLE slot_version (
    one     bool   PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
-- Every stay of a slot on a shard: a statement reads them all.
CREATE TABLE slot_stays (
    slot  int         NOT NULL,
    shard int         NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot, since)
);

-- A live migration of slots from one shard to another: a saga whose every
-- step is recorded and resumable. fencing -> copying -> verifying ->
-- switching -> releasing -> cleaning -> done; before switching it may be
-- cancelled: cancelling -> cancelled (everything undone).
CREATE TABLE slot_migrations (
    id         bigserial   PRIMARY KEY,
    slots      int[]       NOT NULL,
    from_shard int         NOT NULL,
    to_shard   int         NOT NULL,
    state      text        NOT NULL CHECK (state IN ('fencing', 'copying', 'verifying', 'switching', 'releasing', 'cleaning', 'done',
                                                     'cancelling', 'cancelled')),
    wallets    int         NOT NULL DEFAULT 0,
    amount     bigint      NOT NULL DEFAULT 0,
    error      text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK (from_shard <> to_shard)
);
-- At most one unfinished migration per slot.
CREATE TABLE slot_migration_slots (
    slot      int    PRIMARY KEY,
    migration bigint NOT NULL REFERENCES slot_migrations (id)
);
CREATE TABLE slot_migration_steps (
    migration bigint      NOT NULL REFERENCES slot_migrations (id),
    seq       bigserial,
    state     text        NOT NULL,
    note      text        NOT NULL DEFAULT '',
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration, seq)
);
