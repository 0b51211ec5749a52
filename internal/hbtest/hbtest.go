// Package hbtest holds what every package's tests share (test code only):
// the one way a test waits for a condition, and a TestMain that runs the
// tests against a private PostgreSQL and then checks no goroutine leaked.
package hbtest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sync"
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

// Buffer collects what goroutines write (a child's output, a logger) while
// a test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Post sends body as JSON to base+path with a bearer token and an
// idempotency key, and returns the status (0 when the server did not
// answer) and the decoded answer.
func Post(tb testing.TB, base, path, tok, key string, body any) (int, map[string]any) {
	tb.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", base+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}
