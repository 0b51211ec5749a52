-- Value events written in the same local transaction as the change that
-- causes them; a relay publishes them to the bus and marks them.
CREATE TABLE event_outbox (
    seq          bigserial   PRIMARY KEY,
    id           text        NOT NULL UNIQUE, -- stable: the same change always yields the same id
    kind         text        NOT NULL,
    conversation text        NOT NULL,
    user_id      bigint      NOT NULL DEFAULT 0, -- the user it is addressed to, 0: the whole conversation
    payload      jsonb       NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX event_outbox_unpublished ON event_outbox (seq) WHERE published_at IS NULL;
