package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hongbao/internal/bus"
	"hongbao/internal/group"
	"hongbao/internal/hbtest"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/pgtest"
)

func startNode(t *testing.T, open OpenDB, busDir string, port int, grace time.Duration) *Node {
	t.Helper()
	sys, err := StartNode(t.Context(), open, NodeOptions{LedgerShards: 2, PacketSets: 2, BusDir: busDir, BusPort: port,
		Grace: grace, Every: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return sys
}

// party is a group whose members are fresh users with empty wallets.
type party struct {
	sender  int64
	group   int64
	members []int64
}

var nextUser atomic.Int64

func init() { nextUser.Store(5_000_000) }

func newParty(t *testing.T, sys *Node, n int, funds money.Amount) party {
	t.Helper()
	p := party{sender: nextUser.Add(1)}
	p.group = p.sender
	if _, err := sys.Groups.Create(t.Context(), group.CreateRequest{ID: p.group, Owner: p.sender, Capacity: n + 1}); err != nil {
		t.Fatal(err)
	}
	for range n {
		u := nextUser.Add(1)
		if _, err := sys.Groups.Join(t.Context(), group.JoinRequest{GroupID: p.group, User: u}); err != nil {
			t.Fatal(err)
		}
		p.members = append(p.members, u)
	}
	if _, err := sys.Ledgers.For(p.sender).Deposit(t.Context(), fmt.Sprint("fund-", p.sender), p.sender, funds); err != nil {
		t.Fatal(err)
	}
	return p
}

func balance(t *testing.T, sys *Node, u int64) money.Amount {
	t.Helper()
	w, err := sys.Ledgers.For(u).Wallet(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	return w.Balance
}

// waitCredited waits until every claim of the packet is applied by its
// grabber's ledger shard, then checks each grabber got exactly its claim.
func waitCredited(t *testing.T, sys *Node, packetID int64, before map[int64]money.Amount) packet.Detail {
	t.Helper()
	set, _ := sys.Flows.Set(packetID)
	var d packet.Detail
	hbtest.WaitFor(t, 60*time.Second, fmt.Sprintf("every claim of packet %d credited", packetID), func() bool {
		var err error
		if d, err = set.Detail(t.Context(), packetID, sys.Flows.Credited); err != nil {
			t.Fatal(err)
		}
		for _, c := range d.Claims {
			if !c.Credited {
				return false
			}
		}
		return true
	})
	for _, c := range d.Claims {
		if got := balance(t, sys, c.User) - before[c.User]; got != c.Amount {
			t.Fatalf("user %d credited %s for a claim of %s", c.User, got, c.Amount)
		}
	}
	return d
}

func reconcile(t *testing.T, sys *Node) {
	t.Helper()
	ctx := context.Background()
	v, err := sys.Ledgers.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range sys.Sets {
		pv, err := set.Check(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v = append(v, pv...)
	}
	if len(v) > 0 {
		t.Fatalf("reconciliation: %v", v)
	}
}

func sendLucky(t *testing.T, sys *Node, p party, amount money.Amount, shares int, expires time.Time) packet.Packet {
	t.Helper()
	var in time.Duration
	if !expires.IsZero() {
		in = time.Until(expires)
	}
	sent, res, err := sys.Flows.SendPacket(t.Context(), fmt.Sprint("send-", p.sender, "-", time.Now().UnixNano()),
		packet.Packet{Kind: packet.Lucky, Sender: p.sender, Group: p.group, Amount: amount, Shares: shares, Greeting: "新年快乐"}, in)
	if err != nil || sent.State != packet.StateActive {
		t.Fatalf("send = %+v %+v, %v", sent, res, err)
	}
	return sent
}

// Storm: N shares, 10 x N grab attempts by members (several grab more than
// once), through the whole system: exactly N claims, the exact sum, nobody
// twice, every claim credited once, the books sound.
func TestPacketStormCredited(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), 0, time.Second)
	defer sys.Close()
	const shares = 200
	p := newParty(t, sys, 3*shares, 100_000)
	pk := sendLucky(t, sys, p, 88_88, shares, time.Time{})
	if got := balance(t, sys, p.sender); got != 100_000-88_88 {
		t.Fatalf("sender after send: %s", got)
	}
	var claims sync.Map
	var wg sync.WaitGroup
	for g := range 10 * shares {
		wg.Go(func() {
			u := p.members[g%len(p.members)]
			for {
				c, err := sys.Flows.Grab(t.Context(), pk.ID, u)
				if errors.Is(err, packet.ErrBusy) {
					time.Sleep(time.Millisecond)
					continue
				}
				if err != nil && !errors.Is(err, packet.ErrSoldOut) {
					t.Errorf("grab: %v", err)
				}
				if err == nil {
					if prev, loaded := claims.LoadOrStore(u, c.ID); loaded && prev != c.ID {
						t.Errorf("user %d got claims %v and %d", u, prev, c.ID)
					}
				}
				return
			}
		})
	}
	wg.Wait()
	d := waitCredited(t, sys, pk.ID, map[int64]money.Amount{})
	var sum money.Amount
	for _, c := range d.Claims {
		sum += c.Amount
	}
	if len(d.Claims) != shares || sum != pk.Amount || d.Packet.State != packet.StateFinished || d.Best == nil {
		t.Fatalf("%d claims summing to %s, state %s", len(d.Claims), sum, d.Packet.State)
	}
	// Across shards, clearing:packets holds nothing once the packet is paid out.
	var escrow money.Amount
	for _, l := range sys.Ledgers.Shards {
		b, _ := l.SystemBalance(t.Context(), ledger.ClearingPackets)
		escrow += b
	}
	if escrow != 0 {
		t.Fatalf("clearing:packets nets to %s", escrow)
	}
	reconcile(t, sys)
}

// Expiry after a partial grab refunds the remainder to the sender, once.
func TestExpiryRefundOnce(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), 0, 200*time.Millisecond)
	defer sys.Close()
	p := newParty(t, sys, 10, 10_000)
	// Three seconds: time enough for the grabs on a busy machine.
	pk := sendLucky(t, sys, p, 1000, 10, time.Now().Add(3*time.Second))
	var claimed money.Amount
	for _, u := range p.members[:3] {
		c, err := sys.Flows.Grab(t.Context(), pk.ID, u)
		if err != nil {
			t.Fatal(err)
		}
		claimed += c.Amount
	}
	waitCredited(t, sys, pk.ID, map[int64]money.Amount{})
	want := 10_000 - 1000 + (1000 - claimed)
	hbtest.WaitFor(t, 30*time.Second, "the refund to reach the sender", func() bool { return balance(t, sys, p.sender) == want })
	// The refund message again changes nothing.
	set, _ := sys.Flows.Set(pk.ID)
	got, _ := set.Get(t.Context(), pk.ID)
	msg := packet.RefundMessage(packet.Refund{PacketID: pk.ID, Sender: p.sender, Amount: got.Refunded})
	out, err := sys.Ledgers.For(p.sender).ApplyCredits(t.Context(), []ledger.Credit{{Key: msg.Key, From: ledger.ClearingPackets, User: msg.User, Amount: msg.Amount, Kind: msg.Kind}})
	if err != nil || out[0] != ledger.Duplicate {
		t.Fatalf("refund replay = %v, %v", out, err)
	}
	sys.sweep(t.Context())
	if got := balance(t, sys, p.sender); got != want {
		t.Fatalf("after another sweep the sender has %s, want %s", got, want)
	}
	reconcile(t, sys)
}

// Claims committed by a node that died before publishing them are found by
// the reconciler and credited once.
func TestCrashBetweenCommitAndPublish(t *testing.T) {
	t.Parallel()
	open := pgtest.Opener(t)
	sys := startNode(t, open, t.TempDir(), 0, 100*time.Millisecond)
	defer sys.Close()
	p := newParty(t, sys, 30, 10_000)
	pk := sendLucky(t, sys, p, 3000, 20, time.Time{})
	grabAndDie(t, sys, pk.ID, p.members[:20])
	waitCredited(t, sys, pk.ID, map[int64]money.Amount{})
	reconcile(t, sys)
}

// grabAndDie grabs packet id as users through a "dead" node: a second owner
// of the packet's set that commits the claims and publishes nothing. It
// returns the node's own set of the packet.
func grabAndDie(t *testing.T, sys *Node, id int64, users []int64) *packet.Set {
	t.Helper()
	set, _ := sys.Flows.Set(id)
	dead, err := packet.New(set.DB(), packet.Options{Set: set.Number(), Members: group.NewMemberCache(sys.Groups)})
	if err != nil {
		t.Fatal(err)
	}
	dead.Start()
	defer dead.Close()
	for _, u := range users {
		if _, err := dead.Grab(t.Context(), id, u); err != nil {
			t.Fatal(err)
		}
	}
	return set
}

// Claims committed by a process that died with them still in its relay are
// credited as soon as the next owner serves the set, not after the whole
// grace (found from outside: after a kill -9 mid-storm the claims of before
// waited the reconciler's minute).
func TestNewOwnerSettlesAtOnce(t *testing.T) {
	t.Parallel()
	open := pgtest.Opener(t)
	sys := startNode(t, open, t.TempDir(), 0, time.Hour)
	defer sys.Close()
	p := newParty(t, sys, 30, 10_000)
	pk := sendLucky(t, sys, p, 3000, 20, time.Time{})
	set := grabAndDie(t, sys, pk.ID, p.members[:20])
	// This node takes the set (again): a restart, or a takeover.
	set.Serve(false)
	set.Serve(true)
	waitCredited(t, sys, pk.ID, map[int64]money.Amount{}) // within its minute: the grace is an hour
	// Found not applied, they were kept aside and published again; once
	// applied, they are let go: nothing is left waiting.
	if sys.Redriven.Load() == 0 {
		t.Fatal("the claims of the dead relay were not published again")
	}
	hbtest.WaitFor(t, 30*time.Second, "no claim left waiting", func() bool {
		n, _, err := set.Overdue(t.Context(), time.Now().Add(time.Hour))
		return err == nil && n == 0
	})
	waitCredited(t, sys, pk.ID, map[int64]money.Amount{}) // still each claim once
	reconcile(t, sys)
}

// Credits published by a node that stopped before its consumers applied
// them are applied by the next node from the stream, once.
func TestCrashBetweenPublishAndCredit(t *testing.T) {
	t.Parallel()
	open, dir := pgtest.Opener(t), t.TempDir()
	sys := startNode(t, open, dir, 0, time.Hour) // the reconciler stays out of it
	p := newParty(t, sys, 30, 10_000)
	pk := sendLucky(t, sys, p, 3000, 20, time.Time{})
	set, _ := sys.Flows.Set(pk.ID)
	// Claims committed and published, then the node stops before any credit.
	quiet, err := packet.New(set.DB(), packet.Options{Set: set.Number(), Members: group.NewMemberCache(sys.Groups)})
	if err != nil {
		t.Fatal(err)
	}
	quiet.Start()
	var msgs []bus.Msg
	for _, u := range p.members[:20] {
		c, err := quiet.Grab(t.Context(), pk.ID, u)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, bus.Msg(packet.PackCredits(creditSubject(sys.Ledgers.Table.Of(u)), []ledger.CreditMessage{packet.ClaimMessage(c)})))
	}
	quiet.Close()
	sys.Close()
	b, err := bus.Start(t.Context(), bus.Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(t.Context(), append(msgs, msgs[:5]...)); err != nil { // some twice
		t.Fatal(err)
	}
	b.Close()
	for _, u := range p.members[:20] {
		if balance(t, sys, u) != 0 {
			t.Fatal("credited before the consumers ran")
		}
	}
	again := startNode(t, open, dir, 0, time.Hour)
	defer again.Close()
	waitCredited(t, again, pk.ID, map[int64]money.Amount{})
	reconcile(t, again)
}

// A batch that fails inside the ledger's transaction is redelivered and
// applied once the ledger accepts it again; a poison message is parked on
// the dead-letter subject and counted.
func TestCreditBatchFailsThenApplies(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), 0, time.Hour)
	defer sys.Close()
	p := newParty(t, sys, 30, 10_000)
	// Every ledger refuses credits for now: the batch's transaction fails.
	for _, l := range sys.Ledgers.Shards {
		if _, err := l.DB().Exec(t.Context(), `ALTER TABLE postings ADD CONSTRAINT no_credits_now CHECK (kind <> 'credit') NOT VALID`); err != nil {
			t.Fatal(err)
		}
	}
	pk := sendLucky(t, sys, p, 3000, 20, time.Time{})
	for _, u := range p.members[:20] {
		if _, err := sys.Flows.Grab(t.Context(), pk.ID, u); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until batches failed and were handed back more than once.
	hbtest.WaitFor(t, 30*time.Second, "failed batches redelivered", func() bool {
		return sys.Credits[0].Retried.Load()+sys.Credits[1].Retried.Load() >= 40
	})
	for _, u := range p.members[:20] {
		if balance(t, sys, u) != 0 {
			t.Fatal("credited while the ledger refused credits")
		}
	}
	for _, l := range sys.Ledgers.Shards {
		if _, err := l.DB().Exec(t.Context(), `ALTER TABLE postings DROP CONSTRAINT no_credits_now`); err != nil {
			t.Fatal(err)
		}
	}
	waitCredited(t, sys, pk.ID, map[int64]money.Amount{})

	// Poison: a credit whose key was used for another amount.
	c0 := packet.Claim{ID: 1, User: p.members[0], Amount: 5}
	bad := packet.ClaimMessage(c0)
	good := bad
	good.Amount = 4
	shard := sys.Ledgers.Table.Of(good.User)
	if err := sys.Bus.Publish(t.Context(), []bus.Msg{bus.Msg(packet.PackCredits(creditSubject(shard), []ledger.CreditMessage{good})), bus.Msg(packet.PackCredits(creditSubject(shard), []ledger.CreditMessage{bad}))}); err != nil {
		t.Fatal(err)
	}
	// A message that is not a credit batch at all.
	if err := sys.Bus.Publish(t.Context(), []bus.Msg{{Subject: creditSubject(shard), ID: "garbage", Data: []byte("{nope")}}); err != nil {
		t.Fatal(err)
	}
	hbtest.WaitFor(t, 30*time.Second, "the poison message dead-lettered", func() bool {
		return sys.DeadCredits.Load() > 0 && sys.Credits[shard].Dead.Load() > 0
	})
	reconcile(t, sys)
}

// NATS restarts in the middle of a storm: every claim is credited once.
func TestNATSRestartMidStream(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), -1, 2*time.Second)
	defer sys.Close()
	p := newParty(t, sys, 200, 100_000)
	pk := sendLucky(t, sys, p, 50_000, 200, time.Time{})
	var wg sync.WaitGroup
	for i, u := range p.members {
		if i == 100 {
			if err := sys.Bus.RestartServer(); err != nil {
				t.Fatal(err)
			}
		}
		wg.Go(func() {
			for {
				_, err := sys.Flows.Grab(t.Context(), pk.ID, u)
				if errors.Is(err, packet.ErrBusy) {
					time.Sleep(time.Millisecond)
					continue
				}
				if err != nil {
					t.Errorf("grab: %v", err)
				}
				return
			}
		})
	}
	wg.Wait()
	waitCredited(t, sys, pk.ID, map[int64]money.Amount{})
	reconcile(t, sys)
}

func TestSendPacket(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), 0, time.Second)
	defer sys.Close()
	ctx := t.Context()
	p := newParty(t, sys, 5, 1000)
	outsider := nextUser.Add(1)
	lucky := packet.Packet{Kind: packet.Lucky, Sender: p.sender, Group: p.group, Amount: 300, Shares: 3}

	for name, c := range map[string]struct {
		key string
		pk  packet.Packet
		err error
	}{
		"no key":            {"", lucky, packet.ErrInvalid},
		"bad packet":        {"k1", packet.Packet{Kind: packet.Lucky, Sender: p.sender, Group: p.group, Amount: 2, Shares: 3}, packet.ErrInvalid},
		"sender not member": {"k2", packet.Packet{Kind: packet.Lucky, Sender: outsider, Group: p.group, Amount: 300, Shares: 3}, packet.ErrNotGroupMember},
		"more shares than members": {"k3", packet.Packet{Kind: packet.Equal, Sender: p.sender, Group: p.group, Amount: 300, Shares: 7},
			packet.ErrInvalid},
		"no such group": {"k4", packet.Packet{Kind: packet.Lucky, Sender: p.sender, Group: 424242, Amount: 300, Shares: 3}, group.ErrNotFound},
	} {
		if _, _, err := sys.Flows.SendPacket(ctx, c.key, c.pk, 0); !errors.Is(err, c.err) {
			t.Errorf("%s: err = %v, want %v", name, err, c.err)
		}
	}
	// Not enough money: the TCC cancels, the packet is cancelled, nothing held.
	big := lucky
	big.Amount = 5000
	sent, res, err := sys.Flows.SendPacket(ctx, "too-much", big, 0)
	if err != nil || res.State != "cancelled" || sent.State != packet.StateCancelled {
		t.Fatalf("send beyond funds = %+v %+v, %v", sent, res, err)
	}
	// (Its packet row is cancelled, or was never written if the hold failed first.)
	if _, err := sys.Flows.Grab(ctx, sent.ID, p.members[0]); !errors.Is(err, packet.ErrNotActive) && !errors.Is(err, packet.ErrNotFound) {
		t.Fatalf("grab of a cancelled packet: %v", err)
	}
	// Sent once, replayed with the same key: the same packet, charged once.
	first, _, err := sys.Flows.SendPacket(ctx, "once", lucky, 0)
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := sys.Flows.SendPacket(ctx, "once", lucky, 0)
	if err != nil || again.ID != first.ID {
		t.Fatalf("replay = %+v, %v; want packet %d", again, err, first.ID)
	}
	other := lucky
	other.Amount = 301
	if _, _, err := sys.Flows.SendPacket(ctx, "once", other, 0); err == nil {
		t.Fatal("the same key with another packet was accepted")
	}
	if got := balance(t, sys, p.sender); got != 700 {
		t.Fatalf("sender has %s after one send of 3.00, want 7.00", got)
	}
	w, _ := sys.Ledgers.For(p.sender).Wallet(ctx, p.sender)
	if w.Held != 0 {
		t.Fatalf("held %s after the sends", w.Held)
	}
	// A single packet: only its receiver may grab it.
	single, _, err := sys.Flows.SendPacket(ctx, "single", packet.Packet{Kind: packet.Single, Sender: p.sender, Receiver: outsider, Amount: 100, Shares: 1}, 0)
	if err != nil || single.State != packet.StateActive {
		t.Fatalf("single = %+v, %v", single, err)
	}
	if _, err := sys.Flows.Grab(ctx, single.ID, p.members[0]); !errors.Is(err, packet.ErrNotAllowed) {
		t.Fatalf("someone else grabbing a single packet: %v", err)
	}
	if c, err := sys.Flows.Grab(ctx, single.ID, outsider); err != nil || c.Amount != 100 {
		t.Fatalf("receiver grab = %+v, %v", c, err)
	}
	// A stranger cannot grab a group packet.
	if _, err := sys.Flows.Grab(ctx, first.ID, outsider); !errors.Is(err, packet.ErrNotAllowed) {
		t.Fatalf("non-member grab: %v", err)
	}
	waitCredited(t, sys, single.ID, map[int64]money.Amount{})
	reconcile(t, sys)
}

// A node stopped right after a storm hands every committed claim to the
// stream before it goes: the next node credits them all without waiting
// for the reconciler.
func TestShutdownDrainsClaims(t *testing.T) {
	t.Parallel()
	open, dir := pgtest.Opener(t), t.TempDir()
	sys := startNode(t, open, dir, 0, time.Hour)
	p := newParty(t, sys, 100, 10_000)
	pk := sendLucky(t, sys, p, 5000, 100, time.Time{})
	var wg sync.WaitGroup
	for _, u := range p.members {
		wg.Go(func() {
			if _, err := sys.Flows.Grab(t.Context(), pk.ID, u); err != nil && !errors.Is(err, packet.ErrBusy) {
				t.Errorf("grab: %v", err)
			}
		})
	}
	wg.Wait()
	sys.Close()
	again := startNode(t, open, dir, 0, time.Hour) // the reconciler stays out of it
	defer again.Close()
	waitCredited(t, again, pk.ID, map[int64]money.Amount{})
	reconcile(t, again)
}
