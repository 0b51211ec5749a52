package postgres

import (
	"errors"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// The error for missing binaries names both ways out.
func TestMissingBinaries(t *testing.T) {
	old := binGlob
	binGlob = "/nonexistent/*/bin"
	defer func() { binGlob = old }()
	t.Setenv("PATH", "")
	_, err := StartCluster(t.Context(), ClusterOptions{Dir: t.TempDir()})
	if !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("err = %v, want ErrNoBinaries", err)
	}
	for _, want := range []string{"apt-get install -y postgresql", "--database-url", "HONGBAO_DATABASE_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestMigrationsParse(t *testing.T) {
	t.Parallel()
	good := fstest.MapFS{"002_b.sql": {Data: []byte("SELECT 2")}, "001_a.sql": {Data: []byte("SELECT 1")}, "README": {Data: []byte("x")}}
	ms, err := Migrations("x", good)
	if err != nil || len(ms) != 2 || ms[0].Version != 1 || ms[1].Name != "002_b.sql" {
		t.Fatalf("migrations = %+v, %v", ms, err)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"no number": {"a_b.sql": {Data: []byte("x")}},
		"twice":     {"001_a.sql": {Data: []byte("x")}, "1_b.sql": {Data: []byte("y")}},
	} {
		if _, err := Migrations("x", fsys); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Reap leaves a cluster its live owner holds alone, and does nothing to a
// folder whose server is not running.
func TestReapSparesLiveClusters(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "hongbao-reap-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	defer os.RemoveAll(dir)
	c, err := StartCluster(t.Context(), ClusterOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := Reap(dir); !errors.Is(err, ErrDirInUse) {
		t.Fatalf("reap of a live cluster: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := Reap(dir); err != nil {
		t.Fatalf("reap of a stopped cluster: %v", err)
	}
}
