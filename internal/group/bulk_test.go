package group_test

import (
	"errors"
	"testing"

	"hongbao/internal/group"
	"hongbao/internal/pgtest"
)

func TestAddMembers(t *testing.T) {
	t.Parallel()
	s := group.New(pgtest.NewDB(t, schema), group.Options{})
	ctx := t.Context()
	if _, err := s.Create(ctx, group.CreateRequest{ID: 1, Owner: 1, Capacity: 6}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ban(ctx, 1, 9); err != nil {
		t.Fatal(err)
	}
	n, err := s.AddMembers(ctx, 1, []int64{2, 3, 4, 9, 1})
	if err != nil || n != 3 {
		t.Fatalf("added %d, %v; want 3 (owner present, 9 banned)", n, err)
	}
	if n, err := s.AddMembers(ctx, 1, []int64{2, 3}); err != nil || n != 0 {
		t.Fatalf("re-add = %d, %v", n, err)
	}
	if _, err := s.AddMembers(ctx, 1, []int64{5, 6, 7}); !errors.Is(err, group.ErrGroupFull) {
		t.Fatalf("overflow err = %v", err)
	}
	if in, _ := s.IsMember(ctx, 1, 5); in {
		t.Fatal("a failed bulk add left a member behind")
	}
	if _, err := s.AddMembers(ctx, 1, []int64{0}); !errors.Is(err, group.ErrInvalid) {
		t.Fatalf("bad id err = %v", err)
	}
	if _, err := s.AddMembers(ctx, 99, []int64{5}); !errors.Is(err, group.ErrNotFound) {
		t.Fatalf("missing group err = %v", err)
	}
	g, _ := s.Get(ctx, 1)
	if g.MemberCount != 4 {
		t.Fatalf("member count %d, want 4", g.MemberCount)
	}
}
