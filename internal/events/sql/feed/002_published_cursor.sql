-- What the sequencer has published, as a cursor per conversation instead
-- of a mark on every event.
ALTER TABLE conversations ADD COLUMN published_seq bigint NOT NULL DEFAULT 0;
CREATE INDEX conversations_unpublished ON conversations (id) WHERE published_seq < last_seq;
DROP INDEX feed_unpublished;
ALTER TABLE feed DROP COLUMN published_at;
