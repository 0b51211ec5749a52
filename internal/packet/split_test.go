package packet

import (
	"math/rand/v2"
	"testing"
	"testing/quick"
)

// drawAll splits amount into shares the way the engine does.
func drawAll(r *rand.Rand, amount int64, shares int) []int64 {
	out := make([]int64, 0, shares)
	remaining, count := amount, shares
	for count > 0 {
		s := luckyShare(r, remaining, count)
		out = append(out, s)
		remaining -= s
		count--
	}
	return out
}

func TestLuckySplitProperty(t *testing.T) {
	t.Parallel()
	f := func(seed uint64, a uint32, n uint16) bool {
		shares := int(n%2000) + 1
		amount := int64(shares) + int64(a%5_000_000) // at least 1 fen a share
		r := rand.New(rand.NewPCG(seed, 1))
		got := drawAll(r, amount, shares)
		var sum int64
		for i, s := range got {
			if s < 1 {
				return false
			}
			remainingBefore := amount - sum
			left := shares - i
			if left > 1 && s > 2*(remainingBefore/int64(left)) && s > 1 {
				return false // above the double average
			}
			sum += s
		}
		return len(got) == shares && sum == amount
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 3000}); err != nil {
		t.Fatal(err)
	}
}

func TestEqualSplit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		amount int64
		shares int
	}{{100, 3}, {1, 1}, {7, 7}, {1000, 7}, {99999, 1000}} {
		var sum int64
		lo, hi := c.amount, int64(0)
		for seq := 1; seq <= c.shares; seq++ {
			s := equalShare(c.amount, c.shares, seq)
			sum += s
			lo, hi = min(lo, s), max(hi, s)
		}
		if sum != c.amount || hi-lo > 1 || lo < 1 {
			t.Errorf("%d in %d: sum %d, shares %d..%d", c.amount, c.shares, sum, lo, hi)
		}
	}
}

func FuzzLuckySplit(f *testing.F) {
	f.Add(uint64(1), int64(100), 10)
	f.Add(uint64(7), int64(10), 10)
	f.Add(uint64(9), int64(20000), 1)
	f.Fuzz(func(t *testing.T, seed uint64, amount int64, shares int) {
		if shares < 1 || shares > 10000 || amount < int64(shares) || amount > 1<<40 {
			return
		}
		got := drawAll(rand.New(rand.NewPCG(seed, 2)), amount, shares)
		var sum int64
		for _, s := range got {
			if s < 1 {
				t.Fatalf("share %d below 1 fen", s)
			}
			sum += s
		}
		if sum != amount || len(got) != shares {
			t.Fatalf("%d shares summing to %d, want %d and %d", len(got), sum, shares, amount)
		}
	})
}
