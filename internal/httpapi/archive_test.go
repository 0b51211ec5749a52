package httpapi_test

import (
	"strconv"
	"testing"
	"time"

	"hongbao/internal/days"
	"hongbao/internal/hbtest"
	"hongbao/internal/httpapi"
	"hongbao/internal/ids"
	"hongbao/internal/shard"
)

// Days archived through the API: only an admin archives; a packet of an
// archived day answers 410 archived, the statement's last page says where
// the journal kept starts, balances are unchanged and money moves on.
func TestArchiveThroughTheAPI(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	adm := token(t, httpapi.Claims{Admin: true})
	_, stok := a.funded("10.00")
	rcpt, rtok := a.funded("1.00")
	p := a.must(a.do("POST", "/v1/packets", stok, "arch-p", map[string]any{"kind": "single", "receiver": rcpt, "amount": "2.50"}), 201)
	pid := p.body["id"].(string)
	a.must(a.do("POST", "/v1/packets/"+pid+"/grab", rtok, "", nil), 200)
	hbtest.WaitFor(t, 30*time.Second, "the claim credited", func() bool {
		d := a.must(a.do("GET", "/v1/packets/"+pid, rtok, "", nil), 200)
		c, _ := d.body["claims"].([]any)
		return len(c) == 1 && c[0].(map[string]any)["credited"] == true
	})
	// All of it made three days old.
	ctx := t.Context()
	old := days.Of(time.Now()).AddDate(0, 0, -3)
	id, _ := strconv.ParseInt(pid, 10, 64)
	set := a.sys.Sets[ids.Shard(id)]
	if err := days.Ensure(ctx, set.DB(), old, old, "packets", "claims"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE packets SET created_at = created_at - interval '3 days' WHERE id = $1`,
		`UPDATE claims SET packet_at = packet_at - interval '3 days' WHERE packet_id = $1`} {
		if _, err := set.DB().Exec(ctx, q, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range a.sys.Ledgers.Shards {
		if err := days.Ensure(ctx, l.DB(), old, old, "postings"); err != nil {
			t.Fatal(err)
		}
		if _, err := l.DB().Exec(ctx, `UPDATE postings SET created_at = created_at - interval '3 days'`); err != nil {
			t.Fatal(err)
		}
	}
	// The reconciler marks the claim credited once it has seen it in the
	// ledger: until then the day is kept.
	hbtest.WaitFor(t, 30*time.Second, "the claim marked credited", func() bool {
		n, _, err := set.Overdue(ctx, time.Now().Add(time.Hour))
		return err == nil && n == 0
	})
	today := time.Now().UTC().Format(time.DateOnly)
	if r := a.do("POST", "/v1/admin/archive", stok, "", map[string]any{"before": today}); r.status != 403 {
		t.Fatalf("a user archived: %s", r.raw)
	}
	rep := a.must(a.do("POST", "/v1/admin/archive", adm, "", map[string]any{"before": today}), 200)
	if sets, _ := rep.body["packet_sets"].([]any); len(sets) != len(a.sys.Sets) {
		t.Fatalf("archive report: %s", rep.raw)
	}
	if r := a.do("GET", "/v1/packets/"+pid, rtok, "", nil); r.status != 410 || r.code() != "archived" {
		t.Fatalf("an archived packet: %s (archive: %s)", r.raw, rep.raw)
	}
	st := a.must(a.do("GET", "/v1/wallet/statement", rtok, "", nil), 200)
	if e, _ := st.body["entries"].([]any); len(e) != 0 || st.body["archived_before"] != today {
		t.Fatalf("statement after archive: %s", st.raw)
	}
	if got := a.balance(rtok); got != "3.50/0.00" {
		t.Fatalf("receiver %s after archive", got)
	}
	if got := a.balance(stok); got != "7.50/0.00" {
		t.Fatalf("sender %s after archive", got)
	}
	a.must(a.do("POST", "/v1/transfers", stok, "arch-t", map[string]any{"to": rcpt, "amount": "1.00"}), 200)
	st = a.must(a.do("GET", "/v1/wallet/statement", rtok, "", nil), 200)
	if e, _ := st.body["entries"].([]any); len(e) != 1 || st.body["archived_before"] != today {
		t.Fatalf("statement after a transfer: %s", st.raw)
	}
	parts := a.must(a.do("GET", "/v1/admin/partitions", adm, "", nil), 200)
	if _, ok := parts.body["ledger_shards"].([]any); !ok {
		t.Fatalf("partitions: %s", parts.raw)
	}
	for _, l := range a.sys.Ledgers.Shards {
		if v, err := l.Check(ctx); err != nil || len(v) > 0 {
			t.Fatalf("ledger shard %d after archive: %v %v", l.Shard(), v, err)
		}
	}
}

// Migrations through the API: a body without "to" (or with null) is
// refused, not read as shard 0; only an admin moves slots; a move is
// followed to its end, and the moved wallet's statement names the shard
// of each entry.
func TestMigrationsThroughTheAPI(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	adm := token(t, httpapi.Claims{Admin: true})
	u, tok := a.funded("5.00")
	slot := shard.SlotOf(u)
	from := a.sys.Ledgers.Table.Of(u)
	for _, body := range []string{`{"slots":[` + strconv.Itoa(slot) + `]}`, `{"slots":[` + strconv.Itoa(slot) + `],"to":null}`} {
		if r := a.do("POST", "/v1/admin/migrations", adm, "", body); r.status != 400 {
			t.Fatalf("%s: %s", body, r.raw)
		}
	}
	if r := a.do("POST", "/v1/admin/migrations", tok, "", map[string]any{"slots": []int{slot}, "to": 1 - from}); r.status != 403 {
		t.Fatalf("a user moved slots: %s", r.raw)
	}
	m := a.must(a.do("POST", "/v1/admin/migrations", adm, "", map[string]any{"slots": []int{slot}, "to": 1 - from}), 202)
	id := strconv.FormatFloat(m.body["id"].(float64), 'f', 0, 64)
	hbtest.WaitFor(t, 30*time.Second, "the migration done", func() bool {
		return a.must(a.do("GET", "/v1/admin/migrations/"+id, adm, "", nil), 200).body["state"] == "done"
	})
	if got := a.balance(tok); got != "5.00/0.00" {
		t.Fatalf("wallet after the move: %s", got)
	}
	// Until the node's routing table hears of the end, it answers 503 retry,
	// and a client asks again with the same key.
	hbtest.WaitFor(t, 30*time.Second, "the transfer after the move taken", func() bool {
		r := a.do("POST", "/v1/transfers", tok, "after-move", map[string]any{"to": u + 1, "amount": "1.00"})
		if r.status != 503 {
			a.must(r, 200)
		}
		return r.status == 200
	})
	st := a.must(a.do("GET", "/v1/wallet/statement", tok, "", nil), 200)
	es := st.body["entries"].([]any)
	if len(es) != 2 || es[0].(map[string]any)["shard"] != float64(1-from) || es[1].(map[string]any)["shard"] != float64(from) {
		t.Fatalf("statement across the move: %s", st.raw)
	}
	if r := a.do("POST", "/v1/admin/migrations/"+id+"/cancel", adm, "", nil); r.status != 409 {
		t.Fatalf("cancel after done: %s", r.raw)
	}
	// The list pages by cursor, newest first (found from outside: the
	// cursor was ignored, every page the newest).
	back := a.must(a.do("POST", "/v1/admin/migrations", adm, "", map[string]any{"slots": []int{slot}, "to": from}), 202)
	backID := strconv.FormatFloat(back.body["id"].(float64), 'f', 0, 64)
	hbtest.WaitFor(t, 30*time.Second, "the move back done", func() bool {
		return a.must(a.do("GET", "/v1/admin/migrations/"+backID, adm, "", nil), 200).body["state"] == "done"
	})
	first := a.must(a.do("GET", "/v1/admin/migrations?limit=1", adm, "", nil), 200)
	ms, cursor := first.body["migrations"].([]any), first.body["next"]
	if len(ms) != 1 || ms[0].(map[string]any)["id"] != back.body["id"] || cursor == nil {
		t.Fatalf("first page: %s", first.raw)
	}
	second := a.must(a.do("GET", "/v1/admin/migrations?limit=1&cursor="+cursor.(string), adm, "", nil), 200)
	if ms := second.body["migrations"].([]any); len(ms) != 1 || ms[0].(map[string]any)["id"] != m.body["id"] {
		t.Fatalf("second page: %s", second.raw)
	}
	for _, c := range []string{"-5", "%00%ff", "x", "99999999999999999999"} {
		if r := a.do("GET", "/v1/admin/migrations?cursor="+c, adm, "", nil); r.status != 400 {
			t.Fatalf("cursor %q: %d %s", c, r.status, r.raw)
		}
	}
}
