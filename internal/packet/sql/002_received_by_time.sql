-- A user's claims newest first by the time of the grab (the received list
-- merges sets, whose claim ids are not comparable across sets).
CREATE INDEX claims_user_time ON claims (user_id, created_at DESC, id DESC);
