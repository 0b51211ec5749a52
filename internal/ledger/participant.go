package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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
	bc, err := l.newBranchCall(c, p, sys)
	if err == nil {
		err = l.runBranch(ctx, bc)
	}
	if err != nil {
		err = fmt.Errorf("ledger shard %d: %s %s of %s for user %d (%s): %w", l.shard, p.Action, c.Op, p.Amount, p.User, c.Ref(), refusal(err))
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

// errUnknownAction: a branch payload with an action the ledger does not
// take, or not in this phase.
var errUnknownAction = fmt.Errorf("%w: unknown ledger action", ErrInvalid)

// refusals are the errors the branch functions raise, by their codes (see
// sql/007_branches.sql).
var refusals = map[string]error{
	"HB001": ErrInsufficientFunds, "HB002": ErrBalanceLimit, "HB003": dtx.ErrTryAfterCancel,
	"HB004": ErrHoldResolved, "HB005": ErrHoldNotFound, "HB006": ErrPostExceedsHold,
}

// refusal names the error a branch function raised by its code; any other
// error stays as it is.
func refusal(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || refusals[pe.Code] == nil {
		return err
	}
	return fmt.Errorf("%w: %s", refusals[pe.Code], pe.Message)
}
