package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"hongbao/internal/dtx"
	"hongbao/internal/group"
	"hongbao/internal/ids"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
)

// Flows are the operations that span shards, run as global transactions.
type Flows struct {
	Coord   *dtx.Coordinator
	Ledgers *Ledgers
	Groups  *group.Store
	Sets    []*packet.Set
	Limits  packet.Limits
	next    atomic.Uint64 // round-robin over sets for new packets
}

// GroupParticipant is the registry name of the group shard.
const GroupParticipant = "group:0"

// LedgerParticipant is the registry name of ledger shard n.
func LedgerParticipant(n int) string { return fmt.Sprintf("ledger:%d", n) }

// Participants lists every in-process participant by registry name.
func Participants(ls *Ledgers, groups *group.Store) map[string]dtx.Participant {
	ps := map[string]dtx.Participant{GroupParticipant: groups.Participant()}
	for _, l := range ls.Shards {
		ps[LedgerParticipant(l.Shard())] = l.Participant()
	}
	return ps
}

// TransferSpec is a transfer between users on different ledger shards as
// TCC: hold on the sender's shard (confirm posts it to clearing:transfers),
// and on the receiver's shard a branch whose confirm pays the receiver out
// of clearing:transfers. The two clearing balances net to zero.
func TransferSpec(ls *Ledgers, gid string, from, to int64, amount money.Amount) dtx.Spec {
	return dtx.Spec{GID: gid, Kind: dtx.TCC, Branches: []dtx.Branch{
		{Participant: LedgerParticipant(ls.Table.Of(from)), Payload: ledger.Payload(ledger.ActionHold, from, amount, ledger.ClearingTransfers)},
		{Participant: LedgerParticipant(ls.Table.Of(to)), Payload: ledger.Payload(ledger.ActionReceive, to, amount, ledger.ClearingTransfers)},
	}}
}

// PaidEntrySpec is paid group entry as a saga: debit the fee (user ->
// clearing:groups on the user's shard), join the group, then settle the fee
// to the owner (clearing:groups -> owner on the owner's shard), which is
// driven forward until done. A full group or a banned user fails the join,
// and the fee is refunded.
func PaidEntrySpec(ls *Ledgers, gid string, user int64, g group.Group) dtx.Spec {
	return dtx.Spec{GID: gid, Kind: dtx.Saga, Branches: []dtx.Branch{
		{Participant: LedgerParticipant(ls.Table.Of(user)), Payload: ledger.Payload(ledger.ActionDebit, user, g.Fee, ledger.ClearingGroups)},
		{Participant: GroupParticipant, Payload: group.Payload(g.ID, user)},
		{Participant: LedgerParticipant(ls.Table.Of(g.Owner)), Payload: ledger.Payload(ledger.ActionCredit, g.Owner, g.Fee, ledger.ClearingGroups), Retryable: true},
	}}
}

// detached lets a global transaction finish even if its caller goes away
// (a client that disconnects mid-request): the decision then does not
// depend on when the connection dropped, and a retry with the same key
// finds the outcome. It is still bounded.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}

// ErrFlowInvalid wraps bad input to a flow.
var ErrFlowInvalid = errors.New("invalid request")

// Transfer moves money between two users: one local transaction when they
// share a shard, a TCC global transaction when they do not. key makes it
// idempotent per sender.
func (f *Flows) Transfer(ctx context.Context, key string, from, to int64, amount money.Amount) (dtx.Result, error) {
	if from <= 0 || to <= 0 || from == to || amount <= 0 || key == "" {
		return dtx.Result{}, fmt.Errorf("%w: transfer %d -> %d of %s (key %q)", ErrFlowInvalid, from, to, amount, key)
	}
	gid := fmt.Sprintf("transfer:%d:%s", from, key)
	if f.Ledgers.Table.Of(from) == f.Ledgers.Table.Of(to) {
		_, err := f.Ledgers.For(from).Transfer(ctx, ledger.TransferRequest{Key: gid, From: ledger.User(from), To: ledger.User(to), Amount: amount})
		if err != nil {
			return dtx.Result{}, err
		}
		return dtx.Result{GID: gid, Outcome: dtx.OutcomeCommitted, State: dtx.Committed}, nil
	}
	ctx, cancel := detached(ctx)
	defer cancel()
	return f.Coord.Run(ctx, TransferSpec(f.Ledgers, gid, from, to, amount))
}

// JoinGroup joins a user to a group, through the paid-entry saga when the
// group has a fee.
func (f *Flows) JoinGroup(ctx context.Context, key string, user, groupID int64) (dtx.Result, error) {
	if user <= 0 || key == "" {
		return dtx.Result{}, fmt.Errorf("%w: join of user %d (key %q)", ErrFlowInvalid, user, key)
	}
	g, err := f.Groups.Get(ctx, groupID)
	if err != nil {
		return dtx.Result{}, err
	}
	gid := fmt.Sprintf("join:%d:%d:%s", groupID, user, key)
	if g.Fee == 0 {
		if _, err := f.Groups.Join(ctx, group.JoinRequest{GroupID: groupID, User: user}); err != nil {
			return dtx.Result{}, err
		}
		return dtx.Result{GID: gid, Outcome: dtx.OutcomeCommitted, State: dtx.Committed}, nil
	}
	ctx, cancel := detached(ctx)
	defer cancel()
	return f.Coord.Run(ctx, PaidEntrySpec(f.Ledgers, gid, user, g))
}

// SendSpec is sending a packet as TCC: hold the amount on the sender's
// wallet and create the packet pending in its set; confirm posts the hold
// to clearing:packets and activates the packet; cancel voids and cancels.
func SendSpec(ls *Ledgers, gid string, p packet.Packet) dtx.Spec {
	return dtx.Spec{GID: gid, Kind: dtx.TCC, Branches: []dtx.Branch{
		{Participant: LedgerParticipant(ls.Table.Of(p.Sender)), Payload: ledger.Payload(ledger.ActionHold, p.Sender, p.Amount, ledger.ClearingPackets)},
		{Participant: PacketParticipant(ids.Shard(p.ID)), Payload: packet.Payload(p)},
	}}
}

// SendPacket validates and sends a packet. key makes it idempotent per
// sender: a replay returns the packet of the first send.
func (f *Flows) SendPacket(ctx context.Context, key string, p packet.Packet) (packet.Packet, dtx.Result, error) {
	if key == "" {
		return p, dtx.Result{}, fmt.Errorf("%w: an idempotency key is required", packet.ErrInvalid)
	}
	if err := p.Validate(f.Limits); err != nil {
		return p, dtx.Result{}, err
	}
	gid := fmt.Sprintf("send:%d:%s", p.Sender, key)
	if g, err := f.Coord.Get(ctx, gid); err == nil {
		var sent packet.Packet
		if err := json.Unmarshal(g.Branches[1].Payload, &sent); err != nil {
			return p, dtx.Result{}, err
		}
		if set, err := f.Set(sent.ID); err == nil && g.State == dtx.Committed {
			if stored, err := set.Get(ctx, sent.ID); err == nil {
				sent = stored
			}
		}
		if sent.Kind != p.Kind || sent.Amount != p.Amount || sent.Shares != p.Shares || sent.Receiver != p.Receiver || sent.Group != p.Group || sent.Greeting != p.Greeting {
			return p, dtx.Result{}, fmt.Errorf("%w: %s", dtx.ErrGIDConflict, gid)
		}
		return sent, dtx.Result{GID: gid, Outcome: g.State.Outcome(), State: g.State, Reason: g.Reason}, nil
	} else if !errors.Is(err, dtx.ErrNotFound) {
		return p, dtx.Result{}, err
	}
	if p.Kind != packet.Single {
		g, err := f.Groups.Get(ctx, p.Group)
		if err != nil {
			return p, dtx.Result{}, err
		}
		in, err := f.Groups.IsMember(ctx, p.Group, p.Sender)
		if err != nil {
			return p, dtx.Result{}, err
		}
		if !in {
			return p, dtx.Result{}, fmt.Errorf("%w: user %d, group %d", packet.ErrNotGroupMember, p.Sender, p.Group)
		}
		if p.Shares > g.MemberCount {
			return p, dtx.Result{}, fmt.Errorf("%w: %d shares for a group of %d", packet.ErrInvalid, p.Shares, g.MemberCount)
		}
	}
	set := f.Sets[f.next.Add(1)%uint64(len(f.Sets))]
	p.ID = set.NewID()
	if p.ExpiresAt.IsZero() {
		p.ExpiresAt = time.Now().Add(f.Limits.Expiry)
	}
	ctx, cancel := detached(ctx)
	defer cancel()
	res, err := f.Coord.Run(ctx, SendSpec(f.Ledgers, gid, p))
	if err != nil {
		return p, res, err
	}
	if res.Outcome == dtx.OutcomeCommitted {
		if stored, err := set.Get(ctx, p.ID); err == nil {
			return stored, res, nil // as the set keeps it
		}
	}
	p.State = map[dtx.Outcome]string{dtx.OutcomeCommitted: packet.StateActive, dtx.OutcomeCancelled: packet.StateCancelled}[res.Outcome]
	if p.State == "" {
		p.State = packet.StatePending
	}
	return p, res, nil
}

// Set returns the packet set a packet id routes to.
func (f *Flows) Set(packetID int64) (*packet.Set, error) {
	n := ids.Shard(packetID)
	if n >= len(f.Sets) {
		return nil, fmt.Errorf("%w: %d", packet.ErrNotFound, packetID)
	}
	return f.Sets[n], nil
}

// Grab routes a grab to the packet's set.
func (f *Flows) Grab(ctx context.Context, packetID, user int64) (packet.Claim, error) {
	set, err := f.Set(packetID)
	if err != nil {
		return packet.Claim{}, err
	}
	return set.Grab(ctx, packetID, user)
}
