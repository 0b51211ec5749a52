// Package bench measures Hongbao under load: closed-loop workers against a
// function for a bounded time, with throughput and latency percentiles, and
// the scenarios that compare an engine with its plain baseline in one run.
package bench

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Result of one load run.
type Result struct {
	Ops      int64         `json:"ops"`
	Errors   int64         `json:"errors"`
	Elapsed  time.Duration `json:"-"`
	PerSec   float64       `json:"per_sec"`
	P50ms    float64       `json:"p50_ms"`
	P99ms    float64       `json:"p99_ms"`
	FirstErr string        `json:"first_error,omitempty"`
	// Series is the run over time, one point per SeriesStep: the rate of
	// each step and its 99th latency percentile (the report's charts).
	Series []Point `json:"series,omitempty"`
}

// Point is one step of a run.
type Point struct {
	At     float64 `json:"t_s"`
	PerSec float64 `json:"per_sec"`
	P99ms  float64 `json:"p99_ms"`
}

// SeriesStep is the width of a Series point.
const SeriesStep = 250 * time.Millisecond

type sample struct {
	step int
	lat  time.Duration
	n    int
}

// ErrDone from op stops its worker: there is nothing left to do (a packet
// sold out). The run's rate counts time until the last worker stopped.
var ErrDone = errors.New("bench: nothing left to do")

// Run calls op from workers goroutines until d has passed (or ctx ends)
// and measures each call. op gets the worker number and its call count.
// weight lets one call count as several operations (a batch).
func Run(ctx context.Context, workers int, d time.Duration, op func(ctx context.Context, worker, i int) (weight int, err error)) Result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var all []sample
	var res Result
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var lat []sample
			var ops, errs int64
			var first error
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				n, err := op(ctx, w, i)
				if err != nil {
					if ctx.Err() != nil || errors.Is(err, ErrDone) {
						break // cut off by the end of the run, not a failure
					}
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, sample{int(time.Since(start) / SeriesStep), time.Since(t0), n})
				ops += int64(n)
			}
			mu.Lock()
			defer mu.Unlock()
			all = append(all, lat...)
			res.Ops += ops
			res.Errors += errs
			if first != nil && res.FirstErr == "" {
				res.FirstErr = first.Error()
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.PerSec = float64(res.Ops) / res.Elapsed.Seconds()
	durs := make([]time.Duration, len(all))
	steps := map[int][]time.Duration{}
	counts := map[int]int{}
	last := 0
	for i, s := range all {
		durs[i] = s.lat
		steps[s.step] = append(steps[s.step], s.lat)
		counts[s.step] += s.n
		last = max(last, s.step)
	}
	slices.Sort(durs)
	res.P50ms = percentile(durs, 0.50)
	res.P99ms = percentile(durs, 0.99)
	for st := 0; st <= last && len(all) > 0; st++ {
		ds := steps[st]
		slices.Sort(ds)
		res.Series = append(res.Series, Point{At: (time.Duration(st+1) * SeriesStep).Seconds(),
			PerSec: float64(counts[st]) / SeriesStep.Seconds(), P99ms: percentile(ds, 0.99)})
	}
	return res
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return float64(sorted[i].Microseconds()) / 1000
}

// Each calls f(0..n-1) from workers goroutines and returns the first error
// (after all calls finished). It is for setting up: funding, joining.
func Each(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	err, _ := first.Load().(error)
	return err
}
