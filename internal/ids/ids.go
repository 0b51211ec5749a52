// Package ids makes snowflake ids that carry the shard (or set) that owns
// the thing they name, so a request can be routed from the id alone.
//
// Layout, high to low: 1 zero bit, 41 bits of milliseconds since Epoch,
// 10 bits of shard, 12 bits of sequence. A generator hands out at most 4096
// ids per millisecond; past that it borrows from the next millisecond rather
// than sleep, and it never goes backwards when the wall clock does.
package ids

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Epoch is the zero of the time field: 2024-01-01 UTC.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	shardBits = 10
	seqBits   = 12
	// MaxShard is the largest shard number an id can carry.
	MaxShard = 1<<shardBits - 1
	seqMask  = 1<<seqBits - 1
)

// Generator makes ids for one shard. It is safe for concurrent use.
type Generator struct {
	shard int64
	now   func() time.Time

	mu     sync.Mutex
	lastMs int64
	seq    int64
}

// NewGenerator returns a generator for shard (0..MaxShard). now may be nil
// for time.Now.
func NewGenerator(shard int, now func() time.Time) (*Generator, error) {
	if shard < 0 || shard > MaxShard {
		return nil, fmt.Errorf("ids: shard %d out of range 0..%d", shard, MaxShard)
	}
	if now == nil {
		now = time.Now
	}
	return &Generator{shard: int64(shard), now: now}, nil
}

// Next returns a new id, larger than every id this generator returned before.
func (g *Generator) Next() int64 {
	ms := g.now().Sub(Epoch).Milliseconds()
	g.mu.Lock()
	defer g.mu.Unlock()
	if ms <= g.lastMs {
		g.seq++
		if g.seq > seqMask {
			g.lastMs++
			g.seq = 0
		}
	} else {
		g.lastMs = ms
		g.seq = 0
	}
	return g.lastMs<<(shardBits+seqBits) | g.shard<<seqBits | g.seq
}

// Shard returns the shard an id was made for.
func Shard(id int64) int { return int(id >> seqBits & MaxShard) }

// Time returns when an id was made (to the millisecond).
func Time(id int64) time.Time {
	return Epoch.Add(time.Duration(id>>(shardBits+seqBits)) * time.Millisecond)
}

// Blocks makes ids that carry a shard and are unique across processes:
// the time field of each block of 4096 ids comes from a database sequence
// (one round trip per block) instead of the clock, so two processes
// minting ids for the same shard never collide. The sequence starts at
// the milliseconds since Epoch when it was created (BlockSequenceSQL), so
// these ids are larger than any a Generator made before and keep growing
// (see the packet set's 003_packet_ids.sql).
type Blocks struct {
	next  func(ctx context.Context) (int64, error)
	shard int64

	mu    sync.Mutex
	block int64
	seq   int64
}

// NewBlocks returns an allocator for shard whose blocks come from next
// (a nextval of the sequence).
func NewBlocks(shard int, next func(ctx context.Context) (int64, error)) (*Blocks, error) {
	if shard < 0 || shard > MaxShard {
		return nil, fmt.Errorf("ids: shard %d out of range 0..%d", shard, MaxShard)
	}
	return &Blocks{next: next, shard: int64(shard), seq: seqMask + 1}, nil
}

// Next returns a new id.
func (b *Blocks) Next(ctx context.Context) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seq > seqMask {
		blk, err := b.next(ctx)
		if err != nil {
			return 0, fmt.Errorf("ids: next block: %w", err)
		}
		b.block, b.seq = blk, 0
	}
	id := b.block<<(shardBits+seqBits) | b.shard<<seqBits | b.seq
	b.seq++
	return id, nil
}
