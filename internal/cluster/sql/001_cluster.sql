-- The live nodes and who owns each packet set (its grab engine, committer,
-- relay and sweeper), in the coordinator's database.
CREATE TABLE cluster_nodes (
    id         text        PRIMARY KEY,
    url        text        NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE set_leases (
    set_no     int         PRIMARY KEY,
    owner      text,
    expires_at timestamptz NOT NULL DEFAULT 'epoch',
    moves      bigint      NOT NULL DEFAULT 0,
    since      timestamptz NOT NULL DEFAULT now()
);
