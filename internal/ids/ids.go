// Package ids makes snowflake ids that carry the shard (or set) that owns
// the thing they name, so a request can be routed from the id alone.
//
// Layout, high to low: 1 zero bit, 41 bits of milliseconds since Epoch,
// 10 bits of shard, 12 bits of sequence. A generator hands out at most 4096
// ids per millisecond; past that it borrows from the next millisecond rather
// than sleep, and it never goes backwards when the wall clock does.
package ids

import (
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
