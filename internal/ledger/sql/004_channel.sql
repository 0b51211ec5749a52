-- Money through the payment channel: top-ups (clearing:channel -> user),
-- withdrawals (a hold posted user -> clearing:channel) and withdrawals the
-- channel reversed (clearing:channel -> user).
ALTER TABLE postings DROP CONSTRAINT postings_kind_check;
ALTER TABLE postings ADD CONSTRAINT postings_kind_check
    CHECK (kind IN ('deposit', 'transfer', 'hold_post', 'credit', 'debit', 'refund', 'settle', 'topup', 'withdrawal', 'reversal'));
