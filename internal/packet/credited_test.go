package packet_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"hongbao/internal/days"
	"hongbao/internal/ledger"
	"hongbao/internal/packet"
	"hongbao/internal/pgtest"
	"hongbao/internal/postgres"
)

// What the reconciler has seen credited is a watermark per packet: it moves
// up over the claims looked at, in seq order; a claim not applied is kept
// aside (claims_owed), published again and looked at again every pass
// until applied, so that it holds back neither its packet's other claims
// nor anything else; the watermark never moves down; and it is what the
// packet's detail, the received list, Overdue and the set's Check read.
func TestCreditedWatermark(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t, schema)
	c := &clock{t: time.Now()}
	s := newSet(t, db, c)
	ctx := t.Context()
	p1 := send(t, s, packet.Packet{Kind: packet.Lucky, Sender: 7, Group: 4, Amount: 500, Shares: 5}, c)
	p2 := send(t, s, packet.Packet{Kind: packet.Lucky, Sender: 8, Group: 4, Amount: 300, Shares: 3}, c)
	bySeq := map[int]packet.Claim{}
	for u := int64(1); u <= 5; u++ {
		cl, err := s.Grab(ctx, p1.ID, u)
		if err != nil {
			t.Fatal(err)
		}
		bySeq[cl.Seq] = cl
	}
	var p2Keys []string
	for u := int64(1); u <= 2; u++ {
		cl, err := s.Grab(ctx, p2.ID, u)
		if err != nil {
			t.Fatal(err)
		}
		p2Keys = append(p2Keys, packet.ClaimMessage(cl).Key)
	}
	check(t, s)
	have := map[string]bool{}
	for _, k := range p2Keys {
		have[k] = true
	}
	for _, seq := range []int{1, 3, 4} {
		have[packet.ClaimMessage(bySeq[seq]).Key] = true
	}
	var asked int
	applied := func(_ context.Context, msgs []ledger.CreditMessage) (map[string]bool, error) {
		asked += len(msgs)
		m := map[string]bool{}
		for _, msg := range msgs {
			m[msg.Key] = have[msg.Key]
		}
		return m, nil
	}
	var again []string
	republish := func(msgs []ledger.CreditMessage) {
		for _, m := range msgs {
			again = append(again, m.Key)
		}
	}
	owed := func() int64 {
		t.Helper()
		n, _, err := s.Overdue(ctx, c.now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	mark := func(id int64) (n int) {
		t.Helper()
		if err := db.QueryRow(ctx, `SELECT credited_seq FROM packets WHERE id = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := owed(); n != 7 {
		t.Fatalf("owed before any pass: %d, want 7", n)
	}

	// Seqs 2 and 5 of p1 not applied: both are kept and published again,
	// and p1's watermark goes past them to 5 all the same.
	n, missing, _, err := s.Settle(ctx, 0, applied, republish)
	want := []string{packet.ClaimMessage(bySeq[2]).Key, packet.ClaimMessage(bySeq[5]).Key}
	slices.Sort(want)
	slices.Sort(again)
	if err != nil || n != 5 || missing != 2 || !slices.Equal(again, want) {
		t.Fatalf("first pass: credited %d, again %d %v (want 5, 2 %v): %v", n, missing, again, want, err)
	}
	if m1, m2 := mark(p1.ID), mark(p2.ID); m1 != 5 || m2 != 2 {
		t.Fatalf("watermarks after the first pass: %d, %d; want 5, 2", m1, m2)
	}
	if n := owed(); n != 2 {
		t.Fatalf("owed after the first pass: %d, want 2 (p1 seqs 2 and 5)", n)
	}
	d, err := s.Detail(ctx, p1.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range d.Claims {
		if cl.Credited != (cl.Seq != 2 && cl.Seq != 5) {
			t.Fatalf("p1 claim seq %d credited %v after the first pass", cl.Seq, cl.Credited)
		}
	}
	// Not applied still: asked about again, only they.
	asked, again = 0, nil
	if n, missing, _, err := s.Settle(ctx, 0, applied, republish); err != nil || n != 0 || missing != 2 || asked != 2 {
		t.Fatalf("second pass: credited %d, again %d, asked %d (want 0, 2, 2): %v", n, missing, asked, err)
	}

	// Everything applied: the two kept claims are let go.
	for _, cl := range bySeq {
		have[packet.ClaimMessage(cl).Key] = true
	}
	asked, again = 0, nil
	if n, missing, _, err := s.Settle(ctx, 0, applied, republish); err != nil || n != 2 || missing != 0 || asked != 2 {
		t.Fatalf("third pass: credited %d, again %d, asked %d (want 2, 0, 2): %v", n, missing, asked, err)
	}
	if n := owed(); n != 0 {
		t.Fatalf("owed after everything applied: %d", n)
	}
	d, err = s.Detail(ctx, p1.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range d.Claims {
		if !cl.Credited {
			t.Fatalf("p1 claim seq %d not credited", cl.Seq)
		}
	}
	got, err := s.Received(ctx, 2, time.Time{}, 0, 10)
	if err != nil || len(got) != 2 || !got[0].Credited || !got[1].Credited {
		t.Fatalf("received by user 2: %+v %v", got, err)
	}
	// A third claim on p2 is owed again; nothing else is asked about.
	if _, err := s.Grab(ctx, p2.ID, 3); err != nil {
		t.Fatal(err)
	}
	asked = 0
	if n, missing, _, err := s.Settle(ctx, 0, applied, republish); err != nil || n != 0 || missing != 1 || asked != 1 {
		t.Fatalf("fourth pass: credited %d, again %d, asked %d (want 0, 1, 1): %v", n, missing, asked, err)
	}
	check(t, s)

	// The set's check proves a packet's claims are seqs 1..claimed.
	if _, err := db.Exec(ctx, `UPDATE packets SET claimed = claimed - 1, credited_seq = 0 WHERE id = $1`, p2.ID); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Check(ctx); err != nil || len(v) != 1 {
		t.Fatalf("check with a wrong claimed count: %v %v", v, err)
	}
}

// The watermark made from the marks of a database written before it: each
// packet's first unmarked claim stops it, a packet all marked is credited
// through its last claim.
func TestWatermarkFromMarks(t *testing.T) {
	t.Parallel()
	var before [][]postgres.Migration
	for _, set := range packet.Migrations() {
		var keep []postgres.Migration
		for _, m := range set {
			if m.Source != "packet" || m.Version < 6 {
				keep = append(keep, m)
			}
		}
		before = append(before, keep)
	}
	db := pgtest.NewDB(t, pgtest.Schema{Name: "packet-before-watermark", Migrations: before})
	ctx := t.Context()
	now := time.Now()
	if err := days.Ensure(ctx, db, now, now, "packets", "claims"); err != nil {
		t.Fatal(err)
	}
	// Packet id: claims as (seq, marked).
	packets := map[int64][]bool{1: {true, true, false}, 2: {true, true}, 3: {false, true}, 4: nil}
	for id, marks := range packets {
		if _, err := db.Exec(ctx, `INSERT INTO packets (id, kind, sender, group_id, amount, shares, state, remaining_amount, remaining_count, expires_at, created_at)
			VALUES ($1, 'lucky', 9, 4, 1000, 5, 'active', $2, $3, $4, $5)`, id, 1000-100*len(marks), 5-len(marks), now.Add(time.Hour), now); err != nil {
			t.Fatal(err)
		}
		for i, marked := range marks {
			var at *time.Time
			if marked {
				at = &now
			}
			if _, err := db.Exec(ctx, `INSERT INTO claims (id, packet_id, user_id, seq, amount, created_at, credited_at, packet_at)
				VALUES ($1, $2, $3, $4, 100, $5, $6, $5)`, id*100+int64(i), id, 10+i, i+1, now, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := postgres.Migrate(ctx, db, packet.Migrations()...); err != nil {
		t.Fatal(err)
	}
	want := map[int64][2]int{1: {3, 2}, 2: {2, 2}, 3: {2, 0}, 4: {0, 0}}
	for id, w := range want {
		var claimed, credited int
		if err := db.QueryRow(ctx, `SELECT claimed, credited_seq FROM packets WHERE id = $1`, id).Scan(&claimed, &credited); err != nil {
			t.Fatal(err)
		}
		if claimed != w[0] || credited != w[1] {
			t.Fatalf("packet %d: claimed %d, credited through %d; want %v", id, claimed, credited, w)
		}
	}
}

// Settle looks at a page of claims at a time and says when it left some:
// the reconciler goes on while pages are full and move on.
func TestSettlePages(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t, schema)
	c := &clock{t: time.Now()}
	s, err := packet.New(db, packet.Options{Set: 3, Limits: packet.DefaultLimits, Members: everyone{}, Now: c.now, SettlePage: 2})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	ctx := t.Context()
	p := send(t, s, packet.Packet{Kind: packet.Lucky, Sender: 7, Group: 4, Amount: 500, Shares: 5}, c)
	for u := int64(1); u <= 5; u++ {
		if _, err := s.Grab(ctx, p.ID, u); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range []struct {
		n    int
		more bool
	}{{2, true}, {2, true}, {1, false}, {0, false}} {
		n, again, more, err := s.Settle(ctx, 0, appliedAll, func([]ledger.CreditMessage) {})
		if err != nil || n != want.n || again != 0 || more != want.more {
			t.Fatalf("pass %d: credited %d, again %d, more %v; want %d, 0, %v: %v", i+1, n, again, more, want.n, want.more, err)
		}
	}
}

// appliedAll is a ledger that has applied every credit asked about.
func appliedAll(_ context.Context, msgs []ledger.CreditMessage) (map[string]bool, error) {
	m := make(map[string]bool, len(msgs))
	for _, msg := range msgs {
		m[msg.Key] = true
	}
	return m, nil
}
