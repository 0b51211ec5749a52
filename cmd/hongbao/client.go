package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hongbao/internal/app"
	"hongbao/internal/client"
	"io"
	"log/slog"
	"slices"
)

// clientFlags binds the flags every client command has.
func clientFlags(fs *flag.FlagSet) *client.Client {
	c := client.New(app.Env("HONGBAO_URL", "http://127.0.0.1:8080"), "")
	fs.StringVar(&c.URL, "url", c.URL, "server URL (HONGBAO_URL)")
	app.SecretVar(fs, &c.Token, "token", "HONGBAO_TOKEN", "bearer token from `hongbao token` (HONGBAO_TOKEN)")
	return c
}

func printJSON(out io.Writer, b json.RawMessage) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		_, err = out.Write(b)
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// sub runs a client subcommand: parse, call, print.
func sub(ctx context.Context, name string, args []string, out io.Writer, setup func(fs *flag.FlagSet) func(c *client.Client) (method, path string, body any, key string, err error)) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c := clientFlags(fs)
	build := setup(fs)
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	if fs.NArg() > 0 {
		return app.UsageErr(fmt.Errorf("%s takes no arguments, only flags: %q", name, fs.Args()))
	}
	method, path, body, key, err := build(c)
	if err != nil {
		return app.UsageErr(err) // what build refuses is the command line
	}
	b, _, err := c.Call(ctx, method, path, body, key)
	if err != nil {
		return err
	}
	return printJSON(out, b)
}

func runWallet(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	return sub(ctx, "wallet", args, out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
		statement := fs.Bool("statement", false, "show the statement instead of the balance")
		return func(*client.Client) (string, string, any, string, error) {
			if *statement {
				return "GET", "/v1/wallet/statement", nil, "", nil
			}
			return "GET", "/v1/wallet", nil, "", nil
		}
	})
}

func runTransfer(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	return sub(ctx, "transfer", args, out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
		to := fs.Int64("to", 0, "receiving user")
		amount := fs.String("amount", "", "amount, e.g. 12.34")
		key := fs.String("key", client.NewKey(), "idempotency key (reuse it to retry safely)")
		return func(*client.Client) (string, string, any, string, error) {
			if *to <= 0 || *amount == "" {
				return "", "", nil, "", errors.New("give --to USER and --amount, e.g. --to 2 --amount 12.34")
			}
			return "POST", "/v1/transfers", map[string]any{"to": *to, "amount": *amount}, *key, nil
		}
	})
}

func runDeposit(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	return sub(ctx, "deposit", args, out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
		user := fs.Int64("user", 0, "user to credit")
		amount := fs.String("amount", "", "amount, e.g. 100.00")
		key := fs.String("key", client.NewKey(), "idempotency key")
		return func(*client.Client) (string, string, any, string, error) {
			return "POST", "/v1/admin/deposits", map[string]any{"user": *user, "amount": *amount}, *key, nil
		}
	})
}

func runPacket(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	if len(args) == 0 || app.IsHelp(args[0]) {
		return app.Verbs(out, args, "hongbao packet send|grab|show|sent|received [flags]; hongbao packet <verb> -h for its flags")
	}
	switch args[0] {
	case "send":
		return sub(ctx, "packet send", args[1:], out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
			kind := fs.String("kind", "lucky", "single, lucky or equal")
			to := fs.Int64("to", 0, "receiver of a single packet")
			group := fs.Int64("group", 0, "group of a lucky or equal packet")
			amount := fs.String("amount", "", "total amount, e.g. 88.88")
			shares := fs.Int("shares", 0, "number of shares")
			greeting := fs.String("greeting", "恭喜发财", "greeting")
			expires := fs.Int("expires-in", 0, "seconds until it expires (0: 24 h)")
			key := fs.String("key", client.NewKey(), "idempotency key")
			return func(*client.Client) (string, string, any, string, error) {
				return "POST", "/v1/packets", map[string]any{"kind": *kind, "receiver": *to, "group": *group, "amount": *amount,
					"shares": *shares, "greeting": *greeting, "expires_in_seconds": *expires}, *key, nil
			}
		})
	case "grab", "show":
		verb := args[0]
		return sub(ctx, "packet "+verb, args[1:], out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
			id := fs.String("id", "", "packet id")
			return func(*client.Client) (string, string, any, string, error) {
				if *id == "" {
					return "", "", nil, "", errors.New("--id is required")
				}
				if verb == "grab" {
					return "POST", "/v1/packets/" + *id + "/grab", nil, "grab-" + *id, nil
				}
				return "GET", "/v1/packets/" + *id, nil, "", nil
			}
		})
	case "sent", "received":
		verb := args[0]
		return sub(ctx, "packet "+verb, args[1:], out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
			return func(*client.Client) (string, string, any, string, error) {
				return "GET", "/v1/packets/" + verb, nil, "", nil
			}
		})
	}
	return app.UsageErr(fmt.Errorf("unknown packet command %q: send, grab, show, sent or received", args[0]))
}

func runGroup(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	if len(args) == 0 || app.IsHelp(args[0]) {
		return app.Verbs(out, args, "hongbao group create|join|show|members [flags]; hongbao group <verb> -h for its flags")
	}
	verb := args[0]
	if !slices.Contains([]string{"create", "join", "show", "members"}, verb) {
		return app.UsageErr(fmt.Errorf("unknown group command %q: create, join, show or members", verb))
	}
	return sub(ctx, "group "+verb, args[1:], out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
		id := fs.String("id", "", "group id")
		capacity := fs.Int("capacity", 500, "capacity (create)")
		fee := fs.String("fee", "0", "entry fee (create)")
		key := fs.String("key", client.NewKey(), "idempotency key")
		return func(*client.Client) (string, string, any, string, error) {
			switch verb {
			case "create":
				return "POST", "/v1/groups", map[string]any{"capacity": *capacity, "fee": *fee}, *key, nil
			}
			if *id == "" {
				return "", "", nil, "", errors.New("--id is required")
			}
			switch verb {
			case "join":
				return "POST", "/v1/groups/" + *id + "/join", nil, *key, nil
			case "show":
				return "GET", "/v1/groups/" + *id, nil, "", nil
			case "members":
				return "GET", "/v1/groups/" + *id + "/members", nil, "", nil
			}
			return "", "", nil, "", fmt.Errorf("unknown group command %q", verb)
		}
	})
}

func runTx(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	return sub(ctx, "tx", args, out, func(fs *flag.FlagSet) func(*client.Client) (string, string, any, string, error) {
		gid := fs.String("gid", "", "one global transaction")
		state := fs.String("state", "", "filter by state")
		return func(*client.Client) (string, string, any, string, error) {
			if *gid != "" {
				return "GET", "/v1/admin/transactions/" + *gid, nil, "", nil
			}
			return "GET", "/v1/admin/transactions?state=" + *state, nil, "", nil
		}
	})
}

// apiClient acts as any user (or the admin) of a server whose token secret
// it holds: the demo and the HTTP benchmarks use it.
