package ids

import (
	"sync"
	"testing"
	"time"
)

func TestShardAndOrder(t *testing.T) {
	t.Parallel()
	for _, shard := range []int{0, 1, 7, MaxShard} {
		g, err := NewGenerator(shard, nil)
		if err != nil {
			t.Fatal(err)
		}
		prev := int64(0)
		for range 10000 {
			id := g.Next()
			if id <= prev {
				t.Fatalf("id %d not above %d", id, prev)
			}
			if Shard(id) != shard {
				t.Fatalf("Shard(%d) = %d, want %d", id, Shard(id), shard)
			}
			prev = id
		}
	}
	if _, err := NewGenerator(MaxShard+1, nil); err == nil {
		t.Fatal("accepted shard beyond MaxShard")
	}
	if _, err := NewGenerator(-1, nil); err == nil {
		t.Fatal("accepted negative shard")
	}
}

func TestClockGoesBackAndOverflow(t *testing.T) {
	t.Parallel()
	now := Epoch.Add(time.Hour)
	g, _ := NewGenerator(3, func() time.Time { return now })
	seen := map[int64]bool{}
	prev := int64(0)
	for i := range 3 * (seqMask + 1) {
		if i == 5000 {
			now = now.Add(-time.Minute) // the wall clock jumps back
		}
		id := g.Next()
		if id <= prev || seen[id] {
			t.Fatalf("id %d repeated or not increasing", id)
		}
		seen[id] = true
		prev = id
	}
	if got := Time(prev); got.Before(Epoch.Add(time.Hour)) {
		t.Fatalf("Time went backwards: %v", got)
	}
}

func TestConcurrentUnique(t *testing.T) {
	t.Parallel()
	g, _ := NewGenerator(9, nil)
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			local := make([]int64, 2000)
			for i := range local {
				local[i] = g.Next()
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range local {
				if seen[id] {
					t.Errorf("duplicate id %d", id)
				}
				seen[id] = true
			}
		})
	}
	wg.Wait()
}
