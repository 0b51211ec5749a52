package httpapi_test

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"hongbao/internal/httpapi"
)

// validate checks v against the subset of JSON Schema the document uses:
// $ref, anyOf, type, properties, required, additionalProperties, items,
// enum, pattern, minimum, maximum, maxLength.
func validate(schemas map[string]any, s map[string]any, v any, at string) []string {
	if r, ok := s["$ref"].(string); ok {
		return validate(schemas, schemas[strings.TrimPrefix(r, "#/components/schemas/")].(map[string]any), v, at)
	}
	if alts, ok := s["anyOf"].([]any); ok {
		for _, alt := range alts {
			if len(validate(schemas, alt.(map[string]any), v, at)) == 0 {
				return nil
			}
		}
		return []string{at + ": matches no alternative"}
	}
	var errs []string
	bad := func(f string, args ...any) { errs = append(errs, at+": "+fmt.Sprintf(f, args...)) }
	switch s["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("want an object, got %T", v)
			return errs
		}
		props, _ := s["properties"].(map[string]any)
		for _, r := range s["required"].([]any) {
			if _, ok := m[r.(string)]; !ok {
				bad("missing %s", r)
			}
		}
		for k, x := range m {
			ps, ok := props[k]
			if !ok {
				if s["additionalProperties"] == false {
					bad("undocumented field %s", k)
				}
				continue
			}
			errs = append(errs, validate(schemas, ps.(map[string]any), x, at+"."+k)...)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("want an array, got %T", v)
			return errs
		}
		for i, x := range a {
			errs = append(errs, validate(schemas, s["items"].(map[string]any), x, fmt.Sprintf("%s[%d]", at, i))...)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("want a string, got %T %v", v, v)
			return errs
		}
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(str) {
			bad("%q does not match %s", str, p)
		}
		if e, ok := s["enum"].([]any); ok && !slices.Contains(e, any(str)) {
			bad("%q is not one of %v", str, e)
		}
		if m, ok := s["maxLength"].(float64); ok && float64(utf8.RuneCountInString(str)) > m {
			bad("longer than %v", m)
		}
	case "integer":
		n, ok := v.(float64)
		if !ok || n != math.Trunc(n) {
			bad("want an integer, got %v", v)
			return errs
		}
		if m, ok := s["minimum"].(float64); ok && n < m {
			bad("%v below %v", n, m)
		}
		if m, ok := s["maximum"].(float64); ok && n > m {
			bad("%v above %v", n, m)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want a boolean, got %T", v)
		}
	case "null":
		if v != nil {
			bad("want null")
		}
	}
	return errs
}

// Real answers of every route, successes and errors, match the schemas the
// document gives for their status.
func TestResponsesMatchTheDocument(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	raw := a.must(a.do("GET", "/openapi.json", "", "", nil), 200).raw
	var doc map[string]any
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		t.Fatal(err)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	paths := doc["paths"].(map[string]any)
	adm := token(t, httpapi.Claims{Admin: true})
	o, otok := a.funded("100.00")
	u, utok := a.funded("50.00")
	far, _ := a.fundedOn(1-a.sys.Ledgers.Table.Of(o), "0.01")
	g := a.must(a.do("POST", "/v1/groups", otok, "g", map[string]any{"capacity": 5, "fee": "1.00"}), 201).body["id"].(float64)
	gp := fmt.Sprintf("/v1/groups/%.0f", g)
	pk := a.must(a.do("POST", "/v1/packets", otok, "p", map[string]any{"kind": "single", "receiver": u, "amount": "2.00", "greeting": "hi"}), 201).body["id"].(string)
	top := a.must(a.do("POST", "/v1/topups", utok, "top", map[string]any{"amount": "5.00"}), 201).body
	wd := a.must(a.do("POST", "/v1/withdrawals", otok, "wd", map[string]any{"amount": "1.00"}), 201).body
	today := time.Now().UTC().Format("2006-01-02")
	paid := signed(fmt.Sprintf(`{"id":%q,"amount":"5.00","state":"paid","paid_at":%q}`, top["id"], time.Now().UTC().Format(time.RFC3339)))
	tests := []struct {
		pattern, method, path, tok, key string
		body                            any
	}{
		{"/v1/wallet", "get", "/v1/wallet", utok, "", nil},
		{"/v1/wallet/statement", "get", "/v1/wallet/statement?limit=2", otok, "", nil},
		{"/v1/transfers", "post", "/v1/transfers", otok, "t1", map[string]any{"to": far, "amount": "1.00"}},
		{"/v1/transfers", "post", "/v1/transfers", otok, "t2", map[string]any{"to": far, "amount": "1000.00"}},
		{"/v1/transfers", "post", "/v1/transfers", otok, "t3", map[string]any{"to": far, "amount": "x"}},
		{"/v1/packets", "post", "/v1/packets", otok, "p2", map[string]any{"kind": "lucky", "group": g, "amount": "3.00", "shares": 1}},
		{"/v1/packets/{id}/grab", "post", "/v1/packets/" + pk + "/grab", utok, "", nil},
		{"/v1/packets/{id}/grab", "post", "/v1/packets/" + pk + "/grab", otok, "", nil},
		{"/v1/packets/{id}", "get", "/v1/packets/" + pk, utok, "", nil},
		{"/v1/packets/{id}", "get", "/v1/packets/" + pk, userToken(t, 999999), "", nil},
		{"/v1/packets/sent", "get", "/v1/packets/sent", otok, "", nil},
		{"/v1/packets/received", "get", "/v1/packets/received", utok, "", nil},
		{"/v1/groups", "post", "/v1/groups", otok, "g2", map[string]any{"capacity": 2}},
		{"/v1/groups/{id}", "get", gp, otok, "", nil},
		{"/v1/groups/{id}/join", "post", gp + "/join", utok, "j", nil},
		{"/v1/groups/{id}/members", "get", gp + "/members", utok, "", nil},
		{"/v1/admin/deposits", "post", "/v1/admin/deposits", adm, "d", map[string]any{"user": u, "amount": "1.00"}},
		{"/v1/admin/wallets/{user}", "get", fmt.Sprintf("/v1/admin/wallets/%d", u), adm, "", nil},
		{"/v1/admin/transactions", "get", "/v1/admin/transactions?limit=5", adm, "", nil},
		{"/v1/admin/transactions", "get", "/v1/admin/transactions", utok, "", nil},
		{"/v1/admin/transactions/{gid}", "get", "/v1/admin/transactions/nope", adm, "", nil},
		{"/v1/admin/transactions", "get", "/v1/admin/transactions?kind=tcc&older_than_seconds=1", adm, "", nil},
		{"/v1/admin/transactions/{gid}/retry", "post", "/v1/admin/transactions/nope/retry", adm, "", nil},
		{"/v1/admin/transactions/{gid}/retry", "post", fmt.Sprintf("/v1/admin/transactions/transfer:%d:t1/retry", o), adm, "", nil},
		{"/v1/admin/wallets/{user}/statement", "get", fmt.Sprintf("/v1/admin/wallets/%d/statement?limit=2", o), adm, "", nil},
		{"/v1/admin/overview", "get", "/v1/admin/overview", adm, "", nil},
		{"/v1/admin/overview", "get", "/v1/admin/overview", utok, "", nil},
		{"/v1/admin/dead-letters", "get", "/v1/admin/dead-letters", adm, "", nil},
		{"/v1/admin/dead-letters/{seq}", "get", "/v1/admin/dead-letters/999999", adm, "", nil},
		{"/v1/admin/dead-letters/{seq}/redrive", "post", "/v1/admin/dead-letters/999999/redrive", adm, "", nil},
		{"/v1/conversations/{id}/events", "get", fmt.Sprintf("/v1/conversations/g%.0f/events?limit=5", g), otok, "", nil},
		{"/v1/conversations/{id}/events", "get", fmt.Sprintf("/v1/conversations/g%.0f/events", g), userToken(t, 999999), "", nil},
		{"/v1/conversations/{id}/events", "get", "/v1/conversations/x1/events", otok, "", nil},
		{"/v1/conversations/{id}/stream", "get", fmt.Sprintf("/v1/conversations/g%.0f/stream", g), userToken(t, 999999), "", nil},
		{"/v1/admin/webhooks", "post", "/v1/admin/webhooks", adm, "", map[string]any{"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef", "kinds": []string{"packet.sent"}}},
		{"/v1/admin/webhooks", "post", "/v1/admin/webhooks", adm, "", map[string]any{"url": "nope", "secret": "0123456789abcdef"}},
		{"/v1/admin/webhooks", "get", "/v1/admin/webhooks", adm, "", nil},
		{"/v1/admin/webhooks/{id}", "delete", "/v1/admin/webhooks/987654", adm, "", nil},
		{"/v1/admin/nodes", "get", "/v1/admin/nodes", adm, "", nil},
		{"/v1/admin/partitions", "get", "/v1/admin/partitions", adm, "", nil},
		{"/v1/admin/migrations", "post", "/v1/admin/migrations", adm, "", map[string]any{"slots": []int{7}, "to": 0}},
		{"/v1/admin/migrations", "post", "/v1/admin/migrations", adm, "", map[string]any{"slots": []int{2000}, "to": 0}},
		{"/v1/admin/migrations", "get", "/v1/admin/migrations", adm, "", nil},
		{"/v1/admin/migrations/{id}", "get", "/v1/admin/migrations/1", adm, "", nil},
		{"/v1/admin/migrations/{id}", "get", "/v1/admin/migrations/99999", adm, "", nil},
		{"/v1/admin/migrations/{id}/cancel", "post", "/v1/admin/migrations/1/cancel", adm, "", nil},
		{"/v1/admin/archive", "post", "/v1/admin/archive", adm, "", map[string]any{"before": "2001-01-01"}},
		{"/v1/admin/archive", "post", "/v1/admin/archive", adm, "", map[string]any{"before": "2999-01-01"}},
		{"/v1/admin/deliveries", "get", "/v1/admin/deliveries?state=pending", adm, "", nil},
		{"/v1/admin/deliveries", "get", "/v1/admin/deliveries?state=bogus", adm, "", nil},
		{"/v1/admin/deliveries/{id}/resend", "post", "/v1/admin/deliveries/123456/resend", adm, "", nil},
		{"/v1/topups", "post", "/v1/topups", utok, "top2", map[string]any{"amount": "999999.99"}},
		{"/v1/topups", "post", "/v1/topups", utok, "top3", map[string]any{"amount": "0"}},
		{"/v1/topups", "get", "/v1/topups", utok, "", nil},
		{"/v1/topups/{id}", "get", "/v1/topups/" + top["id"].(string), utok, "", nil},
		{"/v1/topups/{id}", "get", "/v1/topups/" + top["id"].(string), otok, "", nil},
		{"/v1/channel/notify", "post", "/v1/channel/notify", "", "", paid},
		{"/v1/channel/notify", "post", "/v1/channel/notify", "", "", `{"id":"1","amount":"5.00","state":"paid"}`},
		{"/v1/channel/notify", "post", "/v1/channel/notify", "", "", signed(`{"id":"12345","amount":"5.00","state":"paid"}`)},
		{"/v1/withdrawals", "post", "/v1/withdrawals", otok, "wd2", map[string]any{"amount": "500.00"}},
		{"/v1/withdrawals", "get", "/v1/withdrawals?limit=1", otok, "", nil},
		{"/v1/withdrawals/{id}", "get", "/v1/withdrawals/" + wd["id"].(string), otok, "", nil},
		{"/v1/withdrawals/{id}", "get", "/v1/withdrawals/" + top["id"].(string), utok, "", nil},
		{"/v1/admin/channel/orders", "get", "/v1/admin/channel/orders", adm, "", nil},
		{"/v1/admin/recon", "post", "/v1/admin/recon", adm, "", map[string]any{"day": today}},
		{"/v1/admin/recon", "post", "/v1/admin/recon", adm, "", map[string]any{"day": "2026-13-01"}},
		{"/v1/admin/recon/{day}", "get", "/v1/admin/recon/" + today, adm, "", nil},
		{"/v1/admin/recon", "get", "/v1/admin/recon?limit=5", adm, "", nil},
		{"/v1/admin/recon", "get", "/v1/admin/recon?cursor=9223372036854775807", adm, "", nil},
		{"/v1/admin/recon", "get", "/v1/admin/recon?cursor=x", adm, "", nil},
		{"/v1/admin/recon/{day}", "get", "/v1/admin/recon/2001-01-01", adm, "", nil},
		{"/v1/admin/recon/{day}/resolutions", "post", "/v1/admin/recon/" + today + "/resolutions", adm, "", map[string]any{"kind": "unknown_order", "order": "777", "note": "checked"}},
		{"/v1/admin/recon/{day}/resolutions", "post", "/v1/admin/recon/" + today + "/resolutions", adm, "", map[string]any{"kind": "x", "order": "777", "note": "checked"}},
	}
	seen := map[string]bool{}
	for _, c := range tests {
		r := a.do(strings.ToUpper(c.method), c.path, c.tok, c.key, c.body)
		op := paths[c.pattern].(map[string]any)[c.method].(map[string]any)
		resp, ok := op["responses"].(map[string]any)[fmt.Sprint(r.status)].(map[string]any)
		if !ok {
			t.Errorf("%s %s answered %d, which the document does not list: %s", c.method, c.path, r.status, r.raw)
			continue
		}
		seen[c.method+" "+c.pattern] = true
		var schema map[string]any
		for _, ct := range resp["content"].(map[string]any) {
			schema = ct.(map[string]any)["schema"].(map[string]any)
		}
		var body any
		if err := json.Unmarshal([]byte(r.raw), &body); err != nil {
			t.Errorf("%s %s: %v", c.method, c.path, err)
			continue
		}
		for _, e := range validate(schemas, schema, body, fmt.Sprintf("%s %s %d", c.method, c.path, r.status)) {
			t.Error(e)
		}
	}
	for p, item := range paths {
		for m := range item.(map[string]any) {
			if strings.HasPrefix(p, "/v1/") && !seen[m+" "+p] {
				t.Errorf("%s %s was not exercised", m, p)
			}
		}
	}
}
