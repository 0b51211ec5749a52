package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"hongbao/internal/group"
	"hongbao/internal/idempotency"
	"hongbao/internal/ledger"
	"hongbao/internal/packet"
	"hongbao/internal/payment"
)

// requests keeps every API idempotency key in one place: the record of
// (acting user, key) on the user's ledger shard, whatever code path then
// serves the request. Duplicates of one key in this process run one at a
// time, so that every answer to the same key and body is the same answer.
type requests struct {
	ls      *Ledgers
	mu      sync.Mutex
	flights map[flightKey]*flight
}

type flightKey struct {
	user int64
	key  string
}

type flight struct {
	turn chan struct{} // holds one token: whoever takes it runs
	refs int
}

func newRequests(ls *Ledgers) *requests {
	return &requests{ls: ls, flights: map[flightKey]*flight{}}
}

// lock waits until no other request with this key runs in this process.
func (r *requests) lock(ctx context.Context, k flightKey) (unlock func(), err error) {
	r.mu.Lock()
	f, ok := r.flights[k]
	if !ok {
		f = &flight{turn: make(chan struct{}, 1)}
		f.turn <- struct{}{}
		r.flights[k] = f
	}
	f.refs++
	r.mu.Unlock()
	release := func() {
		r.mu.Lock()
		if f.refs--; f.refs == 0 {
			delete(r.flights, k)
		}
		r.mu.Unlock()
	}
	select {
	case <-f.turn:
		return func() { f.turn <- struct{}{}; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// refused reports an error that says a request was refused before it
// changed anything.
func refused(err error) bool {
	for _, e := range []error{ErrInvalid, ledger.ErrInvalid, ledger.ErrBalanceLimit, ledger.ErrInsufficientFunds,
		packet.ErrInvalid, packet.ErrNotGroupMember, packet.ErrNotFound,
		group.ErrInvalid, group.ErrNotFound, group.ErrGroupFull, group.ErrBanned, group.ErrConflict, group.ErrAlreadyMember,
		payment.ErrInvalid, payment.ErrDailyLimit, payment.ErrNoChannel} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// once runs an operation for (user, key) with its request. The first
// request records the key with its params (what it resolved, e.g. a packet
// id); a replay with the same request gets the stored final answer, or,
// when there is none yet, runs the operation again with the stored params
// (every operation behind it is idempotent on keys derived from user and
// key). A replay with another request is ledger.ErrIdempotencyConflict.
// run reports whether its result is final (committed or cancelled), which
// is then stored as the answer to every later replay.
func once[T any](ctx context.Context, r *requests, user int64, key, op string, req, params any,
	run func(ctx context.Context, fresh bool) (T, bool, error)) (T, error) {
	var zero T
	if key == "" {
		return zero, fmt.Errorf("%w: an idempotency key is required", ErrInvalid)
	}
	hash, err := idempotency.Digest(op, req)
	if err != nil {
		return zero, err
	}
	p, err := json.Marshal(params)
	if err != nil {
		return zero, err
	}
	unlock, err := r.lock(ctx, flightKey{user, key})
	if err != nil {
		return zero, err
	}
	defer unlock()
	l := r.ls.For(user)
	rec, fresh, err := l.ClaimRequest(ctx, ledger.Request{User: user, Key: key, Op: op, Hash: hash, Params: p})
	if err != nil {
		return zero, err
	}
	if !fresh {
		if rec.Status != 0 {
			var out T
			if err := json.Unmarshal(rec.Response, &out); err != nil {
				return zero, fmt.Errorf("decode stored answer of key %q: %w", key, err)
			}
			return out, nil
		}
		if err := json.Unmarshal(rec.Params, params); err != nil {
			return zero, fmt.Errorf("decode stored params of key %q: %w", key, err)
		}
	}
	res, final, err := run(ctx, fresh)
	if err != nil && refused(err) {
		// Refused before anything changed (bad input, a missing or full
		// group, a wallet without room): the key stays free, so that the
		// corrected request can use it.
		if ferr := l.ForgetRequest(context.WithoutCancel(ctx), user, key); ferr != nil {
			return res, errors.Join(err, ferr)
		}
		return res, err
	}
	if err != nil || !final {
		return res, err
	}
	b, err := json.Marshal(res)
	if err != nil {
		return res, err
	}
	// The answer is already decided; store it even if the caller left. Not
	// storing it changes nothing of the answer: it is final, so it is
	// answered (an error here would tell the client that nothing happened:
	// a slot fenced for a move in between answered 503). A replay finds no
	// stored answer and runs the idempotent operation again, which answers
	// the same and stores it.
	_ = l.FinishRequest(context.WithoutCancel(ctx), user, key, 200, b)
	return res, nil
}
