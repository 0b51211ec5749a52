-- The conversations' feeds: every value event once (by id), with a
-- gapless sequence per conversation.
CREATE TABLE conversations (
    id       text   PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0
);
CREATE TABLE feed (
    conversation text        NOT NULL,
    seq          bigint      NOT NULL,
    id           text        NOT NULL UNIQUE,
    kind         text        NOT NULL,
    user_id      bigint      NOT NULL DEFAULT 0,
    payload      jsonb       NOT NULL,
    at           timestamptz NOT NULL,
    published_at timestamptz, -- on events.conversation.<id> (and events.user.<id>)
    PRIMARY KEY (conversation, seq)
);
CREATE INDEX feed_unpublished ON feed (at) WHERE published_at IS NULL;

-- Webhooks of applications, and the deliveries of events to them.
CREATE TABLE webhooks (
    id         bigserial   PRIMARY KEY,
    url        text        NOT NULL,
    secret     text        NOT NULL,
    kinds      text[]      NOT NULL, -- empty: every kind
    created_at timestamptz NOT NULL DEFAULT now(),
    disabled   boolean     NOT NULL DEFAULT false
);
CREATE TABLE deliveries (
    id         bigserial   PRIMARY KEY,
    webhook_id bigint      NOT NULL REFERENCES webhooks (id),
    event_id   text        NOT NULL,
    state      text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'given_up')),
    attempts   int         NOT NULL DEFAULT 0,
    next_at    timestamptz,
    last_error text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    done_at    timestamptz,
    UNIQUE (webhook_id, event_id),
    CHECK ((state = 'pending') = (next_at IS NOT NULL))
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';
CREATE INDEX deliveries_state ON deliveries (state, id);
