package payment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/channel"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
)

// Get returns an order.
func (s *Service) Get(ctx context.Context, id int64) (Order, error) {
	l, ok := s.locate(ctx, id)
	if !ok {
		return Order{}, ErrNotFound
	}
	o, err := scanOrder(l.DB().QueryRow(ctx, `SELECT `+orderColumns+` FROM channel_orders WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, ErrNotFound
	}
	return o, err
}

// Events are an order's recorded transitions, oldest first.
func (s *Service) Events(ctx context.Context, id int64) ([]Event, error) {
	l, ok := s.locate(ctx, id)
	if !ok {
		return nil, ErrNotFound
	}
	rows, err := l.DB().Query(ctx, `SELECT from_state, to_state, note, at FROM channel_order_events WHERE order_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		err := r.Scan(&e.From, &e.To, &e.Note, &e.At)
		return e, err
	})
}

// List returns a user's orders of a kind, newest first, before an id (0: from the newest).
func (s *Service) List(ctx context.Context, kind Kind, user, before int64, limit int) ([]Order, error) {
	l := s.o.Shards[s.o.ShardOf(user)]
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := l.DB().Query(ctx, `SELECT `+orderColumns+` FROM channel_orders WHERE user_id = $1 AND kind = $2 AND id < $3
		ORDER BY id DESC LIMIT $4`, user, kind, before, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) { return scanOrder(r) })
}

// Open returns the orders not final yet created before olderThan, oldest
// first, across shards: what an operator watches (a withdrawal unknown for
// long, a top-up the channel never answered).
func (s *Service) Open(ctx context.Context, olderThan time.Time, limit int) ([]Order, error) {
	var out []Order
	for _, l := range s.o.Shards {
		rows, err := l.DB().Query(ctx, `SELECT `+orderColumns+` FROM channel_orders WHERE next_check IS NOT NULL AND created_at <= $1
			ORDER BY created_at LIMIT $2`, olderThan, limit)
		if err != nil {
			return nil, err
		}
		os, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) { return scanOrder(r) })
		if err != nil {
			return nil, err
		}
		out = append(out, os...)
	}
	return out, nil
}

// Settled returns the orders the channel says were paid or paid out on day
// (UTC), across shards: our side of its statement.
func (s *Service) Settled(ctx context.Context, d time.Time) ([]Order, error) {
	from := day(d)
	var out []Order
	for _, l := range s.o.Shards {
		rows, err := l.DB().Query(ctx, `SELECT `+orderColumns+` FROM channel_orders
			WHERE channel_at >= $1 AND channel_at < $2 ORDER BY id`, from, from.AddDate(0, 0, 1))
		if err != nil {
			return nil, err
		}
		os, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) { return scanOrder(r) })
		if err != nil {
			return nil, err
		}
		out = append(out, os...)
	}
	return out, nil
}

// ParseID reads a channel order id (ours, in decimal).
func ParseID(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	id, err := strconv.ParseInt(s, 10, 64)
	return id, err == nil && id > 0
}

// CreditPaid credits a top-up the channel says was paid (reconciliation's
// repair: the same idempotent path as a callback).
func (s *Service) CreditPaid(ctx context.Context, id int64, paidAt time.Time, by string) (Order, error) {
	return s.credit(ctx, id, paidAt, by)
}

// ResolvePayout applies a payout state the channel's statement says
// (reconciliation's repair of a withdrawal still unknown here).
func (s *Service) ResolvePayout(ctx context.Context, id int64, state string, at time.Time, by string) (Order, error) {
	switch state {
	case channel.PayoutSucceeded:
		return s.settle(ctx, id, at, by)
	case channel.PayoutFailed:
		return s.fail(ctx, id, "failed at the channel", by)
	}
	return Order{}, fmt.Errorf("%w: payout state %q", ErrInvalid, state)
}

// Notify handles a callback from the channel: the signature is checked
// (channel.ErrBadSignature), the order found (ErrNotFound) and, when the
// channel says it is paid with our amount, credited once. It returns after
// the commit, so the channel hears 2xx only then; a repeat answers the
// same. Callbacks of orders not paid change nothing.
func (s *Service) Notify(ctx context.Context, h http.Header, body []byte) (Order, error) {
	o, err := s.notify(ctx, h, body)
	result := "applied"
	switch {
	case errors.Is(err, channel.ErrBadSignature):
		result = "rejected_signature"
	case errors.Is(err, ErrNotFound):
		result = "rejected_order"
	case errors.Is(err, ErrAmountMismatch):
		result = "rejected_amount"
	case errors.Is(err, ErrInvalid):
		result = "rejected_body"
	case err != nil:
		result = "failed"
	}
	s.callbacks.WithLabelValues(result).Inc()
	return o, err
}

func (s *Service) notify(ctx context.Context, h http.Header, body []byte) (Order, error) {
	if s.o.Channel == nil {
		return Order{}, ErrNoChannel
	}
	if err := channel.Verify(h, s.o.Secret, body, s.o.Now()); err != nil {
		return Order{}, err
	}
	var po struct {
		ID     string       `json:"id"`
		Amount money.Amount `json:"amount"`
		State  string       `json:"state"`
		PaidAt time.Time    `json:"paid_at"`
	}
	if err := json.Unmarshal(body, &po); err != nil {
		return Order{}, fmt.Errorf("%w: callback body: %v", ErrInvalid, err)
	}
	id, ok := ParseID(po.ID)
	if !ok {
		return Order{}, fmt.Errorf("%w: order id %q", ErrNotFound, po.ID)
	}
	o, err := s.Get(ctx, id)
	if err != nil {
		return o, err
	}
	if o.Kind != TopUp {
		return Order{}, fmt.Errorf("%w: order %d is not a top-up", ErrNotFound, id)
	}
	if po.State != channel.PayPaid {
		return o, nil
	}
	if po.PaidAt.IsZero() {
		po.PaidAt = s.o.Now()
	}
	return s.applyPay(ctx, o, channel.PayOrder{ID: po.ID, Amount: po.Amount, State: po.State, PaidAt: po.PaidAt}, "callback")
}

// Check proves each shard's channel money: clearing:channel equals what
// the orders say moved (withdrawals paid out minus top-ups credited; a
// reversed withdrawal nets to nothing), in one snapshot per shard.
func (s *Service) Check(ctx context.Context) ([]string, error) {
	var out []string
	for _, l := range s.o.Shards {
		err := pgx.BeginTxFunc(ctx, l.DB(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			var clearing, orders int64
			if err := tx.QueryRow(ctx, `SELECT coalesce(sum(balance), 0) FROM accounts WHERE id <= $1 AND id > $1 - 1024`, int64(ledger.ClearingChannel)).Scan(&clearing); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT coalesce(sum(CASE WHEN state = 'succeeded' THEN amount WHEN state = 'paid' THEN -amount ELSE 0 END), 0)
				FROM channel_orders`).Scan(&orders); err != nil {
				return err
			}
			if clearing != orders {
				out = append(out, fmt.Sprintf("ledger %d: clearing:channel holds %s, the orders say %s", l.Shard(), money.Amount(clearing), money.Amount(orders)))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("check channel orders of ledger shard %d: %w", l.Shard(), err)
		}
	}
	return out, nil
}
