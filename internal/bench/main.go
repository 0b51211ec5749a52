package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/app"
	"hongbao/internal/ledger"
)

func Main(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	if len(args) == 0 || app.IsHelp(args[0]) {
		return app.Verbs(out, args, "hongbao bench hot-packet|spring-festival|transfer|ledger|topup|partitions|migrate|all [flags]; hongbao bench <scenario> -h for its flags")
	}
	switch args[0] {
	case "ledger":
		return benchLedger(ctx, args[1:], out, log)
	case "transfer":
		return benchTransfer(ctx, args[1:], out, log)
	case "hot-packet":
		return benchHotPacket(ctx, args[1:], out, log)
	case "spring-festival":
		return benchFestival(ctx, args[1:], out, log)
	case "topup":
		return benchTopUp(ctx, args[1:], out, log)
	case "all":
		return benchAll(ctx, args[1:], out, log)
	case "migrate":
		return benchMigrate(ctx, args[1:], out, log)
	case "partitions":
		return benchPartitions(ctx, args[1:], out, log)
	}
	return app.UsageErr(fmt.Errorf("unknown scenario %q (have: hot-packet, spring-festival, transfer, ledger, topup, partitions, migrate, all)", args[0]))
}

// benchDatabases starts a fresh durable private cluster (or uses the
// configured server) and returns a maker of fresh, migrated databases.
func benchDatabases(ctx context.Context, cfg app.Config, log *slog.Logger) (*app.Databases, func(), error) {
	cleanup := func() {}
	if cfg.DatabaseURL == "" && cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "hongbao-bench-")
		if err != nil {
			return nil, nil, err
		}
		_ = os.Chmod(dir, 0o755)
		cfg.DataDir = dir
		cleanup = func() { os.RemoveAll(dir) }
	}
	if err := cfg.Validate(); err != nil {
		cleanup()
		return nil, nil, err
	}
	dbs, err := app.OpenDatabases(ctx, cfg, log)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return dbs, func() { dbs.Close(); cleanup() }, nil
}

// benchNode starts a whole node for a benchmark: fresh databases (see
// benchDatabases) and an embedded NATS in a temporary folder. stop undoes
// all of it.
func benchNode(ctx context.Context, cfg app.Config, log *slog.Logger, o app.NodeOptions) (*app.Node, func(), error) {
	dbs, closeDBs, err := benchDatabases(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	busDir, err := os.MkdirTemp("", "hongbao-bench-nats-")
	if err != nil {
		closeDBs()
		return nil, nil, err
	}
	o.BusDir, o.Logger = busDir, log
	sys, err := app.StartNode(ctx, dbs.Open, o)
	if err != nil {
		os.RemoveAll(busDir)
		closeDBs()
		return nil, nil, err
	}
	return sys, func() { sys.Close(); os.RemoveAll(busDir); closeDBs() }, nil
}

func benchLedger(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("bench ledger", flag.ContinueOnError)
	var cfg app.Config
	cfg.Bind(fs, "")
	var o LedgerOptions
	fs.IntVar(&o.Workers, "workers", 64, "concurrent callers")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "length of each measured run")
	fs.IntVar(&o.Users, "users", 10000, "wallets")
	fs.IntVar(&o.Batch, "batch", 500, "credits per batch")
	fs.IntVar(&o.Stripes, "stripes", 16, "stripes per system account")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	dbs, closeAll, err := benchDatabases(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeAll()
	newDB := func(ctx context.Context, name string) (*pgxpool.Pool, error) {
		return dbs.Open(ctx, name, int32(o.Workers+4), ledger.Migrations()...)
	}
	progress := out
	if *asJSON {
		progress = io.Discard
	}
	fmt.Fprintf(progress, "ledger benchmark: %d workers, %s per run, %d wallets, durable=%v\n", o.Workers, o.Duration, o.Users, cfg.Durable)
	rep, err := Ledger(ctx, newDB, o, progress)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(out).Encode(rep)
	}
	fmt.Fprintf(out, "transfer vs plain two-UPDATE transfer: %.2fx\n", rep.TransferRatio)
	fmt.Fprintf(out, "deposit, striped vs one hot row:       %.2fx\n", rep.StripeRatio)
	fmt.Fprintf(out, "credits, batched vs one per tx:        %.2fx\n", rep.BatchRatio)
	fmt.Fprintf(out, "books conserved: %v %v\n", rep.Conserved, rep.Violations)
	if !rep.Conserved {
		return fmt.Errorf("ledger invariant violated after the benchmark")
	}
	return nil
}
