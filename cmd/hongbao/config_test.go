package main

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestTokenCommand(t *testing.T) {
	t.Setenv("HONGBAO_TOKEN_SECRET", strings.Repeat("k", 32))
	var out strings.Builder
	if err := runToken(t.Context(), []string{"--user", "7"}, &out, slog.New(slog.DiscardHandler)); err != nil || strings.Count(out.String(), ".") != 1 {
		t.Fatalf("token = %q, %v", out.String(), err)
	}
	for _, args := range [][]string{{}, {"--user", "7", "--admin"}, {"--user", "7", "--ttl", "-1s"}} {
		if err := runToken(t.Context(), args, &out, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("token %v accepted", args)
		}
	}
	t.Setenv("HONGBAO_TOKEN_SECRET", "short")
	if err := runToken(t.Context(), []string{"--admin"}, &out, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "HONGBAO_TOKEN_SECRET") {
		t.Fatalf("short secret: %v", err)
	}
}

// No secret is ever printed: not by -h, not by a mistyped flag.
func TestHelpShowsNoSecret(t *testing.T) {
	const secret = "super-secret-token-secret-0123456789"
	const dsn = "postgres://hb:p4ssw0rd@db:5432/{db}"
	t.Setenv("HONGBAO_TOKEN_SECRET", secret)
	t.Setenv("HONGBAO_DATABASE_URL", dsn)
	t.Setenv("HONGBAO_TOKEN", "bearer-token-value-xyz")
	t.Setenv("HONGBAO_CHANNEL_SECRET", secret)
	for _, args := range [][]string{{"serve", "-h"}, {"token", "-h"}, {"wallet", "-h"}, {"wallet", "--nope"}, {"transfer", "--nope"},
		{"bench", "spring-festival", "-h"}, {"demo", "-h"}, {"channel-sim", "-h"}, {"channel-sim", "--nope"}} {
		var out, errOut strings.Builder
		Main(t.Context(), args, &out, &errOut)
		all := out.String() + errOut.String()
		for _, s := range []string{secret, "p4ssw0rd", "bearer-token-value-xyz"} {
			if strings.Contains(all, s) {
				t.Errorf("%v prints a secret:\n%s", args, all)
			}
		}
	}
}

func TestVersionAndExitCodes(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
	}{{[]string{"version"}, 0}, {[]string{"serve", "-h"}, 0}, {[]string{"packet", "-h"}, 0}, {[]string{"bench", "-h"}, 0},
		{[]string{"help", "serve"}, 0}, {[]string{"serve", "--no-such-flag"}, 2}, {[]string{"packet"}, 2}, {[]string{"nonsense"}, 2},
		{[]string{"token"}, 2}, {[]string{"token", "--user", "1", "--admin"}, 2}, {[]string{"packet", "bogus"}, 2}, {[]string{"group", "bogus"}, 2},
		{[]string{"bench", "bogus"}, 2}, {[]string{"packet", "grab"}, 2}, {[]string{"transfer"}, 2}, {[]string{"serve", "extra"}, 2},
		{[]string{"version", "extra"}, 2}, {[]string{"wallet", "extra"}, 2}, {[]string{"archive", "--before", "2999-01-01"}, 2},
		{[]string{"recon", "--date", "nope"}, 2}, {[]string{"recon", "resolve", "--date", "2999-01-01"}, 2}} {
		var out, errOut strings.Builder
		if got := Main(t.Context(), c.args, &out, &errOut); got != c.code {
			t.Errorf("%v: exit %d, want %d (%s%s)", c.args, got, c.code, out.String(), errOut.String())
		}
		// A usage error always says what is wrong.
		if c.code == 2 && !strings.Contains(errOut.String()+out.String(), "hongbao") && !strings.Contains(errOut.String()+out.String(), "sage") {
			t.Errorf("%v: exit 2 and nothing said (%q)", c.args, out.String()+errOut.String())
		}
		if c.args[0] == "version" && c.code == 0 && !strings.HasPrefix(out.String(), "hongbao ") {
			t.Errorf("version prints %q", out.String())
		}
	}
}

func TestErrorsAsJSON(t *testing.T) {
	var out, errOut strings.Builder
	if code := Main(t.Context(), []string{"bench", "ledger", "--json", "--database-url", "postgres://nobody@127.0.0.1:1/{db}", "--duration", "1s"}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d", code)
	}
	var e map[string]string
	if err := json.Unmarshal([]byte(errOut.String()), &e); err != nil || e["error"] == "" || e["command"] != "bench" {
		t.Fatalf("stderr is not a JSON error: %q (%v)", errOut.String(), err)
	}
}
