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
	"hongbao/internal/shard"
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
	err := l.branch(ctx, c, p, sys)
	if err != nil && !errors.Is(err, errUnknownAction) {
		err = fmt.Errorf("ledger shard %d: %s %s of %s for user %d (%s): %w", l.shard, p.Action, c.Op, p.Amount, p.User, c.Ref(), refusal(err))
	}
	if errors.Is(err, ErrInsufficientFunds) || errors.Is(err, ErrInvalid) || errors.Is(err, errUnknownAction) || errors.Is(err, ErrBalanceLimit) || errors.Is(err, ErrIdempotencyConflict) ||
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

// branch runs a branch call as one statement (the functions of
// sql/007_branches.sql): the barrier and the money change in one round
// trip and one local transaction. A refusal comes back as its error, with
// nothing kept.
func (l *Ledger) branch(ctx context.Context, c dtx.Call, p BranchPayload, sys Account) error {
	holdKey := c.GID + "/" + c.Branch + "/hold"
	var err error
	switch {
	case p.Action == ActionHold && c.Op == dtx.OpTry:
		_, err = l.db.Exec(ctx, `SELECT hb_hold_try($1, $2, $3, $4, $5)`, c.GID, c.Branch, holdKey, p.User, int64(p.Amount))
	case p.Action == ActionHold && c.Op == dtx.OpConfirm:
		_, err = l.db.Exec(ctx, `SELECT hb_hold_confirm($1, $2, $3, $4, $5, $6, $7, $8)`,
			c.GID, c.Branch, c.Key(), holdKey, l.row(sys, c.Key()), int64(p.Amount), p.Peer, l.now())
	case p.Action == ActionHold && c.Op == dtx.OpCancel:
		_, err = l.db.Exec(ctx, `SELECT hb_hold_cancel($1, $2, $3, $4, $5)`, c.GID, c.Branch, c.Key(), holdKey, l.now())
	case p.Action == ActionReceive && c.Op == dtx.OpTry:
		if p.Amount > money.Amount(l.maxBalance) {
			return fmt.Errorf("%w: %s is above the maximum balance %s", ErrBalanceLimit, p.Amount, money.Amount(l.maxBalance))
		}
		_, err = l.db.Exec(ctx, `SELECT hb_receive_try($1, $2, $3, $4, $5, $6)`, c.GID, c.Branch, p.User, int64(p.Amount), l.maxBalance, shard.SlotOf(p.User))
	case p.Action == ActionReceive && c.Op == dtx.OpConfirm:
		e := TransferEvent("transfer.received:"+c.GID, p.Peer, p.User, p.Amount, l.now())
		_, err = l.db.Exec(ctx, `SELECT hb_receive_confirm($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			c.GID, c.Branch, c.Key(), l.row(sys, c.Key()), p.User, int64(p.Amount), p.Peer, shard.SlotOf(p.User),
			e.ID, e.Kind, e.Conversation, string(e.Payload), e.At)
	case p.Action == ActionReceive && c.Op == dtx.OpCancel:
		_, err = l.db.Exec(ctx, `SELECT hb_receive_cancel($1, $2, $3, $4)`, c.GID, c.Branch, p.User, int64(p.Amount))
	case p.Action == ActionDebit && c.Op == dtx.OpTry:
		err = l.sagaStep(ctx, c, KindDebit, User(p.User), sys, p.Amount, nil)
	case p.Action == ActionDebit && c.Op == dtx.OpCancel:
		var ev *events.Event
		if sys == ClearingGroups { // a paid entry refused: its fee comes back
			e := events.New("group.entry_refunded:"+c.GID, events.EntryRefunded, events.UserConversation(p.User), p.User,
				map[string]any{"user": p.User, "amount": p.Amount}, l.now())
			ev = &e
		}
		err = l.sagaStep(ctx, c, KindRefund, sys, User(p.User), p.Amount, ev)
	case p.Action == ActionCredit && c.Op == dtx.OpTry:
		err = l.sagaStep(ctx, c, KindSettle, sys, User(p.User), p.Amount, nil)
	case p.Action == ActionCredit && c.Op == dtx.OpCancel:
		err = l.sagaStep(ctx, c, KindRefund, User(p.User), sys, p.Amount, nil)
	default:
		return fmt.Errorf("%w %q in %s", errUnknownAction, p.Action, c.Op)
	}
	return err
}

// sagaStep is a saga step (try) or its compensation (cancel): one posting
// from one account to the other under the call's key, with its event.
func (l *Ledger) sagaStep(ctx context.Context, c dtx.Call, kind string, from, to Account, amount money.Amount, ev *events.Event) error {
	var slot *int
	if to.IsUser() {
		s := shard.SlotOf(int64(to))
		slot = &s
	}
	var id, evKind, conv, payload *string
	var evUser *int64
	var at *time.Time
	if ev != nil {
		p := string(ev.Payload)
		id, evKind, conv, evUser, payload, at = &ev.ID, &ev.Kind, &ev.Conversation, &ev.User, &p, &ev.At
	}
	_, err := l.db.Exec(ctx, `SELECT hb_saga_step($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		c.GID, c.Branch, string(c.Op), kind, c.Key(), l.row(from, c.Key()), l.row(to, c.Key()), int64(amount), slot, id, evKind, conv, evUser, payload, at)
	return err
}

// refusal names the error a branch function raised by its code (see
// sql/007_branches.sql); any other error stays as it is.
func refusal(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	var kind error
	switch pe.Code {
	case "HB001":
		kind = ErrInsufficientFunds
	case "HB002":
		kind = ErrBalanceLimit
	case "HB003":
		kind = dtx.ErrTryAfterCancel
	case "HB004":
		kind = ErrHoldResolved
	case "HB005":
		kind = ErrHoldNotFound
	case "HB006":
		kind = ErrPostExceedsHold
	default:
		return err
	}
	return fmt.Errorf("%w: %s", kind, pe.Message)
}
