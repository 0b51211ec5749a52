package app

import (
	"context"
	"errors"
	"fmt"

	"hongbao/internal/dtx"
	"hongbao/internal/group"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
)

// Flows are the operations that span shards, run as global transactions.
type Flows struct {
	Coord   *dtx.Coordinator
	Ledgers *Ledgers
	Groups  *group.Store
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
	return f.Coord.Run(ctx, PaidEntrySpec(f.Ledgers, gid, user, g))
}
