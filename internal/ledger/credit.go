package ledger

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/money"
	"hongbao/internal/shard"
)

// Credit moves Amount from a system (clearing) account to a user: the
// consumer side of red packet credits and refunds. Key is the idempotency
// key (the claim or refund id).
type Credit struct {
	Key    string       `json:"-"`
	From   Account      `json:"from"`
	User   int64        `json:"user"`
	Amount money.Amount `json:"amount"`
	Kind   string       `json:"kind"` // KindCredit or KindRefund
}

// Outcome of one credit in a batch.
type Outcome int

const (
	// Applied now.
	Applied Outcome = iota + 1
	// Duplicate: applied before (or earlier in the same batch); nothing done.
	Duplicate
	// Conflict: the key was used for a different credit; nothing done.
	// The message is poison: dead-letter it.
	Conflict
	// Rejected: the credit itself is invalid; nothing done.
	Rejected
)

func (o Outcome) String() string {
	return [...]string{"?", "applied", "duplicate", "conflict", "rejected"}[o]
}

// ApplyCredits applies a batch of credits in one transaction: each key at
// most once ever, the user rows and one stripe per clearing account each
// updated once per batch, the postings written in one statement. It returns
// one outcome per credit, in order. An error means nothing was applied.
func (l *Ledger) ApplyCredits(ctx context.Context, credits []Credit) ([]Outcome, error) {
	out := make([]Outcome, len(credits))
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		clear(out)
		return l.applyCredits(ctx, tx, credits, out)
	})
	if err != nil {
		return nil, fmt.Errorf("apply %d credits: %w", len(credits), err)
	}
	for _, o := range out {
		if o == Applied {
			l.CreditsApplied.Add(1)
		}
	}
	return out, nil
}

func (l *Ledger) applyCredits(ctx context.Context, tx pgx.Tx, credits []Credit, out []Outcome) error {
	var keys []string
	var hashes [][]byte
	var owners []int64
	first := map[string]int{} // key -> index of its first occurrence
	for i, c := range credits {
		if c.Key == "" || c.User <= 0 || c.Amount <= 0 || c.From.IsUser() || validAccount(c.From) != nil ||
			(c.Kind != KindCredit && c.Kind != KindRefund) {
			out[i] = Rejected
			continue
		}
		if j, ok := first[c.Key]; ok {
			if credits[j] == c {
				out[i] = Duplicate
			} else {
				out[i] = Conflict
			}
			continue
		}
		h, err := requestHash("credit", c)
		if err != nil {
			return err
		}
		first[c.Key] = i
		keys = append(keys, c.Key)
		hashes = append(hashes, h)
		owners = append(owners, c.User)
	}
	if len(keys) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `INSERT INTO ops (key, kind, req_hash, user_id) SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[])
		ON CONFLICT DO NOTHING RETURNING key`, keys, repeat("credit", len(keys)), hashes, owners)
	if err != nil {
		return fmt.Errorf("record keys: %w", err)
	}
	fresh, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("record keys: %w", err)
	}
	isFresh := make(map[string]bool, len(fresh))
	for _, k := range fresh {
		isFresh[k] = true
	}
	var seenKeys []string
	for _, k := range keys {
		if !isFresh[k] {
			seenKeys = append(seenKeys, k)
		}
	}
	if len(seenKeys) > 0 {
		rows, err := tx.Query(ctx, `SELECT o.key, o.kind, o.req_hash FROM unnest($1::text[]) AS k(key) JOIN ops o ON o.key = k.key`, seenKeys)
		if err != nil {
			return err
		}
		for rows.Next() {
			var k, kind string
			var h []byte
			if err := rows.Scan(&k, &kind, &h); err != nil {
				rows.Close()
				return err
			}
			i := first[k]
			want, _ := requestHash("credit", credits[i])
			if kind == "credit" && string(h) == string(want) {
				out[i] = Duplicate
			} else {
				out[i] = Conflict
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}

	// What moves: per user and per source stripe, in the order of the batch.
	var apply []int
	userTotal := map[int64]int64{}
	stripeTotal := map[int64]int64{}
	stripeOf := map[Account]int64{}
	for _, k := range fresh {
		i := first[k]
		apply = append(apply, i)
		c := credits[i]
		if _, ok := stripeOf[c.From]; !ok {
			stripeOf[c.From] = l.row(c.From, k)
		}
		userTotal[c.User] += int64(c.Amount)
		stripeTotal[stripeOf[c.From]] += int64(c.Amount)
		out[i] = Applied
	}
	if len(apply) == 0 {
		return nil
	}
	slices.Sort(apply)

	// Locks in ascending id order: the (negative) stripes, then users.
	balance := map[int64]int64{} // row id -> balance before this batch
	for _, s := range sortedKeys(stripeTotal) {
		var after int64
		if err := tx.QueryRow(ctx, `UPDATE accounts SET balance = balance - $2 WHERE id = $1 RETURNING balance`,
			s, stripeTotal[s]).Scan(&after); err != nil {
			return fmt.Errorf("debit clearing stripe %d: %w", s, err)
		}
		balance[s] = after + stripeTotal[s]
	}
	users := sortedKeys(userTotal)
	totals := make([]int64, len(users))
	slotNos := make([]int32, len(users))
	for i, u := range users {
		totals[i], slotNos[i] = userTotal[u], int32(shard.SlotOf(u))
	}
	rows, err = tx.Query(ctx, `INSERT INTO accounts (id, kind, name, balance, slot)
		SELECT id, 'user', 'user', amount, slot FROM unnest($1::bigint[], $2::bigint[], $3::int[]) AS t(id, amount, slot) ORDER BY id
		ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + excluded.balance RETURNING id, balance`, users, totals, slotNos)
	if err != nil {
		return fmt.Errorf("credit users: %w", err)
	}
	for rows.Next() {
		var id, after int64
		if err := rows.Scan(&id, &after); err != nil {
			rows.Close()
			return err
		}
		balance[id] = after - userTotal[id]
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("credit users: %w", err)
	}

	n := len(apply)
	kinds, refs := make([]string, n), make([]string, n)
	debits, creditsTo, amounts, debitBal, creditBal := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for j, i := range apply {
		c := credits[i]
		s := stripeOf[c.From]
		balance[s] -= int64(c.Amount)
		balance[c.User] += int64(c.Amount)
		kinds[j], refs[j] = c.Kind, c.Key
		debits[j], creditsTo[j], amounts[j] = s, c.User, int64(c.Amount)
		debitBal[j], creditBal[j] = balance[s], balance[c.User]
	}
	_, err = tx.Exec(ctx, `INSERT INTO postings (kind, ref, debit_account, credit_account, amount, debit_balance, credit_balance)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])`,
		kinds, refs, debits, creditsTo, amounts, debitBal, creditBal)
	if err != nil {
		return fmt.Errorf("write postings: %w", err)
	}
	return nil
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func sortedKeys[V any](m map[int64]V) []int64 {
	keys := make([]int64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
