// Package hbtest holds what every package's tests share (test code only):
// the one way a test waits for a condition, and a TestMain that runs the
// tests against a private PostgreSQL and then checks no goroutine leaked.
package hbtest

import (
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"hongbao/internal/pgtest"
)

// WaitFor waits until cond holds, checking often, and fails the test after
// within. It is the one way a test waits: no test sleeps for a condition.
func WaitFor(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// Main runs a package's tests with the test cluster (started on first use,
// stopped after) and fails the run if goroutines outlive the tests.
func Main(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(ignored...); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

// ignored are goroutines that belong to the test process, not to a test:
// the HTTP client's idle connections.
var ignored = []goleak.Option{
	goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
}
