package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"hongbao/internal/httpapi"
)

// client calls a running server for the operator commands.
type client struct {
	url, token string
	http       *http.Client
}

func clientFlags(fs *flag.FlagSet) *client {
	c := &client{http: &http.Client{Timeout: 30 * time.Second}}
	fs.StringVar(&c.url, "url", env("HONGBAO_URL", "http://127.0.0.1:8080"), "server URL (HONGBAO_URL)")
	secretVar(fs, &c.token, "token", "HONGBAO_TOKEN", "bearer token from `hongbao token` (HONGBAO_TOKEN)")
	return c
}

// call sends a request and returns the JSON body; an API error becomes an
// error with its code and message.
func (c *client) call(ctx context.Context, method, path string, body any, key string) (json.RawMessage, int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.url, "/")+path, rd)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, resp.StatusCode, err
	}
	if resp.StatusCode >= 400 {
		var e struct{ Code, Message string }
		_ = json.Unmarshal(b, &e)
		return b, resp.StatusCode, fmt.Errorf("%s %s: HTTP %d %s: %s", method, path, resp.StatusCode, e.Code, e.Message)
	}
	return b, resp.StatusCode, nil
}

func newKey() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
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

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "help" }

// verbs prints a command's verbs: as help (exit 0) when asked for, as a
// usage error (exit 2) when none was given.
func verbs(out io.Writer, args []string, text string) error {
	if len(args) == 0 {
		return usageErr(errors.New("which one? " + text))
	}
	fmt.Fprintln(out, "usage: "+text)
	return flag.ErrHelp
}

// sub runs a client subcommand: parse, call, print.
func sub(ctx context.Context, name string, args []string, out io.Writer, setup func(fs *flag.FlagSet) func(c *client) (method, path string, body any, key string, err error)) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c := clientFlags(fs)
	build := setup(fs)
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	method, path, body, key, err := build(c)
	if err != nil {
		return err
	}
	b, _, err := c.call(ctx, method, path, body, key)
	if err != nil {
		return err
	}
	return printJSON(out, b)
}

func runWallet(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	return sub(ctx, "wallet", args, out, func(fs *flag.FlagSet) func(*client) (string, string, any, string, error) {
		statement := fs.Bool("statement", false, "show the statement instead of the balance")
		return func(*client) (string, string, any, string, error) {
			if *statement {
				return "GET", "/v1/wallet/statement", nil, "", nil
			}
			return "GET", "/v1/wallet", nil, "", nil
		}
	})
}

func runTransfer(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	return sub(ctx, "transfer", args, out, func(fs *flag.FlagSet) func(*client) (string, string, any, string, error) {
		to := fs.Int64("to", 0, "receiving user")
		amount := fs.String("amount", "", "amount, e.g. 12.34")
		key := fs.String("key", newKey(), "idempotency key (reuse it to retry safely)")
		return func(*client) (string, string, any, string, error) {
			return "POST", "/v1/transfers", map[string]any{"to": *to, "amount": *amount}, *key, nil
		}
	})
}

func runDeposit(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	return sub(ctx, "deposit", args, out, func(fs *flag.FlagSet) func(*client) (string, string, any, string, error) {
		user := fs.Int64("user", 0, "user to credit")
		amount := fs.String("amount", "", "amount, e.g. 100.00")
		key := fs.String("key", newKey(), "idempotency key")
		return func(*client) (string, string, any, string, error) {
			return "POST", "/v1/admin/deposits", map[string]any{"user": *user, "amount": *amount}, *key, nil
		}
	})
}

func runPacket(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	if len(args) == 0 || isHelp(args[0]) {
		return verbs(out, args, "hongbao packet send|grab|show|sent|received [flags]; hongbao packet <verb> -h for its flags")
	}
	switch args[0] {
	case "send":
		return sub(ctx, "packet send", args[1:], out, func(fs *flag.FlagSet) func(*client) (string, string, any, string, error) {
			kind := fs.String("kind", "lucky", "single, lucky or equal")
			to := fs.Int64("to", 0, "receiver of a single packet")
			group := fs.Int64("group", 0, "group of a lucky or equal packet")
			amount := fs.String("amount", "", "total amount, e.g. 88.88")
			shares := fs.Int("shares", 0, "number of shares")
			greeting := fs.String("greeting", "恭喜发财", "greeting")
			expires := fs.Int("expires-in", 0, "seconds until it expires (0: 24 h)")
			key := fs.String("key", newKey(), "idempotency key")
			return func(*client) (string, string, any, string, error) {
				return "POST", "/v1/packets", map[string]any{"kind": *kind, "receiver": *to, "group": *group, "amount": *amount,
					"shares": *shares, "greeting": *greeting, "expires_in_seconds": *expires}, *key, nil
			}
		})
	case "grab", "show":
		verb := args[0]
		return sub(ctx, "packet "+verb, args[1:], out, func(fs *flag.FlagSet) func(*client) (string, string, any, string, error) {
			id := fs.String("id", "", "packet id")
			return func(*client) (string, string, any, string, error) {
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
		return sub(ctx, "packet "+verb, args[1:], out, func(fs *flag.FlagSet) func(*client) (string, string, any, string, error) {
			return func(*client) (string, string, any, string, error) { return "GET", "/v1/packets/" + verb, nil, "", nil }
		})
	}
	return fmt.Errorf("unknown packet command %q", args[0])
}

func runGroup(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	if len(args) == 0 || isHelp(args[0]) {
		return verbs(out, args, "hongbao group create|join|show|members [flags]; hongbao group <verb> -h for its flags")
	}
	verb := args[0]
	return sub(ctx, "group "+verb, args[1:], out, func(fs *flag.FlagSet) func(*client) (string, string, any, string, error) {
		id := fs.String("id", "", "group id")
		capacity := fs.Int("capacity", 500, "capacity (create)")
		fee := fs.String("fee", "0", "entry fee (create)")
		key := fs.String("key", newKey(), "idempotency key")
		return func(*client) (string, string, any, string, error) {
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
	return sub(ctx, "tx", args, out, func(fs *flag.FlagSet) func(*client) (string, string, any, string, error) {
		gid := fs.String("gid", "", "one global transaction")
		state := fs.String("state", "", "filter by state")
		return func(*client) (string, string, any, string, error) {
			if *gid != "" {
				return "GET", "/v1/admin/transactions/" + *gid, nil, "", nil
			}
			return "GET", "/v1/admin/transactions?state=" + *state, nil, "", nil
		}
	})
}

// apiClient acts as any user (or the admin) of a server whose token secret
// it holds: the demo and the HTTP benchmarks use it.
type apiClient struct {
	url    string
	secret []byte
	admin  string
	httpc  *http.Client
}

func newAPIClient(url string, secret []byte, conns int) *apiClient {
	c := &apiClient{url: url, secret: secret, httpc: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: max(2*conns, 2)}}}
	c.admin, _ = httpapi.IssueToken(secret, httpapi.Claims{Admin: true, Expires: time.Now().Add(24 * time.Hour).Unix()})
	return c
}

// call makes one request as user (0: the admin) and decodes the answer
// into out; it returns the status.
func (a *apiClient) call(ctx context.Context, method, path string, user int64, key string, body, out any) (int, error) {
	c := &client{url: a.url, token: a.admin, http: a.httpc}
	if user > 0 {
		tok, err := httpapi.IssueToken(a.secret, httpapi.Claims{User: user, Expires: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			return 0, err
		}
		c.token = tok
	}
	raw, status, err := c.call(ctx, method, path, body, key)
	if err != nil {
		return status, err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return status, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return status, nil
}
