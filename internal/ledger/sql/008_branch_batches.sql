-- Many branch calls in one statement and one local transaction (a batch
-- of the shard's calls, see batch.go): each call runs in its own
-- subtransaction (the exception block), so a refusal undoes that call
-- alone and is answered as its SQLSTATE and message; the others commit
-- together. p_lock are the account rows the batch touches, locked first in
-- ascending id order (the order of every other writer of the shard), so
-- that two batches never wait on each other in a cycle. Each call's
-- arguments are at its index; p_row is the system account stripe it
-- posts to or from; p_event_id '' is no event.
CREATE FUNCTION hb_branches(p_lock bigint[], p_max bigint, p_now timestamptz, p_op text[], p_gid text[], p_branch text[], p_key text[],
    p_user bigint[], p_amount bigint[], p_row bigint[], p_peer bigint[], p_slot int[],
    p_event_id text[], p_event_kind text[], p_conversation text[], p_payload text[]) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    res text[] := '{}';
    hold_key text;
    ev text;
BEGIN
    PERFORM 1 FROM accounts WHERE id = ANY (p_lock) ORDER BY id FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_op, 1), 0) LOOP
        hold_key := p_gid[i] || '/' || p_branch[i] || '/hold';
        ev := nullif(p_event_id[i], '');
        BEGIN
            CASE p_op[i]
            WHEN 'hold_try' THEN
                PERFORM hb_hold_try(p_gid[i], p_branch[i], hold_key, p_user[i], p_amount[i]);
            WHEN 'hold_confirm' THEN
                PERFORM hb_hold_confirm(p_gid[i], p_branch[i], p_key[i], hold_key, p_row[i], p_amount[i], p_peer[i], p_now);
            WHEN 'hold_cancel' THEN
                PERFORM hb_hold_cancel(p_gid[i], p_branch[i], p_key[i], hold_key, p_now);
            WHEN 'receive_try' THEN
                PERFORM hb_receive_try(p_gid[i], p_branch[i], p_user[i], p_amount[i], p_max, p_slot[i]);
            WHEN 'receive_confirm' THEN
                PERFORM hb_receive_confirm(p_gid[i], p_branch[i], p_key[i], p_row[i], p_user[i], p_amount[i], p_peer[i], p_slot[i],
                    ev, p_event_kind[i], p_conversation[i], p_payload[i]::jsonb, p_now);
            WHEN 'receive_cancel' THEN
                PERFORM hb_receive_cancel(p_gid[i], p_branch[i], p_user[i], p_amount[i]);
            WHEN 'debit_try' THEN
                PERFORM hb_saga_step(p_gid[i], p_branch[i], 'try', 'debit', p_key[i], p_user[i], p_row[i], p_amount[i], p_slot[i],
                    NULL, NULL, NULL, NULL, NULL, NULL);
            WHEN 'debit_cancel' THEN
                PERFORM hb_saga_step(p_gid[i], p_branch[i], 'cancel', 'refund', p_key[i], p_row[i], p_user[i], p_amount[i], p_slot[i],
                    ev, p_event_kind[i], p_conversation[i], p_user[i], CASE WHEN ev IS NOT NULL THEN p_payload[i]::jsonb END, p_now);
            WHEN 'credit_try' THEN
                PERFORM hb_saga_step(p_gid[i], p_branch[i], 'try', 'settle', p_key[i], p_row[i], p_user[i], p_amount[i], p_slot[i],
                    NULL, NULL, NULL, NULL, NULL, NULL);
            WHEN 'credit_cancel' THEN
                PERFORM hb_saga_step(p_gid[i], p_branch[i], 'cancel', 'refund', p_key[i], p_user[i], p_row[i], p_amount[i], p_slot[i],
                    NULL, NULL, NULL, NULL, NULL, NULL);
            END CASE;
            res := res || ''::text;
        EXCEPTION WHEN OTHERS THEN
            res := res || (SQLSTATE || ' ' || SQLERRM);
        END;
    END LOOP;
    RETURN res;
END $$;
