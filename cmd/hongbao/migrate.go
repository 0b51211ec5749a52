package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"hongbao/internal/app"
	"hongbao/internal/slots"
)

// errNotMoved makes `hongbao migrate` exit 1 when a migration was cancelled.
var errNotMoved = errors.New("the slots did not move")

// runMigrate moves ledger slots to another shard on the server and follows
// the migration to its end; or lists, shows or cancels migrations.
func runMigrate(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	c := clientFlags(fs)
	slotList := fs.String("slots", "", "slots to move, comma-separated (0..1023), all on one shard now")
	to := fs.Int("to", -1, "the ledger shard to move them to")
	list := fs.Bool("list", false, "list the latest migrations instead")
	show := fs.Int64("show", 0, "show one migration with its steps")
	cancel := fs.Int64("cancel", 0, "cancel a migration that has not switched yet")
	asJSON := fs.Bool("json", false, "print the migration as JSON")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	if fs.NArg() > 0 {
		return app.UsageErr(fmt.Errorf("migrate takes flags, not %q", fs.Args()))
	}
	var b json.RawMessage
	var err error
	switch {
	case *list:
		b, _, err = c.Call(ctx, "GET", "/v1/admin/migrations", nil, "")
		if err != nil {
			return err
		}
		return printJSON(out, b)
	case *show > 0:
		b, _, err = c.Call(ctx, "GET", fmt.Sprintf("/v1/admin/migrations/%d", *show), nil, "")
	case *cancel > 0:
		b, _, err = c.Call(ctx, "POST", fmt.Sprintf("/v1/admin/migrations/%d/cancel", *cancel), nil, "")
	default:
		var nums []int
		for _, f := range strings.Split(*slotList, ",") {
			n, perr := strconv.Atoi(strings.TrimSpace(f))
			if perr != nil || n < 0 || n > 1023 {
				return app.UsageErr(fmt.Errorf("--slots: %q is not a slot 0..1023", f))
			}
			nums = append(nums, n)
		}
		if *to < 0 {
			return app.UsageErr(fmt.Errorf("--to: name the ledger shard to move the slots to"))
		}
		b, _, err = c.Call(ctx, "POST", "/v1/admin/migrations", map[string]any{"slots": nums, "to": *to}, "")
	}
	if err != nil {
		return err
	}
	var m slots.Migration
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("the server's migration: %w", err)
	}
	// Follow it to its end (show and cancel too: a cancel ends cancelled).
	for *show == 0 && m.State != slots.Done && m.State != slots.Cancelled {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if b, _, err = c.Call(ctx, "GET", fmt.Sprintf("/v1/admin/migrations/%d", m.ID), nil, ""); err != nil {
			return err
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
	}
	if *asJSON {
		if err := printJSON(out, b); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "migration %d: slots %v from shard %d to shard %d: %s (%d wallets, %d fen)\n", m.ID, m.Slots, m.From, m.To, m.State, m.Wallets, m.Amount)
		for _, s := range m.Steps {
			fmt.Fprintf(out, "  %s  %-10s %s\n", s.At.UTC().Format("15:04:05.000 MST"), s.State, s.Note)
		}
		if m.Error != "" {
			fmt.Fprintf(out, "  error: %s\n", m.Error)
		}
	}
	if m.State == slots.Cancelled && *cancel == 0 {
		return fmt.Errorf("%w: %s", errNotMoved, m.Error)
	}
	return nil
}
