package ledger_test

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

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
