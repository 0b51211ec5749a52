package ledger_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"hongbao/internal/dtx"
	"hongbao/internal/dtx/dtxtest"
	"hongbao/internal/ledger"
)

func TestParticipantConformance(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	// Money for the receive and credit actions to come from.
	if _, err := l.Transfer(t.Context(), ledger.TransferRequest{Key: "seed-clearing", From: ledger.External, To: ledger.ClearingTransfers, Amount: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Transfer(t.Context(), ledger.TransferRequest{Key: "seed-groups", From: ledger.External, To: ledger.ClearingGroups, Amount: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	var next atomic.Int64
	next.Store(1000)
	for _, c := range []struct {
		action  string
		account ledger.Account
		saga    bool
		noRes   bool
	}{
		{ledger.ActionHold, ledger.ClearingTransfers, false, false},
		{ledger.ActionReceive, ledger.ClearingTransfers, false, false},
		{ledger.ActionDebit, ledger.ClearingGroups, true, false},
		{ledger.ActionCredit, ledger.ClearingGroups, true, false},
	} {
		t.Run(c.action, func(t *testing.T) {
			dtxtest.Run(t, dtxtest.Subject{
				Participant:   l.Participant(),
				Saga:          c.saga,
				NoReservation: c.noRes,
				Fresh: func(t *testing.T) json.RawMessage {
					u := next.Add(1)
					deposit(t, l, u, 1000)
					return ledger.Payload(c.action, u, 300, c.account)
				},
				State: func(t *testing.T, p json.RawMessage) any {
					var bp ledger.BranchPayload
					if err := json.Unmarshal(p, &bp); err != nil {
						t.Fatal(err)
					}
					w := wallet(t, l, bp.User)
					return fmt.Sprintf("balance %s held %s incoming %s", w.Balance, w.Held, w.Incoming)
				},
			})
		})
	}
	mustCheck(t, l)
}

// Calls that arrive together run in one batch, each on its own: a refused
// try (too little money) undoes itself alone and leaves no barrier row, its
// neighbours hold, confirm and receive; repeats in the same storm apply once.
func TestBranchBatches(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := t.Context()
	if _, err := l.Transfer(ctx, ledger.TransferRequest{Key: "seed", From: ledger.External, To: ledger.ClearingTransfers, Amount: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	p := l.Participant()
	for u := int64(1); u <= n; u++ {
		if u%2 == 0 {
			deposit(t, l, u, 500) // the odd users have nothing
		}
	}
	// Sender u sends 3.00 to n+u: branch 1 holds on u, branch 2 receives on n+u.
	call := func(u int64, op dtx.Op, action string) dtx.Call {
		if action == ledger.ActionHold {
			return dtx.Call{GID: fmt.Sprint("batch-", u), Branch: "1", Op: op, Payload: ledger.PeerPayload(action, u, n+u, 300, ledger.ClearingTransfers)}
		}
		return dtx.Call{GID: fmt.Sprint("batch-", u), Branch: "2", Op: op, Payload: ledger.PeerPayload(action, n+u, u, 300, ledger.ClearingTransfers)}
	}
	// Every call three times at once.
	storm := func(op dtx.Op, action string, users func(u int64) bool) []error {
		errs := make([]error, 3*n)
		var wg sync.WaitGroup
		for i := range errs {
			if u := int64(i%n + 1); users(u) {
				wg.Go(func() { errs[i] = p.Do(ctx, call(u, op, action)) })
			}
		}
		wg.Wait()
		return errs
	}
	all := func(int64) bool { return true }
	even := func(u int64) bool { return u%2 == 0 }
	for i, err := range storm(dtx.OpTry, ledger.ActionHold, all) {
		if u := int64(i%n + 1); (u%2 == 0) != (err == nil) || (err != nil && (!errors.Is(err, ledger.ErrInsufficientFunds) || !dtx.IsFailure(err))) {
			t.Fatalf("try of user %d: %v", u, err)
		}
	}
	for u := int64(1); u <= n; u++ {
		if u%2 == 0 {
			wantWallet(t, l, u, 500, 300)
		} else {
			wantWallet(t, l, u, 0, 0)
		}
	}
	// The refused tries left nothing: funded now, the same try runs.
	deposit(t, l, 1, 300)
	if err := p.Do(ctx, call(1, dtx.OpTry, ledger.ActionHold)); err != nil {
		t.Fatalf("try again after the refusal: %v", err)
	}
	wantWallet(t, l, 1, 300, 300)
	if err := p.Do(ctx, call(1, dtx.OpCancel, ledger.ActionHold)); err != nil {
		t.Fatal(err)
	}
	wantWallet(t, l, 1, 300, 0)
	for _, step := range []struct {
		op     dtx.Op
		action string
	}{{dtx.OpTry, ledger.ActionReceive}, {dtx.OpConfirm, ledger.ActionHold}, {dtx.OpConfirm, ledger.ActionReceive}} {
		for _, err := range storm(step.op, step.action, even) {
			if err != nil {
				t.Fatalf("%s %s: %v", step.action, step.op, err)
			}
		}
	}
	if b, c := l.BranchBatches.Load(), l.BranchCalls.Load(); b >= c {
		t.Errorf("%d calls in %d batches: none ran together", c, b)
	}
	for u := int64(2); u <= n; u += 2 {
		wantWallet(t, l, u, 200, 0)
		if w := wallet(t, l, n+u); w.Balance != 300 || w.Incoming != 0 {
			t.Fatalf("receiver %d: %+v", n+u, w)
		}
	}
	mustCheck(t, l)
}
