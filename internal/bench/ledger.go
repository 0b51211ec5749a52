package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/ledger"
	"hongbao/internal/money"
)

// NewDB makes a fresh database migrated with the given migrations.
type NewDB func(ctx context.Context, name string) (*pgxpool.Pool, error)

// LedgerOptions size the ledger benchmark.
type LedgerOptions struct {
	Workers  int           // concurrent callers (transfers, deposits, single credits)
	Duration time.Duration // per measured run
	Users    int           // wallets money moves between
	Batch    int           // credits per batch
	Stripes  int           // stripes per system account in the striped run
}

// LedgerReport is what the ledger benchmark measured.
type LedgerReport struct {
	Transfer         Result   `json:"transfer"`
	TransferBaseline Result   `json:"transfer_baseline_plain_sql"`
	TransferRatio    float64  `json:"transfer_ratio"`
	DepositStriped   Result   `json:"deposit_striped"`
	DepositOneRow    Result   `json:"deposit_one_row"`
	StripeRatio      float64  `json:"stripe_ratio"`
	CreditBatched    Result   `json:"credit_batched"`
	CreditSingle     Result   `json:"credit_single"`
	BatchRatio       float64  `json:"batch_ratio"`
	Violations       []string `json:"violations"`
	Conserved        bool     `json:"conserved"`
}

// Ledger runs the ledger benchmark: transfers across many wallets against a
// plain-SQL transfer, deposits through a striped system account against one
// row, and clearing credits in batches against one per transaction. Every
// pair runs in the same process on the same cluster, so the ratios hold
// even when the machine's absolute speed drifts.
func Ledger(ctx context.Context, newDB NewDB, o LedgerOptions, progress io.Writer) (LedgerReport, error) {
	var rep LedgerReport
	open := func(name string, stripes int) (*ledger.Ledger, error) {
		db, err := newDB(ctx, name)
		if err != nil {
			return nil, err
		}
		return ledger.New(ctx, db, ledger.Options{Stripes: stripes})
	}
	fund := func(l *ledger.Ledger) error {
		return Each(o.Users, o.Workers, func(i int) error {
			_, err := l.Deposit(ctx, fmt.Sprint("fund-", i+1), int64(i+1), 1_000_000_00)
			return err
		})
	}
	var books []*ledger.Ledger
	step := func(name string) { fmt.Fprintf(progress, "  %-40s", name) }
	done := func(r Result) {
		fmt.Fprintf(progress, "%10.0f/s  p50 %6.2f ms  p99 %6.2f ms\n", r.PerSec, r.P50ms, r.P99ms)
	}

	// Transfers between random wallets, through the ledger.
	lt, err := open("bench_transfer", o.Stripes)
	if err != nil {
		return rep, err
	}
	books = append(books, lt)
	if err := fund(lt); err != nil {
		return rep, err
	}
	step("transfer (ledger, idempotent, journaled)")
	rep.Transfer = Run(ctx, o.Workers, o.Duration, func(ctx context.Context, w, i int) (int, error) {
		from, to := pair(w, i, o.Users)
		_, err := lt.Transfer(ctx, ledger.TransferRequest{Key: fmt.Sprintf("t-%d-%d", w, i), From: ledger.User(from), To: ledger.User(to), Amount: 1})
		return 1, err
	})
	done(rep.Transfer)

	// The plain way: two row updates and nothing else, same schema.
	lb, err := open("bench_transfer_plain", o.Stripes)
	if err != nil {
		return rep, err
	}
	if err := fund(lb); err != nil {
		return rep, err
	}
	step("transfer baseline (two UPDATEs, no journal)")
	rep.TransferBaseline = Run(ctx, o.Workers, o.Duration, func(ctx context.Context, w, i int) (int, error) {
		from, to := pair(w, i, o.Users)
		first, second, d1, d2 := from, to, -1, 1 // lock in id order
		if to < from {
			first, second, d1, d2 = to, from, 1, -1
		}
		return 1, pgx.BeginFunc(ctx, lb.DB(), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $2 WHERE id = $1`, first, d1); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $2 WHERE id = $1`, second, d2)
			return err
		})
	})
	done(rep.TransferBaseline)
	rep.TransferRatio = ratio(rep.Transfer.PerSec, rep.TransferBaseline.PerSec)

	// Deposits: every one debits the external system account.
	for _, run := range []struct {
		name    string
		stripes int
		into    *Result
	}{{fmt.Sprintf("deposit, system account on %d stripes", o.Stripes), o.Stripes, &rep.DepositStriped}, {"deposit, system account on one row", 1, &rep.DepositOneRow}} {
		l, err := open(fmt.Sprint("bench_deposit_", run.stripes), run.stripes)
		if err != nil {
			return rep, err
		}
		books = append(books, l)
		step(run.name)
		*run.into = Run(ctx, o.Workers, o.Duration, func(ctx context.Context, w, i int) (int, error) {
			_, err := l.Deposit(ctx, fmt.Sprintf("d-%d-%d", w, i), int64(1+(w*7919+i)%o.Users), 100)
			return 1, err
		})
		done(*run.into)
	}
	rep.StripeRatio = ratio(rep.DepositStriped.PerSec, rep.DepositOneRow.PerSec)

	// Credits from clearing:packets, as the packet consumer applies them.
	for _, run := range []struct {
		name    string
		workers int
		batch   int
		into    *Result
	}{{fmt.Sprintf("credits, %d per batch, 2 consumers", o.Batch), 2, o.Batch, &rep.CreditBatched}, {"credits, one per transaction", o.Workers, 1, &rep.CreditSingle}} {
		l, err := open(fmt.Sprint("bench_credit_", run.batch), o.Stripes)
		if err != nil {
			return rep, err
		}
		books = append(books, l)
		step(run.name)
		*run.into = Run(ctx, run.workers, o.Duration, func(ctx context.Context, w, i int) (int, error) {
			r := rand.New(rand.NewPCG(uint64(w), uint64(i)))
			cs := make([]ledger.Credit, run.batch)
			for j := range cs {
				cs[j] = ledger.Credit{Key: fmt.Sprintf("c-%d-%d-%d", w, i, j), From: ledger.ClearingPackets,
					User: int64(1 + r.IntN(o.Users)), Amount: money.Amount(1 + r.IntN(500)), Kind: ledger.KindCredit}
			}
			_, err := l.ApplyCredits(ctx, cs)
			return run.batch, err
		})
		done(*run.into)
	}
	rep.BatchRatio = ratio(rep.CreditBatched.PerSec, rep.CreditSingle.PerSec)

	rep.Conserved = true
	for _, l := range books {
		v, err := l.Check(ctx)
		if err != nil {
			return rep, err
		}
		for _, x := range v {
			rep.Violations = append(rep.Violations, x.String())
			rep.Conserved = false
		}
	}
	return rep, nil
}

func pair(w, i, users int) (int64, int64) {
	r := rand.New(rand.NewPCG(uint64(w), uint64(i)))
	a := 1 + r.IntN(users)
	b := 1 + r.IntN(users-1)
	if b >= a {
		b++
	}
	return int64(a), int64(b)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
