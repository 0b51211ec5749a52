-- Room on every page of the rows updated all day: a wallet's balance, held
-- and incoming change on every posting, a request key gets its answer once.
-- No indexed column changes in those updates, so with free space on the
-- page PostgreSQL writes the new version beside the old (a HOT update) and
-- touches no index; a full page moves the row and inserts into every index.
-- Pages written from now on keep the room; VACUUM FULL would rewrite old ones.
ALTER TABLE accounts SET (fillfactor = 70);
ALTER TABLE request_keys SET (fillfactor = 80);
