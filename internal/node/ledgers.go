// Package node wires the parts of a Hongbao node together: the ledger
// shards, packet sets, group shard, coordinator, bus, relay, consumers and
// sweepers (System), and the flows that span them.
package node

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

// OpenLedgers opens (creating and migrating) every ledger shard database.
func OpenLedgers(ctx context.Context, open OpenDB, n int, o ledger.Options) (*Ledgers, error) {
	t, err := shard.NewTable(n)
	if err != nil {
		return nil, err
	}
	ls := &Ledgers{Table: t}
	for i := range n {
		name := LedgerDB(i)
		pool, err := open(ctx, name, PoolSizes(n, 0)[name], ledger.Migrations()...)
		if err != nil {
			return nil, err
		}
		o.Shard = i
		l, err := ledger.New(ctx, pool, o)
		if err != nil {
			return nil, err
		}
		ls.Shards = append(ls.Shards, l)
	}
	return ls, nil
}

// Database names of a node's shards.
const (
	GroupDB = "hongbao_group_0"
	DtxDB   = "hongbao_dtx"
)

// LedgerDB is the database of ledger shard n.
func LedgerDB(n int) string { return fmt.Sprintf("hongbao_ledger_%d", n) }

// PacketDB is the database of packet set n.
func PacketDB(n int) string { return fmt.Sprintf("hongbao_packet_%d", n) }

// PoolSizes is every database a node opens with the largest pool it wants
// for it; a connection budget per server scales them down (see app).
func PoolSizes(ledgerShards, packetSets int) map[string]int32 {
	m := map[string]int32{GroupDB: 32, DtxDB: 64}
	for i := range ledgerShards {
		m[LedgerDB(i)] = 64
	}
	for i := range packetSets {
		m[PacketDB(i)] = 32
	}
	return m
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
