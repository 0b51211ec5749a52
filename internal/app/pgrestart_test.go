package app

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"hongbao/internal/hbtest"
	"hongbao/internal/httpapi"
	"hongbao/internal/money"
)

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
	dbs, err := OpenDatabases(t.Context(), Config{DataDir: dir, LedgerShards: 2, Durable: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sys, err := StartNode(t.Context(), dbs.Open, NodeOptions{LedgerShards: 2, PacketSets: 1, BusDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	base, secret, stopAPI, err := LocalAPI(sys, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stopAPI(); sys.Close(); dbs.Close() }()
	adm, _ := httpapi.IssueToken(secret, httpapi.Claims{Admin: true, Expires: time.Now().Add(time.Hour).Unix()})
	const workers, each = 8, 60
	for w := range workers {
		if st, m := hbtest.Post(t, base, "/v1/admin/deposits", adm, fmt.Sprint("fund-", w), map[string]any{"user": 100 + w, "amount": "100.00"}); st != 200 {
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
					st, _ := hbtest.Post(t, base, "/v1/transfers", tok, key, body)
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
