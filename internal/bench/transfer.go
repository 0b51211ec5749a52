package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hongbao/internal/app"
	"hongbao/internal/flow"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"hongbao/internal/dtx"
	"hongbao/internal/group"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
)

// TransferReport is what `hongbao bench transfer` measured.
type TransferReport struct {
	TCC           Result   `json:"tcc"`
	TCCEarly      Result   `json:"tcc_answer_early"` // answered once confirming is on disk
	Local         Result   `json:"local_transfer_baseline"`
	TCCRatio      float64  `json:"tcc_vs_local_ratio"`
	Saga          Result   `json:"saga_paid_entry"`
	Backlog       int      `json:"backlog"`
	DrainSeconds  float64  `json:"backlog_drain_seconds"`
	DrainPerSec   float64  `json:"backlog_drain_per_sec"`
	Unfinished    int      `json:"unfinished"`
	Conserved     bool     `json:"conserved"`
	Violations    []string `json:"violations"`
	MembersPaidOK bool     `json:"members_match_payments"`
}

func benchTransfer(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("bench transfer", flag.ContinueOnError)
	var cfg app.Config
	cfg.Bind(fs, "")
	workers := fs.Int("workers", 50, "concurrent callers")
	d := fs.Duration("duration", 10*time.Second, "length of each measured run")
	users := fs.Int("users", 4000, "funded users")
	backlog := fs.Int("backlog", 2000, "transactions left by a crashed coordinator for recovery to drain")
	asJSON := fs.Bool("json", false, "print one JSON object")
	url := fs.String("url", app.Env("HONGBAO_URL", ""), "a running server: transfers go through its API (no baseline then)")
	secret := app.SecretString(fs, "token-secret", "HONGBAO_TOKEN_SECRET", "the running server's token secret (with --url)")
	firstUser := fs.Int64("first-user", 20_000_000, "first user id (with --url)")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	if *url != "" {
		return benchTransferHTTP(ctx, *url, *secret, *users, *workers, *d, *firstUser, *asJSON, out)
	}
	dbs, closeAll, err := benchDatabases(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeAll()
	progress := out
	if *asJSON {
		progress = io.Discard
	}
	ls, err := app.OpenLedgers(ctx, dbs.Open, 2, ledger.Options{Logger: log})
	if err != nil {
		return err
	}
	gdb, err := dbs.Open(ctx, "hongbao_group_0", 64, group.Migrations()...)
	if err != nil {
		return err
	}
	groups := group.New(gdb, group.Options{Logger: log})
	ddb, err := dbs.Open(ctx, "hongbao_dtx", 64, dtx.Migrations()...)
	if err != nil {
		return err
	}
	parts := flow.Participants(ls, groups, nil)
	coord := dtx.New(ddb, dtx.Options{Participants: parts, Logger: log})
	defer coord.Close()

	fmt.Fprintf(progress, "transaction benchmark: %d callers, %s per run, %d users on 2 ledger shards, durable=%v\n", *workers, *d, *users, cfg.Durable)
	if err := fundUsers(ctx, ls, *users, 1_000_000_00, *workers); err != nil {
		return err
	}
	byShard := [2][]int64{}
	for u := int64(1); u <= int64(*users); u++ {
		s := ls.Table.Of(u)
		byShard[s] = append(byShard[s], u)
	}
	var rep TransferReport
	line := func(name string, r Result) {
		fmt.Fprintf(progress, "  %-44s %8.0f/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", name, r.PerSec, r.P50ms, r.P99ms, r.Errors)
	}

	tcc := func(c *dtx.Coordinator, prefix string) Result {
		return Run(ctx, *workers, *d, func(ctx context.Context, w, i int) (int, error) {
			r := rand.New(rand.NewPCG(uint64(w), uint64(i)))
			s := r.IntN(2)
			from, to := byShard[s][r.IntN(len(byShard[s]))], byShard[1-s][r.IntN(len(byShard[1-s]))]
			res, err := c.Run(ctx, flow.TransferSpec(ls, fmt.Sprintf("%s-%d-%d", prefix, w, i), from, to, 1))
			if err == nil && res.Outcome != dtx.OutcomeCommitted {
				err = fmt.Errorf("transfer %s: %s", res.Outcome, res.Reason)
			}
			return 1, err
		})
	}
	rep.TCC = tcc(coord, "bench-tcc")
	line("TCC cross-shard transfer (2 branches)", rep.TCC)
	// The same with the caller answered once confirming is on disk (serve
	// --answer-early); the coordinator's Close waits for its confirms.
	early := dtx.New(ddb, dtx.Options{Participants: parts, Logger: log, AnswerEarly: true})
	rep.TCCEarly = tcc(early, "bench-tcc-early")
	early.Close()
	line("TCC, answered once confirming is durable", rep.TCCEarly)
	rep.Local = Run(ctx, *workers, *d, func(ctx context.Context, w, i int) (int, error) {
		r := rand.New(rand.NewPCG(uint64(w), uint64(i)))
		s := byShard[r.IntN(2)]
		from, to := s[r.IntN(len(s))], s[r.IntN(len(s))]
		if from == to {
			return 0, nil
		}
		_, err := ls.For(from).Transfer(ctx, ledger.TransferRequest{Key: fmt.Sprintf("bench-local-%d-%d", w, i), From: ledger.User(from), To: ledger.User(to), Amount: 1})
		return 1, err
	})
	line("baseline: same-shard local transfer", rep.Local)
	rep.TCCRatio = rep.TCC.PerSec / max(rep.Local.PerSec, 1)

	// Paid entry: each worker owns users and fills groups of its own.
	per := max(*users / *workers, 1)
	var gmu sync.Mutex
	made := map[int64]group.Group{}
	rep.Saga = Run(ctx, *workers, *d, func(ctx context.Context, w, i int) (int, error) {
		user := int64(w*per + 1 + i%per)
		gid := int64(1_000_000 + w*100_000 + i/per)
		gmu.Lock()
		g, ok := made[gid]
		gmu.Unlock()
		if !ok {
			owner := int64(1 + (w*per+per/2+i/per)%*users)
			var err error
			if g, err = groups.Create(ctx, group.CreateRequest{ID: gid, Owner: owner, Capacity: per + 1, Fee: 100}); err != nil {
				return 0, err
			}
			gmu.Lock()
			made[gid] = g
			gmu.Unlock()
		}
		if user == g.Owner {
			return 0, nil
		}
		res, err := coord.Run(ctx, flow.PaidEntrySpec(ls, fmt.Sprintf("bench-join-%d-%d", gid, user), user, g))
		if err == nil && res.Outcome != dtx.OutcomeCommitted {
			err = fmt.Errorf("paid entry %s: %s", res.Outcome, res.Reason)
		}
		return 1, err
	})
	line("Saga paid group entry (3 steps)", rep.Saga)

	// A backlog: a coordinator decides to confirm and dies, many times over.
	crashing := dtx.New(ddb, dtx.Options{Participants: parts, Logger: log, Hook: func(p string) error {
		if p == "after-log:confirming" {
			return dtx.ErrCrash
		}
		return nil
	}})
	rep.Backlog = *backlog
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range *workers {
		wg.Go(func() {
			for i := range jobs {
				from, to := byShard[0][i%len(byShard[0])], byShard[1][i%len(byShard[1])]
				_, _ = crashing.Run(ctx, flow.TransferSpec(ls, fmt.Sprint("bench-backlog-", i), from, to, 1))
			}
		})
	}
	for i := range *backlog {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	crashing.Close()
	recovering := dtx.New(ddb, dtx.Options{Participants: parts, Logger: log, Now: func() time.Time { return time.Now().Add(time.Hour) }})
	start := time.Now()
	recovering.Start(ctx)
	for {
		var left int
		if err := ddb.QueryRow(ctx, `SELECT count(*) FROM dtx_global WHERE finished_at IS NULL`).Scan(&left); err != nil {
			return err
		}
		if left == 0 || time.Since(start) > 5*time.Minute {
			rep.Unfinished = left
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rep.DrainSeconds = time.Since(start).Seconds()
	rep.DrainPerSec = float64(*backlog) / rep.DrainSeconds
	recovering.Close()
	fmt.Fprintf(progress, "  %-44s %8.0f/s  (%d in %.2f s, %d left)\n", "recovery backlog drain", rep.DrainPerSec, rep.Backlog, rep.DrainSeconds, rep.Unfinished)

	// Reconcile: every shard's books, clearing nets to zero, members paid.
	if rep.Violations, err = ls.Check(ctx); err != nil {
		return err
	}
	for _, acct := range []ledger.Account{ledger.ClearingTransfers, ledger.ClearingGroups} {
		var sum money.Amount
		for _, l := range ls.Shards {
			b, err := l.SystemBalance(ctx, acct)
			if err != nil {
				return err
			}
			sum += b
		}
		if sum != 0 {
			rep.Violations = append(rep.Violations, fmt.Sprintf("%s nets to %s across shards", acct, sum))
		}
	}
	var members, committedJoins int
	if err := gdb.QueryRow(ctx, `SELECT count(*) FROM members m JOIN groups g ON g.id = m.group_id WHERE m.user_id <> g.owner`).Scan(&members); err != nil {
		return err
	}
	if err := ddb.QueryRow(ctx, `SELECT count(*) FROM dtx_global WHERE gid LIKE 'bench-join-%' AND state = 'committed'`).Scan(&committedJoins); err != nil {
		return err
	}
	rep.MembersPaidOK = members == committedJoins
	if !rep.MembersPaidOK {
		rep.Violations = append(rep.Violations, fmt.Sprintf("%d paying members but %d committed paid entries", members, committedJoins))
	}
	rep.Conserved = len(rep.Violations) == 0 && rep.Unfinished == 0
	if *asJSON {
		return json.NewEncoder(out).Encode(rep)
	}
	fmt.Fprintf(out, "TCC vs local transfer on the same databases: %.2fx\n", rep.TCCRatio)
	fmt.Fprintf(out, "reconciled: %v %v\n", rep.Conserved, rep.Violations)
	if !rep.Conserved {
		return errors.New("the books do not reconcile after the benchmark")
	}
	return nil
}

// fundUsers deposits amount into users 1..n from several goroutines.
func fundUsers(ctx context.Context, ls *flow.Ledgers, n int, amount money.Amount, workers int) error {
	return Each(n, workers, func(i int) error {
		u := int64(i + 1)
		_, err := ls.For(u).Deposit(ctx, fmt.Sprint("fund-", u), u, amount)
		return err
	})
}
