package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
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

var schema = pgtest.Schema{Name: "ledger", Migrations: ledger.Migrations()}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newLedger(t *testing.T) (*ledger.Ledger, *clock) {
	t.Helper()
	c := &clock{t: time.Now()}
	l, err := ledger.New(t.Context(), pgtest.NewDB(t, schema), ledger.Options{Shard: 0, Stripes: 4, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return l, c
}

func mustCheck(t *testing.T, l *ledger.Ledger) {
	t.Helper()
	v, err := l.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(v) > 0 {
		t.Fatalf("ledger invariant violated: %v", v)
	}
}

func wallet(t *testing.T, l *ledger.Ledger, user int64) ledger.Wallet {
	t.Helper()
	w, err := l.Wallet(t.Context(), user)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func wantWallet(t *testing.T, l *ledger.Ledger, user int64, balance, held money.Amount) {
	t.Helper()
	w := wallet(t, l, user)
	if w.Balance != balance || w.Held != held || w.Available != balance-held {
		t.Fatalf("user %d wallet = %+v, want balance %s held %s", user, w, balance, held)
	}
}

var depSeq atomic.Int64

func deposit(t *testing.T, l *ledger.Ledger, user int64, amount money.Amount) {
	t.Helper()
	if _, err := l.Deposit(t.Context(), fmt.Sprintf("dep-%d-%d", user, depSeq.Add(1)), user, amount); err != nil {
		t.Fatal(err)
	}
}

func TestTransfer(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := t.Context()
	deposit(t, l, 1, 10000)

	tests := []struct {
		name string
		req  ledger.TransferRequest
		err  error
	}{
		{"ok", ledger.TransferRequest{Key: "t1", From: 1, To: 2, Amount: 2500}, nil},
		{"replay same request", ledger.TransferRequest{Key: "t1", From: 1, To: 2, Amount: 2500}, nil},
		{"same key other amount", ledger.TransferRequest{Key: "t1", From: 1, To: 2, Amount: 2501}, ledger.ErrIdempotencyConflict},
		{"same key other kind of op", ledger.TransferRequest{Key: "t1", From: 1, To: 3, Amount: 2500}, ledger.ErrIdempotencyConflict},
		{"insufficient", ledger.TransferRequest{Key: "t2", From: 1, To: 2, Amount: 7501}, ledger.ErrInsufficientFunds},
		{"from empty wallet", ledger.TransferRequest{Key: "t3", From: 99, To: 2, Amount: 1}, ledger.ErrInsufficientFunds},
		{"exactly all", ledger.TransferRequest{Key: "t4", From: 1, To: 3, Amount: 7500}, nil},
		{"zero", ledger.TransferRequest{Key: "t5", From: 2, To: 3, Amount: 0}, ledger.ErrInvalid},
		{"negative", ledger.TransferRequest{Key: "t6", From: 2, To: 3, Amount: -5}, ledger.ErrInvalid},
		{"self", ledger.TransferRequest{Key: "t7", From: 2, To: 2, Amount: 5}, ledger.ErrInvalid},
		{"unknown system account", ledger.TransferRequest{Key: "t8", From: 2, To: -7, Amount: 5}, ledger.ErrInvalid},
		{"no key", ledger.TransferRequest{From: 2, To: 3, Amount: 5}, ledger.ErrInvalid},
		{"to clearing", ledger.TransferRequest{Key: "t9", From: 2, To: ledger.ClearingGroups, Amount: 500, Kind: ledger.KindDebit}, nil},
	}
	for _, tt := range tests {
		_, err := l.Transfer(ctx, tt.req)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
	}
	wantWallet(t, l, 1, 0, 0)
	wantWallet(t, l, 2, 2000, 0)
	wantWallet(t, l, 3, 7500, 0)
	wantWallet(t, l, 99, 0, 0)
	if b, _ := l.SystemBalance(ctx, ledger.ClearingGroups); b != 500 {
		t.Fatalf("clearing:groups = %s, want 5.00", b)
	}
	if b, _ := l.SystemBalance(ctx, ledger.External); b != -10000 {
		t.Fatalf("external = %s, want -100.00", b)
	}
	r, err := l.Transfer(ctx, ledger.TransferRequest{Key: "t1", From: 1, To: 2, Amount: 2500})
	if err != nil || !r.Replayed || r.Amount != 2500 || r.FromBalance != 7500 || r.ToBalance != 2500 {
		t.Fatalf("replay = %+v, %v; want the original result", r, err)
	}
	mustCheck(t, l)
}

func TestHoldPostVoid(t *testing.T) {
	t.Parallel()
	l, c := newLedger(t)
	ctx := t.Context()
	deposit(t, l, 1, 10000)

	h, err := l.Hold(ctx, ledger.HoldRequest{Key: "h1", User: 1, Amount: 3000})
	if err != nil || h.Available != 7000 {
		t.Fatalf("hold = %+v, %v", h, err)
	}
	wantWallet(t, l, 1, 10000, 3000)
	if _, err := l.Hold(ctx, ledger.HoldRequest{Key: "h2", User: 1, Amount: 7001}); !errors.Is(err, ledger.ErrInsufficientFunds) {
		t.Fatalf("over-hold err = %v", err)
	}
	if _, err := l.Transfer(ctx, ledger.TransferRequest{Key: "t", From: 1, To: 2, Amount: 7001}); !errors.Is(err, ledger.ErrInsufficientFunds) {
		t.Fatalf("transfer of held money err = %v", err)
	}
	if r, err := l.Hold(ctx, ledger.HoldRequest{Key: "h1", User: 1, Amount: 3000}); err != nil || !r.Replayed || r.HoldID != h.HoldID {
		t.Fatalf("replayed hold = %+v, %v", r, err)
	}
	if _, err := l.Hold(ctx, ledger.HoldRequest{Key: "h1", User: 1, Amount: 3001}); !errors.Is(err, ledger.ErrIdempotencyConflict) {
		t.Fatalf("conflicting hold err = %v", err)
	}
	for _, bad := range []ledger.HoldRequest{{Key: "x", User: 0, Amount: 1}, {Key: "x", User: 1, Amount: 0}, {User: 1, Amount: 1}} {
		if _, err := l.Hold(ctx, bad); !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("hold %+v err = %v, want ErrInvalid", bad, err)
		}
	}

	// Post less than held: the rest is released.
	if _, err := l.Post(ctx, ledger.PostRequest{Key: "p0", HoldKey: "h1", To: ledger.ClearingPackets, Amount: 3001}); !errors.Is(err, ledger.ErrPostExceedsHold) {
		t.Fatalf("post above hold err = %v", err)
	}
	p, err := l.Post(ctx, ledger.PostRequest{Key: "p1", HoldKey: "h1", To: ledger.ClearingPackets, Amount: 2000})
	if err != nil || p.Posted != 2000 || p.Released != 1000 {
		t.Fatalf("post = %+v, %v", p, err)
	}
	wantWallet(t, l, 1, 8000, 0)
	if r, err := l.Post(ctx, ledger.PostRequest{Key: "p1", HoldKey: "h1", To: ledger.ClearingPackets, Amount: 2000}); err != nil || !r.Replayed || r.PostingID != p.PostingID {
		t.Fatalf("replayed post = %+v, %v", r, err)
	}
	// A hold resolves exactly once.
	if _, err := l.Post(ctx, ledger.PostRequest{Key: "p2", HoldKey: "h1", To: ledger.ClearingPackets, Amount: 1}); !errors.Is(err, ledger.ErrHoldResolved) {
		t.Fatalf("second post err = %v", err)
	}
	if _, err := l.Void(ctx, ledger.VoidRequest{Key: "v1", HoldKey: "h1"}); !errors.Is(err, ledger.ErrHoldResolved) {
		t.Fatalf("void after post err = %v", err)
	}
	if _, err := l.Void(ctx, ledger.VoidRequest{Key: "v2", HoldKey: "nope"}); !errors.Is(err, ledger.ErrHoldNotFound) {
		t.Fatalf("void of unknown hold err = %v", err)
	}
	if _, err := l.Post(ctx, ledger.PostRequest{Key: "p3", HoldKey: "h1", To: ledger.ClearingPackets, Amount: 0}); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("post of zero err = %v", err)
	}

	// Void releases everything, once.
	if _, err := l.Hold(ctx, ledger.HoldRequest{Key: "h3", User: 1, Amount: 500}); err != nil {
		t.Fatal(err)
	}
	v, err := l.Void(ctx, ledger.VoidRequest{Key: "v3", HoldKey: "h3"})
	if err != nil || v.Released != 500 {
		t.Fatalf("void = %+v, %v", v, err)
	}
	if r, err := l.Void(ctx, ledger.VoidRequest{Key: "v3", HoldKey: "h3"}); err != nil || !r.Replayed || r.Released != 500 {
		t.Fatalf("replayed void = %+v, %v", r, err)
	}
	if _, err := l.Post(ctx, ledger.PostRequest{Key: "p4", HoldKey: "h3", To: ledger.ClearingPackets, Amount: 1}); !errors.Is(err, ledger.ErrHoldResolved) {
		t.Fatalf("post after void err = %v", err)
	}
	wantWallet(t, l, 1, 8000, 0)

	// Expiry: an expired hold is released by the sweeper and cannot be posted.
	if _, err := l.Hold(ctx, ledger.HoldRequest{Key: "h4", User: 1, Amount: 800, ExpiresAt: c.t.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Hold(ctx, ledger.HoldRequest{Key: "h5", User: 1, Amount: 200, ExpiresAt: c.t.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.ExpireHolds(ctx, 100); err != nil || n != 0 {
		t.Fatalf("early expiry = %d, %v", n, err)
	}
	c.t = c.t.Add(2 * time.Minute)
	if _, err := l.Post(ctx, ledger.PostRequest{Key: "p5", HoldKey: "h4", To: ledger.ClearingPackets, Amount: 800}); !errors.Is(err, ledger.ErrHoldResolved) {
		t.Fatalf("post of expired hold err = %v", err)
	}
	if n, err := l.ExpireHolds(ctx, 100); err != nil || n != 1 {
		t.Fatalf("expiry = %d, %v; want 1", n, err)
	}
	if n, err := l.ExpireHolds(ctx, 100); err != nil || n != 0 {
		t.Fatalf("second expiry = %d, %v; want 0", n, err)
	}
	wantWallet(t, l, 1, 8000, 200)
	if b, _ := l.SystemBalance(ctx, ledger.ClearingPackets); b != 2000 {
		t.Fatalf("clearing:packets = %s", b)
	}
	mustCheck(t, l)
}

// The participant's barrier, call by call: repeats answer as before, an
// empty cancel fences off its late try, a refused try leaves nothing.
func TestBarrierBranches(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := t.Context()
	deposit(t, l, 1, 1000)
	p := l.Participant()
	call := func(gid string, op dtx.Op, action string, amount money.Amount, account ledger.Account) error {
		return p.Do(ctx, dtx.Call{GID: gid, Branch: "1", Op: op, Payload: ledger.Payload(action, 1, amount, account)})
	}
	hold := func(gid string, op dtx.Op, amount money.Amount) error {
		return call(gid, op, ledger.ActionHold, amount, ledger.ClearingPackets)
	}

	// Normal: try, repeated try, confirm, repeated confirm.
	for range 2 {
		if err := hold("g1", dtx.OpTry, 100); err != nil {
			t.Fatal(err)
		}
	}
	wantWallet(t, l, 1, 1000, 100)
	for range 2 {
		if err := hold("g1", dtx.OpConfirm, 100); err != nil {
			t.Fatal(err)
		}
	}
	wantWallet(t, l, 1, 900, 0)

	// Empty cancel: cancel before any try succeeds and changes nothing;
	// the late try is refused (anti-hanging), definitely.
	if err := hold("g2", dtx.OpCancel, 100); err != nil {
		t.Fatalf("empty cancel: %v", err)
	}
	if err := hold("g2", dtx.OpTry, 100); !errors.Is(err, dtx.ErrTryAfterCancel) || !dtx.IsFailure(err) {
		t.Fatalf("try after cancel err = %v", err)
	}
	if err := hold("g2", dtx.OpCancel, 100); err != nil {
		t.Fatalf("repeated empty cancel: %v", err)
	}
	wantWallet(t, l, 1, 900, 0)

	// Try then cancel releases; cancel again is a no-op.
	if err := hold("g3", dtx.OpTry, 300); err != nil {
		t.Fatal(err)
	}
	wantWallet(t, l, 1, 900, 300)
	for range 2 {
		if err := hold("g3", dtx.OpCancel, 300); err != nil {
			t.Fatalf("cancel: %v", err)
		}
	}
	wantWallet(t, l, 1, 900, 0)
	// A confirm of a hold voided is refused for good.
	if err := hold("g3", dtx.OpConfirm, 300); !errors.Is(err, ledger.ErrHoldResolved) || !dtx.IsFailure(err) {
		t.Fatalf("confirm after cancel err = %v", err)
	}

	// A try that fails (no money) leaves no barrier row: its cancel is
	// empty, and the same try with money later still runs.
	if err := hold("g4", dtx.OpTry, 5000); !errors.Is(err, ledger.ErrInsufficientFunds) || !dtx.IsFailure(err) {
		t.Fatalf("try err = %v", err)
	}
	if err := hold("g4", dtx.OpCancel, 5000); err != nil {
		t.Fatalf("cancel after failed try: %v", err)
	}
	wantWallet(t, l, 1, 900, 0)

	// Saga action and compensation, each repeated.
	for _, op := range []dtx.Op{dtx.OpTry, dtx.OpTry, dtx.OpCancel, dtx.OpCancel} {
		if err := call("g5", op, ledger.ActionDebit, 50, ledger.ClearingGroups); err != nil {
			t.Fatal(err)
		}
	}
	wantWallet(t, l, 1, 900, 0)
	if err := call("g6", dtx.OpTry, ledger.ActionDebit, 901, ledger.ClearingGroups); !errors.Is(err, ledger.ErrInsufficientFunds) || !dtx.IsFailure(err) {
		t.Fatalf("debit of more than the wallet err = %v", err)
	}
	// An action the ledger does not take is a definite failure.
	if err := call("g7", dtx.OpConfirm, ledger.ActionDebit, 1, ledger.ClearingGroups); !errors.Is(err, ledger.ErrInvalid) || !dtx.IsFailure(err) {
		t.Fatalf("saga confirm err = %v", err)
	}
	mustCheck(t, l)
}

func TestApplyCredits(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := t.Context()
	// Fund the clearing account the way a packet does: hold and post.
	deposit(t, l, 1, 100000)
	if _, err := l.Hold(ctx, ledger.HoldRequest{Key: "send", User: 1, Amount: 60000}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Post(ctx, ledger.PostRequest{Key: "send-post", HoldKey: "send", To: ledger.ClearingPackets, Amount: 60000}); err != nil {
		t.Fatal(err)
	}
	c := func(key string, user int64, amt money.Amount) ledger.Credit {
		return ledger.Credit{Key: key, From: ledger.ClearingPackets, User: user, Amount: amt, Kind: ledger.KindCredit}
	}
	batch := []ledger.Credit{
		c("c1", 10, 100), c("c2", 11, 200), c("c3", 10, 300), c("c1", 10, 100), // repeat within the batch
		c("c2", 11, 999), // same key, other amount
		{Key: "bad", From: ledger.ClearingPackets, User: 0, Amount: 1, Kind: ledger.KindCredit},
		{Key: "bad2", From: 5, User: 10, Amount: 1, Kind: ledger.KindCredit},
		{Key: "bad3", From: ledger.ClearingPackets, User: 10, Amount: 1, Kind: "gift"},
	}
	out, err := l.ApplyCredits(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	want := []ledger.Outcome{ledger.Applied, ledger.Applied, ledger.Applied, ledger.Duplicate, ledger.Conflict, ledger.Rejected, ledger.Rejected, ledger.Rejected}
	for i := range want {
		if out[i] != want[i] {
			t.Errorf("credit %d outcome %v, want %v", i, out[i], want[i])
		}
	}
	// Redelivery of the same batch applies nothing; a changed one conflicts.
	out, err = l.ApplyCredits(ctx, []ledger.Credit{c("c1", 10, 100), c("c3", 10, 301), c("c4", 12, 50)})
	if err != nil {
		t.Fatal(err)
	}
	if out[0] != ledger.Duplicate || out[1] != ledger.Conflict || out[2] != ledger.Applied {
		t.Fatalf("redelivery outcomes %v", out)
	}
	wantWallet(t, l, 10, 400, 0)
	wantWallet(t, l, 11, 200, 0)
	wantWallet(t, l, 12, 50, 0)
	if b, _ := l.SystemBalance(ctx, ledger.ClearingPackets); b != 60000-650 {
		t.Fatalf("clearing:packets = %s", b)
	}
	// The statement shows each credit with its running balance.
	es, next, err := l.Statement(ctx, 10, 0, 10)
	if err != nil || next != 0 || len(es) != 2 || es[0].Amount != 300 || es[0].Balance != 400 || es[1].Balance != 100 {
		t.Fatalf("statement = %+v next %d, %v", es, next, err)
	}
	mustCheck(t, l)
}

func TestStatementAndBalanceAt(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := t.Context()
	deposit(t, l, 1, 1000)
	var mid time.Time
	for i := range 25 {
		if i == 10 {
			time.Sleep(5 * time.Millisecond) // postings carry the database clock
			mid = time.Now()
			time.Sleep(5 * time.Millisecond)
		}
		to := int64(2 + i%2)
		if _, err := l.Transfer(ctx, ledger.TransferRequest{Key: fmt.Sprint("s", i), From: 1, To: ledger.Account(to), Amount: 10}); err != nil {
			t.Fatal(err)
		}
	}
	var all []ledger.Entry
	cursor := int64(0)
	for {
		page, next, err := l.Statement(ctx, 1, cursor, 7)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if next == 0 {
			break
		}
		cursor = next
	}
	if len(all) != 26 {
		t.Fatalf("statement has %d entries, want 26", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].PostingID >= all[i-1].PostingID {
			t.Fatal("statement not newest first")
		}
		if all[i-1].Balance != all[i].Balance+all[i-1].Amount {
			t.Fatalf("running balance broken at %d: %+v then %+v", i, all[i], all[i-1])
		}
	}
	if all[0].Balance != 750 || all[len(all)-1].Kind != ledger.KindDeposit || !strings.HasPrefix(all[len(all)-1].Other, "external") {
		t.Fatalf("first/last entries %+v / %+v", all[0], all[len(all)-1])
	}
	if b, err := l.BalanceAt(ctx, 1, mid); err != nil || b != 900 {
		t.Fatalf("BalanceAt(mid) = %s, %v; want 9.00", b, err)
	}
	if b, err := l.BalanceAt(ctx, 1, time.Now().Add(-time.Hour)); err != nil || b != 0 {
		t.Fatalf("BalanceAt(before) = %s, %v", b, err)
	}
	if _, _, err := l.Statement(ctx, 1, 0, 0); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("limit 0 err = %v", err)
	}
}

// The check finds what is wrong when the books are tampered with.
func TestCheckFindsViolations(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := t.Context()
	deposit(t, l, 1, 1000)
	if _, err := l.Hold(ctx, ledger.HoldRequest{Key: "h", User: 1, Amount: 100}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, l)
	if _, err := l.DB().Exec(ctx, `UPDATE accounts SET balance = balance + 1, held = held + 5 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	v, err := l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rules := map[string]bool{}
	for _, x := range v {
		rules[x.Rule] = true
	}
	for _, r := range []string{"shard-sums-to-zero", "balance-equals-journal", "running-balance", "held-equals-open-holds"} {
		if !rules[r] {
			t.Errorf("check missed %s; got %v", r, v)
		}
	}
	// The schema refuses a negative available balance even if code tried.
	if _, err := l.DB().Exec(ctx, `UPDATE accounts SET held = balance + 1 WHERE id = 1`); err == nil {
		t.Fatal("schema accepted a negative available balance")
	}
}

// A posting that names an account that does not exist (the journal has no
// foreign keys: the writers prove the accounts, the check finds one that
// slipped through).
func TestCheckFindsOrphanPostings(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := t.Context()
	deposit(t, l, 1, 1000)
	mustCheck(t, l)
	if _, err := l.DB().Exec(ctx, `INSERT INTO postings (kind, ref, debit_account, credit_account, amount, debit_balance, credit_balance)
		VALUES ('transfer', 'orphan', 1, 987654321, 5, 995, 5)`); err != nil {
		t.Fatal(err)
	}
	v, err := l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, x := range v {
		found = found || x.Rule == "posting-accounts-exist"
	}
	if !found {
		t.Fatalf("check missed the orphan posting; got %v", v)
	}
}
