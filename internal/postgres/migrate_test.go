package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/hbtest"
	"hongbao/internal/pgtest"
	"hongbao/internal/postgres"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

// Concurrent starters apply each migration once, under the advisory lock.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDBURL(t, pgtest.Schema{Name: "empty"})
	set := []postgres.Migration{{Source: "t", Version: 1, Name: "001_t.sql", SQL: "CREATE TABLE t (id int); INSERT INTO t VALUES (1)"},
		{Source: "t", Version: 2, Name: "002_t.sql", SQL: "INSERT INTO t VALUES (2)"}}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			pool, err := postgres.Open(context.Background(), url, 2)
			if err != nil {
				errs[i] = err
				return
			}
			defer pool.Close()
			errs[i] = postgres.Migrate(context.Background(), pool, set)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows = %d, %v; want each migration applied once", n, err)
	}
	if err := postgres.Migrate(context.Background(), pool, []postgres.Migration{{Source: "t", Version: 3, Name: "003_bad.sql", SQL: "SELEC nonsense"}}); err == nil || !strings.Contains(err.Error(), "003_bad.sql") {
		t.Fatalf("a broken migration: %v", err)
	}
}

func TestOpenRedactsURL(t *testing.T) {
	t.Parallel()
	_, err := postgres.Open(context.Background(), "postgres://u:sekrit@host:99999999/db", 1)
	if err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Fatalf("error %v leaks the password or is nil", err)
	}
}

// A pool plans without parallel workers unless its URL asks for them.
func TestOpenWithoutParallelPlans(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDBURL(t, pgtest.Schema{Name: "empty"})
	for _, c := range []struct{ url, want string }{{url, "0"}, {url + "&max_parallel_workers_per_gather=2", "2"}} {
		pool, err := postgres.Open(t.Context(), c.url, 1)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		err = pool.QueryRow(t.Context(), "SHOW max_parallel_workers_per_gather").Scan(&got)
		pool.Close()
		if err != nil || got != c.want {
			t.Fatalf("%s: max_parallel_workers_per_gather %q, want %q: %v", c.url, got, c.want, err)
		}
	}
}
