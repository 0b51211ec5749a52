package app

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"hongbao/internal/bus"
	"hongbao/internal/dtx"
	"hongbao/internal/httpapi"
	"hongbao/internal/ledger"
)

// counts are the node's running totals the overview draws as rates.
type counts struct {
	at                      time.Time
	grabs, sends, transfers int64
}

func (n *Node) counters() counts {
	c := counts{at: time.Now(), sends: n.Flows.Sends.Load(), transfers: n.Flows.Transfers.Load()}
	for _, set := range n.Sets {
		c.grabs += set.Grabs.Load()
	}
	return c
}

// sampler keeps a ring of the counters, one sample every period over a
// window, so the console draws its charts without Prometheus.
type sampler struct {
	every time.Duration
	read  func() counts
	mu    sync.Mutex
	ring  []counts
	next  int
	full  bool
}

func newSampler(every, window time.Duration, read func() counts) *sampler {
	return &sampler{every: every, read: read, ring: make([]counts, max(2, int(window/every)+1))}
}

// Run samples until ctx ends.
func (s *sampler) Run(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	s.take()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.take()
		}
	}
}

func (s *sampler) take() {
	c := s.read()
	s.mu.Lock()
	s.ring[s.next] = c
	s.next = (s.next + 1) % len(s.ring)
	s.full = s.full || s.next == 0
	s.mu.Unlock()
}

// rates are the per-second rates between consecutive samples, oldest
// first, the last one up to now.
func (s *sampler) rates(now counts) []httpapi.Rate {
	s.mu.Lock()
	var cs []counts
	if s.full {
		cs = append(cs, s.ring[s.next:]...)
	}
	cs = append(cs, s.ring[:s.next]...)
	s.mu.Unlock()
	cs = append(cs, now)
	out := make([]httpapi.Rate, 0, len(cs))
	for i := 1; i < len(cs); i++ {
		d := cs[i].at.Sub(cs[i-1].at).Seconds()
		if d <= 0.05 {
			continue
		}
		per := func(a, b int64) float64 { return float64(max(0, b-a)) / d }
		out = append(out, httpapi.Rate{At: cs[i].at.UTC(), Grabs: per(cs[i-1].grabs, cs[i].grabs),
			Sends: per(cs[i-1].sends, cs[i].sends), Transfers: per(cs[i-1].transfers, cs[i].transfers)})
	}
	return out
}

// operations serves the console's overview and dead letters.
type operations struct{ n *Node }

func (o operations) Overview(ctx context.Context) (httpapi.Overview, error) {
	n := o.n
	var v httpapi.Overview
	v.At = time.Now().UTC()
	v.Problems = []string{}
	// A figure that cannot be read is -1 and named in Problems: the rest
	// of the overview still shows (a database down is when it matters).
	failed := func(what string, err error) {
		n.o.Logger.Warn("overview figure unavailable", "figure", what, "err", err)
		v.Problems = append(v.Problems, what+" could not be read")
	}
	// Each figure has its own deadline: one part that hangs costs only
	// its own figure.
	bounded := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }
	fctx, cancel := bounded()
	defer func() { cancel() }()
	var oldest time.Time
	for _, set := range n.Sets {
		k, at, err := set.Overdue(fctx, v.At)
		if err != nil {
			failed(fmt.Sprintf("claims of packet set %d", set.Number()), err)
			v.Claims.Waiting, oldest = -1, time.Time{}
			break
		}
		v.Claims.Waiting += k
		if !at.IsZero() && (oldest.IsZero() || at.Before(oldest)) {
			oldest = at
		}
	}
	if !oldest.IsZero() {
		v.Claims.OldestSeconds = max(0, v.At.Sub(oldest).Seconds())
	}
	var err error
	next := func() context.Context {
		cancel()
		fctx, cancel = bounded()
		return fctx
	}
	if v.DeadLetters.Total, v.DeadLetters.NotRedriven, err = n.Bus.DeadCounts(next()); err != nil {
		failed("dead letters", err)
		v.DeadLetters.Total, v.DeadLetters.NotRedriven = -1, -1
	}
	if v.Transactions, err = n.Coord.Count(next(), 5*time.Minute); err != nil {
		failed("global transactions", err)
		v.Transactions = dtx.Counts{Pending: -1, InRecovery: -1, Stuck: -1}
	}
	if v.Deliveries.Pending, v.Deliveries.GivenUp, err = n.Webhooks.DeliveryCounts(next()); err != nil {
		failed("webhook deliveries", err)
		v.Deliveries.Pending, v.Deliveries.GivenUp = -1, -1
	}
	if v.Orders.Unknown, err = n.Payments.CountUnknown(next()); err != nil {
		failed("payment orders", err)
		v.Orders.Unknown = -1
	}
	if rs, err := n.Recon.Reports(next(), 0, 1); err != nil {
		failed("reconciliation reports", err)
	} else if len(rs) == 1 {
		v.Recon = &rs[0]
	}
	v.SampleSeconds = n.samples.every.Seconds()
	v.Rates = n.samples.rates(n.counters())
	return v, nil
}

func (o operations) DeadLetters(ctx context.Context, after uint64, limit int) ([]httpapi.DeadLetter, error) {
	ds, err := o.n.Bus.DeadLetters(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]httpapi.DeadLetter, len(ds))
	for i, d := range ds {
		out[i] = decodeDead(d)
	}
	return out, nil
}

func (o operations) DeadLetter(ctx context.Context, seq uint64) (httpapi.DeadLetter, error) {
	d, err := o.n.Bus.DeadLetter(ctx, seq)
	return decodeDead(d), err
}

func (o operations) Redrive(ctx context.Context, seq uint64) (httpapi.DeadLetter, error) {
	d, err := o.n.Bus.Redrive(ctx, seq)
	if err == nil {
		o.n.o.Logger.Info("dead letter re-driven by an operator", "seq", seq, "subject", d.Origin, "redriven", d.Redriven)
	}
	return decodeDead(d), err
}

// decodeDead shows what a dead letter carries: its credits when it is a
// credit batch, else (the start of) the message as text.
func decodeDead(d bus.DeadLetter) httpapi.DeadLetter {
	out := httpapi.DeadLetter{DeadLetter: d, Size: len(d.Data)}
	var b ledger.CreditBatch
	if err := json.Unmarshal(d.Data, &b); err == nil && len(b.Credits) > 0 {
		out.Credits = b.Credits
		return out
	}
	p := d.Data
	if len(p) > 4096 {
		p = p[:4096]
	}
	out.Payload = string(p)
	return out
}
