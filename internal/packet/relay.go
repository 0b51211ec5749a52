package packet

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"hongbao/internal/bus"
	"hongbao/internal/ledger"
)

// Relay publishes credit messages (committed claims, refunds) to the
// credit subject of each user's ledger shard, with the credit key as
// Nats-Msg-Id. It works from memory: what it loses in a crash or drops
// when full, the reconciler (Set.Settle) finds in the database and hands
// back, so every claim is published at least once and applied once.
type Relay struct {
	bus   *bus.Bus
	route func(user int64) int
	in    chan ledger.CreditMessage
	log   *slog.Logger

	Published, Dropped atomic.Int64
}

// NewRelay returns a relay; route maps a user to its ledger shard.
func NewRelay(b *bus.Bus, route func(user int64) int, log *slog.Logger) *Relay {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Relay{bus: b, route: route, in: make(chan ledger.CreditMessage, 200_000), log: log}
}

// Enqueue hands messages to the relay without blocking the caller.
func (r *Relay) Enqueue(msgs []ledger.CreditMessage) {
	for _, m := range msgs {
		select {
		case r.in <- m:
		default:
			r.Dropped.Add(1) // the reconciler will republish it
		}
	}
}

// EnqueueClaims is Enqueue for committed claims (a Set's OnCommit).
func (r *Relay) EnqueueClaims(cs []Claim) {
	msgs := make([]ledger.CreditMessage, len(cs))
	for i, c := range cs {
		msgs[i] = ClaimMessage(c)
	}
	r.Enqueue(msgs)
}

// Run publishes in batches until ctx ends, retrying a failed batch with
// backoff (JetStream drops the repeats by id).
func (r *Relay) Run(ctx context.Context) {
	batch := make([]bus.Msg, 0, 1000)
	for {
		batch = batch[:0]
		select {
		case m := <-r.in:
			batch = append(batch, r.msg(m))
		case <-ctx.Done():
			return
		}
	fill:
		for len(batch) < cap(batch) {
			select {
			case m := <-r.in:
				batch = append(batch, r.msg(m))
			default:
				break fill
			}
		}
		pause := 20 * time.Millisecond
		for {
			err := r.bus.Publish(ctx, batch)
			if err == nil {
				r.Published.Add(int64(len(batch)))
				break
			}
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("relay publish failed, retrying", "messages", len(batch), "err", err)
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return
			}
			pause = min(2*pause, 5*time.Second)
		}
	}
}

func (r *Relay) msg(m ledger.CreditMessage) bus.Msg {
	data, _ := json.Marshal(m)
	return bus.Msg{Subject: ledger.CreditSubject(r.route(m.User)), ID: m.Key, Data: data}
}
