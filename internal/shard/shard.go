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

// Table maps slots to shards. Reads are lock-free; Move and Set publish a
// new copy. Version is the stored table's version this copy reflects (0:
// the initial spread); Moving marks the slots a migration is moving now.
type Table struct {
	shards  int
	slots   atomic.Pointer[[Slots]int]
	version atomic.Int64
	moving  atomic.Pointer[[Slots]bool]
	// history: every shard each slot has lived on, oldest first.
	history atomic.Pointer[[Slots][]int]
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
	t.moving.Store(&[Slots]bool{})
	t.history.Store(&[Slots][]int{})
	return t, nil
}

// Shards is the number of shards the table routes to.
func (t *Table) Shards() int { return t.shards }

// Version is the version of the stored table this copy reflects.
func (t *Table) Version() int64 { return t.version.Load() }

// Set publishes the stored table: its version, each slot's shard, the
// slots being moved and every shard each slot has lived on. An older
// version than the one held is ignored.
func (t *Table) Set(version int64, slots [Slots]int, moving [Slots]bool, history [Slots][]int) error {
	for i, s := range slots {
		if s < 0 || s >= t.shards {
			return fmt.Errorf("shard: slot %d on shard %d, but there are %d shards", i, s, t.shards)
		}
	}
	if version < t.version.Load() {
		return nil
	}
	t.slots.Store(&slots)
	t.moving.Store(&moving)
	t.history.Store(&history)
	t.version.Store(version)
	return nil
}

// Slots returns a copy of the slot -> shard map.
func (t *Table) Slots() [Slots]int { return *t.slots.Load() }

// Moving reports whether a user's slot is being moved right now.
func (t *Table) Moving(userID int64) bool { return t.moving.Load()[SlotOf(userID)] }

// History returns the shards a user's slot has lived on, oldest first,
// ending with the one it is on (one shard for a slot that never moved).
func (t *Table) History(userID int64) []int {
	slot := SlotOf(userID)
	h := t.history.Load()[slot]
	if len(h) == 0 {
		return []int{t.slots.Load()[slot]}
	}
	return h
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
