-- The digest of a global transaction's kind and branches as first logged:
-- running a gid again compares it (the branches' jsonb no longer has the
-- payloads' bytes).
ALTER TABLE dtx_global ADD COLUMN spec_hash bytea;
