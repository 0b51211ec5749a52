package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/money"
)

// Wallet is a user's balance. Available = Balance - Held.
type Wallet struct {
	User      int64        `json:"user"`
	Balance   money.Amount `json:"balance"`
	Held      money.Amount `json:"held"`
	Available money.Amount `json:"available"`
	// Incoming is room reserved for transfers on their way in (their
	// confirm credits it); it counts against the maximum balance.
	Incoming money.Amount `json:"incoming"`
}

// Wallet returns a user's balances; a user who never had money has zeros.
func (l *Ledger) Wallet(ctx context.Context, user int64) (Wallet, error) {
	w := Wallet{User: user}
	err := l.db.QueryRow(ctx, `SELECT balance, held, incoming FROM accounts WHERE id = $1 AND kind = 'user'`, user).Scan(&w.Balance, &w.Held, &w.Incoming)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return w, fmt.Errorf("wallet of user %d: %w", user, err)
	}
	w.Available = w.Balance - w.Held
	return w, nil
}

// SystemBalance is the balance of a system account over all its stripes.
func (l *Ledger) SystemBalance(ctx context.Context, a Account) (money.Amount, error) {
	if !a.isSystem() {
		return 0, fmt.Errorf("%w: %d is not a system account", ErrInvalid, int64(a))
	}
	var b int64
	err := l.db.QueryRow(ctx, `SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'system' AND name = $1`, a.String()).Scan(&b)
	return money.Amount(b), err
}

// Entry is one line of a user's statement.
type Entry struct {
	// PostingID is the posting's id on Shard, the ledger shard that wrote
	// it: a wallet that moved between shards has entries of several, and
	// (shard, posting_id) names each one.
	PostingID int64        `json:"posting_id"`
	Shard     int          `json:"shard"`
	Kind      string       `json:"kind"`
	Ref       string       `json:"ref"`
	Amount    money.Amount `json:"amount"` // positive in, negative out
	Balance   money.Amount `json:"balance"`
	Other     string       `json:"counterparty"` // "user 2", or a system account: "clearing:packets", "external"
	// Description says what the entry is in a user's words.
	Description string    `json:"description"`
	At          time.Time `json:"at"`
}

// Statement returns a user's entries newest first. Pass before = 0 for the
// first page and the returned cursor for the next; cursor 0 means no more.
func (l *Ledger) Statement(ctx context.Context, user int64, before int64, limit int) ([]Entry, int64, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	return l.statement(ctx, user, "id < $2", before, limit)
}

// StatementBefore is Statement of the entries made before t (a wallet's
// time on this shard before it moved away and came back, say).
func (l *Ledger) StatementBefore(ctx context.Context, user int64, t time.Time, limit int) ([]Entry, int64, error) {
	return l.statement(ctx, user, "created_at < $2", t, limit)
}

// PostingTime is when a posting of this shard was made.
func (l *Ledger) PostingTime(ctx context.Context, id int64) (time.Time, error) {
	var t time.Time
	err := l.db.QueryRow(ctx, `SELECT created_at FROM postings WHERE id = $1`, id).Scan(&t)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("%w: no entry %d", ErrInvalid, id)
	}
	return t, err
}

// statement lists a user's entries newest first where cut holds, without
// the moves of the wallet between shards (kind migrate: the money stays
// the user's).
func (l *Ledger) statement(ctx context.Context, user int64, cut string, arg any, limit int) ([]Entry, int64, error) {
	if limit <= 0 || limit > 1000 {
		return nil, 0, fmt.Errorf("%w: limit %d out of 1..1000", ErrInvalid, limit)
	}
	rows, err := l.db.Query(ctx, `
		(SELECT id, kind, ref, amount, credit_balance, debit_account, created_at, coalesce(peer, 0) FROM postings
		  WHERE credit_account = $1 AND `+cut+` AND kind <> 'migrate' ORDER BY id DESC LIMIT $3)
		UNION ALL
		(SELECT id, kind, ref, -amount, debit_balance, credit_account, created_at, coalesce(peer, 0) FROM postings
		  WHERE debit_account = $1 AND `+cut+` AND kind <> 'migrate' ORDER BY id DESC LIMIT $3)
		ORDER BY id DESC LIMIT $3`, user, arg, limit+1)
	if err != nil {
		return nil, 0, fmt.Errorf("statement of user %d: %w", user, err)
	}
	var out []Entry
	for rows.Next() {
		var e Entry
		var other, peer int64
		if err := rows.Scan(&e.PostingID, &e.Kind, &e.Ref, &e.Amount, &e.Balance, &other, &e.At, &peer); err != nil {
			rows.Close()
			return nil, 0, err
		}
		e.Other = Account(other).system().String()
		if other > 0 {
			e.Other = fmt.Sprintf("user %d", other)
		}
		e.Description = describe(e.Kind, e.Amount > 0, Account(other), peer)
		e.Shard = l.shard
		out = append(out, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	var next int64
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].PostingID
	}
	return out, next, nil
}

// BalanceAt returns a user's balance as of time t: the balance after the
// last posting made at or before t.
func (l *Ledger) BalanceAt(ctx context.Context, user int64, t time.Time) (money.Amount, error) {
	var b int64
	err := l.db.QueryRow(ctx, `SELECT bal FROM (
		(SELECT id, credit_balance AS bal FROM postings WHERE credit_account = $1 AND created_at <= $2 ORDER BY id DESC LIMIT 1)
		UNION ALL
		(SELECT id, debit_balance FROM postings WHERE debit_account = $1 AND created_at <= $2 ORDER BY id DESC LIMIT 1)
	) p ORDER BY id DESC LIMIT 1`, user, t).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return l.balanceArchived(ctx, user, t)
	}
	if err != nil {
		return 0, fmt.Errorf("balance of user %d at %s: %w", user, t, err)
	}
	return money.Amount(b), nil
}

// Violation is one way the books are not sound.
type Violation struct {
	Rule    string `json:"rule"`
	Account string `json:"account,omitempty"`
	Detail  string `json:"detail"`
}

func (v Violation) String() string { return v.Rule + " " + v.Account + ": " + v.Detail }

// Check proves the shard's books: the accounts sum to zero, every balance
// equals its journal and its last posting's running balance, held equals the
// open holds, and no user has a negative available balance. It returns the
// violations, none when the books are sound. It reads one snapshot
// (REPEATABLE READ), so it may run while money moves.
func (l *Ledger) Check(ctx context.Context) ([]Violation, error) {
	var out []Violation
	err := pgx.BeginTxFunc(ctx, l.db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var sum int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(sum(balance), 0) FROM accounts`).Scan(&sum); err != nil {
			return err
		}
		if sum != 0 {
			out = append(out, Violation{Rule: "shard-sums-to-zero", Detail: fmt.Sprintf("accounts sum to %s", money.Amount(sum))})
		}
		rows, err := tx.Query(ctx, `
			WITH j AS (
				SELECT account, sum(delta) AS total FROM (
					SELECT credit_account AS account, amount AS delta FROM postings
					UNION ALL SELECT debit_account, -amount FROM postings) x GROUP BY account),
			last AS (
				SELECT DISTINCT ON (account) account, bal FROM (
					SELECT credit_account AS account, id, credit_balance AS bal FROM postings
					UNION ALL SELECT debit_account, id, debit_balance FROM postings) y ORDER BY account, id DESC),
			h AS (SELECT account_id, sum(amount) AS open FROM holds WHERE state = 'open' GROUP BY account_id)
			SELECT a.id, a.kind, a.balance, a.held, coalesce(j.total, 0) + coalesce(t.total, 0), coalesce(last.bal, t.last_balance), coalesce(h.open, 0)
			FROM accounts a LEFT JOIN j ON j.account = a.id LEFT JOIN last ON last.account = a.id LEFT JOIN h ON h.account_id = a.id
			LEFT JOIN archived_totals t ON t.account = a.id
			WHERE a.balance <> coalesce(j.total, 0) + coalesce(t.total, 0) OR a.held <> coalesce(h.open, 0)
			   OR (coalesce(last.bal, t.last_balance) IS NOT NULL AND coalesce(last.bal, t.last_balance) <> a.balance)
			   OR (a.kind = 'user' AND a.balance - a.held < 0)`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id, bal, held, journal, open int64
			var kind string
			var last *int64
			if err := rows.Scan(&id, &kind, &bal, &held, &journal, &last, &open); err != nil {
				return err
			}
			acct := Account(id).String()
			if bal != journal {
				out = append(out, Violation{Rule: "balance-equals-journal", Account: acct,
					Detail: fmt.Sprintf("balance %s, journal %s", money.Amount(bal), money.Amount(journal))})
			}
			if last != nil && *last != bal {
				out = append(out, Violation{Rule: "running-balance", Account: acct,
					Detail: fmt.Sprintf("balance %s, last posting says %s", money.Amount(bal), money.Amount(*last))})
			}
			if held != open {
				out = append(out, Violation{Rule: "held-equals-open-holds", Account: acct,
					Detail: fmt.Sprintf("held %s, open holds %s", money.Amount(held), money.Amount(open))})
			}
			if kind == "user" && bal-held < 0 {
				out = append(out, Violation{Rule: "available-not-negative", Account: acct,
					Detail: fmt.Sprintf("available %s", money.Amount(bal-held))})
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		// Every posting's accounts exist (the journal has no foreign keys:
		// the writers prove it, this checks it).
		var orphans int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM postings p
			WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = p.debit_account)
			   OR NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = p.credit_account)`).Scan(&orphans); err != nil {
			return err
		}
		if orphans > 0 {
			out = append(out, Violation{Rule: "posting-accounts-exist", Detail: fmt.Sprintf("%d postings name an account that does not exist", orphans)})
		}
		var missing int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM holds h WHERE state = 'posted' AND posting_id IS NULL`).Scan(&missing); err != nil {
			return err
		}
		if missing > 0 {
			out = append(out, Violation{Rule: "posted-hold-has-posting", Detail: fmt.Sprintf("%d posted holds without a posting", missing)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check ledger shard %d: %w", l.shard, err)
	}
	return out, nil
}

// describe says what a posting is to the user whose statement shows it.
func describe(kind string, in bool, other Account, peer int64) string {
	sys := other.system()
	switch {
	case sys == ClearingTransfers && peer > 0 && in:
		return fmt.Sprintf("transfer from user %d", peer)
	case sys == ClearingTransfers && peer > 0:
		return fmt.Sprintf("transfer to user %d", peer)
	case kind == KindDeposit:
		return "deposit by an operator"
	case kind == KindTopUp:
		return "top-up through the payment channel"
	case kind == KindWithdrawal:
		return "withdrawal through the payment channel"
	case kind == KindReversal:
		return "withdrawal returned by the payment channel"
	case kind == KindTransfer && other > 0 && in:
		return fmt.Sprintf("transfer from user %d", int64(other))
	case kind == KindTransfer && other > 0:
		return fmt.Sprintf("transfer to user %d", int64(other))
	case sys == ClearingTransfers && in:
		return "transfer received"
	case sys == ClearingTransfers:
		return "transfer sent"
	case sys == ClearingPackets && kind == KindRefund:
		return "red packet refund"
	case sys == ClearingPackets && in:
		return "red packet received"
	case sys == ClearingPackets:
		return "red packet sent"
	case sys == ClearingGroups && kind == KindRefund:
		return "group entry fee refunded"
	case sys == ClearingGroups && in:
		return "group entry fee received"
	case sys == ClearingGroups:
		return "group entry fee"
	}
	return kind
}
