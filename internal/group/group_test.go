package group_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/dtx"
	"hongbao/internal/group"
	"hongbao/internal/hbtest"
	"hongbao/internal/money"
	"hongbao/internal/pgtest"
	"hongbao/internal/postgres"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

var schema = pgtest.Schema{Name: "group", Migrations: group.Migrations()}

// now is the fixed clock of every store in these tests.
var now = time.Date(2026, 2, 16, 23, 59, 0, 0, time.UTC)

func newStore(t *testing.T) (*group.Store, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.NewDB(t, schema)
	t.Cleanup(func() { mustConsistent(t, db) })
	return group.New(db, group.Options{Now: func() time.Time { return now }}), db
}

func create(t *testing.T, s *group.Store, id, owner int64, capacity int, fee money.Amount) group.Group {
	t.Helper()
	g, err := s.Create(t.Context(), group.CreateRequest{ID: id, Owner: owner, Capacity: capacity, Fee: fee})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func join(t *testing.T, s *group.Store, id int64, users ...int64) {
	t.Helper()
	for _, u := range users {
		if _, err := s.Join(t.Context(), group.JoinRequest{GroupID: id, User: u}); err != nil {
			t.Fatal(err)
		}
	}
}

// members returns the user ids of all members of a group.
func members(t *testing.T, s *group.Store, id int64) []int64 {
	t.Helper()
	ms, err := s.Members(t.Context(), id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var users []int64
	for _, m := range ms {
		users = append(users, m.User)
	}
	return users
}

// wantMembers checks the members of a group and its member count.
func wantMembers(t *testing.T, s *group.Store, id int64, users ...int64) {
	t.Helper()
	if got := members(t, s, id); !slices.Equal(got, users) {
		t.Fatalf("members of group %d = %v, want %v", id, got, users)
	}
	g, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if g.MemberCount != len(users) {
		t.Fatalf("group %d member count = %d, want %d", id, g.MemberCount, len(users))
	}
}

// mustConsistent checks every group of the database: the count equals the
// member rows, the owner is a member, and no banned user is a member.
func mustConsistent(t *testing.T, db *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background() // it runs as a cleanup, after t.Context is done
	var bad []int64
	rows, err := db.Query(ctx, `SELECT id FROM groups g
		WHERE member_count <> (SELECT count(*) FROM members m WHERE m.group_id = g.id)
		   OR NOT EXISTS (SELECT 1 FROM members m WHERE m.group_id = g.id AND m.user_id = g.owner)
		   OR EXISTS (SELECT 1 FROM members m JOIN banned b USING (group_id, user_id) WHERE m.group_id = g.id)`)
	if err == nil {
		for rows.Next() {
			var id int64
			if err = rows.Scan(&id); err != nil {
				break
			}
			bad = append(bad, id)
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		t.Fatalf("consistency check: %v", err)
	}
	if len(bad) > 0 {
		t.Fatalf("groups %v: count differs from members, owner missing or banned member", bad)
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	want := group.Group{ID: 7, Owner: 100, Capacity: 50, Fee: 990, MemberCount: 1, CreatedAt: now}

	tests := []struct {
		name string
		req  group.CreateRequest
		err  error
	}{
		{"ok", group.CreateRequest{ID: 7, Owner: 100, Capacity: 50, Fee: 990}, nil},
		{"again with the same values", group.CreateRequest{ID: 7, Owner: 100, Capacity: 50, Fee: 990}, nil},
		{"same id other owner", group.CreateRequest{ID: 7, Owner: 101, Capacity: 50, Fee: 990}, group.ErrConflict},
		{"same id other capacity", group.CreateRequest{ID: 7, Owner: 100, Capacity: 51, Fee: 990}, group.ErrConflict},
		{"same id other fee", group.CreateRequest{ID: 7, Owner: 100, Capacity: 50, Fee: 0}, group.ErrConflict},
		{"no id", group.CreateRequest{Owner: 100, Capacity: 50}, group.ErrInvalid},
		{"negative id", group.CreateRequest{ID: -1, Owner: 100, Capacity: 50}, group.ErrInvalid},
		{"no owner", group.CreateRequest{ID: 8, Capacity: 50}, group.ErrInvalid},
		{"zero capacity", group.CreateRequest{ID: 8, Owner: 100}, group.ErrInvalid},
		{"negative capacity", group.CreateRequest{ID: 8, Owner: 100, Capacity: -3}, group.ErrInvalid},
		{"capacity beyond int4", group.CreateRequest{ID: 8, Owner: 100, Capacity: 1 << 31}, group.ErrInvalid},
		{"negative fee", group.CreateRequest{ID: 8, Owner: 100, Capacity: 5, Fee: -1}, group.ErrInvalid},
	}
	for _, tt := range tests {
		g, err := s.Create(ctx, tt.req)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
			continue
		}
		if err == nil && (g.ID != want.ID || g.Owner != want.Owner || g.Capacity != want.Capacity ||
			g.Fee != want.Fee || g.MemberCount != want.MemberCount || !g.CreatedAt.Equal(want.CreatedAt)) {
			t.Errorf("%s: group = %+v, want %+v", tt.name, g, want)
		}
	}
	wantMembers(t, s, 7, 100)
	if _, err := s.Get(ctx, 8); !errors.Is(err, group.ErrNotFound) {
		t.Fatalf("invalid creates left group 8 behind: %v", err)
	}

	// Free group of one: the owner alone fills it.
	if g := create(t, s, 9, 100, 1, 0); g.MemberCount != 1 || g.Fee != 0 {
		t.Fatalf("group of one = %+v", g)
	}
	// Creating again after members joined still answers with the group.
	join(t, s, 7, 200)
	if g, err := s.Create(ctx, group.CreateRequest{ID: 7, Owner: 100, Capacity: 50, Fee: 990}); err != nil || g.MemberCount != 2 {
		t.Fatalf("create again = %+v, %v", g, err)
	}
}

func TestGet(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	create(t, s, 1, 10, 3, 500)
	join(t, s, 1, 20)

	tests := []struct {
		name string
		id   int64
		want group.Group
		err  error
	}{
		{"existing", 1, group.Group{ID: 1, Owner: 10, Capacity: 3, Fee: 500, MemberCount: 2, CreatedAt: now}, nil},
		{"missing", 2, group.Group{}, group.ErrNotFound},
		{"zero id", 0, group.Group{}, group.ErrNotFound},
	}
	for _, tt := range tests {
		g, err := s.Get(t.Context(), tt.id)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
			continue
		}
		if !g.CreatedAt.Equal(tt.want.CreatedAt) {
			t.Errorf("%s: created at %v, want %v", tt.name, g.CreatedAt, tt.want.CreatedAt)
		}
		g.CreatedAt = tt.want.CreatedAt
		if g != tt.want {
			t.Errorf("%s: group = %+v, want %+v", tt.name, g, tt.want)
		}
	}
}

func TestJoin(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	create(t, s, 1, 1, 3, 0) // owner 1 and two free seats
	create(t, s, 2, 2, 1, 0) // full from the start
	if err := s.Ban(t.Context(), 1, 9); err != nil {
		t.Fatal(err)
	}

	type res = group.JoinResult
	tests := []struct {
		name string
		req  group.JoinRequest
		want res
		err  error
	}{
		{"join", group.JoinRequest{GroupID: 1, User: 10}, res{Joined: true}, nil},
		{"join again", group.JoinRequest{GroupID: 1, User: 10}, res{Already: true}, nil},
		{"owner", group.JoinRequest{GroupID: 1, User: 1}, res{Already: true}, nil},
		{"banned", group.JoinRequest{GroupID: 1, User: 9}, res{}, group.ErrBanned},
		{"last seat", group.JoinRequest{GroupID: 1, User: 11}, res{Joined: true}, nil},
		{"full", group.JoinRequest{GroupID: 1, User: 12}, res{}, group.ErrGroupFull},
		{"member of a full group", group.JoinRequest{GroupID: 1, User: 10}, res{Already: true}, nil},
		{"banned from a full group", group.JoinRequest{GroupID: 1, User: 9}, res{}, group.ErrBanned},
		{"full from the start", group.JoinRequest{GroupID: 2, User: 10}, res{}, group.ErrGroupFull},
		{"no such group", group.JoinRequest{GroupID: 99, User: 10}, res{}, group.ErrNotFound},
		{"zero group", group.JoinRequest{GroupID: 0, User: 10}, res{}, group.ErrInvalid},
		{"zero user", group.JoinRequest{GroupID: 1, User: 0}, res{}, group.ErrInvalid},
		{"negative user", group.JoinRequest{GroupID: 1, User: -4}, res{}, group.ErrInvalid},
		{"branch without gid", group.JoinRequest{GroupID: 1, User: 13, Branch: &dtx.BranchRef{Branch: "b"}}, res{}, group.ErrInvalid},
	}
	for _, tt := range tests {
		got, err := s.Join(t.Context(), tt.req)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
		if got != tt.want {
			t.Errorf("%s: result = %+v, want %+v", tt.name, got, tt.want)
		}
	}
	wantMembers(t, s, 1, 1, 10, 11)
	wantMembers(t, s, 2, 2)
}

func TestLeave(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	create(t, s, 1, 1, 4, 0)
	join(t, s, 1, 10, 11)

	tests := []struct {
		name string
		req  group.LeaveRequest
		left bool
		err  error
	}{
		{"member leaves", group.LeaveRequest{GroupID: 1, User: 10}, true, nil},
		{"leave again", group.LeaveRequest{GroupID: 1, User: 10}, false, nil},
		{"never joined", group.LeaveRequest{GroupID: 1, User: 50}, false, nil},
		{"owner", group.LeaveRequest{GroupID: 1, User: 1}, false, group.ErrInvalid},
		{"no such group", group.LeaveRequest{GroupID: 99, User: 10}, false, group.ErrNotFound},
		{"zero group", group.LeaveRequest{GroupID: 0, User: 10}, false, group.ErrInvalid},
		{"zero user", group.LeaveRequest{GroupID: 1, User: 0}, false, group.ErrInvalid},
		{"branch without id", group.LeaveRequest{GroupID: 1, User: 11, Branch: &dtx.BranchRef{GID: "g"}}, false, group.ErrInvalid},
	}
	for _, tt := range tests {
		got, err := s.Leave(t.Context(), tt.req)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
		if got.Left != tt.left {
			t.Errorf("%s: left = %v, want %v", tt.name, got.Left, tt.left)
		}
	}
	wantMembers(t, s, 1, 1, 11)

	// The seat is free again, and the leaver may come back.
	join(t, s, 1, 12, 10)
	wantMembers(t, s, 1, 1, 10, 11, 12)
}

func TestBan(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	create(t, s, 1, 1, 3, 0)
	join(t, s, 1, 10, 11) // full

	tests := []struct {
		name  string
		group int64
		user  int64
		err   error
	}{
		{"member", 1, 10, nil},
		{"again", 1, 10, nil},
		{"not a member", 1, 20, nil},
		{"owner", 1, 1, group.ErrInvalid},
		{"no such group", 99, 10, group.ErrNotFound},
		{"zero user", 1, 0, group.ErrInvalid},
		{"zero group", 0, 10, group.ErrInvalid},
	}
	for _, tt := range tests {
		if err := s.Ban(t.Context(), tt.group, tt.user); !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
	}
	wantMembers(t, s, 1, 1, 11)

	for _, u := range []int64{10, 20} {
		if _, err := s.Join(t.Context(), group.JoinRequest{GroupID: 1, User: u}); !errors.Is(err, group.ErrBanned) {
			t.Errorf("join of banned user %d: err = %v, want ErrBanned", u, err)
		}
	}
	if r, err := s.Leave(t.Context(), group.LeaveRequest{GroupID: 1, User: 10}); err != nil || r.Left {
		t.Errorf("leave of banned user = %+v, %v; want a no-op", r, err)
	}
	// The ban freed a seat for someone else.
	join(t, s, 1, 12)
	wantMembers(t, s, 1, 1, 11, 12)
}

func TestMembers(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	create(t, s, 1, 5, 10, 0)
	join(t, s, 1, 8, 2, 7, 1, 4, 3, 6)
	create(t, s, 2, 5, 10, 0)

	var pages [][]int64
	after := int64(0)
	for {
		ms, err := s.Members(t.Context(), 1, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		var page []int64
		for _, m := range ms {
			if m.GroupID != 1 || !m.JoinedAt.Equal(now) {
				t.Fatalf("member = %+v", m)
			}
			page = append(page, m.User)
		}
		pages = append(pages, page)
		after = ms[len(ms)-1].User
	}
	want := [][]int64{{1, 2, 3}, {4, 5, 6}, {7, 8}}
	if !slices.EqualFunc(pages, want, slices.Equal) {
		t.Fatalf("pages = %v, want %v", pages, want)
	}

	tests := []struct {
		name  string
		group int64
		after int64
		limit int
		want  []int64
		err   error
	}{
		{"first", 1, 0, 2, []int64{1, 2}, nil},
		{"after a member who left", 1, 4, 2, []int64{5, 6}, nil},
		{"after the last", 1, 8, 10, nil, nil},
		{"only the owner", 2, 0, 10, []int64{5}, nil},
		{"zero limit", 1, 0, 0, nil, group.ErrInvalid},
		{"limit too big", 1, 0, 1001, nil, group.ErrInvalid},
		{"no such group", 99, 0, 10, nil, group.ErrNotFound},
	}
	if _, err := s.Leave(t.Context(), group.LeaveRequest{GroupID: 1, User: 4}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		ms, err := s.Members(t.Context(), tt.group, tt.after, tt.limit)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
		var got []int64
		for _, m := range ms {
			got = append(got, m.User)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: members = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestIsMember(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	create(t, s, 1, 1, 5, 0)
	join(t, s, 1, 10, 11, 12)
	if _, err := s.Leave(t.Context(), group.LeaveRequest{GroupID: 1, User: 11}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ban(t.Context(), 1, 12); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		group int64
		user  int64
		want  bool
		err   error
	}{
		{"owner", 1, 1, true, nil},
		{"member", 1, 10, true, nil},
		{"left", 1, 11, false, nil},
		{"banned", 1, 12, false, nil},
		{"stranger", 1, 13, false, nil},
		{"no such group", 99, 10, false, group.ErrNotFound},
	}
	for _, tt := range tests {
		got, err := s.IsMember(t.Context(), tt.group, tt.user)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("%s: = %v, %v; want %v, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

// TestSchemaRules proves the schema refuses what the code must never do.
func TestSchemaRules(t *testing.T) {
	t.Parallel()
	s, db := newStore(t)
	create(t, s, 1, 1, 2, 0)
	ctx := t.Context()

	tests := []struct {
		name string
		sql  string
		ok   func(error) bool
	}{
		{"count above capacity", `UPDATE groups SET member_count = capacity + 1 WHERE id = 1`,
			func(err error) bool { return postgres.IsCheckViolation(err, "") }},
		{"negative count", `UPDATE groups SET member_count = -1 WHERE id = 1`,
			func(err error) bool { return postgres.IsCheckViolation(err, "") }},
		{"negative fee", `INSERT INTO groups (id, owner, capacity, fee, member_count) VALUES (2, 1, 5, -1, 1)`,
			func(err error) bool { return postgres.IsCheckViolation(err, "") }},
		{"zero capacity", `INSERT INTO groups (id, owner, capacity, fee, member_count) VALUES (2, 1, 0, 0, 0)`,
			func(err error) bool { return postgres.IsCheckViolation(err, "") }},
		{"no owner", `INSERT INTO groups (id, owner, capacity, fee, member_count) VALUES (2, 0, 5, 0, 1)`,
			func(err error) bool { return postgres.IsCheckViolation(err, "") }},
		{"member twice", `INSERT INTO members (group_id, user_id) VALUES (1, 1)`,
			func(err error) bool { return postgres.IsUniqueViolation(err, "") }},
		{"member of no group", `INSERT INTO members (group_id, user_id) VALUES (99, 5)`,
			func(err error) bool { return err != nil }},
	}
	for _, tt := range tests {
		if _, err := db.Exec(ctx, tt.sql); !tt.ok(err) {
			t.Errorf("%s: err = %v, want the schema to refuse it", tt.name, err)
		}
	}
	wantMembers(t, s, 1, 1)
}
