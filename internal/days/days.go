// Package days keeps tables partitioned by day (UTC): the partitions are
// created ahead, and a day that is over can be archived: its partition is
// detached into the schema "archive", out of every query, and recorded so
// that a question about that day gets a clear answer instead of an empty
// one.
package days

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"hongbao/internal/postgres"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// Migrations are the bookkeeping of day partitions, in every database that
// has such tables (before the migrations that partition them).
func Migrations() []postgres.Migration { return postgres.Embedded("days", sqlFS, "sql") }

// ErrArchived: what was asked for lies in a day that was archived.
var ErrArchived = errors.New("archived")

// Ahead is how many days past today the partitions are created.
const Ahead = 7

// Querier is what the functions here need: a pool, a connection or a
// transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Of returns the UTC day of t (its midnight).
func Of(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Name is the partition of parent for day.
func Name(parent string, day time.Time) string { return parent + "_" + day.Format("20060102") }

// Ensure creates the partitions of each parent for every day from..to
// (inclusive). An archived day is left alone.
func Ensure(ctx context.Context, q Querier, from, to time.Time, parents ...string) error {
	for d := Of(from); !d.After(Of(to)); d = d.AddDate(0, 0, 1) {
		for _, p := range parents {
			if _, err := q.Exec(ctx, `SELECT hb_ensure_day($1, $2::date)`, p, d); err != nil {
				return fmt.Errorf("partition %s: %w", Name(p, d), err)
			}
		}
	}
	return nil
}

// Keeper makes sure a day's partitions exist before a row needs them. The
// ones around today are made at start and then every hour (Keep); a row of
// another day (a test's clock, a packet sent just before midnight) asks
// Need, which remembers the days it has seen.
type Keeper struct {
	db      Querier
	parents []string
	now     func() time.Time
	mu      sync.Mutex
	known   map[time.Time]bool
}

// NewKeeper returns a keeper of parents in db; now may be nil (time.Now).
func NewKeeper(db Querier, now func() time.Time, parents ...string) *Keeper {
	if now == nil {
		now = time.Now
	}
	return &Keeper{db: db, parents: parents, now: now, known: map[time.Time]bool{}}
}

// Need makes sure the partitions of t's day exist.
func (k *Keeper) Need(ctx context.Context, t time.Time) error {
	d := Of(t)
	k.mu.Lock()
	ok := k.known[d]
	k.mu.Unlock()
	if ok {
		return nil
	}
	if err := Ensure(ctx, k.db, d, d, k.parents...); err != nil {
		return err
	}
	k.mu.Lock()
	k.known[d] = true
	k.mu.Unlock()
	return nil
}

// Ahead makes yesterday's, today's and the next Ahead days' partitions.
func (k *Keeper) Ahead(ctx context.Context) error {
	now := k.now()
	if err := Ensure(ctx, k.db, now.AddDate(0, 0, -1), now.AddDate(0, 0, Ahead), k.parents...); err != nil {
		return err
	}
	k.mu.Lock()
	for d := Of(now.AddDate(0, 0, -1)); !d.After(Of(now.AddDate(0, 0, Ahead))); d = d.AddDate(0, 0, 1) {
		k.known[d] = true
	}
	k.mu.Unlock()
	return nil
}

// Keep runs Ahead every interval until ctx ends.
func (k *Keeper) Keep(ctx context.Context, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := k.Ahead(ctx); err != nil && ctx.Err() == nil {
			log.Error("partitions ahead", "tables", k.parents, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Partition is one day's partition of a table.
type Partition struct {
	Parent     string     `json:"table"`
	Day        string     `json:"day"`
	State      string     `json:"state"`
	Rows       *int64     `json:"rows,omitempty"`
	ArchivedAt *time.Time `json:"archived_at,omitempty"`
}

// List returns the partitions of parent, oldest first.
func List(ctx context.Context, q Querier, parent string) ([]Partition, error) {
	rows, err := q.Query(ctx, `SELECT parent, to_char(day, 'YYYY-MM-DD'), state, rows, archived_at FROM day_partitions
		WHERE parent = $1 ORDER BY day`, parent)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Partition, error) {
		var p Partition
		err := r.Scan(&p.Parent, &p.Day, &p.State, &p.Rows, &p.ArchivedAt)
		return p, err
	})
}

// Attached returns the days of parent still attached before day before.
func Attached(ctx context.Context, q Querier, parent string, before time.Time) ([]time.Time, error) {
	rows, err := q.Query(ctx, `SELECT day::timestamp AT TIME ZONE 'UTC' FROM day_partitions
		WHERE parent = $1 AND state = 'attached' AND day < $2::date ORDER BY day`, parent, Of(before))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[time.Time])
}

// ArchivedThrough returns the first day of parent that is not archived
// when some are (every day before it is), or the zero time.
func ArchivedThrough(ctx context.Context, q Querier, parent string) (time.Time, error) {
	var d *time.Time
	err := q.QueryRow(ctx, `SELECT (max(day) + 1)::timestamp AT TIME ZONE 'UTC' FROM day_partitions
		WHERE parent = $1 AND state = 'archived'`, parent).Scan(&d)
	if err != nil || d == nil {
		return time.Time{}, err
	}
	return d.UTC(), nil
}

// LockWait is how long an archive's lock request waits before the attempt
// is given up and made again (postgres.InTxLockWait): a request that waits
// holds up every statement queued behind it on the same table.
const LockWait = 2 * time.Second

// Lock takes the partitions of day of the given parents in tx so that no
// row is written to them until tx ends (they are read and then detached).
// Only for a table whose writers never touch a day that is over (the
// journal: a posting is always written today): a writer that may (an
// update without the day) takes the parent first and then every
// partition, so it must be held off with LockTables instead.
func Lock(ctx context.Context, tx pgx.Tx, day time.Time, parents ...string) error {
	for _, p := range parents {
		if _, err := tx.Exec(ctx, `LOCK TABLE `+pgx.Identifier{Name(p, day)}.Sanitize()+` IN SHARE MODE`); err != nil {
			return err
		}
	}
	return nil
}

// LockTables takes the partitioned tables themselves (not their
// partitions) in tx in ACCESS EXCLUSIVE mode, the lock their DETACH takes
// anyway, in the order given, which must be the order the writers take
// them: taken before any partition, they never close a cycle with a
// writer that holds a table and waits for one of its partitions. Nothing
// reads or writes the tables until tx ends, so what is done under them
// must be short.
func LockTables(ctx context.Context, tx pgx.Tx, parents ...string) error {
	for _, p := range parents {
		if _, err := tx.Exec(ctx, `LOCK TABLE ONLY `+pgx.Identifier{p}.Sanitize()+` IN ACCESS EXCLUSIVE MODE`); err != nil {
			return err
		}
	}
	return nil
}

// Detach moves the partition of parent for day out of parent into the
// schema archive and records it archived with its row count, in tx.
func Detach(ctx context.Context, tx pgx.Tx, parent string, day time.Time) (int64, error) {
	name := pgx.Identifier{Name(parent, day)}.Sanitize()
	var n int64
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+name).Scan(&n); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `ALTER TABLE `+pgx.Identifier{parent}.Sanitize()+` DETACH PARTITION `+name); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `ALTER TABLE `+name+` SET SCHEMA archive`); err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, `UPDATE day_partitions SET state = 'archived', rows = $3, archived_at = now()
		WHERE parent = $1 AND day = $2::date AND state = 'attached'`, parent, day, n)
	if err != nil {
		return 0, err
	}
	if tag.RowsAffected() != 1 {
		return 0, fmt.Errorf("partition %s is not attached", Name(parent, day))
	}
	return n, nil
}
