package channel_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hongbao/internal/channel"
	"hongbao/internal/hbtest"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

var secret = []byte("merchant-secret-merchant-secret!")

func setup(t *testing.T, k channel.Knobs) (*channel.Simulator, *channel.Client, *callbacks) {
	t.Helper()
	cb := &callbacks{byID: map[string]int{}}
	notify := httptest.NewServer(cb)
	sim := channel.NewSimulator(secret, k)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(func() { srv.Close(); notify.Close(); notify.CloseClientConnections() })
	return sim, channel.NewClient(srv.URL, secret, notify.URL), cb
}

// callbacks is a notify endpoint that verifies signatures and counts.
type callbacks struct {
	mu     sync.Mutex
	byID   map[string]int
	forged atomic.Int64
}

func (c *callbacks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := channel.Verify(r.Header, secret, body, time.Now()); err != nil {
		c.forged.Add(1)
		w.WriteHeader(401)
		return
	}
	c.mu.Lock()
	c.byID[string(body)]++
	c.mu.Unlock()
	w.WriteHeader(204)
}

func (c *callbacks) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.byID {
		n += k
	}
	return n
}

func TestSignatures(t *testing.T) {
	t.Parallel()
	now := time.Now()
	h := http.Header{}
	channel.Sign(h, secret, []byte(`{"a":1}`), now)
	if err := channel.Verify(h, secret, []byte(`{"a":1}`), now); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		body   string
		secret []byte
		at     time.Time
	}{
		"other body": {`{"a":2}`, secret, now}, "other secret": {`{"a":1}`, []byte("x"), now},
		"stale": {`{"a":1}`, secret, now.Add(channel.MaxSkew + time.Second)},
	} {
		if err := channel.Verify(h, c.secret, []byte(c.body), c.at); !errors.Is(err, channel.ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := channel.Verify(http.Header{}, secret, nil, now); !errors.Is(err, channel.ErrBadSignature) {
		t.Errorf("unsigned: %v", err)
	}
}

// A pay order is paid by the payer; the channel calls back, signed; the
// order can always be queried; an order id reused with another amount is
// refused; closing a paid order answers paid.
func TestPayOrder(t *testing.T) {
	t.Parallel()
	_, c, cb := setup(t, channel.Knobs{DuplicateCallback: 1})
	ctx := t.Context()
	o, err := c.CreatePay(ctx, "o1", 1234)
	if err != nil || o.State != channel.PayCreated || o.PayURL == "" {
		t.Fatalf("create: %+v %v", o, err)
	}
	if again, err := c.CreatePay(ctx, "o1", 1234); err != nil || again.ID != "o1" {
		t.Fatalf("repeat: %+v %v", again, err)
	}
	if _, err := c.CreatePay(ctx, "o1", 999); !errors.Is(err, channel.ErrRejected) {
		t.Fatalf("another amount: %v", err)
	}
	var paid channel.PayOrder
	if err := signedPost(c, "/control/pay/o1", &paid); err != nil || paid.State != channel.PayPaid {
		t.Fatalf("pay: %+v %v", paid, err)
	}
	hbtest.WaitFor(t, 5*time.Second, "two callbacks (duplicate on)", func() bool { return cb.count() == 2 })
	if q, err := c.QueryPay(ctx, "o1"); err != nil || q.State != channel.PayPaid || q.PaidAt.IsZero() {
		t.Fatalf("query: %+v %v", q, err)
	}
	if cl, err := c.ClosePay(ctx, "o1"); err != nil || cl.State != channel.PayPaid {
		t.Fatalf("close of a paid order: %+v %v", cl, err)
	}
	if _, err := c.QueryPay(ctx, "nope"); !errors.Is(err, channel.ErrNoOrder) {
		t.Fatalf("missing order: %v", err)
	}
	if cb.forged.Load() != 0 {
		t.Fatal("a callback failed verification")
	}
	lines, err := c.Statement(ctx, time.Now())
	if err != nil || len(lines) != 1 || lines[0].ID != "o1" || lines[0].Amount != 1234 {
		t.Fatalf("statement: %+v %v", lines, err)
	}
}

// Lost answers, 5xx and system errors are unknown, never failures; a
// payout retried through all of them pays exactly once.
func TestUnknownAnswersAndOnePayout(t *testing.T) {
	t.Parallel()
	sim, c, _ := setup(t, channel.Knobs{LoseAnswer: 0.5, Fail5xx: 0.2, SystemError: 0.2})
	ctx := t.Context()
	unknown := 0
	var p channel.Payout
	var err error
	for {
		if p, err = c.Payout(ctx, "w1", 7, 500); err == nil {
			break
		}
		if !errors.Is(err, channel.ErrUnknown) {
			t.Fatalf("payout: %v", err)
		}
		unknown++
	}
	if p.State != channel.PayoutSucceeded || sim.PaidOut() != 1 {
		t.Fatalf("payout %+v after %d unknown answers; paid out %d times", p, unknown, sim.PaidOut())
	}
	for range 20 {
		_, _ = c.Payout(ctx, "w1", 7, 500)
	}
	if sim.PaidOut() != 1 {
		t.Fatalf("paid out %d times", sim.PaidOut())
	}
	if _, err := c.Payout(ctx, "w1", 7, 501); err != nil && !errors.Is(err, channel.ErrRejected) && !errors.Is(err, channel.ErrUnknown) {
		t.Fatalf("the id with another amount: %v", err)
	}
}

// A payout may stay processing (unknown) until the channel decides.
func TestProcessingPayout(t *testing.T) {
	t.Parallel()
	sim, c, _ := setup(t, channel.Knobs{PayoutOutcome: channel.PayoutProcessing})
	p, err := c.Payout(t.Context(), "w2", 9, 300)
	if err != nil || p.State != channel.PayoutProcessing || sim.PaidOut() != 0 {
		t.Fatalf("payout: %+v %v", p, err)
	}
	var done channel.Payout
	if err := signedPostBody(c, "/control/payout/w2", `{"State":"failed"}`, &done); err != nil || done.State != channel.PayoutFailed {
		t.Fatalf("resolve: %+v %v", done, err)
	}
	if q, err := c.QueryPayout(t.Context(), "w2"); err != nil || q.State != channel.PayoutFailed || sim.PaidOut() != 0 {
		t.Fatalf("query: %+v %v", q, err)
	}
}
