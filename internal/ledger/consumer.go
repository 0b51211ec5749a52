package ledger

import (
	"context"
	"encoding/json"
	"fmt"

	"hongbao/internal/bus"
	"hongbao/internal/money"
)

// CreditMessage asks a ledger shard to credit a user from a clearing
// account: a red packet claim or refund. Key is the idempotency key.
type CreditMessage struct {
	Key    string       `json:"key"`
	User   int64        `json:"user"`
	Amount money.Amount `json:"amount"`
	Kind   string       `json:"kind"` // KindCredit or KindRefund
	From   string       `json:"from"` // system account name
}

// CreditSubject is where the credits of ledger shard n are published.
func CreditSubject(shard int) string { return fmt.Sprintf("hb.credit.%d", shard) }

// DeadCreditSubject receives the credits of shard n that can never apply.
func DeadCreditSubject(shard int) string { return fmt.Sprintf("hb.dead.credit.%d", shard) }

// CreditHandler applies delivered credit messages in one batch: applied
// and duplicate ones are done (acked after the commit), conflicting or
// malformed ones are dead, and a failed transaction retries them all.
func (l *Ledger) CreditHandler() bus.Handler {
	return func(ctx context.Context, batch []bus.Delivery) []bus.Verdict {
		verdicts := make([]bus.Verdict, len(batch))
		credits := make([]Credit, 0, len(batch))
		index := make([]int, 0, len(batch))
		for i, d := range batch {
			var m CreditMessage
			from, ok := Account(0), false
			if err := json.Unmarshal(d.Data, &m); err == nil {
				from, ok = SystemAccount(m.From)
			}
			if !ok {
				verdicts[i] = bus.Dead
				continue
			}
			credits = append(credits, Credit{Key: m.Key, From: from, User: m.User, Amount: m.Amount, Kind: m.Kind})
			index = append(index, i)
		}
		out, err := l.ApplyCredits(ctx, credits)
		if err != nil {
			l.log.Warn("credit batch failed, will be redelivered", "credits", len(credits), "err", err)
			for _, i := range index {
				verdicts[i] = bus.Retry
			}
			return verdicts
		}
		for j, o := range out {
			if o == Conflict || o == Rejected {
				verdicts[index[j]] = bus.Dead
				l.log.Error("credit cannot be applied", "key", credits[j].Key, "outcome", o.String())
			}
		}
		return verdicts
	}
}

// Applied reports which idempotency keys this shard has applied.
func (l *Ledger) Applied(ctx context.Context, keys []string) (map[string]bool, error) {
	rows, err := l.db.Query(ctx, `SELECT key FROM ops WHERE key = ANY($1)`, keys)
	if err != nil {
		return nil, fmt.Errorf("applied keys: %w", err)
	}
	defer rows.Close()
	out := make(map[string]bool, len(keys))
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		out[k] = true
	}
	return out, rows.Err()
}
