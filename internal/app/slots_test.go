package app

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hongbao/internal/dtx"
	"hongbao/internal/hbtest"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/pgtest"
	"hongbao/internal/shard"
	"hongbao/internal/slots"
)

// usersIn returns n fresh user ids whose slot is slot.
func usersIn(slot, n int) []int64 {
	var out []int64
	for len(out) < n {
		u := nextUser.Add(1)
		if shard.SlotOf(u) == slot {
			out = append(out, u)
		}
	}
	return out
}

// userOn returns a fresh user whose wallet is on shard sh and not in slot.
func userOn(t *testing.T, sys *Node, sh, slot int) int64 {
	for {
		u := nextUser.Add(1)
		if sys.Ledgers.Table.Of(u) == sh && shard.SlotOf(u) != slot {
			return u
		}
	}
}

type books struct {
	balances   map[int64]money.Amount
	statements map[int64][]ledger.Entry
}

func snapshot(t *testing.T, sys *Node, users []int64) books {
	t.Helper()
	b := books{balances: map[int64]money.Amount{}, statements: map[int64][]ledger.Entry{}}
	for _, u := range users {
		b.balances[u] = balance(t, sys, u)
		es, _, err := sys.Flows.Statement(context.Background(), u, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		b.statements[u] = es
	}
	return b
}

// migrationSum is the migration account over every shard: zero once every
// move is done or undone.
func migrationSum(t *testing.T, sys *Node) money.Amount {
	t.Helper()
	var sum money.Amount
	for _, l := range sys.Ledgers.Shards {
		b, err := l.SystemBalance(context.Background(), ledger.Migration)
		if err != nil {
			t.Fatal(err)
		}
		sum += b
	}
	return sum
}

func mustMove(t *testing.T, sys *Node, slotNos []int, to int) slots.Migration {
	t.Helper()
	m, err := sys.Slots.Start(t.Context(), slotNos, to)
	if err != nil {
		t.Fatal(err)
	}
	return finish(t, sys, m.ID, slots.Done)
}

// finish drives a migration to its end, or waits for the node's resumer
// that drives it already, and wants it to end in state want.
func finish(t *testing.T, sys *Node, id int64, want string) slots.Migration {
	t.Helper()
	m, err := sys.Slots.Run(t.Context(), id)
	if errors.Is(err, slots.ErrDriven) {
		hbtest.WaitFor(t, 30*time.Second, "the migration driven to its end", func() bool {
			m, err = sys.Slots.Get(t.Context(), id)
			return err == nil && (m.State == slots.Done || m.State == slots.Cancelled)
		})
	} else if err != nil {
		t.Fatalf("migration %d: %v", id, err)
	}
	if m.State != want {
		t.Fatalf("migration %+v ended %s, want %s", m, m.State, want)
	}
	// The node's routing table hears of the end a moment later (until then
	// it answers retry for the slots' wallets, as a client would be told).
	hbtest.WaitFor(t, 30*time.Second, "the routing table done with the move", func() bool {
		for _, slot := range m.Slots {
			if sys.Ledgers.Table.Moving(userInSlot(slot)) {
				return false
			}
		}
		return true
	})
	return m
}

// userInSlot is a user id whose wallet is in slot.
func userInSlot(slot int) int64 {
	u := int64(1)
	for shard.SlotOf(u) != slot {
		u++
	}
	return u
}

// A slot moves from shard 0 to shard 1 and back: routing follows the
// table, every moved wallet keeps its balance and its statement entry for
// entry, the books of both shards stay sound and the migration account
// nets to zero; money goes on moving after each move.
func TestSlotMigration(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), 0, time.Second)
	defer sys.Close()
	ctx := t.Context()
	const slot = 42 // on shard 0 (42 mod 2)
	if sys.Ledgers.Table.Of(usersIn(slot, 1)[0]) != 0 {
		t.Fatal("slot 42 is not on shard 0")
	}
	movers := usersIn(slot, 5)
	other := userOn(t, sys, 1, slot)
	for _, u := range append(movers, other) {
		if _, err := sys.Flows.Deposit(ctx, fmt.Sprint("mig-dep-", u), 0, u, 1_000); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := sys.Flows.Transfer(ctx, "mig-t1", movers[0], other, 300); err != nil || r.Outcome != dtx.OutcomeCommitted {
		t.Fatalf("transfer: %+v %v", r, err)
	}
	if r, err := sys.Flows.Transfer(ctx, "mig-t2", movers[1], movers[2], 200); err != nil || r.Outcome != dtx.OutcomeCommitted {
		t.Fatalf("local transfer: %+v %v", r, err)
	}
	p, _, err := sys.Flows.SendPacket(ctx, "mig-p", packet.Packet{Kind: packet.Single, Sender: other, Receiver: movers[3], Amount: 150, Shares: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sys.Flows.Grab(ctx, p.ID, movers[3]); err != nil {
		t.Fatal(err)
	}
	waitCredited(t, sys, p.ID, map[int64]money.Amount{movers[3]: 1_000})
	// A withdrawal paid out before the move: its order and its share of
	// clearing:channel go with the wallet.
	w := sys.Ledgers.For(movers[4])
	if _, err := w.Transfer(ctx, ledger.TransferRequest{Key: "mig-wd", From: ledger.User(movers[4]), To: ledger.ClearingChannel, Amount: 100, Kind: ledger.KindWithdrawal}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.DB().Exec(ctx, `INSERT INTO channel_orders (id, kind, user_id, amount, state, day, deadline, next_check)
		VALUES (424242, 'withdrawal', $1, 100, 'succeeded', current_date, now(), NULL)`, movers[4]); err != nil {
		t.Fatal(err)
	}
	channelSound := func() {
		t.Helper()
		if v, err := sys.Payments.Check(ctx); err != nil || len(v) > 0 {
			t.Fatalf("channel money: %v %v", v, err)
		}
	}
	channelSound()
	all := append(movers, other)
	before := snapshot(t, sys, all)

	m := mustMove(t, sys, []int{slot}, 1)
	channelSound()
	if m.Wallets != len(movers) || m.Amount != 1_000*5-300+150-100 {
		t.Fatalf("moved %d wallets, %d fen", m.Wallets, m.Amount)
	}
	for _, u := range movers {
		if sys.Ledgers.Table.Of(u) != 1 {
			t.Fatalf("user %d still routed to shard %d", u, sys.Ledgers.Table.Of(u))
		}
	}
	after := snapshot(t, sys, all)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("books changed by the move:\n%+v\n%+v", before, after)
	}
	reconcile(t, sys)
	if s := migrationSum(t, sys); s != 0 {
		t.Fatalf("migration account sums to %s", s)
	}
	// Money moves on the new shard, and the statement runs on across.
	if r, err := sys.Flows.Transfer(ctx, "mig-t3", movers[0], movers[4], 100); err != nil || r.Outcome != dtx.OutcomeCommitted {
		t.Fatalf("transfer after the move: %+v %v", r, err)
	}
	es, _, err := sys.Flows.Statement(ctx, movers[0], 0, 100)
	if err != nil || len(es) != len(before.statements[movers[0]])+1 || es[0].Amount != -100 || !reflect.DeepEqual(es[1:], before.statements[movers[0]]) {
		t.Fatalf("statement after the move: %+v %v", es, err)
	}
	// Paged one entry at a time across both shards: the same entries.
	var paged []ledger.Entry
	for cursor := int64(0); ; {
		page, next, err := sys.Flows.Statement(ctx, movers[0], cursor, 1)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, page...)
		if next == 0 {
			break
		}
		cursor = next
	}
	if !reflect.DeepEqual(paged, es) {
		t.Fatalf("paged statement %+v, want %+v", paged, es)
	}
	// And back.
	mid := snapshot(t, sys, all)
	mustMove(t, sys, []int{slot}, 0)
	channelSound()
	if got := snapshot(t, sys, all); !reflect.DeepEqual(mid, got) {
		t.Fatalf("books changed by the move back:\n%+v\n%+v", mid, got)
	}
	reconcile(t, sys)
	if s := migrationSum(t, sys); s != 0 {
		t.Fatalf("migration account sums to %s", s)
	}
	if _, err := sys.Slots.Start(ctx, []int{slot}, 0); !errors.Is(err, slots.ErrInvalid) {
		t.Fatalf("a move to the shard it is on: %v", err)
	}
	for _, bad := range [][]int{{}, {-1}, {1024}, {3, 3}} {
		if _, err := sys.Slots.Start(ctx, bad, 1); !errors.Is(err, slots.ErrInvalid) {
			t.Fatalf("slots %v: %v", bad, err)
		}
	}
	if _, err := sys.Slots.Start(ctx, []int{2, 3}, 1); !errors.Is(err, slots.ErrInvalid) {
		t.Fatalf("slots of two shards: %v", err)
	}
}

// A crash after each step of a migration, then a resume: it ends done,
// every wallet exact; a crash before the switch and a cancel: everything
// undone, the slot where it was.
func TestSlotMigrationCrashes(t *testing.T) {
	t.Parallel()
	var crashAt atomic.Value
	crashAt.Store("")
	sys, err := StartNode(t.Context(), pgtest.Opener(t), NodeOptions{LedgerShards: 2, PacketSets: 1, BusDir: t.TempDir(),
		Grace: time.Second, Every: 20 * time.Millisecond, SlotResume: -1, SlotHook: func(step string) error {
			if step == crashAt.Load().(string) {
				crashAt.Store("")
				return slots.ErrCrash
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	ctx := t.Context()
	const slot = 100
	movers := usersIn(slot, 4)
	for _, u := range movers {
		if _, err := sys.Flows.Deposit(ctx, fmt.Sprint("crash-dep-", u), 0, u, 500); err != nil {
			t.Fatal(err)
		}
	}
	want := snapshot(t, sys, movers)
	to := 1
	for _, step := range []string{"after:fencing", "between:copying", "after:copying", "after:verifying", "after:switching", "after:releasing", "after:cleaning"} {
		crashAt.Store(step)
		m, err := sys.Slots.Start(ctx, []int{slot}, to)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sys.Slots.Run(ctx, m.ID); !errors.Is(err, slots.ErrCrash) {
			t.Fatalf("%s: no crash: %v", step, err)
		}
		// Another driver (a restarted node) resumes it from its record.
		finish(t, sys, m.ID, slots.Done)
		if got := snapshot(t, sys, movers); !reflect.DeepEqual(want, got) {
			t.Fatalf("%s: books changed:\n%+v\n%+v", step, want, got)
		}
		reconcile(t, sys)
		if s := migrationSum(t, sys); s != 0 {
			t.Fatalf("%s: migration account sums to %s", step, s)
		}
		to = 1 - to
	}
	// Cancelled after the copy (crashed there first): all undone.
	from := sys.Ledgers.Table.Of(movers[0])
	for _, step := range []string{"after:fencing", "after:copying", "after:verifying"} {
		crashAt.Store(step)
		m, err := sys.Slots.Start(ctx, []int{slot}, 1-from)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sys.Slots.Run(ctx, m.ID); !errors.Is(err, slots.ErrCrash) {
			t.Fatalf("%s: no crash: %v", step, err)
		}
		if m, err = sys.Slots.Cancel(ctx, m.ID); err != nil || m.State != slots.Cancelling {
			t.Fatalf("cancel: %+v %v", m, err)
		}
		finish(t, sys, m.ID, slots.Cancelled)
		if sys.Ledgers.Table.Of(movers[0]) != from {
			t.Fatalf("%s: cancelled, yet routed to shard %d", step, sys.Ledgers.Table.Of(movers[0]))
		}
		if got := snapshot(t, sys, movers); !reflect.DeepEqual(want, got) {
			t.Fatalf("%s: books changed by the cancelled move:\n%+v\n%+v", step, want, got)
		}
		reconcile(t, sys)
		if s := migrationSum(t, sys); s != 0 {
			t.Fatalf("%s: migration account sums to %s", step, s)
		}
		// The wallets work again where they are.
		if _, err := sys.Flows.Transfer(ctx, "crash-t-"+step, movers[0], movers[1], 1); err != nil {
			t.Fatal(err)
		}
		want = snapshot(t, sys, movers)
	}
	// Too late to cancel after the switch.
	crashAt.Store("after:switching")
	m, _ := sys.Slots.Start(ctx, []int{slot}, 1-from)
	_, _ = sys.Slots.Run(ctx, m.ID)
	if _, err := sys.Slots.Cancel(ctx, m.ID); !errors.Is(err, slots.ErrTooLate) {
		t.Fatalf("cancel after the switch: %v", err)
	}
	finish(t, sys, m.ID, slots.Done)
}

type sentTransfer struct {
	from, to int64
	amount   money.Amount
	gid      string
}

// Slots move back and forth three times while transfers (local and
// across shards), grabs crediting the moving wallets and paid entries run:
// no request is answered wrongly (retryable refusals are counted), every
// committed transfer replayed with its key after the moves answers the
// same and moves nothing, and then every claim is credited once, the books
// of both shards are sound, the migration account nets to zero and the
// money in the system is what was deposited.
func TestSlotMigrationUnderLoad(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), 0, time.Second)
	defer sys.Close()
	ctx := t.Context()
	moving := []int{42, 44} // on shard 0
	var movers []int64
	for _, s := range moving {
		movers = append(movers, usersIn(s, 8)...)
	}
	var others []int64
	for i := range 8 {
		others = append(others, userOn(t, sys, i%2, 42))
	}
	users := append(append([]int64{}, movers...), others...)
	const funds = 100_000
	for _, u := range users {
		if _, err := sys.Flows.Deposit(ctx, fmt.Sprint("load-dep-", u), 0, u, funds); err != nil {
			t.Fatal(err)
		}
	}
	g, err := sys.Flows.CreateGroup(ctx, "load-g", others[0], 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users[:len(users)-1] {
		if u == others[0] {
			continue
		}
		if _, err := sys.Flows.JoinGroup(ctx, fmt.Sprint("load-join-", u), u, g.ID); err != nil {
			t.Fatal(err)
		}
	}
	var stop atomic.Bool
	var committed sync.Map // key -> sentTransfer
	var ok, retry, cancelled, grabs, joins atomic.Int64
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				from, to := users[(w*7+i)%len(users)], users[(w*3+i*5+1)%len(users)]
				if from == to {
					continue
				}
				key := fmt.Sprintf("load-t-%d-%d", w, i)
				r, err := sys.Flows.Transfer(ctx, key, from, to, money.Amount(1+i%50))
				switch {
				case ledger.IsSlotMoving(err):
					retry.Add(1)
				case err != nil:
					t.Errorf("transfer %s: %v", key, err)
					return
				case r.Outcome == dtx.OutcomeCommitted:
					ok.Add(1)
					committed.Store(key, sentTransfer{from, to, money.Amount(1 + i%50), r.GID})
				case r.Outcome == dtx.OutcomeCancelled:
					cancelled.Add(1)
				}
			}
		})
	}
	wg.Go(func() { // packets from the others, grabbed by the movers
		for i := 0; !stop.Load(); i++ {
			p, _, err := sys.Flows.SendPacket(ctx, fmt.Sprint("load-p-", i), packet.Packet{Kind: packet.Lucky, Sender: others[1+i%3], Group: g.ID, Amount: 500, Shares: 5}, 0)
			if ledger.IsSlotMoving(err) {
				retry.Add(1)
				continue
			}
			if err != nil {
				t.Errorf("send: %v", err)
				return
			}
			for _, u := range movers[i%8 : i%8+5] {
				if _, err := sys.Flows.Grab(ctx, p.ID, u); err != nil {
					t.Errorf("grab: %v", err)
					return
				}
				grabs.Add(1)
			}
		}
	})
	wg.Go(func() { // paid entries by the movers
		for i := 0; !stop.Load(); i++ {
			pg, err := sys.Flows.CreateGroup(ctx, fmt.Sprint("load-pg-", i), others[4], 10, 100)
			if err != nil {
				t.Errorf("paid group: %v", err)
				return
			}
			r, err := sys.Flows.JoinGroup(ctx, fmt.Sprint("load-pj-", i), movers[i%len(movers)], pg.ID)
			switch {
			case ledger.IsSlotMoving(err):
				retry.Add(1)
			case err != nil:
				t.Errorf("paid join: %v", err)
				return
			case r.Outcome == dtx.OutcomeCommitted:
				joins.Add(1)
			}
		}
	})
	time.Sleep(300 * time.Millisecond)
	for _, to := range []int{1, 0, 1} {
		m := mustMove(t, sys, moving, to)
		t.Logf("moved slots %v to shard %d: %d wallets, %d fen, in %s", moving, to, m.Wallets, m.Amount, m.UpdatedAt.Sub(m.CreatedAt).Round(time.Millisecond))
		time.Sleep(200 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("transfers committed %d, cancelled %d, told to retry %d; grabs %d; paid entries %d", ok.Load(), cancelled.Load(), retry.Load(), grabs.Load(), joins.Load())
	if ok.Load() == 0 || grabs.Load() == 0 || joins.Load() == 0 {
		t.Fatal("the load did not run")
	}
	// Every claim credited (seen by the reconciler on its wallet's shard now).
	defer func() {
		if !t.Failed() {
			return
		}
		for i, c := range sys.Credits {
			t.Logf("consumer %d: applied %d, retried %d, dead %d; relay dropped %d, queued %d", i, c.Applied.Load(), c.Retried.Load(), c.Dead.Load(), sys.Relay.Dropped.Load(), sys.Relay.Queued())
		}
		for _, set := range sys.Sets {
			rows, _ := set.DB().Query(ctx, `SELECT c.id, c.user_id, c.amount FROM packets p
				JOIN claims c ON c.packet_id = p.id AND c.packet_at = p.created_at AND c.seq > p.credited_seq LIMIT 3`)
			for rows.Next() {
				var id, u, a int64
				_ = rows.Scan(&id, &u, &a)
				for _, l := range sys.Ledgers.Shards {
					var n int
					_ = l.DB().QueryRow(ctx, `SELECT count(*) FROM ops WHERE key = $1`, fmt.Sprint("claim:", id)).Scan(&n)
					t.Logf("claim %d of user %d (slot %d, shard %d): ops on shard %d: %d", id, u, shard.SlotOf(u), sys.Ledgers.Table.Of(u), l.Shard(), n)
				}
			}
			rows.Close()
		}
	}()
	hbtest.WaitFor(t, 60*time.Second, "every claim credited", func() bool {
		for _, set := range sys.Sets {
			if n, _, err := set.Overdue(ctx, time.Now().Add(time.Hour)); err != nil || n > 0 {
				return false
			}
		}
		return true
	})
	total := func() money.Amount {
		var sum money.Amount
		for _, u := range users {
			sum += balance(t, sys, u)
		}
		return sum
	}
	before := total()
	// Replays of the committed transfers, after all the moves: the same
	// answer from the request's record (it moved with the payer's wallet),
	// nothing moved again.
	replays := 0
	committed.Range(func(k, v any) bool {
		tr := v.(sentTransfer)
		r, err := sys.Flows.Transfer(ctx, k.(string), tr.from, tr.to, tr.amount)
		if err != nil || r.Outcome != dtx.OutcomeCommitted || r.GID != tr.gid {
			t.Errorf("replay of %s: %+v %v, first %s", k, r, err, tr.gid)
			return false
		}
		replays++
		return true
	})
	t.Logf("%d committed transfers replayed", replays)
	if after := total(); after != before {
		t.Fatalf("replays moved money: %s before, %s after", before, after)
	}
	reconcile(t, sys)
	if s := migrationSum(t, sys); s != 0 {
		t.Fatalf("migration account sums to %s", s)
	}
	var external money.Amount
	for _, l := range sys.Ledgers.Shards {
		b, err := l.SystemBalance(ctx, ledger.External)
		if err != nil {
			t.Fatal(err)
		}
		external += b
	}
	if -external != money.Amount(funds*len(users)) {
		t.Fatalf("money in the system %s, deposited %d", -external, funds*len(users))
	}
}
