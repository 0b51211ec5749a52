package httpapi

import (
	"regexp"
	"strings"
)

var pathParam = regexp.MustCompile(`\{([a-z]+)\}`)

// summaries and request schemas of the routes, by "METHOD pattern".
var docs = map[string]struct {
	summary string
	body    map[string]any
}{
	"GET /v1/wallet":                   {"The caller's wallet: balance, held, available.", nil},
	"GET /v1/wallet/statement":         {"The caller's entries, newest first (query: before, limit).", nil},
	"POST /v1/transfers":               {"Move money to another user (TCC across shards).", obj(map[string]any{"to": userID, "amount": amount}, "to", "amount")},
	"POST /v1/packets":                 {"Send a red packet (single, lucky or equal).", obj(map[string]any{"kind": enum("single", "lucky", "equal"), "receiver": userID, "group": userID, "amount": amount, "shares": integer, "greeting": str, "expires_in_seconds": integer}, "kind", "amount")},
	"POST /v1/packets/{id}/grab":       {"Grab one share as the caller; a repeat returns the same claim.", nil},
	"GET /v1/packets/{id}":             {"A packet with its claims, credited or pending, and the best luck.", nil},
	"GET /v1/packets/sent":             {"Packets the caller sent, newest first.", nil},
	"GET /v1/packets/received":         {"Claims of the caller, newest first.", nil},
	"POST /v1/groups":                  {"Create a group owned by the caller.", obj(map[string]any{"capacity": integer, "fee": amount}, "capacity")},
	"GET /v1/groups/{id}":              {"A group.", nil},
	"POST /v1/groups/{id}/join":        {"Join a group; with a fee, a saga that refunds when the join fails.", nil},
	"GET /v1/groups/{id}/members":      {"Members of a group (query: after, limit).", nil},
	"POST /v1/admin/deposits":          {"Credit a user from the external account (admin).", obj(map[string]any{"user": userID, "amount": amount}, "user", "amount")},
	"GET /v1/admin/wallets/{user}":     {"Any user's wallet (admin).", nil},
	"GET /v1/admin/transactions":       {"Global transactions, newest first (query: state, unfinished, limit) (admin).", nil},
	"GET /v1/admin/transactions/{gid}": {"One global transaction with branches, attempts and last error (admin).", nil},
}

var (
	userID  = map[string]any{"type": "integer", "format": "int64", "minimum": 1}
	amount  = map[string]any{"type": "string", "pattern": `^\d+(\.\d{1,2})?$`, "description": "yuan with at most two decimals, e.g. \"12.34\""}
	integer = map[string]any{"type": "integer"}
	str     = map[string]any{"type": "string"}
)

func enum(vs ...string) map[string]any { return map[string]any{"type": "string", "enum": vs} }

func obj(props map[string]any, required ...string) map[string]any {
	return map[string]any{"type": "object", "additionalProperties": false, "properties": props, "required": required}
}

// OpenAPI returns the OpenAPI 3.1 document of the routes this server serves.
func (s *Server) OpenAPI() map[string]any {
	paths := map[string]any{}
	for _, rt := range s.routes {
		key := rt.method + " " + rt.pattern
		op := map[string]any{
			"summary":     docs[key].summary,
			"operationId": strings.ToLower(rt.method) + strings.NewReplacer("/", "_", "{", "", "}", "").Replace(rt.pattern),
			"responses": map[string]any{
				"200":     map[string]any{"description": "done"},
				"default": map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}},
			},
			"security": []any{map[string]any{"bearer": []any{}}},
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.pattern, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": str})
		}
		if rt.idempotent {
			params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "required": true, "schema": str,
				"description": "retry with the same key: the request applies once"})
		}
		if params != nil {
			op["parameters"] = params
		}
		if b := docs[key].body; b != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": b}}}
		}
		item, _ := paths[rt.pattern].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.pattern] = item
		}
		item[strings.ToLower(rt.method)] = op
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
		paths[p] = map[string]any{"get": map[string]any{"summary": "operations endpoint", "responses": map[string]any{"200": map[string]any{"description": "ok"}}}}
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": "Hongbao", "version": "1", "description": "Wallets, red packets and paid groups for an IM product."},
		"paths":   paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "a token from `hongbao token`"}},
			"schemas":         map[string]any{"Error": obj(map[string]any{"code": str, "message": str}, "code", "message")},
		},
	}
}
