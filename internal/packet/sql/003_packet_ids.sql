-- Packet ids are minted in blocks of 4096 whose time field comes from this
-- sequence (ids.Blocks), so that two processes sending into the same set
-- never mint the same id. It starts at the milliseconds since 2024-01-01
-- (the ids' epoch) now, above every id minted from the clock before.
DO $$ BEGIN
    EXECUTE format('CREATE SEQUENCE packet_id_blocks START WITH %s',
        (extract(epoch FROM clock_timestamp() - timestamptz '2024-01-01 00:00:00+00') * 1000)::bigint + 1);
END $$;
