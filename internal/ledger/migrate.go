package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"hongbao/internal/money"
	"hongbao/internal/shard"
)

// ErrSlotMoving: the wallet's slot is moving to another shard (or has just
// moved): retry shortly.
var ErrSlotMoving = errors.New("the wallet is moving to another shard: retry")

// IsSlotMoving reports an error from a write the shard refused because the
// wallet's slot is fenced (the database's HB503).
func IsSlotMoving(err error) bool {
	var pe *pgconn.PgError
	return errors.Is(err, ErrSlotMoving) || (errors.As(err, &pe) && pe.Code == "HB503")
}

// Moved is one wallet a migration took out of a shard or brought in.
type Moved struct {
	User   int64        `json:"user"`
	Amount money.Amount `json:"amount"`
}

// migrating runs fn in a transaction whose writes pass the slot fences.
func (l *Ledger) migrating(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, l.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL hongbao.migrating = 'on'`); err != nil {
			return err
		}
		return fn(tx)
	})
}

// Fence sets the fences of slots for migration: "frozen" on the shard they
// leave, "incoming" on the shard they come to (remembering a "gone" left
// there by an earlier move away). Repeating it does nothing more.
func (l *Ledger) Fence(ctx context.Context, migration int64, slots []int, state string) error {
	_, err := l.db.Exec(ctx, `INSERT INTO slot_fences (slot, state, migration) SELECT s, $3, $2 FROM unnest($1::int[]) s
		ON CONFLICT (slot) DO UPDATE SET state = excluded.state, migration = excluded.migration,
			prev_state = CASE WHEN slot_fences.migration = excluded.migration THEN slot_fences.prev_state
			                  WHEN slot_fences.state = 'gone' THEN 'gone' END, since = now()`, slots, migration, state)
	if err != nil {
		return fmt.Errorf("ledger shard %d: fence slots %v: %w", l.shard, slots, err)
	}
	return nil
}

// How Unfence ends a migration's fences.
const (
	FenceGone    = "gone"    // the slots left this shard: refuse for good
	FenceDrop    = "drop"    // the slots now live here: no fence at all
	FenceRestore = "restore" // the migration is undone: what was there before
)

// Unfence ends migration's fences of slots as mode says.
func (l *Ledger) Unfence(ctx context.Context, migration int64, slots []int, mode string) error {
	var err error
	switch mode {
	case FenceGone:
		_, err = l.db.Exec(ctx, `UPDATE slot_fences SET state = 'gone', prev_state = NULL, since = now()
			WHERE slot = ANY($1) AND migration = $2`, slots, migration)
	case FenceDrop:
		_, err = l.db.Exec(ctx, `DELETE FROM slot_fences WHERE slot = ANY($1) AND migration = $2`, slots, migration)
	case FenceRestore:
		_, err = l.db.Exec(ctx, `WITH d AS (DELETE FROM slot_fences WHERE slot = ANY($1) AND migration = $2 AND prev_state IS NULL)
			UPDATE slot_fences SET state = prev_state, prev_state = NULL, since = now()
			WHERE slot = ANY($1) AND migration = $2 AND prev_state IS NOT NULL`, slots, migration)
	default:
		err = fmt.Errorf("unfence mode %q", mode)
	}
	if err != nil {
		return fmt.Errorf("ledger shard %d: unfence slots %v: %w", l.shard, slots, err)
	}
	return nil
}

// Busy waits for every write in flight on the shard's wallets to end (a
// share lock on accounts, held only for the count) and then counts the
// wallets of slots that hold money or wait for incoming money: such a
// wallet cannot move until its holds and reservations are resolved.
func (l *Ledger) Busy(ctx context.Context, slots []int) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, l.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE accounts IN SHARE MODE`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM accounts WHERE slot = ANY($1) AND (held > 0 OR incoming > 0)`, slots).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("ledger shard %d: wallets busy in slots %v: %w", l.shard, slots, err)
	}
	return n, nil
}

// MigrateOut takes the wallets of slots out of this shard for migration:
// in one transaction, each balance is posted to the migration account
// (kind migrate, hidden in statements) and every wallet recorded with its
// amount. Done once: a repeat returns what was recorded.
func (l *Ledger) MigrateOut(ctx context.Context, migration int64, slots []int) ([]Moved, error) {
	out, err := l.recorded(ctx, migration, "out")
	if err != nil || out != nil {
		return out, err
	}
	err = l.migrating(ctx, func(tx pgx.Tx) error {
		ref := fmt.Sprint("migrate:", migration)
		stripe := l.row(Migration, ref)
		if _, err := tx.Exec(ctx, `WITH w AS (SELECT id, balance FROM accounts WHERE slot = ANY($1) AND kind = 'user' FOR UPDATE)
			INSERT INTO slot_moves (migration, direction, user_id, amount) SELECT $2, 'out', id, balance FROM w`, slots, migration); err != nil {
			return err
		}
		if err := l.postMoves(ctx, tx, migration, "out", ref, stripe, false); err != nil {
			return err
		}
		return l.moveClearing(ctx, tx, migration, "out", ref, 0)
	})
	if err != nil {
		return nil, fmt.Errorf("ledger shard %d: migrate out slots %v: %w", l.shard, slots, err)
	}
	return l.recorded(ctx, migration, "out")
}

// postMoves posts every recorded move of a direction in one statement: a
// wallet to the migration stripe (toWallets false: out of the wallets) or
// the stripe to each wallet, with the running balances of both sides. The
// moves go in as arrays (a join with rows just written in this
// transaction was planned as a loop: 13 s for 100,000 wallets).
func (l *Ledger) postMoves(ctx context.Context, tx pgx.Tx, migration int64, direction, ref string, stripe int64, toWallets bool) error {
	rows, err := tx.Query(ctx, `SELECT user_id, amount FROM slot_moves WHERE migration = $1 AND direction = $2 AND amount > 0 ORDER BY user_id`,
		migration, direction)
	if err != nil {
		return err
	}
	var users, amounts []int64
	var total int64
	for rows.Next() {
		var u, a int64
		if err := rows.Scan(&u, &a); err != nil {
			rows.Close()
			return err
		}
		users, amounts, total = append(users, u), append(amounts, a), total+a
	}
	rows.Close()
	if err := rows.Err(); err != nil || total == 0 {
		return err
	}
	var before int64
	if err := tx.QueryRow(ctx, `SELECT balance FROM accounts WHERE id = $1 FOR UPDATE`, stripe).Scan(&before); err != nil {
		return err
	}
	sign, debit, credit, debitBal, creditBal := "-", "w.id", "$4::bigint", "w.balance", "$5::bigint + sum(w.amount) OVER (ORDER BY w.id)"
	if toWallets {
		sign, debit, credit, debitBal, creditBal = "+", "$4::bigint", "w.id", "$5::bigint - sum(w.amount) OVER (ORDER BY w.id)", "w.balance"
	}
	if _, err := tx.Exec(ctx, `WITH w AS (
			UPDATE accounts a SET balance = a.balance `+sign+` x.amount FROM unnest($1::bigint[], $2::bigint[]) x(id, amount)
			WHERE a.id = x.id RETURNING a.id, a.balance, x.amount)
		INSERT INTO postings (kind, ref, debit_account, credit_account, amount, debit_balance, credit_balance)
		SELECT 'migrate', $3, `+debit+`, `+credit+`, w.amount, `+debitBal+`, `+creditBal+` FROM w ORDER BY w.id`,
		users, amounts, ref, stripe, before); err != nil {
		return err
	}
	delta := total
	if toWallets {
		delta = -total
	}
	_, err = tx.Exec(ctx, `UPDATE accounts SET balance = balance + $2 WHERE id = $1`, stripe, delta)
	return err
}

// moveClearing moves the share of clearing:channel that the payment
// orders of a migration's wallets carry, between it and the migration
// account, and records it: "out" computes the share from the orders of the
// wallets moving out and takes it out of this shard's clearing:channel;
// "in" brings share in; the undone directions take back what "out" (share
// back in) or "in" (share out again) did.
func (l *Ledger) moveClearing(ctx context.Context, tx pgx.Tx, migration int64, direction, ref string, share int64) error {
	if direction == "out" {
		ok, err := hasTable(ctx, tx, "channel_orders")
		if err != nil {
			return err
		}
		if ok {
			if err := tx.QueryRow(ctx, `SELECT coalesce(sum(CASE WHEN o.state = 'succeeded' THEN o.amount WHEN o.state = 'paid' THEN -o.amount ELSE 0 END), 0)
			FROM channel_orders o JOIN slot_moves m ON m.user_id = o.user_id AND m.migration = $1 AND m.direction = 'out'`, migration).Scan(&share); err != nil {
				return err
			}
		}
	}
	// Written in every direction, even at zero: it is also the record that
	// the direction is done (recorded), which a move without wallets has
	// no other of.
	if _, err := tx.Exec(ctx, `INSERT INTO slot_move_clearing (migration, direction, amount) VALUES ($1, $2, $3)`, migration, direction, share); err != nil {
		return err
	}
	// Taking the share out of clearing:channel: clearing -> migration.
	out := direction == "out" || direction == "in_undone"
	from, to := l.row(ClearingChannel, ref), l.row(Migration, ref)
	if !out {
		from, to = to, from
	}
	if share < 0 {
		from, to, share = to, from, -share
	}
	if share == 0 {
		return nil
	}
	_, err := l.move(ctx, tx, move{kind: "migrate", ref: ref, from: from, to: to, amount: share})
	return err
}

// recorded returns the moves of a migration in a direction: nil when the
// direction has not run, empty when it ran and moved no wallet (its
// clearing record, written in the same transaction, says it ran).
func (l *Ledger) recorded(ctx context.Context, migration int64, direction string) ([]Moved, error) {
	var ran bool
	if err := l.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM slot_move_clearing WHERE migration = $1 AND direction = $2)`,
		migration, direction).Scan(&ran); err != nil {
		return nil, err
	}
	if !ran {
		return nil, nil
	}
	rows, err := l.db.Query(ctx, `SELECT user_id, amount FROM slot_moves WHERE migration = $1 AND direction = $2 ORDER BY user_id`, migration, direction)
	if err != nil {
		return nil, err
	}
	moved, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Moved])
	if err != nil {
		return nil, err
	}
	return append([]Moved{}, moved...), nil
}

// sideTables are what moves with a wallet besides its balance, in the
// order they are copied: the table, its columns, which rows, and what a
// row already there becomes.
var sideTables = []struct{ table, cols, where, conflict string }{
	{"request_keys", "user_id, key, op, req_hash, params, status, response, created_at, slot", "user_id = ANY($1)",
		"(user_id, key) DO UPDATE SET op = excluded.op, req_hash = excluded.req_hash, params = excluded.params, status = excluded.status, response = excluded.response"},
	{"ops", "key, kind, req_hash, result, created_at, user_id", "user_id = ANY($1)", "DO NOTHING"},
	{"holds", "key, account_id, amount, state, posted_amount, posting_id, resolve_key, expires_at, created_at, resolved_at", "account_id = ANY($1)",
		"(key) DO UPDATE SET state = excluded.state, posted_amount = excluded.posted_amount, resolve_key = excluded.resolve_key, resolved_at = excluded.resolved_at"},
	{"channel_orders", "id, kind, user_id, amount, state, pay_url, reason, day, deadline, next_check, attempts, channel_at, created_at, updated_at",
		"user_id = ANY($1)", "DO NOTHING"},
	{"channel_order_events", "order_id, from_state, to_state, note, at", "order_id IN (SELECT id FROM channel_orders WHERE user_id = ANY($1))", ""},
	{"channel_limits", "user_id, day, kind, amount, orders", "user_id = ANY($1)", "(user_id, day, kind) DO UPDATE SET amount = excluded.amount, orders = excluded.orders"},
}

// MigrateIn brings the wallets another shard took out (from.MigrateOut)
// into this one, in one transaction: each wallet credited from the
// migration account with what it had, and what belongs to it copied (its
// request keys, idempotency records, holds, payment orders and limits).
// Done once: a repeat returns what was recorded.
//
// gids are the global transactions not finished yet: their participant
// barrier rows are copied too, so that a branch that ran on the old shard
// (a paid entry's debit, say) and is compensated after the move finds its
// try recorded here, rather than taking the compensation for an empty one.
func (l *Ledger) MigrateIn(ctx context.Context, migration int64, from *Ledger, moved []Moved, gids []string) ([]Moved, error) {
	in, err := l.recorded(ctx, migration, "in")
	if err != nil || in != nil {
		return in, err
	}
	users := make([]int64, len(moved))
	amounts := make([]int64, len(moved))
	for i, m := range moved {
		users[i], amounts[i] = m.User, int64(m.Amount)
	}
	err = l.migrating(ctx, func(tx pgx.Tx) error {
		slotNos := make([]int32, len(users))
		for i, u := range users {
			slotNos[i] = int32(shard.SlotOf(u))
		}
		if _, err := tx.Exec(ctx, `INSERT INTO accounts (id, kind, name, slot) SELECT u, 'user', '', s FROM unnest($1::bigint[], $2::int[]) x(u, s)
			ON CONFLICT (id) DO NOTHING`, users, slotNos); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO slot_moves (migration, direction, user_id, amount) SELECT $1, 'in', u, a FROM unnest($2::bigint[], $3::bigint[]) x(u, a)`,
			migration, users, amounts); err != nil {
			return err
		}
		ref := fmt.Sprint("migrate:", migration)
		if err := l.postMoves(ctx, tx, migration, "in", ref, l.row(Migration, ref), true); err != nil {
			return err
		}
		for _, t := range sideTables {
			if err := copyRows(ctx, from, tx, t.table, t.cols, t.where, t.conflict, users); err != nil {
				return fmt.Errorf("copy %s: %w", t.table, err)
			}
		}
		var share int64
		if err := from.db.QueryRow(ctx, `SELECT coalesce(sum(amount), 0) FROM slot_move_clearing WHERE migration = $1 AND direction = 'out'`,
			migration).Scan(&share); err != nil {
			return err
		}
		if err := l.moveClearing(ctx, tx, migration, "in", ref, share); err != nil {
			return err
		}
		if len(gids) > 0 {
			if err := copyRows(ctx, from, tx, "dtx_barrier", "gid, branch, op, reason, created_at", "gid = ANY($1)", "DO NOTHING", gids); err != nil {
				return fmt.Errorf("copy dtx_barrier: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger shard %d: migrate in from shard %d: %w", l.shard, from.shard, err)
	}
	return l.recorded(ctx, migration, "in")
}

// copyRows copies the rows of table that where selects on the source shard
// into tx, through a temporary table, resolving a row already there by
// conflict.
func copyRows(ctx context.Context, from *Ledger, tx pgx.Tx, table, cols, where, conflict string, arg any) error {
	if ok, err := hasTable(ctx, from.db, table); err != nil || !ok {
		return err // the payment tables live in the same database, but a bare ledger has none
	}
	rows, err := from.db.Query(ctx, `SELECT `+cols+` FROM `+table+` WHERE `+where, arg)
	if err != nil {
		return err
	}
	var vals [][]any
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			rows.Close()
			return err
		}
		vals = append(vals, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(vals) == 0 {
		return err
	}
	tmp := "migrating_" + table
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE `+tmp+` ON COMMIT DROP AS SELECT `+cols+` FROM `+table+` WITH NO DATA`); err != nil {
		return err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{tmp}, splitCols(cols), pgx.CopyFromRows(vals)); err != nil {
		return err
	}
	q := `INSERT INTO ` + table + ` (` + cols + `) SELECT ` + cols + ` FROM ` + tmp
	if conflict != "" {
		q += ` ON CONFLICT ` + conflict
	}
	_, err = tx.Exec(ctx, q)
	return err
}

// hasTable reports whether the shard's database has a table.
func hasTable(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, name string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok)
	return ok, err
}

// forgetOrders removes the payment orders, events and limits of users.
func forgetOrders(ctx context.Context, tx pgx.Tx, users []int64) error {
	if ok, err := hasTable(ctx, tx, "channel_orders"); err != nil || !ok {
		return err
	}
	for _, q := range []string{
		`DELETE FROM channel_order_events WHERE order_id IN (SELECT id FROM channel_orders WHERE user_id = ANY($1))`,
		`DELETE FROM channel_orders WHERE user_id = ANY($1)`,
		`DELETE FROM channel_limits WHERE user_id = ANY($1)`,
	} {
		if _, err := tx.Exec(ctx, q, users); err != nil {
			return err
		}
	}
	return nil
}

// slotOf is the slot of a wallet (nil for the operator, user 0).
func slotOf(user int64) *int32 {
	if user <= 0 {
		return nil
	}
	s := int32(shard.SlotOf(user))
	return &s
}

func splitCols(cols string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(cols); i++ {
		if i == len(cols) || cols[i] == ',' {
			c := cols[start:i]
			for len(c) > 0 && c[0] == ' ' {
				c = c[1:]
			}
			out = append(out, c)
			start = i + 1
		}
	}
	return out
}

// Forget removes from the shard a migration's wallets left behind once the
// move is done: their payment orders, which now live on the other shard
// (the wallets' rows stay, at zero, with the journal that made them).
func (l *Ledger) Forget(ctx context.Context, users []int64) error {
	return l.migrating(ctx, func(tx pgx.Tx) error { return forgetOrders(ctx, tx, users) })
}

// UndoMove takes back what MigrateOut (direction "out": the money goes
// back to the wallets) or MigrateIn ("in": the money goes back to the
// migration account, and the payment orders copied in are removed) did for
// a migration that is cancelled. Done once.
func (l *Ledger) UndoMove(ctx context.Context, migration int64, direction string) error {
	undone := direction + "_undone"
	done, err := l.recorded(ctx, migration, undone)
	if err != nil || done != nil {
		return err
	}
	moved, err := l.recorded(ctx, migration, direction)
	if err != nil || moved == nil {
		return err
	}
	err = l.migrating(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO slot_moves (migration, direction, user_id, amount)
			SELECT migration, $2, user_id, amount FROM slot_moves WHERE migration = $1 AND direction = $3`, migration, undone, direction); err != nil {
			return err
		}
		ref := fmt.Sprint("migrate:", migration, ":undo")
		if err := l.postMoves(ctx, tx, migration, undone, ref, l.row(Migration, ref), direction == "out"); err != nil {
			return err
		}
		var share int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(sum(amount), 0) FROM slot_move_clearing WHERE migration = $1 AND direction = $2`,
			migration, direction).Scan(&share); err != nil {
			return err
		}
		if err := l.moveClearing(ctx, tx, migration, undone, ref, share); err != nil {
			return err
		}
		if direction == "in" {
			users := make([]int64, len(moved))
			for i, m := range moved {
				users[i] = m.User
			}
			if err := forgetOrders(ctx, tx, users); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger shard %d: undo migration %d (%s): %w", l.shard, migration, direction, err)
	}
	return nil
}

// Balances returns the balances of users on this shard.
func (l *Ledger) Balances(ctx context.Context, users []int64) (map[int64]money.Amount, error) {
	rows, err := l.db.Query(ctx, `SELECT id, balance FROM accounts WHERE id = ANY($1)`, users)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]money.Amount{}
	for rows.Next() {
		var id, b int64
		if err := rows.Scan(&id, &b); err != nil {
			return nil, err
		}
		out[id] = money.Amount(b)
	}
	return out, rows.Err()
}
