package bench

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"hongbao/internal/packet"
)

// creditProbe measures how long a grab's claim takes to reach its
// grabber's wallet: a sample of the grabs answered is watched until the
// ledger has applied each (one query for all the samples still open, every
// probeEvery, so that watching costs the storm little).
type creditProbe struct {
	credited func(context.Context, []packet.Claim) (map[int64]bool, error)
	every    int // one grab in every

	seen atomic.Int64 // grabs answered: no lock on the storm's path

	mu   sync.Mutex
	open []probeSample
	lags []time.Duration
}

type probeSample struct {
	c  packet.Claim
	at time.Time
}

const probeEvery = 20 * time.Millisecond

func newCreditProbe(credited func(context.Context, []packet.Claim) (map[int64]bool, error), every int) *creditProbe {
	return &creditProbe{credited: credited, every: every}
}

// take says whether this answered grab is one of the sample (one in every).
func (p *creditProbe) take() bool {
	return p.seen.Add(1)%int64(p.every) == 0
}

// add watches a sampled grab's claim, answered at at.
func (p *creditProbe) add(c packet.Claim, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = append(p.open, probeSample{c, at})
}

// run watches until ctx ends or, once done is closed, nothing is open.
func (p *creditProbe) run(ctx context.Context, done <-chan struct{}) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		open := slices.Clone(p.open)
		p.mu.Unlock()
		if len(open) == 0 {
			select {
			case <-done:
				return
			default:
				continue
			}
		}
		claims := make([]packet.Claim, len(open))
		for i, s := range open {
			claims[i] = s.c
		}
		got, err := p.credited(ctx, claims)
		if err != nil {
			continue // asked again at the next tick
		}
		now := time.Now()
		p.mu.Lock()
		keep := p.open[:0]
		for _, s := range p.open {
			if got[s.c.ID] {
				p.lags = append(p.lags, now.Sub(s.at))
			} else {
				keep = append(keep, s)
			}
		}
		p.open = keep
		p.mu.Unlock()
	}
}

// CreditLag is what a probe saw: grab answered -> claim applied in the
// grabber's ledger, to within probeEvery.
type CreditLag struct {
	Samples int     `json:"samples"`
	Open    int     `json:"not_credited"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
}

func (p *creditProbe) result() CreditLag {
	p.mu.Lock()
	defer p.mu.Unlock()
	lags := slices.Clone(p.lags)
	slices.Sort(lags)
	r := CreditLag{Samples: len(lags) + len(p.open), Open: len(p.open), P50ms: percentile(lags, 0.5), P99ms: percentile(lags, 0.99)}
	if len(lags) > 0 {
		r.MaxMs = float64(lags[len(lags)-1].Microseconds()) / 1000
	}
	return r
}

// watch runs a probe beside f and returns what it saw once every sample is
// credited (or ctx ends, or wait has passed after f).
func (p *creditProbe) watch(ctx context.Context, wait time.Duration, f func()) CreditLag {
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { p.run(ctx, done) })
	f()
	close(done)
	stop := time.AfterFunc(wait, cancel)
	wg.Wait()
	stop.Stop()
	return p.result()
}
