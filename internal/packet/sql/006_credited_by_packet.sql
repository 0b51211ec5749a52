-- Claims credited by packet, not by claim. A packet's committed claims are
-- its seqs 1..claimed: one committer writes a packet's claims in order, in
-- the transaction that moves its remainder, and a batch that fails breaks
-- the packet until it is read again from what was written. So what the
-- reconciler has seen applied in the ledgers is a watermark per packet
-- (credited_seq: every claim up to it is credited), moved once per packet
-- and pass, where a mark per claim rewrote every claim row and every index
-- of it once more, and kept an index of the unmarked that every new claim
-- entered. The ledgers' own idempotency records are what prove a credit;
-- the watermark only says how far the reconciler has looked.
ALTER TABLE packets ADD COLUMN claimed int NOT NULL DEFAULT 0, ADD COLUMN credited_seq int NOT NULL DEFAULT 0;
UPDATE packets p SET claimed = c.n, credited_seq = coalesce(c.first_owed - 1, c.n)
    FROM (SELECT packet_id, packet_at, count(*) AS n, min(seq) FILTER (WHERE credited_at IS NULL) AS first_owed
          FROM claims GROUP BY packet_id, packet_at) c
    WHERE c.packet_id = p.id AND c.packet_at = p.created_at;
ALTER TABLE packets ADD CONSTRAINT packets_credited CHECK (credited_seq >= 0 AND credited_seq <= claimed AND claimed <= shares);
-- The packets whose claims the reconciler has still to see credited.
CREATE INDEX packets_owing ON packets (created_at) WHERE credited_seq < claimed;
DROP INDEX claims_uncredited;
ALTER TABLE claims DROP COLUMN credited_at;
