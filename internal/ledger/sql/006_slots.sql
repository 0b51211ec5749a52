-- Slots that move between shards (a live migration): a user's slot (the
-- same hash as shard.SlotOf), stored on the rows a move must fence; the
-- fences of this shard; what a move took out of and brought into it.

-- hb_slot is shard.SlotOf: the splitmix64 finalizer of the id, mod 1024.
-- Unsigned 64-bit arithmetic in numeric, xor and shifts in bit(64).
CREATE FUNCTION hb_u64_xorshr(z numeric, k int) RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN x < 0 THEN x + 18446744073709551616 ELSE x END FROM (
        SELECT (b # (b >> k))::bigint::numeric AS x FROM (
            SELECT (CASE WHEN z >= 9223372036854775808 THEN z - 18446744073709551616 ELSE z END)::bigint::bit(64) AS b) s) t
$$;
CREATE FUNCTION hb_slot(id bigint) RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (hb_u64_xorshr(mod(hb_u64_xorshr(mod(hb_u64_xorshr(
        CASE WHEN id < 0 THEN id + 18446744073709551616 ELSE id::numeric END, 30)
        * 13787848793156543929, 18446744073709551616), 27)
        * 10723151780598845931, 18446744073709551616), 31) % 1024)::int
$$;

-- The slot is computed once, when the row is inserted (by the trigger
-- below), not as a generated column: a stored generated column is computed
-- again on every update, and the hash in numeric costs ~0.2 ms a row.
ALTER TABLE accounts ADD COLUMN slot int;
UPDATE accounts SET slot = hb_slot(id) WHERE id > 0;
CREATE INDEX accounts_slot ON accounts (slot) WHERE slot IS NOT NULL;
ALTER TABLE request_keys ADD COLUMN slot int;
UPDATE request_keys SET slot = hb_slot(user_id) WHERE user_id > 0;
CREATE INDEX request_keys_slot ON request_keys (slot) WHERE slot IS NOT NULL;
-- The wallet an idempotent operation is about (it moves with the wallet).
ALTER TABLE ops ADD COLUMN user_id bigint;
CREATE INDEX ops_user ON ops (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX holds_account ON holds (account_id);

-- A fenced slot refuses every write of its wallets and request keys:
-- frozen (moving out), incoming (moving in, not switched yet) or gone
-- (moved away: a node that still routes here is told to retry, and learns
-- the new table). A migration's own statements pass (hongbao.migrating).
CREATE TABLE slot_fences (
    slot       int         PRIMARY KEY CHECK (slot BETWEEN 0 AND 1023),
    state      text        NOT NULL CHECK (state IN ('frozen', 'incoming', 'gone')),
    prev_state text        CHECK (prev_state IN ('gone')),
    migration  bigint      NOT NULL,
    since      timestamptz NOT NULL DEFAULT now()
);
-- The trigger also keeps the row's slot: computed on insert, kept on update.
CREATE FUNCTION hb_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s int;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        s := OLD.slot;
    ELSIF NEW.slot IS NOT NULL THEN
        s := NEW.slot; -- the writer computed it (shard.SlotOf, the same hash)
    ELSIF TG_TABLE_NAME = 'accounts' THEN
        s := CASE WHEN NEW.id > 0 THEN hb_slot(NEW.id) END;
    ELSE
        s := CASE WHEN NEW.user_id > 0 THEN hb_slot(NEW.user_id) END;
    END IF;
    NEW.slot := s;
    IF s IS NOT NULL AND EXISTS (SELECT 1 FROM slot_fences WHERE slot = s)
       AND coalesce(current_setting('hongbao.migrating', true), '') <> 'on' THEN
        RAISE EXCEPTION 'slot % is moving to another shard: retry', s USING ERRCODE = 'HB503';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_fence BEFORE INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION hb_fence();
CREATE TRIGGER request_keys_fence BEFORE INSERT OR UPDATE ON request_keys FOR EACH ROW EXECUTE FUNCTION hb_fence();

-- What a migration took out (a wallet's balance to the migration account)
-- and brought in (from it), once per migration and user.
CREATE TABLE slot_moves (
    migration bigint      NOT NULL,
    direction text        NOT NULL CHECK (direction IN ('out', 'in', 'out_undone', 'in_undone')),
    user_id   bigint      NOT NULL,
    amount    bigint      NOT NULL CHECK (amount >= 0),
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration, direction, user_id)
);

ALTER TABLE postings DROP CONSTRAINT postings_kind_check;
ALTER TABLE postings ADD CONSTRAINT postings_kind_check
    CHECK (kind IN ('deposit', 'transfer', 'hold_post', 'credit', 'debit', 'refund', 'settle', 'topup', 'withdrawal', 'reversal', 'migrate'));

-- The share of clearing:channel that a migration's payment orders carry
-- (withdrawals paid out minus top-ups credited), moved with them.
CREATE TABLE slot_move_clearing (
    migration bigint NOT NULL,
    direction text   NOT NULL CHECK (direction IN ('out', 'in', 'out_undone', 'in_undone')),
    amount    bigint NOT NULL,
    PRIMARY KEY (migration, direction)
);
