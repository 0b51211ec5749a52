package ledger_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"hongbao/internal/days"
	"hongbao/internal/dtx"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/pgtest"
	"hongbao/internal/shard"
)

// The journal by day: postings of days that are over are archived with
// their totals carried, the books still prove, the statement keeps what
// remains and says where it ends, a balance asked of an archived day is
// answered ErrArchived, and money goes on moving after.
func TestArchiveJournal(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := t.Context()
	db := l.DB()
	today := days.Of(time.Now())
	// Partitions are there ahead of need.
	parts, err := days.List(ctx, db, "postings")
	if err != nil {
		t.Fatal(err)
	}
	if last := parts[len(parts)-1].Day; last != today.AddDate(0, 0, days.Ahead).Format(time.DateOnly) {
		t.Fatalf("last partition %s, want today + %d", last, days.Ahead)
	}
	for i, u := range []int64{11, 12} {
		if _, err := l.Deposit(ctx, "arch-dep-"+string(rune('a'+i)), u, 10_000); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Transfer(ctx, ledger.TransferRequest{Key: "arch-t1", From: ledger.User(11), To: ledger.User(12), Amount: 2_500}); err != nil {
		t.Fatal(err)
	}
	// Those postings are made two days old (a row moves to the partition
	// of its new day).
	old := today.AddDate(0, 0, -2)
	if err := days.Ensure(ctx, db, old, old, "postings"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `UPDATE postings SET created_at = $1::timestamptz + (created_at - date_trunc('day', created_at))`, old); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := db.QueryRow(ctx, `SELECT count(*) FROM `+days.Name("postings", old)).Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d postings in the old day's partition: %v", n, err)
	}
	if _, err := l.Transfer(ctx, ledger.TransferRequest{Key: "arch-t2", From: ledger.User(12), To: ledger.User(11), Amount: 1_000}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, l)

	got, err := l.Archive(ctx, today.AddDate(0, 0, 5)) // capped at today
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Day != old.Format(time.DateOnly) || got[0].Postings != 3 || got[1].Postings != 0 {
		t.Fatalf("archived %+v", got)
	}
	mustCheck(t, l)
	wantWallet(t, l, 11, 10_000-2_500+1_000, 0)
	wantWallet(t, l, 12, 10_000+2_500-1_000, 0)
	es, next, err := l.Statement(ctx, 11, 0, 10)
	if err != nil || len(es) != 1 || next != 0 || es[0].Amount != 1_000 || es[0].Balance != 8_500 {
		t.Fatalf("statement after archive: %+v %d %v", es, next, err)
	}
	through, err := l.ArchivedThrough(ctx)
	if err != nil || !through.Equal(today) {
		t.Fatalf("archived through %s %v, want %s", through, err, today)
	}
	if _, err := l.BalanceAt(ctx, 11, old.Add(12*time.Hour)); !errors.Is(err, ledger.ErrArchived) {
		t.Fatalf("balance on an archived day: %v", err)
	}
	// Between the archive's end and the first posting kept: the balance
	// the last archived posting left.
	if b, err := l.BalanceAt(ctx, 11, today.Add(time.Second)); err != nil || (b != 7_500 && time.Since(today) > time.Minute) {
		t.Fatalf("balance at the start of today: %s %v", b, err)
	}
	if b, err := l.BalanceAt(ctx, 12, time.Now()); err != nil || b != money.Amount(11_500) {
		t.Fatalf("balance now: %s %v", b, err)
	}
	// Again: nothing more to archive; the archived day is not made again.
	if got, err := l.Archive(ctx, today); err != nil || len(got) != 0 {
		t.Fatalf("archive again: %+v %v", got, err)
	}
	if err := days.Ensure(ctx, db, old, old, "postings"); err != nil {
		t.Fatal(err)
	}
	var kept int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_inherits WHERE inhparent = 'postings'::regclass
		AND inhrelid::regclass::text = $1`, days.Name("postings", old)).Scan(&kept); err != nil || kept != 0 {
		t.Fatalf("archived day attached again: %d %v", kept, err)
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FROM archive.`+days.Name("postings", old)).Scan(&n); err != nil || n != 3 {
		t.Fatalf("archive table holds %d postings: %v", n, err)
	}
	// Money keeps moving, the books keep proving.
	if _, err := l.Transfer(ctx, ledger.TransferRequest{Key: "arch-t3", From: ledger.User(11), To: ledger.User(12), Amount: 500}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, l)
}

// The database's slot of a user is shard.SlotOf, and a fenced slot
// refuses its wallets' writes (insert and update) with HB503.
func TestSlotFence(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := t.Context()
	for _, u := range []int64{1, 2, 3, 1023, 1024, 5_000_001, 1 << 40, 1<<62 + 12345} {
		var got int
		if err := l.DB().QueryRow(ctx, `SELECT hb_slot($1)`, u).Scan(&got); err != nil || got != shard.SlotOf(u) {
			t.Fatalf("hb_slot(%d) = %d (%v), SlotOf %d", u, got, err, shard.SlotOf(u))
		}
	}
	if _, err := l.Deposit(ctx, "fence-1", 7, 100); err != nil {
		t.Fatal(err)
	}
	if err := l.Fence(ctx, 1, []int{shard.SlotOf(7), shard.SlotOf(8)}, "frozen"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Deposit(ctx, "fence-2", 7, 100); !ledger.IsSlotMoving(err) {
		t.Fatalf("update of a fenced wallet: %v", err)
	}
	if _, err := l.Deposit(ctx, "fence-3", 8, 100); !ledger.IsSlotMoving(err) {
		t.Fatalf("insert of a fenced wallet: %v", err)
	}
	// A credit batch with one fenced wallet among free ones is refused
	// whole (the fence is checked once a statement, over every row of it).
	var free []ledger.Credit
	for u := int64(100); len(free) < 50; u++ {
		if s := shard.SlotOf(u); s != shard.SlotOf(7) && s != shard.SlotOf(8) {
			free = append(free, ledger.Credit{Key: fmt.Sprint("fence-batch-", u), From: ledger.ClearingPackets, User: u, Amount: 1, Kind: ledger.KindCredit})
		}
	}
	batch := append(append([]ledger.Credit{}, free[:25]...), ledger.Credit{Key: "fence-batch-7", From: ledger.ClearingPackets, User: 7, Amount: 1, Kind: ledger.KindCredit})
	batch = append(batch, free[25:]...)
	if _, err := l.ApplyCredits(ctx, batch); !ledger.IsSlotMoving(err) {
		t.Fatalf("a credit batch with a fenced wallet: %v", err)
	}
	if _, err := l.ApplyCredits(ctx, free); err != nil { // without it, it goes through
		t.Fatalf("a credit batch of free wallets beside a fence: %v", err)
	}
	if err := l.Unfence(ctx, 1, []int{shard.SlotOf(7), shard.SlotOf(8)}, ledger.FenceRestore); err != nil {
		t.Fatal(err)
	}
	// The slot is the database's: kept on update, filled in when missing.
	if _, err := l.DB().Exec(ctx, `UPDATE accounts SET slot = slot + 1 WHERE id = 7`); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DB().Exec(ctx, `INSERT INTO accounts (id, kind, name, balance) VALUES (77, 'user', 'user', 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Deposit(ctx, "fence-2", 7, 100); err != nil {
		t.Fatal(err)
	}
	wantWallet(t, l, 7, 200, 0)
	mustCheck(t, l)
	// Every writer stored the slot the database computes.
	if _, err := l.ApplyCredits(ctx, []ledger.Credit{{Key: "fence-c", From: ledger.ClearingPackets, User: 9_000_001, Amount: 5, Kind: ledger.KindCredit}}); err != nil {
		t.Fatal(err)
	}
	var wrong int
	if err := l.DB().QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts WHERE id > 0 AND slot IS DISTINCT FROM hb_slot(id))
		+ (SELECT count(*) FROM request_keys WHERE user_id > 0 AND slot IS DISTINCT FROM hb_slot(user_id))`).Scan(&wrong); err != nil || wrong != 0 {
		t.Fatalf("%d rows with another slot than the database's: %v", wrong, err)
	}
}

// newShardOne is a second ledger shard (number 1) beside newLedger's, for
// moves between them.
func newShardOne(t *testing.T) *ledger.Ledger {
	t.Helper()
	l, err := ledger.New(t.Context(), pgtest.NewDB(t, schema), ledger.Options{Shard: 1, Stripes: 4})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A saga step that ran on the shard a wallet left (a debit) and is
// compensated after the move finds its try on the new shard: the refund
// is paid, not taken for an empty compensation.
func TestMigrationCarriesBarriers(t *testing.T) {
	t.Parallel()
	src, _ := newLedger(t)
	dst := newShardOne(t)
	ctx := t.Context()
	const user = 77
	if _, err := src.Deposit(ctx, "carry-dep", user, 1_000); err != nil {
		t.Fatal(err)
	}
	debit := dtx.Call{GID: "join:carry", Branch: "1", Op: dtx.OpTry, Payload: ledger.Payload(ledger.ActionDebit, user, 300, ledger.ClearingGroups)}
	if err := src.Participant().Do(ctx, debit); err != nil {
		t.Fatal(err)
	}
	slot := []int{shard.SlotOf(user)}
	if err := src.Fence(ctx, 9, slot, "frozen"); err != nil {
		t.Fatal(err)
	}
	if err := dst.Fence(ctx, 9, slot, "incoming"); err != nil {
		t.Fatal(err)
	}
	out, err := src.MigrateOut(ctx, 9, slot)
	if err != nil || len(out) != 1 || out[0].Amount != 700 {
		t.Fatalf("out %+v %v", out, err)
	}
	if _, err := dst.MigrateIn(ctx, 9, src, out, []string{"join:carry"}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { return src.Unfence(ctx, 9, slot, ledger.FenceGone) },
		func() error { return dst.Unfence(ctx, 9, slot, ledger.FenceDrop) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	// The compensation, now on the wallet's new shard.
	refund := debit
	refund.Op = dtx.OpCancel
	if err := dst.Participant().Do(ctx, refund); err != nil {
		t.Fatal(err)
	}
	wantWallet(t, dst, user, 1_000, 0)
	wantWallet(t, src, user, 0, 0)
	mustCheck(t, src)
	mustCheck(t, dst)
}

// A move of slots without a wallet on the source is done once like any
// other: repeating each step (as a resumed migration does) answers what was
// recorded, and undoing it works (found from outside: moving an empty slot
// stuck in verifying for good, its repeat of migrate-out hitting the
// clearing record's key).
func TestMigrateEmptySlots(t *testing.T) {
	t.Parallel()
	src, _ := newLedger(t)
	dst := newShardOne(t)
	ctx := t.Context()
	slot := []int{shard.SlotOf(12345)}
	for range 2 {
		out, err := src.MigrateOut(ctx, 11, slot)
		if err != nil || len(out) != 0 {
			t.Fatalf("migrate out an empty slot: %v, %v", out, err)
		}
		in, err := dst.MigrateIn(ctx, 11, src, out, nil)
		if err != nil || len(in) != 0 {
			t.Fatalf("migrate in an empty slot: %v, %v", in, err)
		}
	}
	for range 2 {
		if err := dst.UndoMove(ctx, 11, "in"); err != nil {
			t.Fatal(err)
		}
		if err := src.UndoMove(ctx, 11, "out"); err != nil {
			t.Fatal(err)
		}
	}
	mustCheck(t, src)
	mustCheck(t, dst)
}
