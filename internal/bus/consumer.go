package bus

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Verdict is what a handler decided for one delivered message.
type Verdict int

const (
	// Done: applied (or already applied before); ack it.
	Done Verdict = iota
	// Retry: not applied now; redeliver it later with backoff.
	Retry
	// Dead: it can never be applied; move it to the dead-letter subject.
	Dead
)

// Delivery is one message handed to a handler.
type Delivery struct {
	Subject   string
	Data      []byte
	Delivered uint64 // 1 on the first delivery
}

// Handler applies a batch and returns one verdict per message. It must
// commit before returning Done: the ack follows.
type Handler func(ctx context.Context, batch []Delivery) []Verdict

// ConsumerOptions configure a durable pull consumer.
type ConsumerOptions struct {
	Name    string // durable name
	Stream  string // the stream (default Stream)
	Subject string // filter subject
	Batch   int    // messages per fetch (default 500)
	// DeadSubject receives messages a handler declared dead.
	DeadSubject string
	// Backoff of redeliveries (default 50ms doubling to 10s).
	MinBackoff, MaxBackoff time.Duration
}

// Consumer runs a handler over a durable consumer until ctx ends.
type Consumer struct {
	b    *Bus
	o    ConsumerOptions
	cons jetstream.Consumer
	// Dead counts messages sent to the dead-letter subject.
	Dead atomic.Int64
	// Applied counts messages acked as done.
	Applied atomic.Int64
	// Retried counts messages handed back for redelivery.
	Retried atomic.Int64
}

// NewConsumer creates (or updates) the durable consumer.
func (b *Bus) NewConsumer(ctx context.Context, o ConsumerOptions) (*Consumer, error) {
	if o.Batch == 0 {
		o.Batch = 500
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = 50 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.Stream == "" {
		o.Stream = Stream
	}
	cfg := jetstream.ConsumerConfig{
		Durable: o.Name, FilterSubject: o.Subject, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 10 * time.Second, MaxDeliver: -1, MaxAckPending: 20 * o.Batch,
	}
	// A replicated consumer is a raft group of its own: on a cluster that is
	// busy or still electing, creating it can outlast one API call's
	// timeout. A node starting then waits for it (up to a minute) rather
	// than failing.
	var cons jetstream.Consumer
	var err error
	for start := time.Now(); ; {
		cons, err = b.js.CreateOrUpdateConsumer(ctx, o.Stream, cfg)
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || time.Since(start) > time.Minute {
			break
		}
		b.log.Warn("bus: consumer not created in time; trying again", "consumer", o.Name, "err", err)
	}
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s: %w", o.Name, err)
	}
	return &Consumer{b: b, o: o, cons: cons}, nil
}

// Run fetches batches and hands them to h until ctx ends. A fetch error
// (server restarting, say) is retried after a pause; nothing is lost, the
// messages stay in the stream until acked.
func (c *Consumer) Run(ctx context.Context, h Handler) {
	pause := c.o.MinBackoff
	for ctx.Err() == nil {
		batch, err := c.cons.Fetch(c.o.Batch, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			c.b.log.Warn("fetch failed", "consumer", c.o.Name, "err", err)
			sleep(ctx, pause)
			pause = min(2*pause, c.o.MaxBackoff)
			continue
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			c.b.log.Warn("fetch ended early", "consumer", c.o.Name, "err", err)
		}
		if len(msgs) == 0 {
			continue
		}
		pause = c.o.MinBackoff
		ds := make([]Delivery, len(msgs))
		for i, m := range msgs {
			ds[i] = Delivery{Subject: m.Subject(), Data: m.Data()}
			if md, err := m.Metadata(); err == nil {
				ds[i].Delivered = md.NumDelivered
			}
		}
		verdicts := h(ctx, ds)
		for i, m := range msgs {
			v := Retry
			if i < len(verdicts) {
				v = verdicts[i]
			}
			switch v {
			case Done:
				_ = m.Ack()
				c.Applied.Add(1)
			case Dead:
				if err := c.b.Publish(ctx, []Msg{{Subject: c.o.DeadSubject, ID: "dead:" + msgID(m), Data: m.Data()}}); err != nil {
					_ = m.NakWithDelay(c.o.MaxBackoff) // keep it until it is parked
					continue
				}
				c.Dead.Add(1)
				c.b.log.Error("message dead-lettered", "consumer", c.o.Name, "subject", m.Subject(), "dead_subject", c.o.DeadSubject)
				_ = m.Ack()
			default:
				c.Retried.Add(1)
				_ = m.NakWithDelay(c.backoff(ds[i].Delivered))
			}
		}
	}
}

func (c *Consumer) backoff(delivered uint64) time.Duration {
	d := c.o.MinBackoff << min(delivered, 20)
	if d <= 0 || d > c.o.MaxBackoff {
		d = c.o.MaxBackoff
	}
	return d
}

func msgID(m jetstream.Msg) string {
	if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" {
		return id
	}
	if md, err := m.Metadata(); err == nil {
		return fmt.Sprint(md.Sequence.Stream)
	}
	return m.Subject()
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}
