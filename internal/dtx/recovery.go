package dtx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Start runs the recovery loop until Close: it claims every unfinished
// transaction whose next attempt is due and whose lease has run out, many
// at a time (FOR UPDATE SKIP LOCKED, so several coordinators share the
// work and never drive one transaction together), and drives each on. It
// also purges finished transactions past the retention.
func (c *Coordinator) Start(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel != nil {
		return
	}
	ctx, c.cancel = context.WithCancel(ctx)
	if n, err := c.TakeOver(ctx); err != nil {
		c.slog.Warn("taking over the leases of a previous incarnation failed; they run out on their own", "err", err)
	} else if n > 0 {
		c.slog.Info("took over the transactions of a previous incarnation", "count", n)
	}
	work := make(chan *record, c.o.Workers)
	for range c.o.Workers {
		c.wg.Go(func() {
			for r := range work {
				if _, err := c.drive(ctx, r, true); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, errLeaseLost) {
					c.slog.Warn("recovery attempt failed", "gid", r.gid, "state", r.state, "err", err)
				}
			}
		})
	}
	c.wg.Go(func() {
		defer close(work)
		lastPurge := time.Time{}
		for ctx.Err() == nil {
			c.handOver(ctx)
			batch, err := c.claim(ctx, 2*c.o.Workers)
			if err != nil && ctx.Err() == nil {
				c.slog.Warn("recovery claim failed", "err", err)
			}
			for _, r := range batch {
				select {
				case work <- r:
				case <-ctx.Done():
					return
				}
			}
			if c.o.Now().Sub(lastPurge) > time.Minute {
				if n, err := c.Purge(ctx); err == nil && n > 0 {
					c.slog.Info("purged finished global transactions", "count", n)
				}
				lastPurge = c.o.Now()
			}
			if len(batch) == 2*c.o.Workers {
				continue // a backlog: claim the next batch at once
			}
			select {
			case <-time.After(c.o.Poll):
			case <-ctx.Done():
			}
		}
	})
}

func (c *Coordinator) orphan(gid string) {
	c.orphanMu.Lock()
	c.orphans = append(c.orphans, gid)
	c.orphanMu.Unlock()
}

// handOver ends this coordinator's leases on its orphans.
func (c *Coordinator) handOver(ctx context.Context) {
	c.orphanMu.Lock()
	gids := c.orphans
	c.orphans = nil
	c.orphanMu.Unlock()
	if len(gids) == 0 {
		return
	}
	now := c.o.Now()
	if _, err := c.db.Exec(ctx, `UPDATE dtx_global SET lease_until = $3, next_attempt = least(next_attempt, $3)
		WHERE gid = ANY($1) AND owner = $2 AND finished_at IS NULL`, gids, c.o.ID, now); err != nil {
		c.orphanMu.Lock()
		c.orphans = append(c.orphans, gids...)
		c.orphanMu.Unlock()
	}
}

// TakeOver ends at once the leases held by earlier incarnations of this
// coordinator's Identity (a process of the same node that died), so that
// recovery drives their transactions now. It returns how many it freed.
func (c *Coordinator) TakeOver(ctx context.Context) (int64, error) {
	if c.o.Identity == "" {
		return 0, nil
	}
	tag, err := c.db.Exec(ctx, `UPDATE dtx_global SET lease_until = $3, next_attempt = least(next_attempt, $3)
		WHERE finished_at IS NULL AND starts_with(owner, $1) AND owner <> $2`, c.o.Identity+"#", c.o.ID, c.o.Now())
	if err != nil {
		return 0, fmt.Errorf("dtx: take over leases of %s: %w", c.o.Identity, err)
	}
	return tag.RowsAffected(), nil
}

// Close stops recovery (waiting for drives in flight) and the log writer.
func (c *Coordinator) Close() {
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.early.Wait() // they write the log: before it closes
	c.wg.Wait()
	c.log.close()
}

// claim leases up to n due transactions to this coordinator.
func (c *Coordinator) claim(ctx context.Context, n int) ([]*record, error) {
	now := c.o.Now()
	rows, err := c.db.Query(ctx, `UPDATE dtx_global SET owner = $1, lease_until = $2
		WHERE gid IN (SELECT gid FROM dtx_global WHERE finished_at IS NULL AND next_attempt <= $3 AND lease_until <= $3
		              ORDER BY next_attempt LIMIT $4 FOR UPDATE SKIP LOCKED)
		RETURNING `+leasedCols, c.o.ID, now.Add(c.o.Lease), now, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanLeased)
}

// leasedCols are what a driver needs of a transaction it leased; scanLeased
// reads them into a record.
const leasedCols = `gid, kind, state, branches, try_deadline, attempts, reason`

func scanLeased(row pgx.CollectableRow) (*record, error) {
	var r record
	var branches []byte
	if err := row.Scan(&r.gid, &r.kind, &r.state, &branches, &r.tryDeadline, &r.attempts, &r.reason); err != nil {
		return nil, err
	}
	return &r, json.Unmarshal(branches, &r.branches)
}

// Global is a global transaction as operators see it.
type Global struct {
	GID         string     `json:"gid"`
	Kind        Kind       `json:"kind"`
	State       State      `json:"state"`
	Branches    []Branch   `json:"branches"`
	Reason      string     `json:"reason,omitempty"`
	Attempts    int        `json:"attempts"`
	LastError   string     `json:"last_error,omitempty"`
	NextAttempt time.Time  `json:"next_attempt"`
	Owner       string     `json:"owner"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
}

func (g Global) result() Result {
	return Result{GID: g.GID, Outcome: g.State.Outcome(), State: g.State, Reason: g.Reason}
}

const globalCols = `gid, kind, state, branches, reason, attempts, last_error, next_attempt, owner, created_at, updated_at, finished_at`

func scanGlobal(row pgx.CollectableRow) (Global, error) {
	var g Global
	var branches []byte
	if err := row.Scan(&g.GID, &g.Kind, &g.State, &branches, &g.Reason, &g.Attempts, &g.LastError, &g.NextAttempt,
		&g.Owner, &g.CreatedAt, &g.UpdatedAt, &g.FinishedAt); err != nil {
		return g, err
	}
	return g, json.Unmarshal(branches, &g.Branches)
}

// Get returns one global transaction.
func (c *Coordinator) Get(ctx context.Context, gid string) (Global, error) {
	rows, err := c.db.Query(ctx, `SELECT `+globalCols+` FROM dtx_global WHERE gid = $1`, gid)
	if err != nil {
		return Global{}, err
	}
	g, err := pgx.CollectExactlyOneRow(rows, scanGlobal)
	if errors.Is(err, pgx.ErrNoRows) {
		return Global{}, fmt.Errorf("%w: %s", ErrNotFound, gid)
	}
	return g, err
}

// Filter selects global transactions for List.
type Filter struct {
	State      State     // empty: any
	Kind       Kind      // empty: any
	Unfinished bool      // only those not final
	Before     time.Time // created before (cursor); zero: now
	Limit      int       // default 50, at most 1000
}

// List returns global transactions newest first.
func (c *Coordinator) List(ctx context.Context, f Filter) ([]Global, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Limit = min(f.Limit, 1000)
	if f.Before.IsZero() {
		f.Before = time.Now().Add(time.Hour)
	}
	rows, err := c.db.Query(ctx, `SELECT `+globalCols+` FROM dtx_global
		WHERE ($1 = '' OR state = $1) AND (NOT $2 OR finished_at IS NULL) AND created_at < $3 AND ($5 = '' OR kind = $5)
		ORDER BY created_at DESC LIMIT $4`, string(f.State), f.Unfinished, f.Before, f.Limit, string(f.Kind))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanGlobal)
}

// Unfinished counts the transactions not yet final, and those of them
// created longer than stuck ago: a number above zero there needs a person
// (a confirm or a compensation that keeps failing).
func (c *Coordinator) Unfinished(ctx context.Context, stuck time.Duration) (all, old int64, err error) {
	err = c.db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE created_at < $1) FROM dtx_global WHERE finished_at IS NULL`,
		c.o.Now().Add(-stuck)).Scan(&all, &old)
	if err != nil {
		return 0, 0, fmt.Errorf("dtx: count unfinished: %w", err)
	}
	return all, old, nil
}

// Backlog counts the unfinished transactions recovery may drive now: due,
// and leased by nobody.
func (c *Coordinator) Backlog(ctx context.Context) (int64, error) {
	var n int64
	now := c.o.Now()
	err := c.db.QueryRow(ctx, `SELECT count(*) FROM dtx_global WHERE finished_at IS NULL AND next_attempt <= $1 AND lease_until <= $1`, now).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("dtx: count backlog: %w", err)
	}
	return n, nil
}

// Purge deletes finished transactions older than the retention.
func (c *Coordinator) Purge(ctx context.Context) (int64, error) {
	tag, err := c.db.Exec(ctx, `DELETE FROM dtx_global WHERE finished_at < $1`, c.o.Now().Add(-c.o.Retention))
	if err != nil {
		return 0, fmt.Errorf("dtx: purge: %w", err)
	}
	return tag.RowsAffected(), nil
}

// DB is the coordinator log's pool.
func (c *Coordinator) DB() *pgxpool.Pool { return c.db }
