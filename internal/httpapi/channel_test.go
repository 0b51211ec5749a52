package httpapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"hongbao/internal/channel"
	"hongbao/internal/hbtest"
	"hongbao/internal/httpapi"
)

// TestTopUpAndWithdrawalOverHTTP: the flows through the API against the
// simulator over HTTP, with the attacks a client tries: the same key with
// another body, bad bytes, amounts past int64, another user's order, a
// forged callback; then a reconciliation of the day that is sound.
func TestTopUpAndWithdrawalOverHTTP(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	u, tok := a.funded("0.01")
	_, other := a.funded("0.01")
	adm := token(t, httpapi.Claims{Admin: true})

	r := a.must(a.do("POST", "/v1/topups", tok, "k1", map[string]any{"amount": "88.88"}), 201)
	id := r.body["id"].(string)
	if r.body["state"] != "pending" || r.body["pay_url"] == "" {
		t.Fatalf("%s", r.raw)
	}
	// A replay answers the same order; the same key with another body is refused.
	if again := a.must(a.do("POST", "/v1/topups", tok, "k1", map[string]any{"amount": "88.88"}), 201); again.body["id"] != id {
		t.Fatalf("replay: %s", again.raw)
	}
	if c := a.do("POST", "/v1/topups", tok, "k1", map[string]any{"amount": "88.89"}); c.status != 409 || c.code() != "idempotency_conflict" {
		t.Fatalf("other body: %d %s", c.status, c.raw)
	}
	if c := a.do("POST", "/v1/withdrawals", tok, "k1", map[string]any{"amount": "88.88"}); c.status != 409 || c.code() != "idempotency_conflict" {
		t.Fatalf("other operation: %d %s", c.status, c.raw)
	}
	for _, body := range []string{`{"amount":"1.00\u0000"}`, "{\"amount\":\"1\x00\"}", `{"amount":"9223372036854775807"}`, `{"amount":9223372036854775808}`,
		`{"amount":"-1.00"}`, `{"amount":"1.001"}`, `{"amount":"1.00","user":2}`, `{}`} {
		if c := a.do("POST", "/v1/topups", tok, fmt.Sprintf("bad-%x", body), body); c.status != 400 {
			t.Errorf("%q: %d %s", body, c.status, c.raw)
		}
	}
	if c := a.raw("POST", "/v1/topups", "application/json; charset=latin1", `{"amount":"1.00"}`, tok, adm); c.status != 415 {
		t.Fatalf("a body declared latin1: %d %s", c.status, c.raw)
	}
	if c := a.rawAuth("GET", "/v1/topups/"+id, "bearer "+tok); c.status != 200 {
		t.Fatalf("the scheme in lower case: %d %s", c.status, c.raw)
	}
	if c := a.do("GET", "/v1/topups/"+id, other, "", nil); c.status != 404 {
		t.Fatalf("another user's top-up: %d %s", c.status, c.raw)
	}
	if c := a.do("GET", "/v1/withdrawals/"+id, tok, "", nil); c.status != 404 {
		t.Fatalf("a top-up read as a withdrawal: %d %s", c.status, c.raw)
	}
	// Forged and unknown callbacks change nothing.
	paid := fmt.Sprintf(`{"id":%q,"amount":"88.88","state":"paid"}`, id)
	if c := a.do("POST", "/v1/channel/notify", "", "", paid); c.status != 401 || c.code() != "bad_signature" {
		t.Fatalf("unsigned callback: %d %s", c.status, c.raw)
	}
	if c := a.do("POST", "/v1/channel/notify", "", "", signed(fmt.Sprintf(`{"id":%q,"amount":"888.80","state":"paid"}`, id))); c.status != 409 {
		t.Fatalf("other amount: %d %s", c.status, c.raw)
	}
	if got := a.balance(tok); got != "0.01/0.00" {
		t.Fatalf("nothing may be credited yet: %s", got)
	}
	// The payer pays at the pay URL; the channel calls back; credited once.
	resp, err := http.Post(r.body["pay_url"].(string), "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	hbtest.WaitFor(t, 5*time.Second, "credited", func() bool { return a.balance(tok) == "88.89/0.00" })
	for range 2 { // the channel repeats itself
		a.must(a.do("POST", "/v1/channel/notify", "", "", signed(paid)), 200)
	}
	d := a.must(a.do("GET", "/v1/topups/"+id, tok, "", nil), 200)
	// recorded, pending, the wrong amount noted, paid
	if d.body["order"].(map[string]any)["state"] != "paid" || len(d.body["events"].([]any)) != 4 {
		t.Fatalf("%s", d.raw)
	}

	// A withdrawal through a channel that loses answers: 202 unknown, the
	// hold kept, then succeeded by query; paid out once.
	a.sim.SetKnobs(channel.Knobs{LoseAnswer: 1})
	w := a.must(a.do("POST", "/v1/withdrawals", tok, "w1", map[string]any{"amount": "80.00"}), 202)
	wid := w.body["id"].(string)
	if w.body["state"] != "unknown" || a.balance(tok) != "88.89/80.00" {
		t.Fatalf("%s %s", w.raw, a.balance(tok))
	}
	if c := a.do("POST", "/v1/withdrawals", tok, "w2", map[string]any{"amount": "80.00"}); c.status != 409 || c.code() != "insufficient_funds" {
		t.Fatalf("the held money is not there twice: %d %s", c.status, c.raw)
	}
	a.sim.SetKnobs(channel.Knobs{})
	hbtest.WaitFor(t, 10*time.Second, "withdrawal succeeded", func() bool { return a.balance(tok) == "8.89/0.00" })
	if again := a.must(a.do("POST", "/v1/withdrawals", tok, "w1", map[string]any{"amount": "80.00"}), 201); again.body["id"] != wid || again.body["state"] != "succeeded" {
		t.Fatalf("replay after success: %s", again.raw)
	}
	if n := a.sim.PaidOut(); n != 1 {
		t.Fatalf("paid out %d times", n)
	}
	list := a.must(a.do("GET", "/v1/withdrawals", tok, "", nil), 200)
	if len(list.body["orders"].([]any)) != 1 {
		t.Fatalf("%s", list.raw)
	}
	st := a.must(a.do("GET", "/v1/wallet/statement", tok, "", nil), 200)
	if e := st.body["entries"].([]any)[0].(map[string]any); e["kind"] != "withdrawal" || e["description"] != "withdrawal through the payment channel" {
		t.Fatalf("%s", st.raw)
	}
	// The day reconciles with the channel's statement.
	today := time.Now().UTC().Format("2006-01-02")
	rep := a.must(a.do("POST", "/v1/admin/recon", adm, "", map[string]any{"day": today}), 200)
	if rep.body["sound"] != true {
		t.Fatalf("%s", rep.raw)
	}
	_ = u
}

// rawAuth sends a request with the Authorization header as given.
func (a *api) rawAuth(method, path, auth string) res {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, nil)
	req.Header.Set("Authorization", auth)
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
