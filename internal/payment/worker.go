package payment

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/channel"
	"hongbao/internal/ledger"
)

// Run visits due orders every tick until ctx ends.
func (s *Service) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pass, cancel := context.WithTimeout(ctx, 30*time.Second)
		if _, err := s.Step(pass, 100); err != nil && ctx.Err() == nil {
			s.o.Logger.Warn("channel order pass failed", "err", err)
		}
		cancel()
	}
}

// Step visits up to limit due orders of every shard once: each is leased
// (so that other nodes leave it alone), asked about, and given its next
// check with capped backoff. It returns how many it visited.
func (s *Service) Step(ctx context.Context, limit int) (int, error) {
	if s.o.Channel == nil {
		return 0, nil
	}
	n := 0
	var errs []error
	for _, l := range s.o.Shards {
		orders, err := s.lease(ctx, l, limit)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, o := range orders {
			n++
			s.queries.WithLabelValues(string(o.Kind)).Inc()
			out, err := s.advance(ctx, o)
			if err != nil && !errors.Is(err, ErrCrash) {
				s.o.Logger.Warn("channel order not advanced; asked again later", "order", o.ID, "kind", o.Kind, "state", o.State, "err", err)
			}
			if errors.Is(err, ErrCrash) {
				return n, err
			}
			if !out.State.Final() || out.ID == 0 {
				// Not final: the next check after a backoff that grows with
				// the attempts (the lease set it a lease away).
				next := s.o.Now().Add(s.backoff(o.Attempts))
				if _, err := l.DB().Exec(ctx, `UPDATE channel_orders SET next_check = $2 WHERE id = $1 AND next_check IS NOT NULL`, o.ID, next); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return n, errors.Join(errs...)
}

// lease takes due orders of a shard for this worker for the lease time.
func (s *Service) lease(ctx context.Context, l *ledger.Ledger, limit int) ([]Order, error) {
	now := s.o.Now()
	rows, err := l.DB().Query(ctx, `UPDATE channel_orders SET next_check = $2, attempts = attempts + 1
		WHERE id IN (SELECT id FROM channel_orders WHERE next_check <= $1 ORDER BY next_check LIMIT $3 FOR UPDATE SKIP LOCKED)
		RETURNING `+orderColumns, now, now.Add(s.o.Lease), limit)
	if err != nil {
		return nil, fmt.Errorf("lease orders of ledger shard %d: %w", l.Shard(), err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) { return scanOrder(r) })
}

// advance asks the channel about one order and acts on a definite answer.
func (s *Service) advance(ctx context.Context, o Order) (Order, error) {
	ch := s.o.Channel
	past := s.o.Now().After(o.Deadline)
	switch {
	case o.Kind == TopUp && o.State == Created && past:
		return s.closeTopUp(ctx, o)
	case o.Kind == TopUp && o.State == Created:
		return s.askTopUp(ctx, o)
	case o.Kind == TopUp && o.State == Pending:
		po, err := ch.QueryPay(ctx, o.ChannelID())
		switch {
		case errors.Is(err, channel.ErrNoOrder) && past:
			return s.unpaid(ctx, o.ID, Closed, "unpaid at its deadline; the channel never had it")
		case errors.Is(err, channel.ErrNoOrder):
			return s.askTopUp(ctx, o)
		case err != nil:
			s.unknown.WithLabelValues("query_pay").Inc()
			return o, nil
		}
		return s.applyPay(ctx, o, po, "query")
	case o.Kind == Withdrawal && o.State == Created:
		return s.sendPayout(ctx, o)
	case o.Kind == Withdrawal && o.State == Unknown:
		p, err := ch.QueryPayout(ctx, o.ChannelID())
		switch {
		case errors.Is(err, channel.ErrNoOrder):
			// The payout never reached the channel: send it again, with the
			// same id (it cannot pay twice).
			return s.sendPayout(ctx, o)
		case err != nil:
			s.unknown.WithLabelValues("query_payout").Inc()
			return o, nil
		}
		return s.applyPayout(ctx, o, p, "query")
	}
	return o, nil
}
