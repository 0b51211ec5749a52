package httpapi

import (
	"regexp"

	"hongbao/internal/events"
	"hongbao/internal/recon"
	"slices"
	"strings"
)

var pathParam = regexp.MustCompile(`\{([a-z]+)\}`)

// doc is what the OpenAPI document says of one route: a summary, the
// request body, and the schema of the answer for each success status. The
// error answers every route may give are added to all.
type doc struct {
	summary string
	body    map[string]any
	ok      map[string]map[string]any // status -> schema
	errors  []string                  // statuses of the errors this route answers besides the common ones
}

var docs = map[string]doc{
	"GET /v1/wallet":           {"The caller's wallet: balance, held, available, incoming.", nil, map[string]map[string]any{"200": ref("Wallet")}, nil},
	"GET /v1/wallet/statement": {"The caller's entries, newest first (query: cursor, limit).", nil, map[string]map[string]any{"200": ref("Statement")}, nil},
	"POST /v1/transfers": {"Move money to another user (a local transaction within a shard, TCC across shards).",
		obj(map[string]any{"to": userID, "amount": amount}, "to", "amount"),
		map[string]map[string]any{"200": ref("Result"), "202": ref("Result")}, []string{"409"}},
	"POST /v1/packets": {"Send a red packet (single, lucky or equal).",
		obj(map[string]any{"kind": enum("single", "lucky", "equal"), "receiver": userID, "group": groupID, "amount": amount,
			"shares": integer(1, 10000), "greeting": greeting, "expires_in_seconds": integer(0, 604800)}, "kind", "amount"),
		map[string]map[string]any{"201": ref("Packet"), "202": ref("Packet")}, []string{"409"}},
	"POST /v1/packets/{id}/grab": {"Grab one share as the caller; a repeat returns the same claim (no Idempotency-Key needed).", nil,
		map[string]map[string]any{"200": ref("Grab")}, []string{"409", "429"}},
	"GET /v1/packets/{id}":      {"A packet with its claims, credited or pending, and the best luck (parties and operators).", nil, map[string]map[string]any{"200": ref("Detail")}, nil},
	"GET /v1/packets/sent":      {"Packets the caller sent, newest first (query: cursor, limit).", nil, map[string]map[string]any{"200": list("packets", "Packet")}, nil},
	"GET /v1/packets/received":  {"Claims of the caller, newest first (query: cursor, limit).", nil, map[string]map[string]any{"200": list("claims", "Claim")}, nil},
	"POST /v1/groups":           {"Create a group owned by the caller.", obj(map[string]any{"capacity": integer(1, 2147483647), "fee": amount}, "capacity"), map[string]map[string]any{"201": ref("Group")}, []string{"409"}},
	"GET /v1/groups/{id}":       {"A group (members and operators).", nil, map[string]map[string]any{"200": ref("Group")}, nil},
	"POST /v1/groups/{id}/join": {"Join a group; with a fee, a saga that refunds when the join fails; a member joining again pays nothing.", nil, map[string]map[string]any{"200": ref("Result"), "202": ref("Result")}, []string{"409"}},
	"GET /v1/groups/{id}/members": {"Members of a group (query: cursor, limit) (members and operators).", nil,
		map[string]map[string]any{"200": list("members", "Member")}, nil},
	"POST /v1/admin/deposits": {"Credit a user from the external account (admin).", obj(map[string]any{"user": userID, "amount": amount}, "user", "amount"),
		map[string]map[string]any{"200": ref("Deposit")}, []string{"409"}},
	"GET /v1/admin/wallets/{user}": {"Any user's wallet (admin).", nil, map[string]map[string]any{"200": ref("Wallet")}, nil},
	"GET /v1/admin/transactions":   {"Global transactions, newest first (query: state, kind tcc|saga, unfinished, older_than_seconds, cursor, limit) (admin).", nil, map[string]map[string]any{"200": list("transactions", "Global")}, nil},
	"POST /v1/admin/transactions/{gid}/retry": {"Retry an unfinished global transaction now, as recovery would (under its lease; one leased by a driver at work is made due at once); answers it as it is afterwards; 409 already_finished when it is committed or cancelled (admin).", nil,
		map[string]map[string]any{"200": ref("Global")}, []string{"409"}},
	"GET /v1/admin/wallets/{user}/statement": {"Any user's entries, newest first (query: cursor, limit) (admin).", nil, map[string]map[string]any{"200": ref("Statement")}, nil},
	"GET /v1/admin/overview": {"The operators' overview: claims waiting for credit and the oldest's age, dead letters, global transactions pending and in recovery, webhook deliveries pending and given up, orders unknown, the last reconciliation, and grabs, sends and transfers per second over the last minutes (admin).", nil,
		map[string]map[string]any{"200": ref("Overview")}, nil},
	"GET /v1/admin/dead-letters": {"Messages parked on a dead-letter subject, oldest first (query: cursor, limit), credits decoded (admin).", nil,
		map[string]map[string]any{"200": list("dead_letters", "DeadLetter")}, nil},
	"GET /v1/admin/dead-letters/{seq}": {"One dead letter by its stream sequence (admin).", nil, map[string]map[string]any{"200": ref("DeadLetter")}, nil},
	"POST /v1/admin/dead-letters/{seq}/redrive": {"Publish a dead letter back to the subject it came from and record it (the ledger applies a credit once however often it is re-driven) (admin).", nil,
		map[string]map[string]any{"200": ref("DeadLetter")}, nil},
	"GET /v1/admin/recon":              {"Stored reconciliation reports, newest first (query: cursor, limit) (admin).", nil, map[string]map[string]any{"200": list("reports", "ReportSummary")}, nil},
	"GET /v1/admin/transactions/{gid}": {"One global transaction with branches, attempts and last error (admin).", nil, map[string]map[string]any{"200": ref("Global")}, nil},
	"POST /v1/topups": {"Top up the caller's wallet through the payment channel: 201 with the pay URL once the channel has the pay order, 202 while its answer is unknown (ask again with the same key). The wallet is credited once the channel definitely says paid.",
		obj(map[string]any{"amount": amount}, "amount"), map[string]map[string]any{"201": ref("Order"), "202": ref("Order")}, []string{"409"}},
	"GET /v1/topups":      {"The caller's top-ups, newest first (query: cursor, limit).", nil, map[string]map[string]any{"200": list("orders", "Order")}, nil},
	"GET /v1/topups/{id}": {"A top-up with every transition (its user and operators).", nil, map[string]map[string]any{"200": ref("OrderDetail")}, nil},
	"POST /v1/withdrawals": {"Withdraw from the caller's wallet through the payment channel: the amount is held, then paid out; 201 when the channel's answer is definite (succeeded or failed), 202 while it is unknown (the hold stays until it is).",
		obj(map[string]any{"amount": amount}, "amount"), map[string]map[string]any{"201": ref("Order"), "202": ref("Order")}, []string{"409"}},
	"GET /v1/withdrawals":      {"The caller's withdrawals, newest first (query: cursor, limit).", nil, map[string]map[string]any{"200": list("orders", "Order")}, nil},
	"GET /v1/withdrawals/{id}": {"A withdrawal with every transition (its user and operators).", nil, map[string]map[string]any{"200": ref("OrderDetail")}, nil},
	"POST /v1/channel/notify": {"The payment channel's callback of a paid order, signed with the merchant secret (X-Channel-Timestamp, X-Channel-Signature); 200 only after the credit has committed; a repeat answers the same.",
		obj(map[string]any{"id": bigID, "amount": amount, "state": str, "paid_at": when, "pay_url": str}, "id", "amount", "state"),
		map[string]map[string]any{"200": obj(map[string]any{"code": enum("SUCCESS"), "order": bigID, "state": ref("OrderState")}, "code", "order", "state")}, []string{"409"}},
	"GET /v1/admin/channel/orders": {"Orders not final yet, oldest first (query: older_than_seconds, limit) (admin): unknown withdrawals, unanswered top-ups.", nil,
		map[string]map[string]any{"200": obj(map[string]any{"orders": map[string]any{"type": "array", "items": ref("Order")}}, "orders")}, nil},
	"POST /v1/admin/recon": {"Reconcile a day (UTC) now against the channel's statement and the books; repairs what is safe and answers the stored report (admin).",
		obj(map[string]any{"day": day}, "day"), map[string]map[string]any{"200": ref("Report")}, nil},
	"GET /v1/conversations/{id}/events": {"A conversation's value events in order after a sequence number (query: after, limit); id is g<group>, d<user>-<user> (smaller first) or u<user> (its members, its two users, the user; and operators).", nil,
		map[string]map[string]any{"200": obj(map[string]any{"events": map[string]any{"type": "array", "items": ref("Event")}, "next": nullable(cursor)}, "events", "next")}, nil},
	"GET /v1/conversations/{id}/stream": {"The conversation's live events as Server-Sent Events (id: the sequence number, event: the kind, data: the Event as JSON); reconnect with Last-Event-ID (or ?after=) to resume with nothing lost or repeated.", nil,
		map[string]map[string]any{"200": {"type": "string", "description": "text/event-stream"}}, nil},
	"POST /v1/admin/webhooks": {"Register an application's webhook: events of the kinds given (none: all) are POSTed to url, signed with secret (admin).",
		obj(map[string]any{"url": str, "secret": map[string]any{"type": "string", "minLength": 16, "maxLength": 256}, "kinds": map[string]any{"type": "array", "items": enum(events.Kinds...)}}, "url", "secret"),
		map[string]map[string]any{"201": ref("Webhook")}, nil},
	"GET /v1/admin/webhooks": {"The registered webhooks (admin).", nil, map[string]map[string]any{"200": obj(map[string]any{"webhooks": map[string]any{"type": "array", "items": ref("Webhook")}}, "webhooks")}, nil},
	"DELETE /v1/admin/webhooks/{id}": {"Remove a webhook: nothing more is delivered to it, its pending deliveries are given up (admin).", nil,
		map[string]map[string]any{"200": obj(map[string]any{"id": bigID, "removed": boolean}, "id", "removed")}, nil},
	"GET /v1/admin/deliveries": {"Webhook deliveries, newest first (query: state pending|delivered|given_up, cursor, limit) (admin).", nil,
		map[string]map[string]any{"200": list("deliveries", "Delivery")}, nil},
	"POST /v1/admin/deliveries/{id}/resend": {"Put a delivery (e.g. given up) back on its way now with a fresh schedule (admin).", nil,
		map[string]map[string]any{"200": ref("Delivery")}, nil},
	"POST /v1/admin/migrations": {"Move ledger slots (all on one shard now) to another shard while traffic goes on: 202 with the migration, driven at once; follow it with GET (admin).",
		obj(map[string]any{"slots": arrayOf(integer(0, 1023)), "to": count}, "slots", "to"), map[string]map[string]any{"202": ref("Migration")}, nil},
	"GET /v1/admin/migrations": {"Slot migrations, newest first (query: cursor, limit) (admin).", nil,
		map[string]map[string]any{"200": list("migrations", "Migration")}, nil},
	"GET /v1/admin/migrations/{id}": {"A slot migration with every step it recorded (admin).", nil, map[string]map[string]any{"200": ref("Migration")}, nil},
	"POST /v1/admin/migrations/{id}/cancel": {"Cancel a migration that has not switched yet: everything it did is undone (409 conflict after the switch) (admin).", nil,
		map[string]map[string]any{"200": ref("Migration")}, nil},
	"GET /v1/admin/partitions": {"Every database's day partitions: attached or archived, with their row counts (admin).", nil,
		map[string]map[string]any{"200": ref("Partitions")}, nil},
	"POST /v1/admin/archive": {"Archive the day partitions before a day (at most today): journal days with their totals carried, packet days whose money is all credited; the others are kept and say why (admin).",
		obj(map[string]any{"before": day}, "before"), map[string]map[string]any{"200": ref("ArchiveReport")}, nil},
	"GET /v1/admin/nodes": {"The live nodes and which packet set each owns, with lease expiry and moves (admin).", nil,
		map[string]map[string]any{"200": obj(map[string]any{"nodes": map[string]any{"type": "array", "items": ref("Node")}, "sets": map[string]any{"type": "array", "items": ref("Lease")}}, "nodes", "sets")}, nil},
	"GET /v1/admin/recon/{day}": {"The last reconciliation report of a day (admin).", nil, map[string]map[string]any{"200": ref("Report")}, nil},
	"POST /v1/admin/recon/{day}/resolutions": {"Record an operator's resolution of one difference of a day; the next run counts it resolved (admin).",
		obj(map[string]any{"kind": enum(recon.Kinds...), "order": bigID, "note": str}, "kind", "order", "note"),
		map[string]map[string]any{"200": obj(map[string]any{"day": day, "kind": enum(recon.Kinds...), "order": bigID, "note": str}, "day", "kind", "order", "note")}, nil},
}

// commonErrors are the statuses of errors any authenticated route may give.
var commonErrors = []string{"400", "401", "403", "404", "413", "415", "503"}

// errorCodes are every stable code an error may carry.
var errorCodes = []string{"bad_json", "bad_amount", "bad_id", "bad_query", "bad_idempotency_key", "invalid_request", "idempotency_key_required",
	"unauthorized", "token_expired", "forbidden", "not_a_member", "banned", "not_found", "no_route", "method_not_allowed",
	"insufficient_funds", "balance_limit", "daily_limit", "amount_mismatch", "no_channel", "bad_signature", "channel_unavailable", "bad_day", "idempotency_conflict", "sold_out", "packet_expired", "packet_not_active", "group_full",
	"already_member", "already_finished", "conflict", "cancelled", "too_large", "archived", "unsupported_media_type", "busy", "unavailable", "retry", "canceled", "internal"}

var (
	userID   = map[string]any{"type": "integer", "format": "int64", "minimum": 1, "maximum": 9007199254740991}
	groupID  = map[string]any{"type": "integer", "format": "int64", "minimum": 1, "maximum": 9007199254740991}
	bigID    = map[string]any{"type": "string", "pattern": `^[0-9]+$`, "description": "a 63-bit id as a decimal string (it exceeds 2^53)"}
	amount   = map[string]any{"type": "string", "pattern": `^-?\d+(\.\d{1,2})?$`, "description": "yuan with at most two decimals, e.g. \"12.34\""}
	str      = map[string]any{"type": "string"}
	boolean  = map[string]any{"type": "boolean"}
	when     = map[string]any{"type": "string", "format": "date-time"}
	count    = map[string]any{"type": "integer", "minimum": 0}
	number   = map[string]any{"type": "number", "minimum": 0}
	figure   = map[string]any{"type": "integer", "minimum": -1, "description": "a count; -1 when it could not be read (see problems)"}
	day      = map[string]any{"type": "string", "format": "date", "description": "a day, YYYY-MM-DD (UTC)"}
	greeting = map[string]any{"type": "string", "maxLength": 64, "description": "one line of visible text, at most 64 characters"}
)

func integer(min, max int) map[string]any {
	return map[string]any{"type": "integer", "minimum": min, "maximum": max}
}

func arrayOf(item map[string]any) map[string]any {
	return map[string]any{"type": "array", "items": item}
}

func enum(vs ...string) map[string]any { return map[string]any{"type": "string", "enum": vs} }

func ref(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }

func list(field, item string) map[string]any {
	return obj(map[string]any{field: map[string]any{"type": "array", "items": ref(item)}, "next": nullable(cursor)}, field, "next")
}

// cursor is what a list's next gives and its ?cursor= takes back.
var cursor = map[string]any{"type": "string", "pattern": `^[0-9.]+$`, "description": "the cursor of the following page"}

func nullable(s map[string]any) map[string]any {
	return map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
}

func obj(props map[string]any, required ...string) map[string]any {
	return map[string]any{"type": "object", "additionalProperties": false, "properties": props, "required": required}
}

// schemas are the components every answer is built from.
var schemas = map[string]any{
	"Problem": obj(map[string]any{"type": str, "title": str, "status": integer(400, 599), "detail": str, "code": enum(errorCodes...), "message": str},
		"type", "title", "status", "detail", "code"),
	"Wallet": obj(map[string]any{"user": userID, "balance": amount, "held": amount, "available": amount, "incoming": amount}, "user", "balance", "held", "available"),
	"Entry": obj(map[string]any{"posting_id": count, "shard": count, "kind": enum("deposit", "transfer", "hold_post", "credit", "debit", "refund", "settle", "topup", "withdrawal", "reversal"), "ref": str,
		"amount": amount, "balance": amount, "counterparty": str, "description": str, "at": when}, "posting_id", "shard", "kind", "amount", "balance", "counterparty", "description", "at"),
	"Statement": obj(map[string]any{"entries": map[string]any{"type": "array", "items": ref("Entry")}, "next": nullable(cursor),
		"archived_before": day}, "entries", "next"),
	"Migration": obj(map[string]any{"id": count, "slots": arrayOf(integer(0, 1023)), "from": count, "to": count,
		"state":   enum("fencing", "copying", "verifying", "switching", "releasing", "cleaning", "done", "cancelling", "cancelled"),
		"wallets": count, "amount_fen": count, "error": str, "created_at": when, "updated_at": when, "finished_at": when,
		"steps": arrayOf(obj(map[string]any{"state": str, "note": str, "at": when}, "state", "at"))},
		"id", "slots", "from", "to", "state", "wallets", "amount_fen", "created_at", "updated_at"),
	"DayPartition": obj(map[string]any{"table": enum("postings", "packets", "claims"), "day": day, "state": enum("attached", "archived"),
		"rows": count, "archived_at": when}, "table", "day", "state"),
	"Partitions":   obj(map[string]any{"ledger_shards": arrayOf(ref("DatabaseDays")), "packet_sets": arrayOf(ref("DatabaseDays"))}, "ledger_shards", "packet_sets"),
	"DatabaseDays": obj(map[string]any{"number": count, "days": arrayOf(ref("DayPartition"))}, "number", "days"),
	"ArchiveReport": obj(map[string]any{"before": day,
		"ledger_shards": arrayOf(obj(map[string]any{"shard": count, "days": arrayOf(obj(map[string]any{"day": day, "postings": count}, "day", "postings"))}, "shard", "days")),
		"packet_sets": arrayOf(obj(map[string]any{"set": count, "days": arrayOf(obj(map[string]any{"day": day, "packets": count, "claims": count, "kept": str},
			"day", "packets", "claims"))}, "set", "days"))}, "before", "ledger_shards", "packet_sets"),
	"Result": obj(map[string]any{"gid": str, "outcome": enum("committed", "cancelled", "pending"),
		"state": enum("trying", "confirming", "cancelling", "committed", "cancelled"), "reason": str}, "gid", "outcome", "state"),
	"Deposit": obj(map[string]any{"user": userID, "amount": amount, "balance": amount, "posting_id": count}, "user", "amount", "balance", "posting_id"),
	"Packet": obj(map[string]any{"id": bigID, "kind": enum("single", "lucky", "equal"), "sender": userID, "receiver": userID, "group": groupID,
		"amount": amount, "shares": integer(1, 10000), "greeting": str, "state": enum("pending", "active", "finished", "expired", "cancelled"),
		"remaining_amount": amount, "remaining_count": count, "refunded": amount, "expires_at": when, "created_at": when},
		"id", "kind", "sender", "amount", "shares", "greeting", "state", "remaining_amount", "remaining_count", "refunded", "expires_at", "created_at"),
	"Claim": obj(map[string]any{"id": bigID, "packet_id": bigID, "user": userID, "seq": integer(1, 10000), "amount": amount, "at": when, "credited": boolean},
		"id", "packet_id", "user", "seq", "amount", "at", "credited"),
	"Grab":   obj(map[string]any{"claim": ref("Claim")}, "claim"),
	"Detail": obj(map[string]any{"packet": ref("Packet"), "claims": map[string]any{"type": "array", "items": ref("Claim")}, "best_luck": ref("Claim")}, "packet", "claims"),
	"Group": obj(map[string]any{"id": groupID, "owner": userID, "capacity": integer(1, 2147483647), "fee": amount, "member_count": count, "created_at": when},
		"id", "owner", "capacity", "fee", "member_count", "created_at"),
	"Member":     obj(map[string]any{"group_id": groupID, "user": userID, "joined_at": when}, "group_id", "user", "joined_at"),
	"Branch":     obj(map[string]any{"participant": str, "payload": map[string]any{}, "retryable": boolean}, "participant", "payload"),
	"OrderState": enum("created", "pending", "unknown", "paid", "closed", "succeeded", "failed", "reversed"),
	"Order": obj(map[string]any{"id": bigID, "kind": enum("topup", "withdrawal"), "user": userID, "amount": amount, "state": ref("OrderState"),
		"pay_url": str, "reason": str, "deadline": when, "channel_at": when, "created_at": when, "updated_at": when, "attempts": count},
		"id", "kind", "user", "amount", "state", "deadline", "created_at", "updated_at", "attempts"),
	"OrderEvent":  obj(map[string]any{"from": str, "to": ref("OrderState"), "note": str, "at": when}, "to", "at"),
	"OrderDetail": obj(map[string]any{"order": ref("Order"), "events": map[string]any{"type": "array", "items": ref("OrderEvent")}}, "order", "events"),
	"Difference": obj(map[string]any{"kind": enum(recon.Kinds...), "order": str, "user": userID, "amount": amount, "ours": str, "channel": str,
		"repaired": boolean, "resolved": boolean, "note": str}, "kind", "order", "amount", "ours", "channel", "repaired", "resolved"),
	"Check": obj(map[string]any{"name": str, "ok": boolean, "skipped": boolean, "detail": map[string]any{"type": "array", "items": str}}, "name", "ok"),
	"Side":  obj(map[string]any{"pays": count, "paid": amount, "payouts": count, "paid_out": amount}, "pays", "paid", "payouts", "paid_out"),
	"Report": obj(map[string]any{"id": bigID, "day": day, "ran_at": when, "channel": ref("Side"), "ours": ref("Side"),
		"differences": map[string]any{"type": "array", "items": ref("Difference")}, "checks": map[string]any{"type": "array", "items": ref("Check")},
		"repaired": count, "unresolved": count, "sound": boolean},
		"id", "day", "ran_at", "channel", "ours", "differences", "checks", "repaired", "unresolved", "sound"),
	"ReportSummary": obj(map[string]any{"id": bigID, "day": day, "ran_at": when, "unresolved": count, "sound": boolean}, "id", "day", "ran_at", "unresolved", "sound"),
	"Overview": obj(map[string]any{"at": when, "problems": arrayOf(str),
		"claims":         obj(map[string]any{"waiting": figure, "oldest_seconds": number}, "waiting", "oldest_seconds"),
		"dead_letters":   obj(map[string]any{"total": figure, "not_redriven": figure}, "total", "not_redriven"),
		"transactions":   obj(map[string]any{"pending": figure, "in_recovery": figure, "stuck": figure}, "pending", "in_recovery", "stuck"),
		"deliveries":     obj(map[string]any{"pending": figure, "given_up": figure}, "pending", "given_up"),
		"orders":         obj(map[string]any{"unknown": figure}, "unknown"),
		"recon":          nullable(ref("ReportSummary")),
		"sample_seconds": number,
		"rates":          arrayOf(obj(map[string]any{"at": when, "grabs": number, "sends": number, "transfers": number}, "at", "grabs", "sends", "transfers"))},
		"at", "problems", "claims", "dead_letters", "transactions", "deliveries", "orders", "recon", "sample_seconds", "rates"),
	"Credit": obj(map[string]any{"key": str, "user": userID, "amount": amount, "kind": str, "from": str}, "key", "user", "amount", "kind", "from"),
	"DeadLetter": obj(map[string]any{"seq": count, "subject": str, "origin": str, "at": when, "redriven": count, "redriven_at": when,
		"credits": arrayOf(ref("Credit")), "payload": str, "size": count}, "seq", "subject", "origin", "at", "redriven", "size"),
	"Node":  obj(map[string]any{"id": str, "url": str, "started_at": when, "seen_at": when}, "id", "url", "started_at", "seen_at"),
	"Lease": obj(map[string]any{"set": count, "owner": str, "url": str, "expires_at": when, "since": when, "moves": count}, "set", "owner", "url", "expires_at", "since", "moves"),
	"Event": obj(map[string]any{"id": str, "kind": enum(events.Kinds...), "conversation": str, "seq": count, "user": userID, "payload": map[string]any{"type": "object", "required": []string{}, "description": "what happened, by kind (see the README)"}, "at": when},
		"id", "kind", "conversation", "payload", "at"),
	"Webhook": obj(map[string]any{"id": bigID, "url": str, "kinds": map[string]any{"type": "array", "items": enum(events.Kinds...)}, "created_at": when}, "id", "url", "kinds", "created_at"),
	"Delivery": obj(map[string]any{"id": bigID, "webhook": bigID, "event_id": str, "state": enum("pending", "delivered", "given_up"), "attempts": count,
		"next_at": when, "last_error": str, "created_at": when, "done_at": when}, "id", "webhook", "event_id", "state", "attempts", "created_at"),
	"Global": obj(map[string]any{"gid": str, "kind": enum("tcc", "saga"), "state": enum("trying", "confirming", "cancelling", "committed", "cancelled"),
		"branches": map[string]any{"type": "array", "items": ref("Branch")}, "reason": str, "attempts": count, "last_error": str,
		"next_attempt": when, "owner": str, "created_at": when, "updated_at": when, "finished_at": when},
		"gid", "kind", "state", "branches", "attempts", "next_attempt", "owner", "created_at", "updated_at"),
}

var statusText = map[string]string{"200": "done", "201": "created; Location names it", "202": "accepted, still being driven: ask again with the same Idempotency-Key",
	"400": "bad input; nothing changed", "401": "no valid token", "403": "this token may not do it", "404": "no such thing (or not yours to see)",
	"409": "refused or cancelled: nothing changed", "413": "body too large", "415": "the body is not application/json",
	"429": "busy: retry after Retry-After", "503": "a dependency is unavailable: retry with the same key after Retry-After"}

// OpenAPI returns the OpenAPI 3.1 document of the routes this server serves.
func (s *Server) OpenAPI() map[string]any {
	paths := map[string]any{}
	problem := map[string]any{"application/problem+json": map[string]any{"schema": ref("Problem")}}
	for _, rt := range s.routes {
		key := rt.method + " " + rt.pattern
		d := docs[key]
		responses := map[string]any{}
		for status, schema := range d.ok {
			ctype := "application/json"
			if strings.HasSuffix(rt.pattern, "/stream") {
				ctype = "text/event-stream"
			}
			r := map[string]any{"description": statusText[status], "content": map[string]any{ctype: map[string]any{"schema": schema}}}
			if status == "201" {
				r["headers"] = map[string]any{"Location": map[string]any{"schema": str, "description": "the path of what was created"}}
			}
			responses[status] = r
		}
		for _, status := range append(slices.Clone(commonErrors), d.errors...) {
			r := map[string]any{"description": statusText[status], "content": problem}
			if status == "429" || status == "503" {
				r["headers"] = map[string]any{"Retry-After": map[string]any{"schema": map[string]any{"type": "integer"}, "description": "seconds"}}
			}
			responses[status] = r
		}
		op := map[string]any{
			"summary":     d.summary,
			"operationId": strings.ToLower(rt.method) + strings.NewReplacer("/", "_", "{", "", "}", "").Replace(rt.pattern),
			"responses":   responses,
			"security":    []any{map[string]any{"bearer": []any{}}},
		}
		if rt.auth == public {
			op["security"] = []any{}
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.pattern, -1) {
			schema := bigID
			switch m[1] {
			case "user":
				schema = userID
			case "gid":
				schema = map[string]any{"type": "string", "maxLength": 512}
			case "day":
				schema = day
			}
			if strings.HasPrefix(rt.pattern, "/v1/groups/") {
				schema = groupID
			}
			if strings.HasPrefix(rt.pattern, "/v1/conversations/") {
				schema = map[string]any{"type": "string", "pattern": `^(g[1-9][0-9]*|d[1-9][0-9]*-[1-9][0-9]*|u[1-9][0-9]*)$`}
			}
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": schema})
		}
		if rt.idempotent {
			params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "required": true,
				"schema": map[string]any{"type": "string", "maxLength": 128}, "description": "retry with the same key: the request applies once"})
		}
		if params != nil {
			op["parameters"] = params
		}
		if d.body != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": d.body}}}
		}
		item, _ := paths[rt.pattern].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.pattern] = item
		}
		item[strings.ToLower(rt.method)] = op
	}
	for p, summary := range map[string]string{"/healthz": "liveness of the process", "/readyz": "readiness: every database and NATS answer",
		"/metrics": "Prometheus metrics", "/openapi.json": "this document"} {
		responses := map[string]any{"200": map[string]any{"description": "ok"}}
		if p == "/readyz" {
			responses["503"] = map[string]any{"description": "a dependency does not answer", "content": problem}
		}
		paths[p] = map[string]any{"get": map[string]any{"summary": summary, "operationId": "get" + strings.NewReplacer("/", "_", ".", "_").Replace(p),
			"security": []any{}, "responses": responses}}
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": "Hongbao", "version": "1", "description": "Wallets, red packets and paid groups for an IM product."},
		"servers": []any{map[string]any{"url": "/", "description": "the server that serves this document"}},
		"paths":   paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "a token from `hongbao token`"}},
			"schemas":         schemas,
		},
	}
}
