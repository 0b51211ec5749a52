package app

import (
	"context"
	"strings"
	"testing"

	"hongbao/internal/pgtest"
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
