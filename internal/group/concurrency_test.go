package group_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"hongbao/internal/group"
)

// TestConcurrentJoinsRespectCapacity: 200 joins race for the 49 free seats
// of a group of 50 (the owner holds one). Some users have two workers
// joining at once, and some workers join twice.
func TestConcurrentJoinsRespectCapacity(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	const capacity, workers, users = 50, 200, 150
	const owner = int64(1)
	create(t, s, 1, owner, capacity, 990)

	var (
		mu       sync.Mutex
		joinedBy = map[int64]int{} // user -> calls that answered Joined
		already  = map[int64]bool{}
		full     int
	)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range workers {
		user := int64(1000 + i%users) // users 1000..1049 have two workers
		calls := 1
		if i%10 == 0 {
			calls = 2
		}
		wg.Go(func() {
			<-start
			for range calls {
				r, err := s.Join(t.Context(), group.JoinRequest{GroupID: 1, User: user})
				mu.Lock()
				switch {
				case err == nil && r.Joined:
					joinedBy[user]++
				case err == nil && r.Already:
					already[user] = true
				case errors.Is(err, group.ErrGroupFull):
					full++
				default:
					t.Errorf("join of user %d = %+v, %v", user, r, err)
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()

	for u, n := range joinedBy {
		if n != 1 {
			t.Errorf("user %d joined %d times", u, n)
		}
	}
	if len(joinedBy) != capacity-1 {
		t.Errorf("%d users joined, want %d", len(joinedBy), capacity-1)
	}
	for u := range already {
		if joinedBy[u] == 0 {
			t.Errorf("user %d answered Already but never joined", u)
		}
	}
	if full == 0 {
		t.Errorf("no join found the group full")
	}
	want := append([]int64{owner}, slices.Sorted(maps.Keys(joinedBy))...)
	wantMembers(t, s, 1, want...)
}

// TestConcurrentMembershipChanges runs joins (free and paid), compensations,
// leaves and bans of one small group from many workers at once. Nothing may
// fail but with the definite errors, and afterwards the count must equal the
// members, none of them banned.
func TestConcurrentMembershipChanges(t *testing.T) {
	t.Parallel()
	s, db := newStore(t)
	const capacity, users, workers, opsPer = 10, 40, 32, 50
	create(t, s, 1, 1, capacity, 990)

	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			<-start
			rnd := rand.New(rand.NewPCG(7, uint64(w)))
			for i := range opsPer {
				user := int64(100 + rnd.IntN(users))
				gid := fmt.Sprintf("w%d-%d", w, i)
				var err error
				switch op := rnd.IntN(100); {
				case op < 40:
					_, err = s.Join(t.Context(), group.JoinRequest{GroupID: 1, User: user})
				case op < 65:
					var r group.JoinResult
					r, err = paidJoin(t, s, 1, user, gid)
					if err == nil && r.Joined && rnd.IntN(2) == 0 {
						_, err = compensate(t, s, 1, user, gid)
					}
				case op < 98:
					_, err = s.Leave(t.Context(), group.LeaveRequest{GroupID: 1, User: user})
				default:
					err = s.Ban(t.Context(), 1, user)
				}
				if err != nil && !errors.Is(err, group.ErrGroupFull) && !errors.Is(err, group.ErrBanned) &&
					!errors.Is(err, group.ErrAlreadyMember) {
					t.Errorf("worker %d op %d: %v", w, i, err)
				}
			}
		})
	}
	close(start)
	wg.Wait()

	mustConsistent(t, db)
	g, err := s.Get(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := members(t, s, 1); len(got) != g.MemberCount || g.MemberCount > capacity {
		t.Fatalf("count %d with members %v (capacity %d)", g.MemberCount, got, capacity)
	}
}
