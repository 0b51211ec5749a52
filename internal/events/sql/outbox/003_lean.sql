-- Lean rows for the hot path: a claim batch writes one outbox row per
-- claim, so the outbox keeps one index (the relay's order) and stores the
-- payload as the text it was written as (no jsonb parse). Ids are unique
-- by construction; the feed drops any repeat by id.
ALTER TABLE event_outbox DROP CONSTRAINT event_outbox_id_key;
ALTER TABLE event_outbox DROP CONSTRAINT event_outbox_pkey;
ALTER TABLE event_outbox ALTER COLUMN payload TYPE text;
