package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hongbao/internal/httpapi"
	"hongbao/internal/money"
	"hongbao/internal/node"
	"hongbao/internal/pgtest"
)

// TestMain lets a test run `hongbao serve` as a child process of its own
// binary (HONGBAO_TEST_CHILD holds the arguments), so that it can be killed
// with SIGKILL like the real server.
func TestMain(m *testing.M) {
	if args := os.Getenv("HONGBAO_TEST_CHILD"); args != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := Main(ctx, strings.Fields(args), os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(pgtest.Main(m))
}

type child struct {
	cmd *exec.Cmd
	out *syncBuffer
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startServe(t *testing.T, dir, addr, secret string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HONGBAO_TEST_CHILD=serve --data-dir "+dir+" --addr "+addr+" --durable=false", "HONGBAO_TOKEN_SECRET="+secret)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, out: out}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
			_ = c.cmd.Wait()
		}
	})
	return c
}

func waitReady(t *testing.T, base string, c *child, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("serve not ready within %s:\n%s", within, c.out.String())
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func post(t *testing.T, base, path, tok, key string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", base+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// A serve killed with SIGKILL leaves its PostgreSQL running; the next serve
// on the same data folder stops that orphan and starts, and the money is
// as it was. While one serve runs, a second one on its folder is refused
// with the holder named.
func TestServeRestartsAfterKill9(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "hongbao-restart-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	secret := strings.Repeat("r", 32)
	addr := freeAddr(t)
	base := "http://" + addr
	first := startServe(t, dir, addr, secret)
	waitReady(t, base, first, 2*time.Minute)

	second := startServe(t, dir, freeAddr(t), secret)
	if err := second.cmd.Wait(); err == nil || !strings.Contains(second.out.String(), fmt.Sprintf("locked by process %d", first.cmd.Process.Pid)) {
		t.Fatalf("a second serve on the same folder: %v\n%s", err, second.out.String())
	}

	adm, _ := httpapi.IssueToken([]byte(secret), httpapi.Claims{Admin: true, Expires: time.Now().Add(time.Hour).Unix()})
	tok, _ := httpapi.IssueToken([]byte(secret), httpapi.Claims{User: 11, Expires: time.Now().Add(time.Hour).Unix()})
	if st, m := post(t, base, "/v1/admin/deposits", adm, "fund-11", map[string]any{"user": 11, "amount": "100.00"}); st != 200 {
		t.Fatalf("deposit: %d %v", st, m)
	}
	for i := range 10 {
		if st, m := post(t, base, "/v1/transfers", tok, fmt.Sprint("t-", i), map[string]any{"to": 12 + i, "amount": "1.00"}); st != 200 {
			t.Fatalf("transfer %d: %d %v", i, st, m)
		}
	}
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()

	again := startServe(t, dir, addr, secret)
	waitReady(t, base, again, 2*time.Minute)
	if !strings.Contains(again.out.String(), "orphaned postgres") {
		t.Fatalf("the restart did not meet the killed serve's postgres:\n%s", again.out.String())
	}
	// Replays answer as before and apply nothing; the wallet is exact.
	if st, m := post(t, base, "/v1/transfers", tok, "t-3", map[string]any{"to": 15, "amount": "1.00"}); st != 200 || m["outcome"] != "committed" {
		t.Fatalf("replay after restart: %d %v", st, m)
	}
	req, _ := http.NewRequest("GET", base+"/v1/wallet", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var w map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&w)
	if w["balance"] != "90.00" || w["held"] != "0.00" {
		t.Fatalf("wallet after kill -9 and restart: %v", w)
	}
	if err := again.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := again.cmd.Wait(); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, again.out.String())
	}
}

// PostgreSQL restarted in immediate mode under load: requests in the way
// get 503 with Retry-After (never a 500), and after it every transfer that
// was acknowledged, or is retried with its key until it is, applied once.
func TestPostgresRestartMidLoad(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "hongbao-pgrestart-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Durable: an immediate restart is a crash, and with synchronous_commit
	// off PostgreSQL would forget commits it had already acknowledged.
	dbs, err := OpenDatabases(t.Context(), Config{DataDir: dir, LedgerShards: 2, Durable: true}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	sys, err := node.StartSystem(t.Context(), dbs.Open, node.SystemOptions{LedgerShards: 2, PacketSets: 1, BusDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	base, secret, stopAPI, err := localAPI(sys, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stopAPI(); sys.Close(); dbs.Close() }()
	adm, _ := httpapi.IssueToken(secret, httpapi.Claims{Admin: true, Expires: time.Now().Add(time.Hour).Unix()})
	const workers, each = 8, 60
	for w := range workers {
		if st, m := post(t, base, "/v1/admin/deposits", adm, fmt.Sprint("fund-", w), map[string]any{"user": 100 + w, "amount": "100.00"}); st != 200 {
			t.Fatalf("deposit: %d %v", st, m)
		}
	}
	var mu sync.Mutex
	codes := map[int]int{}
	committed := make([]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			tok, _ := httpapi.IssueToken(secret, httpapi.Claims{User: int64(100 + w), Expires: time.Now().Add(time.Hour).Unix()})
			for i := range each {
				key := fmt.Sprint("t-", i)
				body := map[string]any{"to": 200 + i%7, "amount": "1.00"}
				// A final answer is 200 (committed: paid once) or 409 (cancelled,
				// by recovery when the restart stopped its tries: nothing paid).
				// Retry with the same key until the answer is final.
				for attempt := 0; ; attempt++ {
					st, _ := post(t, base, "/v1/transfers", tok, key, body)
					mu.Lock()
					codes[st]++
					mu.Unlock()
					if st == 200 {
						committed[w]++
					}
					if st == 200 || st == 409 || attempt > 600 {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				if i == each/3 && w == 0 {
					if err := dbs.cluster.RestartImmediate(); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	t.Logf("answers by status: %v", codes)
	if codes[500] > 0 || codes[0] > 0 {
		t.Fatalf("answers by status: %v", codes)
	}
	var total money.Amount
	for w := range workers {
		wl, err := sys.Ledgers.For(int64(100+w)).Wallet(t.Context(), int64(100+w))
		if err != nil {
			t.Fatal(err)
		}
		if wl.Balance != money.Amount(100_00-committed[w]*100) || wl.Held != 0 {
			t.Fatalf("worker %d wallet %+v: want %d committed transfers of 1.00, each paid once", w, wl, committed[w])
		}
		total += wl.Balance
	}
	for u := range 7 {
		wl, _ := sys.Ledgers.For(int64(200+u)).Wallet(t.Context(), int64(200+u))
		total += wl.Balance
	}
	if total != workers*100_00 {
		t.Fatalf("wallets hold %s, deposits were %s", total, money.Amount(workers*100_00))
	}
	if v, err := sys.Ledgers.Check(t.Context()); err != nil || len(v) > 0 {
		t.Fatalf("ledger check: %v %v", v, err)
	}
}
