-- The journal partitioned by day (UTC) of created_at: the hot path writes
-- today's partition only, and a day that is over can be archived (detached)
-- with its per-account totals carried in archived_totals, so that every
-- balance still equals its journal. A partitioned table's keys include the
-- partition key: the posting id stays unique by its sequence; the hold's
-- reference to its posting is kept without a foreign key.
ALTER TABLE holds DROP CONSTRAINT holds_posting_id_fkey;
ALTER TABLE postings RENAME TO postings_unpartitioned;
ALTER INDEX postings_pkey RENAME TO postings_unpartitioned_pkey;
ALTER INDEX postings_debit RENAME TO postings_unpartitioned_debit;
ALTER INDEX postings_credit RENAME TO postings_unpartitioned_credit;
CREATE TABLE postings (LIKE postings_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
ALTER SEQUENCE postings_id_seq OWNED BY postings.id;
ALTER TABLE postings ADD PRIMARY KEY (id, created_at);
ALTER TABLE postings ADD FOREIGN KEY (debit_account) REFERENCES accounts (id);
ALTER TABLE postings ADD FOREIGN KEY (credit_account) REFERENCES accounts (id);
CREATE INDEX postings_debit ON postings (debit_account, id);
CREATE INDEX postings_credit ON postings (credit_account, id);
SELECT hb_ensure_day('postings', d) FROM (SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date AS d FROM postings_unpartitioned) x;
INSERT INTO postings SELECT * FROM postings_unpartitioned;
DROP TABLE postings_unpartitioned;

-- What archived days took out of each account's journal: the sum of its
-- postings and the running balance after the last of them.
CREATE TABLE archived_totals (
    account      bigint PRIMARY KEY REFERENCES accounts (id),
    total        bigint NOT NULL,
    last_balance bigint NOT NULL
);
