package httpapi_test

import (
	"fmt"
	"testing"
)

var fuzzPaths = []string{"/v1/transfers", "/v1/packets", "/v1/groups", "/v1/groups/1/join", "/v1/admin/deposits"}

// FuzzMoneyRequests sends arbitrary bodies to the money-moving endpoints
// of one real server: never a 5xx, and a rejected request never changes
// the caller's wallet. `go test` runs the seeds; `go test -fuzz` explores.
func FuzzMoneyRequests(f *testing.F) {
	a := newAPI(f)
	_, tok := a.funded("20.00")
	v, _ := a.funded("0.01")
	seeds := []string{
		`{"to": %d, "amount": 1}`, `{"to": "%d", "amount": "1.00"}`, `{"to": %d, "amount": "1e3"}`, `{"to": %d, "amount": " 1.00"}`,
		`{"to": %d, "amount": "99999999999999999999"}`, `{"to": %d, "amount": "-0.01"}`, `{"to": %d, "amount": "0.001"}`,
		`{"to": %d, "amount": null}`, `{"to": %d}`, `[%d]`, `null`, `"%d"`, `{"to": %d, "amount": "1.00", "to": 0}`,
		`{"to": 9223372036854775807, "amount": "0.01"}`, `{"to": %d, "amount": "NaN"}`, `{"to": 1e30, "amount": "1.00"}`,
		`{"to": %d, "amount": "1,00"}`, "{\"to\": %d, \"amount\": \"1.00\"}\x00", `{"to": %d, "amount": "0.01"}`,
		`{"kind": "lucky", "group": -1, "amount": "1.00", "shares": %d}`, `{"kind": "single", "receiver": %d, "amount": "0.001"}`,
		`{"kind": "equal", "group": 1, "amount": "1.00", "shares": -1, "greeting": "\u0000%d"}`, `{"kind": "single", "receiver": %d, "amount": "100.00"}`,
		`{"kind": "single", "receiver": %d, "amount": "0.01", "expires_in_seconds": -5}`, `{"kind": "lucky", "group": %d, "amount": "1.00", "shares": 99999999999}`,
		`{"capacity": 2147483648, "fee": "1.00", "x": %d}`, `{"capacity": -%d, "fee": "1.00"}`, `{"capacity": 2, "fee": "-1.00"}`,
		`{"user": %d, "amount": "1.00"}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), fmt.Sprintf(s, v))
	}
	n := 0
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		n++
		a := &api{t: t, srv: a.srv, sys: a.sys, s: a.s}
		path := fuzzPaths[int(which)%len(fuzzPaths)]
		before := a.balance(tok)
		r := a.do("POST", path, tok, fmt.Sprint("fuzz-", n), body)
		if r.status >= 500 {
			t.Fatalf("%s %q: %d %s", path, body, r.status, r.raw)
		}
		if r.status >= 400 {
			if after := a.balance(tok); after != before {
				t.Fatalf("%s %q rejected with %d but the wallet went %s -> %s", path, body, r.status, before, after)
			}
		}
	})
}
