package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Request is the idempotency record of an API request. The acting user's
// key names one operation: the record lives on the user's shard whatever
// code path serves the request (a local transfer, a global transaction),
// and a replay must match its operation and request hash.
type Request struct {
	User int64  // the acting user; 0 for an operator
	Key  string // the client's Idempotency-Key
	Op   string // the operation, e.g. "transfer"
	Hash []byte // digest of every field of the request
	// Params are what the first request resolved (a packet id, an expiry),
	// so that a replay runs the same operation.
	Params json.RawMessage
	// Status and Response are the final answer, once there is one (Status 0:
	// none yet, run the operation again: it is idempotent).
	Status   int
	Response json.RawMessage
}

// ClaimRequest records r unless its key is already taken, and returns the
// record as stored; fresh reports that this call made it. The same key with
// another operation or request is ErrIdempotencyConflict.
func (l *Ledger) ClaimRequest(ctx context.Context, r Request) (stored Request, fresh bool, err error) {
	if r.Key == "" || r.Op == "" || len(r.Hash) == 0 || r.User < 0 {
		return r, false, fmt.Errorf("%w: request record needs a user, a key, an operation and a hash", ErrInvalid)
	}
	params := r.Params
	if len(params) == 0 {
		params = json.RawMessage(`{}`)
	}
	tag, err := l.db.Exec(ctx, `INSERT INTO request_keys (user_id, key, op, req_hash, params, slot) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT DO NOTHING`, r.User, r.Key, r.Op, r.Hash, params, slotOf(r.User))
	if err != nil {
		return r, false, fmt.Errorf("record request key %q of user %d: %w", r.Key, r.User, err)
	}
	if tag.RowsAffected() == 1 {
		r.Params = params
		return r, true, nil
	}
	stored = Request{User: r.User, Key: r.Key}
	var status *int
	err = l.db.QueryRow(ctx, `SELECT op, req_hash, params, status, response FROM request_keys WHERE user_id = $1 AND key = $2`,
		r.User, r.Key).Scan(&stored.Op, &stored.Hash, &stored.Params, &status, &stored.Response)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, fmt.Errorf("request key %q of user %d vanished (purged?): retry", r.Key, r.User)
	}
	if err != nil {
		return r, false, fmt.Errorf("read request key %q of user %d: %w", r.Key, r.User, err)
	}
	if stored.Op != r.Op || !bytes.Equal(stored.Hash, r.Hash) {
		return stored, false, fmt.Errorf("%w: Idempotency-Key %q was used for another %s request", ErrIdempotencyConflict, r.Key, stored.Op)
	}
	if status != nil {
		stored.Status = *status
	}
	return stored, false, nil
}

// FinishRequest stores the final answer of a request, once: a later answer
// never replaces the first. Its commit does not wait for the disk: an
// answer lost in a crash leaves the record without one, and a replay then
// runs the operation again, which is idempotent and answers the same (the
// global transaction's log, the ledger's own key), and stores it.
func (l *Ledger) FinishRequest(ctx context.Context, user int64, key string, status int, response json.RawMessage) error {
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`) // local to this implicit transaction
	b.Queue(`UPDATE request_keys SET status = $3, response = $4 WHERE user_id = $1 AND key = $2 AND status IS NULL`,
		user, key, status, response)
	err := l.db.SendBatch(ctx, b).Close()
	if err != nil {
		return fmt.Errorf("store answer of request key %q of user %d: %w", key, user, err)
	}
	return nil
}

// ForgetRequest drops a record that has no answer: its request was refused
// before it changed anything, so the key is free for a corrected request.
func (l *Ledger) ForgetRequest(ctx context.Context, user int64, key string) error {
	_, err := l.db.Exec(ctx, `DELETE FROM request_keys WHERE user_id = $1 AND key = $2 AND status IS NULL`, user, key)
	if err != nil {
		return fmt.Errorf("forget request key %q of user %d: %w", key, user, err)
	}
	return nil
}

// PurgeRequests forgets request records older than before, up to limit.
func (l *Ledger) PurgeRequests(ctx context.Context, before time.Time, limit int) (int64, error) {
	tag, err := l.db.Exec(ctx, `DELETE FROM request_keys WHERE ctid = ANY (ARRAY(
		SELECT ctid FROM request_keys WHERE created_at < $1 LIMIT $2))`, before, limit)
	if err != nil {
		return 0, fmt.Errorf("purge request keys: %w", err)
	}
	return tag.RowsAffected(), nil
}
