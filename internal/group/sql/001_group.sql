-- Groups of the group shard. member_count is the number of rows in members
-- for the group, kept by the same transactions that add and remove them; the
-- CHECK makes a full group refuse one more member even if code got it wrong.
-- The owner is a member from creation and can neither leave nor be banned.
CREATE TABLE groups (
    id           bigint      PRIMARY KEY CHECK (id > 0),
    owner        bigint      NOT NULL CHECK (owner > 0),
    capacity     int         NOT NULL CHECK (capacity > 0),
    fee          bigint      NOT NULL CHECK (fee >= 0),
    member_count int         NOT NULL CHECK (member_count >= 0 AND member_count <= capacity),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Members of a group, one row per user.
CREATE TABLE members (
    group_id  bigint      NOT NULL REFERENCES groups (id),
    user_id   bigint      NOT NULL CHECK (user_id > 0),
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id)
);

-- Users banned from a group: they are not members and cannot join.
CREATE TABLE banned (
    group_id  bigint      NOT NULL REFERENCES groups (id),
    user_id   bigint      NOT NULL CHECK (user_id > 0),
    banned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id)
);
