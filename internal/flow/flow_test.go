package flow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hongbao/internal/dtx"
	"hongbao/internal/group"
	"hongbao/internal/hbtest"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/pgtest"
	"hongbao/internal/shard"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

var (
	ledgerSchema = pgtest.Schema{Name: "ledger", Migrations: ledger.Migrations()}
	groupSchema  = pgtest.Schema{Name: "group", Migrations: group.Migrations()}
	dtxSchema    = pgtest.Schema{Name: "dtx", Migrations: dtx.Migrations()}
)

// world is two ledger shards and a group shard on the test cluster.
type world struct {
	ls     *Ledgers
	groups *group.Store
	parts  map[string]dtx.Participant
	next   atomic.Int64
}

func newEnv(t *testing.T) *world {
	t.Helper()
	tab, _ := shard.NewTable(2)
	e := &world{ls: &Ledgers{Table: tab}}
	for i := range 2 {
		l, err := ledger.New(t.Context(), pgtest.NewDB(t, ledgerSchema), ledger.Options{Shard: i, Stripes: 4})
		if err != nil {
			t.Fatal(err)
		}
		e.ls.Shards = append(e.ls.Shards, l)
	}
	e.groups = group.New(pgtest.NewDB(t, groupSchema), group.Options{})
	e.parts = Participants(e.ls, e.groups, nil)
	return e
}

// userOn returns a new user id whose wallet lives on the given shard.
func (e *world) userOn(shard int) int64 {
	for {
		u := e.next.Add(1)
		if e.ls.Table.Of(u) == shard {
			return u
		}
	}
}

func (e *world) fund(t *testing.T, u int64, amount money.Amount) {
	t.Helper()
	if _, err := e.ls.For(u).Deposit(context.Background(), fmt.Sprint("fund-", u), u, amount); err != nil {
		t.Fatal(err)
	}
}

func (e *world) wantWallet(t *testing.T, u int64, balance money.Amount) {
	t.Helper()
	w, err := e.ls.For(u).Wallet(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	if w.Balance != balance || w.Held != 0 || w.Incoming != 0 {
		t.Errorf("user %d: balance %s held %s incoming %s, want balance %s and nothing held or reserved", u, w.Balance, w.Held, w.Incoming, balance)
	}
}

// scenario prepares fresh users and returns the global transaction and a
// check of the money and membership for the state it ended in.
type scenario struct {
	name string
	want func(crashedAt string) dtx.State // the end state a crash at that point leads to
	set  func(t *testing.T, e *world) (dtx.Spec, func(t *testing.T, end dtx.State))
}

func scenarios() []*scenario {
	committedAfter := func(point string) func(string) dtx.State {
		return func(crashedAt string) dtx.State {
			if crashedAt == "" || slices.Index(tccOrder, crashedAt) >= slices.Index(tccOrder, point) {
				return dtx.Committed
			}
			return dtx.Cancelled
		}
	}
	always := func(s dtx.State) func(string) dtx.State { return func(string) dtx.State { return s } }
	return []*scenario{
		{name: "tcc-transfer", want: committedAfter("after-log:confirming"), set: func(t *testing.T, e *world) (dtx.Spec, func(*testing.T, dtx.State)) {
			a, b := e.userOn(0), e.userOn(1)
			e.fund(t, a, 1000)
			return TransferSpec(e.ls, fmt.Sprint("tcc-", a), a, b, 300), func(t *testing.T, end dtx.State) {
				if end == dtx.Committed {
					e.wantWallet(t, a, 700)
					e.wantWallet(t, b, 300)
				} else {
					e.wantWallet(t, a, 1000)
					e.wantWallet(t, b, 0)
				}
			}
		}},
		{name: "tcc-transfer-insufficient", want: always(dtx.Cancelled), set: func(t *testing.T, e *world) (dtx.Spec, func(*testing.T, dtx.State)) {
			a, b := e.userOn(0), e.userOn(1)
			e.fund(t, a, 100)
			return TransferSpec(e.ls, fmt.Sprint("tcc-", a), a, b, 300), func(t *testing.T, end dtx.State) {
				e.wantWallet(t, a, 100)
				e.wantWallet(t, b, 0)
			}
		}},
		{name: "saga-paid-entry", want: always(dtx.Committed), set: func(t *testing.T, e *world) (dtx.Spec, func(*testing.T, dtx.State)) {
			return paidEntry(t, e, 10)
		}},
		{name: "saga-paid-entry-group-full", want: always(dtx.Cancelled), set: func(t *testing.T, e *world) (dtx.Spec, func(*testing.T, dtx.State)) {
			return paidEntry(t, e, 1)
		}},
	}
}

// The order of step boundaries in a TCC that commits.
var tccOrder = []string{"before-log:begin", "after-log:begin", "before-call:try:1", "after-call:try:1", "before-call:try:2", "after-call:try:2",
	"before-log:confirming", "after-log:confirming", "before-call:confirm:1", "after-call:confirm:1", "before-call:confirm:2", "after-call:confirm:2",
	"before-log:committed", "after-log:committed"}

func paidEntry(t *testing.T, e *world, capacity int) (dtx.Spec, func(*testing.T, dtx.State)) {
	u, owner := e.userOn(0), e.userOn(1)
	e.fund(t, u, 1000)
	g, err := e.groups.Create(t.Context(), group.CreateRequest{ID: owner, Owner: owner, Capacity: capacity, Fee: 50})
	if err != nil {
		t.Fatal(err)
	}
	return PaidEntrySpec(e.ls, fmt.Sprint("saga-", u), u, g), func(t *testing.T, end dtx.State) {
		in, err := e.groups.IsMember(context.Background(), g.ID, u)
		if err != nil {
			t.Fatal(err)
		}
		if end == dtx.Committed {
			e.wantWallet(t, u, 950)
			e.wantWallet(t, owner, 50)
			if !in {
				t.Error("paid but not a member")
			}
		} else {
			e.wantWallet(t, u, 1000)
			e.wantWallet(t, owner, 0)
			if in {
				t.Error("refunded but still a member")
			}
		}
	}
}

// TestCrashMatrix stops the coordinator at every step boundary of every
// scenario, starts a fresh one, and proves the end: finished, money exact
// on every shard, nothing left held, membership matching payment.
func TestCrashMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	t.Run("matrix", func(t *testing.T) {
		for _, sc := range scenarios() {
			for _, point := range pointsOf(t, e, sc) {
				t.Run(sc.name+"/"+point, func(t *testing.T) {
					t.Parallel()
					crashAndRecover(t, e, sc, point)
				})
			}
		}
	})
	// Across shards the clearing accounts net to zero once everything ended.
	for _, acct := range []ledger.Account{ledger.ClearingTransfers, ledger.ClearingGroups} {
		var sum money.Amount
		for _, l := range e.ls.Shards {
			b, err := l.SystemBalance(context.Background(), acct)
			if err != nil {
				t.Fatal(err)
			}
			sum += b
		}
		if sum != 0 {
			t.Errorf("%s nets to %s across shards, want 0", acct, sum)
		}
	}
	violations, err := e.ls.Check(context.Background())
	if err != nil || len(violations) > 0 {
		t.Fatalf("ledger invariant: %v %v", violations, err)
	}
}

// pointsOf runs a scenario cleanly and returns the boundaries it passed.
func pointsOf(t *testing.T, e *world, sc *scenario) []string {
	var mu sync.Mutex
	var points []string
	seen := map[string]bool{}
	spec, check := sc.set(t, e)
	c := dtx.New(pgtest.NewDB(t, dtxSchema), dtx.Options{Participants: e.parts, Hook: func(p string) error {
		mu.Lock()
		defer mu.Unlock()
		if !seen[p] {
			seen[p] = true
			points = append(points, p)
		}
		return nil
	}})
	defer c.Close()
	res, err := c.Run(t.Context(), spec)
	if err != nil || res.State != sc.want("") {
		t.Fatalf("%s clean run: %+v, %v; want %s", sc.name, res, err, sc.want(""))
	}
	check(t, res.State)
	return points
}

func crashAndRecover(t *testing.T, e *world, sc *scenario, point string) {
	db := pgtest.NewDB(t, dtxSchema)
	spec, check := sc.set(t, e)
	var fired atomic.Bool
	crashing := dtx.New(db, dtx.Options{Participants: e.parts, TryTimeout: 2 * time.Second, Hook: func(p string) error {
		if p == point && !fired.Swap(true) {
			return dtx.ErrCrash
		}
		return nil
	}})
	_, err := crashing.Run(t.Context(), spec)
	crashing.Close()
	if !fired.Load() || !errors.Is(err, dtx.ErrCrash) {
		t.Fatalf("the run did not stop at %s: %v", point, err)
	}
	// A fresh coordinator, an hour later: every lease and deadline has passed.
	later := func() time.Time { return time.Now().Add(time.Hour) }
	fresh := dtx.New(db, dtx.Options{Participants: e.parts, Now: later, Poll: 5 * time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, Workers: 2})
	fresh.Start(t.Context())
	defer fresh.Close()
	if _, err := fresh.Get(t.Context(), spec.GID); errors.Is(err, dtx.ErrNotFound) && point == "before-log:begin" {
		// Stopped before anything was written: nothing happened at all.
		check(t, dtx.Cancelled)
		return
	}
	var g dtx.Global
	hbtest.WaitFor(t, 20*time.Second, spec.GID+" finished by recovery", func() bool {
		var err error
		if g, err = fresh.Get(t.Context(), spec.GID); err != nil {
			t.Fatal(err)
		}
		return g.State.Final()
	})
	if want := sc.want(point); g.State != want {
		t.Fatalf("ended %s, want %s (reason %q)", g.State, want, g.Reason)
	}
	check(t, g.State)
}

// A request whose operation committed answers its result even when its
// answer cannot be stored (the wallet's slot was fenced for a move in
// between): a 503 "retry, nothing started" there would have been false
// (found from outside: a transfer answered 503 had moved the money).
func TestAnswerOfACommittedRequestSurvivesAFence(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.userOn(0)
	e.fund(t, u, 1000)
	l := e.ls.For(u)
	r := newRequests(e.ls)
	ran := 0
	run := func(ctx context.Context, fresh bool) (string, bool, error) {
		ran++
		// The operation is done; then the fence goes up before its answer
		// is stored.
		if err := l.Fence(ctx, 1, []int{shard.SlotOf(u)}, "frozen"); err != nil {
			return "", false, err
		}
		return "done", true, nil
	}
	got, err := once(t.Context(), r, u, "k1", "test", map[string]int{"a": 1}, &struct{}{}, run)
	if err != nil || got != "done" {
		t.Fatalf("a committed request whose answer could not be stored: %q, %v", got, err)
	}
	if err := l.Unfence(t.Context(), 1, []int{shard.SlotOf(u)}, ledger.FenceRestore); err != nil {
		t.Fatal(err)
	}
	// Its replay runs the idempotent operation again and stores the answer.
	run = func(ctx context.Context, fresh bool) (string, bool, error) { ran++; return "done", true, nil }
	if got, err := once(t.Context(), r, u, "k1", "test", map[string]int{"a": 1}, &struct{}{}, run); err != nil || got != "done" || ran != 2 {
		t.Fatalf("replay: %q, %v, ran %d times", got, err, ran)
	}
}
