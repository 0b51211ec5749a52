package packet_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"hongbao/internal/days"
	"hongbao/internal/hbtest"
	"hongbao/internal/ledger"
	"hongbao/internal/packet"
	"hongbao/internal/pgtest"
)

// Packets and claims by day: a packet sent before midnight keeps its
// claims in its own day's partition even when grabbed after, its refund
// when it expires across midnight is made the next day; a day with money
// on its way is kept, and once everything is credited it is archived whole
// (packets, claims, refunds), the escrow unchanged, the packet answering
// ErrArchived, the next day untouched.
func TestDayPartitions(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t, schema)
	d0 := days.Of(time.Now()).AddDate(0, 0, -3)
	c := &clock{t: d0.Add(24*time.Hour - 30*time.Second)} // 23:59:30 of d0
	s := newSet(t, db, c)
	ctx := t.Context()
	late := send(t, s, packet.Packet{Kind: packet.Lucky, Sender: 7, Group: 4, Amount: 1000, Shares: 10, ExpiresAt: c.now().Add(time.Minute)}, c)
	for u := int64(1); u <= 2; u++ {
		if _, err := s.Grab(ctx, late.ID, u); err != nil {
			t.Fatal(err)
		}
	}
	c.add(40 * time.Second) // 00:00:10 of d1
	d1 := d0.AddDate(0, 0, 1)
	after, err := s.Grab(ctx, late.ID, 3)
	if err != nil {
		t.Fatal(err)
	}
	var part string
	if err := db.QueryRow(ctx, `SELECT tableoid::regclass::text FROM claims WHERE id = $1`, after.ID).Scan(&part); err != nil || part != days.Name("claims", d0) {
		t.Fatalf("a claim grabbed after midnight is in %q (%v), want its packet's day %s", part, err, days.Name("claims", d0))
	}
	next := send(t, s, packet.Packet{Kind: packet.Lucky, Sender: 8, Group: 4, Amount: 200, Shares: 2}, c)
	if err := db.QueryRow(ctx, `SELECT tableoid::regclass::text FROM packets WHERE id = $1`, next.ID).Scan(&part); err != nil || part != days.Name("packets", d1) {
		t.Fatalf("a packet sent after midnight is in %q (%v)", part, err)
	}
	for u := int64(1); u <= 2; u++ {
		if _, err := s.Grab(ctx, next.ID, u); err != nil {
			t.Fatal(err)
		}
	}
	c.add(time.Minute) // the late packet expires on d1
	refunds, err := s.Expire(ctx, 100)
	if err != nil || len(refunds) != 1 {
		t.Fatalf("expiry across midnight: %+v %v", refunds, err)
	}
	var refundDay time.Time
	if err := db.QueryRow(ctx, `SELECT created_at FROM refunds WHERE packet_id = $1`, late.ID).Scan(&refundDay); err != nil || !days.Of(refundDay).Equal(d1) {
		t.Fatalf("refund made at %s (%v), want on %s", refundDay, err, d1)
	}
	check(t, s)
	escrow, _, _, err := s.Escrow(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}

	// Not yet credited: the day is kept and says why.
	got, err := s.Archive(ctx, d1)
	if err != nil || len(got) != 1 || got[0].Kept == "" || got[0].Packets != 0 {
		t.Fatalf("archive with credits on their way: %+v %v", got, err)
	}
	if n, _, _, err := s.Settle(ctx, 0, appliedAll, func([]ledger.CreditMessage) {}); err != nil || n != 6 {
		t.Fatalf("settled %d: %v", n, err)
	}
	got, err = s.Archive(ctx, d1)
	if err != nil || len(got) != 1 || got[0].Kept != "" || got[0].Packets != 1 || got[0].Claims != 3 || got[0].Day != d0.Format(time.DateOnly) {
		t.Fatalf("archive: %+v %v", got, err)
	}
	if _, err := s.Get(ctx, late.ID); !errors.Is(err, packet.ErrArchived) {
		t.Fatalf("an archived packet: %v", err)
	}
	if _, err := s.Grab(ctx, late.ID, 9); err == nil {
		t.Fatal("grab of an archived packet answered")
	}
	if d, err := s.Detail(ctx, next.ID, nil); err != nil || len(d.Claims) != 2 {
		t.Fatalf("the next day's packet: %+v %v", d, err)
	}
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM archive.`+days.Name("refunds", d0)).Scan(&n); err != nil || n != 1 {
		t.Fatalf("archived refunds %d: %v", n, err)
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FROM refunds`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("refunds left %d: %v", n, err)
	}
	check(t, s)
	if after, _, _, err := s.Escrow(ctx, 100); err != nil || after != escrow {
		t.Fatalf("escrow %s after archive, %s before: %v", after, escrow, err)
	}
	if got, err := s.Archive(ctx, d1); err != nil || len(got) != 0 {
		t.Fatalf("archive again: %+v %v", got, err)
	}
}

// An archive beside a writer that holds the packets table and then
// updates a packet without its day (so every partition, the old day's too):
// the archive waits for the tables before it takes a day's partition, so
// neither is ended as a deadlock's victim and both succeed (CI: the
// reconciler and the engine's writes made the archive answer 503).
func TestArchiveBesideAWriter(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t, schema)
	d0 := days.Of(time.Now()).AddDate(0, 0, -3)
	c := &clock{t: d0.Add(12 * time.Hour)}
	s := newSet(t, db, c)
	ctx := t.Context()
	old := send(t, s, packet.Packet{Kind: packet.Lucky, Sender: 7, Group: 4, Amount: 300, Shares: 3, ExpiresAt: c.now().Add(time.Minute)}, c)
	for u := int64(1); u <= 3; u++ {
		if _, err := s.Grab(ctx, old.ID, u); err != nil {
			t.Fatal(err)
		}
	}
	c.add(24 * time.Hour)
	next := send(t, s, packet.Packet{Kind: packet.Lucky, Sender: 8, Group: 4, Amount: 200, Shares: 2}, c)
	if n, _, _, err := s.Settle(ctx, 0, appliedAll, func([]ledger.CreditMessage) {}); err != nil || n != 3 {
		t.Fatalf("settled %d: %v", n, err)
	}

	w, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Rollback(context.WithoutCancel(ctx))
	if _, err := w.Exec(ctx, `LOCK TABLE ONLY packets IN ROW EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		got []packet.ArchivedDay
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := s.Archive(ctx, d0.AddDate(0, 0, 1))
		done <- result{got, err}
	}()
	hbtest.WaitFor(t, 30*time.Second, "the archive waiting for a lock", func() bool {
		var n int
		return db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&n) == nil && n > 0
	})
	if _, err := w.Exec(ctx, `UPDATE packets SET closed_at = closed_at WHERE id = $1`, next.ID); err != nil {
		t.Fatalf("the writer beside the archive: %v", err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("the writer's commit: %v", err)
	}
	r := <-done
	if r.err != nil || len(r.got) != 1 || r.got[0].Packets != 1 || r.got[0].Claims != 3 {
		t.Fatalf("archive beside a writer: %+v %v", r.got, r.err)
	}
}
