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
	// Pages go on past the first, and the sweep ends (not a timing check:
	// a busy machine may fit fewer pages in the second).
	if d := time.Since(start); n < 2 || d > 10*time.Second {
		t.Fatalf("%d pages in %s, want more than one and an end after about a second", n, d)
	}
}
