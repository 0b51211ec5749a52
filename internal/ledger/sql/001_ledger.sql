-- Accounts: user wallets (id = user id > 0) and the stripes of system
-- accounts (id = -(system * 1024 + stripe) < 0). Balances are fen.
CREATE TABLE accounts (
    id         bigint      PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('user', 'system')),
    name       text        NOT NULL,
    stripe     int         NOT NULL DEFAULT 0 CHECK (stripe >= 0),
    balance    bigint      NOT NULL DEFAULT 0,
    held       bigint      NOT NULL DEFAULT 0 CHECK (held >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_kind_id CHECK ((kind = 'user') = (id > 0)),
    CONSTRAINT accounts_system_no_holds CHECK (kind = 'user' OR held = 0),
    -- The last line of defence: a user's available balance is never negative.
    CONSTRAINT accounts_available CHECK (kind = 'system' OR balance - held >= 0)
);
CREATE UNIQUE INDEX accounts_system_stripe ON accounts (name, stripe) WHERE kind = 'system';

-- The journal: every change of a balance is one posting that moves amount
-- from debit_account to credit_account, with both balances after it.
CREATE TABLE postings (
    id             bigserial   PRIMARY KEY,
    kind           text        NOT NULL CHECK (kind IN ('deposit', 'transfer', 'hold_post', 'credit', 'debit', 'refund', 'settle')),
    ref            text        NOT NULL,
    debit_account  bigint      NOT NULL REFERENCES accounts (id),
    credit_account bigint      NOT NULL REFERENCES accounts (id),
    amount         bigint      NOT NULL CHECK (amount > 0),
    debit_balance  bigint      NOT NULL,
    credit_balance bigint      NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (debit_account <> credit_account)
);
CREATE INDEX postings_debit ON postings (debit_account, id);
CREATE INDEX postings_credit ON postings (credit_account, id);

-- Two-phase holds on user wallets: open -> posted | voided | expired, once.
CREATE TABLE holds (
    id            bigserial   PRIMARY KEY,
    key           text        NOT NULL UNIQUE,
    account_id    bigint      NOT NULL REFERENCES accounts (id),
    amount        bigint      NOT NULL CHECK (amount > 0),
    state         text        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'posted', 'voided', 'expired')),
    posted_amount bigint      CHECK (posted_amount > 0 AND posted_amount <= amount),
    posting_id    bigint      REFERENCES postings (id),
    resolve_key   text        UNIQUE,
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz,
    CHECK ((state = 'open') = (resolved_at IS NULL)),
    CHECK ((state = 'posted') = (posted_amount IS NOT NULL))
);
CREATE INDEX holds_open_expiry ON holds (expires_at) WHERE state = 'open' AND expires_at IS NOT NULL;

-- Idempotency: one row per operation key, with a hash of the request and
-- the result to answer a replay with.
CREATE TABLE ops (
    key        text        PRIMARY KEY,
    kind       text        NOT NULL,
    req_hash   bytea       NOT NULL,
    result     jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
