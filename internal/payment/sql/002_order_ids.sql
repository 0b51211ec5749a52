-- Order ids are minted in blocks of 4096 whose time field comes from this
-- sequence (ids.Blocks): two processes never mint the same order id, so
-- two requests can never name one order.
DO $$ BEGIN
    EXECUTE format('CREATE SEQUENCE channel_order_id_blocks START WITH %s',
        (extract(epoch FROM clock_timestamp() - timestamptz '2024-01-01 00:00:00+00') * 1000)::bigint + 1);
END $$;
