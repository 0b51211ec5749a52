package payment

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/channel"
	"hongbao/internal/events"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/postgres"
)

// ErrAmountMismatch: the channel reports another amount for the order than
// ours; nothing is credited (reconciliation lists it for an operator).
var ErrAmountMismatch = errors.New("the channel reports another amount for the order")

// Ledger keys of an order's money: one credit per top-up, one hold per
// withdrawal resolved once, one refund per reversal.
func topUpKey(id int64) string              { return fmt.Sprintf("topup:%d", id) }
func holdKey(id int64) string               { return fmt.Sprintf("withdrawal:%d", id) }
func reversalKey(id int64) string           { return fmt.Sprintf("withdrawal:%d:reversal", id) }
func resolveKey(id int64, op string) string { return fmt.Sprintf("withdrawal:%d:%s", id, op) }

const orderColumns = `id, kind, user_id, amount, state, pay_url, reason, deadline, channel_at, created_at, updated_at, attempts`

func scanOrder(row pgx.Row) (Order, error) {
	var o Order
	err := row.Scan(&o.ID, &o.Kind, &o.User, &o.Amount, &o.State, &o.PayURL, &o.Reason, &o.Deadline, &o.ChannelAt, &o.CreatedAt, &o.UpdatedAt, &o.Attempts)
	return o, err
}

// CreateTopUp records a top-up of amount for user under id (from NewID)
// and asks the channel for a pay order. It answers the order: pending with
// its pay URL, or still created when the channel's answer is unknown (the
// worker asks again; so does a retry with the same id). Recording the same
// id again changes nothing.
func (s *Service) CreateTopUp(ctx context.Context, id, user int64, amount money.Amount) (Order, error) {
	o, fresh, err := s.record(ctx, TopUp, id, user, amount, func(ctx context.Context, tx pgx.Tx, l *ledger.Ledger) error {
		// Room for the money on its way, so that a paid top-up is never
		// refused for the maximum balance.
		return l.ReserveIn(ctx, tx, user, amount)
	})
	if err != nil || o.State != Created {
		return o, err
	}
	if fresh {
		if err := s.hook("topup.recorded"); err != nil {
			return o, err
		}
	}
	return s.askTopUp(ctx, o)
}

// CreateWithdrawal holds amount on user's wallet with the order (one local
// transaction) and asks the channel to pay it out, under id (from NewID).
// It answers the order: succeeded, failed, or unknown (the hold stays and
// the worker queries until the answer is definite).
func (s *Service) CreateWithdrawal(ctx context.Context, id, user int64, amount money.Amount) (Order, error) {
	o, fresh, err := s.record(ctx, Withdrawal, id, user, amount, func(ctx context.Context, tx pgx.Tx, l *ledger.Ledger) error {
		_, err := l.HoldIn(ctx, tx, ledger.HoldRequest{Key: holdKey(id), User: user, Amount: amount})
		return err
	})
	if err != nil || o.State != Created {
		return o, err
	}
	if fresh {
		if err := s.hook("withdrawal.held"); err != nil {
			return o, err
		}
	}
	return s.sendPayout(ctx, o)
}

// record writes a new order in state created with its limit share and its
// money step (reserve or hold), all in one transaction, or finds the order
// already recorded under id.
func (s *Service) record(ctx context.Context, kind Kind, id, user int64, amount money.Amount,
	step func(context.Context, pgx.Tx, *ledger.Ledger) error) (Order, bool, error) {
	if s.o.Channel == nil {
		return Order{}, false, ErrNoChannel
	}
	if user <= 0 || amount <= 0 || amount > money.Max {
		return Order{}, false, fmt.Errorf("%w: user %d, amount %s", ErrInvalid, user, amount)
	}
	l, ok := s.shardOfOrder(id)
	if !ok || s.o.Shards[s.o.ShardOf(user)] != l {
		return Order{}, false, fmt.Errorf("%w: order id %d is not of user %d's shard", ErrInvalid, id, user)
	}
	now := s.o.Now()
	var o Order
	fresh := false
	err := postgres.InTx(ctx, l.DB(), func(tx pgx.Tx) error {
		fresh = false
		tag, err := tx.Exec(ctx, `INSERT INTO channel_orders (id, kind, user_id, amount, state, day, deadline, next_check)
			VALUES ($1, $2, $3, $4, 'created', $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
			id, kind, user, int64(amount), day(now), now.Add(s.o.TopUpTTL), now.Add(s.o.QueryAfter))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			fresh = true
			if err := s.countLimit(ctx, tx, kind, user, day(now), amount); err != nil {
				return err
			}
			if err := step(ctx, tx, l); err != nil {
				return err
			}
			if err := event(ctx, tx, id, "", Created, "recorded"); err != nil {
				return err
			}
		}
		o, err = scanOrder(tx.QueryRow(ctx, `SELECT `+orderColumns+` FROM channel_orders WHERE id = $1`, id))
		return err
	})
	if err != nil {
		return Order{}, false, fmt.Errorf("%s of %s for user %d: %w", kind, amount, user, err)
	}
	if o.Kind != kind || o.User != user || o.Amount != amount {
		return Order{}, false, fmt.Errorf("%w: order %d is another order", ErrInvalid, id)
	}
	if fresh {
		s.transitions.WithLabelValues(string(kind), string(Created)).Inc()
	}
	return o, fresh, nil
}

// countLimit adds an order to its user's day, refusing it past a limit.
func (s *Service) countLimit(ctx context.Context, tx pgx.Tx, kind Kind, user int64, d time.Time, amount money.Amount) error {
	maxAmount, maxOrders := s.o.Limits.TopUpPerDay, 1<<30
	if kind == Withdrawal {
		maxAmount, maxOrders = s.o.Limits.WithdrawalPerDay, s.o.Limits.WithdrawalsPerDay
	}
	if amount > maxAmount {
		return fmt.Errorf("%w: %s is above the %s limit of %s a day", ErrDailyLimit, amount, kind, maxAmount)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO channel_limits (user_id, day, kind, amount, orders) VALUES ($1, $2, $3, $4, 1)
		ON CONFLICT (user_id, day, kind) DO UPDATE SET amount = channel_limits.amount + excluded.amount, orders = channel_limits.orders + 1
		WHERE channel_limits.amount + excluded.amount <= $5 AND channel_limits.orders + 1 <= $6`,
		user, d, kind, int64(amount), int64(maxAmount), maxOrders)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		if kind == Withdrawal {
			return fmt.Errorf("%w: %s more would pass %s or %d withdrawals today (UTC)", ErrDailyLimit, amount, maxAmount, maxOrders)
		}
		return fmt.Errorf("%w: %s more would pass %s of top-ups today (UTC)", ErrDailyLimit, amount, maxAmount)
	}
	return nil
}

// uncountLimit gives an order's share of its day back (it failed or closed unpaid).
func uncountLimit(ctx context.Context, tx pgx.Tx, o Order, d time.Time) error {
	_, err := tx.Exec(ctx, `UPDATE channel_limits SET amount = greatest(amount - $4, 0), orders = greatest(orders - 1, 0)
		WHERE user_id = $1 AND day = $2 AND kind = $3`, o.User, d, o.Kind, int64(o.Amount))
	return err
}

func event(ctx context.Context, tx pgx.Tx, id int64, from, to State, note string) error {
	_, err := tx.Exec(ctx, `INSERT INTO channel_order_events (order_id, from_state, to_state, note) VALUES ($1, $2, $3, $4)`, id, from, to, note)
	return err
}

// change runs fn on the locked order in one transaction of its shard; fn
// returns the state to move to (the same state: no change) and the note.
// The change, its money and its event commit together.
func (s *Service) change(ctx context.Context, id int64, fn func(tx pgx.Tx, l *ledger.Ledger, o Order) (State, string, *time.Time, error)) (Order, error) {
	l, ok := s.locate(ctx, id)
	if !ok {
		return Order{}, ErrNotFound
	}
	var out Order
	var from State
	err := postgres.InTx(ctx, l.DB(), func(tx pgx.Tx) error {
		o, err := scanOrder(tx.QueryRow(ctx, `SELECT `+orderColumns+` FROM channel_orders WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		from = o.State
		to, note, at, err := fn(tx, l, o)
		if err != nil {
			return err
		}
		if to == o.State {
			out = o
			return nil
		}
		var next *time.Time
		if !to.Final() {
			t := s.o.Now().Add(s.backoff(o.Attempts + 1))
			next = &t
		}
		reason := o.Reason
		if to == Failed || to == Closed || to == Reversed {
			reason = note
		}
		out, err = scanOrder(tx.QueryRow(ctx, `UPDATE channel_orders SET state = $2, next_check = $3, channel_at = coalesce($4, channel_at),
			reason = $5, updated_at = now() WHERE id = $1 RETURNING `+orderColumns, id, to, next, at, reason))
		if err != nil {
			return err
		}
		if err := event(ctx, tx, id, o.State, to, note); err != nil {
			return err
		}
		// The result for the user's app, in the same transaction.
		kind := map[State]string{Paid: events.TopUpPaid, Closed: events.TopUpClosed, Succeeded: events.WithdrawalDone}[to]
		if to == Failed && o.Kind == Withdrawal {
			kind = events.WithdrawalFailed
		}
		if kind == "" {
			return nil
		}
		return events.Write(ctx, tx, events.New(fmt.Sprintf("%s:%d", kind, id), kind, events.UserConversation(o.User), o.User,
			map[string]any{"order": fmt.Sprint(id), "amount": o.Amount, "state": to}, s.o.Now()))
	})
	if err != nil {
		return Order{}, err
	}
	if out.State != from {
		s.transitions.WithLabelValues(string(out.Kind), string(out.State)).Inc()
	}
	return out, nil
}

// pending records that the channel has the pay order and where the payer
// pays (created -> pending).
func (s *Service) pending(ctx context.Context, id int64, url string) (Order, error) {
	return s.change(ctx, id, func(tx pgx.Tx, _ *ledger.Ledger, o Order) (State, string, *time.Time, error) {
		if o.State != Created {
			return o.State, "", nil, nil
		}
		_, err := tx.Exec(ctx, `UPDATE channel_orders SET pay_url = $2 WHERE id = $1`, id, url)
		return Pending, "the channel has the pay order", nil, err
	})
}

// Credit credits a paid top-up once (clearing:channel -> user), whatever
// state it is in (a top-up closed or refused here that the channel says was
// paid meanwhile is credited too: the money arrived). by says who said so.
func (s *Service) credit(ctx context.Context, id int64, paidAt time.Time, by string) (Order, error) {
	if err := s.hook("topup.paid-heard"); err != nil {
		return Order{}, err
	}
	at := paidAt
	o, err := s.change(ctx, id, func(tx pgx.Tx, l *ledger.Ledger, o Order) (State, string, *time.Time, error) {
		if o.Kind != TopUp {
			return o.State, "", nil, fmt.Errorf("%w: order %d is a %s", ErrInvalid, id, o.Kind)
		}
		if o.State == Paid {
			return Paid, "", nil, nil
		}
		reserved := o.State == Created || o.State == Pending
		if _, err := l.CreditIn(ctx, tx, topUpKey(id), ledger.ClearingChannel, o.User, o.Amount, ledger.KindTopUp, reserved); err != nil {
			return o.State, "", nil, err
		}
		if !reserved { // it had given its share of the day back
			if _, err := tx.Exec(ctx, `UPDATE channel_limits SET amount = amount + $4, orders = orders + 1
				WHERE user_id = $1 AND day = $2 AND kind = $3`, o.User, day(o.CreatedAt), o.Kind, int64(o.Amount)); err != nil {
				return o.State, "", nil, err
			}
		}
		return Paid, "paid at the channel (" + by + "); credited", &at, nil
	})
	if err != nil {
		return o, err
	}
	return o, s.hook("topup.credited")
}

// unpaid ends a top-up that will not be paid (closed at its deadline, or
// refused by the channel): the reserved room and the day's share are freed.
func (s *Service) unpaid(ctx context.Context, id int64, to State, note string) (Order, error) {
	return s.change(ctx, id, func(tx pgx.Tx, l *ledger.Ledger, o Order) (State, string, *time.Time, error) {
		if o.State != Created && o.State != Pending {
			return o.State, "", nil, nil
		}
		if err := l.UnreserveIn(ctx, tx, o.User, o.Amount); err != nil {
			return o.State, "", nil, err
		}
		return to, note, nil, uncountLimit(ctx, tx, o, day(o.CreatedAt))
	})
}

// settle posts a withdrawal's hold (user -> clearing:channel): the channel
// definitely paid it out.
func (s *Service) settle(ctx context.Context, id int64, doneAt time.Time, by string) (Order, error) {
	if err := s.hook("withdrawal.definite-heard"); err != nil {
		return Order{}, err
	}
	at := doneAt
	o, err := s.change(ctx, id, func(tx pgx.Tx, l *ledger.Ledger, o Order) (State, string, *time.Time, error) {
		switch o.State {
		case Succeeded, Reversed:
			return o.State, "", nil, nil
		case Failed:
			// We released the money; the channel says it paid. Never
			// automatic: reconciliation lists it for an operator.
			return o.State, "", nil, event(ctx, tx, id, o.State, o.State, "the channel says it paid out a withdrawal failed here ("+by+")")
		}
		if _, err := l.PostIn(ctx, tx, ledger.PostRequest{Key: resolveKey(id, "post"), HoldKey: holdKey(id), To: ledger.ClearingChannel,
			Amount: o.Amount, Kind: ledger.KindWithdrawal}); err != nil {
			return o.State, "", nil, err
		}
		return Succeeded, "paid out by the channel (" + by + ")", &at, nil
	})
	if err != nil {
		return o, err
	}
	return o, s.hook("withdrawal.settled")
}

// fail voids a withdrawal's hold: the channel definitely did not pay it out.
func (s *Service) fail(ctx context.Context, id int64, reason, by string) (Order, error) {
	if err := s.hook("withdrawal.definite-heard"); err != nil {
		return Order{}, err
	}
	o, err := s.change(ctx, id, func(tx pgx.Tx, l *ledger.Ledger, o Order) (State, string, *time.Time, error) {
		if o.State != Created && o.State != Unknown {
			return o.State, "", nil, nil
		}
		if _, err := l.VoidIn(ctx, tx, ledger.VoidRequest{Key: resolveKey(id, "void"), HoldKey: holdKey(id)}); err != nil {
			return o.State, "", nil, err
		}
		if reason == "" {
			reason = "refused by the channel"
		}
		return Failed, reason + " (" + by + ")", nil, uncountLimit(ctx, tx, o, day(o.CreatedAt))
	})
	if err != nil {
		return o, err
	}
	return o, s.hook("withdrawal.settled")
}

// unknown records that a withdrawal's payout was asked and its answer is
// not definite (created -> unknown); the worker queries it.
func (s *Service) unknownPayout(ctx context.Context, id int64, why string) (Order, error) {
	o, err := s.change(ctx, id, func(_ pgx.Tx, _ *ledger.Ledger, o Order) (State, string, *time.Time, error) {
		if o.State != Created {
			return o.State, "", nil, nil
		}
		return Unknown, why, nil, nil
	})
	if err != nil {
		return o, err
	}
	return o, s.hook("withdrawal.unknown")
}

// Reverse refunds a withdrawal the channel paid out and then returned
// (clearing:channel -> user), once.
func (s *Service) Reverse(ctx context.Context, id int64, by string) (Order, error) {
	return s.change(ctx, id, func(tx pgx.Tx, l *ledger.Ledger, o Order) (State, string, *time.Time, error) {
		if o.Kind != Withdrawal || o.State != Succeeded {
			return o.State, "", nil, nil
		}
		if _, err := l.CreditIn(ctx, tx, reversalKey(id), ledger.ClearingChannel, o.User, o.Amount, ledger.KindReversal, false); err != nil {
			return o.State, "", nil, err
		}
		return Reversed, "returned by the channel (" + by + "); refunded", nil, nil
	})
}

// askTopUp asks the channel for the pay order of a created top-up (again,
// when an earlier answer was unknown; the channel is idempotent on our id).
func (s *Service) askTopUp(ctx context.Context, o Order) (Order, error) {
	po, err := s.o.Channel.CreatePay(ctx, o.ChannelID(), o.Amount)
	if herr := s.hook("topup.asked"); herr != nil {
		return o, herr
	}
	if errors.Is(err, channel.ErrRejected) {
		// Refused; but an earlier attempt may have been accepted: ask.
		po, err = s.o.Channel.QueryPay(ctx, o.ChannelID())
		if errors.Is(err, channel.ErrNoOrder) {
			return s.unpaid(ctx, o.ID, Failed, "refused by the channel")
		}
	}
	if err != nil {
		s.unknown.WithLabelValues("create_pay").Inc()
		return o, nil // unknown: the order stays created and is asked again
	}
	return s.applyPay(ctx, o, po, "answer")
}

// applyPay acts on what the channel says of a pay order.
func (s *Service) applyPay(ctx context.Context, o Order, po channel.PayOrder, by string) (Order, error) {
	if po.Amount != o.Amount {
		l, _ := s.locate(ctx, o.ID)
		_, _ = l.DB().Exec(ctx, `INSERT INTO channel_order_events (order_id, from_state, to_state, note) VALUES ($1, $2, $2, $3)`,
			o.ID, o.State, fmt.Sprintf("the channel (%s) reports %s for an order of %s; not credited", by, po.Amount, o.Amount))
		return o, fmt.Errorf("%w: order %d: %s at the channel, %s here", ErrAmountMismatch, o.ID, po.Amount, o.Amount)
	}
	switch po.State {
	case channel.PayPaid:
		return s.credit(ctx, o.ID, po.PaidAt, by)
	case channel.PayClosed:
		return s.unpaid(ctx, o.ID, Closed, "closed at the channel unpaid")
	case channel.PayCreated:
		if s.o.Now().After(o.Deadline) {
			return s.closeTopUp(ctx, o)
		}
		if o.State == Created {
			out, err := s.pending(ctx, o.ID, po.PayURL)
			if err != nil {
				return o, err
			}
			return out, s.hook("topup.pending")
		}
		return o, nil
	}
	return o, fmt.Errorf("order %d: the channel answers state %q", o.ID, po.State)
}

// closeTopUp closes an unpaid top-up past its deadline at the channel
// first; if the channel says it was paid meanwhile, it is credited.
func (s *Service) closeTopUp(ctx context.Context, o Order) (Order, error) {
	po, err := s.o.Channel.ClosePay(ctx, o.ChannelID())
	switch {
	case errors.Is(err, channel.ErrNoOrder):
		return s.unpaid(ctx, o.ID, Closed, "unpaid at its deadline; the channel never had it")
	case err != nil:
		s.unknown.WithLabelValues("close_pay").Inc()
		return o, nil
	case po.State == channel.PayCreated:
		return o, nil // not closed yet: ask again
	}
	return s.applyPay(ctx, o, po, "close")
}

// sendPayout asks the channel to pay a withdrawal out, with the order id
// as its idempotency key: a repeat never pays twice.
func (s *Service) sendPayout(ctx context.Context, o Order) (Order, error) {
	p, err := s.o.Channel.Payout(ctx, o.ChannelID(), o.User, o.Amount)
	if herr := s.hook("withdrawal.asked"); herr != nil {
		return o, herr
	}
	if errors.Is(err, channel.ErrRejected) {
		// Refused; but an earlier attempt may have been accepted: ask.
		p, err = s.o.Channel.QueryPayout(ctx, o.ChannelID())
		if errors.Is(err, channel.ErrNoOrder) {
			return s.fail(ctx, o.ID, "refused by the channel", "answer")
		}
	}
	if err != nil {
		s.unknown.WithLabelValues("payout").Inc()
		return s.unknownPayout(ctx, o.ID, "payout asked; the answer is unknown: "+shortErr(err))
	}
	return s.applyPayout(ctx, o, p, "answer")
}

// applyPayout acts on what the channel says of a payout.
func (s *Service) applyPayout(ctx context.Context, o Order, p channel.Payout, by string) (Order, error) {
	if p.Amount != o.Amount || p.User != o.User {
		return s.unknownPayout(ctx, o.ID, fmt.Sprintf("the channel reports %s to user %d for this order", p.Amount, p.User))
	}
	switch p.State {
	case channel.PayoutSucceeded:
		at := p.DoneAt
		if at.IsZero() {
			at = s.o.Now()
		}
		return s.settle(ctx, o.ID, at, by)
	case channel.PayoutFailed:
		return s.fail(ctx, o.ID, "failed at the channel: "+p.Reason, by)
	case channel.PayoutProcessing:
		s.unknown.WithLabelValues("payout").Inc()
		return s.unknownPayout(ctx, o.ID, "the channel is processing the payout")
	}
	return o, fmt.Errorf("order %d: the channel answers payout state %q", o.ID, p.State)
}

func shortErr(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i >= 0 && len(msg) > 120 {
		msg = msg[:120]
	}
	return msg
}
