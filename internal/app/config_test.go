package app

import (
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"hongbao/internal/payment"
)

func TestServeConfigValidate(t *testing.T) {
	t.Parallel()
	ok := ServeConfig{Config: Config{DataDir: "d", LedgerShards: 2}, Addr: "127.0.0.1:8080", TokenSecret: strings.Repeat("s", 32),
		PacketSets: 2, Timeout: time.Second, MaxBody: 4096, TxRetention: 24 * time.Hour, MaxAmount: 100, MaxBalance: 1000, LogFormat: "json", LogLevel: "info",
		Limits: payment.DefaultLimits, TopUpTTL: time.Hour, QueryAfter: time.Second, ReconAfter: time.Hour, LeaseTTL: 6 * time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := ok
	bad.TokenSecret = "short"
	bad.Addr = "nowhere"
	bad.LedgerShards = 0
	bad.DataDir = ""
	bad.DatabaseURL = "postgres://x/db"
	bad.PacketSets = 2000
	bad.TxRetention = time.Minute
	bad.DatabaseURLs = "hongbao_packet_1=postgres://x/p1 nonsense"
	bad.ChannelURL = "ftp://channel"
	bad.Limits.WithdrawalsPerDay = 0
	bad.TopUpTTL = time.Second
	err := bad.Validate()
	if err == nil {
		t.Fatal("a bad configuration was accepted")
	}
	for _, want := range []string{"--token-secret", "--addr", "--ledger-shards", "{db}", "--packet-sets", "--database-urls", "--tx-retention", "--channel-url", "--channel-secret", "--withdrawals-daily", "--topup-ttl"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

// The demo never opens the service's database through the environment.
func TestDemoIgnoresServiceEnvironment(t *testing.T) {
	t.Setenv("HONGBAO_DATA_DIR", "/service/data")
	t.Setenv("HONGBAO_DATABASE_URL", "postgres://svc@db/{db}")
	var c Config
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	c.Bind(fs, "")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "" || c.DatabaseURL != "" {
		t.Fatalf("demo picked up the service's environment: %+v", c)
	}
}

// A HONGBAO_* value that cannot be read stops serve instead of being
// replaced by the default.
func TestBadEnvironmentRefused(t *testing.T) {
	t.Setenv("HONGBAO_LEDGER_SHARDS", "4 ")
	t.Setenv("HONGBAO_REQUEST_TIMEOUT", "soon")
	t.Setenv("HONGBAO_PACKET_SETS", "+4")
	t.Setenv("HONGBAO_TOKEN_SECRET", strings.Repeat("s", 32))
	t.Setenv("HONGBAO_DATABASE_URLS", "hongbao_packet_9=postgres://x@127.0.0.1:2/p9")
	var c ServeConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.Bind(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	err := c.Validate()
	for _, want := range []string{"HONGBAO_LEDGER_SHARDS", "HONGBAO_REQUEST_TIMEOUT", "HONGBAO_PACKET_SETS", "hongbao_packet_9"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %s: %v", want, err)
		}
	}
}

// A port still held by a process that is going away (killed a moment
// ago) is waited for; one held for longer than the wait is the error.
func TestListenWaitsForThePort(t *testing.T) {
	t.Parallel()
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := held.Addr().String()
	if _, err := listenWaiting(t.Context(), addr, 200*time.Millisecond, slog.New(slog.DiscardHandler)); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("a port held past the wait: %v", err)
	}
	time.AfterFunc(300*time.Millisecond, func() { held.Close() })
	l, err := listenWaiting(t.Context(), addr, 5*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("a port let go during the wait: %v", err)
	}
	l.Close()
}

// With the built-in simulator, a path that is not clean still reaches the
// API (which answers it as no route) instead of a redirect; /sim/ reaches
// the simulator without its prefix (found from outside: //v1/wallet was a
// 307 with no body when serve ran the simulator).
func TestSimulatorBesideTheAPI(t *testing.T) {
	t.Parallel()
	var apiPath, simPath string
	h := withSimulator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { apiPath = r.URL.Path; w.WriteHeader(404) }),
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { simPath = r.URL.Path; w.WriteHeader(200) }))
	for _, p := range []string{"//v1/wallet", "/v1/./wallet", "/v1/packets/1/../1/grab", "/v1/packets//grab", "/v1/wallet/", "/v1/wallet"} {
		apiPath = ""
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://x"+p, nil))
		if rec.Code != 404 || apiPath != p {
			t.Errorf("%s: status %d, the API saw %q", p, rec.Code, apiPath)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "http://x/sim/orders/5/pay", nil))
	if rec.Code != 200 || simPath != "/orders/5/pay" {
		t.Errorf("/sim/: status %d, the simulator saw %q", rec.Code, simPath)
	}
}
