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

// CreditBatch is what travels on a credit subject: many credits in one
// message, so that a storm of claims costs the bus a message per batch,
// not per claim.
type CreditBatch struct {
	Credits []CreditMessage `json:"credits"`
}

// CreditHandler applies every credit of the delivered batches in one
// ledger transaction. A delivery is done (acked after the commit) when each
// of its credits was applied now or before; a credit that can never apply
// (its key used for another credit, or malformed) is handed to park (the
// dead-letter subject) and the rest of its delivery still counts; a failed
// transaction or a failed park retries the delivery, and the repeat finds
// its applied credits already done.
func (l *Ledger) CreditHandler(park func(context.Context, []CreditMessage) error) bus.Handler {
	return func(ctx context.Context, batch []bus.Delivery) []bus.Verdict {
		verdicts := make([]bus.Verdict, len(batch))
		var credits []Credit
		var msgs []CreditMessage
		var owner []int // delivery of each credit
		var poison []CreditMessage
		var poisonOwner []int
		for i, d := range batch {
			var b CreditBatch
			if err := json.Unmarshal(d.Data, &b); err != nil || len(b.Credits) == 0 {
				verdicts[i] = bus.Dead
				continue
			}
			for _, m := range b.Credits {
				from, ok := SystemAccount(m.From)
				if !ok {
					poison, poisonOwner = append(poison, m), append(poisonOwner, i)
					continue
				}
				credits = append(credits, Credit{Key: m.Key, From: from, User: m.User, Amount: m.Amount, Kind: m.Kind})
				msgs, owner = append(msgs, m), append(owner, i)
			}
		}
		out, err := l.ApplyCredits(ctx, credits)
		if err != nil {
			l.log.Warn("credit batch failed, will be redelivered", "credits", len(credits), "err", err)
			for _, i := range owner {
				verdicts[i] = bus.Retry
			}
			return verdicts
		}
		for j, o := range out {
			if o == Conflict || o == Rejected {
				l.log.Error("credit cannot be applied", "key", credits[j].Key, "outcome", o.String())
				poison, poisonOwner = append(poison, msgs[j]), append(poisonOwner, owner[j])
			}
		}
		if len(poison) > 0 {
			if err := park(ctx, poison); err != nil {
				for _, i := range poisonOwner {
					verdicts[i] = bus.Retry
				}
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
