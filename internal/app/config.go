package app

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"hongbao/internal/money"
)

// Config is what every subcommand that touches data needs.
type Config struct {
	// DataDir holds the private PostgreSQL cluster when DatabaseURL is empty.
	DataDir string
	// DatabaseURL of an external server; "{db}" in it is replaced by each
	// shard's database name (hongbao_ledger_0, ...). Empty: private cluster.
	DatabaseURL string
	// DatabaseURLs places single databases elsewhere: "name=url" pairs
	// separated by spaces, e.g. "hongbao_packet_1=postgres://db7/hb_p1".
	// A name not listed uses DatabaseURL (or the private cluster).
	DatabaseURLs string
	// LedgerShards is the number of ledger shards.
	LedgerShards int
	// Durable keeps fsync and synchronous_commit on in the private cluster.
	Durable bool
	// DBConnections is the connection budget of this process on each
	// PostgreSQL server: the pools of the databases on one server add up to
	// at most this (0: 90 on an external server, which fits PostgreSQL's
	// default max_connections of 100; 380 in the private cluster).
	DBConnections int
	// envErrs are HONGBAO_* values that could not be read: Validate
	// reports them, nothing starts on a guess.
	envErrs []error
}

// Bind registers the shared flags, with HONGBAO_* environment fallbacks
// when defaultDataDir is set (serve). Without it (demo, bench) the flags
// have no environment fallback: they never touch a service's database
// unless one is given explicitly on the command line.
func (c *Config) Bind(fs *flag.FlagSet, defaultDataDir string) {
	service := defaultDataDir != ""
	get := func(name, def string) string {
		if service {
			return Env(name, def)
		}
		return def
	}
	fs.StringVar(&c.DataDir, "data-dir", get("HONGBAO_DATA_DIR", defaultDataDir), "folder of the private PostgreSQL cluster (HONGBAO_DATA_DIR for serve)")
	if service {
		SecretVar(fs, &c.DatabaseURL, "database-url", "HONGBAO_DATABASE_URL", "external PostgreSQL URL with {db} for the database name; empty runs a private cluster (HONGBAO_DATABASE_URL)")
		SecretVar(fs, &c.DatabaseURLs, "database-urls", "HONGBAO_DATABASE_URLS", "space-separated name=url pairs that put single shard databases on their own servers (HONGBAO_DATABASE_URLS)")
	} else {
		fs.Var(secretValue{&c.DatabaseURL}, "database-url", "external PostgreSQL URL with {db} for the database name; empty: a fresh private cluster")
		fs.Var(secretValue{&c.DatabaseURLs}, "database-urls", "space-separated name=url pairs that put single shard databases on their own servers")
	}
	shards := 2
	durable := true
	if service {
		shards, durable = c.envInt("HONGBAO_LEDGER_SHARDS", 2), c.envBool("HONGBAO_DURABLE", true)
	}
	fs.IntVar(&c.LedgerShards, "ledger-shards", shards, "number of ledger shards (HONGBAO_LEDGER_SHARDS for serve)")
	fs.BoolVar(&c.Durable, "durable", durable, "fsync and synchronous_commit on in the private cluster (HONGBAO_DURABLE for serve)")
	conns := 0
	if service {
		conns = c.envInt("HONGBAO_DB_CONNECTIONS", 0)
	}
	fs.IntVar(&c.DBConnections, "db-connections", conns, "connections this process may open on each PostgreSQL server, shared by the pools of its databases there; 0: 90 external, 380 private (HONGBAO_DB_CONNECTIONS for serve)")
}

// Validate reports every problem at once, in words an operator can act on.
func (c *Config) Validate() error {
	errs := append([]error(nil), c.envErrs...)
	if c.DatabaseURL == "" && c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is empty and no --database-url is given: one of them is needed"))
	}
	if c.DatabaseURL != "" && !strings.Contains(c.DatabaseURL, "{db}") {
		errs = append(errs, errors.New("--database-url must contain {db} where each shard's database name goes, e.g. postgres://user:pass@host:5432/{db}"))
	}
	if _, err := c.overrides(); err != nil {
		errs = append(errs, err)
	}
	if c.DBConnections < 0 || (c.DBConnections > 0 && c.DBConnections < 8) {
		errs = append(errs, fmt.Errorf("--db-connections %d: want 0 (automatic) or at least 8", c.DBConnections))
	}
	if c.LedgerShards < 1 || c.LedgerShards > 1024 {
		errs = append(errs, fmt.Errorf("--ledger-shards is %d; it must be 1..1024", c.LedgerShards))
	}
	return errors.Join(errs...)
}

// secretValue is a flag whose value is never shown: -h and error
// messages print "(set)" for it, never the secret.
type secretValue struct{ p *string }

func (v secretValue) String() string {
	if v.p == nil || *v.p == "" {
		return ""
	}
	return "(set)"
}

func (v secretValue) Set(s string) error { *v.p = s; return nil }

// SecretVar binds a secret flag with an environment fallback.
func SecretVar(fs *flag.FlagSet, p *string, name, envName, usage string) {
	*p = Env(envName, "")
	fs.Var(secretValue{p}, name, usage)
}

// SecretString is SecretVar returning a pointer, like fs.String.
func SecretString(fs *flag.FlagSet, name, envName, usage string) *string {
	p := new(string)
	SecretVar(fs, p, name, envName, usage)
	return p
}

// Env is the environment variable name, or def when it is not set.
func Env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func (c *Config) envInt(name string, def int) int {
	if v, ok := os.LookupEnv(name); ok {
		x, err := strconv.Atoi(v)
		if err == nil && !strings.HasPrefix(v, "+") {
			return x
		}
		c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not a whole number", name, v))
	}
	return def
}

func (c *Config) envBool(name string, def bool) bool {
	if v, ok := os.LookupEnv(name); ok {
		x, err := strconv.ParseBool(v)
		if err == nil {
			return x
		}
		c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not true or false", name, v))
	}
	return def
}

func (c *Config) envDuration(name string, def time.Duration) time.Duration {
	if v, ok := os.LookupEnv(name); ok {
		x, err := time.ParseDuration(v)
		if err == nil {
			return x
		}
		c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not a duration like 10s", name, v))
	}
	return def
}

func (c *Config) envAmount(name string, def money.Amount) money.Amount {
	if v, ok := os.LookupEnv(name); ok {
		x, err := money.Parse(v)
		if err == nil {
			return x
		}
		c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q is not an amount like 1000000.00", name, v))
	}
	return def
}

// overrides parses DatabaseURLs.
func (c *Config) overrides() (map[string]string, error) {
	out := map[string]string{}
	for _, pair := range strings.Fields(c.DatabaseURLs) {
		name, url, ok := strings.Cut(pair, "=")
		if !ok || !strings.HasPrefix(name, "hongbao_") || !strings.HasPrefix(url, "postgres") {
			return nil, fmt.Errorf("--database-urls: %q is not name=postgres://... with a name like hongbao_packet_1", pair)
		}
		out[name] = url
	}
	return out, nil
}
