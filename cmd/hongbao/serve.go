package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"hongbao/internal/app"
	"hongbao/internal/httpapi"
)

func runServe(ctx context.Context, args []string, out io.Writer, _ *slog.Logger) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var cfg app.ServeConfig
	cfg.Bind(fs)
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	if fs.NArg() > 0 {
		return app.UsageErr(fmt.Errorf("serve takes no arguments, only flags: %q", fs.Args()))
	}
	log, err := cfg.Logger(os.Stderr)
	if err != nil {
		return app.UsageErr(err)
	}
	return app.Serve(ctx, cfg, out, log)
}

func runToken(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	secret := app.SecretString(fs, "token-secret", "HONGBAO_TOKEN_SECRET", "the server's token secret (HONGBAO_TOKEN_SECRET)")
	user := fs.Int64("user", 0, "the user the token acts as")
	admin := fs.Bool("admin", false, "an admin token")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	newSecret := fs.Bool("new-secret", false, "print a fresh random secret and exit")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	if *newSecret {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		fmt.Fprintln(out, hex.EncodeToString(b))
		return nil
	}
	if (*user > 0) == *admin {
		return app.UsageErr(errors.New("give either --user ID or --admin"))
	}
	if *ttl <= 0 || *ttl > 366*24*time.Hour {
		return app.UsageErr(errors.New("--ttl must be positive and at most a year"))
	}
	tok, err := httpapi.IssueToken([]byte(*secret), httpapi.Claims{User: *user, Admin: *admin, Expires: time.Now().Add(*ttl).Unix()})
	if err != nil {
		return fmt.Errorf("%w (set --token-secret or HONGBAO_TOKEN_SECRET to the server's secret)", err)
	}
	fmt.Fprintln(out, tok)
	return nil
}
