-- A packet set: packets, their claims (the outbox of credits) and refunds.
CREATE TABLE packets (
    id               bigint      PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('single', 'lucky', 'equal')),
    sender           bigint      NOT NULL CHECK (sender > 0),
    receiver         bigint      CHECK (receiver > 0),
    group_id         bigint,
    amount           bigint      NOT NULL CHECK (amount > 0),
    shares           int         NOT NULL CHECK (shares > 0),
    greeting         text        NOT NULL DEFAULT '',
    state            text        NOT NULL CHECK (state IN ('pending', 'active', 'finished', 'expired', 'cancelled')),
    remaining_amount bigint      NOT NULL,
    remaining_count  int         NOT NULL,
    refunded         bigint      NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    owner_epoch      bigint      NOT NULL DEFAULT 0,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    closed_at        timestamptz,
    CHECK (amount >= shares),
    -- No oversale: never below zero, never less than a fen per share left.
    CHECK (remaining_count >= 0 AND remaining_count <= shares),
    CHECK (remaining_amount >= remaining_count AND remaining_amount <= amount),
    CHECK (refunded <= amount),
    CHECK ((kind = 'single') = (receiver IS NOT NULL)),
    CHECK ((kind = 'single') = (group_id IS NULL))
);
CREATE INDEX packets_sender ON packets (sender, id DESC);
CREATE INDEX packets_expiry ON packets (expires_at) WHERE state = 'active';

-- One row per grab. The claim id is the credit's idempotency key.
CREATE SEQUENCE claim_ids;
CREATE TABLE claims (
    id          bigint      PRIMARY KEY,
    packet_id   bigint      NOT NULL,
    user_id     bigint      NOT NULL CHECK (user_id > 0),
    seq         int         NOT NULL CHECK (seq > 0),
    amount      bigint      NOT NULL CHECK (amount > 0),
    created_at  timestamptz NOT NULL,
    credited_at timestamptz,
    UNIQUE (packet_id, user_id),
    UNIQUE (packet_id, seq)
);
CREATE INDEX claims_user ON claims (user_id, id DESC);
-- What the reconciler still has to see credited.
CREATE INDEX claims_uncredited ON claims (id) WHERE credited_at IS NULL;

-- The unclaimed remainder of an expired packet, paid back to the sender.
CREATE TABLE refunds (
    packet_id   bigint      PRIMARY KEY,
    sender      bigint      NOT NULL,
    amount      bigint      NOT NULL CHECK (amount > 0),
    created_at  timestamptz NOT NULL,
    credited_at timestamptz
);
