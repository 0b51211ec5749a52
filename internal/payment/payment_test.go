package payment_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"hongbao/internal/channel"
	"hongbao/internal/hbtest"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/payment"
	"hongbao/internal/pgtest"
	"hongbao/internal/shard"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

var (
	secret = []byte("merchant-secret-merchant-secret!")
	schema = pgtest.Schema{Name: "payment", Migrations: append(ledger.Migrations(), payment.Migrations())}
)

// rig is two ledger shards, a simulator served over HTTP and a notify
// endpoint in front of the service, like serve wires them.
type rig struct {
	t      *testing.T
	shards []*ledger.Ledger
	table  *shard.Table
	sim    *channel.Simulator
	ch     *channel.Client
	svc    *payment.Service
	o      payment.Options
	// notify is the service the notify endpoint calls (swapped by restarts).
	mu     sync.Mutex
	notify *payment.Service
}

func newRig(t *testing.T, k channel.Knobs) *rig {
	t.Helper()
	r := &rig{t: t}
	var err error
	if r.table, err = shard.NewTable(2); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		l, err := ledger.New(t.Context(), pgtest.NewDB(t, schema), ledger.Options{Shard: i, Stripes: 4})
		if err != nil {
			t.Fatal(err)
		}
		r.shards = append(r.shards, l)
	}
	notify := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		svc := r.notify
		r.mu.Unlock()
		if _, err := svc.Notify(req.Context(), req.Header, body); err != nil {
			w.WriteHeader(409)
			return
		}
		w.WriteHeader(204)
	}))
	r.sim = channel.NewSimulator(secret, k)
	srv := httptest.NewServer(r.sim.Handler())
	t.Cleanup(func() { srv.Close(); notify.Close() })
	r.ch = channel.NewClient(srv.URL, secret, notify.URL)
	r.o = payment.Options{Channel: r.ch, Secret: secret, Shards: r.shards, ShardOf: r.table.Of,
		QueryAfter: 10 * time.Millisecond, QueryCap: 40 * time.Millisecond, Lease: 200 * time.Millisecond}
	r.svc = r.start(r.o)
	return r
}

// start is a fresh process's service over the same databases and channel.
func (r *rig) start(o payment.Options) *payment.Service {
	svc, err := payment.New(o)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.notify = svc
	r.mu.Unlock()
	return svc
}

func (r *rig) ledger(user int64) *ledger.Ledger { return r.shards[r.table.Of(user)] }

func (r *rig) deposit(user int64, a money.Amount) {
	if _, err := r.ledger(user).Deposit(context.Background(), fmt.Sprintf("dep:%d:%d", user, a), user, a); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) wallet(user int64) ledger.Wallet {
	w, err := r.ledger(user).Wallet(context.Background(), user)
	if err != nil {
		r.t.Fatal(err)
	}
	return w
}

// finish steps the worker until the order is final.
func (r *rig) finish(svc *payment.Service, id int64) payment.Order {
	r.t.Helper()
	var o payment.Order
	hbtest.WaitFor(r.t, 10*time.Second, fmt.Sprintf("order %d final", id), func() bool {
		if _, err := svc.Step(context.Background(), 100); err != nil {
			r.t.Logf("step: %v", err)
		}
		var err error
		o, err = svc.Get(context.Background(), id)
		return err == nil && o.State.Final()
	})
	return o
}

// payer pays a pay order at its pay URL, as a client would.
func payer(t *testing.T, o payment.Order) {
	t.Helper()
	resp, err := http.Post(o.PayURL, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("pay %s: %d", o.PayURL, resp.StatusCode)
	}
}

// sound checks both shards' books and the channel money.
func (r *rig) sound() {
	r.t.Helper()
	for _, l := range r.shards {
		v, err := l.Check(context.Background())
		if err != nil || len(v) > 0 {
			r.t.Fatalf("ledger %d: %v %v", l.Shard(), v, err)
		}
	}
	v, err := r.svc.Check(context.Background())
	if err != nil || len(v) > 0 {
		r.t.Fatalf("channel money: %v %v", v, err)
	}
}

func (r *rig) topUp(svc *payment.Service, user int64, a money.Amount) (payment.Order, error) {
	return svc.CreateTopUp(context.Background(), mustNewID(r.t, svc, user), user, a)
}

func (r *rig) withdraw(svc *payment.Service, user int64, a money.Amount) (payment.Order, error) {
	return svc.CreateWithdrawal(context.Background(), mustNewID(r.t, svc, user), user, a)
}

func TestTopUpByCallbackOnce(t *testing.T) {
	r := newRig(t, channel.Knobs{DuplicateCallback: 1})
	o, err := r.topUp(r.svc, 7, 100_00)
	if err != nil {
		t.Fatal(err)
	}
	if o.State != payment.Pending || o.PayURL == "" {
		t.Fatalf("created: %+v", o)
	}
	if w := r.wallet(7); w.Balance != 0 || w.Incoming != 100_00 {
		t.Fatalf("before paying: %+v", w)
	}
	payer(t, o)
	hbtest.WaitFor(t, 5*time.Second, "credited by the callback", func() bool {
		got, _ := r.svc.Get(context.Background(), o.ID)
		return got.State == payment.Paid
	})
	time.Sleep(300 * time.Millisecond) // the duplicate callback lands too
	if w := r.wallet(7); w.Balance != 100_00 || w.Incoming != 0 {
		t.Fatalf("after two callbacks: %+v", w)
	}
	evs, err := r.svc.Events(context.Background(), o.ID)
	if err != nil || len(evs) != 3 || evs[2].To != payment.Paid {
		t.Fatalf("events: %+v %v", evs, err)
	}
	r.sound()
}

func TestTopUpCompletedByQuery(t *testing.T) {
	r := newRig(t, channel.Knobs{DropCallback: 1})
	o, err := r.topUp(r.svc, 8, 5_00)
	if err != nil {
		t.Fatal(err)
	}
	payer(t, o)
	if got := r.finish(r.svc, o.ID); got.State != payment.Paid || got.ChannelAt == nil {
		t.Fatalf("%+v", got)
	}
	if w := r.wallet(8); w.Balance != 5_00 {
		t.Fatalf("%+v", w)
	}
	r.sound()
}

func TestTopUpUnknownThenAskedAgain(t *testing.T) {
	r := newRig(t, channel.Knobs{LoseAnswer: 1})
	o, err := r.topUp(r.svc, 9, 3_00)
	if err != nil {
		t.Fatal(err)
	}
	if o.State != payment.Created {
		t.Fatalf("a lost answer must leave the order created: %+v", o)
	}
	r.sim.SetKnobs(channel.Knobs{AutoPay: time.Millisecond})
	hbtest.WaitFor(t, 5*time.Second, "pending", func() bool {
		_, _ = r.svc.Step(context.Background(), 10)
		got, _ := r.svc.Get(context.Background(), o.ID)
		return got.State == payment.Pending
	})
	// The channel had the order from the first (lost) answer; it was
	// never auto-paid since auto-pay was off then: pay it now.
	got, _ := r.svc.Get(context.Background(), o.ID)
	payer(t, got)
	if got := r.finish(r.svc, o.ID); got.State != payment.Paid {
		t.Fatalf("%+v", got)
	}
	if w := r.wallet(9); w.Balance != 3_00 {
		t.Fatalf("%+v", w)
	}
}

func TestTopUpClosedAtDeadline(t *testing.T) {
	r := newRig(t, channel.Knobs{})
	o := r.o
	o.TopUpTTL = 50 * time.Millisecond
	svc := r.start(o)
	ord, err := r.topUp(svc, 10, 4_00)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	if got := r.finish(svc, ord.ID); got.State != payment.Closed {
		t.Fatalf("%+v", got)
	}
	if w := r.wallet(10); w.Balance != 0 || w.Incoming != 0 {
		t.Fatalf("closed: %+v", w)
	}
	// The payer is too late: the channel refuses, nothing is credited.
	po, err := r.ch.QueryPay(context.Background(), ord.ChannelID())
	if err != nil || po.State != channel.PayClosed {
		t.Fatalf("%+v %v", po, err)
	}
	r.sound()
}

func TestTopUpPaidBeforeItCouldBeClosed(t *testing.T) {
	r := newRig(t, channel.Knobs{DropCallback: 1})
	o := r.o
	o.TopUpTTL = 50 * time.Millisecond
	o.QueryAfter, o.QueryCap = time.Hour, time.Hour // no query before the deadline
	svc := r.start(o)
	ord, err := r.topUp(svc, 11, 6_00)
	if err != nil {
		t.Fatal(err)
	}
	payer(t, ord) // paid, the callback lost
	time.Sleep(60 * time.Millisecond)
	o.QueryAfter, o.QueryCap = 10*time.Millisecond, 10*time.Millisecond
	svc = r.start(o)
	if _, err := r.shards[r.table.Of(11)].DB().Exec(context.Background(), `UPDATE channel_orders SET next_check = now()`); err != nil {
		t.Fatal(err)
	}
	if got := r.finish(svc, ord.ID); got.State != payment.Paid {
		t.Fatalf("closing a paid order must credit it: %+v", got)
	}
	if w := r.wallet(11); w.Balance != 6_00 {
		t.Fatalf("%+v", w)
	}
	r.sound()
}

func TestCallbacksForgedUnknownAndWrong(t *testing.T) {
	r := newRig(t, channel.Knobs{DropCallback: 1})
	o, err := r.topUp(r.svc, 12, 2_00)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(fmt.Sprintf(`{"id":"%d","amount":"2.00","state":"paid","paid_at":"%s"}`, o.ID, time.Now().UTC().Format(time.RFC3339Nano)))
	send := func(key, b []byte, at time.Time) error {
		h := http.Header{}
		channel.Sign(h, key, b, at)
		_, err := r.svc.Notify(context.Background(), h, b)
		return err
	}
	if err := send([]byte("another-secret-another-secret!!!"), body, time.Now()); !errors.Is(err, channel.ErrBadSignature) {
		t.Fatalf("forged: %v", err)
	}
	if err := send(secret, body, time.Now().Add(-time.Hour)); !errors.Is(err, channel.ErrBadSignature) {
		t.Fatalf("stale: %v", err)
	}
	if _, err := r.svc.Notify(context.Background(), http.Header{}, body); !errors.Is(err, channel.ErrBadSignature) {
		t.Fatalf("unsigned: %v", err)
	}
	wrong := []byte(fmt.Sprintf(`{"id":"%d","amount":"200.00","state":"paid"}`, o.ID))
	if err := send(secret, wrong, time.Now()); !errors.Is(err, payment.ErrAmountMismatch) {
		t.Fatalf("other amount: %v", err)
	}
	for _, id := range []string{"12345", "", "-1", "1e9", "99999999999999999999"} {
		b := []byte(fmt.Sprintf(`{"id":%q,"amount":"2.00","state":"paid"}`, id))
		if err := send(secret, b, time.Now()); !errors.Is(err, payment.ErrNotFound) {
			t.Fatalf("unknown order %q: %v", id, err)
		}
	}
	if err := send(secret, []byte("\x00{"), time.Now()); !errors.Is(err, payment.ErrInvalid) {
		t.Fatalf("bad body: %v", err)
	}
	if got, _ := r.svc.Get(context.Background(), o.ID); got.State != payment.Pending {
		t.Fatalf("nothing may change: %+v", got)
	}
	if w := r.wallet(12); w.Balance != 0 {
		t.Fatalf("%+v", w)
	}
	// The real callback (out of order: a "created" one first) credits once.
	created := []byte(fmt.Sprintf(`{"id":"%d","amount":"2.00","state":"created"}`, o.ID))
	if err := send(secret, created, time.Now()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := send(secret, body, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if w := r.wallet(12); w.Balance != 2_00 {
		t.Fatalf("%+v", w)
	}
	r.sound()
}

func TestWithdrawalOutcomes(t *testing.T) {
	cases := []struct {
		name  string
		knobs channel.Knobs
		// then, when set, is what the channel does later
		resolve   string
		wantState payment.State
		paidOut   int
	}{
		{"success", channel.Knobs{}, "", payment.Succeeded, 1},
		{"failure", channel.Knobs{PayoutOutcome: channel.PayoutFailed}, "", payment.Failed, 0},
		{"processing then success", channel.Knobs{PayoutOutcome: channel.PayoutProcessing}, channel.PayoutSucceeded, payment.Succeeded, 1},
		{"processing then failure", channel.Knobs{PayoutOutcome: channel.PayoutProcessing}, channel.PayoutFailed, payment.Failed, 0},
		{"answer lost, paid", channel.Knobs{LoseAnswer: 1}, "", payment.Succeeded, 1},
		{"5xx, never arrived", channel.Knobs{Fail5xx: 1}, "", payment.Succeeded, 1},
		{"system error", channel.Knobs{SystemError: 1}, "", payment.Succeeded, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.knobs)
			r.deposit(20, 100_00)
			o, err := r.withdraw(r.svc, 20, 30_00)
			if err != nil {
				t.Fatal(err)
			}
			if w := r.wallet(20); !o.State.Final() && (w.Held != 30_00 || w.Balance != 100_00) {
				t.Fatalf("unknown must keep the hold: %+v %+v", o, w)
			}
			if c.resolve != "" {
				if o.State != payment.Unknown {
					t.Fatalf("processing is unknown: %+v", o)
				}
				var p channel.Payout
				if err := signedPost(r.ch, "/control/payout/"+o.ChannelID(), `{"State":"`+c.resolve+`"}`, &p); err != nil {
					t.Fatal(err)
				}
			}
			r.sim.SetKnobs(channel.Knobs{PayoutOutcome: c.knobs.PayoutOutcome})
			if c.knobs.PayoutOutcome == channel.PayoutProcessing {
				r.sim.SetKnobs(channel.Knobs{})
			}
			got := r.finish(r.svc, o.ID)
			if got.State != c.wantState {
				t.Fatalf("%+v", got)
			}
			want := money.Amount(100_00)
			if c.wantState == payment.Succeeded {
				want = 70_00
			}
			if w := r.wallet(20); w.Balance != want || w.Held != 0 {
				t.Fatalf("wallet %+v, want balance %s and nothing held", w, want)
			}
			// Asking again changes nothing: never paid out twice.
			for range 3 {
				_, _ = r.svc.Step(context.Background(), 10)
				if _, err := r.svc.CreateWithdrawal(context.Background(), o.ID, 20, 30_00); err != nil {
					t.Fatal(err)
				}
			}
			if n := r.sim.PaidOut(); n != c.paidOut {
				t.Fatalf("paid out %d times, want %d", n, c.paidOut)
			}
			r.sound()
		})
	}
}

func TestWithdrawalLimits(t *testing.T) {
	r := newRig(t, channel.Knobs{PayoutOutcome: channel.PayoutFailed})
	o := r.o
	o.Limits = payment.Limits{TopUpPerDay: 50_00, WithdrawalPerDay: 100_00, WithdrawalsPerDay: 2}
	svc := r.start(o)
	r.deposit(30, 1000_00)
	if _, err := r.withdraw(svc, 30, 101_00); !errors.Is(err, payment.ErrDailyLimit) {
		t.Fatalf("above the day's amount: %v", err)
	}
	if _, err := r.withdraw(svc, 30, 5000_00); !errors.Is(err, ledger.ErrInsufficientFunds) && !errors.Is(err, payment.ErrDailyLimit) {
		t.Fatalf("%v", err)
	}
	// Failed withdrawals give their share back.
	for range 3 {
		if got, err := r.withdraw(svc, 30, 60_00); err != nil || got.State != payment.Failed {
			t.Fatalf("%+v %v", got, err)
		}
	}
	r.sim.SetKnobs(channel.Knobs{})
	if _, err := r.withdraw(svc, 30, 60_00); err != nil {
		t.Fatal(err)
	}
	if _, err := r.withdraw(svc, 30, 50_00); !errors.Is(err, payment.ErrDailyLimit) {
		t.Fatalf("60 + 50 > 100: %v", err)
	}
	if _, err := r.withdraw(svc, 30, 40_00); err != nil {
		t.Fatal(err)
	}
	if _, err := r.withdraw(svc, 30, 1); !errors.Is(err, payment.ErrDailyLimit) {
		t.Fatalf("a third withdrawal: %v", err)
	}
	if _, err := r.withdraw(svc, 31, 1_00); !errors.Is(err, ledger.ErrInsufficientFunds) {
		t.Fatalf("an empty wallet: %v", err)
	}
	if _, err := r.topUp(svc, 30, 51_00); !errors.Is(err, payment.ErrDailyLimit) {
		t.Fatalf("top-up above the day's amount: %v", err)
	}
	if w := r.wallet(30); w.Balance != 900_00 || w.Held != 0 {
		t.Fatalf("%+v", w)
	}
	r.sound()
}

// TestConcurrentWorkersPayOnce: many orders through a channel that loses
// answers, driven by four workers at once (four nodes): each withdrawal is
// paid out once, each top-up credited once.
func TestConcurrentWorkersPayOnce(t *testing.T) {
	r := newRig(t, channel.Knobs{LoseAnswer: 0.5, Fail5xx: 0.2, AutoPay: time.Millisecond, DropCallback: 0.5, DuplicateCallback: 0.5})
	const users = 20
	var ids []int64
	for u := int64(1); u <= users; u++ {
		r.deposit(u, 10_00)
		w, err := r.withdraw(r.svc, u, 4_00)
		if err != nil {
			t.Fatal(err)
		}
		tu, err := r.topUp(r.svc, u, 1_00)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, w.ID, tu.ID)
	}
	r.sim.SetKnobs(channel.Knobs{LoseAnswer: 0.3, AutoPay: time.Millisecond, DropCallback: 0.5})
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for range 4 {
		svc := r.start(r.o)
		wg.Go(func() { svc.Run(ctx, 5*time.Millisecond) })
	}
	hbtest.WaitFor(t, 20*time.Second, "all final", func() bool {
		for _, id := range ids {
			o, _ := r.svc.Get(context.Background(), id)
			if !o.State.Final() {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()
	if n := r.sim.PaidOut(); n != users {
		t.Fatalf("paid out %d, want %d", n, users)
	}
	for u := int64(1); u <= users; u++ {
		if w := r.wallet(u); w.Balance != 7_00 || w.Held != 0 || w.Incoming != 0 {
			t.Fatalf("user %d: %+v", u, w)
		}
	}
	r.sound()
}

func signedPost(c *channel.Client, path, body string, out any) error {
	req, err := http.NewRequest("POST", c.URL+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	channel.Sign(req.Header, c.Secret, []byte(body), time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %d", path, resp.StatusCode)
	}
	return nil
}

func mustNewID(t testing.TB, svc *payment.Service, user int64) int64 {
	t.Helper()
	id, err := svc.NewID(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
