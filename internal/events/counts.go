package events

import (
	"context"
	"fmt"
)

// DeliveryCounts counts the deliveries still pending and those given up.
func (w *Webhooks) DeliveryCounts(ctx context.Context) (pending, givenUp int64, err error) {
	err = w.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'given_up') FROM deliveries`).Scan(&pending, &givenUp)
	if err != nil {
		return 0, 0, fmt.Errorf("events: count deliveries: %w", err)
	}
	return pending, givenUp, nil
}
