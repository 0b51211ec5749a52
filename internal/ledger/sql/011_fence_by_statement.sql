-- The slot fence checked once a statement instead of once a row. A row
-- trigger ran PL/pgSQL and a lookup of slot_fences for every wallet a
-- credit batch touched (twice for a wallet that already existed: an upsert
-- fires the insert and the update triggers), a large part of the batch's
-- upsert. Now:
--  - the slot is filled in only for a row inserted without one (the
--    writers store shard.SlotOf) and kept on update, by row triggers whose
--    WHEN conditions, evaluated without calling them, are almost never true;
--  - after each statement, one query joins the rows it wrote with the
--    fences (nothing when no slot is fenced) and refuses the statement
--    whole, as the row trigger did, with HB503.
-- The guarantee is unchanged: a statement that began before a fence
-- committed holds its row lock on accounts (or request_keys) until its
-- transaction ends, and the migration waits for those (Busy) before it
-- copies; one that began later sees the fence in its check.
DROP TRIGGER accounts_fence ON accounts;
DROP TRIGGER request_keys_fence ON request_keys;
DROP FUNCTION hb_fence();

CREATE FUNCTION hb_slot_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'accounts' THEN
        NEW.slot := CASE WHEN NEW.id > 0 THEN hb_slot(NEW.id) END;
    ELSE
        NEW.slot := CASE WHEN NEW.user_id > 0 THEN hb_slot(NEW.user_id) END;
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION hb_slot_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.slot := OLD.slot;
    RETURN NEW;
END $$;

CREATE FUNCTION hb_fence_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM slot_fences) OR coalesce(current_setting('hongbao.migrating', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    SELECT c.slot INTO s FROM changed c JOIN slot_fences f ON f.slot = c.slot LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'slot % is moving to another shard: retry', s USING ERRCODE = 'HB503';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER accounts_slot_fill BEFORE INSERT ON accounts FOR EACH ROW WHEN (NEW.slot IS NULL) EXECUTE FUNCTION hb_slot_fill();
CREATE TRIGGER accounts_slot_keep BEFORE UPDATE ON accounts FOR EACH ROW WHEN (NEW.slot IS DISTINCT FROM OLD.slot) EXECUTE FUNCTION hb_slot_keep();
CREATE TRIGGER accounts_fence_insert AFTER INSERT ON accounts REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION hb_fence_check();
CREATE TRIGGER accounts_fence_update AFTER UPDATE ON accounts REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION hb_fence_check();

CREATE TRIGGER request_keys_slot_fill BEFORE INSERT ON request_keys FOR EACH ROW WHEN (NEW.slot IS NULL) EXECUTE FUNCTION hb_slot_fill();
CREATE TRIGGER request_keys_slot_keep BEFORE UPDATE ON request_keys FOR EACH ROW WHEN (NEW.slot IS DISTINCT FROM OLD.slot) EXECUTE FUNCTION hb_slot_keep();
CREATE TRIGGER request_keys_fence_insert AFTER INSERT ON request_keys REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION hb_fence_check();
CREATE TRIGGER request_keys_fence_update AFTER UPDATE ON request_keys REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION hb_fence_check();
