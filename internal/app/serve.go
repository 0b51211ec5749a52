package app

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"hongbao/internal/channel"
	"hongbao/internal/console"
	"hongbao/internal/flow"
	"hongbao/internal/httpapi"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/payment"
	"hongbao/internal/postgres"
)

// ServeConfig is the configuration of `hongbao serve`.
type ServeConfig struct {
	Config
	Addr         string
	TokenSecret  string
	NatsURL      string
	PacketSets   int
	Timeout      time.Duration
	MaxBody      int64
	TxRetention  time.Duration
	AnswerEarly  bool
	NodeID       string
	NatsReplicas int
	LogFormat    string // text or json
	LogLevel     string // debug, info, warn or error
	AccessLog    bool
	MaxAmount    money.Amount
	MaxBalance   money.Amount
	// The payment channel: its URL (empty: the built-in simulator on a
	// loopback port), the merchant secret, and the URL the channel calls
	// back (default: this server's address).
	ChannelURL    string
	ChannelSecret string
	PublicURL     string
	Limits        payment.Limits
	TopUpTTL      time.Duration
	QueryAfter    time.Duration
	ReconAfter    time.Duration
	LeaseTTL      time.Duration
}

// Bind registers serve's flags, with HONGBAO_* environment fallbacks.
func (c *ServeConfig) Bind(fs *flag.FlagSet) {
	c.Config.Bind(fs, "hongbao-data")
	fs.StringVar(&c.Addr, "addr", Env("HONGBAO_ADDR", "127.0.0.1:8080"), "listen address (HONGBAO_ADDR)")
	SecretVar(fs, &c.TokenSecret, "token-secret", "HONGBAO_TOKEN_SECRET", "secret that signs bearer tokens, at least 32 characters (HONGBAO_TOKEN_SECRET)")
	fs.StringVar(&c.NatsURL, "nats-url", Env("HONGBAO_NATS_URL", ""), "NATS cluster URL; empty runs JetStream in this process (HONGBAO_NATS_URL)")
	fs.IntVar(&c.PacketSets, "packet-sets", c.envInt("HONGBAO_PACKET_SETS", 2), "number of packet sets (HONGBAO_PACKET_SETS)")
	fs.DurationVar(&c.Timeout, "request-timeout", c.envDuration("HONGBAO_REQUEST_TIMEOUT", 10*time.Second), "per-request deadline (HONGBAO_REQUEST_TIMEOUT)")
	fs.Int64Var(&c.MaxBody, "max-body", 64<<10, "largest request body in bytes")
	fs.StringVar(&c.LogFormat, "log-format", Env("HONGBAO_LOG_FORMAT", "text"), "log format: text or json (HONGBAO_LOG_FORMAT)")
	fs.StringVar(&c.LogLevel, "log-level", Env("HONGBAO_LOG_LEVEL", "info"), "log level: debug, info, warn or error (HONGBAO_LOG_LEVEL)")
	fs.BoolVar(&c.AccessLog, "access-log", c.envBool("HONGBAO_ACCESS_LOG", true), "log every request: method, route, status, duration, request id (HONGBAO_ACCESS_LOG)")
	fs.IntVar(&c.NatsReplicas, "nats-replicas", c.envInt("HONGBAO_NATS_REPLICAS", 0), "replicas of the JetStream stream; 0: 1 in process, min(3, servers) on a cluster (HONGBAO_NATS_REPLICAS)")
	fs.StringVar(&c.NodeID, "node-id", Env("HONGBAO_NODE_ID", ""), "this node's name, the same across restarts; default host:data-dir (HONGBAO_NODE_ID)")
	c.MaxAmount, c.MaxBalance = flow.DefaultMaxAmount, ledger.DefaultMaxBalance
	fs.TextVar(&c.MaxAmount, "max-amount", c.envAmount("HONGBAO_MAX_AMOUNT", flow.DefaultMaxAmount), "largest single transfer, deposit or entry fee, in yuan (HONGBAO_MAX_AMOUNT)")
	fs.TextVar(&c.MaxBalance, "max-balance", c.envAmount("HONGBAO_MAX_BALANCE", ledger.DefaultMaxBalance), "largest wallet balance, in yuan (HONGBAO_MAX_BALANCE)")
	fs.StringVar(&c.ChannelURL, "channel-url", Env("HONGBAO_CHANNEL_URL", ""), "payment channel URL; empty starts the built-in simulator on a loopback port (HONGBAO_CHANNEL_URL)")
	SecretVar(fs, &c.ChannelSecret, "channel-secret", "HONGBAO_CHANNEL_SECRET", "merchant secret shared with the payment channel, at least 32 characters; empty with the built-in simulator: a fresh one (HONGBAO_CHANNEL_SECRET)")
	fs.StringVar(&c.PublicURL, "public-url", Env("HONGBAO_PUBLIC_URL", ""), "this server's URL as the payment channel reaches it, for callbacks; default http://ADDR (HONGBAO_PUBLIC_URL)")
	c.Limits = payment.DefaultLimits
	fs.TextVar(&c.Limits.TopUpPerDay, "topup-daily", c.envAmount("HONGBAO_TOPUP_DAILY", payment.DefaultLimits.TopUpPerDay), "top-ups per user and day (UTC), in yuan (HONGBAO_TOPUP_DAILY)")
	fs.TextVar(&c.Limits.WithdrawalPerDay, "withdraw-daily", c.envAmount("HONGBAO_WITHDRAW_DAILY", payment.DefaultLimits.WithdrawalPerDay), "withdrawals per user and day (UTC), in yuan (HONGBAO_WITHDRAW_DAILY)")
	fs.IntVar(&c.Limits.WithdrawalsPerDay, "withdrawals-daily", c.envInt("HONGBAO_WITHDRAWALS_DAILY", payment.DefaultLimits.WithdrawalsPerDay), "number of withdrawals per user and day (HONGBAO_WITHDRAWALS_DAILY)")
	fs.DurationVar(&c.TopUpTTL, "topup-ttl", c.envDuration("HONGBAO_TOPUP_TTL", 30*time.Minute), "a top-up unpaid this long is closed at the channel (HONGBAO_TOPUP_TTL)")
	fs.DurationVar(&c.QueryAfter, "channel-query-after", c.envDuration("HONGBAO_CHANNEL_QUERY_AFTER", 10*time.Second), "first wait before asking the channel about an order it has not answered definitely; doubles up to 5 min (HONGBAO_CHANNEL_QUERY_AFTER)")
	fs.DurationVar(&c.ReconAfter, "recon-after", c.envDuration("HONGBAO_RECON_AFTER", time.Hour), "reconcile yesterday this long after midnight UTC; 0 turns the schedule off (HONGBAO_RECON_AFTER)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.envDuration("HONGBAO_LEASE_TTL", 6*time.Second), "how long a node that died keeps its packet sets before another node takes them (HONGBAO_LEASE_TTL)")
	fs.BoolVar(&c.AnswerEarly, "answer-early", c.envBool("HONGBAO_ANSWER_EARLY", false), "answer a cross-shard transfer or a send committed once its decision is on disk, its confirms going on in the background: lower latency, the receiver credited a moment later (HONGBAO_ANSWER_EARLY)")
	fs.DurationVar(&c.TxRetention, "tx-retention", c.envDuration("HONGBAO_TX_RETENTION", 7*24*time.Hour), "how long finished global transactions are kept (HONGBAO_TX_RETENTION)")
}

// Validate reports every problem at once.
func (c *ServeConfig) Validate() error {
	var errs []error
	if err := c.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.TokenSecret) < httpapi.MinSecret {
		errs = append(errs, fmt.Errorf("--token-secret (HONGBAO_TOKEN_SECRET) must be at least %d characters; generate one with: head -c 32 /dev/urandom | base64", httpapi.MinSecret))
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("--addr %q is not host:port", c.Addr))
	}
	if c.PacketSets < 1 || c.PacketSets > 1024 {
		errs = append(errs, fmt.Errorf("--packet-sets is %d; it must be 1..1024", c.PacketSets))
	}
	if c.Timeout <= 0 || c.MaxBody < 1024 {
		errs = append(errs, errors.New("--request-timeout must be positive and --max-body at least 1024"))
	}
	if c.MaxAmount < 1 || c.MaxBalance < c.MaxAmount || c.MaxBalance > money.Max {
		errs = append(errs, fmt.Errorf("--max-amount %s and --max-balance %s: want 0.01 <= max-amount <= max-balance <= %s", c.MaxAmount, c.MaxBalance, money.Max))
	}
	if ov, err := c.overrides(); err == nil {
		known := PoolSizes(c.LedgerShards, c.PacketSets)
		for name := range ov {
			if _, ok := known[name]; !ok {
				errs = append(errs, fmt.Errorf("--database-urls names %s, which this node does not have (with %d ledger shards and %d packet sets)", name, c.LedgerShards, c.PacketSets))
			}
		}
	}
	if _, err := c.Logger(io.Discard); err != nil {
		errs = append(errs, err)
	}
	if c.NatsReplicas < 0 || c.NatsReplicas > 5 {
		errs = append(errs, fmt.Errorf("--nats-replicas %d: want 0 (automatic) or 1..5", c.NatsReplicas))
	}
	if c.ChannelURL != "" && len(c.ChannelSecret) < 32 {
		errs = append(errs, errors.New("--channel-secret (HONGBAO_CHANNEL_SECRET) must be at least 32 characters with --channel-url"))
	}
	for _, u := range []struct{ flag, v string }{{"--channel-url", c.ChannelURL}, {"--public-url", c.PublicURL}} {
		if pu, err := url.Parse(u.v); u.v != "" && (err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "") {
			errs = append(errs, fmt.Errorf("%s %q: want http(s)://host[:port]", u.flag, u.v))
		}
	}
	if c.Limits.TopUpPerDay < 1 || c.Limits.WithdrawalPerDay < 1 || c.Limits.WithdrawalsPerDay < 1 {
		errs = append(errs, errors.New("--topup-daily, --withdraw-daily and --withdrawals-daily must be positive"))
	}
	if c.TopUpTTL < time.Minute || c.QueryAfter < 100*time.Millisecond || c.QueryAfter > 5*time.Minute || c.ReconAfter < 0 || c.ReconAfter >= 24*time.Hour {
		errs = append(errs, errors.New("--topup-ttl at least 1m, --channel-query-after 100ms..5m, --recon-after 0..24h"))
	}
	if c.LeaseTTL < time.Second || c.LeaseTTL > time.Minute {
		errs = append(errs, fmt.Errorf("--lease-ttl %s: want 1s..1m", c.LeaseTTL))
	}
	if c.TxRetention < time.Hour {
		errs = append(errs, fmt.Errorf("--tx-retention %s: keep finished transactions at least an hour", c.TxRetention))
	}
	return errors.Join(errs...)
}

// Logger is the logger the configuration asks for, writing to w.
func (c *ServeConfig) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	o := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
}

// Serve runs `hongbao serve` until ctx ends: it binds the port, locks the
// data folder, starts the databases, the node and the API, and on the end
// of ctx drains and stops them all.
func Serve(ctx context.Context, cfg ServeConfig, out io.Writer, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.DataDir != "" {
		abs, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return err
		}
		cfg.DataDir = abs
	}
	// Bind first: a taken port is reported before anything starts.
	l, err := listenWaiting(ctx, cfg.Addr, portWait, log)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	defer l.Close()
	// One live serve per data folder; the lock dies with its process, so a
	// restart after kill -9 finds the folder free.
	if cfg.DataDir != "" {
		lock, err := postgres.LockDir(cfg.DataDir, "hongbao.lock")
		if err != nil {
			return err
		}
		defer lock.Unlock()
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + l.Addr().String()
	}
	srv, stop, err := startServer(ctx, cfg, log)
	if err != nil {
		return err
	}
	log.Info("hongbao serving", "addr", l.Addr().String(), "ledger_shards", cfg.LedgerShards, "packet_sets", cfg.PacketSets)
	fmt.Fprintf(out, "hongbao serving on http://%s (OpenAPI at /openapi.json, operator console at /console/)\n", l.Addr())
	return ServeUntilDone(ctx, srv, l, stop, log)
}

// startServer starts a node and its API; stop closes both.
func startServer(ctx context.Context, cfg ServeConfig, log *slog.Logger) (*http.Server, func(), error) {
	dbs, err := OpenDatabases(ctx, cfg.Config, log)
	if err != nil {
		return nil, nil, err
	}
	dbs.Plan(PoolSizes(cfg.LedgerShards, cfg.PacketSets))
	busDir := filepath.Join(cfg.DataDir, "nats")
	if cfg.DataDir == "" {
		busDir = filepath.Join(os.TempDir(), "hongbao-nats")
	}
	nodeID := cfg.NodeID
	if nodeID == "" {
		host, _ := os.Hostname()
		nodeID = host + ":" + cfg.DataDir
	}
	public := strings.TrimRight(cfg.PublicURL, "/")
	chURL, chSecret := cfg.ChannelURL, []byte(cfg.ChannelSecret)
	var sim *channel.Simulator
	if chURL == "" {
		// The built-in simulator, served under /sim on this server, its
		// orders kept in the data folder so that it survives a restart.
		if len(chSecret) < 32 {
			chSecret = make([]byte, 32)
			_, _ = rand.Read(chSecret)
		}
		sim = channel.NewSimulator(chSecret, channel.Knobs{})
		sim.Prefix = "/sim"
		if cfg.DataDir != "" {
			if err := sim.Persist(filepath.Join(cfg.DataDir, "channel-sim.json")); err != nil {
				dbs.Close()
				return nil, nil, err
			}
		}
		chURL = public + "/sim"
		log.Warn("payment channel: the built-in simulator (not a real channel: a payer pays an order by POSTing to its pay_url; use --channel-url for a real one)", "url", chURL)
	}
	ch := channel.NewClient(chURL, chSecret, public+"/v1/channel/notify")
	sys, err := StartNode(ctx, dbs.Open, NodeOptions{LedgerShards: cfg.LedgerShards, PacketSets: cfg.PacketSets,
		NatsURL: cfg.NatsURL, NatsReplicas: cfg.NatsReplicas, BusDir: busDir, TxRetention: cfg.TxRetention, AnswerEarly: cfg.AnswerEarly, NodeID: nodeID,
		MaxAmount: cfg.MaxAmount, MaxBalance: cfg.MaxBalance, Logger: log,
		Channel: ch, ChannelSecret: chSecret, ReconAfter: cfg.ReconAfter, URL: public, LeaseTTL: cfg.LeaseTTL,
		Payments: payment.Options{Limits: cfg.Limits, TopUpTTL: cfg.TopUpTTL, QueryAfter: cfg.QueryAfter}})
	if err != nil {
		dbs.Close()
		return nil, nil, err
	}
	api, err := httpapi.New(sys.Backend(), httpapi.Options{Secret: []byte(cfg.TokenSecret), MaxBody: cfg.MaxBody, Timeout: cfg.Timeout,
		Logger: log, AccessLog: cfg.AccessLog})
	if err != nil {
		sys.Close()
		dbs.Close()
		return nil, nil, err
	}
	// The operators' console: static files in front of the API it calls.
	handler := console.Mount(api.Handler())
	if sim != nil {
		handler = withSimulator(handler, sim.Handler())
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: cfg.Timeout, WriteTimeout: cfg.Timeout + 5*time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
	hs.RegisterOnShutdown(api.Stop)
	return hs, func() {
		sys.Close()
		if sim != nil {
			_ = sim.Close()
		}
		dbs.Close()
	}, nil
}

// withSimulator serves the built-in channel simulator under /sim/ and
// everything else by next, untouched: not through a ServeMux, which would
// redirect a path that is not clean (//v1/wallet) before the API could
// answer it as no route.
func withSimulator(next, sim http.Handler) http.Handler {
	sim = http.StripPrefix("/sim", sim)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/sim/") {
			sim.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// StartSimulator serves a payment channel simulator on a free loopback
// port (serve without --channel-url, the demo, tests and benchmarks).
func StartSimulator(secret []byte, k channel.Knobs) (*channel.Simulator, string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	sim := channel.NewSimulator(secret, k)
	hs := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(l) //nolint:errcheck // ends with Close
	return sim, "http://" + l.Addr().String(), func() { _ = hs.Close() }, nil
}

// ServeUntilDone serves hs on l until ctx ends, then drains: no new
// connections, requests in flight finish (up to 30 s), then stop runs (for
// serve: the node stops its parts in order, the committer writing what is
// queued, the relay and consumers stopping, the bus and databases closing).
// Every server of the binary ends this way (serve, channel-sim).
func ServeUntilDone(ctx context.Context, hs *http.Server, l net.Listener, stop func(), log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		stop()
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: draining requests")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	stop()
	log.Info("stopped")
	return err
}

// LocalAPI serves a node's API on a free loopback port with a fresh
// signing secret (the demo and the in-process benchmarks talk to it over
// HTTP).
func LocalAPI(n *Node, log *slog.Logger) (url string, secret []byte, stop func(), err error) {
	secret = make([]byte, 32)
	_, _ = rand.Read(secret)
	api, err := httpapi.New(n.Backend(), httpapi.Options{Secret: secret, Logger: log})
	if err != nil {
		return "", nil, nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, nil, err
	}
	url = "http://" + l.Addr().String()
	// A channel client without a notify URL calls back to this API.
	if c, ok := n.o.Channel.(*channel.Client); ok && c.NotifyURL == "" {
		c.NotifyURL = url + "/v1/channel/notify"
	}
	hs := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 5 * time.Second}
	hs.RegisterOnShutdown(api.Stop)
	go hs.Serve(l) //nolint:errcheck // ends with Shutdown
	return url, secret, func() { _ = hs.Shutdown(context.Background()) }, nil
}

// portWait is how long serve waits for a port another process still holds.
const portWait = 5 * time.Second

// listenWaiting binds addr; while the port is taken it tries again for up
// to wait: a process killed with -9 a moment ago may still be letting go
// of it when its restart begins. A port still taken after that is the
// error.
func listenWaiting(ctx context.Context, addr string, wait time.Duration, log *slog.Logger) (net.Listener, error) {
	deadline := time.Now().Add(wait)
	for logged := false; ; logged = true {
		l, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return l, err
		}
		if !logged {
			log.Warn("the port is taken; waiting for it to be let go", "addr", addr, "for", wait)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return nil, err
		}
	}
}
