-- A user's claims are read by time (claims_user_time: the received list);
-- claims_user (user_id, id) served the list before it was by time and no
-- statement reads it any more, while every claim of a storm paid for it.
DROP INDEX IF EXISTS claims_user;
