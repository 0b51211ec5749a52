package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"hongbao/internal/ledger"
	"hongbao/internal/money"
)

func runDemo(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var cfg Config
	cfg.bind(fs, "")
	users := fs.Int("users", 200, "number of users")
	keep := fs.Bool("keep", false, "keep the private cluster's folder afterwards")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.DataDir == "" && cfg.DatabaseURL == "" {
		dir, err := os.MkdirTemp("", "hongbao-demo-")
		if err != nil {
			return err
		}
		_ = os.Chmod(dir, 0o755) // the server may run as the postgres user
		cfg.DataDir = dir
		if !*keep {
			defer os.RemoveAll(dir)
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	start := time.Now()
	fmt.Fprintf(out, "Hongbao demo: %d users on %d ledger shards\n", *users, cfg.LedgerShards)
	if cfg.DatabaseURL == "" {
		fmt.Fprintf(out, "  starting a private PostgreSQL in %s (fsync on: %v)\n", cfg.DataDir, cfg.Durable)
	}
	dbs, err := OpenDatabases(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer dbs.Close()
	ls, err := OpenLedgers(ctx, dbs, cfg.LedgerShards, log)
	if err != nil {
		return err
	}
	d := &ledgerDemo{ls: ls, out: out, users: *users}
	if err := d.run(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "done in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

type ledgerDemo struct {
	ls    *Ledgers
	out   io.Writer
	users int
}

func (d *ledgerDemo) run(ctx context.Context) error {
	const funding = money.Amount(200_00)
	// 1. Everyone is funded once; a replayed deposit changes nothing.
	for u := int64(1); u <= int64(d.users); u++ {
		if _, err := d.ls.For(u).Deposit(ctx, fmt.Sprint("demo-fund-", u), u, funding); err != nil {
			return err
		}
	}
	if r, err := d.ls.For(1).Deposit(ctx, "demo-fund-1", 1, funding); err != nil || !r.Replayed {
		return fmt.Errorf("replayed deposit was not recognised: %+v, %v", r, err)
	}
	total := funding * money.Amount(d.users)
	fmt.Fprintf(d.out, "  funded %d wallets with %s each (%s in all); a replayed deposit was answered from the record\n", d.users, funding, total)

	// 2. A burst of transfers between users of the same shard, from many
	// goroutines, every fifth one sent twice with the same key.
	var applied, replays, refused atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 32)
	for w := range 32 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 2026))
			for i := range 60 {
				from := int64(1 + r.IntN(d.users))
				to := d.sameShardPeer(r, from)
				req := ledger.TransferRequest{Key: fmt.Sprintf("demo-t-%d-%d", w, i), From: ledger.User(from), To: ledger.User(to), Amount: money.Amount(1 + r.IntN(50_00))}
				sends := 1
				if i%5 == 0 {
					sends = 2
				}
				for range sends {
					res, err := d.ls.For(from).Transfer(ctx, req)
					switch {
					case errors.Is(err, ledger.ErrInsufficientFunds):
						refused.Add(1)
					case err != nil:
						errc <- err
						return
					case res.Replayed:
						replays.Add(1)
					default:
						applied.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  transfers from 32 goroutines: %d applied, %d replays answered from the record, %d refused for insufficient funds\n",
		applied.Load(), replays.Load(), refused.Load())

	// 3. Holds: some posted in part, some voided, some left to expire.
	var posted, voided, expired money.Amount
	for u := int64(1); u <= 30; u++ {
		l := d.ls.For(u)
		key := fmt.Sprint("demo-hold-", u)
		amt := money.Amount(10_00)
		w, err := l.Wallet(ctx, u)
		if err != nil {
			return err
		}
		if w.Available < amt {
			continue
		}
		exp := time.Time{}
		if u%3 == 2 {
			exp = time.Now().Add(200 * time.Millisecond)
		}
		if _, err := l.Hold(ctx, ledger.HoldRequest{Key: key, User: u, Amount: amt, ExpiresAt: exp}); err != nil {
			return err
		}
		switch u % 3 {
		case 0:
			p, err := l.Post(ctx, ledger.PostRequest{Key: key + "-post", HoldKey: key, To: ledger.Fees, Amount: 7_50})
			if err != nil {
				return err
			}
			posted += p.Posted
		case 1:
			v, err := l.Void(ctx, ledger.VoidRequest{Key: key + "-void", HoldKey: key})
			if err != nil {
				return err
			}
			voided += v.Released
		default:
			expired += amt
		}
	}
	time.Sleep(250 * time.Millisecond) // let the short holds pass their expiry
	n := 0
	for _, l := range d.ls.Shards {
		k, err := l.ExpireHolds(ctx, 1000)
		if err != nil {
			return err
		}
		n += k
	}
	fmt.Fprintf(d.out, "  holds: %s posted to fees (the rest released), %s voided, %d holds (%s) expired by the sweeper\n", posted, voided, n, expired)

	// 4. One user's statement, newest first.
	es, _, err := d.ls.For(1).Statement(ctx, 1, 0, 5)
	if err != nil {
		return err
	}
	fmt.Fprintln(d.out, "  statement of user 1, newest first:")
	for _, e := range es {
		fmt.Fprintf(d.out, "    %-9s %9s  balance %9s  %s\n", e.Kind, e.Amount, e.Balance, e.Other)
	}

	// 5. Reconcile: every shard's invariants, and the users' money adds up.
	violations, err := d.ls.Check(ctx)
	if err != nil {
		return err
	}
	var users, fees money.Amount
	for u := int64(1); u <= int64(d.users); u++ {
		w, err := d.ls.For(u).Wallet(ctx, u)
		if err != nil {
			return err
		}
		users += w.Balance
	}
	for _, l := range d.ls.Shards {
		f, err := l.SystemBalance(ctx, ledger.Fees)
		if err != nil {
			return err
		}
		fees += f
	}
	if users+fees != total {
		violations = append(violations, fmt.Sprintf("users hold %s and fees %s: together %s, want the %s deposited", users, fees, users+fees, total))
	}
	fmt.Fprintf(d.out, "  reconciliation: wallets %s + fees %s = deposits %s; invariant check on %d shards: %d violations\n",
		users, fees, total, len(d.ls.Shards), len(violations))
	for _, v := range violations {
		fmt.Fprintln(d.out, "    VIOLATION", v)
	}
	if len(violations) > 0 {
		return fmt.Errorf("the books do not reconcile: %d violations", len(violations))
	}
	return nil
}

// sameShardPeer picks another user on from's shard (cross-shard transfers
// are global transactions, which the coordinator runs).
func (d *ledgerDemo) sameShardPeer(r *rand.Rand, from int64) int64 {
	for {
		to := int64(1 + r.IntN(d.users))
		if to != from && d.ls.Table.Of(to) == d.ls.Table.Of(from) {
			return to
		}
	}
}
