package packet

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"hongbao/internal/ledger"
)

// Relay publishes credit messages (committed claims, refunds) to the
// credit subject of each user's ledger shard, with the credit key as
// Nats-Msg-Id. It works from memory: what it loses in a crash or drops
// when full, the reconciler (Set.Settle) finds in the database and hands
// back, so every claim is published at least once and applied once.
type Relay struct {
	bus     Publisher
	route   func(user int64) int
	subject func(shard int) string
	in      chan ledger.CreditMessage
	log     *slog.Logger
	// progress is when the relay last published a batch or found nothing
	// to do (unix nanoseconds): a relay with work and no progress is stuck.
	progress atomic.Int64
	busy     atomic.Bool // a batch is in hand

	Published, Dropped atomic.Int64
}

// Message is one message for the broker: a subject, an id the broker
// deduplicates on, and the data.
type Message struct {
	Subject, ID string
	Data        []byte
}

// Publisher carries messages to the broker and waits, bounded, until it has
// stored every one; an error means the caller publishes them again (the ids
// make repeats harmless).
type Publisher interface {
	Publish(ctx context.Context, msgs []Message) error
}

// NewRelay returns a relay over a broker; route maps a user to its ledger
// shard and subject names the subject of a shard's credits.
func NewRelay(p Publisher, route func(user int64) int, subject func(shard int) string, log *slog.Logger) *Relay {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Relay{bus: p, route: route, subject: subject, in: make(chan ledger.CreditMessage, 200_000), log: log}
	r.progress.Store(time.Now().UnixNano())
	return r
}

// Stalled reports how long the relay has had work without publishing any
// of it (0 when it is keeping up).
func (r *Relay) Stalled() time.Duration {
	if !r.busy.Load() && len(r.in) == 0 {
		return 0
	}
	return time.Since(time.Unix(0, r.progress.Load()))
}

// PublishNow publishes msgs directly, bypassing the queue (and whatever
// holds it up): the reconciler's re-drive path. Each wait is bounded by the
// bus's ack timeout.
func (r *Relay) PublishNow(ctx context.Context, msgs []ledger.CreditMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	return r.bus.Publish(ctx, r.pack(msgs))
}

// Queued is how many credits wait to be published.
func (r *Relay) Queued() int { return len(r.in) }

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

// maxPerMessage bounds the credits packed into one bus message.
const maxPerMessage = 500

// Run publishes in batches until ctx ends: the credits waiting are packed
// into one message per ledger shard (up to maxPerMessage each), whose id is
// a digest of its content, and a failed batch is retried with backoff
// (JetStream drops an identical repeat; the ledger applies each key once).
func (r *Relay) Run(ctx context.Context) {
	pending := make([]ledger.CreditMessage, 0, 8*maxPerMessage)
	for {
		pending = pending[:0]
		r.busy.Store(false)
		r.progress.Store(time.Now().UnixNano())
		select {
		case m := <-r.in:
			pending = append(pending, m)
		case <-ctx.Done():
			return
		}
		r.busy.Store(true)
	fill:
		for len(pending) < cap(pending) {
			select {
			case m := <-r.in:
				pending = append(pending, m)
			default:
				break fill
			}
		}
		batch := r.pack(pending)
		pause := 20 * time.Millisecond
		for {
			err := r.bus.Publish(ctx, batch) // bounded by the bus's ack timeout
			if err == nil {
				r.Published.Add(int64(len(pending)))
				r.progress.Store(time.Now().UnixNano())
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

// Drain publishes what is still queued, once Run has stopped. It returns
// how many credits it could not publish.
func (r *Relay) Drain(ctx context.Context) (int, error) {
	var left []ledger.CreditMessage
	for {
		select {
		case m := <-r.in:
			left = append(left, m)
			continue
		default:
		}
		break
	}
	if len(left) == 0 {
		return 0, nil
	}
	if err := r.bus.Publish(ctx, r.pack(left)); err != nil {
		return len(left), err
	}
	r.Published.Add(int64(len(left)))
	return 0, nil
}

// pack groups credits by ledger shard into messages of at most
// maxPerMessage credits.
func (r *Relay) pack(pending []ledger.CreditMessage) []Message {
	byShard := map[int][]ledger.CreditMessage{}
	for _, m := range pending {
		n := r.route(m.User)
		byShard[n] = append(byShard[n], m)
	}
	var batch []Message
	for n, ms := range byShard {
		for len(ms) > 0 {
			k := min(len(ms), maxPerMessage)
			batch = append(batch, PackCredits(r.subject(n), ms[:k]))
			ms = ms[k:]
		}
	}
	return batch
}

// PackCredits makes one message of credits for a ledger shard's subject.
func PackCredits(subject string, ms []ledger.CreditMessage) Message {
	data, _ := json.Marshal(ledger.CreditBatch{Credits: ms})
	// Identical batches to one subject share an id, different ones never
	// do (the same credits forwarded to another shard are another message).
	sum := sha256.Sum256(append([]byte(subject+"\n"), data...))
	return Message{Subject: subject, ID: fmt.Sprintf("credits:%x", sum[:16]), Data: data}
}
