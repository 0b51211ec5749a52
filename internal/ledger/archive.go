package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/days"
	"hongbao/internal/money"
	"hongbao/internal/postgres"
)

// ErrArchived: the question is about days of the journal that were archived.
var ErrArchived = days.ErrArchived

// Archived is one day of the journal taken out by Archive.
type Archived struct {
	Day      string `json:"day"`
	Postings int64  `json:"postings"`
}

// Archive detaches the journal's days before day before (never today or
// later) into the schema archive, oldest first, each in one transaction
// that carries the day's total and last running balance of every account
// into archived_totals, so that the books still prove (balance = archived
// total + the journal that remains).
func (l *Ledger) Archive(ctx context.Context, before time.Time) ([]Archived, error) {
	if today := days.Of(time.Now()); before.After(today) {
		before = today
	}
	list, err := days.Attached(ctx, l.db, "postings", before)
	if err != nil {
		return nil, fmt.Errorf("ledger shard %d: archive: %w", l.shard, err)
	}
	var out []Archived
	for _, d := range list {
		var n int64
		err := postgres.InTxLockWait(ctx, l.db, days.LockWait, func(tx pgx.Tx) error {
			if err := days.Lock(ctx, tx, d, "postings"); err != nil {
				return err
			}
			part := pgx.Identifier{days.Name("postings", d)}.Sanitize()
			if _, err := tx.Exec(ctx, `
				WITH x AS (
					SELECT credit_account AS account, id, amount AS delta, credit_balance AS bal FROM `+part+`
					UNION ALL SELECT debit_account, id, -amount, debit_balance FROM `+part+`),
				t AS (SELECT account, sum(delta) AS total FROM x GROUP BY account),
				last AS (SELECT DISTINCT ON (account) account, bal FROM x ORDER BY account, id DESC)
				INSERT INTO archived_totals (account, total, last_balance)
				SELECT t.account, t.total, last.bal FROM t JOIN last USING (account)
				ON CONFLICT (account) DO UPDATE SET total = archived_totals.total + excluded.total, last_balance = excluded.last_balance`); err != nil {
				return err
			}
			n, err = days.Detach(ctx, tx, "postings", d)
			return err
		})
		if err != nil {
			return out, fmt.Errorf("ledger shard %d: archive %s: %w", l.shard, d.Format(time.DateOnly), err)
		}
		l.log.Info("journal day archived", "day", d.Format(time.DateOnly), "postings", n)
		out = append(out, Archived{Day: d.Format(time.DateOnly), Postings: n})
	}
	return out, nil
}

// ArchivedThrough is the first day whose journal is still here when older
// days were archived (the zero time when none were).
func (l *Ledger) ArchivedThrough(ctx context.Context) (time.Time, error) {
	return days.ArchivedThrough(ctx, l.db, "postings")
}

// balanceArchived answers BalanceAt for an account whose last posting at or
// before t is not in the journal that remains.
func (l *Ledger) balanceArchived(ctx context.Context, user int64, t time.Time) (money.Amount, error) {
	through, err := l.ArchivedThrough(ctx)
	if err != nil || through.IsZero() {
		return 0, err
	}
	if t.Before(through) {
		return 0, fmt.Errorf("%w: the journal of user %d before %s", ErrArchived, user, through.Format(time.DateOnly))
	}
	var b int64
	err = l.db.QueryRow(ctx, `SELECT last_balance FROM archived_totals WHERE account = $1`, user).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return money.Amount(b), err
}
