package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hongbao/internal/node"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"hongbao/internal/dtx"
	"hongbao/internal/group"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
)

func runDemo(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var cfg Config
	cfg.bind(fs, "")
	users := fs.Int("users", 1000, "number of users (at least 200)")
	sets := fs.Int("packet-sets", 2, "number of packet sets")
	keep := fs.Bool("keep", false, "keep the private cluster's folder afterwards")
	if err := fs.Parse(args); err != nil {
		return err
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
	dbs, err := OpenDatabases(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer dbs.Close()
	limits := packet.DefaultLimits
	sys, err := node.StartSystem(ctx, dbs.Open, node.SystemOptions{LedgerShards: cfg.LedgerShards, PacketSets: *sets, Limits: limits,
		BusDir: filepath.Join(dir, "nats"), Grace: 2 * time.Second, Every: 200 * time.Millisecond, Logger: log})
	if err != nil {
		return err
	}
	defer sys.Close()
	d := &demo{sys: sys, out: out, users: int64(*users)}
	if err := d.run(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "done in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

type demo struct {
	sys       *node.System
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

func (d *demo) run(ctx context.Context) error {
	sys := d.sys
	const funding = money.Amount(500_00)
	// 1. Everyone gets a red envelope budget.
	if err := d.parallel("funding wallets", int(d.users), func(i int) error {
		u := int64(i + 1)
		_, err := sys.Ledgers.For(u).Deposit(ctx, fmt.Sprint("demo-fund-", u), u, funding)
		return err
	}); err != nil {
		return err
	}
	d.deposited = funding * money.Amount(d.users)
	d.step("funded %d wallets with %s each (%s in all)", d.users, funding, d.deposited)

	// 2. Transfers: same shard in one transaction, across shards as TCC.
	var cross, local atomic.Int64
	if err := d.parallel("transfers (TCC across shards)", 400, func(i int) error {
		from, to := int64(1+i%int(d.users)), int64(1+(i*7+3)%int(d.users))
		if from == to {
			return nil
		}
		res, err := sys.Flows.Transfer(ctx, fmt.Sprint("demo-t-", i), from, to, money.Amount(100+i))
		if err != nil {
			return err
		}
		if res.Outcome != dtx.OutcomeCommitted {
			return fmt.Errorf("transfer %d: %s %s", i, res.Outcome, res.Reason)
		}
		if sys.Ledgers.Table.Of(from) == sys.Ledgers.Table.Of(to) {
			local.Add(1)
		} else {
			cross.Add(1)
		}
		return nil
	}); err != nil {
		return err
	}
	d.step("%d transfers: %d across shards (TCC), %d within a shard", cross.Load()+local.Load(), cross.Load(), local.Load())

	// 3. The family group, and a paid group with one seat left.
	const family, paid = 1_000_001, 1_000_002
	if _, err := sys.Groups.Create(ctx, group.CreateRequest{ID: family, Owner: 1, Capacity: int(d.users)}); err != nil {
		return err
	}
	members := make([]int64, 0, d.users)
	for u := int64(2); u <= d.users; u++ {
		members = append(members, u)
	}
	if _, err := sys.Groups.AddMembers(ctx, family, members); err != nil {
		return err
	}
	owner := d.users // the owner's wallet is on whichever shard it maps to
	if _, err := sys.Groups.Create(ctx, group.CreateRequest{ID: paid, Owner: owner, Capacity: 3, Fee: 88_00}); err != nil {
		return err
	}
	var joined, refused int
	for _, u := range []int64{2, 3, 4} {
		res, err := sys.Flows.JoinGroup(ctx, "demo-join", u, paid)
		if err != nil {
			return err
		}
		if res.Outcome == dtx.OutcomeCommitted {
			joined++
		} else {
			refused++
			d.step("paid entry of user %d refused and refunded: %s", u, res.Reason)
		}
	}
	d.step("paid group (fee 88.00, 3 seats): %d joined and paid the owner, %d refused (group full) and refunded", joined, refused)

	// 4. 1:1 packets.
	if err := d.parallel("1:1 packets", 50, func(i int) error {
		from, to := int64(10+i), int64(100+i)
		p, err := d.send(ctx, fmt.Sprint("demo-single-", i), packet.Packet{Kind: packet.Single, Sender: from, Receiver: to, Amount: 520, Shares: 1, Greeting: "我爱你"})
		if err != nil {
			return err
		}
		_, err = sys.Flows.Grab(ctx, p.ID, to)
		return err
	}); err != nil {
		return err
	}

	// 5. The hot packet: the whole family grabs at once.
	hot, err := d.send(ctx, "demo-hot", packet.Packet{Kind: packet.Lucky, Sender: 1, Group: family, Amount: 388_88, Shares: int(min(300, d.users/3)), Greeting: "新年快乐"})
	if err != nil {
		return err
	}
	var won, soldOut, busy atomic.Int64
	attempts := 3 * int(d.users)
	if err := d.parallel("grab storm on one lucky packet", attempts, func(i int) error {
		u := int64(2 + i%int(d.users-1))
		for {
			_, err := sys.Flows.Grab(ctx, hot.ID, u)
			switch {
			case err == nil:
				won.Add(1)
			case errors.Is(err, packet.ErrSoldOut):
				soldOut.Add(1)
			case errors.Is(err, packet.ErrBusy):
				busy.Add(1)
				time.Sleep(time.Millisecond)
				continue
			default:
				return err
			}
			return nil
		}
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
	d.step("lucky packet %s in %d shares: %d grab attempts, %d claims (repeats answered with the same claim), %d told sold out; best luck %s to user %d",
		hot.Amount, hot.Shares, attempts, len(det.Claims), soldOut.Load(), det.Best.Amount, det.Best.User)

	// 6. An equal packet and packets that expire half grabbed.
	eq, err := d.send(ctx, "demo-equal", packet.Packet{Kind: packet.Equal, Sender: 2, Group: family, Amount: 100_00, Shares: 7})
	if err != nil {
		return err
	}
	for u := int64(3); u < 10; u++ {
		if _, err := sys.Flows.Grab(ctx, eq.ID, u); err != nil {
			return err
		}
	}
	var expiring []int64
	for i := range 5 {
		p, err := d.send(ctx, fmt.Sprint("demo-expiring-", i), packet.Packet{Kind: packet.Lucky, Sender: int64(20 + i), Group: family,
			Amount: 50_00, Shares: 10, ExpiresAt: time.Now().Add(2 * time.Second)})
		if err != nil {
			return err
		}
		expiring = append(expiring, p.ID)
		for u := int64(30); u < 34; u++ {
			if _, err := sys.Flows.Grab(ctx, p.ID, u); err != nil {
				return err
			}
		}
	}
	d.step("an equal packet of 100.00 in 7 shares; 5 packets of 50.00 grabbed 4 of 10 shares, expiring in 2 s")

	// 7. Wait for the credits and the refunds, then reconcile.
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
	return d.reconcile(ctx)
}

// send sends a packet and insists that it went out.
func (d *demo) send(ctx context.Context, key string, p packet.Packet) (packet.Packet, error) {
	sent, res, err := d.sys.Flows.SendPacket(ctx, key, p)
	if err != nil {
		return sent, err
	}
	if res.Outcome != dtx.OutcomeCommitted {
		return sent, fmt.Errorf("packet %q not sent: %s (%s)", key, res.Outcome, res.Reason)
	}
	d.addPacket(sent.ID)
	return sent, nil
}

func (d *demo) addPacket(id int64) {
	d.mu.Lock()
	d.packets = append(d.packets, id)
	d.mu.Unlock()
}

func (d *demo) detail(ctx context.Context, id int64) (packet.Detail, error) {
	set, err := d.sys.Flows.Set(id)
	if err != nil {
		return packet.Detail{}, err
	}
	return set.Detail(ctx, id, d.sys.ClaimsCredited)
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
	d.step("  wallets %s + live packet escrow %s = deposits %s; clearing:groups and clearing:transfers net to zero", wallets, escrow, d.deposited)
	d.step("  coordinator: %d started, %d committed, %d cancelled; credits dead-lettered: %d", started(sys), committed(sys), cancelled(sys), sys.DeadCredits.Load())
	if len(violations) > 0 {
		for _, v := range violations {
			d.step("VIOLATION %s", v)
		}
		return fmt.Errorf("the books do not reconcile: %d violations", len(violations))
	}
	d.step("  everything reconciles")
	return nil
}

func started(s *node.System) int64   { a, _, _, _, _ := s.Coord.Snapshot(); return a }
func committed(s *node.System) int64 { _, a, _, _, _ := s.Coord.Snapshot(); return a }
func cancelled(s *node.System) int64 { _, _, a, _, _ := s.Coord.Snapshot(); return a }
