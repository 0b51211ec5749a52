package recon_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"hongbao/internal/channel"
	"hongbao/internal/flow"
	"hongbao/internal/hbtest"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/payment"
	"hongbao/internal/pgtest"
	"hongbao/internal/postgres"
	"hongbao/internal/recon"
	"hongbao/internal/shard"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

var secret = []byte("merchant-secret-merchant-secret!")

func post(t *testing.T, c *channel.Client, path, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", c.URL+path, strings.NewReader(body))
	channel.Sign(req.Header, c.Secret, []byte(body), time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d", path, resp.StatusCode)
	}
}

// TestDayWithEveryDiscrepancy: a day with every kind of difference is
// found and classified exactly; the safe repairs are applied once (a second
// run changes nothing); with the rest resolved by an operator the day is sound.
func TestDayWithEveryDiscrepancy(t *testing.T) {
	ctx := context.Background()
	table, _ := shard.NewTable(2)
	ls := &flow.Ledgers{Table: table}
	schema := pgtest.Schema{Name: "recon-ledger", Migrations: append(ledger.Migrations(), payment.Migrations())}
	for i := range 2 {
		l, err := ledger.New(ctx, pgtest.NewDB(t, schema), ledger.Options{Shard: i, Stripes: 2})
		if err != nil {
			t.Fatal(err)
		}
		ls.Shards = append(ls.Shards, l)
	}
	var svc *payment.Service
	notify := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := svc.Notify(r.Context(), r.Header, body); err != nil {
			w.WriteHeader(409)
			return
		}
		w.WriteHeader(204)
	}))
	sim := channel.NewSimulator(secret, channel.Knobs{})
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(func() { srv.Close(); notify.Close() })
	ch := channel.NewClient(srv.URL, secret, notify.URL)
	var err error
	svc, err = payment.New(payment.Options{Channel: ch, Secret: secret, Shards: ls.Shards, ShardOf: table.Of, QueryAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rc := recon.New(recon.Options{Channel: ch, Payments: svc, Ledgers: ls,
		DB: pgtest.NewDB(t, pgtest.Schema{Name: "recon", Migrations: [][]postgres.Migration{recon.Migrations()}})})

	wallet := func(u int64) ledger.Wallet {
		w, err := ls.For(u).Wallet(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	pay := func(o payment.Order) {
		resp, err := http.Post(o.PayURL, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	paidTopUp := func(u int64, a money.Amount) payment.Order {
		o, err := svc.CreateTopUp(ctx, mustNewID(t, svc, u), u, a)
		if err != nil {
			t.Fatal(err)
		}
		pay(o)
		hbtest.WaitFor(t, 5*time.Second, "credited", func() bool { got, _ := svc.Get(ctx, o.ID); return got.State == payment.Paid })
		return o
	}
	a := paidTopUp(1, 10_00) // matches
	sim.SetKnobs(channel.Knobs{DropCallback: 1})
	b, err := svc.CreateTopUp(ctx, mustNewID(t, svc, 2), 2, 20_00)
	if err != nil {
		t.Fatal(err)
	}
	pay(b) // paid at the channel; we never heard
	sim.SetKnobs(channel.Knobs{})
	c := paidTopUp(3, 30_00) // the channel's statement forgets it
	d := paidTopUp(4, 40_00) // the channel's statement says another amount
	for _, u := range []int64{5, 6, 7} {
		if _, err := ls.For(u).Deposit(ctx, fmt.Sprint("dep", u), u, 100_00); err != nil {
			t.Fatal(err)
		}
	}
	e, err := svc.CreateWithdrawal(ctx, mustNewID(t, svc, 5), 5, 50_00) // succeeds, then reversed
	if err != nil || e.State != payment.Succeeded {
		t.Fatalf("%+v %v", e, err)
	}
	sim.SetKnobs(channel.Knobs{PayoutOutcome: channel.PayoutProcessing})
	f, _ := svc.CreateWithdrawal(ctx, mustNewID(t, svc, 6), 6, 60_00) // paid at the channel later; we never asked
	g, _ := svc.CreateWithdrawal(ctx, mustNewID(t, svc, 7), 7, 70_00) // failed at the channel later
	if f.State != payment.Unknown || g.State != payment.Unknown {
		t.Fatalf("%+v %+v", f, g)
	}
	post(t, ch, "/control/payout/"+f.ChannelID(), `{"State":"succeeded"}`)
	post(t, ch, "/control/payout/"+g.ChannelID(), `{"State":"failed"}`)
	now := time.Now().UTC()
	at := now.Format(time.RFC3339Nano)
	post(t, ch, "/control/statement", fmt.Sprintf(`{"kind":"pay","id":"%d","amount":"30.00","state":"absent","at":%q}`, c.ID, at))
	post(t, ch, "/control/statement", fmt.Sprintf(`{"kind":"pay","id":"%d","amount":"41.00","state":"paid","at":%q}`, d.ID, at))
	post(t, ch, "/control/statement", fmt.Sprintf(`{"kind":"pay","id":"777","amount":"7.77","state":"paid","at":%q}`, at))
	post(t, ch, "/control/statement", fmt.Sprintf(`{"kind":"payout","id":"%d","amount":"50.00","state":"reversed","at":%q}`, e.ID, at))

	day := now.Truncate(24 * time.Hour)
	rep, err := rc.Run(ctx, day)
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		kind, order string
		repaired    bool
	}
	got := map[key]bool{}
	for _, x := range rep.Differences {
		got[key{x.Kind, x.Order, x.Repaired}] = true
	}
	want := map[key]bool{
		{recon.MissingHere, b.ChannelID(), true}:        true,
		{recon.MissingAtChannel, c.ChannelID(), false}:  true,
		{recon.AmountDiffers, d.ChannelID(), false}:     true,
		{recon.UnknownOrder, "777", false}:              true,
		{recon.PayoutStateDiffers, e.ChannelID(), true}: true,
		{recon.MissingHere, f.ChannelID(), true}:        true,
		{recon.PayoutStateDiffers, g.ChannelID(), true}: true,
	}
	if len(got) != len(want) || len(rep.Differences) != len(want) {
		t.Fatalf("differences %+v", rep.Differences)
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("missing %+v in %+v", k, rep.Differences)
		}
	}
	if rep.Repaired != 4 || rep.Unresolved != 3 || rep.Sound {
		t.Fatalf("repaired %d unresolved %d sound %v", rep.Repaired, rep.Unresolved, rep.Sound)
	}
	for _, c := range rep.Checks {
		if !c.OK {
			t.Fatalf("check %+v", c)
		}
	}
	wallets := map[int64]money.Amount{1: 10_00, 2: 20_00, 3: 30_00, 4: 40_00, 5: 100_00, 6: 40_00, 7: 100_00}
	check := func() {
		t.Helper()
		for u, w := range wallets {
			if got := wallet(u); got.Balance != w || got.Held != 0 || got.Incoming != 0 {
				t.Fatalf("user %d: %+v, want %s", u, got, w)
			}
		}
	}
	check()

	// Again: the repairs are not applied twice; the rest stays.
	rep2, err := rc.Run(ctx, day)
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Repaired != 0 || rep2.Unresolved != 3 || len(rep2.Differences) != 3 {
		t.Fatalf("second run: %+v", rep2)
	}
	check()

	// An operator resolves the rest; the day is sound.
	for _, x := range rep2.Differences {
		if err := rc.Resolve(ctx, day, x.Kind, x.Order, "checked with the channel by hand"); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.Resolve(ctx, day, "nonsense", "1", "x"); err == nil {
		t.Fatal("an unknown kind must be refused")
	}
	// A resolution ahead of a difference no report lists could hide it.
	if err := rc.Resolve(ctx, day, recon.MissingHere, a.ChannelID(), "x"); !errors.Is(err, recon.ErrNoDifference) {
		t.Fatalf("a resolution of a clean order: %v", err)
	}
	if err := rc.Resolve(ctx, day.AddDate(0, 0, -1), recon.UnknownOrder, "777", "x"); !errors.Is(err, recon.ErrNoReport) {
		t.Fatalf("a resolution of a day without a report: %v", err)
	}
	for _, bad := range []string{"0000-01-01", "1999-12-31", time.Now().UTC().AddDate(0, 0, 1).Format("2006-01-02"), "2026-02-30", "2026-1-1"} {
		if _, err := recon.ParseDay(bad); !errors.Is(err, recon.ErrInvalid) {
			t.Fatalf("day %q: %v", bad, err)
		}
	}
	if _, err := rc.Run(ctx, day.AddDate(0, 0, 2)); !errors.Is(err, recon.ErrInvalid) {
		t.Fatalf("a future day: %v", err)
	}
	rep3, err := rc.Run(ctx, day)
	if err != nil || !rep3.Sound || rep3.Unresolved != 0 {
		t.Fatalf("%+v %v", rep3, err)
	}
	last, err := rc.Latest(ctx, day)
	if err != nil || last.ID != rep3.ID || !last.Sound {
		t.Fatalf("%+v %v", last, err)
	}
	if _, err := rc.Latest(ctx, day.AddDate(0, 0, -3)); err != recon.ErrNoReport {
		t.Fatalf("%v", err)
	}
}

func mustNewID(t testing.TB, svc *payment.Service, user int64) int64 {
	t.Helper()
	id, err := svc.NewID(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
