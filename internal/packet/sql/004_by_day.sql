-- Packets partitioned by the day (UTC) they were sent, and their claims by
-- the same day (packet_at, the packet's created_at), so that one packet's
-- claims are in one partition (one claim per user and per share stays a
-- unique constraint) and the hot path writes today's partitions only. Keys
-- include the partition key; ids stay unique by their sequences. A day
-- whose packets are all closed and credited can be archived: packets,
-- claims and refunds of that day leave together (archived_packets keeps
-- the ids so that a lookup answers "archived").
ALTER TABLE packets RENAME TO packets_unpartitioned;
ALTER INDEX packets_pkey RENAME TO packets_unpartitioned_pkey;
ALTER INDEX packets_sender RENAME TO packets_unpartitioned_sender;
ALTER INDEX packets_expiry RENAME TO packets_unpartitioned_expiry;
CREATE TABLE packets (LIKE packets_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
ALTER TABLE packets ADD PRIMARY KEY (id, created_at);
CREATE INDEX packets_sender ON packets (sender, id DESC);
CREATE INDEX packets_expiry ON packets (expires_at) WHERE state = 'active';
CREATE INDEX packets_id ON packets (id);

ALTER TABLE claims RENAME TO claims_unpartitioned;
ALTER INDEX claims_pkey RENAME TO claims_unpartitioned_pkey;
ALTER INDEX claims_user RENAME TO claims_unpartitioned_user;
ALTER INDEX claims_uncredited RENAME TO claims_unpartitioned_uncredited;
ALTER INDEX claims_user_time RENAME TO claims_unpartitioned_user_time;
ALTER TABLE claims_unpartitioned RENAME CONSTRAINT claims_packet_id_user_id_key TO claims_unpartitioned_packet_user;
ALTER TABLE claims_unpartitioned RENAME CONSTRAINT claims_packet_id_seq_key TO claims_unpartitioned_packet_seq;
CREATE TABLE claims (LIKE claims_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS, packet_at timestamptz NOT NULL)
    PARTITION BY RANGE (packet_at);
ALTER TABLE claims ADD PRIMARY KEY (id, packet_at);
ALTER TABLE claims ADD CONSTRAINT claims_packet_user UNIQUE (packet_id, user_id, packet_at);
ALTER TABLE claims ADD CONSTRAINT claims_packet_seq UNIQUE (packet_id, seq, packet_at);
CREATE INDEX claims_user ON claims (user_id, id DESC);
CREATE INDEX claims_uncredited ON claims (id) WHERE credited_at IS NULL;
CREATE INDEX claims_user_time ON claims (user_id, created_at DESC, id DESC);

SELECT hb_ensure_day('packets', d), hb_ensure_day('claims', d)
    FROM (SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date AS d FROM packets_unpartitioned) x;
INSERT INTO packets SELECT * FROM packets_unpartitioned;
INSERT INTO claims SELECT c.*, p.created_at FROM claims_unpartitioned c JOIN packets_unpartitioned p ON p.id = c.packet_id;
DROP TABLE claims_unpartitioned;
DROP TABLE packets_unpartitioned;

CREATE TABLE archived_packets (
    id  bigint PRIMARY KEY,
    day date   NOT NULL
);
