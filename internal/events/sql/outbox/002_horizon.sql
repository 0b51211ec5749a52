-- The relay no longer marks each event it published (an UPDATE per event
-- during a grab storm): it keeps a cursor over (transaction id, seq) and
-- takes only the events of transactions older than every one in flight, so
-- that none can appear later behind the cursor.
ALTER TABLE event_outbox ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX event_outbox_order ON event_outbox (txid, seq);
DROP INDEX event_outbox_unpublished;
ALTER TABLE event_outbox DROP COLUMN published_at;
CREATE TABLE event_relay (
    id       int    PRIMARY KEY CHECK (id = 1),
    txid     xid8   NOT NULL,
    seq      bigint NOT NULL
);
INSERT INTO event_relay (id, txid, seq) VALUES (1, '0', 0);
