-- The other user of a posting through a clearing account (a cross-shard
-- transfer's receiver or sender), so that a statement can say "transfer to
-- user 2" where the counterparty row is only clearing:transfers.
ALTER TABLE postings ADD COLUMN peer bigint CHECK (peer > 0);
