package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"hongbao/internal/app"
	"hongbao/internal/channel"
	"hongbao/internal/client"
	"hongbao/internal/money"
	"hongbao/internal/payment"
)

// TopUpReport is `bench topup`: top-ups end to end (order, pay, callback,
// credit) against the simulator over HTTP, with all callbacks and with a
// share of them lost (completed by queries), next to the baseline of a
// plain deposit through the same API in the same run.
type TopUpReport struct {
	Durable  bool    `json:"durable"`
	Workers  int     `json:"workers"`
	Baseline Result  `json:"baseline_deposit"`
	TopUps   Result  `json:"topups"`
	Lost     Result  `json:"topups_callbacks_lost"`
	LostRate float64 `json:"lost_callback_share"`
	// Ratios of top-ups completed per second to deposits per second.
	Ratio     float64 `json:"ratio"`
	LostRatio float64 `json:"lost_ratio"`
	// Sound: every top-up credited once and the books check.
	Credited int64 `json:"credited"`
	Sound    bool  `json:"sound"`
}

func benchTopUp(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("bench topup", flag.ContinueOnError)
	var cfg app.Config
	cfg.Bind(fs, "")
	workers := fs.Int("workers", 32, "concurrent clients, each topping up and paying in a closed loop")
	d := fs.Duration("duration", 8*time.Second, "length of each measured run")
	lost := fs.Float64("lost", 0.3, "share of callbacks lost in the second top-up run")
	queryAfter := fs.Duration("query-after", 200*time.Millisecond, "first wait before the node asks the channel about an order")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	if *lost < 0 || *lost > 1 || *workers < 1 {
		return app.UsageErr(fmt.Errorf("--lost is 0..1 and --workers at least 1"))
	}
	progress := out
	if *asJSON {
		progress = io.Discard
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	sim, simURL, stopSim, err := app.StartSimulator(secret, channel.Knobs{})
	if err != nil {
		return err
	}
	defer stopSim()
	sys, stop, err := benchNode(ctx, cfg, log, app.NodeOptions{LedgerShards: cfg.LedgerShards, PacketSets: 1, Every: 50 * time.Millisecond,
		Channel: channel.NewClient(simURL, secret, ""), ChannelSecret: secret,
		Payments: payment.Options{QueryAfter: *queryAfter, QueryCap: 4 * *queryAfter}})
	if err != nil {
		return err
	}
	defer stop()
	url, tokSecret, stopAPI, err := app.LocalAPI(sys, log)
	if err != nil {
		return err
	}
	defer stopAPI()
	users := client.NewUsers(url, tokSecret, *workers*2)
	payer := &http.Client{Timeout: 5 * time.Second}
	rep := TopUpReport{Durable: cfg.Durable, Workers: *workers, LostRate: *lost}
	fmt.Fprintf(progress, "top-up benchmark: %d clients, %s per run, durable=%v, node asks the channel after %s\n", *workers, *d, cfg.Durable, *queryAfter)
	line := func(name string, r Result) {
		fmt.Fprintf(progress, "  %-50s %8.0f/s  p50 %7.2f ms  p99 %7.2f ms  errors %d\n", name, r.PerSec, r.P50ms, r.P99ms, r.Errors)
	}
	user := func(w, i int) int64 { return int64(1_000_000 + w*1000 + i%1000) }
	rep.Baseline = Run(ctx, *workers, *d, func(ctx context.Context, w, i int) (int, error) {
		_, err := users.Call(ctx, "POST", "/v1/admin/deposits", 0, fmt.Sprintf("bench-dep-%d-%d", w, i), map[string]any{"user": user(w, i), "amount": "1.00"}, nil)
		return 1, err
	})
	line("baseline: deposit through the API", rep.Baseline)
	topUp := func(tag string) func(ctx context.Context, w, i int) (int, error) {
		return func(ctx context.Context, w, i int) (int, error) {
			u := user(w, i)
			var o payment.Order
			status, err := users.Call(ctx, "POST", "/v1/topups", u, fmt.Sprintf("bench-%s-%d-%d", tag, w, i), map[string]any{"amount": "1.00"}, &o)
			if err != nil {
				return 0, err
			}
			if status != 201 {
				return 0, fmt.Errorf("top-up answered %d", status)
			}
			resp, err := payer.Post(o.PayURL, "application/json", nil)
			if err != nil {
				return 0, err
			}
			resp.Body.Close()
			for ctx.Err() == nil {
				got, err := sys.Payments.Get(ctx, o.ID)
				if err != nil {
					return 0, err
				}
				if got.State == payment.Paid {
					return 1, nil
				}
				time.Sleep(5 * time.Millisecond) // a client polling its order
			}
			return 0, ctx.Err()
		}
	}
	rep.TopUps = Run(ctx, *workers, *d, topUp("all"))
	line("top-up: order, pay, callback, credit", rep.TopUps)
	sim.SetKnobs(channel.Knobs{DropCallback: *lost})
	rep.Lost = Run(ctx, *workers, *d, topUp("lost"))
	line(fmt.Sprintf("top-up, %.0f%% of callbacks lost (queries complete them)", *lost*100), rep.Lost)
	rep.Ratio = rep.TopUps.PerSec / max(rep.Baseline.PerSec, 1)
	rep.LostRatio = rep.Lost.PerSec / max(rep.Baseline.PerSec, 1)
	// Let the orders cut off by the end of a run finish, then check.
	sim.SetKnobs(channel.Knobs{})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		open, err := sys.Payments.Open(ctx, time.Now(), 1)
		if err != nil {
			return err
		}
		if len(open) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	rec, err := sys.Recon.Run(ctx, time.Now().UTC().Truncate(24*time.Hour))
	if err != nil {
		return err
	}
	rep.Sound = rec.Sound
	rep.Credited = int64(rec.Ours.Pays)
	if money.Amount(rep.Credited)*100 != rec.Ours.Paid {
		rep.Sound = false
	}
	fmt.Fprintf(progress, "  ratio to the deposit baseline: %.2fx with every callback, %.2fx with %.0f%% lost; %d top-ups credited; reconciled with the channel: %v\n",
		rep.Ratio, rep.LostRatio, *lost*100, rep.Credited, rep.Sound)
	if *asJSON {
		return json.NewEncoder(out).Encode(rep)
	}
	if !rep.Sound {
		return fmt.Errorf("the top-ups do not reconcile with the channel")
	}
	return nil
}
