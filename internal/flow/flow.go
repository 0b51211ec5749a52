package flow

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"hongbao/internal/dtx"
	"hongbao/internal/events"
	"hongbao/internal/group"
	"hongbao/internal/ids"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/payment"
)

// Flows are the operations that span shards, run as global transactions.
type Flows struct {
	Coord   *dtx.Coordinator
	Ledgers *Ledgers
	Groups  *group.Store
	Sets    []*packet.Set
	Limits  packet.Limits
	// MaxAmount bounds a single transfer, deposit or entry fee (default
	// DefaultMaxAmount).
	MaxAmount money.Amount
	// Payments are top-ups and withdrawals through the payment channel.
	Payments *payment.Service
	requests *requests
	next     atomic.Uint64 // round-robin over sets for new packets
	// Sends and Transfers count the packets sent and the transfers made
	// (committed or under way) for the operators' overview.
	Sends, Transfers atomic.Int64
}

// New returns the flows over a node's parts.
func New(coord *dtx.Coordinator, ls *Ledgers, groups *group.Store, sets []*packet.Set, limits packet.Limits, maxAmount money.Amount) *Flows {
	return &Flows{Coord: coord, Ledgers: ls, Groups: groups, Sets: sets, Limits: limits, MaxAmount: maxAmount, requests: newRequests(ls)}
}

// GroupParticipant is the registry name of the group shard.
const GroupParticipant = "group:0"

// LedgerParticipant is the registry name of ledger shard n.
func LedgerParticipant(n int) string { return fmt.Sprintf("ledger:%d", n) }

// PacketParticipant is the registry name of packet set n.
func PacketParticipant(n int) string { return fmt.Sprintf("packet:%d", n) }

// Participants lists every in-process participant by registry name.
func Participants(ls *Ledgers, groups *group.Store, sets []*packet.Set) map[string]dtx.Participant {
	ps := map[string]dtx.Participant{GroupParticipant: groups.Participant()}
	for _, l := range ls.Shards {
		ps[LedgerParticipant(l.Shard())] = l.Participant()
	}
	for _, set := range sets {
		ps[PacketParticipant(set.Number())] = set.Participant()
	}
	return ps
}

// TransferSpec is a transfer between users on different ledger shards as
// TCC: hold on the sender's shard (confirm posts it to clearing:transfers),
// and on the receiver's shard a branch whose confirm pays the receiver out
// of clearing:transfers. The two clearing balances net to zero.
func TransferSpec(ls *Ledgers, gid string, from, to int64, amount money.Amount) dtx.Spec {
	return dtx.Spec{GID: gid, Kind: dtx.TCC, Branches: []dtx.Branch{
		{Participant: LedgerParticipant(ls.Table.Of(from)), Payload: ledger.PeerPayload(ledger.ActionHold, from, to, amount, ledger.ClearingTransfers)},
		{Participant: LedgerParticipant(ls.Table.Of(to)), Payload: ledger.PeerPayload(ledger.ActionReceive, to, from, amount, ledger.ClearingTransfers)},
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

// ErrInvalid wraps bad input to a flow.
var ErrInvalid = errors.New("invalid request")

// MaxUserID is the largest user id: 2^53-1, so that every JSON client
// (JavaScript's numbers included) reads ids exactly.
const MaxUserID = 1<<53 - 1

func validUser(u int64) bool { return u > 0 && u <= MaxUserID }

// DefaultMaxAmount is the default largest single transfer or deposit:
// 1,000,000.00.
const DefaultMaxAmount money.Amount = 1_000_000_00

func (f *Flows) checkAmount(what string, a money.Amount) error {
	if max := f.maxAmount(); a <= 0 || a > max {
		return fmt.Errorf("%w: %s of %s: want 0.01..%s", ErrInvalid, what, a, max)
	}
	return nil
}

// definite turns a business refusal of a local operation into the same
// answer a global transaction gives for it: cancelled, nothing changed.
func definite(gid string, err error) (dtx.Result, bool, error) {
	if errors.Is(err, ledger.ErrInsufficientFunds) {
		return dtx.Result{GID: gid, Outcome: dtx.OutcomeCancelled, State: dtx.Cancelled, Reason: err.Error()}, true, nil
	}
	return dtx.Result{}, false, err
}

// Transfer moves money between two users: one local transaction when they
// share a shard, a TCC global transaction when they do not. The sender's
// key names this one transfer whichever path serves it: a replay answers
// the same, another request with the key is ledger.ErrIdempotencyConflict.
func (f *Flows) Transfer(ctx context.Context, key string, from, to int64, amount money.Amount) (dtx.Result, error) {
	if !validUser(from) || !validUser(to) || from == to || key == "" {
		return dtx.Result{}, fmt.Errorf("%w: transfer %d -> %d of %s (key %q)", ErrInvalid, from, to, amount, key)
	}
	if err := f.checkAmount("transfer", amount); err != nil {
		return dtx.Result{}, err
	}
	req := struct {
		To     int64        `json:"to"`
		Amount money.Amount `json:"amount"`
	}{to, amount}
	return once(ctx, f.requests, from, key, "transfer", req, &struct{}{}, func(ctx context.Context, fresh bool) (dtx.Result, bool, error) {
		gid := fmt.Sprintf("transfer:%d:%s", from, key)
		if fresh {
			if err := f.settled(from, to); err != nil {
				return dtx.Result{}, false, err
			}
		}
		if f.Ledgers.Table.Of(from) == f.Ledgers.Table.Of(to) {
			// The ledger's own move refuses a full wallet (ErrBalanceLimit:
			// refused, the key stays free) in the same statement.
			_, err := f.Ledgers.For(from).Transfer(ctx, ledger.TransferRequest{Key: gid, From: ledger.User(from), To: ledger.User(to), Amount: amount,
				Events: []events.Event{ledger.TransferEvent("transfer.received:"+gid, from, to, amount, time.Now())}})
			if err != nil {
				return definite(gid, err)
			}
			res := dtx.Result{GID: gid, Outcome: dtx.OutcomeCommitted, State: dtx.Committed}
			f.count(&f.Transfers, fresh, res, nil)
			return res, true, nil
		}
		// Across shards, a wallet already too full to take it is refused up
		// front too (409 balance_limit, the key stays free), not cancelled
		// by the receiver's try.
		if fresh {
			if err := f.room(ctx, to, amount); err != nil {
				return dtx.Result{}, false, err
			}
		}
		ctx, cancel := detached(ctx)
		defer cancel()
		res, err := f.Coord.Run(ctx, TransferSpec(f.Ledgers, gid, from, to, amount))
		f.count(&f.Transfers, fresh, res, err)
		return res, res.Outcome != dtx.OutcomePending, err
	})
}

// count adds one to an overview counter for a request that started its
// work (a replay of a stored answer, or a retry of one under way, is not
// counted again) and was not cancelled.
func (f *Flows) count(n *atomic.Int64, fresh bool, res dtx.Result, err error) {
	if fresh && err == nil && res.Outcome != dtx.OutcomeCancelled {
		n.Add(1)
	}
}

// DepositResult is what an operator's deposit did.
type DepositResult struct {
	User      int64        `json:"user"`
	Amount    money.Amount `json:"amount"`
	Balance   money.Amount `json:"balance"` // the wallet's balance right after it
	PostingID int64        `json:"posting_id"`
}

// Deposit credits a user from outside (an operator's act; operator is the
// acting operator's id, 0 for any). The key names this one deposit.
func (f *Flows) Deposit(ctx context.Context, key string, operator, user int64, amount money.Amount) (DepositResult, error) {
	if !validUser(user) || operator < 0 {
		return DepositResult{}, fmt.Errorf("%w: deposit to user %d", ErrInvalid, user)
	}
	if err := f.checkAmount("deposit", amount); err != nil {
		return DepositResult{}, err
	}
	req := struct {
		User   int64        `json:"user"`
		Amount money.Amount `json:"amount"`
	}{user, amount}
	return once(ctx, f.requests, operator, key, "deposit", req, &struct{}{}, func(ctx context.Context, _ bool) (DepositResult, bool, error) {
		r, err := f.Ledgers.For(user).Deposit(ctx, fmt.Sprintf("deposit:%d:%s", operator, key), user, amount)
		if err != nil {
			return DepositResult{}, false, err
		}
		return DepositResult{User: user, Amount: amount, Balance: r.ToBalance, PostingID: r.PostingID}, true, nil
	})
}

// JoinGroup joins a user to a group, through the paid-entry saga when the
// group has a fee. The user's key names this one join.
func (f *Flows) JoinGroup(ctx context.Context, key string, user, groupID int64) (dtx.Result, error) {
	if user <= 0 || groupID <= 0 || key == "" {
		return dtx.Result{}, fmt.Errorf("%w: join of user %d to group %d (key %q)", ErrInvalid, user, groupID, key)
	}
	req := struct {
		Group int64 `json:"group"`
	}{groupID}
	return once(ctx, f.requests, user, key, "join", req, &struct{}{}, func(ctx context.Context, _ bool) (dtx.Result, bool, error) {
		g, err := f.Groups.Get(ctx, groupID)
		if err != nil {
			return dtx.Result{}, false, err
		}
		gid := fmt.Sprintf("join:%d:%d:%s", groupID, user, key)
		if g.Fee > 0 {
			if _, err := f.Coord.Get(ctx, gid); errors.Is(err, dtx.ErrNotFound) {
				// Joining a group one is in already is a no-op: nobody pays.
				if in, err := f.Groups.IsMember(ctx, groupID, user); err != nil || in {
					return dtx.Result{GID: gid, Outcome: dtx.OutcomeCommitted, State: dtx.Committed, Reason: "already a member"}, err == nil, err
				}
				if err := f.settled(user, g.Owner); err != nil {
					return dtx.Result{}, false, err
				}
				if err := f.room(ctx, g.Owner, g.Fee); err != nil {
					return dtx.Result{}, false, err
				}
			} else if err != nil {
				return dtx.Result{}, false, err
			}
		}
		if g.Fee == 0 {
			if _, err := f.Groups.Join(ctx, group.JoinRequest{GroupID: groupID, User: user}); err != nil {
				return dtx.Result{}, false, err
			}
			return dtx.Result{GID: gid, Outcome: dtx.OutcomeCommitted, State: dtx.Committed}, true, nil
		}
		ctx, cancel := detached(ctx)
		defer cancel()
		res, err := f.Coord.Run(ctx, PaidEntrySpec(f.Ledgers, gid, user, g))
		return res, res.Outcome != dtx.OutcomePending, err
	})
}

// settled refuses, retryably, an operation on wallets whose slot is being
// moved to another shard right now (a transaction started would be
// cancelled by the fence; asking again in a moment succeeds).
func (f *Flows) settled(users ...int64) error {
	for _, u := range users {
		if f.Ledgers.Table.Moving(u) {
			return fmt.Errorf("%w: user %d", ledger.ErrSlotMoving, u)
		}
	}
	return nil
}

// CreateGroup creates a group owned by owner. The id follows from the
// owner and the key (53 bits, so that JavaScript clients read it exactly).
func (f *Flows) CreateGroup(ctx context.Context, key string, owner int64, capacity int, fee money.Amount) (group.Group, error) {
	if owner <= 0 || key == "" {
		return group.Group{}, fmt.Errorf("%w: group of owner %d (key %q)", ErrInvalid, owner, key)
	}
	if fee < 0 || fee > f.maxAmount() {
		return group.Group{}, fmt.Errorf("%w: fee %s: want 0..%s", ErrInvalid, fee, f.maxAmount())
	}
	req := struct {
		Capacity int          `json:"capacity"`
		Fee      money.Amount `json:"fee"`
	}{capacity, fee}
	// The id is drawn by the first request and kept with its key, as a
	// packet's is: a replay creates the same group, never a second one.
	params := &struct {
		ID int64 `json:"id"`
	}{newGroupID()}
	return once(ctx, f.requests, owner, key, "create_group", req, params, func(ctx context.Context, _ bool) (group.Group, bool, error) {
		g, err := f.Groups.Create(ctx, group.CreateRequest{ID: params.ID, Owner: owner, Capacity: capacity, Fee: fee})
		return g, err == nil, err
	})
}

// newGroupID draws a random group id of 53 bits, so that JavaScript clients
// read it exactly. A collision (as likely as not only after some 100
// million groups) with another owner or other settings is refused by
// Create (ErrConflict), never shared.
func newGroupID() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:])>>11) + 1
}

func (f *Flows) maxAmount() money.Amount {
	if f.MaxAmount == 0 {
		return DefaultMaxAmount
	}
	return f.MaxAmount
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

// SendResult is a send's packet and the outcome of its global transaction.
type SendResult struct {
	Packet packet.Packet `json:"packet"`
	Result dtx.Result    `json:"result"`
}

// sendParams are what the first request of a send resolved.
type sendParams struct {
	ID        int64     `json:"id,string"`
	ExpiresAt time.Time `json:"expires_at"`
	CreatedAt time.Time `json:"created_at"`
}

// SendPacket validates and sends a packet that expires after expiresIn (0:
// the default). The sender's key names this one send: a replay with the same
// request answers the same (the same packet), another request with the key is
// ledger.ErrIdempotencyConflict.
func (f *Flows) SendPacket(ctx context.Context, key string, p packet.Packet, expiresIn time.Duration) (packet.Packet, dtx.Result, error) {
	if key == "" {
		return p, dtx.Result{}, fmt.Errorf("%w: an idempotency key is required", packet.ErrInvalid)
	}
	if expiresIn < 0 {
		return p, dtx.Result{}, fmt.Errorf("%w: expires in %s", packet.ErrInvalid, expiresIn)
	}
	if err := p.Validate(f.Limits); err != nil {
		return p, dtx.Result{}, err
	}
	if p.Amount > f.maxAmount() {
		return p, dtx.Result{}, fmt.Errorf("%w: %s is above the largest single amount %s", packet.ErrInvalid, p.Amount, f.maxAmount())
	}
	if !validUser(p.Receiver) && p.Kind == packet.Single {
		return p, dtx.Result{}, fmt.Errorf("%w: receiver %d", packet.ErrInvalid, p.Receiver)
	}
	req := struct {
		Kind      packet.Kind   `json:"kind"`
		Receiver  int64         `json:"receiver"`
		Group     int64         `json:"group"`
		Amount    money.Amount  `json:"amount"`
		Shares    int           `json:"shares"`
		Greeting  string        `json:"greeting"`
		ExpiresIn time.Duration `json:"expires_in"`
	}{p.Kind, p.Receiver, p.Group, p.Amount, p.Shares, p.Greeting, expiresIn}
	if expiresIn == 0 {
		expiresIn = f.Limits.Expiry
	}
	set := f.Sets[f.next.Add(1)%uint64(len(f.Sets))]
	now := time.Now()
	id, err := set.NewID(ctx)
	if err != nil {
		return packet.Packet{}, dtx.Result{}, err
	}
	params := &sendParams{ID: id, ExpiresAt: now.Add(expiresIn), CreatedAt: now}
	r, err := once(ctx, f.requests, p.Sender, key, "send", req, params, func(ctx context.Context, fresh bool) (SendResult, bool, error) {
		p.ID, p.ExpiresAt, p.CreatedAt = params.ID, params.ExpiresAt, params.CreatedAt
		set, err := f.Set(p.ID)
		if err != nil {
			return SendResult{}, false, err
		}
		gid := fmt.Sprintf("send:%d:%s", p.Sender, key)
		// The checks run unless the send is already under way (a replay of
		// a send still pending): a refused send is refused every time.
		started := false
		if !fresh {
			_, err := f.Coord.Get(ctx, gid)
			if err != nil && !errors.Is(err, dtx.ErrNotFound) {
				return SendResult{}, false, err
			}
			started = err == nil
		}
		if !started {
			if err := f.sendable(ctx, p); err != nil {
				return SendResult{}, false, err
			}
		}
		dctx, cancel := detached(ctx)
		defer cancel()
		res, err := f.Coord.Run(dctx, SendSpec(f.Ledgers, gid, p))
		f.count(&f.Sends, fresh, res, err)
		if err != nil {
			return SendResult{}, false, err
		}
		switch res.Outcome {
		case dtx.OutcomeCommitted:
			if stored, err := set.Get(dctx, p.ID); err == nil {
				p = stored // as the set keeps it
			} else {
				p.State, p.RemainingAmount, p.RemainingCount = packet.StateActive, p.Amount, p.Shares
			}
		case dtx.OutcomeCancelled:
			p.State = packet.StateCancelled
		default:
			p.State = packet.StatePending
		}
		return SendResult{Packet: p, Result: res}, res.Outcome != dtx.OutcomePending, nil
	})
	if err != nil {
		return p, dtx.Result{}, err
	}
	return r.Packet, r.Result, nil
}

// sendable checks a packet against the limits that depend on state: a
// one-to-one packet's receiver must have room for it (the credit of a
// grab is never refused later); a group packet's sender must be a member
// and the group have at least as many members as shares.
func (f *Flows) sendable(ctx context.Context, p packet.Packet) error {
	if p.Kind == packet.Single {
		return f.room(ctx, p.Receiver, p.Amount)
	}
	g, err := f.Groups.Get(ctx, p.Group)
	if err != nil {
		return err
	}
	in, err := f.Groups.IsMember(ctx, p.Group, p.Sender)
	if err != nil {
		return err
	}
	if !in {
		return fmt.Errorf("%w: user %d, group %d", packet.ErrNotGroupMember, p.Sender, p.Group)
	}
	if p.Shares > g.MemberCount {
		return fmt.Errorf("%w: %d shares for a group of %d", packet.ErrInvalid, p.Shares, g.MemberCount)
	}
	return nil
}

// room refuses money for a wallet that is already too full to take it.
// It is checked up front for money that must not be refused later (a
// packet's credit, an entry fee): a check, not a reservation, so a wallet
// near its maximum can pass it by what is in flight.
func (f *Flows) room(ctx context.Context, user int64, amount money.Amount) error {
	w, err := f.Ledgers.For(user).Wallet(ctx, user)
	if err != nil {
		return err
	}
	if max := f.Ledgers.For(user).MaxBalance(); w.Balance+amount > max {
		return fmt.Errorf("%w: user %d has %s of at most %s", ledger.ErrBalanceLimit, user, w.Balance, max)
	}
	return nil
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
	c, err := set.Grab(ctx, packetID, user)
	if err == nil && c.Duplicate && !c.Credited {
		// A repeat says credited as the packet's detail does.
		if done, err := f.Credited(ctx, []packet.Claim{c}); err == nil {
			c.Credited = done[c.ID]
		}
	}
	return c, err
}

// Credited reports which claims their grabbers' ledgers applied.
func (f *Flows) Credited(ctx context.Context, cs []packet.Claim) (map[int64]bool, error) {
	msgs := make([]ledger.CreditMessage, len(cs))
	for i, c := range cs {
		msgs[i] = packet.ClaimMessage(c)
	}
	done, err := f.Ledgers.Applied(ctx, msgs)
	if err != nil {
		return nil, err
	}
	out := map[int64]bool{}
	for i, c := range cs {
		out[c.ID] = done[msgs[i].Key]
	}
	return out, nil
}
