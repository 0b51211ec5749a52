package ledger

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/dtx"
	"hongbao/internal/money"
	"hongbao/internal/shard"
)

// reserve is the try of a transfer's receiving branch: it reserves room
// for amount on the user's wallet (incoming), so that the confirm, which
// may not fail for a business reason, never finds the wallet full. The
// barrier runs in the same transaction; a repeat does nothing, a try after
// its cancel is refused.
func (l *Ledger) reserve(ctx context.Context, ref dtx.BranchRef, user int64, amount money.Amount) error {
	if amount > money.Amount(l.maxBalance) {
		return fmt.Errorf("%w: %s is above the maximum balance %s", ErrBalanceLimit, amount, money.Amount(l.maxBalance))
	}
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		v, err := dtx.Barrier(ctx, tx, ref, dtx.OpTry)
		if err != nil || v != dtx.Run {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO accounts (id, kind, name, incoming, slot) VALUES ($1, 'user', 'user', $2, $4)
			ON CONFLICT (id) DO UPDATE SET incoming = accounts.incoming + excluded.incoming
			WHERE accounts.balance + accounts.incoming + excluded.incoming <= $3`, user, int64(amount), l.maxBalance, shard.SlotOf(user))
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("%w: user %d, maximum %s", ErrBalanceLimit, user, money.Amount(l.maxBalance))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reserve %s for user %d (%s): %w", amount, user, ref, err)
	}
	return nil
}

// unreserve is the cancel of a transfer's receiving branch: it frees the
// room its try reserved, once; with no try before it, it records itself
// and changes nothing.
func (l *Ledger) unreserve(ctx context.Context, ref dtx.BranchRef, user int64, amount money.Amount) error {
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		v, err := dtx.Barrier(ctx, tx, ref, dtx.OpCancel)
		if err != nil || v != dtx.Run {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE accounts SET incoming = incoming - $2 WHERE id = $1`, user, int64(amount))
		return err
	})
	if err != nil {
		return fmt.Errorf("release reservation of %s for user %d (%s): %w", amount, user, ref, err)
	}
	return nil
}
