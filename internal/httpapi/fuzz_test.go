package httpapi_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"hongbao/internal/httpapi"
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
		`{"kind": "single", "receiver": %d, "amount": "0.01", "greeting": "\u0000"}`, `{"kind": "single", "receiver": %d, "amount": "0.01", "greeting": "\u001b[31m"}`,
		`{"kind": "single", "receiver": %d, "amount": "0.01", "greeting": "\u202e\ud800"}`, `{"TO": %d, "amount": "0.01"}`,
		`{"to": %d, "amount": "0.01", "amount": "0.02"}`, `{"to": %d, "amount": "10000000000000.01"}`, `{"user": %d, "amount": "92233720368547758.07"}`,
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

// FuzzPathsAndHeaders sends arbitrary path segments, query values and
// content types to every kind of route: never a 5xx, and the caller's
// wallet never changes. `go test` runs the seeds and the corpus in
// testdata/fuzz; `go test -fuzz FuzzPathsAndHeaders` explores.
func FuzzPathsAndHeaders(f *testing.F) {
	a := newAPI(f)
	adm := token(f, httpapi.Claims{Admin: true})
	_, tok := a.funded("20.00")
	for _, s := range []string{"a\x00b", "a\xffb", "%00", "%ff", "..", "386833498809307136", "-1", "0", "9223372036854775808", "9223372036854775807",
		"transfer:1:k", strings.Repeat("x", 600), "\u202e", "a/b", "?x=%00", "1e3", " 1"} {
		f.Add(uint8(len(s)), s, "application/json")
		f.Add(uint8(len(s)+1), s, "text/plain; charset=\xff")
	}
	routes := []string{"/v1/admin/transactions/%s", "/v1/packets/%s", "/v1/groups/%s", "/v1/groups/%s/members", "/v1/admin/wallets/%s",
		"/v1/wallet/statement?cursor=%s", "/v1/admin/transactions?state=%s", "/v1/packets/sent?limit=%s", "/v1/groups/1/members?cursor=%s", "/v1/packets/received?cursor=%s",
		"/v1/packets/%s/grab", "/v1/groups/%s/join", "/v1/transfers",
		"/v1/admin/dead-letters/%s", "/v1/admin/dead-letters?cursor=%s", "/v1/admin/wallets/%s/statement", "/v1/admin/wallets/1/statement?cursor=%s",
		"/v1/admin/recon?cursor=%s", "/v1/admin/transactions?older_than_seconds=%s", "/v1/admin/transactions?kind=%s",
		"/v1/admin/transactions/%s/retry", "/v1/admin/dead-letters/%s/redrive"}
	f.Fuzz(func(t *testing.T, which uint8, seg, ctype string) {
		a := &api{t: t, srv: a.srv, sys: a.sys, s: a.s}
		route := routes[int(which)%len(routes)]
		method := "GET"
		if strings.HasSuffix(route, "grab") || strings.HasSuffix(route, "join") || strings.HasSuffix(route, "retry") || strings.HasSuffix(route, "redrive") || route == "/v1/transfers" {
			method = "POST"
		}
		path := route
		if strings.Contains(route, "%s") {
			path = strings.Replace(route, "%s", url.PathEscape(seg), 1)
		}
		before := a.balance(tok)
		req, err := http.NewRequest(method, a.srv.URL+path, strings.NewReader(seg))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Authorization", "Bearer "+map[bool]string{true: adm, false: tok}[strings.HasPrefix(path, "/v1/admin")])
		req.Header.Set("Idempotency-Key", fmt.Sprint("fz-", which, len(seg)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s (%q): %d %s", method, path, ctype, resp.StatusCode, body)
		}
		if after := a.balance(tok); after != before {
			t.Fatalf("%s %s changed the wallet %s -> %s", method, path, before, after)
		}
	})
}
