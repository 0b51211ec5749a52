-- The journal's account references are proven, not checked row by row:
-- every posting is written in the transaction that changed both of its
-- accounts' balances and read them back (RETURNING, or a NOT NULL running
-- balance read from the row), and accounts are never deleted. The two
-- foreign keys cost a key-share lookup of each account for every posting
-- (a third of a credit's journal insert); Ledger.Check proves instead that
-- every posting's accounts exist (rule posting-accounts-exist).
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'postings'::regclass AND contype = 'f' AND confrelid = 'accounts'::regclass LOOP
        EXECUTE format('ALTER TABLE postings DROP CONSTRAINT %I', c.conname);
    END LOOP;
END $$;
