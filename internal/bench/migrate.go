package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/app"
	"hongbao/internal/dtx"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/shard"
	"hongbao/internal/slots"
)

// MigrateReport is what `hongbao bench migrate` measured for each size.
type MigrateReport struct {
	Runs []MigrateRun `json:"runs"`
}

// MigrateRun is one move of a slot holding Wallets wallets, with ordinary
// transfers running between other wallets the whole time.
type MigrateRun struct {
	Wallets      int      `json:"wallets"`
	MoveSeconds  float64  `json:"move_seconds"`
	FrozenSecs   float64  `json:"frozen_seconds"` // fenced until released: the wallets' writes were told to retry
	BeforePerSec float64  `json:"transfers_per_sec_before"`
	DuringPerSec float64  `json:"transfers_per_sec_during"`
	Dip          float64  `json:"during_over_before"`
	Sound        bool     `json:"sound"`
	Violations   []string `json:"violations"`
}

func benchMigrate(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("bench migrate", flag.ContinueOnError)
	var cfg app.Config
	cfg.Bind(fs, "")
	sizes := fs.String("wallets", "10000,100000", "wallets in the moved slot, one run per size (comma-separated)")
	workers := fs.Int("workers", 32, "concurrent callers of the ordinary transfer load")
	before := fs.Duration("before", 3*time.Second, "load measured before each move")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	var ns []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1_000_000 {
			return app.UsageErr(fmt.Errorf("--wallets: %q is not 1..1000000", f))
		}
		ns = append(ns, n)
	}
	progress := out
	if *asJSON {
		progress = io.Discard
	}
	sys, stop, err := benchNode(ctx, cfg, log, app.NodeOptions{LedgerShards: 2, PacketSets: 1, SlotDrainWait: 30 * time.Second})
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(progress, "slot migration: sizes %v, %d transfer callers, durable=%v\n", ns, *workers, cfg.Durable)
	// The ordinary load: transfers among wallets in other slots, both shards.
	var loadUsers []int64
	for u := int64(1); len(loadUsers) < 2000; u++ {
		if s := shard.SlotOf(u); s != 0 && s != 1 {
			loadUsers = append(loadUsers, u)
		}
	}
	for _, u := range loadUsers {
		if _, err := sys.Flows.Deposit(ctx, fmt.Sprint("bench-mig-", u), 0, u, 1_000_000); err != nil {
			return err
		}
	}
	var rep MigrateReport
	next := int64(10_000_000)
	for run, n := range ns {
		// The slot to move: 0 or 1 (on shards 0 and 1), filled with n wallets.
		slot := run % 2
		var wallets []int64
		for len(wallets) < n {
			next++
			if shard.SlotOf(next) == slot {
				wallets = append(wallets, next)
			}
		}
		from := sys.Ledgers.Table.Of(wallets[0])
		if err := fund(ctx, sys.Ledgers.Shards[from], wallets, 1_00); err != nil {
			return err
		}
		var done atomic.Int64
		var stopLoad atomic.Bool
		var wg sync.WaitGroup
		for w := range *workers {
			wg.Go(func() {
				for i := 0; !stopLoad.Load(); i++ {
					a, b := loadUsers[(w*131+i*7)%len(loadUsers)], loadUsers[(w*17+i*13+1)%len(loadUsers)]
					if a == b {
						continue
					}
					r, err := sys.Flows.Transfer(ctx, fmt.Sprintf("bench-mig-%d-%d-%d", run, w, i), a, b, 1)
					if err == nil && r.Outcome == dtx.OutcomeCommitted {
						done.Add(1)
					}
				}
			})
		}
		time.Sleep(*before)
		startCount, start := done.Load(), time.Now()
		m, err := sys.Slots.Start(ctx, []int{slot}, 1-from)
		if err == nil {
			m, err = sys.Slots.Run(ctx, m.ID)
		}
		moved := time.Since(start)
		duringCount := done.Load() - startCount
		stopLoad.Store(true)
		wg.Wait()
		if err != nil {
			return err
		}
		if m.State != slots.Done {
			return fmt.Errorf("migration ended %s: %s", m.State, m.Error)
		}
		r := MigrateRun{Wallets: n, MoveSeconds: moved.Seconds(), BeforePerSec: float64(startCount) / before.Seconds(),
			DuringPerSec: float64(duringCount) / moved.Seconds()}
		r.Dip = r.DuringPerSec / max(r.BeforePerSec, 1)
		var fenced, released time.Time
		for _, s := range m.Steps {
			switch s.State {
			case slots.Copying:
				fenced = s.At
			case slots.Cleaning:
				released = s.At
			}
		}
		r.FrozenSecs = released.Sub(fenced).Seconds()
		v, err := sys.Ledgers.Check(ctx)
		if err != nil {
			return err
		}
		var migration money.Amount
		for _, l := range sys.Ledgers.Shards {
			b, err := l.SystemBalance(ctx, ledger.Migration)
			if err != nil {
				return err
			}
			migration += b
		}
		if migration != 0 {
			v = append(v, fmt.Sprintf("migration account sums to %s", migration))
		}
		got, err := sys.Ledgers.Shards[1-from].Balances(ctx, wallets)
		if err != nil {
			return err
		}
		for _, u := range wallets {
			if got[u] != 1_00 {
				v = append(v, fmt.Sprintf("wallet %d has %s after the move", u, got[u]))
				break
			}
		}
		r.Sound, r.Violations = len(v) == 0, v
		rep.Runs = append(rep.Runs, r)
		for i := 1; i < len(m.Steps); i++ {
			fmt.Fprintf(progress, "      %-10s %6.2f s\n", m.Steps[i-1].State, m.Steps[i].At.Sub(m.Steps[i-1].At).Seconds())
		}
		fmt.Fprintf(progress, "  %7d wallets: moved in %6.2f s (fenced %5.2f s); transfers %6.0f/s before, %6.0f/s during (%.2fx); books sound: %v %v\n",
			n, r.MoveSeconds, r.FrozenSecs, r.BeforePerSec, r.DuringPerSec, r.Dip, r.Sound, r.Violations)
	}
	if *asJSON {
		return json.NewEncoder(out).Encode(rep)
	}
	for _, r := range rep.Runs {
		if !r.Sound {
			return fmt.Errorf("the books are not sound after moving %d wallets", r.Wallets)
		}
	}
	return nil
}

// fund creates wallets with amount each on a shard in a few statements (a
// deposit from the external account per wallet, with running balances), so
// that a run can have 100,000 wallets without 100,000 round trips.
func fund(ctx context.Context, l *ledger.Ledger, wallets []int64, amount int64) error {
	return pgx.BeginFunc(ctx, l.DB(), func(tx pgx.Tx) error {
		stripe := int64(ledger.External)
		var bal int64
		if err := tx.QueryRow(ctx, `SELECT balance FROM accounts WHERE id = $1 FOR UPDATE`, stripe).Scan(&bal); err != nil {
			return err
		}
		slotNos := make([]int32, len(wallets))
		for i, u := range wallets {
			slotNos[i] = int32(shard.SlotOf(u))
		}
		if _, err := tx.Exec(ctx, `INSERT INTO accounts (id, kind, name, balance, slot) SELECT u, 'user', '', $2, s FROM unnest($1::bigint[], $3::int[]) x(u, s)`,
			wallets, amount, slotNos); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO postings (kind, ref, debit_account, credit_account, amount, debit_balance, credit_balance)
			SELECT 'deposit', 'bench-fund:' || u, $2, u, $3, $4 - $3 * row_number() OVER (ORDER BY u), $3
			FROM unnest($1::bigint[]) u ORDER BY u`, wallets, stripe, amount, bal); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - $2 WHERE id = $1`, stripe, amount*int64(len(wallets)))
		return err
	})
}
