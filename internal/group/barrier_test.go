package group_test

import (
	"errors"
	"sync"
	"testing"

	"hongbao/internal/dtx"
	"hongbao/internal/group"
)

func branch(gid string) *dtx.BranchRef { return &dtx.BranchRef{GID: gid, Branch: "join"} }

func paidJoin(t *testing.T, s *group.Store, id, user int64, gid string) (group.JoinResult, error) {
	return s.Join(t.Context(), group.JoinRequest{GroupID: id, User: user, Branch: branch(gid)})
}

func compensate(t *testing.T, s *group.Store, id, user int64, gid string) (group.LeaveResult, error) {
	return s.Leave(t.Context(), group.LeaveRequest{GroupID: id, User: user, Branch: branch(gid)})
}

func TestPaidJoinRepeatedIsOneJoin(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	create(t, s, 1, 1, 10, 990)

	for i := range 2 {
		if r, err := paidJoin(t, s, 1, 10, "saga-1"); err != nil || r != (group.JoinResult{Joined: true}) {
			t.Fatalf("paid join #%d = %+v, %v", i+1, r, err)
		}
	}
	wantMembers(t, s, 1, 1, 10)

	// The first attempt and its duplicates at once: one join, all succeed.
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			<-start
			if r, err := paidJoin(t, s, 1, 11, "saga-2"); err != nil || !r.Joined {
				t.Errorf("concurrent paid join = %+v, %v", r, err)
			}
		})
	}
	close(start)
	wg.Wait()
	wantMembers(t, s, 1, 1, 10, 11)

	// Its compensation removes the member once; a repeat changes nothing,
	// and neither does a late duplicate of the join (the barrier answers it
	// as a repeat of the try that already ran).
	if r, err := compensate(t, s, 1, 10, "saga-1"); err != nil || !r.Left {
		t.Fatalf("compensation = %+v, %v", r, err)
	}
	if r, err := compensate(t, s, 1, 10, "saga-1"); err != nil || r.Left {
		t.Fatalf("repeated compensation = %+v, %v", r, err)
	}
	if _, err := paidJoin(t, s, 1, 10, "saga-1"); err != nil {
		t.Fatalf("late duplicate of a compensated join: %v", err)
	}
	wantMembers(t, s, 1, 1, 11)
}

func TestCompensationBeforeJoin(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	create(t, s, 1, 1, 10, 990)
	join(t, s, 1, 10)

	// The compensation arrives first (the join call was lost or is late):
	// it succeeds and changes nothing, and the late join is refused.
	if r, err := compensate(t, s, 1, 20, "saga-1"); err != nil || r.Left {
		t.Fatalf("empty compensation = %+v, %v", r, err)
	}
	if _, err := paidJoin(t, s, 1, 20, "saga-1"); !errors.Is(err, dtx.ErrTryAfterCancel) {
		t.Fatalf("late join: err = %v, want ErrTryAfterCancel", err)
	}
	// Even for a member, an empty compensation removes nobody.
	if r, err := compensate(t, s, 1, 10, "saga-2"); err != nil || r.Left {
		t.Fatalf("empty compensation for a member = %+v, %v", r, err)
	}
	wantMembers(t, s, 1, 1, 10)
}

func TestPaidJoinOfMemberIsRefused(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	create(t, s, 1, 1, 10, 990)
	join(t, s, 1, 10)
	if _, err := paidJoin(t, s, 1, 11, "saga-paid"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		user int64
		gid  string
	}{
		{"free member", 10, "saga-1"},
		{"owner", 1, "saga-2"},
		{"paid member paying again", 11, "saga-3"},
	}
	for _, tt := range tests {
		if r, err := paidJoin(t, s, 1, tt.user, tt.gid); !errors.Is(err, group.ErrAlreadyMember) || r != (group.JoinResult{}) {
			t.Errorf("%s: = %+v, %v; want ErrAlreadyMember", tt.name, r, err)
		}
		// The refused join recorded nothing, so its compensation (the
		// saga refunding the fee) is empty and the member stays.
		if r, err := compensate(t, s, 1, tt.user, tt.gid); err != nil || r.Left {
			t.Errorf("%s: compensation = %+v, %v; want an empty one", tt.name, r, err)
		}
	}
	wantMembers(t, s, 1, 1, 10, 11)
}

func TestPaidJoinDefiniteFailures(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	create(t, s, 1, 1, 2, 990)
	join(t, s, 1, 10) // full
	create(t, s, 2, 1, 5, 990)
	if err := s.Ban(t.Context(), 2, 20); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		group int64
		user  int64
		gid   string
		err   error
	}{
		{"full", 1, 30, "saga-1", group.ErrGroupFull},
		{"banned", 2, 20, "saga-2", group.ErrBanned},
		{"no such group", 99, 30, "saga-3", group.ErrNotFound},
	}
	for _, tt := range tests {
		if _, err := paidJoin(t, s, tt.group, tt.user, tt.gid); !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
		if r, err := compensate(t, s, tt.group, tt.user, tt.gid); err != nil || r.Left {
			t.Errorf("%s: compensation = %+v, %v; want an empty one", tt.name, r, err)
		}
		if _, err := paidJoin(t, s, tt.group, tt.user, tt.gid); !errors.Is(err, dtx.ErrTryAfterCancel) {
			t.Errorf("%s: join after compensation: err = %v, want ErrTryAfterCancel", tt.name, err)
		}
	}
	wantMembers(t, s, 1, 1, 10)
	wantMembers(t, s, 2, 1)
}
