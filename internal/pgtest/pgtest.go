// Package pgtest gives tests a real PostgreSQL: one private cluster per test
// binary (started on first use, fsync off unless HONGBAO_PGTEST_DURABLE=1),
// a migrated template database per schema, and a fresh database per test.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/postgres"
)

var (
	clusterOnce sync.Once
	cluster     *postgres.Cluster
	clusterDir  string
	clusterErr  error

	templatesMu sync.Mutex
	templates   = map[string]string{}

	dbSeq atomic.Int64
)

// Main runs the tests of a package and stops the cluster afterwards. Use it
// from TestMain: func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	if cluster != nil {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
		}
		os.RemoveAll(clusterDir)
	}
	return code
}

// Cluster returns the test binary's private cluster, starting it on first use.
func Cluster(tb testing.TB) *postgres.Cluster {
	tb.Helper()
	clusterOnce.Do(func() {
		reapOrphans()
		clusterDir, clusterErr = os.MkdirTemp("", "hongbao-pgtest-")
		if clusterErr != nil {
			return
		}
		_ = os.Chmod(clusterDir, 0o755)
		cluster, clusterErr = postgres.StartCluster(context.Background(), postgres.ClusterOptions{
			Dir:            clusterDir,
			Durable:        os.Getenv("HONGBAO_PGTEST_DURABLE") == "1",
			MaxConnections: 400,
		})
	})
	if clusterErr != nil {
		tb.Fatalf("pgtest: start private cluster: %v", clusterErr)
	}
	return cluster
}

// Schema names a set of migrations; databases with the same schema name are
// cloned from one template.
type Schema struct {
	Name       string
	Migrations [][]postgres.Migration
}

// NewDB creates a fresh, migrated database for the test and returns a pool
// to it, closed when the test ends (the whole cluster goes after the run).
func NewDB(tb testing.TB, schema Schema) *pgxpool.Pool {
	tb.Helper()
	url := NewDBURL(tb, schema)
	pool, err := postgres.Open(context.Background(), url, 64)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// NewDBURL is NewDB returning the URL, for code that opens its own pools.
func NewDBURL(tb testing.TB, schema Schema) string {
	tb.Helper()
	c := Cluster(tb)
	tmpl, err := template(c, schema)
	if err != nil {
		tb.Fatalf("pgtest: template %s: %v", schema.Name, err)
	}
	name := fmt.Sprintf("t%d_%s", dbSeq.Add(1), sanitize(tb.Name()))
	if len(name) > 60 {
		name = name[:60]
	}
	if err := c.CreateDatabase(context.Background(), name, tmpl); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return c.URL(name)
}

func template(c *postgres.Cluster, s Schema) (string, error) {
	templatesMu.Lock()
	defer templatesMu.Unlock()
	if t, ok := templates[s.Name]; ok {
		return t, nil
	}
	name := "tmpl_" + sanitize(s.Name)
	ctx := context.Background()
	if err := c.CreateDatabase(ctx, name, ""); err != nil {
		return "", err
	}
	pool, err := postgres.Open(ctx, c.URL(name), 2)
	if err != nil {
		return "", err
	}
	err = postgres.Migrate(ctx, pool, s.Migrations...)
	pool.Close()
	if err != nil {
		return "", err
	}
	templates[s.Name] = name
	return name, nil
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// Opener returns a function that opens named, migrated databases for the
// test: the first call for a name creates the database, later calls open
// the same one again (a restarted node finds its data). Pools close with
// the test.
func Opener(tb testing.TB) func(ctx context.Context, name string, maxConns int32, migrations ...[]postgres.Migration) (*pgxpool.Pool, error) {
	var mu sync.Mutex
	urls := map[string]string{}
	return func(ctx context.Context, name string, maxConns int32, migrations ...[]postgres.Migration) (*pgxpool.Pool, error) {
		mu.Lock()
		url, ok := urls[name]
		if !ok {
			url = NewDBURL(tb, Schema{Name: name, Migrations: migrations})
			urls[name] = url
		}
		mu.Unlock()
		pool, err := postgres.Open(ctx, url, maxConns)
		if err != nil {
			return nil, err
		}
		tb.Cleanup(pool.Close)
		return pool, nil
	}
}

// reapOrphans stops and removes the clusters of test binaries that died
// without stopping theirs (a test timeout panics past Main): a folder older
// than a few minutes whose lock no live process holds. (A fresh folder may
// belong to a binary that is just starting its cluster.)
func reapOrphans() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "hongbao-pgtest-*"))
	for _, dir := range dirs {
		if st, err := os.Stat(dir); err != nil || time.Since(st.ModTime()) < 5*time.Minute {
			continue
		}
		if err := postgres.Reap(dir); err == nil {
			os.RemoveAll(dir)
		}
	}
}
