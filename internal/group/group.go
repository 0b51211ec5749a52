// Package group is the group shard: groups with an owner, a capacity and an
// entry fee, and their members. Capacity is enforced by one conditional
// UPDATE of the group row, which also serializes every change to the
// group's membership; the paid entry is a saga action guarded by the
// participant barrier.
package group

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/dtx"
	"hongbao/internal/events"
	"hongbao/internal/money"
	"hongbao/internal/postgres"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// Migrations are the schema of a group shard database.
func Migrations() [][]postgres.Migration {
	return [][]postgres.Migration{dtx.BarrierMigrations(), postgres.Embedded("group", sqlFS, "sql"), events.OutboxMigrations()}
}

// Errors a caller branches on.
var (
	// ErrNotFound: no group with that id.
	ErrNotFound = errors.New("group not found")
	// ErrGroupFull: the group has as many members as its capacity.
	ErrGroupFull = errors.New("group is full")
	// ErrBanned: the user is banned from the group and cannot join.
	ErrBanned = errors.New("user is banned from the group")
	// ErrAlreadyMember: a paid join (with a saga branch) for a user who is
	// already a member. It is a definite failure, so the saga refunds the
	// fee: nobody pays twice for the same group.
	ErrAlreadyMember = errors.New("user is already a member of the group")
	// ErrConflict: the group id is taken by a group with other settings.
	ErrConflict = errors.New("group id already used with different settings")
	// ErrInvalid: the request is malformed or not allowed (the owner
	// leaving or being banned); the message says which.
	ErrInvalid = errors.New("invalid request")
)

// maxPage is the most members one Members call returns.
const maxPage = 1000

// Group is a group and its current number of members (the owner included).
type Group struct {
	ID          int64        `json:"id"`
	Owner       int64        `json:"owner"`
	Capacity    int          `json:"capacity"`
	Fee         money.Amount `json:"fee"`
	MemberCount int          `json:"member_count"`
	CreatedAt   time.Time    `json:"created_at"`
}

// Member is one member of a group.
type Member struct {
	GroupID  int64     `json:"group_id"`
	User     int64     `json:"user"`
	JoinedAt time.Time `json:"joined_at"`
}

// Options configure a Store; both fields are optional.
type Options struct {
	Now    func() time.Time
	Logger *slog.Logger
}

// Store is one group shard.
type Store struct {
	db  *pgxpool.Pool
	now func() time.Time
	log *slog.Logger
}

// New returns a Store on a migrated group shard database.
func New(db *pgxpool.Pool, opts Options) *Store {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{db: db, now: opts.Now, log: opts.Logger}
}

// CreateRequest describes a new group. ID is chosen by the caller (a
// snowflake id), which makes Create idempotent.
type CreateRequest struct {
	ID       int64
	Owner    int64
	Capacity int
	Fee      money.Amount
}

func (r CreateRequest) validate() error {
	switch {
	case r.ID <= 0:
		return fmt.Errorf("%w: group id %d must be positive", ErrInvalid, r.ID)
	case r.Owner <= 0:
		return fmt.Errorf("%w: owner id %d must be positive", ErrInvalid, r.Owner)
	case r.Capacity < 1 || r.Capacity > math.MaxInt32:
		return fmt.Errorf("%w: capacity %d out of range 1..%d", ErrInvalid, r.Capacity, math.MaxInt32)
	case r.Fee < 0:
		return fmt.Errorf("%w: fee %s must not be negative", ErrInvalid, r.Fee)
	}
	return nil
}

// Create creates a group whose first member is its owner. Creating the same
// id again with the same owner, capacity and fee returns the existing group;
// with other values it is ErrConflict.
func (s *Store) Create(ctx context.Context, req CreateRequest) (Group, error) {
	if err := req.validate(); err != nil {
		return Group{}, fmt.Errorf("create group %d: %w", req.ID, err)
	}
	var g Group
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		now := s.now()
		// A concurrent create of the same id waits here for the first to
		// commit, then finds its row.
		tag, err := tx.Exec(ctx, `INSERT INTO groups (id, owner, capacity, fee, member_count, created_at)
			VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (id) DO NOTHING`,
			req.ID, req.Owner, req.Capacity, int64(req.Fee), now)
		if err != nil {
			return fmt.Errorf("insert group: %w", err)
		}
		if tag.RowsAffected() == 1 {
			if _, err := tx.Exec(ctx, `INSERT INTO members (group_id, user_id, joined_at) VALUES ($1, $2, $3)`,
				req.ID, req.Owner, now); err != nil {
				return fmt.Errorf("add owner: %w", err)
			}
		}
		g, err = getGroup(ctx, tx, req.ID)
		if err != nil {
			return err
		}
		if g.Owner != req.Owner || g.Capacity != req.Capacity || g.Fee != req.Fee {
			return fmt.Errorf("%w: existing owner %d capacity %d fee %s", ErrConflict, g.Owner, g.Capacity, g.Fee)
		}
		return nil
	})
	if err != nil {
		return Group{}, fmt.Errorf("create group %d: %w", req.ID, err)
	}
	return g, nil
}

// Get returns a group.
func (s *Store) Get(ctx context.Context, id int64) (Group, error) {
	var g Group
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		g, err = getGroup(ctx, tx, id)
		return err
	})
	if err != nil {
		return Group{}, fmt.Errorf("get group %d: %w", id, err)
	}
	return g, nil
}

func getGroup(ctx context.Context, tx pgx.Tx, id int64) (Group, error) {
	g := Group{ID: id}
	err := tx.QueryRow(ctx, `SELECT owner, capacity, fee, member_count, created_at FROM groups WHERE id = $1`, id).
		Scan(&g.Owner, &g.Capacity, &g.Fee, &g.MemberCount, &g.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Group{}, ErrNotFound
	}
	if err != nil {
		return Group{}, fmt.Errorf("read group: %w", err)
	}
	return g, nil
}

// Members lists up to limit (1..1000) members of a group ordered by user
// id, starting after the user afterUser (0 for the first page; pass the last
// user of a page for the next one).
func (s *Store) Members(ctx context.Context, id int64, afterUser int64, limit int) ([]Member, error) {
	if limit < 1 || limit > maxPage {
		return nil, fmt.Errorf("members of group %d: %w: limit %d out of 1..%d", id, ErrInvalid, limit, maxPage)
	}
	var out []Member
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := getGroup(ctx, tx, id); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT group_id, user_id, joined_at FROM members
			WHERE group_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3`, id, afterUser, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Member, error) {
			var m Member
			err := row.Scan(&m.GroupID, &m.User, &m.JoinedAt)
			return m, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("members of group %d: %w", id, err)
	}
	return out, nil
}

// IsMember reports whether user is a member of the group.
func (s *Store) IsMember(ctx context.Context, id, user int64) (bool, error) {
	var st status
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		st, err = userStatus(ctx, tx, id, user)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("is user %d a member of group %d: %w", user, id, err)
	}
	if !st.exists {
		return false, fmt.Errorf("is user %d a member of group %d: %w", user, id, ErrNotFound)
	}
	return st.member, nil
}

// status is where a user stands with a group.
type status struct {
	exists bool // the group exists
	owner  int64
	member bool
	banned bool
}

func userStatus(ctx context.Context, tx pgx.Tx, id, user int64) (status, error) {
	var st status
	err := tx.QueryRow(ctx, `SELECT owner,
			EXISTS (SELECT 1 FROM members WHERE group_id = $1 AND user_id = $2),
			EXISTS (SELECT 1 FROM banned WHERE group_id = $1 AND user_id = $2)
		FROM groups WHERE id = $1`, id, user).Scan(&st.owner, &st.member, &st.banned)
	if errors.Is(err, pgx.ErrNoRows) {
		return status{}, nil
	}
	if err != nil {
		return status{}, fmt.Errorf("read membership: %w", err)
	}
	st.exists = true
	return st, nil
}

// inTx runs fn in a transaction of the shard.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return postgres.InTx(ctx, s.db, fn)
}

// DB is the group shard's pool.
func (s *Store) DB() *pgxpool.Pool { return s.db }
