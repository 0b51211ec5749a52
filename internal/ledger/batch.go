package ledger

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"hongbao/internal/dtx"
	"hongbao/internal/events"
	"hongbao/internal/money"
	"hongbao/internal/shard"
)

// Branch calls that arrive together on a shard run together: one
// statement (hb_branches, sql/008_branch_batches.sql) and one local
// transaction for the batch, each call in its own subtransaction, so that a
// refusal undoes that call alone. A batch starts as soon as a call waits
// and fewer than branchBatchesInFlight batches run; it takes every call
// queued by then (at most maxBranchBatch). A lone call is a batch of one:
// no call waits for company.
const (
	maxBranchBatch        = 128
	branchBatchesInFlight = 2
	branchBatchTimeout    = 10 * time.Second
)

// branchCall is one call's arguments for hb_branches.
type branchCall struct {
	op                          string // e.g. "hold_try"
	gid, branch, key            string
	user, amount, peer          int64
	sys                         Account // the system account it posts to or from
	slot                        int32
	eventID, eventKind, convers string
	payload                     string
	done                        chan error
}

type branchBatcher struct {
	mu       sync.Mutex
	queue    []*branchCall
	inFlight int
}

// branchOps are the calls hb_branches takes: a hold and a receive (TCC)
// try, confirm and cancel; a debit and a credit (saga) and their
// compensations.
var branchOps = map[string]bool{
	"hold_try": true, "hold_confirm": true, "hold_cancel": true,
	"receive_try": true, "receive_confirm": true, "receive_cancel": true,
	"debit_try": true, "debit_cancel": true, "credit_try": true, "credit_cancel": true,
}

// newBranchCall turns a participant call into its batch arguments, or
// errUnknownAction.
func (l *Ledger) newBranchCall(c dtx.Call, p BranchPayload, sys Account) (*branchCall, error) {
	bc := &branchCall{gid: c.GID, branch: c.Branch, key: c.Key(), user: p.User, amount: int64(p.Amount), peer: p.Peer, sys: sys,
		slot: int32(shard.SlotOf(p.User)), done: make(chan error, 1)}
	bc.op = p.Action + "_" + string(c.Op)
	if !branchOps[bc.op] {
		return nil, fmt.Errorf("%w %q in %s", errUnknownAction, p.Action, c.Op)
	}
	var ev *events.Event
	switch bc.op {
	case "receive_try":
		if p.Amount > money.Amount(l.maxBalance) {
			return nil, fmt.Errorf("%w: %s is above the maximum balance %s", ErrBalanceLimit, p.Amount, money.Amount(l.maxBalance))
		}
	case "receive_confirm":
		e := TransferEvent("transfer.received:"+c.GID, p.Peer, p.User, p.Amount, l.now())
		ev = &e
	case "debit_cancel":
		if sys == ClearingGroups { // a paid entry refused: its fee comes back
			e := events.New("group.entry_refunded:"+c.GID, events.EntryRefunded, events.UserConversation(p.User), p.User,
				map[string]any{"user": p.User, "amount": p.Amount}, l.now())
			ev = &e
		}
	}
	if ev != nil {
		bc.eventID, bc.eventKind, bc.convers, bc.payload = ev.ID, ev.Kind, ev.Conversation, string(ev.Payload)
	}
	return bc, nil
}

// runBranch queues a call for the next batch and waits for its answer.
// A caller that gives up leaves the call in its batch: the answer is then
// unknown, and the coordinator's repeat is answered by the barrier.
func (l *Ledger) runBranch(ctx context.Context, bc *branchCall) error {
	b := &l.batches
	b.mu.Lock()
	b.queue = append(b.queue, bc)
	start := b.inFlight < branchBatchesInFlight
	if start {
		b.inFlight++
	}
	b.mu.Unlock()
	if start {
		go l.drainBranches()
	}
	select {
	case err := <-bc.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drainBranches runs batches until the queue is empty.
func (l *Ledger) drainBranches() {
	b := &l.batches
	for {
		b.mu.Lock()
		n := min(len(b.queue), maxBranchBatch)
		if n == 0 {
			b.inFlight--
			b.mu.Unlock()
			return
		}
		batch := slices.Clone(b.queue[:n])
		b.queue = slices.Delete(b.queue, 0, n)
		b.mu.Unlock()
		errs := l.runBatch(batch)
		for i, bc := range batch {
			bc.done <- errs[i]
		}
	}
}

// runBatch runs calls in one hb_branches statement. It sorts batch in
// place, and answers each call at its index in the sorted order. Every call
// that posts to or from a system account uses one stripe, picked for the
// batch: a batch locks one row of each system account, not one per call.
func (l *Ledger) runBatch(batch []*branchCall) []error {
	ctx, cancel := context.WithTimeout(context.Background(), branchBatchTimeout)
	defer cancel()
	l.BranchBatches.Add(1)
	l.BranchCalls.Add(int64(len(batch)))
	stripe := int64(rand.IntN(l.stripes))
	// In wallet order (calls on one wallet keep their order: a try before
	// its cancel): a wallet a call creates is then inserted in the same
	// order by every batch, so two batches never wait on each other's new
	// rows in a cycle either.
	slices.SortStableFunc(batch, func(a, b *branchCall) int { return cmp.Compare(a.user, b.user) })
	n := len(batch)
	ops, gids, branches, keys := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	users, amounts, rows, peers := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	slots := make([]int32, n)
	evIDs, evKinds, convs, payloads := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	lock := make([]int64, 0, 2*n)
	for i, bc := range batch {
		ops[i], gids[i], branches[i], keys[i] = bc.op, bc.gid, bc.branch, bc.key
		users[i], amounts[i], rows[i], peers[i], slots[i] = bc.user, bc.amount, int64(bc.sys)-stripe, bc.peer, bc.slot
		evIDs[i], evKinds[i], convs[i], payloads[i] = bc.eventID, bc.eventKind, bc.convers, bc.payload
		lock = append(lock, bc.user)
		switch bc.op {
		case "hold_confirm", "receive_confirm", "debit_try", "debit_cancel", "credit_try", "credit_cancel":
			lock = append(lock, rows[i]) // the calls that post to or from the stripe
		}
	}
	slices.Sort(lock)
	lock = slices.Compact(lock)
	var res []string
	err := l.db.QueryRow(ctx, `SELECT hb_branches($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		lock, l.maxBalance, l.now(), ops, gids, branches, keys, users, amounts, rows, peers, slots, evIDs, evKinds, convs, payloads).Scan(&res)
	errs := make([]error, n)
	for i := range errs {
		switch {
		case err != nil:
			errs[i] = err
		case i >= len(res):
			errs[i] = errors.New("ledger: branch batch answered too few calls")
		case res[i] != "":
			code, msg, _ := strings.Cut(res[i], " ")
			errs[i] = &pgconn.PgError{Severity: "ERROR", Code: code, Message: msg}
		}
	}
	return errs
}
