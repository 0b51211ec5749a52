package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"hongbao/internal/dtx"
	"hongbao/internal/events"
	"hongbao/internal/money"
)

// Branch actions the ledger takes part in global transactions with.
const (
	// ActionHold (TCC): try holds Amount on User's wallet, confirm posts it
	// to Account, cancel voids it.
	ActionHold = "hold"
	// ActionReceive (TCC): try reserves room for Amount on User's wallet
	// (refused when it would pass the maximum balance), confirm credits User
	// from Account using that room, cancel frees it.
	ActionReceive = "receive"
	// ActionDebit (saga step): User -> Account; compensation: Account -> User.
	ActionDebit = "debit"
	// ActionCredit (saga step, usually retryable): Account -> User;
	// compensation: User -> Account.
	ActionCredit = "credit"
)

// BranchPayload is what a ledger branch carries.
type BranchPayload struct {
	Action  string       `json:"action"`
	User    int64        `json:"user"`
	Amount  money.Amount `json:"amount"`
	Account string       `json:"account"` // a system account by name, e.g. "clearing:groups"
	// Peer is the user on the other side (a transfer's receiver for the
	// sender's branch, its sender for the receiver's), for statements.
	Peer int64 `json:"peer,omitempty"`
}

// Payload encodes a branch payload.
func Payload(action string, user int64, amount money.Amount, account Account) json.RawMessage {
	b, _ := json.Marshal(BranchPayload{Action: action, User: user, Amount: amount, Account: account.String()})
	return b
}

// PeerPayload is Payload with the user on the other side of the money.
func PeerPayload(action string, user, peer int64, amount money.Amount, account Account) json.RawMessage {
	b, _ := json.Marshal(BranchPayload{Action: action, User: user, Amount: amount, Account: account.String(), Peer: peer})
	return b
}

// SystemAccount finds a system account by name.
func SystemAccount(name string) (Account, bool) {
	for _, a := range SystemAccounts {
		if a.String() == name {
			return a, true
		}
	}
	return 0, false
}

// Participant returns the shard as a TCC/Saga participant. Each call runs
// the barrier in the same local transaction as its money change.
func (l *Ledger) Participant() dtx.Participant { return dtx.ParticipantFunc(l.do) }

func (l *Ledger) do(ctx context.Context, c dtx.Call) error {
	var p BranchPayload
	if err := json.Unmarshal(c.Payload, &p); err != nil {
		return dtx.Fail(fmt.Errorf("ledger branch payload: %w", err))
	}
	sys, ok := SystemAccount(p.Account)
	if !ok || p.User <= 0 || p.Amount <= 0 || p.Amount > money.Max {
		return dtx.Fail(fmt.Errorf("%w: ledger branch %+v", ErrInvalid, p))
	}
	ref := c.Ref()
	holdKey := c.GID + "/" + c.Branch + "/hold"
	var err error
	switch {
	case p.Action == ActionHold && c.Op == dtx.OpTry:
		_, err = l.Hold(ctx, HoldRequest{Key: holdKey, User: p.User, Amount: p.Amount, Branch: &ref})
	case p.Action == ActionHold && c.Op == dtx.OpConfirm:
		_, err = l.Post(ctx, PostRequest{Key: c.Key(), HoldKey: holdKey, To: sys, Amount: p.Amount, Branch: &ref, Peer: p.Peer})
	case p.Action == ActionHold && c.Op == dtx.OpCancel:
		_, err = l.Void(ctx, VoidRequest{Key: c.Key(), HoldKey: holdKey, Branch: &ref})
	case p.Action == ActionReceive && c.Op == dtx.OpTry:
		err = l.reserve(ctx, ref, p.User, p.Amount)
	case p.Action == ActionReceive && c.Op == dtx.OpConfirm:
		_, err = l.Transfer(ctx, TransferRequest{Key: c.Key(), From: sys, To: User(p.User), Amount: p.Amount, Kind: KindCredit,
			Branch: &ref, Op: dtx.OpConfirm, Reserved: true, Peer: p.Peer,
			Events: []events.Event{TransferEvent("transfer.received:"+c.GID, p.Peer, p.User, p.Amount, l.now())}})
	case p.Action == ActionReceive && c.Op == dtx.OpCancel:
		err = l.unreserve(ctx, ref, p.User, p.Amount)
	case p.Action == ActionDebit && c.Op == dtx.OpTry:
		_, err = l.Transfer(ctx, TransferRequest{Key: c.Key(), From: User(p.User), To: sys, Amount: p.Amount, Kind: KindDebit, Branch: &ref, Op: dtx.OpTry})
	case p.Action == ActionDebit && c.Op == dtx.OpCancel:
		var evs []events.Event
		if sys == ClearingGroups { // a paid entry refused: its fee comes back
			evs = []events.Event{events.New("group.entry_refunded:"+c.GID, events.EntryRefunded, events.UserConversation(p.User), p.User,
				map[string]any{"user": p.User, "amount": p.Amount}, l.now())}
		}
		_, err = l.Transfer(ctx, TransferRequest{Key: c.Key(), From: sys, To: User(p.User), Amount: p.Amount, Kind: KindRefund, Branch: &ref, Op: dtx.OpCancel, Events: evs})
	case p.Action == ActionCredit && c.Op == dtx.OpTry:
		_, err = l.Transfer(ctx, TransferRequest{Key: c.Key(), From: sys, To: User(p.User), Amount: p.Amount, Kind: KindSettle, Branch: &ref, Op: dtx.OpTry})
	case p.Action == ActionCredit && c.Op == dtx.OpCancel:
		_, err = l.Transfer(ctx, TransferRequest{Key: c.Key(), From: User(p.User), To: sys, Amount: p.Amount, Kind: KindRefund, Branch: &ref, Op: dtx.OpCancel})
	default:
		return dtx.Fail(fmt.Errorf("%w: ledger action %q cannot %s", ErrInvalid, p.Action, c.Op))
	}
	if errors.Is(err, ErrInsufficientFunds) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrBalanceLimit) || errors.Is(err, ErrIdempotencyConflict) ||
		errors.Is(err, dtx.ErrTryAfterCancel) || errors.Is(err, ErrHoldResolved) {
		return dtx.Fail(err)
	}
	return err
}

// TransferEvent is a transfer received by to from another user, told to
// the receiver.
func TransferEvent(id string, from, to int64, amount money.Amount, at time.Time) events.Event {
	return events.New(id, events.TransferReceived, events.UserConversation(to), to, map[string]any{"from": from, "to": to, "amount": amount}, at)
}
