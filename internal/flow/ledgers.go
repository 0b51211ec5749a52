// Package flow holds the operations that span shards and sets: transfers
// (local or TCC), deposits, paid group entry (saga), sending a packet
// (TCC), grabbing one, and the queries that read across ledger shards and
// packet sets. Every money-moving operation is idempotent on the acting
// user's key, recorded in one place (see requests.go).
package flow

import (
	"context"
	"fmt"

	"hongbao/internal/ledger"
	"hongbao/internal/shard"
)

// Ledgers are the ledger shards and the slot table that routes users to them.
type Ledgers struct {
	Table  *shard.Table
	Shards []*ledger.Ledger
}

// For returns the shard that holds a user's wallet.
func (ls *Ledgers) For(user int64) *ledger.Ledger { return ls.Shards[ls.Table.Of(user)] }

// Check runs the invariant check on every shard.
func (ls *Ledgers) Check(ctx context.Context) ([]string, error) {
	var out []string
	for _, l := range ls.Shards {
		v, err := l.Check(ctx)
		if err != nil {
			return nil, err
		}
		for _, x := range v {
			out = append(out, fmt.Sprintf("ledger %d: %s", l.Shard(), x))
		}
	}
	return out, nil
}

// Applied asks each user's ledger shard which of these credits it applied.
func (ls *Ledgers) Applied(ctx context.Context, msgs []ledger.CreditMessage) (map[string]bool, error) {
	byShard := map[int][]string{}
	for _, m := range msgs {
		n := ls.Table.Of(m.User)
		byShard[n] = append(byShard[n], m.Key)
	}
	out := map[string]bool{}
	for n, keys := range byShard {
		got, err := ls.Shards[n].Applied(ctx, keys)
		if err != nil {
			return nil, err
		}
		for k := range got {
			out[k] = true
		}
	}
	return out, nil
}
