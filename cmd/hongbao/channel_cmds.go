package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"hongbao/internal/app"
	"hongbao/internal/client"
	"hongbao/internal/recon"
)

// runOrder is `hongbao topup` and `hongbao withdraw`: start one (--amount),
// show one (--id), or list yours (--list).
func runOrder(name, path string) func(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	return func(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
		return sub(ctx, name, args, out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
			amount := fs.String("amount", "", "amount, e.g. 12.34")
			key := fs.String("key", client.NewKey(), "idempotency key (reuse it to retry safely)")
			id := fs.String("id", "", "show this order with its transitions")
			list := fs.Bool("list", false, "list your orders, newest first")
			return func(*client.Client) (string, string, any, string, error) {
				switch {
				case *id != "":
					return "GET", path + "/" + *id, nil, "", nil
				case *list:
					return "GET", path, nil, "", nil
				case *amount == "":
					return "", "", nil, "", fmt.Errorf("give --amount, e.g. --amount 12.34 (or --id ID, or --list)")
				}
				return "POST", path, map[string]any{"amount": *amount}, *key, nil
			}
		})
	}
}

func runOpenOrders(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	return sub(ctx, "orders", args, out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
		age := fs.Duration("older-than", 0, "only orders created at least this long ago")
		return func(*client.Client) (string, string, any, string, error) {
			return "GET", fmt.Sprintf("/v1/admin/channel/orders?older_than_seconds=%d", int64(age.Seconds())), nil, "", nil
		}
	})
}

// errUnsound makes `hongbao recon` exit non-zero while anything is unresolved.
var errUnsound = errors.New("the books are not sound")

// runRecon reconciles a day on the server and prints the report, human
// readable or as JSON; `hongbao recon resolve` records an operator's
// resolution of a difference.
func runRecon(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	if len(args) > 0 && args[0] == "resolve" {
		return sub(ctx, "recon resolve", args[1:], out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
			day := fs.String("date", "", "day of the report, YYYY-MM-DD (UTC)")
			kind := fs.String("kind", "", "kind of the difference: "+strings.Join(recon.Kinds, ", "))
			order := fs.String("order", "", "order id of the difference")
			note := fs.String("note", "", "what was done about it")
			return func(*client.Client) (string, string, any, string, error) {
				if _, err := recon.ParseDay(*day); err != nil {
					return "", "", nil, "", err
				}
				return "POST", "/v1/admin/recon/" + *day + "/resolutions", map[string]any{"kind": *kind, "order": *order, "note": *note}, "", nil
			}
		})
	}
	fs := flag.NewFlagSet("recon", flag.ContinueOnError)
	c := clientFlags(fs)
	day := fs.String("date", "", "day to reconcile, YYYY-MM-DD (UTC)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	show := fs.Bool("show", false, "show the last stored report of the day instead of running one")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	if fs.NArg() > 0 {
		return app.UsageErr(fmt.Errorf("recon takes flags (or `recon resolve`), not %q", fs.Args()))
	}
	if _, err := recon.ParseDay(*day); err != nil {
		return app.UsageErr(fmt.Errorf("--date: %w", err))
	}
	var b json.RawMessage
	var err error
	if *show {
		b, _, err = c.Call(ctx, "GET", "/v1/admin/recon/"+*day, nil, "")
	} else {
		b, _, err = c.Call(ctx, "POST", "/v1/admin/recon", map[string]any{"day": *day}, "")
	}
	if err != nil {
		return err
	}
	var rep recon.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("the server's report: %w", err)
	}
	if *asJSON {
		if err := printJSON(out, b); err != nil {
			return err
		}
	} else {
		printReport(out, rep)
	}
	if !rep.Sound {
		return fmt.Errorf("%w: %d differences unresolved on %s", errUnsound, rep.Unresolved, rep.Day)
	}
	return nil
}

func printReport(out io.Writer, r recon.Report) {
	fmt.Fprintf(out, "reconciliation of %s (report %d, %s)\n", r.Day, r.ID, r.RanAt.Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(out, "  channel: %d paid %s, %d paid out %s\n", r.Channel.Pays, r.Channel.Paid, r.Channel.Payouts, r.Channel.PaidOut)
	fmt.Fprintf(out, "  ours:    %d paid %s, %d paid out %s\n", r.Ours.Pays, r.Ours.Paid, r.Ours.Payouts, r.Ours.PaidOut)
	for _, d := range r.Differences {
		status := "UNRESOLVED"
		switch {
		case d.Repaired:
			status = "repaired"
		case d.Resolved:
			status = "resolved"
		}
		fmt.Fprintf(out, "  %-10s %-20s order %s: ours %q, channel %q", status, d.Kind, d.Order, d.Ours, d.Channel)
		if d.Note != "" {
			fmt.Fprintf(out, " (%s)", d.Note)
		}
		fmt.Fprintln(out)
	}
	for _, c := range r.Checks {
		status := "ok"
		switch {
		case c.Skipped:
			status = "skipped"
		case !c.OK:
			status = "FAILED"
		}
		fmt.Fprintf(out, "  check %-18s %s", c.Name, status)
		if len(c.Detail) > 0 {
			fmt.Fprintf(out, ": %s", strings.Join(c.Detail, "; "))
		}
		fmt.Fprintln(out)
	}
	verdict := "sound"
	if !r.Sound {
		verdict = "NOT sound"
	}
	fmt.Fprintf(out, "  %d differences, %d repaired, %d unresolved: the books are %s\n", len(r.Differences), r.Repaired, r.Unresolved, verdict)
}

// runArchive archives the day partitions before a day on the server, or
// lists them (--list).
func runArchive(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	return sub(ctx, "archive", args, out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
		before := fs.String("before", "", "archive the days before this one, YYYY-MM-DD (UTC, at most today)")
		list := fs.Bool("list", false, "list the day partitions instead")
		return func(*client.Client) (string, string, any, string, error) {
			if *list {
				return "GET", "/v1/admin/partitions", nil, "", nil
			}
			if _, err := recon.ParseDay(*before); err != nil {
				return "", "", nil, "", fmt.Errorf("--before: %w", err)
			}
			return "POST", "/v1/admin/archive", map[string]any{"before": *before}, "", nil
		}
	})
}
