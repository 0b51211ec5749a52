package dtx_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"hongbao/internal/dtx"
	"hongbao/internal/pgtest"
)

// An operator's "retry now" drives a stuck transaction at once (its next
// attempt an hour away), the way recovery would; retrying again, or a
// finished or unknown one, changes nothing.
func TestRetryNow(t *testing.T) {
	t.Parallel()
	bk := newBank(t)
	var down atomic.Bool
	down.Store(true)
	b := flaky{p: bk.b.Participant(), fault: func(c dtx.Call) string {
		if c.Op == dtx.OpConfirm && down.Load() {
			return "refuse"
		}
		return ""
	}}
	o := fastOptions(map[string]dtx.Participant{"a": bk.a.Participant(), "b": b})
	o.MinBackoff, o.MaxBackoff = time.Hour, time.Hour
	c := dtx.New(pgtest.NewDB(t, dtxSchema), o)
	defer c.Close()
	c.Start(t.Context())
	ctx := t.Context()
	from, to := bk.pair(t, 1000)
	res, err := c.Run(ctx, transfer("stuck-1", from, to, 300))
	if err != nil || res.State != dtx.Confirming {
		t.Fatalf("run = %+v, %v; want pending in confirming", res, err)
	}
	n, err := c.Count(ctx, time.Minute)
	if err != nil || n.Pending != 1 || n.InRecovery != 1 || n.Stuck != 0 {
		t.Fatalf("counts = %+v, %v", n, err)
	}
	// Still refused: the retry is recorded and the transaction stays.
	g, err := c.Retry(ctx, "stuck-1")
	if err != nil || g.State != dtx.Confirming || g.Attempts != 2 || g.LastError == "" || g.NextAttempt.Before(time.Now().Add(20*time.Minute)) {
		t.Fatalf("retry while refused = %+v, %v", g, err)
	}
	down.Store(false)
	if g, err = c.Retry(ctx, "stuck-1"); err != nil || g.State != dtx.Committed {
		t.Fatalf("retry = %+v, %v; want committed", g, err)
	}
	if _, err := c.Retry(ctx, "stuck-1"); !errors.Is(err, dtx.ErrFinished) {
		t.Fatalf("retry of a committed one: %v", err)
	}
	if _, err := c.Retry(ctx, "nope"); !errors.Is(err, dtx.ErrNotFound) {
		t.Fatalf("retry of an unknown one: %v", err)
	}
	bk.want(t, from, to, 700, 300)
	bk.check(t)
	if n, _ := c.Count(ctx, time.Minute); n.Pending != 0 {
		t.Fatalf("counts after = %+v", n)
	}
	if l, _ := c.List(ctx, dtx.Filter{Kind: dtx.Saga}); len(l) != 0 {
		t.Fatalf("saga list = %+v", l)
	}
	if l, _ := c.List(ctx, dtx.Filter{Kind: dtx.TCC}); len(l) != 1 {
		t.Fatalf("tcc list = %+v", l)
	}
}
