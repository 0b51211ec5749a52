package httpapi_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"hongbao/internal/httpapi"
)

// Users on a chosen ledger shard, funded through the API.
func (a *api) fundedOn(shard int, amount string) (int64, string) {
	a.t.Helper()
	for {
		u := users.Add(1)
		if a.sys.Ledgers.Table.Of(u) != shard {
			continue
		}
		a.must(a.do("POST", "/v1/admin/deposits", token(a.t, httpapi.Claims{Admin: true}), fmt.Sprint("fund-", u), map[string]any{"user": u, "amount": amount}), 200)
		return u, userToken(a.t, u)
	}
}

// One key names one transfer, whichever path (same shard: a local
// transaction; across shards: TCC) the first and the second request take.
func TestTransferKeyOnePathOrTheOther(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	for _, order := range []string{"local first", "tcc first"} {
		sender, stok := a.fundedOn(0, "10.00")
		near, _ := a.fundedOn(0, "0.01")
		far, _ := a.fundedOn(1, "0.01")
		first, second := near, far
		if order == "tcc first" {
			first, second = far, near
		}
		a.must(a.do("POST", "/v1/transfers", stok, "K", map[string]any{"to": first, "amount": "3.00"}), 200)
		if r := a.do("POST", "/v1/transfers", stok, "K", map[string]any{"to": second, "amount": "3.00"}); r.status != 409 || r.code() != "idempotency_conflict" {
			t.Fatalf("%s: the same key to another receiver: %d %s", order, r.status, r.raw)
		}
		if r := a.do("POST", "/v1/transfers", stok, "K", map[string]any{"to": first, "amount": "3.01"}); r.status != 409 || r.code() != "idempotency_conflict" {
			t.Fatalf("%s: the same key with another amount: %d %s", order, r.status, r.raw)
		}
		if got := a.balance(stok); got != "7.00/0.00" {
			t.Fatalf("%s: sender has %s, want 7.00 (paid once)", order, got)
		}
		_ = sender
	}
}

func TestDepositKeyNamesOneDeposit(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	adm := token(t, httpapi.Claims{Admin: true})
	u, utok := a.funded("0.01")
	v, vtok := a.funded("0.01")
	a.must(a.do("POST", "/v1/admin/deposits", adm, "D", map[string]any{"user": u, "amount": "5.00"}), 200)
	if r := a.do("POST", "/v1/admin/deposits", adm, "D", map[string]any{"user": v, "amount": "5.00"}); r.status != 409 || r.code() != "idempotency_conflict" {
		t.Fatalf("the same deposit key for another user: %d %s", r.status, r.raw)
	}
	again := a.must(a.do("POST", "/v1/admin/deposits", adm, "D", map[string]any{"user": u, "amount": "5.00"}), 200)
	if !strings.Contains(again.raw, `"balance":"5.01"`) || strings.Contains(again.raw, "-") {
		t.Fatalf("replayed deposit answers %s", again.raw)
	}
	if a.balance(utok) != "5.01/0.00" || a.balance(vtok) != "0.01/0.00" {
		t.Fatalf("wallets %s and %s", a.balance(utok), a.balance(vtok))
	}
}

// Twenty concurrent sends with one key and one body: one packet, twenty
// identical answers. Another expiry with the key is a conflict.
func TestConcurrentSendsAnswerAlike(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, tok := a.funded("100.00")
	recv, _ := a.funded("0.01")
	body := map[string]any{"kind": "single", "receiver": recv, "amount": "1.00", "greeting": "hi"}
	answers := make([]res, 20)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() { answers[i] = a.do("POST", "/v1/packets", tok, "S", body) })
	}
	wg.Wait()
	for i, r := range answers {
		if r.status != answers[0].status || r.raw != answers[0].raw {
			t.Fatalf("answer %d: %d %s; answer 0: %d %s", i, r.status, r.raw, answers[0].status, answers[0].raw)
		}
	}
	if answers[0].status != 201 || answers[0].body["state"] != "active" {
		t.Fatalf("send: %d %s", answers[0].status, answers[0].raw)
	}
	other := map[string]any{"kind": "single", "receiver": recv, "amount": "1.00", "greeting": "hi", "expires_in_seconds": 60}
	if r := a.do("POST", "/v1/packets", tok, "S", other); r.status != 409 || r.code() != "idempotency_conflict" {
		t.Fatalf("the same key with another expiry: %d %s", r.status, r.raw)
	}
	if got := a.balance(tok); got != "99.00/0.00" {
		t.Fatalf("sender has %s after one send", got)
	}
}

func TestJoinAndGroupKeys(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, otok := a.funded("1.00")
	_, utok := a.funded("20.00")
	g1 := a.must(a.do("POST", "/v1/groups", otok, "g1", map[string]any{"capacity": 10, "fee": "5.00"}), 201).body["id"]
	g2 := a.must(a.do("POST", "/v1/groups", otok, "g2", map[string]any{"capacity": 10, "fee": "5.00"}), 201).body["id"]
	if r := a.do("POST", "/v1/groups", otok, "g1", map[string]any{"capacity": 11, "fee": "5.00"}); r.status != 409 || r.code() != "idempotency_conflict" {
		t.Fatalf("group key reused for another group: %d %s", r.status, r.raw)
	}
	a.must(a.do("POST", fmt.Sprintf("/v1/groups/%.0f/join", g1), utok, "J", nil), 200)
	if r := a.do("POST", fmt.Sprintf("/v1/groups/%.0f/join", g2), utok, "J", nil); r.status != 409 || r.code() != "idempotency_conflict" {
		t.Fatalf("join key reused for another group: %d %s", r.status, r.raw)
	}
	if got := a.balance(utok); got != "15.00/0.00" {
		t.Fatalf("joiner has %s, want one fee paid", got)
	}
}

// A send refused for lack of money changed nothing: no packet is listed
// and nobody can read it.
func TestRefusedSendLeavesNothing(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, tok := a.funded("1.00")
	recv, rtok := a.funded("0.01")
	r := a.do("POST", "/v1/packets", tok, "big", map[string]any{"kind": "single", "receiver": recv, "amount": "5.00"})
	if r.status != 409 || r.code() != "cancelled" {
		t.Fatalf("send beyond funds: %d %s", r.status, r.raw)
	}
	if sent := a.must(a.do("GET", "/v1/packets/sent", tok, "", nil), 200); len(sent.body["packets"].([]any)) != 0 {
		t.Fatalf("a refused send is listed: %s", sent.raw)
	}
	if recv := a.must(a.do("GET", "/v1/packets/received", rtok, "", nil), 200); len(recv.body["claims"].([]any)) != 0 {
		t.Fatalf("received: %s", recv.raw)
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	adm := token(t, httpapi.Claims{Admin: true})
	u, utok := a.fundedOn(0, "0.01")
	for _, amt := range []string{"92233720368547758.07", "10000000000000.01", "1000000.01"} {
		if r := a.do("POST", "/v1/admin/deposits", adm, "big-"+amt, map[string]any{"user": u, "amount": amt}); r.status != 400 {
			t.Fatalf("deposit of %s: %d %s", amt, r.status, r.raw)
		}
	}
	// Fill a wallet to its maximum balance (100,000,000.00 by default).
	for i := range 100 {
		amt := "1000000.00"
		if i == 0 {
			amt = "999999.99"
		}
		a.must(a.do("POST", "/v1/admin/deposits", adm, fmt.Sprint("fill-", i), map[string]any{"user": u, "amount": amt}), 200)
	}
	if got := a.balance(utok); got != "100000000.00/0.00" {
		t.Fatalf("full wallet has %s", got)
	}
	if r := a.do("POST", "/v1/admin/deposits", adm, "over", map[string]any{"user": u, "amount": "0.01"}); r.status != 409 || r.code() != "balance_limit" {
		t.Fatalf("deposit beyond the maximum balance: %d %s", r.status, r.raw)
	}
	// A transfer to the full wallet is refused at once, from either shard,
	// the sender keeps the money, nothing is left confirming, and the key
	// stays free for the corrected request.
	for _, shard := range []int{0, 1} {
		_, stok := a.fundedOn(shard, "5.00")
		r := a.do("POST", "/v1/transfers", stok, "to-full", map[string]any{"to": u, "amount": "1.00"})
		if r.status != 409 || r.code() != "balance_limit" {
			t.Fatalf("transfer from shard %d to a full wallet: %d %s", shard, r.status, r.raw)
		}
		if got := a.balance(stok); got != "5.00/0.00" {
			t.Fatalf("sender on shard %d has %s", shard, got)
		}
		other, _ := a.fundedOn(shard, "0.01")
		a.must(a.do("POST", "/v1/transfers", stok, "to-full", map[string]any{"to": other, "amount": "1.00"}), 200)
	}
	if r := a.must(a.do("GET", "/v1/admin/transactions?unfinished=true", adm, "", nil), 200); len(r.body["transactions"].([]any)) != 0 {
		t.Fatalf("unfinished transactions: %s", r.raw)
	}
	if v, err := a.sys.Ledgers.Check(t.Context()); err != nil || len(v) != 0 {
		t.Fatalf("ledger check: %v %v", v, err)
	}
}

func TestBadInputIsAClean4xx(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	adm := token(t, httpapi.Claims{Admin: true})
	_, tok := a.funded("10.00")
	recv, _ := a.funded("0.01")
	send := func(greeting string) string {
		return fmt.Sprintf(`{"kind":"single","receiver":%d,"amount":"1.00","greeting":%q}`, recv, greeting)
	}
	for name, c := range map[string]struct {
		method, path, ctype, body string
		status                    int
	}{
		"NUL in greeting":       {"POST", "/v1/packets", "application/json", `{"kind":"single","receiver":` + fmt.Sprint(recv) + `,"amount":"1.00","greeting":"a\u0000b"}`, 400},
		"ANSI escape":           {"POST", "/v1/packets", "application/json", send("\x1b[31mred"), 400},
		"newline":               {"POST", "/v1/packets", "application/json", send("a\nb"), 400},
		"bidi override":         {"POST", "/v1/packets", "application/json", send("abc\u202Edef"), 400},
		"zero width space":      {"POST", "/v1/packets", "application/json", send("a\u200bb"), 400},
		"line separator":        {"POST", "/v1/packets", "application/json", send("a\u2028b"), 400},
		"hangul filler":         {"POST", "/v1/packets", "application/json", send("\u3164\u3164"), 400},
		"zalgo":                 {"POST", "/v1/packets", "application/json", send("a" + strings.Repeat("\u0301", 5)), 400},
		"plus id":               {"GET", "/v1/admin/wallets/+5", "", "", 400},
		"unfinished=1":          {"GET", "/v1/admin/transactions?unfinished=1", "", "", 400},
		"limit=0":               {"GET", "/v1/packets/sent?limit=0", "", "", 400},
		"huge limit":            {"GET", "/v1/admin/transactions?limit=99999999999", "", "", 400},
		"unclean path":          {"GET", "//v1/wallet", "", "", 404},
		"too long":              {"POST", "/v1/packets", "application/json", send(strings.Repeat("福", 65)), 400},
		"text/plain":            {"POST", "/v1/transfers", "text/plain", fmt.Sprintf(`{"to":%d,"amount":"1.00"}`, recv), 415},
		"no content type":       {"POST", "/v1/transfers", "", fmt.Sprintf(`{"to":%d,"amount":"1.00"}`, recv), 415},
		"field case":            {"POST", "/v1/transfers", "application/json", fmt.Sprintf(`{"TO":%d,"amount":"1.00"}`, recv), 400},
		"duplicate field":       {"POST", "/v1/transfers", "application/json", fmt.Sprintf(`{"to":%d,"amount":"1.00","amount":"2.00"}`, recv), 400},
		"invalid UTF-8":         {"POST", "/v1/transfers", "application/json", "{\"to\":1,\"amount\":\"1.00\xff\"}", 400},
		"trailing data":         {"POST", "/v1/transfers", "application/json", fmt.Sprintf(`{"to":%d,"amount":"1.00"} {}`, recv), 400},
		"grab with a user":      {"POST", "/v1/packets/386833498809307136/grab", "application/json", `{"user": 5}`, 400},
		"join with a body":      {"POST", "/v1/groups/5/join", "application/json", `{"group": 6}`, 400},
		"gid with NUL":          {"GET", "/v1/admin/transactions/a%00b", "", "", 400},
		"gid with a bad byte":   {"GET", "/v1/admin/transactions/a%ffb", "", "", 400},
		"state with a bad byte": {"GET", "/v1/admin/transactions?state=%ff", "", "", 400},
		"int64 amount":          {"POST", "/v1/transfers", "application/json", fmt.Sprintf(`{"to":%d,"amount":"92233720368547758.07"}`, recv), 400},
		"type error":            {"POST", "/v1/transfers", "application/json", fmt.Sprintf(`{"to":"%d","amount":"1.00"}`, recv), 400},
	} {
		req := a.raw(c.method, c.path, c.ctype, c.body, tok, adm)
		if req.status != c.status {
			t.Errorf("%s: %d %s, want %d", name, req.status, req.raw, c.status)
		}
		if strings.Contains(req.raw, "Go struct") || strings.Contains(req.raw, "unmarshal") {
			t.Errorf("%s: the message leaks Go internals: %s", name, req.raw)
		}
	}
	if got := a.balance(tok); got != "10.00/0.00" {
		t.Fatalf("bad requests changed the wallet: %s", got)
	}
	// An emoji with joiners and a flag built of tag characters are fine.
	a.must(a.do("POST", "/v1/packets", tok, "emoji", map[string]any{"kind": "single", "receiver": recv, "amount": "1.00", "greeting": "👨‍👩‍👧 🏴\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F 新年快乐"}), 201)
}

// Only the parties of a packet and the members of a group read them;
// everyone else is told they do not exist. Grab answers eligibility
// before state, and one code for "no share left".
func TestReadsAreAuthorized(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	adm := token(t, httpapi.Claims{Admin: true})
	s, stok := a.funded("50.00")
	r, rtok := a.funded("0.01")
	_, xtok := a.funded("0.01")
	m, mtok := a.funded("0.01")
	single := a.must(a.do("POST", "/v1/packets", stok, "s1", map[string]any{"kind": "single", "receiver": r, "amount": "2.00", "greeting": "secret"}), 201).body["id"].(string)
	for who, tok := range map[string]string{"sender": stok, "receiver": rtok, "operator": adm} {
		a.must(a.do("GET", "/v1/packets/"+single, tok, "", nil), 200)
		_ = who
	}
	if got := a.do("GET", "/v1/packets/"+single, xtok, "", nil); got.status != 404 || strings.Contains(got.raw, "secret") {
		t.Fatalf("a stranger reads a one-to-one packet: %d %s", got.status, got.raw)
	}
	g := a.must(a.do("POST", "/v1/groups", stok, "g", map[string]any{"capacity": 5}), 201).body["id"]
	gp := fmt.Sprintf("/v1/groups/%.0f", g)
	a.must(a.do("POST", gp+"/join", mtok, "j", nil), 200)
	lucky := a.must(a.do("POST", "/v1/packets", stok, "l1", map[string]any{"kind": "lucky", "group": g, "amount": "2.00", "shares": 1}), 201).body["id"].(string)
	for _, path := range []string{gp, gp + "/members", "/v1/packets/" + lucky} {
		a.must(a.do("GET", path, mtok, "", nil), 200)
		a.must(a.do("GET", path, adm, "", nil), 200)
		if got := a.do("GET", path, xtok, "", nil); got.status != 404 || got.code() != "not_found" {
			t.Fatalf("a non-member reads %s: %d %s", path, got.status, got.raw)
		}
	}
	a.must(a.do("POST", "/v1/packets/"+lucky+"/grab", mtok, "", nil), 200)
	// Finished: a non-member hears what a missing packet answers, the sender
	// (a member) sold_out, twice.
	missing := a.do("POST", "/v1/packets/386833498809307136/grab", xtok, "", nil)
	if got := a.do("POST", "/v1/packets/"+lucky+"/grab", xtok, "", nil); got.status != 404 || got.raw != missing.raw {
		t.Fatalf("a non-member grabs a finished packet: %d %s", got.status, got.raw)
	}
	for range 2 {
		if got := a.do("POST", "/v1/packets/"+lucky+"/grab", stok, "", nil); got.status != 409 || got.code() != "sold_out" {
			t.Fatalf("a member late for a finished packet: %d %s", got.status, got.raw)
		}
	}
	_, _ = s, m
}

// A refused request leaves its key free, and is refused again when retried
// as it was: a retry never skips a check.
func TestRefusedRequestsStayRefused(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, otok := a.funded("100.00")
	_, xtok := a.funded("100.00")
	g := a.must(a.do("POST", "/v1/groups", otok, "g", map[string]any{"capacity": 3}), 201).body["id"]
	for name, body := range map[string]map[string]any{
		"non-member":      {"kind": "lucky", "group": g, "amount": "10.00", "shares": 1},
		"no such group":   {"kind": "lucky", "group": 123456789, "amount": "10.00", "shares": 1},
		"too many shares": {"kind": "equal", "group": g, "amount": "10.00", "shares": 4},
	} {
		first := a.do("POST", "/v1/packets", xtok, "K-"+name, body)
		again := a.do("POST", "/v1/packets", xtok, "K-"+name, body)
		if first.status < 400 || first.status >= 500 || again.status != first.status || again.code() != first.code() {
			t.Fatalf("%s: first %d %s, retry %d %s", name, first.status, first.raw, again.status, again.raw)
		}
	}
	if got := a.balance(xtok); got != "100.00/0.00" {
		t.Fatalf("refused sends changed the wallet: %s", got)
	}
	// A 4xx leaves the key free for the corrected request.
	if r := a.do("POST", "/v1/groups", otok, "k23", map[string]any{"capacity": 0}); r.status != 400 {
		t.Fatalf("capacity 0: %d %s", r.status, r.raw)
	}
	a.must(a.do("POST", "/v1/groups", otok, "k23", map[string]any{"capacity": 5}), 201)
	if r := a.do("POST", "/v1/groups/777/join", xtok, "kj", nil); r.status != 404 {
		t.Fatalf("join of a missing group: %d %s", r.status, r.raw)
	}
	a.must(a.do("POST", fmt.Sprintf("/v1/groups/%.0f/join", g), xtok, "kj", nil), 200)
}

// Packets are within the largest single amount, and money that cannot be
// refused later (a one-to-one packet's credit, an entry fee) is refused up
// front for a wallet that is already full.
func TestLimitsCoverPacketsAndFees(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	adm := token(t, httpapi.Claims{Admin: true})
	_, stok := a.funded("1000.00")
	full, ftok := a.funded("1000000.00")
	for i := range 99 {
		a.must(a.do("POST", "/v1/admin/deposits", adm, fmt.Sprint("fill-", i), map[string]any{"user": full, "amount": "1000000.00"}), 200)
	}
	if r := a.do("POST", "/v1/packets", stok, "big", map[string]any{"kind": "single", "receiver": full, "amount": "1000000.01"}); r.status != 400 {
		t.Fatalf("a packet above the largest single amount: %d %s", r.status, r.raw)
	}
	if r := a.do("POST", "/v1/packets", stok, "to-full", map[string]any{"kind": "single", "receiver": full, "amount": "1.00"}); r.status != 409 || r.code() != "balance_limit" {
		t.Fatalf("a one-to-one packet to a full wallet: %d %s", r.status, r.raw)
	}
	g := a.must(a.do("POST", "/v1/groups", ftok, "g", map[string]any{"capacity": 5, "fee": "1.00"}), 201).body["id"]
	if r := a.do("POST", fmt.Sprintf("/v1/groups/%.0f/join", g), stok, "j", nil); r.status != 409 || r.code() != "balance_limit" {
		t.Fatalf("paying a fee to a full owner: %d %s", r.status, r.raw)
	}
	if a.balance(stok) != "1000.00/0.00" || a.balance(ftok) != "100000000.00/0.00" {
		t.Fatalf("wallets %s and %s", a.balance(stok), a.balance(ftok))
	}
	if r := a.do("POST", "/v1/transfers", stok, "huge-id", map[string]any{"to": int64(1) << 53, "amount": "1.00"}); r.status != 400 {
		t.Fatalf("a user id above 2^53: %d %s", r.status, r.raw)
	}
}
