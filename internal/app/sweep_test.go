package app

import (
	"testing"
	"time"
)

// A sweeper goes on page after page while pages are full, stops at the
// first that is not, and never holds the sweep for much more than a
// second however full the pages stay.
func TestSweepPages(t *testing.T) {
	t.Parallel()
	n := 0
	pages(func() bool { n++; return n < 5 })
	if n != 5 {
		t.Fatalf("%d pages, want 5 (the fifth not full)", n)
	}
	start := time.Now()
	n = 0
	pages(func() bool { n++; time.Sleep(100 * time.Millisecond); return true })
	if d := time.Since(start); n < 5 || d > 3*time.Second {
		t.Fatalf("%d pages in %s, want a second's worth", n, d)
	}
}
