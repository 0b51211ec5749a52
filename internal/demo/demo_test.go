package demo

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The README's first command must keep working and reconciling.
func TestDemoReconciles(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := Main(t.Context(), []string{"--users", "300", "--durable=false"}, &out, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "everything reconciles") {
		t.Fatalf("demo output lacks the reconciliation:\n%s", out.String())
	}
}
