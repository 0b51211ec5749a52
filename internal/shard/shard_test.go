package shard

import "testing"

func TestTableSpreadsAndMoves(t *testing.T) {
	t.Parallel()
	tab, err := NewTable(4)
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]int, 4)
	for u := int64(1); u <= 40000; u++ {
		s := tab.Of(u)
		if s < 0 || s >= 4 {
			t.Fatalf("user %d on shard %d", u, s)
		}
		if tab.Of(u) != s {
			t.Fatal("routing not stable")
		}
		counts[s]++
	}
	for s, c := range counts {
		if c < 9000 || c > 11000 {
			t.Errorf("shard %d got %d of 40000 users: uneven", s, c)
		}
	}
	u := int64(12345)
	slot := SlotOf(u)
	to := (tab.Of(u) + 1) % 4
	if err := tab.Move(slot, to); err != nil {
		t.Fatal(err)
	}
	if tab.Of(u) != to {
		t.Fatalf("after Move user on %d, want %d", tab.Of(u), to)
	}
	for _, bad := range [][2]int{{-1, 0}, {Slots, 0}, {0, 4}, {0, -1}} {
		if err := tab.Move(bad[0], bad[1]); err == nil {
			t.Errorf("Move(%d,%d) accepted", bad[0], bad[1])
		}
	}
	for _, n := range []int{0, Slots + 1} {
		if _, err := NewTable(n); err == nil {
			t.Errorf("NewTable(%d) accepted", n)
		}
	}
}
