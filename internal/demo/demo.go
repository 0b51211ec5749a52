package demo

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"hongbao/internal/app"
	"hongbao/internal/channel"
	"hongbao/internal/client"
	"hongbao/internal/dtx"
	"hongbao/internal/events"
	"hongbao/internal/group"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/payment"
	"hongbao/internal/recon"
)

func Main(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var cfg app.Config
	cfg.Bind(fs, "")
	users := fs.Int("users", 1000, "number of users (at least 200)")
	sets := fs.Int("packet-sets", 2, "number of packet sets")
	keep := fs.Bool("keep", false, "keep the private cluster's folder afterwards")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	dir := cfg.DataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "hongbao-demo-")
		if err != nil {
			return err
		}
		_ = os.Chmod(d, 0o755) // the server may run as the postgres user
		dir = d
		if cfg.DatabaseURL == "" {
			cfg.DataDir = d
		}
		if !*keep {
			defer os.RemoveAll(d)
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if *users < 200 {
		return fmt.Errorf("--users %d: the demo needs at least 200", *users)
	}
	start := time.Now()
	fmt.Fprintf(out, "Hongbao demo: New Year's Eve for %d users, %d ledger shards, %d packet sets\n", *users, cfg.LedgerShards, *sets)
	if cfg.DatabaseURL == "" {
		fmt.Fprintf(out, "  private PostgreSQL in %s (fsync on: %v), NATS JetStream in process\n", cfg.DataDir, cfg.Durable)
	}
	dbs, err := app.OpenDatabases(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer dbs.Close()
	limits := packet.DefaultLimits
	// The payment channel: the simulator on a loopback port, unreliable
	// for part of the demo.
	chSecret := make([]byte, 32)
	_, _ = rand.Read(chSecret)
	sim, simURL, stopSim, err := app.StartSimulator(chSecret, channel.Knobs{})
	if err != nil {
		return err
	}
	defer stopSim()
	sys, err := app.StartNode(ctx, dbs.Open, app.NodeOptions{LedgerShards: cfg.LedgerShards, PacketSets: *sets, Limits: limits,
		BusDir: filepath.Join(dir, "nats"), Grace: 2 * time.Second, Every: 200 * time.Millisecond, Logger: log,
		Channel: channel.NewClient(simURL, chSecret, ""), ChannelSecret: chSecret,
		Payments: payment.Options{QueryAfter: 200 * time.Millisecond, QueryCap: time.Second}})
	if err != nil {
		return err
	}
	defer sys.Close()
	// The real HTTP API on a loopback port, with a fresh signing secret.
	url, secret, stop, err := app.LocalAPI(sys, log)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(out, "  HTTP API on %s; everything below goes through it\n", url)
	d := &demo{sys: sys, sim: sim, out: out, users: int64(*users), Users: client.NewUsers(url, secret, 32)}
	if err := d.run(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "done in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

type demo struct {
	*client.Users
	sys       *app.Node
	sim       *channel.Simulator
	out       io.Writer
	users     int64
	deposited money.Amount
	mu        sync.Mutex
	packets   []int64
}

func (d *demo) step(format string, args ...any) { fmt.Fprintf(d.out, "  "+format+"\n", args...) }

// parallel runs f for 0..n-1 on a few goroutines with a progress bar.
func (d *demo) parallel(label string, n int, f func(i int) error) error {
	var done atomic.Int64
	var first error
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
				done.Add(1)
			}
		})
	}
	stop := make(chan struct{})
	var bar sync.WaitGroup
	bar.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			d.bar(label, done.Load(), int64(n))
			select {
			case <-stop:
				d.bar(label, done.Load(), int64(n))
				fmt.Fprintln(d.out)
				return
			case <-t.C:
			}
		}
	})
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(stop)
	bar.Wait()
	return first
}

func (d *demo) bar(label string, done, total int64) {
	const width = 30
	filled := int(done * width / max(total, 1))
	b := make([]byte, width)
	for i := range b {
		b[i] = '.'
		if i < filled {
			b[i] = '#'
		}
	}
	fmt.Fprintf(d.out, "\r  %-34s [%s] %d/%d", label, b, done, total)
}

type txAnswer struct {
	GID     string `json:"gid"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
}

func (d *demo) run(ctx context.Context) error {
	const funding = money.Amount(500_00)
	// An application's webhook: every red packet sent and finished, pushed
	// to a receiver on a loopback port that checks each signature.
	hook, err := startReceiver()
	if err != nil {
		return err
	}
	defer hook.stop()
	if _, err := d.Call(ctx, "POST", "/v1/admin/webhooks", 0, "", map[string]any{"url": hook.url, "secret": hook.secret,
		"kinds": []string{events.PacketSent, events.PacketFinished}}, nil); err != nil {
		return err
	}
	// 1. Everyone gets a red envelope budget (admin deposits).
	if err := d.parallel("funding wallets", int(d.users), func(i int) error {
		u := int64(i + 1)
		_, err := d.Call(ctx, "POST", "/v1/admin/deposits", 0, fmt.Sprint("fund-", u), map[string]any{"user": u, "amount": funding}, nil)
		return err
	}); err != nil {
		return err
	}
	d.deposited = funding * money.Amount(d.users)
	d.step("funded %d wallets with %s each (%s in all) through POST /v1/admin/deposits", d.users, funding, d.deposited)

	// 2. Transfers: same shard in one transaction, across shards as TCC.
	var cross, local atomic.Int64
	if err := d.parallel("transfers (TCC across shards)", 400, func(i int) error {
		from, to := int64(1+i%int(d.users)), int64(1+(i*7+3)%int(d.users))
		if from == to {
			return nil
		}
		var a txAnswer
		if _, err := d.Call(ctx, "POST", "/v1/transfers", from, fmt.Sprint("t-", i), map[string]any{"to": to, "amount": money.Amount(100 + i)}, &a); err != nil {
			return err
		}
		if a.Outcome != string(dtx.OutcomeCommitted) {
			return fmt.Errorf("transfer %d: %s %s", i, a.Outcome, a.Reason)
		}
		if d.sys.Ledgers.Table.Of(from) == d.sys.Ledgers.Table.Of(to) {
			local.Add(1)
		} else {
			cross.Add(1)
		}
		return nil
	}); err != nil {
		return err
	}
	d.step("%d transfers: %d across shards (TCC), %d within a shard", cross.Load()+local.Load(), cross.Load(), local.Load())

	// 3. The family group everyone joins, and a paid group with two seats.
	var family, paid group.Group
	if _, err := d.Call(ctx, "POST", "/v1/groups", 1, "family", map[string]any{"capacity": d.users, "fee": "0"}, &family); err != nil {
		return err
	}
	if err := d.parallel("everyone joins the family group", int(d.users-1), func(i int) error {
		_, err := d.Call(ctx, "POST", fmt.Sprintf("/v1/groups/%d/join", family.ID), int64(i+2), "join", nil, nil)
		return err
	}); err != nil {
		return err
	}
	owner := d.users
	if _, err := d.Call(ctx, "POST", "/v1/groups", owner, "vip", map[string]any{"capacity": 3, "fee": "88.00"}, &paid); err != nil {
		return err
	}
	var joined, refused int
	for _, u := range []int64{2, 3, 4} {
		var a txAnswer
		status, err := d.Call(ctx, "POST", fmt.Sprintf("/v1/groups/%d/join", paid.ID), u, "vip", nil, &a)
		switch {
		case err == nil:
			joined++
		case status == 409:
			refused++
			d.step("paid entry of user %d refused and refunded: %v", u, err)
		default:
			return err
		}
	}
	d.step("paid group (fee 88.00, 3 seats): %d joined and paid the owner, %d refused (group full) and refunded", joined, refused)

	// 4. 1:1 packets.
	if err := d.parallel("1:1 packets", 50, func(i int) error {
		from, to := int64(10+i), int64(100+i)
		p, err := d.send(ctx, from, fmt.Sprint("single-", i), map[string]any{"kind": "single", "receiver": to, "amount": "5.20", "greeting": "我爱你"})
		if err != nil {
			return err
		}
		return d.grab(ctx, p.ID, to, nil)
	}); err != nil {
		return err
	}

	// 5. The hot packet: the whole family grabs at once.
	shares := int(min(300, d.users/3))
	hot, err := d.send(ctx, 1, "hot", map[string]any{"kind": "lucky", "group": family.ID, "amount": "388.88", "shares": shares, "greeting": "新年快乐"})
	if err != nil {
		return err
	}
	var soldOut, busy atomic.Int64
	attempts := 3 * int(d.users)
	if err := d.parallel("grab storm on one lucky packet", attempts, func(i int) error {
		return d.grab(ctx, hot.ID, int64(2+i%int(d.users-1)), func(status int) bool {
			switch status {
			case 409:
				soldOut.Add(1)
				return true
			case 429:
				busy.Add(1)
				time.Sleep(time.Millisecond)
			}
			return false
		})
	}); err != nil {
		return err
	}
	det, err := d.detail(ctx, hot.ID)
	if err != nil {
		return err
	}
	if det.Best == nil || len(det.Claims) != hot.Shares {
		return fmt.Errorf("hot packet: %d claims of %d shares, state %s", len(det.Claims), hot.Shares, det.Packet.State)
	}
	d.step("lucky packet %s in %d shares: %d grab requests, %d claims (repeats answered with the same claim), %d told sold out, %d told busy and retried; best luck %s to user %d",
		hot.Amount, hot.Shares, attempts, len(det.Claims), soldOut.Load(), busy.Load(), det.Best.Amount, det.Best.User)
	if err := d.conversation(ctx, family.ID, hot.ID, len(det.Claims)); err != nil {
		return err
	}

	// 6. An equal packet and packets that expire half grabbed.
	eq, err := d.send(ctx, 2, "equal", map[string]any{"kind": "equal", "group": family.ID, "amount": "100.00", "shares": 7})
	if err != nil {
		return err
	}
	for u := int64(3); u < 10; u++ {
		if err := d.grab(ctx, eq.ID, u, nil); err != nil {
			return err
		}
	}
	var expiring []int64
	for i := range 5 {
		p, err := d.send(ctx, int64(20+i), fmt.Sprint("expiring-", i), map[string]any{"kind": "lucky", "group": family.ID, "amount": "50.00", "shares": 10, "expires_in_seconds": 2})
		if err != nil {
			return err
		}
		expiring = append(expiring, p.ID)
		for u := int64(30); u < 34; u++ {
			if err := d.grab(ctx, p.ID, u, nil); err != nil {
				return err
			}
		}
	}
	d.step("an equal packet of 100.00 in 7 shares; 5 packets of 50.00 grabbed 4 of 10 shares, expiring in 2 s")

	// 7. Money in and out through a payment channel that loses answers,
	// fails, answers "system error" and drops or repeats callbacks.
	if err := d.channel(ctx); err != nil {
		return err
	}

	// 8. Wait for the credits and the refunds, then reconcile.
	deadline := time.Now().Add(60 * time.Second)
	for {
		pending, refunded, err := d.outstanding(ctx, expiring)
		if err != nil {
			return err
		}
		d.bar("credits and refunds landing", int64(len(d.packets)-pending), int64(len(d.packets)))
		if pending == 0 && refunded == len(expiring) {
			fmt.Fprintln(d.out)
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(d.out)
			return fmt.Errorf("%d packets still have claims not credited after a minute", pending)
		}
		time.Sleep(200 * time.Millisecond)
	}
	want := 0
	for _, id := range d.packets {
		det, err := d.detail(ctx, id)
		if err != nil {
			return err
		}
		want++ // sent
		if det.Packet.State == packet.StateFinished {
			want++
		}
	}
	if err := d.webhooks(ctx, hook, want); err != nil {
		return err
	}
	return d.reconcile(ctx)
}

// channel tops up and withdraws through the API while the channel is
// unreliable, then waits until every order is final.
func (d *demo) channel(ctx context.Context) error {
	d.sim.SetKnobs(channel.Knobs{LoseAnswer: 0.2, Fail5xx: 0.1, SystemError: 0.1, DropCallback: 0.3, DuplicateCallback: 0.3})
	const topUps, topUp = 100, money.Amount(100_00)
	var unknown atomic.Int64
	var orders []string
	var mu sync.Mutex
	if err := d.parallel("top-ups (unreliable channel)", topUps, func(i int) error {
		u := int64(1 + i)
		var o payment.Order
		// 202: the channel's answer was lost; the same key asks again.
		for attempt := 0; ; attempt++ {
			status, err := d.Call(ctx, "POST", "/v1/topups", u, "topup", map[string]any{"amount": topUp}, &o)
			if err != nil {
				return err
			}
			if status == 201 {
				break
			}
			unknown.Add(1)
			if attempt > 50 {
				return fmt.Errorf("top-up of user %d: still unknown", u)
			}
			time.Sleep(100 * time.Millisecond)
		}
		mu.Lock()
		orders = append(orders, "/v1/topups/"+o.ChannelID())
		mu.Unlock()
		resp, err := http.Post(o.PayURL, "application/json", nil) // the payer pays
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}); err != nil {
		return err
	}
	d.sim.SetKnobs(channel.Knobs{LoseAnswer: 0.3, Fail5xx: 0.1, SystemError: 0.1})
	const withdrawals, withdrawal = 60, money.Amount(30_00)
	var pendingW atomic.Int64
	if err := d.parallel("withdrawals (unreliable channel)", withdrawals, func(i int) error {
		var o payment.Order
		status, err := d.Call(ctx, "POST", "/v1/withdrawals", int64(101+i), "withdraw", map[string]any{"amount": withdrawal}, &o)
		if status == 202 {
			pendingW.Add(1)
		}
		mu.Lock()
		orders = append(orders, "/v1/withdrawals/"+o.ChannelID())
		mu.Unlock()
		return err
	}); err != nil {
		return err
	}
	// The bank refuses the last ten payouts.
	d.sim.SetKnobs(channel.Knobs{PayoutOutcome: channel.PayoutFailed})
	for i := range 10 {
		var o payment.Order
		if _, err := d.Call(ctx, "POST", "/v1/withdrawals", int64(161+i), "withdraw", map[string]any{"amount": withdrawal}, &o); err != nil {
			return err
		}
		orders = append(orders, "/v1/withdrawals/"+o.ChannelID())
	}
	d.sim.SetKnobs(channel.Knobs{})
	deadline := time.Now().Add(60 * time.Second)
	var paid, succeeded, failed int
	for {
		paid, succeeded, failed = 0, 0, 0
		open := 0
		for _, path := range orders {
			var det struct{ Order payment.Order }
			if _, err := d.Call(ctx, "GET", path, 0, "", nil, &det); err != nil {
				return err
			}
			switch det.Order.State {
			case payment.Paid:
				paid++
			case payment.Succeeded:
				succeeded++
			case payment.Failed:
				failed++
			default:
				open++
			}
		}
		d.bar("orders final (callbacks or queries)", int64(len(orders)-open), int64(len(orders)))
		if open == 0 {
			fmt.Fprintln(d.out)
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(d.out)
			return fmt.Errorf("%d channel orders still not final after a minute", open)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := d.sim.PaidOut(); n != succeeded {
		return fmt.Errorf("the channel paid out %d times for %d withdrawals that succeeded", n, succeeded)
	}
	d.deposited += money.Amount(paid)*topUp - money.Amount(succeeded)*withdrawal
	d.step("%d top-ups of %s paid and credited once (%d answers lost and asked again with the same key; dropped callbacks completed by queries)",
		paid, topUp, unknown.Load())
	d.step("%d withdrawals of %s paid out once (%d answered 202 unknown, then settled by query), %d refused by the bank and released",
		succeeded, withdrawal, pendingW.Load(), failed)
	return nil
}

// send sends a packet as user through the API and insists that it went out.
func (d *demo) send(ctx context.Context, user int64, key string, body map[string]any) (packet.Packet, error) {
	var p packet.Packet
	if _, err := d.Call(ctx, "POST", "/v1/packets", user, key, body, &p); err != nil {
		return p, err
	}
	d.addPacket(p.ID)
	return p, nil
}

// grab grabs as user; retry decides, for an error status, whether to stop
// quietly (true) or try again (false). Without it a 429 (busy, or a packet
// whose send is still confirming: its sender may have heard 202) is tried
// again after a pause, as its Retry-After asks, and any other error is
// returned.
func (d *demo) grab(ctx context.Context, id, user int64, retry func(status int) bool) error {
	for {
		status, err := d.Call(ctx, "POST", fmt.Sprintf("/v1/packets/%d/grab", id), user, "grab", nil, nil)
		if err == nil {
			return nil
		}
		if retry == nil && status == http.StatusTooManyRequests {
			select {
			case <-time.After(50 * time.Millisecond):
				continue
			case <-ctx.Done():
				return err
			}
		}
		if retry == nil || status == 0 || status >= 500 {
			return err
		}
		if retry(status) {
			return nil
		}
	}
}

func (d *demo) addPacket(id int64) {
	d.mu.Lock()
	d.packets = append(d.packets, id)
	d.mu.Unlock()
}

func (d *demo) detail(ctx context.Context, id int64) (packet.Detail, error) {
	var det packet.Detail
	_, err := d.Call(ctx, "GET", fmt.Sprintf("/v1/packets/%d", id), 0, "", nil, &det) // as an operator
	return det, err
}

// outstanding counts packets with a claim not yet credited, and expiring
// packets whose refund has been applied.
func (d *demo) outstanding(ctx context.Context, expiring []int64) (pending, refunded int, err error) {
	for _, id := range d.packets {
		det, err := d.detail(ctx, id)
		if err != nil {
			return 0, 0, err
		}
		for _, c := range det.Claims {
			if !c.Credited {
				pending++
				break
			}
		}
	}
	for _, id := range expiring {
		det, err := d.detail(ctx, id)
		if err != nil {
			return 0, 0, err
		}
		if det.Packet.State != packet.StateExpired {
			continue
		}
		key := packet.RefundMessage(packet.Refund{PacketID: id, Sender: det.Packet.Sender}).Key
		got, err := d.sys.Ledgers.For(det.Packet.Sender).Applied(ctx, []string{key})
		if err != nil {
			return 0, 0, err
		}
		if got[key] {
			refunded++
		}
	}
	return pending, refunded, nil
}

// reconcile proves the books: every shard's invariants, every packet
// balanced, every claim credited once, the clearing accounts netting to
// the escrow of live packets, and all money accounted for.
func (d *demo) reconcile(ctx context.Context) error {
	sys := d.sys
	violations, err := sys.Ledgers.Check(ctx)
	if err != nil {
		return err
	}
	var claims, credited int
	var escrow money.Amount
	for _, set := range sys.Sets {
		v, err := set.Check(ctx)
		if err != nil {
			return err
		}
		violations = append(violations, v...)
	}
	for _, id := range d.packets {
		det, err := d.detail(ctx, id)
		if err != nil {
			return err
		}
		claims += len(det.Claims)
		for _, c := range det.Claims {
			if c.Credited {
				credited++
			}
		}
		if det.Packet.State == packet.StateActive {
			escrow += det.Packet.RemainingAmount
		}
	}
	if credited != claims {
		violations = append(violations, fmt.Sprintf("%d of %d claims credited", credited, claims))
	}
	sum := func(a ledger.Account) money.Amount {
		var t money.Amount
		for _, l := range sys.Ledgers.Shards {
			b, err := l.SystemBalance(ctx, a)
			if err != nil {
				violations = append(violations, err.Error())
			}
			t += b
		}
		return t
	}
	if got := sum(ledger.ClearingPackets); got != escrow {
		violations = append(violations, fmt.Sprintf("clearing:packets holds %s, live packets hold %s", got, escrow))
	}
	for _, a := range []ledger.Account{ledger.ClearingGroups, ledger.ClearingTransfers} {
		if got := sum(a); got != 0 {
			violations = append(violations, fmt.Sprintf("%s nets to %s across shards", a, got))
		}
	}
	var wallets money.Amount
	for u := int64(1); u <= d.users; u++ {
		w, err := sys.Ledgers.For(u).Wallet(ctx, u)
		if err != nil {
			return err
		}
		wallets += w.Balance
	}
	if wallets+escrow+sum(ledger.Fees) != d.deposited {
		violations = append(violations, fmt.Sprintf("wallets %s + escrow %s != deposits %s", wallets, escrow, d.deposited))
	}
	d.step("reconciliation:")
	d.step("  ledger invariants on %d shards, %d packets balanced, %d of %d claims credited exactly once", len(sys.Ledgers.Shards), len(d.packets), credited, claims)
	d.step("  wallets %s + live packet escrow %s = deposits + top-ups - withdrawals %s; clearing:groups and clearing:transfers net to zero", wallets, escrow, d.deposited)
	d.step("  coordinator: %d started, %d committed, %d cancelled; credits dead-lettered: %d", sys.Coord.Metrics.Started.Load(), sys.Coord.Metrics.Committed.Load(), sys.Coord.Metrics.Cancelled.Load(), sys.DeadCredits.Load())
	// T+1 reconciliation of today against the channel's statement, with
	// the internal checks of the books, through the API.
	var rep recon.Report
	if _, err := d.Call(ctx, "POST", "/v1/admin/recon", 0, "", map[string]any{"day": time.Now().UTC().Format("2006-01-02")}, &rep); err != nil {
		return err
	}
	d.step("  channel statement of %s: %d paid %s, %d paid out %s; ours: %d paid %s, %d paid out %s; %d differences, %d unresolved",
		rep.Day, rep.Channel.Pays, rep.Channel.Paid, rep.Channel.Payouts, rep.Channel.PaidOut, rep.Ours.Pays, rep.Ours.Paid, rep.Ours.Payouts, rep.Ours.PaidOut,
		len(rep.Differences), rep.Unresolved)
	for _, c := range rep.Checks {
		if !c.OK && !c.Skipped {
			violations = append(violations, fmt.Sprintf("recon check %s: %v", c.Name, c.Detail))
		}
	}
	if len(violations) > 0 {
		for _, v := range violations {
			d.step("VIOLATION %s", v)
		}
		return fmt.Errorf("the books do not reconcile: %d violations", len(violations))
	}
	if !rep.Sound {
		for _, x := range rep.Differences {
			d.step("DIFFERENCE %s order %s: ours %s, channel %s", x.Kind, x.Order, x.Ours, x.Channel)
		}
		return fmt.Errorf("the reconciliation with the channel is not sound: %d unresolved", rep.Unresolved)
	}
	d.step("  everything reconciles")
	return nil
}
