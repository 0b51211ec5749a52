package recon

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Summary is a stored report as a list shows it.
type Summary struct {
	ID         int64     `json:"id,string"`
	Day        string    `json:"day"`
	RanAt      time.Time `json:"ran_at"`
	Unresolved int       `json:"unresolved"`
	Sound      bool      `json:"sound"`
}

// Reports lists stored reports newest first, those with an id below
// before (0: from the newest).
func (r *Reconciler) Reports(ctx context.Context, before int64, limit int) ([]Summary, error) {
	rows, err := r.o.DB.Query(ctx, `SELECT id, to_char(day, 'YYYY-MM-DD'), ran_at, unresolved, sound FROM recon_reports
		WHERE $1::bigint = 0 OR id < $1::bigint ORDER BY id DESC LIMIT $2`, before, limit)
	if err != nil {
		return nil, fmt.Errorf("recon: list reports: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Summary, error) {
		var s Summary
		err := row.Scan(&s.ID, &s.Day, &s.RanAt, &s.Unresolved, &s.Sound)
		s.RanAt = s.RanAt.UTC()
		return s, err
	})
}
