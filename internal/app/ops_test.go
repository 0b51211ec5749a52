package app

import (
	"cmp"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"hongbao/internal/bus"
	"hongbao/internal/dtx"
	"hongbao/internal/hbtest"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/pgtest"
)

// A credit parked on a dead-letter subject is listed with what it
// carries; re-driven twice, it is applied once, and the list and the
// overview show it re-driven. A message that is no credit at all is
// parked by the consumer and listed as text.
func TestDeadLetterRedriveAppliesOnce(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), -1, time.Second)
	defer sys.Close()
	ops := operations{sys}
	ctx := t.Context()
	u := nextUser.Add(1)
	shard := sys.Ledgers.Table.Of(u)
	const amount money.Amount = 1234
	data, _ := json.Marshal(ledger.CreditBatch{Credits: []ledger.CreditMessage{{Key: "redrive-test:1", User: u, Amount: amount, Kind: ledger.KindCredit, From: "external"}}})
	if err := sys.Bus.Publish(ctx, []bus.Msg{{Subject: deadCreditSubject(shard), ID: "parked-1", Data: data}}); err != nil {
		t.Fatal(err)
	}
	ds, err := ops.DeadLetters(ctx, 0, 10)
	if err != nil || len(ds) != 1 {
		t.Fatalf("dead letters = %+v, %v", ds, err)
	}
	d := ds[0]
	if d.Origin != creditSubject(shard) || len(d.Credits) != 1 || d.Credits[0].User != u || d.Credits[0].Amount != amount || d.Redriven != 0 {
		t.Fatalf("dead letter = %+v", d)
	}
	v, err := ops.Overview(ctx)
	if err != nil || v.DeadLetters.Total != 1 || v.DeadLetters.NotRedriven != 1 {
		t.Fatalf("overview dead letters = %+v, %v", v.DeadLetters, err)
	}
	applied := sys.Credits[shard].Applied.Load()
	for i := range 2 {
		r, err := ops.Redrive(ctx, d.Seq)
		if err != nil || r.Redriven != i+1 || r.RedrivenAt == nil {
			t.Fatalf("redrive %d = %+v, %v", i+1, r, err)
		}
	}
	hbtest.WaitFor(t, 30*time.Second, "both re-driven messages consumed", func() bool {
		return sys.Credits[shard].Applied.Load() >= applied+2
	})
	if b := balance(t, sys, u); b != amount {
		t.Fatalf("balance after two re-drives = %s, want %s once", b, amount)
	}
	got, err := ops.DeadLetter(ctx, d.Seq)
	if err != nil || got.Redriven != 2 {
		t.Fatalf("after re-drives = %+v, %v", got, err)
	}
	if v, _ := ops.Overview(ctx); v.DeadLetters.Total != 1 || v.DeadLetters.NotRedriven != 0 {
		t.Fatalf("overview after re-drive = %+v", v.DeadLetters)
	}
	if _, err := ops.DeadLetter(ctx, d.Seq+100000); err == nil {
		t.Fatal("an unknown sequence was found")
	}

	// Not a credit batch: the consumer parks it.
	if err := sys.Bus.Publish(ctx, []bus.Msg{{Subject: creditSubject(shard), ID: "garbage-1", Data: []byte("not json <script>")}}); err != nil {
		t.Fatal(err)
	}
	hbtest.WaitFor(t, 30*time.Second, "the garbage parked", func() bool {
		ds, _ = ops.DeadLetters(ctx, d.Seq, 10)
		return len(ds) == 1
	})
	if ds[0].Payload != "not json <script>" || ds[0].Credits != nil || ds[0].Origin != creditSubject(shard) {
		t.Fatalf("parked garbage = %+v", ds[0])
	}
	if v, _ := ops.Overview(ctx); v.DeadLetters.Total != 2 || v.DeadLetters.NotRedriven != 1 {
		t.Fatalf("overview = %+v", v.DeadLetters)
	}
}

// With NATS down the overview still answers: the dead letters are -1 and
// named as a problem, every other figure is read.
func TestOverviewWithNATSDown(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), -1, time.Second)
	defer sys.Close()
	ops := operations{sys}
	if v, err := ops.Overview(t.Context()); err != nil || len(v.Problems) != 0 || v.DeadLetters.Total != 0 {
		t.Fatalf("overview = %+v, %v", v, err)
	}
	if err := sys.Bus.StopServer(); err != nil {
		t.Fatal(err)
	}
	v, err := ops.Overview(t.Context())
	if err := sys.Bus.StartServer(); err != nil {
		t.Fatal(err)
	}
	if err != nil || v.DeadLetters.Total != -1 || v.DeadLetters.NotRedriven != -1 || len(v.Problems) != 1 || v.Problems[0] != "dead letters could not be read" ||
		v.Transactions.Pending != 0 || v.Claims.Waiting != 0 {
		t.Fatalf("overview with NATS down = %+v, %v", v, err)
	}
}

// The overview counts a transfer and a send once: a replay of the same
// key answers the stored result and is not counted again (nor paid again).
func TestOverviewCountsReplaysOnce(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), -1, time.Second)
	defer sys.Close()
	ctx := t.Context()
	p := newParty(t, sys, 1, 1_000)
	// One recipient on the sender's shard (a local move), one on the other
	// (a global transaction): both paths count once.
	local, remote := localAndRemote(sys, p.sender)
	transfers, sends := sys.Flows.Transfers.Load(), sys.Flows.Sends.Load()
	for range 3 {
		for i, to := range []int64{local, remote} {
			if r, err := sys.Flows.Transfer(ctx, fmt.Sprint("overview-t", i), p.sender, to, 150); err != nil || r.Outcome != dtx.OutcomeCommitted {
				t.Fatalf("transfer to %d = %+v, %v", to, r, err)
			}
		}
		if _, _, err := sys.Flows.SendPacket(ctx, "overview-s", packet.Packet{Kind: packet.Lucky, Sender: p.sender, Group: p.group, Amount: 200, Shares: 1}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := sys.Flows.Transfers.Load() - transfers; got != 2 {
		t.Fatalf("transfers counted %d, want 2", got)
	}
	if got := sys.Flows.Sends.Load() - sends; got != 1 {
		t.Fatalf("sends counted %d, want 1", got)
	}
	if b := balance(t, sys, p.sender); b != 500 {
		t.Fatalf("sender balance = %s, want 5.00 (two transfers, one packet)", b)
	}
}

// An answer lost in a crash (it is committed without waiting for the
// disk) leaves the key's record without one: a replay runs the transfer
// again, which answers the same, applies nothing twice, and stores it.
func TestLostAnswerReplaysOnce(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), -1, time.Second)
	defer sys.Close()
	ctx := t.Context()
	p := newParty(t, sys, 1, 1_000)
	local, remote := localAndRemote(sys, p.sender)
	db := sys.Ledgers.For(p.sender).DB()
	for i, to := range []int64{local, remote} {
		key := fmt.Sprint("lost-answer-", i)
		first, err := sys.Flows.Transfer(ctx, key, p.sender, to, 100)
		if err != nil || first.Outcome != dtx.OutcomeCommitted {
			t.Fatalf("transfer to %d = %+v, %v", to, first, err)
		}
		if tag, err := db.Exec(ctx, `UPDATE request_keys SET status = NULL, response = NULL WHERE user_id = $1 AND key = $2`, p.sender, key); err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("lose the answer: %v, %v", tag, err)
		}
		again, err := sys.Flows.Transfer(ctx, key, p.sender, to, 100)
		if err != nil || again != first {
			t.Fatalf("replay = %+v, %v; first %+v", again, err, first)
		}
		var status *int
		if err := db.QueryRow(ctx, `SELECT status FROM request_keys WHERE user_id = $1 AND key = $2`, p.sender, key).Scan(&status); err != nil || status == nil || *status != 200 {
			t.Fatalf("answer stored again: %v, %v", status, err)
		}
		if b := balance(t, sys, to); b != 100 {
			t.Fatalf("receiver %d has %s, want 1.00", to, b)
		}
	}
	if b := balance(t, sys, p.sender); b != 800 {
		t.Fatalf("sender balance = %s, want 8.00", b)
	}
}

// localAndRemote are two fresh users: one whose wallet is on user's shard,
// one on another shard.
func localAndRemote(sys *Node, user int64) (local, remote int64) {
	for local == 0 || remote == 0 {
		u := nextUser.Add(1)
		if sys.Ledgers.Table.Of(u) == sys.Ledgers.Table.Of(user) {
			local = cmp.Or(local, u)
		} else {
			remote = cmp.Or(remote, u)
		}
	}
	return local, remote
}
