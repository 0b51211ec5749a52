-- The claims the reconciler found not applied in their ledger when it
-- looked (older than its grace): kept here, one row each, looked at again
-- every pass and published again until applied, so that a packet's
-- watermark moves on past them. A claim that cannot be credited (its
-- credit parked as a dead letter until an operator re-drives it) then
-- holds back neither its packet's other claims nor the reconciler's pages,
-- and what is counted as waiting is what waits. Normally empty.
CREATE TABLE claims_owed (
    claim_id   bigint      PRIMARY KEY,
    packet_id  bigint      NOT NULL,
    packet_at  timestamptz NOT NULL,
    seq        int         NOT NULL,
    user_id    bigint      NOT NULL,
    amount     bigint      NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX claims_owed_packet ON claims_owed (packet_id);
