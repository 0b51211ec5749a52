package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hongbao/internal/app"
	"hongbao/internal/channel"
	"hongbao/internal/hbtest"
	"hongbao/internal/httpapi"
	"hongbao/internal/payment"
	"hongbao/internal/pgtest"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

var secret = []byte("test-secret-test-secret-test-secret!")

type api struct {
	t   testing.TB
	srv *httptest.Server
	sys *app.Node
	s   *httpapi.Server
	sim *channel.Simulator
	ch  *channel.Client
}

// channelSecret is the merchant secret the tests' simulator shares.
var channelSecret = []byte("merchant-secret-merchant-secret!")

func newAPI(t testing.TB) *api {
	t.Helper()
	sim, simURL, stopSim, err := app.StartSimulator(channelSecret, channel.Knobs{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopSim)
	ch := channel.NewClient(simURL, channelSecret, "") // the notify URL once the server has one
	sys, err := app.StartNode(t.Context(), pgtest.Opener(t), app.NodeOptions{LedgerShards: 2, PacketSets: 2, BusDir: t.TempDir(),
		Grace: time.Second, Every: 50 * time.Millisecond, Channel: ch, ChannelSecret: channelSecret,
		Payments: payment.Options{QueryAfter: 50 * time.Millisecond, QueryCap: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := httpapi.New(sys.Backend(), httpapi.Options{Secret: secret, MaxBody: 4096})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	ch.NotifyURL = srv.URL + "/v1/channel/notify"
	t.Cleanup(func() { srv.Close(); sys.Close() })
	return &api{t: t, srv: srv, sys: sys, s: s, sim: sim, ch: ch}
}

func token(t testing.TB, c httpapi.Claims) string {
	if c.Expires == 0 {
		c.Expires = time.Now().Add(time.Hour).Unix()
	}
	tok, err := httpapi.IssueToken(secret, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func userToken(t testing.TB, u int64) string { return token(t, httpapi.Claims{User: u}) }

// res is a decoded response.
type res struct {
	status int
	body   map[string]any
	raw    string
}

// signed is a body the payment channel signs (a callback).
type signed string

func (r res) code() string { s, _ := r.body["code"].(string); return s }

func (a *api) do(method, path, tok, key string, body any) res {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case signed:
		rd = strings.NewReader(string(b))
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, a.srv.URL+path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if b, ok := body.(signed); ok {
		channel.Sign(req.Header, channelSecret, []byte(b), time.Now())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := res{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// raw sends a body as given with a content type; paths under /v1/admin use
// the admin token.
func (a *api) raw(method, path, ctype, body, tok, adm string) res {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if strings.HasPrefix(path, "/v1/admin") {
		tok = adm
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Idempotency-Key", fmt.Sprint("raw-", users.Add(1)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := res{status: resp.StatusCode, raw: string(b)}
	_ = json.Unmarshal(b, &r.body)
	return r
}

func (a *api) must(r res, status int) res {
	a.t.Helper()
	if r.status != status {
		a.t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

var users atomic.Int64

func init() { users.Store(7_000_000) }

// funded makes a user with money through the admin deposit endpoint.
func (a *api) funded(amount string) (int64, string) {
	u := users.Add(1)
	a.must(a.do("POST", "/v1/admin/deposits", token(a.t, httpapi.Claims{Admin: true}), fmt.Sprint("fund-", u), map[string]any{"user": u, "amount": amount}), 200)
	return u, userToken(a.t, u)
}

func (a *api) balance(tok string) string {
	a.t.Helper()
	r := a.must(a.do("GET", "/v1/wallet", tok, "", nil), 200)
	return r.body["balance"].(string) + "/" + r.body["held"].(string)
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	u, tok := a.funded("10.00")
	expired := token(t, httpapi.Claims{User: u, Expires: time.Now().Add(-time.Minute).Unix()})
	forged := tok[:len(tok)-2] + "AA"
	for _, c := range []struct {
		tok, code string
		status    int
	}{{"", "unauthorized", 401}, {"garbage", "unauthorized", 401}, {forged, "unauthorized", 401}, {expired, "token_expired", 401}} {
		if r := a.do("GET", "/v1/wallet", c.tok, "", nil); r.status != c.status || r.code() != c.code {
			t.Errorf("token %q: %d %s", c.tok, r.status, r.raw)
		}
	}
	// A user token does not open admin routes; an admin token is not a user.
	if r := a.do("POST", "/v1/admin/deposits", tok, "k", map[string]any{"user": u, "amount": "1.00"}); r.status != 403 {
		t.Fatalf("user on an admin route: %d %s", r.status, r.raw)
	}
	if r := a.do("GET", "/v1/wallet", token(t, httpapi.Claims{Admin: true}), "", nil); r.status != 403 {
		t.Fatalf("admin on a user route: %d %s", r.status, r.raw)
	}
	// Every operators' route, the console's included, refuses a user token.
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal([]byte(a.must(a.do("GET", "/openapi.json", "", "", nil), 200).raw), &doc); err != nil {
		t.Fatal(err)
	}
	admin := 0
	for p, ops := range doc.Paths {
		if !strings.HasPrefix(p, "/v1/admin/") {
			continue
		}
		path := regexp.MustCompile(`\{[a-z]+\}`).ReplaceAllString(p, "1")
		if strings.Contains(p, "{day}") {
			path = strings.Replace(p, "{day}", "2026-01-01", 1)
		}
		for m := range ops {
			admin++
			if r := a.do(strings.ToUpper(m), path, tok, "k", nil); r.status != 403 || r.code() != "forbidden" {
				t.Errorf("user token on %s %s: %d %s", m, path, r.status, r.raw)
			}
		}
	}
	if admin < 25 {
		t.Fatalf("only %d admin operations in the document", admin)
	}
	if got := a.balance(tok); got != "10.00/0.00" {
		t.Fatalf("balance %s", got)
	}
}

func TestDepositsAndTransfers(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	adminTok := token(t, httpapi.Claims{Admin: true})
	u, utok := a.funded("100.00")
	v, vtok := a.funded("0.01")
	for a.sys.Ledgers.Table.Of(v) == a.sys.Ledgers.Table.Of(u) { // the transfer below crosses shards: TCC
		v, vtok = a.funded("0.01")
	}

	// Replays return the original response; a changed body under the same key conflicts.
	first := a.must(a.do("POST", "/v1/admin/deposits", adminTok, "dep-1", map[string]any{"user": u, "amount": "5.00"}), 200)
	again := a.must(a.do("POST", "/v1/admin/deposits", adminTok, "dep-1", map[string]any{"user": u, "amount": "5.00"}), 200)
	if first.raw != again.raw {
		t.Fatalf("replay differs:\n%s\n%s", first.raw, again.raw)
	}
	if r := a.do("POST", "/v1/admin/deposits", adminTok, "dep-1", map[string]any{"user": u, "amount": "6.00"}); r.status != 409 || r.code() != "idempotency_conflict" {
		t.Fatalf("changed replay: %d %s", r.status, r.raw)
	}
	if r := a.do("POST", "/v1/admin/deposits", adminTok, "", map[string]any{"user": u, "amount": "6.00"}); r.status != 400 || r.code() != "idempotency_key_required" {
		t.Fatalf("no key: %d %s", r.status, r.raw)
	}

	tr := a.must(a.do("POST", "/v1/transfers", utok, "t-1", map[string]any{"to": v, "amount": "12.34"}), 200)
	tr2 := a.must(a.do("POST", "/v1/transfers", utok, "t-1", map[string]any{"to": v, "amount": "12.34"}), 200)
	if tr.body["gid"] != tr2.body["gid"] || tr.body["outcome"] != "committed" {
		t.Fatalf("transfer %s, replay %s", tr.raw, tr2.raw)
	}
	if got := a.balance(utok); got != "92.66/0.00" {
		t.Fatalf("sender balance %s", got)
	}
	if got := a.balance(vtok); got != "12.35/0.00" {
		t.Fatalf("receiver balance %s", got)
	}
	// Bad input changes nothing and is a 4xx with a stable code.
	for _, c := range []struct {
		body   any
		status int
		code   string
	}{
		{map[string]any{"to": v, "amount": "1.234"}, 400, "bad_amount"},
		{`{"to": 1, "amount": 12.34}`, 400, "bad_json"},
		{map[string]any{"to": v, "amount": "-1.00"}, 400, "bad_amount"},
		{map[string]any{"to": v, "amount": "0"}, 400, "bad_amount"},
		{map[string]any{"to": u, "amount": "1.00"}, 400, "invalid_request"},
		{map[string]any{"to": v, "amount": "1.00", "from": v}, 400, "bad_json"}, // nobody spends another's money
		{`{"to": 1, "amount": "1.00"} {"to": 2}`, 400, "bad_json"},
		{`{"to":`, 400, "bad_json"},
		{strings.Repeat(" ", 5000), 413, "too_large"},
		{map[string]any{"to": v, "amount": "1000.00"}, 409, ""},
	} {
		r := a.do("POST", "/v1/transfers", utok, fmt.Sprint("bad-", c.body), c.body)
		if r.status != c.status || (c.code != "" && r.code() != c.code) {
			t.Errorf("body %v: %d %s, want %d %s", c.body, r.status, r.raw, c.status, c.code)
		}
	}
	if got := a.balance(utok); got != "92.66/0.00" {
		t.Fatalf("sender balance after rejected requests %s", got)
	}
	st := a.must(a.do("GET", "/v1/wallet/statement?limit=2", utok, "", nil), 200)
	if es := st.body["entries"].([]any); len(es) != 2 {
		t.Fatalf("statement %s", st.raw)
	}
	if r := a.do("GET", "/v1/wallet/statement?limit=x", utok, "", nil); r.status != 400 {
		t.Fatalf("bad query: %s", r.raw)
	}
	w := a.must(a.do("GET", fmt.Sprintf("/v1/admin/wallets/%d", v), adminTok, "", nil), 200)
	if w.body["balance"] != "12.35" {
		t.Fatalf("admin wallet %s", w.raw)
	}
	txs := a.must(a.do("GET", "/v1/admin/transactions?limit=10", adminTok, "", nil), 200)
	if len(txs.body["transactions"].([]any)) == 0 {
		t.Fatalf("no transactions listed: %s", txs.raw)
	}
	if r := a.do("GET", "/v1/admin/transactions?state=weird", adminTok, "", nil); r.status != 400 {
		t.Fatalf("bad state filter: %s", r.raw)
	}
	if r := a.do("GET", "/v1/admin/transactions/nope", adminTok, "", nil); r.status != 404 {
		t.Fatalf("unknown gid: %s", r.raw)
	}
	{
		gid := tr.body["gid"].(string)
		one := a.must(a.do("GET", "/v1/admin/transactions/"+gid, adminTok, "", nil), 200)
		if one.body["state"] != "committed" || len(one.body["branches"].([]any)) != 2 {
			t.Fatalf("transaction %s", one.raw)
		}
	}
}

func TestGroupsAndPackets(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, otok := a.funded("500.00")
	c, ctok := a.funded("50.00")
	d, dtok := a.funded("50.00")
	e, etok := a.funded("50.00")

	g := a.must(a.do("POST", "/v1/groups", otok, "g-1", map[string]any{"capacity": 3, "fee": "5.00"}), 201)
	gid := int64(g.body["id"].(float64))
	if again := a.must(a.do("POST", "/v1/groups", otok, "g-1", map[string]any{"capacity": 3, "fee": "5.00"}), 201); again.raw != g.raw {
		t.Fatalf("group replay differs: %s vs %s", again.raw, g.raw)
	}
	a.must(a.do("POST", fmt.Sprintf("/v1/groups/%d/join", gid), ctok, "j", nil), 200)
	a.must(a.do("POST", fmt.Sprintf("/v1/groups/%d/join", gid), dtok, "j", nil), 200)
	full := a.do("POST", fmt.Sprintf("/v1/groups/%d/join", gid), etok, "j", nil)
	if full.status != 409 || full.code() != "cancelled" || !strings.Contains(full.raw, "full") {
		t.Fatalf("join of a full group: %d %s", full.status, full.raw)
	}
	if got := a.balance(etok); got != "50.00/0.00" {
		t.Fatalf("refused joiner has %s", got)
	}
	if got := a.balance(otok); got != "510.00/0.00" {
		t.Fatalf("owner has %s after two fees", got)
	}
	// A replayed paid join answers the same and charges nobody twice.
	if r := a.must(a.do("POST", fmt.Sprintf("/v1/groups/%d/join", gid), ctok, "j", nil), 200); r.body["outcome"] != "committed" {
		t.Fatalf("replayed join: %s", r.raw)
	}
	if got, owner := a.balance(ctok), a.balance(otok); got != "45.00/0.00" || owner != "510.00/0.00" {
		t.Fatalf("after a replayed join: member %s, owner %s", got, owner)
	}
	ms := a.must(a.do("GET", fmt.Sprintf("/v1/groups/%d/members", gid), ctok, "", nil), 200)
	if len(ms.body["members"].([]any)) != 3 {
		t.Fatalf("members %s", ms.raw)
	}
	if r := a.do("GET", "/v1/groups/999/members", ctok, "", nil); r.status != 404 {
		t.Fatalf("members of a missing group: %s", r.raw)
	}
	if got := a.must(a.do("GET", fmt.Sprintf("/v1/groups/%d", gid), ctok, "", nil), 200); got.body["member_count"] != float64(3) && got.body["MemberCount"] != float64(3) {
		t.Fatalf("group %s", got.raw)
	}
	if r := a.do("GET", "/v1/groups/999", ctok, "", nil); r.status != 404 || r.code() != "not_found" {
		t.Fatalf("missing group: %s", r.raw)
	}
	if r := a.do("POST", "/v1/groups", otok, "g-1", map[string]any{"capacity": 4, "fee": "5.00"}); r.status != 409 {
		t.Fatalf("group key reused for another group: %s", r.raw)
	}
	if r := a.do("POST", "/v1/groups", otok, "g-2", map[string]any{"capacity": 0}); r.status != 400 {
		t.Fatalf("group of capacity 0: %s", r.raw)
	}

	// A lucky packet for the group, grabbed through the API.
	p := a.must(a.do("POST", "/v1/packets", otok, "p-1", map[string]any{"kind": "lucky", "group": gid, "amount": "8.88", "shares": 2, "greeting": "新年快乐"}), 201)
	pid := p.body["id"].(string)
	if p2 := a.must(a.do("POST", "/v1/packets", otok, "p-1", map[string]any{"kind": "lucky", "group": gid, "amount": "8.88", "shares": 2, "greeting": "新年快乐"}), 201); p2.body["id"] != pid {
		t.Fatalf("send replay made another packet: %s", p2.raw)
	}
	g1 := a.must(a.do("POST", "/v1/packets/"+pid+"/grab", ctok, "grab", nil), 200)
	g1again := a.must(a.do("POST", "/v1/packets/"+pid+"/grab", ctok, "grab", nil), 200)
	if g1.body["claim"].(map[string]any)["id"] != g1again.body["claim"].(map[string]any)["id"] {
		t.Fatalf("repeated grab: %s vs %s", g1.raw, g1again.raw)
	}
	if r := a.do("POST", "/v1/packets/"+pid+"/grab", etok, "grab", nil); r.status != 404 || r.code() != "not_found" {
		t.Fatalf("non-member grab: %s", r.raw)
	}
	a.must(a.do("POST", "/v1/packets/"+pid+"/grab", dtok, "grab", nil), 200)
	if r := a.do("POST", "/v1/packets/"+pid+"/grab", otok, "grab", nil); r.status != 409 || r.code() != "sold_out" {
		t.Fatalf("grab of an empty packet: %s", r.raw)
	}
	if r := a.do("POST", "/v1/packets/12345/grab", ctok, "grab", nil); r.status != 404 {
		t.Fatalf("grab of a missing packet: %s", r.raw)
	}
	if r := a.do("POST", "/v1/packets/abc/grab", ctok, "grab", nil); r.status != 400 {
		t.Fatalf("grab with a bad id: %s", r.raw)
	}
	// A single packet: only its receiver grabs it; nobody grabs as someone else.
	sp := a.must(a.do("POST", "/v1/packets", otok, "p-2", map[string]any{"kind": "single", "receiver": e, "amount": "1.00"}), 201)
	spid := sp.body["id"].(string)
	if r := a.do("POST", "/v1/packets/"+spid+"/grab", ctok, "grab", nil); r.status != 404 {
		t.Fatalf("grab of someone else's packet: %s", r.raw)
	}
	a.must(a.do("POST", "/v1/packets/"+spid+"/grab", etok, "grab", nil), 200)
	if r := a.do("POST", "/v1/packets", otok, "p-3", map[string]any{"kind": "lucky", "group": gid, "amount": "9999.00", "shares": 2}); r.status != 409 || r.code() != "cancelled" {
		t.Fatalf("send beyond funds: %s", r.raw)
	}
	if r := a.do("POST", "/v1/packets", otok, "p-4", map[string]any{"kind": "golden", "group": gid, "amount": "1.00", "shares": 2}); r.status != 400 {
		t.Fatalf("bad kind: %s", r.raw)
	}
	// Credits land; the detail shows them credited.
	hbtest.WaitFor(t, 30*time.Second, "the detail to show both claims credited", func() bool {
		det := a.must(a.do("GET", "/v1/packets/"+pid, ctok, "", nil), 200)
		claims := det.body["claims"].([]any)
		credited := 0
		for _, cl := range claims {
			if cl.(map[string]any)["credited"] == true {
				credited++
			}
		}
		return len(claims) == 2 && credited == 2 && det.body["best_luck"] != nil
	})
	sent := a.must(a.do("GET", "/v1/packets/sent", otok, "", nil), 200)
	if len(sent.body["packets"].([]any)) < 2 {
		t.Fatalf("sent %s", sent.raw)
	}
	recv := a.must(a.do("GET", "/v1/packets/received", ctok, "", nil), 200)
	if len(recv.body["claims"].([]any)) != 1 {
		t.Fatalf("received %s", recv.raw)
	}
	_, _ = c, d
}

// The OpenAPI document and the routes agree, both ways.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	doc := a.must(a.do("GET", "/openapi.json", "", "", nil), 200)
	paths := doc.body["paths"].(map[string]any)
	n := 0
	for path, item := range paths {
		for method, op := range item.(map[string]any) {
			n++
			if s, _ := op.(map[string]any)["summary"].(string); s == "" {
				t.Errorf("%s %s has no summary", method, path)
			}
			real := strings.NewReplacer("{id}", "1", "{user}", "1", "{gid}", "x").Replace(path)
			r := a.do(strings.ToUpper(method), real, "", "", nil)
			if r.code() == "no_route" || r.status == http.StatusMethodNotAllowed {
				t.Errorf("documented %s %s is not served: %d %s", method, path, r.status, r.raw)
			}
		}
	}
	if r := a.do("GET", "/v1/nothing", "", "", nil); r.code() != "no_route" {
		t.Fatalf("an undocumented path is served: %s", r.raw)
	}
	if n < 20 {
		t.Fatalf("only %d operations documented", n)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		a.must(a.do("GET", p, "", "", nil), 200)
	}
	m := a.do("GET", "/metrics", "", "", nil)
	for _, name := range []string{"hongbao_http_requests_total", "hongbao_grabs_total", "hongbao_credits_pending", "hongbao_dead_letters_total", "hongbao_coordinator_retries_total"} {
		if !strings.Contains(m.raw, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}
