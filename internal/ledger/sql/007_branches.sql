-- The ledger's TCC branches (a hold and a receive, each with its try,
-- confirm and cancel), each as one statement: the participant barrier and
-- the money change in one call, one round trip in its own transaction.
-- They do what the Go code of the same names did (HoldIn, postIn, VoidIn,
-- reserve, unreserve, move): the same rows, locks in the same order, the
-- same checks. A refusal raises an error with its own code, so that nothing
-- the call did is kept, not even its barrier row:
--   HB001 insufficient available balance   HB002 the wallet would pass its maximum
--   HB003 try after its cancel              HB004 hold already resolved
--   HB005 hold not found                    HB006 posted amount exceeds the hold

-- hb_try_barrier records the try of a branch: true when it must run, false
-- for a repeat; a try after its cancel (which took the try slot) is refused.
CREATE FUNCTION hb_try_barrier(p_gid text, p_branch text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    INSERT INTO dtx_barrier (gid, branch, op, reason) VALUES (p_gid, p_branch, 'try', 'try') ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN true;
    END IF;
    SELECT reason INTO r FROM dtx_barrier WHERE gid = p_gid AND branch = p_branch AND op = 'try';
    IF r = 'cancel' THEN
        RAISE EXCEPTION 'dtx: try refused: branch %/% already cancelled', p_gid, p_branch USING ERRCODE = 'HB003';
    END IF;
    RETURN false;
END $$;

-- hb_confirm_barrier records the confirm of a branch: true when it must run.
CREATE FUNCTION hb_confirm_barrier(p_gid text, p_branch text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dtx_barrier (gid, branch, op, reason) VALUES (p_gid, p_branch, 'confirm', 'confirm') ON CONFLICT DO NOTHING;
    RETURN FOUND;
END $$;

-- hb_cancel_barrier records the cancel of a branch: 'run', 'repeat', or
-- 'empty' (no try came before it; none will: it holds the try slot now).
CREATE FUNCTION hb_cancel_barrier(p_gid text, p_branch text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    empty boolean;
BEGIN
    INSERT INTO dtx_barrier (gid, branch, op, reason) VALUES (p_gid, p_branch, 'try', 'cancel') ON CONFLICT DO NOTHING;
    empty := FOUND;
    INSERT INTO dtx_barrier (gid, branch, op, reason) VALUES (p_gid, p_branch, 'cancel', 'cancel') ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'repeat';
    ELSIF empty THEN
        RETURN 'empty';
    END IF;
    RETURN 'run';
END $$;

-- hb_resolve moves an open, unexpired hold to p_state once. done is true
-- when this very resolution (state and key) happened already: a branch
-- repeated after its wallet moved here with the hold.
CREATE FUNCTION hb_resolve(p_hold_key text, p_resolve_key text, p_state text, p_posted bigint, p_now timestamptz,
    OUT id bigint, OUT account bigint, OUT amount bigint, OUT done boolean) LANGUAGE plpgsql AS $$
DECLARE
    cur text;
    expires timestamptz;
    resolved_by text;
BEGIN
    done := false;
    UPDATE holds h SET state = p_state, posted_amount = p_posted, resolve_key = p_resolve_key, resolved_at = now()
        WHERE h.key = p_hold_key AND h.state = 'open' AND (h.expires_at IS NULL OR h.expires_at > p_now) AND h.amount >= coalesce(p_posted, 0)
        RETURNING h.id, h.account_id, h.amount INTO id, account, amount;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT h.id, h.account_id, h.state, h.amount, h.expires_at, h.resolve_key INTO id, account, cur, amount, expires, resolved_by
        FROM holds h WHERE h.key = p_hold_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold % not found', p_hold_key USING ERRCODE = 'HB005';
    ELSIF cur = p_state AND resolved_by = p_resolve_key THEN
        done := true;
    ELSIF cur <> 'open' THEN
        RAISE EXCEPTION '%', cur USING ERRCODE = 'HB004';
    ELSIF p_posted > amount THEN
        RAISE EXCEPTION '% > %', p_posted, amount USING ERRCODE = 'HB006';
    ELSE
        RAISE EXCEPTION 'expired at %', expires USING ERRCODE = 'HB004';
    END IF;
END $$;

-- hb_debit takes p_amount from row p_from (and frees p_release of what it
-- holds): a user's available balance after it must stay >= 0.
CREATE FUNCTION hb_debit(p_from bigint, p_amount bigint, p_release bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    after bigint;
BEGIN
    UPDATE accounts SET balance = balance - p_amount, held = held - p_release
        WHERE id = p_from AND (kind = 'system' OR balance - p_amount - held + p_release >= 0) RETURNING balance INTO after;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient available balance on account %', p_from USING ERRCODE = 'HB001';
    END IF;
    RETURN after;
END $$;

-- hb_move is one posting: p_amount from row p_from to row p_to, the two
-- rows locked in ascending id order (system stripes, negative, before
-- users), with both balances after it. p_release is the held amount freed
-- from the debited user (a hold post), p_hold the hold it settles (or
-- NULL), p_incoming the room reserved on the receiving user at try that it
-- uses up, p_slot the receiving user's slot (shard.SlotOf) for a new wallet.
CREATE FUNCTION hb_move(p_kind text, p_ref text, p_from bigint, p_to bigint, p_amount bigint, p_release bigint, p_hold bigint,
    p_incoming bigint, p_peer bigint, p_slot int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    debit_balance bigint;
    credit_balance bigint;
    posting bigint;
BEGIN
    IF p_from < p_to THEN
        debit_balance := hb_debit(p_from, p_amount, p_release);
    END IF;
    IF p_to > 0 THEN -- a user's wallet opens with the first money it receives
        INSERT INTO accounts AS a (id, kind, name, balance, slot) VALUES (p_to, 'user', 'user', p_amount, p_slot)
            ON CONFLICT (id) DO UPDATE SET balance = a.balance + excluded.balance, incoming = a.incoming - p_incoming
            RETURNING balance INTO credit_balance;
    ELSE
        UPDATE accounts SET balance = balance + p_amount WHERE id = p_to RETURNING balance INTO credit_balance;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'credit account %: no such account', p_to;
        END IF;
    END IF;
    IF p_from > p_to THEN
        debit_balance := hb_debit(p_from, p_amount, p_release);
    END IF;
    INSERT INTO postings (kind, ref, debit_account, credit_account, amount, debit_balance, credit_balance, peer)
        VALUES (p_kind, p_ref, p_from, p_to, p_amount, debit_balance, credit_balance, nullif(p_peer, 0)) RETURNING id INTO posting;
    IF p_hold IS NOT NULL THEN
        UPDATE holds SET posting_id = posting WHERE id = p_hold;
    END IF;
    RETURN posting;
END $$;

-- A hold's try: p_amount of the user's available balance held under p_key.
CREATE FUNCTION hb_hold_try(p_gid text, p_branch text, p_key text, p_user bigint, p_amount bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT hb_try_barrier(p_gid, p_branch) THEN
        RETURN;
    END IF;
    UPDATE accounts SET held = held + p_amount WHERE id = p_user AND kind = 'user' AND balance - held >= p_amount;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient available balance: user %, %', p_user, p_amount USING ERRCODE = 'HB001';
    END IF;
    INSERT INTO holds (key, account_id, amount) VALUES (p_key, p_user, p_amount);
END $$;

-- A hold's confirm: the hold posted to the system stripe p_to under p_key.
CREATE FUNCTION hb_hold_confirm(p_gid text, p_branch text, p_key text, p_hold_key text, p_to bigint, p_amount bigint, p_peer bigint,
    p_now timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    h record;
BEGIN
    IF NOT hb_confirm_barrier(p_gid, p_branch) THEN
        RETURN;
    END IF;
    SELECT * INTO h FROM hb_resolve(p_hold_key, p_key, 'posted', p_amount, p_now);
    IF NOT h.done THEN
        PERFORM hb_move('hold_post', p_key, h.account, p_to, p_amount, h.amount, h.id, 0, p_peer, NULL);
    END IF;
END $$;

-- A hold's cancel: the hold voided under p_key, its amount released.
CREATE FUNCTION hb_hold_cancel(p_gid text, p_branch text, p_key text, p_hold_key text, p_now timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    h record;
BEGIN
    IF hb_cancel_barrier(p_gid, p_branch) <> 'run' THEN
        RETURN;
    END IF;
    SELECT * INTO h FROM hb_resolve(p_hold_key, p_key, 'voided', NULL, p_now);
    IF NOT h.done THEN
        UPDATE accounts SET held = held - h.amount WHERE id = h.account;
    END IF;
END $$;

-- A receive's try: room for p_amount reserved on the user's wallet (its
-- incoming), refused when the wallet would pass p_max.
CREATE FUNCTION hb_receive_try(p_gid text, p_branch text, p_user bigint, p_amount bigint, p_max bigint, p_slot int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT hb_try_barrier(p_gid, p_branch) THEN
        RETURN;
    END IF;
    INSERT INTO accounts AS a (id, kind, name, incoming, slot) VALUES (p_user, 'user', 'user', p_amount, p_slot)
        ON CONFLICT (id) DO UPDATE SET incoming = a.incoming + excluded.incoming
        WHERE a.balance + a.incoming + excluded.incoming <= p_max;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user %, maximum %', p_user, p_max USING ERRCODE = 'HB002';
    END IF;
END $$;

-- A receive's confirm: the user credited from the system stripe p_from
-- under p_key using the room its try reserved, and the event told.
CREATE FUNCTION hb_receive_confirm(p_gid text, p_branch text, p_key text, p_from bigint, p_user bigint, p_amount bigint, p_peer bigint,
    p_slot int, p_event_id text, p_event_kind text, p_conversation text, p_payload jsonb, p_at timestamptz) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT hb_confirm_barrier(p_gid, p_branch) THEN
        RETURN;
    END IF;
    PERFORM hb_move('credit', p_key, p_from, p_user, p_amount, 0, NULL, p_amount, p_peer, p_slot);
    INSERT INTO event_outbox (id, kind, conversation, user_id, payload, at) VALUES (p_event_id, p_event_kind, p_conversation, p_user, p_payload, p_at);
END $$;

-- A receive's cancel: the room its try reserved freed.
CREATE FUNCTION hb_receive_cancel(p_gid text, p_branch text, p_user bigint, p_amount bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF hb_cancel_barrier(p_gid, p_branch) = 'run' THEN
        UPDATE accounts SET incoming = incoming - p_amount WHERE id = p_user;
    END IF;
END $$;

-- A saga step (p_op 'try') or its compensation ('cancel'): one posting of
-- p_amount from row p_from to row p_to under p_key, with the event given
-- (p_event_id NULL: none).
CREATE FUNCTION hb_saga_step(p_gid text, p_branch text, p_op text, p_kind text, p_key text, p_from bigint, p_to bigint, p_amount bigint,
    p_slot int, p_event_id text, p_event_kind text, p_conversation text, p_event_user bigint, p_payload jsonb, p_at timestamptz)
    RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_op = 'try' THEN
        IF NOT hb_try_barrier(p_gid, p_branch) THEN
            RETURN;
        END IF;
    ELSIF hb_cancel_barrier(p_gid, p_branch) <> 'run' THEN
        RETURN;
    END IF;
    PERFORM hb_move(p_kind, p_key, p_from, p_to, p_amount, 0, NULL, 0, 0, p_slot);
    IF p_event_id IS NOT NULL THEN
        INSERT INTO event_outbox (id, kind, conversation, user_id, payload, at) VALUES (p_event_id, p_event_kind, p_conversation, p_event_user, p_payload, p_at);
    END IF;
END $$;
