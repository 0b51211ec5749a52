package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"hongbao/internal/hbtest"
	"hongbao/internal/httpapi"
)

// TestMain lets a test run `hongbao serve` as a child process of its own
// binary (HONGBAO_TEST_CHILD holds the arguments), so that it can be killed
// with SIGKILL like the real server.
func TestMain(m *testing.M) {
	if args := os.Getenv("HONGBAO_TEST_CHILD"); args != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := Main(ctx, strings.Fields(args), os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	hbtest.Main(m)
}

type child struct {
	cmd *exec.Cmd
	out *hbtest.Buffer
}

func startServe(t *testing.T, dir, addr, secret string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HONGBAO_TEST_CHILD=serve --data-dir "+dir+" --addr "+addr+" --durable=false", "HONGBAO_TOKEN_SECRET="+secret)
	out := &hbtest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, out: out}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
			_ = c.cmd.Wait()
		}
	})
	return c
}

func waitReady(t *testing.T, base string, c *child, within time.Duration) {
	t.Helper()
	hbtest.WaitFor(t, within, "serve to be ready (its output: "+c.out.String()+")", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A serve killed with SIGKILL leaves its PostgreSQL running; the next serve
// on the same data folder stops that orphan and starts, and the money is
// as it was. While one serve runs, a second one on its folder is refused
// with the holder named.
func TestServeRestartsAfterKill9(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "hongbao-restart-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	secret := strings.Repeat("r", 32)
	addr := freeAddr(t)
	base := "http://" + addr
	first := startServe(t, dir, addr, secret)
	waitReady(t, base, first, 2*time.Minute)

	second := startServe(t, dir, freeAddr(t), secret)
	if err := second.cmd.Wait(); err == nil || !strings.Contains(second.out.String(), fmt.Sprintf("locked by process %d", first.cmd.Process.Pid)) {
		t.Fatalf("a second serve on the same folder: %v\n%s", err, second.out.String())
	}

	adm, _ := httpapi.IssueToken([]byte(secret), httpapi.Claims{Admin: true, Expires: time.Now().Add(time.Hour).Unix()})
	tok, _ := httpapi.IssueToken([]byte(secret), httpapi.Claims{User: 11, Expires: time.Now().Add(time.Hour).Unix()})
	if st, m := hbtest.Post(t, base, "/v1/admin/deposits", adm, "fund-11", map[string]any{"user": 11, "amount": "100.00"}); st != 200 {
		t.Fatalf("deposit: %d %v", st, m)
	}
	for i := range 10 {
		if st, m := hbtest.Post(t, base, "/v1/transfers", tok, fmt.Sprint("t-", i), map[string]any{"to": 12 + i, "amount": "1.00"}); st != 200 {
			t.Fatalf("transfer %d: %d %v", i, st, m)
		}
	}
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()

	again := startServe(t, dir, addr, secret)
	waitReady(t, base, again, 2*time.Minute)
	if !strings.Contains(again.out.String(), "orphaned postgres") {
		t.Fatalf("the restart did not meet the killed serve's postgres:\n%s", again.out.String())
	}
	// Replays answer as before and apply nothing; the wallet is exact.
	if st, m := hbtest.Post(t, base, "/v1/transfers", tok, "t-3", map[string]any{"to": 15, "amount": "1.00"}); st != 200 || m["outcome"] != "committed" {
		t.Fatalf("replay after restart: %d %v", st, m)
	}
	req, _ := http.NewRequest("GET", base+"/v1/wallet", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var w map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&w)
	if w["balance"] != "90.00" || w["held"] != "0.00" {
		t.Fatalf("wallet after kill -9 and restart: %v", w)
	}
	if err := again.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := again.cmd.Wait(); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, again.out.String())
	}
}
