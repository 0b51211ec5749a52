package payment

import (
	"context"
	"fmt"
)

// CountUnknown counts the orders whose state is unknown (asked of the
// channel, no definite answer yet) on every shard.
func (s *Service) CountUnknown(ctx context.Context) (int64, error) {
	var total int64
	for _, l := range s.o.Shards {
		var n int64
		if err := l.DB().QueryRow(ctx, `SELECT count(*) FROM channel_orders WHERE next_check IS NOT NULL AND state = 'unknown'`).Scan(&n); err != nil {
			return 0, fmt.Errorf("payment: count unknown orders on shard %d: %w", l.Shard(), err)
		}
		total += n
	}
	return total, nil
}
