-- Tables partitioned by day (UTC): one partition per day, named
-- <parent>_YYYYMMDD, created ahead by hb_ensure_day and, once archived,
-- detached into the schema "archive" (the rows stay there, out of every
-- query, until an operator dumps and drops them).
CREATE SCHEMA IF NOT EXISTS archive;
CREATE TABLE day_partitions (
    parent      text        NOT NULL,
    day         date        NOT NULL,
    state       text        NOT NULL DEFAULT 'attached' CHECK (state IN ('attached', 'archived')),
    rows        bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz,
    PRIMARY KEY (parent, day),
    CHECK ((state = 'archived') = (archived_at IS NOT NULL))
);

-- hb_ensure_day creates the partition of parent for day unless it exists
-- or was archived (an archived day is never written again: a row for it
-- finds no partition and is refused). It returns whether it created one.
-- Nodes call it concurrently: a transaction lock per parent orders them.
CREATE FUNCTION hb_ensure_day(p_parent text, p_day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz := p_day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (p_day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF EXISTS (SELECT 1 FROM day_partitions WHERE parent = p_parent AND day = p_day) THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('hb_ensure_day:' || p_parent));
    IF EXISTS (SELECT 1 FROM day_partitions WHERE parent = p_parent AND day = p_day) THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
        p_parent || '_' || to_char(p_day, 'YYYYMMDD'), p_parent, lo, hi);
    INSERT INTO day_partitions (parent, day) VALUES (p_parent, p_day);
    RETURN true;
END $$;
