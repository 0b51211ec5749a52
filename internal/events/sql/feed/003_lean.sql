-- The payload as the text it came as (no jsonb parse per event).
ALTER TABLE feed ALTER COLUMN payload TYPE text;
