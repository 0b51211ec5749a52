package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"hongbao/internal/app"
	"hongbao/internal/bus"
	"hongbao/internal/channel"
	"hongbao/internal/console"
	"hongbao/internal/hbtest"
	"hongbao/internal/httpapi"
	"hongbao/internal/ledger"
	"hongbao/internal/payment"
	"hongbao/internal/pgtest"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

var (
	secret        = []byte("console-test-secret-console-test-secret")
	channelSecret = []byte("merchant-secret-merchant-secret!")
)

// The console's own answers: its files with strict headers, /console
// redirected, nothing else served, and the API untouched behind it.
func TestHandler(t *testing.T) {
	t.Parallel()
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) })
	srv := httptest.NewServer(console.Mount(api))
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range []struct {
		method, path string
		status       int
		ctype        string
	}{
		{"GET", "/console", 301, ""},
		{"GET", "/console/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/console/", 200, "text/html; charset=utf-8"},
		{"GET", "/console/index.html", 200, "text/html; charset=utf-8"},
		{"GET", "/console/console.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/console/console.css", 200, "text/css; charset=utf-8"},
		{"GET", "/console/nope.js", 404, ""},
		{"GET", "/console/static/console.js", 404, ""},
		{"GET", "/console/..%2fconsole.go", 404, ""},
		{"GET", "/console/%00", 404, ""},
		{"POST", "/console/", 405, ""},
		{"GET", "/v1/wallet", 299, ""},
		{"GET", "/consolex", 299, ""},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || (c.ctype != "" && resp.Header.Get("Content-Type") != c.ctype) {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), c.status, c.ctype)
		}
		if c.status == 299 {
			continue
		}
		for k, v := range console.Headers {
			if resp.Header.Get(k) != v {
				t.Errorf("%s %s: %s = %q", c.method, c.path, k, resp.Header.Get(k))
			}
		}
		if c.path == "/console/" && c.status == 200 && resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s index Cache-Control = %q", c.method, resp.Header.Get("Cache-Control"))
		}
		if c.path == "/console" && resp.Header.Get("Location") != "/console/" {
			t.Errorf("redirect to %q", resp.Header.Get("Location"))
		}
	}
}

// chromium finds the browser: HONGBAO_CHROMIUM, else Debian's chromium on
// the PATH. Without one the browser test skips, unless
// HONGBAO_REQUIRE_BROWSER=1 (CI), where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HONGBAO_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("HONGBAO_REQUIRE_BROWSER") == "1" || os.Getenv("HONGBAO_SCREENSHOT_DIR") != "" {
		t.Fatal("no chromium found and HONGBAO_REQUIRE_BROWSER=1 or HONGBAO_SCREENSHOT_DIR set: apt-get install -y chromium")
	}
	t.Skip("no chromium found (apt-get install -y chromium); HONGBAO_REQUIRE_BROWSER=1 makes this a failure")
	return ""
}

// artifacts is where the screenshots go: HONGBAO_ARTIFACTS, else a folder
// in the temporary directory.
func artifacts(t *testing.T) string {
	dir := os.Getenv("HONGBAO_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "hongbao-console-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// moduleRoot is the folder of go.mod, so that a relative
// HONGBAO_SCREENSHOT_DIR (docs) means the same from any package.
func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// site is a real node behind the real API and the console.
type site struct {
	t     *testing.T
	sys   *app.Node
	srv   *httptest.Server
	adm   string
	fault atomic.Bool // confirms are refused while set
}

func newSite(t *testing.T) *site {
	s := &site{t: t}
	_, simURL, stopSim, err := app.StartSimulator(channelSecret, channel.Knobs{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopSim)
	ch := channel.NewClient(simURL, channelSecret, "")
	s.sys, err = app.StartNode(t.Context(), pgtest.Opener(t), app.NodeOptions{LedgerShards: 2, PacketSets: 2, BusDir: t.TempDir(),
		Grace: time.Second, Every: 50 * time.Millisecond, SampleEvery: 500 * time.Millisecond, Channel: ch, ChannelSecret: channelSecret,
		Payments: payment.Options{QueryAfter: 50 * time.Millisecond, QueryCap: 200 * time.Millisecond},
		// A transaction whose confirm fails waits an hour for its next
		// attempt: stuck until an operator retries it.
		TxBackoff: time.Hour,
		TxHook: func(point string) error {
			if s.fault.Load() && strings.HasPrefix(point, "before-call:confirm") {
				return errors.New("confirm refused (test fault)")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(s.sys.Backend(), httpapi.Options{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewServer(console.Mount(api.Handler()))
	ch.NotifyURL = s.srv.URL + "/v1/channel/notify"
	t.Cleanup(func() { s.srv.Close(); s.sys.Close() })
	s.adm = s.token(httpapi.Claims{Admin: true})
	return s
}

func (s *site) token(c httpapi.Claims) string {
	c.Expires = time.Now().Add(time.Hour).Unix()
	tok, err := httpapi.IssueToken(secret, c)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// call is one API request; it returns the status and the decoded answer.
func (s *site) call(method, path, tok, key string, body any) (int, map[string]any) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.srv.URL+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

func (s *site) must(want int, method, path, tok, key string, body any) map[string]any {
	s.t.Helper()
	st, m := s.call(method, path, tok, key, body)
	if st != want {
		s.t.Fatalf("%s %s: %d %v, want %d", method, path, st, m, want)
	}
	return m
}

// browser drives one headless Chromium tab and records every script
// error the page throws or logs.
type browser struct {
	t      *testing.T
	ctx    context.Context
	dir    string
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T, exe string) *browser {
	b := &browser{t: t, dir: artifacts(t)}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1400, 1000))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if e.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			msg = "console.error:"
			for _, a := range e.Args {
				msg += " " + a.Description + string(a.Value)
			}
		default:
			return
		}
		b.mu.Lock()
		b.errors = append(b.errors, msg)
		b.mu.Unlock()
	}))
	b.ctx = ctx
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	return b
}

func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// value runs one action that answers a value.
func value[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// until waits for a JavaScript condition on the page.
func (b *browser) until(what, expr string) {
	b.t.Helper()
	value(b, "wait for "+what, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(25*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return value(b, "read "+sel, chromedp.TextContent(chromedp.CSS(sel)))
}

func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	return value(b, "evaluate "+expr, chromedp.Evaluate[T](expr))
}

func (b *browser) shot(name string, also ...string) {
	b.t.Helper()
	png := value(b, "screenshot "+name, chromedp.CaptureScreenshot())
	for _, dir := range append([]string{b.dir}, also...) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			b.t.Fatal(err)
		}
		b.t.Logf("screenshot: %s", p)
	}
}

func js(s string) string { b, _ := json.Marshal(s); return string(b) }

// textIs is a condition: the element's text is exactly want.
func textIs(sel, want string) string {
	return fmt.Sprintf(`(function(){var e=document.querySelector(%s);return !!e && e.textContent===%s})()`, js(sel), js(want))
}

// The console in a real browser against a real node: a user's token is
// refused, an operator signs in and sees the figures the API reports after
// some activity, a stuck transaction shows red and "retry now" resolves
// it, a packet lookup shows its claims, a wallet its statement, a dead
// letter is re-driven, and hostile text renders as text.
func TestConsole(t *testing.T) {
	t.Parallel()
	exe := chromium(t)
	s := newSite(t)
	ctx := t.Context()

	// Activity: funded users in a group, transfers, a lucky packet grabbed.
	// Six users, alternating between the two ledger shards.
	var users []int64
	for u := int64(910_001); len(users) < 6; u++ {
		if s.sys.Ledgers.Table.Of(u) == len(users)%2 {
			users = append(users, u)
		}
	}
	toks := map[int64]string{}
	for _, u := range users {
		toks[u] = s.token(httpapi.Claims{User: u})
		s.must(200, "POST", "/v1/admin/deposits", s.adm, fmt.Sprint("fund-", u), map[string]any{"user": u, "amount": "1000.00"})
	}
	owner := users[0]
	g := s.must(201, "POST", "/v1/groups", toks[owner], "g", map[string]any{"capacity": 10})
	gid := fmt.Sprintf("%.0f", g["id"].(float64))
	for _, u := range users[1:] {
		s.must(200, "POST", "/v1/groups/"+gid+"/join", toks[u], "j", nil)
	}
	for i, u := range users[1:] {
		s.must(200, "POST", "/v1/transfers", toks[owner], fmt.Sprint("t-", i), map[string]any{"to": u, "amount": "1.50"})
	}
	hostile := "<img src=x onerror=window.pwned=1><script>pwned=2</script>"
	pk := s.must(201, "POST", "/v1/packets", toks[owner], "pk", map[string]any{"kind": "lucky", "group": g["id"], "amount": "88.88", "shares": 4, "greeting": hostile})
	packetID := pk["id"].(string)
	for _, u := range users[1:4] {
		s.must(200, "POST", "/v1/packets/"+packetID+"/grab", toks[u], "", nil)
	}
	// A few seconds of steady traffic for the charts: packets sent to the
	// group and grabbed by four members, and transfers within a shard.
	stop := make(chan struct{})
	var load sync.WaitGroup
	load.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			st, p := s.call("POST", "/v1/packets", toks[owner], fmt.Sprint("load-", i), map[string]any{"kind": "lucky", "group": g["id"], "amount": "0.04", "shares": 4})
			if st != 201 {
				t.Errorf("load send: %d %v", st, p)
				return
			}
			for _, u := range users[1:5] {
				s.call("POST", "/v1/packets/"+p["id"].(string)+"/grab", toks[u], "", nil)
			}
			s.call("POST", "/v1/transfers", toks[owner], fmt.Sprint("load-t-", i), map[string]any{"to": users[2], "amount": "0.01"})
		}
	})
	hbtest.WaitFor(t, 60*time.Second, "eight seconds of samples", func() bool {
		_, ov := s.call("GET", "/v1/admin/overview", s.adm, "", nil)
		rs, _ := ov["rates"].([]any)
		return len(rs) >= 16
	})
	close(stop)
	load.Wait()
	hbtest.WaitFor(t, 30*time.Second, "every claim credited", func() bool {
		_, ov := s.call("GET", "/v1/admin/overview", s.adm, "", nil)
		c, _ := ov["claims"].(map[string]any)
		return c != nil && c["waiting"] == float64(0)
	})
	today := time.Now().UTC().Format(time.DateOnly)
	s.must(200, "POST", "/v1/admin/recon", s.adm, "", map[string]any{"day": today})

	// A transfer across shards whose confirm is refused: stuck in
	// confirming, its next attempt an hour away.
	from, to := users[1], users[2]
	for _, u := range users[2:] {
		if s.sys.Ledgers.Table.Of(u) != s.sys.Ledgers.Table.Of(from) {
			to = u
			break
		}
	}
	if s.sys.Ledgers.Table.Of(to) == s.sys.Ledgers.Table.Of(from) {
		t.Fatal("the test users are all on one shard")
	}
	s.fault.Store(true)
	stuck := s.must(202, "POST", "/v1/transfers", toks[from], "stuck", map[string]any{"to": to, "amount": "2.00"})
	s.fault.Store(false)
	stuckGID := stuck["gid"].(string)

	// Dead letters: a credit parked, and a message that is no credit (NUL
	// bytes and markup in it) parked by the consumer.
	parked, _ := json.Marshal(ledger.CreditBatch{Credits: []ledger.CreditMessage{{Key: "console-test:parked", User: users[5], Amount: 777, Kind: ledger.KindCredit, From: "external"}}})
	shard := s.sys.Ledgers.Table.Of(users[5])
	if err := s.sys.Bus.Publish(ctx, []bus.Msg{{Subject: fmt.Sprintf("hb.dead.credit.%d", shard), ID: "parked", Data: parked}}); err != nil {
		t.Fatal(err)
	}
	if err := s.sys.Bus.Publish(ctx, []bus.Msg{{Subject: fmt.Sprintf("hb.credit.%d", shard), ID: "garbage", Data: []byte("not json \x00\x00 <script>window.pwned=3</script>")}}); err != nil {
		t.Fatal(err)
	}
	hbtest.WaitFor(t, 30*time.Second, "both dead letters", func() bool {
		_, ov := s.call("GET", "/v1/admin/overview", s.adm, "", nil)
		dl, _ := ov["dead_letters"].(map[string]any)
		return dl != nil && dl["total"] == float64(2)
	})
	_, dl := s.call("GET", "/v1/admin/dead-letters", s.adm, "", nil)
	letters := dl["dead_letters"].([]any)
	parkedSeq := fmt.Sprintf("%.0f", letters[0].(map[string]any)["seq"].(float64))
	garbageSeq := fmt.Sprintf("%.0f", letters[1].(map[string]any)["seq"].(float64))

	// What the API reports: the page must show the same.
	ov := s.must(200, "GET", "/v1/admin/overview", s.adm, "", nil)
	tx := ov["transactions"].(map[string]any)
	if tx["pending"] != float64(1) || tx["in_recovery"] != float64(1) {
		t.Fatalf("overview transactions = %v", tx)
	}
	rc := ov["recon"].(map[string]any)

	b := newBrowser(t, exe)
	base := s.srv.URL
	b.run("open the console", chromedp.Navigate(base+"/console"), chromedp.WaitVisible(chromedp.ID("token")))

	// A user's token is refused.
	b.run("sign in as a user", chromedp.SetValue(chromedp.ID("token"), toks[owner]), chromedp.Click(chromedp.ID("signin")))
	b.until("the refusal", `(function(){var e=document.getElementById('signin-error');return !!e && e.textContent.indexOf("not an operator")>=0})()`)
	b.shot("console-user-refused.png")
	if stored := eval[string](b, `sessionStorage.getItem('hongbao.console.token') || ''`); stored != "" {
		t.Fatal("a refused token was kept")
	}

	// The operator signs in; the overview shows what the API reports.
	b.run("sign in as an operator", chromedp.SetValue(chromedp.ID("token"), s.adm), chromedp.Click(chromedp.ID("signin")))
	b.until("the overview", textIs("#ov-tx-pending", "1"))
	b.until("in recovery", textIs("#ov-tx-recovery", "1"))
	b.until("dead letters", textIs("#ov-dead-open", "2"))
	b.until("recon day", textIs("#ov-recon-day", rc["day"].(string)))
	b.until("the charts drawn", `document.querySelectorAll('#chart-grabs polyline, #chart-sends polyline, #chart-transfers polyline').length === 3`)
	alerts := eval[[]string](b, `Array.from(document.querySelectorAll('.card[data-alert=true]')).map(function(e){return e.id})`)
	if strings.Join(alerts, ",") != "ov-dead,ov-tx" {
		t.Fatalf("red panels = %v, want the dead letters and the transactions", alerts)
	}
	b.until("a red status", `document.getElementById('status').className.indexOf('bad') >= 0`)
	if got := b.text("#ov-recon-value"); got != map[bool]string{true: "sound", false: "NOT sound"}[rc["sound"].(bool)] {
		t.Fatalf("recon verdict shown %q, report %v", got, rc)
	}
	if at := b.text("#ov-recon-at"); !strings.HasSuffix(at, " UTC") {
		t.Fatalf("recon time %q is not in UTC", at)
	}
	// It refreshes by itself: a second fetch moves "last fetch".
	first := b.text("#ov-updated")
	b.until("a refresh", fmt.Sprintf(`document.getElementById('ov-updated').textContent !== %s`, js(first)))
	var shotDirs []string
	if d := os.Getenv("HONGBAO_SCREENSHOT_DIR"); d != "" {
		if !filepath.IsAbs(d) {
			d = filepath.Join(moduleRoot(t), d)
		}
		shotDirs = append(shotDirs, d)
	}
	b.shot("console-overview.png", shotDirs...)

	// The token is never in the page nor in the URL.
	html := eval[string](b, `document.documentElement.outerHTML`)
	href := eval[string](b, `location.href`)
	if strings.Contains(html, s.adm) || strings.Contains(href, s.adm) || strings.Contains(html, toks[owner]) {
		t.Fatal("the token shows in the page or the URL")
	}

	// Money and numbers are formatted exactly.
	formats := eval[[]string](b, `[HB.yuanFromFen(12345), HB.yuanFromFen(-5), HB.yuanFromFen("0"), HB.yuanFromFen("9223372036854775807"), HB.yuanFromFen(-100),
		HB.yuan("123.4"), HB.yuan("-0.05"), HB.yuan("1000000.00"), HB.yuan("1e3"), HB.count(12345678), HB.utc("2026-12-04T02:33:38.5Z")]`)
	want := []string{"¥123.45", "-¥0.05", "¥0.00", "¥92,233,720,368,547,758.07", "-¥1.00", "¥123.40", "-¥0.05", "¥1,000,000.00", "?1e3", "12,345,678", "2026-12-04 02:33:38 UTC"}
	if strings.Join(formats, "|") != strings.Join(want, "|") {
		t.Fatalf("formats = %q, want %q", formats, want)
	}

	// The page's policy holds in the browser: an inline script does not
	// run, and the console reports the violation.
	if !eval[bool](b, `(function(){var s=document.createElement('script');s.textContent='window.inlineRan=1';document.body.appendChild(s);return window.inlineRan===undefined})()`) {
		t.Fatal("an inline script ran despite the Content-Security-Policy")
	}
	hbtest.WaitFor(t, 10*time.Second, "the violation reported", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for i, e := range b.errors {
			if strings.Contains(e, "Content-Security-Policy blocked") {
				b.errors = append(b.errors[:i], b.errors[i+1:]...)
				return true
			}
		}
		return false
	})

	// The stuck transaction is listed red; "retry now" commits it.
	b.run("list unfinished", chromedp.Navigate(base+"/console/#/transactions?unfinished=true"))
	b.until("the stuck transaction listed", fmt.Sprintf(`!!document.querySelector('tr.bad[data-gid=%s]')`, js(stuckGID)))
	b.shot("console-transactions.png")
	// The filters: no saga is unfinished; older than an hour, none either.
	b.run("filter sagas", chromedp.SetValue(chromedp.ID("f-kind"), "saga"), chromedp.Click(chromedp.ID("tx-apply")))
	b.until("no saga listed", `!!document.getElementById('tx-empty') && location.hash.indexOf('kind=saga') >= 0`)
	b.run("filter old ones", chromedp.Navigate(base+"/console/#/transactions?unfinished=true&older_than_seconds=3600"))
	b.until("none an hour old", `!!document.getElementById('tx-empty')`)
	b.run("open it", chromedp.Navigate(base+"/console/#/transactions/"+url.PathEscape(stuckGID)))
	b.until("its detail", `!!document.getElementById('retry-now')`)
	if le := b.text("#tx-fields"); !strings.Contains(le, "confirm refused (test fault)") || !strings.Contains(le, "confirming") {
		t.Fatalf("detail shows %q", le)
	}
	b.shot("console-transaction-stuck.png")
	b.run("retry now", chromedp.Click(chromedp.ID("retry-now")))
	b.until("the retry's result", `(function(){var e=document.getElementById('retry-result');return !!e && e.textContent.indexOf('committed')>=0})()`)
	b.shot("console-transaction-retried.png")
	if g := s.must(200, "GET", "/v1/admin/transactions/"+url.PathEscape(stuckGID), s.adm, "", nil); g["state"] != "committed" {
		t.Fatalf("after retry now: %v", g)
	}
	if st, m := s.call("POST", "/v1/admin/transactions/"+url.PathEscape(stuckGID)+"/retry", s.adm, "", nil); st != 409 || m["code"] != "already_finished" {
		t.Fatalf("retry of a committed transaction: %d %v", st, m)
	}

	// A packet looked up: its claims, credited or pending; the greeting is text.
	b.run("packets", chromedp.Navigate(base+"/console/#/packets"))
	b.run("look up", chromedp.WaitVisible(chromedp.ID("packet-id")), chromedp.SetValue(chromedp.ID("packet-id"), packetID), chromedp.Click(chromedp.ID("packet-id-go")))
	b.until("its claims", `document.querySelectorAll('#claims-table tbody tr').length === 3`)
	detail := s.must(200, "GET", "/v1/packets/"+packetID, s.adm, "", nil)
	page := b.text("#packet")
	for _, c := range detail["claims"].([]any) {
		c := c.(map[string]any)
		shown := eval[string](b, fmt.Sprintf(`HB.yuan(%s)`, js(c["amount"].(string))))
		if !strings.Contains(page, shown) || !strings.Contains(page, fmt.Sprintf("user %.0f", c["user"].(float64))) {
			t.Fatalf("claim %v not shown (%s) in %q", c, shown, page)
		}
	}
	if !strings.Contains(page, hostile) || !strings.Contains(page, "¥88.88") || !strings.Contains(page, "best luck") {
		t.Fatalf("packet page: %q", page)
	}
	pwned := eval[any](b, `window.pwned === undefined ? null : window.pwned`)
	imgs := eval[int](b, `document.querySelectorAll('#app img, #app script').length`)
	if pwned != nil || imgs != 0 {
		t.Fatalf("the greeting ran as markup: pwned=%v, %d elements", pwned, imgs)
	}
	b.shot("console-packet.png")

	// A wallet with its statement.
	w := s.must(200, "GET", fmt.Sprintf("/v1/admin/wallets/%d", owner), s.adm, "", nil)
	b.run("wallet", chromedp.Navigate(fmt.Sprintf("%s/console/#/wallets/%d", base, owner)))
	b.until("its statement", `document.querySelectorAll('#statement-table tbody tr').length > 0`)
	bal := eval[string](b, fmt.Sprintf(`HB.yuan(%s)`, js(w["balance"].(string))))
	if f := b.text("#wallet-fields"); !strings.Contains(f, bal) {
		t.Fatalf("wallet shows %q, want balance %s", f, bal)
	}
	b.shot("console-wallet.png")
	// The statement pages: the next page starts where the first ended.
	firstPage := b.text("#statement-table tbody")
	b.run("older entries", chromedp.Click(chromedp.ID("statement-older")))
	b.until("the second page", `!!document.getElementById('statement-newest')`)
	if second := b.text("#statement-table tbody"); second == firstPage || second == "" {
		t.Fatal("the second statement page is the first one again")
	}

	// Dead letters: the garbage is shown as text; the parked credit is
	// re-driven, twice, and applied once.
	b.run("dead letter", chromedp.Navigate(base+"/console/#/dead-letters/"+garbageSeq))
	b.until("its payload", `!!document.getElementById('dead-payload')`)
	if p := b.text("#dead-payload"); !strings.Contains(p, "<script>window.pwned=3</script>") || !strings.Contains(p, "\ufffd") {
		t.Fatalf("payload shown %q", p)
	}
	b.run("dead letters", chromedp.Navigate(base+"/console/#/dead-letters"))
	b.until("the list", `document.querySelectorAll('#dead-table tbody tr').length === 2`)
	b.shot("console-dead-letters.png")
	b.run("the parked credit", chromedp.Navigate(base+"/console/#/dead-letters/"+parkedSeq))
	b.until("its credits", `!!document.getElementById('dead-credits')`)
	before := s.must(200, "GET", fmt.Sprintf("/v1/admin/wallets/%d", users[5]), s.adm, "", nil)["balance"].(string)
	wantBal := map[string]string{"1001.50": "1009.27"}[before]
	if wantBal == "" {
		t.Fatalf("balance before the re-drive: %s", before)
	}
	applied := s.sys.Credits[shard].Applied.Load()
	for i := 1; i <= 2; i++ {
		b.run("re-drive", chromedp.WaitEnabled(chromedp.ID("redrive")), chromedp.Click(chromedp.ID("redrive")))
		b.until("re-driven", fmt.Sprintf(`(function(){var e=document.getElementById('redrive-result');return !!e && e.textContent.indexOf('(%d time')>=0})()`, i))
	}
	hbtest.WaitFor(t, 30*time.Second, "the re-driven credit applied", func() bool {
		m := s.must(200, "GET", fmt.Sprintf("/v1/admin/wallets/%d", users[5]), s.adm, "", nil)
		return m["balance"] == wantBal && s.sys.Credits[shard].Applied.Load() >= applied+2
	})
	b.run("back to the overview", chromedp.Navigate(base+"/console/#/overview"))
	b.until("one dead letter left", textIs("#ov-dead-open", "1"))
	b.until("no transaction in recovery", textIs("#ov-tx-recovery", "0"))
	if m := s.must(200, "GET", fmt.Sprintf("/v1/admin/wallets/%d", users[5]), s.adm, "", nil); m["balance"] != wantBal {
		t.Fatalf("after two re-drives the balance is %v", m["balance"])
	}

	// Signing out forgets the token.
	b.run("sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("token")))
	if stored := eval[string](b, `sessionStorage.getItem('hongbao.console.token') || ''`); stored != "" {
		t.Fatal("the token outlived sign-out")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errors) > 0 {
		t.Fatalf("the page reported errors: %q", b.errors)
	}
}
