package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"hongbao/internal/hbtest"
	"hongbao/internal/httpapi"
)

func TestContract(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, tok := a.funded("10.00")
	recv, _ := a.funded("0.01")

	// 201 carries the Location of what was made.
	req, _ := http.NewRequest("POST", a.srv.URL+"/v1/packets", strings.NewReader(`{"kind":"single","receiver":`+itoa(recv)+`,"amount":"1.00"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Idempotency-Key", "loc")
	req.Header.Set("X-Request-Id", "client-chosen-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 || !strings.HasPrefix(resp.Header.Get("Location"), "/v1/packets/") {
		t.Fatalf("send: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp.Header.Get("X-Request-Id") != "client-chosen-1" {
		t.Fatalf("request id %q", resp.Header.Get("X-Request-Id"))
	}

	// A wrong method is 405 with Allow; errors are problem+json.
	req, _ = http.NewRequest("DELETE", a.srv.URL+"/v1/wallet", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET" || resp.Header.Get("Content-Type") != "application/problem+json" ||
		!strings.Contains(string(body), `"type":"urn:hongbao:problem:method_not_allowed"`) || !strings.Contains(string(body), `"status":405`) {
		t.Fatalf("DELETE /v1/wallet: %d Allow=%q %s", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
	// Metrics: the process, the pools, the credit lag; promlint is clean.
	resp, err = http.Get(a.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"go_goroutines", "process_cpu_seconds_total", "go_build_info", "hongbao_db_connections", "hongbao_claims_overdue",
		"hongbao_claims_overdue_oldest_seconds", "hongbao_credits_applied_total", "hongbao_coordinator_cancelled_total", "hongbao_coordinator_stuck",
		"hongbao_http_requests_total"} {
		if !strings.Contains(string(text), "\n"+m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	problems, err := promlint.New(bytes.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// The access log names every request with its id, and never a secret.
func TestAccessLogHasNoSecrets(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	var logs hbtest.Buffer
	s, err := httpapi.New(a.sys.Backend(), httpapi.Options{Secret: secret, Logger: slog.New(slog.NewJSONHandler(&logs, nil)), AccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	tok := userToken(t, 424242)
	b := &api{t: t, srv: srv, sys: a.sys, s: s}
	b.do("GET", "/v1/wallet", tok, "", nil)
	b.do("POST", "/v1/transfers", tok, "secret-key-xyz", map[string]any{"to": 5, "amount": "1.00"})
	out := logs.String()
	if !strings.Contains(out, `"route":"/v1/wallet"`) || !strings.Contains(out, `"request_id"`) || !strings.Contains(out, `"status":200`) {
		t.Fatalf("access log:\n%s", out)
	}
	for _, s := range []string{tok, string(secret), "Bearer"} {
		if strings.Contains(out, s) {
			t.Fatalf("the log shows a secret (%q):\n%s", s, out)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// Answers agree with each other: a statement in a user's words with a null
// cursor at its end, a second paid join that charges nothing, a claim
// credited in the received list as soon as in the packet's detail.
func TestConsistentAnswers(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	o, otok := a.funded("10.00")
	u, utok := a.funded("20.00")
	g := a.must(a.do("POST", "/v1/groups", otok, "g", map[string]any{"capacity": 5, "fee": "2.00"}), 201).body["id"]
	gp := "/v1/groups/" + strconv.FormatInt(int64(g.(float64)), 10)
	a.must(a.do("POST", gp+"/join", utok, "j1", nil), 200)
	again := a.must(a.do("POST", gp+"/join", utok, "j2", nil), 200)
	if again.body["outcome"] != "committed" || a.balance(utok) != "18.00/0.00" {
		t.Fatalf("second join: %s; wallet %s", again.raw, a.balance(utok))
	}
	a.must(a.do("POST", "/v1/transfers", utok, "t", map[string]any{"to": o, "amount": "1.00"}), 200)
	st := a.must(a.do("GET", "/v1/wallet/statement?limit=10", utok, "", nil), 200)
	if st.body["next"] != nil {
		t.Fatalf("a statement that fits in one page has next %v", st.body["next"])
	}
	for _, e := range st.body["entries"].([]any) {
		m := e.(map[string]any)
		if d, _ := m["description"].(string); d == "" || strings.Contains(m["counterparty"].(string), "#") {
			t.Fatalf("statement entry in internal words: %v", m)
		}
	}
	// Across shards the statement still names the other user.
	far, _ := a.fundedOn(1-a.sys.Ledgers.Table.Of(u), "0.01")
	a.must(a.do("POST", "/v1/transfers", utok, "far", map[string]any{"to": far, "amount": "1.00"}), 200)
	top := a.must(a.do("GET", "/v1/wallet/statement?limit=1", utok, "", nil), 200).body["entries"].([]any)[0].(map[string]any)
	if top["description"] != fmt.Sprintf("transfer to user %d", far) {
		t.Fatalf("a cross-shard transfer reads %v", top)
	}
	page := a.must(a.do("GET", "/v1/wallet/statement?limit=1", utok, "", nil), 200)
	if _, ok := page.body["next"].(string); !ok {
		t.Fatalf("a first page of one entry has next %v", page.body["next"])
	}
	p := a.must(a.do("POST", "/v1/packets", otok, "p", map[string]any{"kind": "single", "receiver": u, "amount": "1.00"}), 201).body["id"].(string)
	a.must(a.do("POST", "/v1/packets/"+p+"/grab", utok, "", nil), 200)
	hbtest.WaitFor(t, 30*time.Second, "the claim credited in the detail", func() bool {
		d := a.must(a.do("GET", "/v1/packets/"+p, utok, "", nil), 200)
		return d.body["claims"].([]any)[0].(map[string]any)["credited"] == true
	})
	recv := a.must(a.do("GET", "/v1/packets/received", utok, "", nil), 200)
	if recv.body["claims"].([]any)[0].(map[string]any)["credited"] != true {
		t.Fatalf("received disagrees with the detail: %s", recv.raw)
	}
}

// Every list pages the same way: ?cursor= and ?limit=, next null at the end.
func TestOneCursorStyle(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	adm := token(t, httpapi.Claims{Admin: true})
	o, otok := a.funded("100.00")
	u, utok := a.funded("0.01")
	g := a.must(a.do("POST", "/v1/groups", otok, "g", map[string]any{"capacity": 5}), 201).body["id"].(float64)
	a.must(a.do("POST", fmt.Sprintf("/v1/groups/%.0f/join", g), utok, "j", nil), 200)
	for i := range 3 {
		p := a.must(a.do("POST", "/v1/packets", otok, fmt.Sprint("p", i), map[string]any{"kind": "single", "receiver": u, "amount": "1.00"}), 201).body["id"].(string)
		a.must(a.do("POST", "/v1/packets/"+p+"/grab", utok, "", nil), 200)
	}
	for _, c := range []struct{ path, tok, field string }{
		{"/v1/packets/sent", otok, "packets"}, {"/v1/packets/received", utok, "claims"}, {"/v1/wallet/statement", otok, "entries"},
		{fmt.Sprintf("/v1/groups/%.0f/members", g), utok, "members"}, {"/v1/admin/transactions", adm, "transactions"},
	} {
		seen := map[string]bool{}
		cursor, pages := "", 0
		for {
			r := a.must(a.do("GET", c.path+"?limit=1&cursor="+cursor, c.tok, "", nil), 200)
			items := r.body[c.field].([]any)
			for _, it := range items {
				k := fmt.Sprint(it)
				if seen[k] {
					t.Fatalf("%s: an item came twice: %v", c.path, it)
				}
				seen[k] = true
			}
			pages++
			nx, ok := r.body["next"].(string)
			if !ok {
				if r.body["next"] != nil {
					t.Fatalf("%s: next %v", c.path, r.body["next"])
				}
				break
			}
			if pages > 50 {
				t.Fatalf("%s: no end", c.path)
			}
			cursor = nx
		}
		if len(seen) < 2 {
			t.Fatalf("%s: %d items over %d pages", c.path, len(seen), pages)
		}
	}
	_ = o
}

// Error messages speak of the client's request, never of internal keys,
// accounts or branches.
func TestMessagesHaveNoInternals(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	u, tok := a.fundedOn(0, "1.00")
	near, _ := a.fundedOn(0, "0.01")
	far, _ := a.fundedOn(1, "0.01")
	for _, r := range []res{
		a.do("POST", "/v1/transfers", tok, "a", map[string]any{"to": near, "amount": "5.00"}),
		a.do("POST", "/v1/transfers", tok, "b", map[string]any{"to": far, "amount": "5.00"}),
		a.do("POST", "/v1/packets", tok, "c", map[string]any{"kind": "single", "receiver": far, "amount": "5.00"}),
		a.do("POST", "/v1/packets/386833498809307136/grab", tok, "", nil),
		a.do("GET", "/v1/groups/5", tok, "", nil),
	} {
		for _, bad := range []string{"(key", "branch", "/hold", "user:", "clearing", "#", "pgx", "SQLSTATE"} {
			if strings.Contains(r.body["detail"].(string), bad) {
				t.Errorf("%d %s: the message shows %q", r.status, r.raw, bad)
			}
		}
	}
	_ = u
}

// Every answer has a request id, the operations endpoints answer a wrong
// method with 405, and tokens and paths refuse user ids above 2^53-1.
func TestEdges(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	for _, c := range []struct {
		method, path string
		status       int
	}{{"POST", "/healthz", 405}, {"DELETE", "/openapi.json", 405}, {"GET", "/nothing", 404}, {"GET", "/healthz", 200}} {
		req, _ := http.NewRequest(c.method, a.srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s %s: %d, request id %q", c.method, c.path, resp.StatusCode, resp.Header.Get("X-Request-Id"))
		}
	}
	if _, err := httpapi.IssueToken(secret, httpapi.Claims{User: 1 << 53}); err == nil {
		t.Error("a token for user 2^53 was issued")
	}
	adm := token(t, httpapi.Claims{Admin: true})
	if r := a.do("GET", "/v1/admin/wallets/9007199254740992", adm, "", nil); r.status != 400 {
		t.Errorf("wallet of user 2^53: %d %s", r.status, r.raw)
	}
}
