package ledger

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/money"
	"hongbao/internal/shard"
)

// ReserveIn reserves room for amount on a user's wallet (incoming) inside
// the caller's transaction, so that money promised to arrive later (a
// top-up the payer has yet to pay) is never refused for the maximum
// balance when it does. ErrBalanceLimit when there is no room.
func (l *Ledger) ReserveIn(ctx context.Context, tx pgx.Tx, user int64, amount money.Amount) error {
	if amount > money.Amount(l.maxBalance) {
		return fmt.Errorf("%w: %s is above the maximum balance %s", ErrBalanceLimit, amount, money.Amount(l.maxBalance))
	}
	tag, err := tx.Exec(ctx, `INSERT INTO accounts (id, kind, name, incoming, slot) VALUES ($1, 'user', 'user', $2, $4)
		ON CONFLICT (id) DO UPDATE SET incoming = accounts.incoming + excluded.incoming
		WHERE accounts.balance + accounts.incoming + excluded.incoming <= $3`, user, int64(amount), l.maxBalance, shard.SlotOf(user))
	if err != nil {
		return fmt.Errorf("reserve %s for user %d: %w", amount, user, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%w: user %d, maximum %s", ErrBalanceLimit, user, money.Amount(l.maxBalance))
	}
	return nil
}

// UnreserveIn frees room ReserveIn reserved (the money will not come).
// The caller's own state decides that it runs once.
func (l *Ledger) UnreserveIn(ctx context.Context, tx pgx.Tx, user int64, amount money.Amount) error {
	_, err := tx.Exec(ctx, `UPDATE accounts SET incoming = incoming - $2 WHERE id = $1`, user, int64(amount))
	if err != nil {
		return fmt.Errorf("release reservation of %s for user %d: %w", amount, user, err)
	}
	return nil
}

// CreditIn credits a user from a system account inside the caller's
// transaction, once per key (a repeat answers the first result). Reserved
// says room for it was reserved with ReserveIn and is now used up; credits
// of money that has arrived are never refused for the maximum balance.
func (l *Ledger) CreditIn(ctx context.Context, tx pgx.Tx, key string, from Account, user int64, amount money.Amount, kind string, reserved bool) (TransferResult, error) {
	if user <= 0 {
		return TransferResult{}, fmt.Errorf("credit: %w: user id %d", ErrInvalid, user)
	}
	return l.TransferIn(ctx, tx, TransferRequest{Key: key, From: from, To: User(user), Amount: amount, Kind: kind, Reserved: reserved})
}
