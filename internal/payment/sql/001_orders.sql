-- Orders of money through the payment channel, on the ledger shard of
-- their user, so that an order, its hold or credit and its state change
-- commit in one local transaction. The order row is also the outbox: a
-- worker visits every order whose next_check has come until it is final.
CREATE TABLE channel_orders (
    id         bigint      PRIMARY KEY, -- also the channel's order id (its idempotency key)
    kind       text        NOT NULL CHECK (kind IN ('topup', 'withdrawal')),
    user_id    bigint      NOT NULL CHECK (user_id > 0),
    amount     bigint      NOT NULL CHECK (amount > 0 AND amount <= 1000000000000000),
    state      text        NOT NULL CHECK (state IN ('created', 'pending', 'unknown', 'paid', 'closed', 'succeeded', 'failed', 'reversed')),
    pay_url    text        NOT NULL DEFAULT '',
    reason     text        NOT NULL DEFAULT '',
    day        date        NOT NULL, -- the day its per-user limit counts on
    deadline   timestamptz NOT NULL, -- a top-up unpaid after it is closed
    next_check timestamptz,          -- when the worker looks at it next; NULL once final
    attempts   int         NOT NULL DEFAULT 0,
    channel_at timestamptz,          -- when the channel says it was paid or paid out
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((next_check IS NULL) = (state IN ('paid', 'closed', 'succeeded', 'failed', 'reversed'))),
    CHECK ((kind = 'topup') = (state IN ('created', 'pending', 'paid', 'closed', 'failed'))
        OR (kind = 'withdrawal' AND state IN ('created', 'unknown', 'succeeded', 'failed', 'reversed')))
);
CREATE INDEX channel_orders_due ON channel_orders (next_check) WHERE next_check IS NOT NULL;
CREATE INDEX channel_orders_user ON channel_orders (user_id, id DESC);
CREATE INDEX channel_orders_channel_at ON channel_orders (channel_at) WHERE channel_at IS NOT NULL;

-- Every transition of an order, with what caused it.
CREATE TABLE channel_order_events (
    id         bigserial   PRIMARY KEY,
    order_id   bigint      NOT NULL REFERENCES channel_orders (id),
    from_state text        NOT NULL DEFAULT '',
    to_state   text        NOT NULL,
    note       text        NOT NULL DEFAULT '',
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channel_order_events_order ON channel_order_events (order_id, id);

-- Per user and day: the amount and number of orders of a kind that count
-- against the limits (an order that failed or closed unpaid gives its share back).
CREATE TABLE channel_limits (
    user_id bigint NOT NULL,
    day     date   NOT NULL,
    kind    text   NOT NULL,
    amount  bigint NOT NULL CHECK (amount >= 0),
    orders  int    NOT NULL CHECK (orders >= 0),
    PRIMARY KEY (user_id, day, kind)
);
