-- Limits, so that no sum can overflow: every amount and every user balance
-- is at most 1e15 fen (money.Max); a user's balance plus the room reserved
-- for transfers on their way in (incoming) stays within it. System account
-- stripes stay within +-4e18, far from the int64 edge even after a move of
-- money.Max. The configured maximum balance (lower) is checked in code.
ALTER TABLE accounts ADD COLUMN incoming bigint NOT NULL DEFAULT 0 CHECK (incoming >= 0);
ALTER TABLE accounts ADD CONSTRAINT accounts_user_max
    CHECK (kind = 'system' OR balance + incoming <= 1000000000000000);
ALTER TABLE accounts ADD CONSTRAINT accounts_system_range
    CHECK (kind = 'user' OR (incoming = 0 AND balance BETWEEN -4000000000000000000 AND 4000000000000000000));
ALTER TABLE postings ADD CONSTRAINT postings_amount_max CHECK (amount <= 1000000000000000);
ALTER TABLE holds ADD CONSTRAINT holds_amount_max CHECK (amount <= 1000000000000000);

-- The idempotency record of an API request: the acting user's key names one
-- operation (op) with one request (req_hash), whatever code path serves it.
-- params are what the first request resolved (a packet id, an expiry) so that
-- a replay runs exactly the same operation; status and response are its
-- final answer, once there is one.
CREATE TABLE request_keys (
    user_id    bigint      NOT NULL CHECK (user_id >= 0), -- 0: an operator
    key        text        NOT NULL,
    op         text        NOT NULL,
    req_hash   bytea       NOT NULL,
    params     jsonb       NOT NULL DEFAULT '{}',
    status     int         CHECK (status BETWEEN 200 AND 599),
    response   jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key),
    CHECK ((status IS NULL) = (response IS NULL))
);
CREATE INDEX request_keys_created ON request_keys (created_at);
