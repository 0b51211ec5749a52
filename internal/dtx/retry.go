package dtx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrFinished: the transaction is committed or cancelled already; there is
// nothing to retry.
var ErrFinished = errors.New("dtx: global transaction already finished")

// Retry is an operator's "retry now": it drives an unfinished transaction
// at once, the way recovery does (it takes the transaction's lease first,
// so it never drives one that another driver holds). A transaction whose
// lease someone holds right now is made due at once instead: recovery
// takes it as soon as that lease ends. It returns the transaction as it is
// afterwards; retrying twice is harmless.
func (c *Coordinator) Retry(ctx context.Context, gid string) (Global, error) {
	now := c.o.Now()
	rows, err := c.db.Query(ctx, `UPDATE dtx_global SET owner = $1, lease_until = $2
		WHERE gid = $3 AND finished_at IS NULL AND lease_until <= $4
		RETURNING `+leasedCols, c.o.ID, now.Add(c.o.Lease), gid, now)
	if err != nil {
		return Global{}, fmt.Errorf("dtx: retry %s: %w", gid, err)
	}
	recs, err := pgx.CollectRows(rows, scanLeased)
	if err != nil {
		return Global{}, fmt.Errorf("dtx: retry %s: %w", gid, err)
	}
	if len(recs) == 0 {
		g, err := c.Get(ctx, gid)
		if err != nil {
			return Global{}, err
		}
		if g.State.Final() {
			return g, fmt.Errorf("%w: %s is %s", ErrFinished, gid, g.State)
		}
		// Leased by a driver at work: due as soon as its lease ends.
		if _, err := c.db.Exec(ctx, `UPDATE dtx_global SET next_attempt = least(next_attempt, $2) WHERE gid = $1 AND finished_at IS NULL`, gid, now); err != nil {
			return Global{}, fmt.Errorf("dtx: retry %s: %w", gid, err)
		}
		return c.Get(ctx, gid)
	}
	c.slog.Info("operator retries global transaction now", "gid", gid, "state", recs[0].state)
	// The drive outlives the request: once the lease is taken it runs on,
	// as a recovery worker's would.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.o.TryTimeout+c.o.CallTimeout*2)
	defer cancel()
	if _, err := c.drive(dctx, recs[0], true); err != nil && !errors.Is(err, errLeaseLost) {
		c.slog.Warn("operator retry failed", "gid", gid, "err", err)
	}
	return c.Get(ctx, gid)
}

// Counts are the coordinator's figures for the operators' overview.
type Counts struct {
	// Pending: not yet committed or cancelled.
	Pending int64 `json:"pending"`
	// InRecovery: pending and retried at least once (a participant failed
	// or did not answer): recovery is driving them.
	InRecovery int64 `json:"in_recovery"`
	// Stuck: pending for longer than the stuck age asked for.
	Stuck int64 `json:"stuck"`
}

// Count reads the figures of the overview.
func (c *Coordinator) Count(ctx context.Context, stuck time.Duration) (Counts, error) {
	var n Counts
	err := c.db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE attempts > 0), count(*) FILTER (WHERE created_at < $1)
		FROM dtx_global WHERE finished_at IS NULL`, c.o.Now().Add(-stuck)).Scan(&n.Pending, &n.InRecovery, &n.Stuck)
	if err != nil {
		return n, fmt.Errorf("dtx: count: %w", err)
	}
	return n, nil
}
