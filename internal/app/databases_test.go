package app

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/pgtest"
	"hongbao/internal/postgres"
)

// A database named in --database-urls is opened there; the others follow
// the --database-url template.
func TestDatabaseOverrides(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDBURL(t, pgtest.Schema{Name: "empty"})
	d := &Databases{cfg: Config{DatabaseURL: "postgres://127.0.0.1:1/{db}", DatabaseURLs: "hongbao_packet_7=" + url}}
	pool, err := d.Open(context.Background(), "hongbao_packet_7", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var name string
	if err := pool.QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil || !strings.HasPrefix(name, "t") {
		t.Fatalf("opened %q, %v", name, err)
	}
	if _, err := d.Open(context.Background(), "hongbao_packet_8", 2); err == nil || !strings.Contains(err.Error(), "hongbao_packet_8") {
		t.Fatalf("a database not overridden went elsewhere: %v", err)
	}
}

// On an external server the databases are created when the role may; when
// it may not, the error names the database and what to run.
func TestExternalDatabasesCreated(t *testing.T) {
	t.Parallel()
	cl := pgtest.Cluster(t)
	ctx := t.Context()
	admin, err := pgx.Connect(ctx, cl.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	suffix := fmt.Sprint(time.Now().UnixNano())
	role := "nocreate_" + suffix
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN PASSWORD 'pw'"); err != nil {
		t.Fatal(err)
	}
	base, err := url.Parse(cl.URL("x"))
	if err != nil {
		t.Fatal(err)
	}
	template := strings.Replace(base.String(), "/x?", "/{db}?", 1)

	// The cluster's own role may create databases: they appear.
	d := &Databases{cfg: Config{DatabaseURL: template, DBConnections: 90}}
	d.Plan(map[string]int32{"hongbao_ledger_" + suffix: 64, "hongbao_dtx_" + suffix: 64})
	pool, err := d.Open(ctx, "hongbao_ledger_"+suffix, 64)
	if err != nil {
		t.Fatalf("open a missing database: %v", err)
	}
	defer d.Close()
	if got := pool.Config().MaxConns; got != 45 {
		t.Fatalf("pool of %d connections; the budget of 90 over two pools of 64 gives 45", got)
	}

	// A role that may not create databases gets told what to create.
	base.User = url.UserPassword(role, "pw")
	d2 := &Databases{cfg: Config{DatabaseURL: strings.Replace(base.String(), "/x?", "/{db}?", 1)}}
	_, err = d2.Open(ctx, "hongbao_group_"+suffix, 4)
	if !errors.Is(err, postgres.ErrMissingDatabase) || !strings.Contains(err.Error(), `CREATE DATABASE "hongbao_group_`+suffix+`"`) || strings.Contains(err.Error(), "pw") {
		t.Fatalf("a role without CREATEDB: %v", err)
	}
}

// Nodes starting at once all ensure the same databases: every one of them
// succeeds (the second CREATE of a name is refused by the catalog's unique
// index, which means it exists).
func TestConcurrentEnsureDatabase(t *testing.T) {
	t.Parallel()
	cl := pgtest.Cluster(t)
	url := cl.URL(fmt.Sprintf("hongbao_race_%d", time.Now().UnixNano()))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() { errs <- postgres.EnsureDatabase(t.Context(), url) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
