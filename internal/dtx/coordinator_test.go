package dtx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hongbao/internal/dtx"
	"hongbao/internal/hbtest"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/pgtest"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

var (
	ledgerSchema = pgtest.Schema{Name: "ledger", Migrations: ledger.Migrations()}
	dtxSchema    = pgtest.Schema{Name: "dtx", Migrations: dtx.Migrations()}
)

// bank is two ledger shards: users below 1,000,000 on "a", the rest on "b".
type bank struct {
	a, b *ledger.Ledger
	next atomic.Int64
}

func newBank(t *testing.T) *bank {
	t.Helper()
	var ls [2]*ledger.Ledger
	for i := range ls {
		l, err := ledger.New(t.Context(), pgtest.NewDB(t, ledgerSchema), ledger.Options{Shard: i, Stripes: 4})
		if err != nil {
			t.Fatal(err)
		}
		ls[i] = l
	}
	return &bank{a: ls[0], b: ls[1]}
}

// pair makes a funded sender on a and a receiver on b.
func (bk *bank) pair(t *testing.T, funds money.Amount) (int64, int64) {
	t.Helper()
	n := bk.next.Add(1)
	from, to := n, 1_000_000+n
	if _, err := bk.a.Deposit(context.Background(), fmt.Sprint("fund-", from), from, funds); err != nil {
		t.Fatal(err)
	}
	return from, to
}

func transfer(gid string, from, to int64, amount money.Amount) dtx.Spec {
	return dtx.Spec{GID: gid, Kind: dtx.TCC, Branches: []dtx.Branch{
		{Participant: "a", Payload: ledger.Payload(ledger.ActionHold, from, amount, ledger.ClearingTransfers)},
		{Participant: "b", Payload: ledger.Payload(ledger.ActionReceive, to, amount, ledger.ClearingTransfers)},
	}}
}

func (bk *bank) want(t *testing.T, from, to int64, fromBal, toBal money.Amount) {
	t.Helper()
	wf, err := bk.a.Wallet(context.Background(), from)
	if err != nil {
		t.Fatal(err)
	}
	wt, err := bk.b.Wallet(context.Background(), to)
	if err != nil {
		t.Fatal(err)
	}
	if wf.Balance != fromBal || wf.Held != 0 || wt.Balance != toBal {
		t.Errorf("sender %+v receiver %+v, want %s and %s, nothing held", wf, wt, fromBal, toBal)
	}
}

func (bk *bank) check(t *testing.T) {
	t.Helper()
	for _, l := range []*ledger.Ledger{bk.a, bk.b} {
		v, err := l.Check(context.Background())
		if err != nil || len(v) > 0 {
			t.Fatalf("ledger %d: %v %v", l.Shard(), v, err)
		}
	}
	ca, _ := bk.a.SystemBalance(context.Background(), ledger.ClearingTransfers)
	cb, _ := bk.b.SystemBalance(context.Background(), ledger.ClearingTransfers)
	if ca+cb != 0 {
		t.Fatalf("clearing:transfers nets to %s across shards", ca+cb)
	}
}

func fastOptions(parts map[string]dtx.Participant) dtx.Options {
	return dtx.Options{Participants: parts, TryTimeout: time.Second, CallTimeout: 300 * time.Millisecond, Poll: 5 * time.Millisecond,
		MinBackoff: 2 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Workers: 8}
}

func waitFinal(t *testing.T, c *dtx.Coordinator, gid string) dtx.Global {
	t.Helper()
	var g dtx.Global
	hbtest.WaitFor(t, 30*time.Second, gid+" to finish", func() bool {
		var err error
		if g, err = c.Get(t.Context(), gid); err != nil {
			t.Fatal(err)
		}
		return g.State.Final()
	})
	return g
}

func TestRunCommitsAndCancels(t *testing.T) {
	t.Parallel()
	bk := newBank(t)
	c := dtx.New(pgtest.NewDB(t, dtxSchema), fastOptions(map[string]dtx.Participant{"a": bk.a.Participant(), "b": bk.b.Participant()}))
	defer c.Close()
	ctx := t.Context()

	from, to := bk.pair(t, 1000)
	res, err := c.Run(ctx, transfer("ok-1", from, to, 400))
	if err != nil || res.Outcome != dtx.OutcomeCommitted {
		t.Fatalf("run = %+v, %v", res, err)
	}
	// The same gid again answers from the log; other branches conflict.
	if res, err := c.Run(ctx, transfer("ok-1", from, to, 400)); err != nil || res.Outcome != dtx.OutcomeCommitted {
		t.Fatalf("rerun = %+v, %v", res, err)
	}
	if _, err := c.Run(ctx, transfer("ok-1", from, to, 401)); !errors.Is(err, dtx.ErrGIDConflict) {
		t.Fatalf("conflicting rerun err = %v", err)
	}
	bk.want(t, from, to, 600, 400)

	res, err = c.Run(ctx, transfer("short-1", from, to, 601))
	if err != nil || res.Outcome != dtx.OutcomeCancelled || res.Reason == "" {
		t.Fatalf("run without funds = %+v, %v", res, err)
	}
	bk.want(t, from, to, 600, 400)

	for _, bad := range []dtx.Spec{{Kind: dtx.TCC}, {GID: "x", Kind: "xa", Branches: transfer("", 1, 2, 1).Branches},
		{GID: "x", Kind: dtx.TCC}, {GID: "x", Kind: dtx.TCC, Branches: []dtx.Branch{{Participant: "nobody"}}}} {
		if _, err := c.Run(ctx, bad); !errors.Is(err, dtx.ErrInvalidSpec) {
			t.Errorf("spec %+v err = %v", bad, err)
		}
	}
	list, err := c.List(ctx, dtx.Filter{})
	if err != nil || len(list) != 2 || list[0].GID != "short-1" || list[0].State != dtx.Cancelled || len(list[0].Branches) != 2 {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if l, _ := c.List(ctx, dtx.Filter{State: dtx.Committed}); len(l) != 1 || l[0].GID != "ok-1" {
		t.Fatalf("list committed = %+v", l)
	}
	if _, err := c.Get(ctx, "nope"); !errors.Is(err, dtx.ErrNotFound) {
		t.Fatalf("get unknown err = %v", err)
	}
	bk.check(t)
}

// flaky wraps a participant with faults chosen per call.
type flaky struct {
	p     dtx.Participant
	fault func(c dtx.Call) string // "", "lose" (do it, answer nothing), "refuse" (do nothing, answer nothing)
}

func (f flaky) Do(ctx context.Context, c dtx.Call) error {
	switch f.fault(c) {
	case "refuse":
		return errors.New("connection refused")
	case "lose":
		if err := f.p.Do(ctx, c); err != nil {
			return err
		}
		return errors.New("response lost")
	}
	return f.p.Do(ctx, c)
}

// A participant that answers nothing during phase 2 leaves the caller with
// "pending", never a failure; recovery then commits it exactly once.
func TestUnknownConfirmIsPendingThenCommitted(t *testing.T) {
	t.Parallel()
	bk := newBank(t)
	var down atomic.Bool
	down.Store(true)
	b := flaky{p: bk.b.Participant(), fault: func(c dtx.Call) string {
		if c.Op == dtx.OpConfirm && down.Load() {
			return "lose" // the credit is applied, the answer lost
		}
		return ""
	}}
	c := dtx.New(pgtest.NewDB(t, dtxSchema), fastOptions(map[string]dtx.Participant{"a": bk.a.Participant(), "b": b}))
	defer c.Close()
	from, to := bk.pair(t, 1000)
	res, err := c.Run(t.Context(), transfer("p-1", from, to, 250))
	if err != nil || res.Outcome != dtx.OutcomePending || res.State != dtx.Confirming {
		t.Fatalf("run = %+v, %v; want pending in confirming", res, err)
	}
	c.Start(t.Context())
	hbtest.WaitFor(t, 10*time.Second, "three retries of the lost confirms", func() bool {
		g, _ := c.Get(t.Context(), "p-1")
		return g.Attempts >= 3
	})
	down.Store(false)
	g := waitFinal(t, c, "p-1")
	if g.State != dtx.Committed || g.Attempts == 0 || g.LastError == "" {
		t.Fatalf("after recovery %+v", g)
	}
	bk.want(t, from, to, 750, 250)
	bk.check(t)
}

// faultServer serves a participant over HTTP with injectable faults.
type faultServer struct {
	srv   *httptest.Server
	mode  atomic.Value // "", "slow", "lose", "5xx"
	only  atomic.Value // when not "", the fault hits only calls of this op
	calls atomic.Int64
}

func newFaultServer(t *testing.T, p dtx.Participant) *faultServer {
	fs := &faultServer{}
	fs.mode.Store("")
	fs.only.Store("")
	h := dtx.Handler(p)
	fs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var call dtx.Call
		_ = json.Unmarshal(body, &call)
		mode := fs.mode.Load().(string)
		if only := fs.only.Load().(string); only != "" && only != string(call.Op) {
			mode = ""
		}
		if mode != "" {
			fs.calls.Add(1)
		}
		switch mode {
		case "slow": // the work is done, the answer comes after the caller's deadline
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			time.Sleep(400 * time.Millisecond)
			w.WriteHeader(rec.Code)
		case "lose": // the work is done, the connection drops before the answer
			h.ServeHTTP(httptest.NewRecorder(), r)
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case "5xx":
			w.WriteHeader(http.StatusBadGateway)
		default:
			h.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(fs.srv.Close)
	return fs
}

func TestHTTPTransportFaults(t *testing.T) {
	t.Parallel()
	bk := newBank(t)
	sa := newFaultServer(t, bk.a.Participant())
	sb := newFaultServer(t, bk.b.Participant())
	parts := map[string]dtx.Participant{
		"a": dtx.HTTPParticipant{URL: sa.srv.URL, Timeout: 200 * time.Millisecond},
		"b": dtx.HTTPParticipant{URL: sb.srv.URL, Timeout: 200 * time.Millisecond},
	}
	o := fastOptions(parts)
	o.CallTimeout = time.Second // the transport's own deadline is the tighter one
	c := dtx.New(pgtest.NewDB(t, dtxSchema), o)
	c.Start(t.Context())
	defer c.Close()

	for _, tc := range []struct {
		name, server, mode string
		funds              money.Amount
		want               dtx.State
	}{
		{"sender slow", "a", "slow", 1000, dtx.Cancelled},   // every try times out: unknown until the deadline, then cancel
		{"receiver lost", "b", "lose", 1000, dtx.Cancelled}, // tries done but never acknowledged
		{"receiver 5xx", "b", "5xx", 1000, dtx.Cancelled},
		{"definite failure over HTTP", "", "", 10, dtx.Cancelled},
		{"healthy", "", "", 1000, dtx.Committed},
	} {
		from, to := bk.pair(t, tc.funds)
		srv := map[string]*faultServer{"a": sa, "b": sb}[tc.server]
		if srv != nil {
			srv.mode.Store(tc.mode)
		}
		gid := "http-" + tc.name
		res, err := c.Run(t.Context(), transfer(gid, from, to, 300))
		if srv != nil {
			srv.mode.Store("")
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		g := waitFinal(t, c, gid)
		if g.State != tc.want {
			t.Fatalf("%s: ended %s (run said %+v), want %s", tc.name, g.State, res, tc.want)
		}
		if tc.want == dtx.Committed {
			bk.want(t, from, to, tc.funds-300, 300)
		} else {
			bk.want(t, from, to, tc.funds, 0)
		}
	}

	// The receiver loses every confirm until it has lost three, then
	// answers again: the caller hears pending, recovery commits once.
	from, to := bk.pair(t, 1000)
	sb.calls.Store(0)
	sb.only.Store(string(dtx.OpConfirm))
	sb.mode.Store("lose")
	res, err := c.Run(t.Context(), transfer("http-down", from, to, 300))
	if err != nil || res.Outcome != dtx.OutcomePending {
		t.Fatalf("run with confirms lost = %+v, %v; want pending", res, err)
	}
	hbtest.WaitFor(t, 10*time.Second, "three lost confirms", func() bool { return sb.calls.Load() >= 3 })
	sb.mode.Store("")
	g := waitFinal(t, c, "http-down")
	if g.State != dtx.Committed {
		t.Fatalf("down and back: %+v", g)
	}
	bk.want(t, from, to, 700, 300)
	bk.check(t)
}

// A backlog left by a crashed coordinator drains through recovery, shared
// by two coordinators that never drive one transaction at the same time.
func TestRecoveryBacklogTwoCoordinators(t *testing.T) {
	t.Parallel()
	bk := newBank(t)
	db := pgtest.NewDB(t, dtxSchema)
	var inflight sync.Map
	var overlaps atomic.Int64
	guard := func(p dtx.Participant) dtx.Participant {
		return dtx.ParticipantFunc(func(ctx context.Context, c dtx.Call) error {
			key := c.GID + "/" + c.Branch
			if _, busy := inflight.LoadOrStore(key, true); busy {
				overlaps.Add(1)
			}
			defer inflight.Delete(key)
			return p.Do(ctx, c)
		})
	}
	parts := map[string]dtx.Participant{"a": guard(bk.a.Participant()), "b": guard(bk.b.Participant())}

	// The first coordinator logs its decision to confirm and dies.
	const n = 300
	type pair struct{ from, to int64 }
	pairs := make([]pair, n)
	crashing := dtx.New(db, dtx.Options{Participants: parts, Hook: func(p string) error {
		if p == "after-log:confirming" {
			return dtx.ErrCrash
		}
		return nil
	}})
	var wg sync.WaitGroup
	for i := range n {
		from, to := bk.pair(t, 1000)
		pairs[i] = pair{from, to}
		wg.Go(func() {
			if _, err := crashing.Run(t.Context(), transfer(fmt.Sprint("backlog-", i), from, to, 100)); !errors.Is(err, dtx.ErrCrash) {
				t.Errorf("backlog %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	crashing.Close()

	later := func() time.Time { return time.Now().Add(time.Hour) }
	start := time.Now()
	var cs []*dtx.Coordinator
	for range 2 {
		o := fastOptions(parts)
		o.Now = later
		c := dtx.New(db, o)
		c.Start(t.Context())
		cs = append(cs, c)
	}
	for i := range n {
		if g := waitFinal(t, cs[0], fmt.Sprint("backlog-", i)); g.State != dtx.Committed {
			t.Fatalf("backlog %d ended %s", i, g.State)
		}
	}
	t.Logf("drained %d transactions in %s with two coordinators", n, time.Since(start))
	for _, c := range cs {
		c.Close()
	}
	if overlaps.Load() > 0 {
		t.Fatalf("%d calls overlapped on the same branch: two coordinators drove one transaction", overlaps.Load())
	}
	for _, p := range pairs {
		bk.want(t, p.from, p.to, 900, 100)
	}
	bk.check(t)
}

func TestPurgeAfterRetention(t *testing.T) {
	t.Parallel()
	bk := newBank(t)
	db := pgtest.NewDB(t, dtxSchema)
	parts := map[string]dtx.Participant{"a": bk.a.Participant(), "b": bk.b.Participant()}
	c := dtx.New(db, fastOptions(parts))
	from, to := bk.pair(t, 1000)
	if res, err := c.Run(t.Context(), transfer("old", from, to, 1)); err != nil || res.Outcome != dtx.OutcomeCommitted {
		t.Fatal(res, err)
	}
	c.Close()
	o := fastOptions(parts)
	o.Retention = time.Hour
	o.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	later := dtx.New(db, o)
	defer later.Close()
	if n, err := later.Purge(t.Context()); err != nil || n != 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	if _, err := later.Get(t.Context(), "old"); !errors.Is(err, dtx.ErrNotFound) {
		t.Fatalf("purged transaction still there: %v", err)
	}
}

// A participant process that is down (connections refused) while the
// decision to confirm is being carried out, and comes back on the same
// address: the transaction stays pending, then commits exactly once.
func TestHTTPParticipantDownAndBack(t *testing.T) {
	t.Parallel()
	bk := newBank(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	handler := dtx.Handler(bk.b.Participant())
	var seen atomic.Int64
	gate := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen.Add(1); handler.ServeHTTP(w, r) })
	srv := &http.Server{Handler: gate}
	go srv.Serve(l) //nolint:errcheck
	parts := map[string]dtx.Participant{"a": bk.a.Participant(), "b": dtx.HTTPParticipant{URL: "http://" + addr, Timeout: 200 * time.Millisecond}}
	var down atomic.Bool
	o := fastOptions(parts)
	o.Hook = func(p string) error {
		if p == "after-log:confirming" && down.CompareAndSwap(false, true) {
			srv.Close() // the receiver's process goes away right after the decision
		}
		return nil
	}
	c := dtx.New(pgtest.NewDB(t, dtxSchema), o)
	defer c.Close()
	from, to := bk.pair(t, 1000)
	res, err := c.Run(t.Context(), transfer("down-1", from, to, 300))
	if err != nil || res.Outcome != dtx.OutcomePending {
		t.Fatalf("run while the receiver is down = %+v, %v; want pending", res, err)
	}
	c.Start(t.Context())
	hbtest.WaitFor(t, 10*time.Second, "two refused retries while the receiver is down", func() bool {
		g, _ := c.Get(t.Context(), "down-1")
		return g.Attempts >= 2
	})
	before := seen.Load()
	l2, err := net.Listen("tcp", addr) // back, same address
	if err != nil {
		t.Fatal(err)
	}
	back := &http.Server{Handler: gate}
	go back.Serve(l2) //nolint:errcheck
	defer back.Close()
	if g := waitFinal(t, c, "down-1"); g.State != dtx.Committed {
		t.Fatalf("after the receiver came back: %+v", g)
	}
	if seen.Load() == before {
		t.Fatal("the confirm never reached the restarted receiver")
	}
	bk.want(t, from, to, 700, 300)
	bk.check(t)
}

// A restarted node (the same Identity, a new incarnation) drives at once
// what its dead predecessor held under a lease, instead of waiting the
// lease out; a coordinator of another identity leaves those leases alone.
func TestRestartTakesOverItsOwnLeases(t *testing.T) {
	t.Parallel()
	bk := newBank(t)
	db := pgtest.NewDB(t, dtxSchema)
	parts := map[string]dtx.Participant{"a": bk.a.Participant(), "b": bk.b.Participant()}
	o := fastOptions(parts)
	o.Identity, o.Lease = "node-1", time.Hour
	o.Hook = func(p string) error {
		if p == "after-log:confirming" {
			return dtx.ErrCrash
		}
		return nil
	}
	from, to := bk.pair(t, 1000)
	dead := dtx.New(db, o)
	if _, err := dead.Run(t.Context(), transfer("leased", from, to, 100)); !errors.Is(err, dtx.ErrCrash) {
		t.Fatalf("crash run: %v", err)
	}
	dead.Close()

	other := fastOptions(parts)
	other.Identity = "node-2"
	stranger := dtx.New(db, other)
	if n, err := stranger.TakeOver(t.Context()); err != nil || n != 0 {
		t.Fatalf("another node took over %d leases (%v)", n, err)
	}
	stranger.Close()

	o.Hook = nil
	next := dtx.New(db, o)
	next.Start(t.Context())
	defer next.Close()
	if g := waitFinal(t, next, "leased"); g.State != dtx.Committed {
		t.Fatalf("after the restart: %s", g.State)
	}
	bk.want(t, from, to, 900, 100)
	bk.check(t)
}

// With AnswerEarly the caller hears committed once confirming is on disk:
// the confirms run on in the background, and when they cannot finish,
// recovery does, exactly once. A refused try is still answered cancelled.
func TestAnswerEarly(t *testing.T) {
	t.Parallel()
	bk := newBank(t)
	var down atomic.Bool
	b := flaky{p: bk.b.Participant(), fault: func(c dtx.Call) string {
		if c.Op == dtx.OpConfirm && down.Load() {
			return "refuse"
		}
		return ""
	}}
	o := fastOptions(map[string]dtx.Participant{"a": bk.a.Participant(), "b": b})
	o.AnswerEarly = true
	c := dtx.New(pgtest.NewDB(t, dtxSchema), o)
	ctx := t.Context()

	from, to := bk.pair(t, 1000)
	res, err := c.Run(ctx, transfer("early-1", from, to, 300))
	if err != nil || res.Outcome != dtx.OutcomeCommitted || res.State != dtx.Confirming {
		t.Fatalf("run = %+v, %v; want committed while confirming", res, err)
	}
	if g := waitFinal(t, c, "early-1"); g.State != dtx.Committed {
		t.Fatalf("early-1 ended %+v", g)
	}
	bk.want(t, from, to, 700, 300)

	// The receiver's shard answers no confirm: committed all the same, and
	// recovery finishes it once the shard is back.
	down.Store(true)
	res, err = c.Run(ctx, transfer("early-2", from, to, 200))
	if err != nil || res.Outcome != dtx.OutcomeCommitted {
		t.Fatalf("run with confirms failing = %+v, %v", res, err)
	}
	hbtest.WaitFor(t, 10*time.Second, "the failed confirms handed to recovery", func() bool {
		g, _ := c.Get(ctx, "early-2")
		return g.Attempts >= 1 && g.State == dtx.Confirming
	})
	down.Store(false)
	c.Start(ctx)
	if g := waitFinal(t, c, "early-2"); g.State != dtx.Committed {
		t.Fatalf("early-2 ended %+v", g)
	}
	bk.want(t, from, to, 500, 500)

	if res, err := c.Run(ctx, transfer("early-3", from, to, 501)); err != nil || res.Outcome != dtx.OutcomeCancelled || res.State != dtx.Cancelled {
		t.Fatalf("run without funds = %+v, %v", res, err)
	}
	c.Close() // waits for every confirm in the background
	bk.want(t, from, to, 500, 500)
	bk.check(t)
}
