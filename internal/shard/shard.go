// Package shard routes users to ledger shards through a slot table: a user
// hashes to one of 1024 slots, and each slot belongs to one shard. Moving a
// slot to another shard is how a shard is split without rehashing everyone.
package shard

import (
	"fmt"
	"sync/atomic"
)

// Slots is the number of slots in every table.
const Slots = 1024

// Table maps slots to shards. Reads are lock-free; Move publishes a new copy.
type Table struct {
	shards int
	slots  atomic.Pointer[[Slots]int]
}

// NewTable spreads the slots evenly over n shards (slot i -> shard i mod n).
func NewTable(n int) (*Table, error) {
	if n < 1 || n > Slots {
		return nil, fmt.Errorf("shard: %d shards, want 1..%d", n, Slots)
	}
	var s [Slots]int
	for i := range s {
		s[i] = i % n
	}
	t := &Table{shards: n}
	t.slots.Store(&s)
	return t, nil
}

// SlotOf returns the slot of a user id. The id is mixed first (splitmix64
// finalizer) so that sequential ids spread evenly.
func SlotOf(userID int64) int {
	z := uint64(userID)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return int(z % Slots)
}

// Of returns the shard that holds a user's wallet.
func (t *Table) Of(userID int64) int { return t.slots.Load()[SlotOf(userID)] }

// Move assigns a slot to another shard. The caller is responsible for moving
// the slot's data first (a migration saga); routing switches atomically.
func (t *Table) Move(slot, to int) error {
	if slot < 0 || slot >= Slots {
		return fmt.Errorf("shard: slot %d out of range", slot)
	}
	if to < 0 || to >= t.shards {
		return fmt.Errorf("shard: shard %d out of range 0..%d", to, t.shards-1)
	}
	for {
		old := t.slots.Load()
		next := *old
		next[slot] = to
		if t.slots.CompareAndSwap(old, &next) {
			return nil
		}
	}
}
