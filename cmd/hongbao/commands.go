package main

import (
	"context"
	"encoding/json"
	"slices"

	"errors"
	"flag"
	"fmt"
	"hongbao/internal/app"
	"hongbao/internal/bench"
	"hongbao/internal/demo"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error
}

func commands() []command {
	return []command{
		{"serve", "run the HTTP API (private PostgreSQL and NATS unless URLs are given)", runServe},
		{"demo", "a short New Year's Eve on a private database, reconciled at the end", demo.Main},
		{"bench", "measure a scenario against its baseline (hot-packet, transfer, ledger, spring-festival, topup, migrate, partitions) or all of them: bench all", bench.Main},
		{"token", "issue a signed bearer token (--user ID or --admin)", runToken},
		{"wallet", "show your wallet (--statement for the entries)", runWallet},
		{"transfer", "send money to another user", runTransfer},
		{"deposit", "credit a user from outside (admin token)", runDeposit},
		{"packet", "send, grab, show a red packet; list sent or received", runPacket},
		{"group", "create, join, show a group; list members", runGroup},
		{"tx", "inspect global transactions (admin token)", runTx},
		{"topup", "top up your wallet through the payment channel; show or list top-ups", runOrder("topup", "/v1/topups")},
		{"withdraw", "withdraw from your wallet through the payment channel; show or list withdrawals", runOrder("withdraw", "/v1/withdrawals")},
		{"orders", "payment channel orders not final yet (admin token)", runOpenOrders},
		{"recon", "reconcile a day against the channel's statement and the books (admin token); exits 1 unless sound", runRecon},
		{"migrate", "move ledger slots to another shard while traffic goes on (--slots 17,19 --to 0), or --list, --show, --cancel (admin token)", runMigrate},
		{"archive", "archive the day partitions before --before DATE, or --list them (admin token)", runArchive},
		{"channel-sim", "a payment channel simulator with fault knobs, as its own process", runChannelSim},
		{"cluster", "cluster up: many nodes on this machine (2 PostgreSQL, 3 NATS, N serve processes) to try", runCluster},
		{"version", "print the version, the commit and the Go it was built with", runVersion},
	}
}

// Main runs one subcommand and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || (args[0] == "help" && len(args) == 1) {
		usage(stdout)
		return 0
	}
	if args[0] == "help" {
		args = []string{args[1], "-h"} // help serve = serve -h
	}
	if path := os.Getenv("HONGBAO_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			_ = pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	// Where goroutines wait (channels, locks, select), for the profiles
	// that CPU time does not show: written when the command ends.
	if path := os.Getenv("HONGBAO_BLOCKPROFILE"); path != "" {
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
		runtime.SetMutexProfileFraction(10)
		defer func() {
			for name, suffix := range map[string]string{"block": "", "mutex": ".mutex"} {
				if f, err := os.Create(path + suffix); err == nil {
					_ = pprof.Lookup(name).WriteTo(f, 0)
					f.Close()
				}
			}
		}()
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, log)
			var ue app.UsageError
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0 // -h: the flag package printed the usage
			case errors.As(err, &ue):
				// A flag the flag package refused was printed with the usage
				// already; said once more, last, so that no usage error is
				// silent (a bad --date, an argument too many).
				fmt.Fprintf(stderr, "hongbao %s: %v\n", c.name, err)
				return 2
			case ctx.Err() != nil && errors.Is(err, context.Canceled):
				return 130 // interrupted
			}
			if slices.Contains(args, "--json") || slices.Contains(args, "-json") || slices.Contains(args, "--json=true") {
				// A caller that reads JSON gets its errors as JSON too.
				_ = json.NewEncoder(stderr).Encode(map[string]string{"command": c.name, "error": err.Error()})
			} else {
				fmt.Fprintf(stderr, "hongbao %s: %v\n", c.name, err)
			}
			return 1
		}
	}
	fmt.Fprintf(stderr, "hongbao: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("usage: hongbao <command> [flags]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun hongbao <command> -h for its flags.\n")
	io.WriteString(w, b.String())
}

func runVersion(_ context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	if fs.NArg() > 0 {
		return app.UsageErr(fmt.Errorf("version takes no arguments: %q", fs.Args()))
	}
	fmt.Fprintln(out, versionLine())
	return nil
}

// versionLine is the module version, the commit (with "+dirty" for
// uncommitted changes) and its time, and the Go version.
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "hongbao (no build information)"
	}
	rev, at, dirty := "unknown", "", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = " " + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	return fmt.Sprintf("hongbao %s commit %s%s%s %s", bi.Main.Version, rev, dirty, at, bi.GoVersion)
}
