package ledger

import (
	"context"
	"encoding/json"
	"fmt"

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

// CreditBatch is what travels on a credit subject: many credits in one
// message, so that a storm of claims costs the bus a message per batch,
// not per claim.
type CreditBatch struct {
	Credits []CreditMessage `json:"credits"`
}

// Delivery is what became of one delivered credit batch.
type Delivery int

const (
	// Done: every credit in it applied, now or before: acknowledge it.
	Done Delivery = iota
	// Retry: not applied now; deliver it again later.
	Retry
	// Dead: it can never be applied (not a credit batch): park it.
	Dead
)

// ApplyDeliveries applies every credit of the delivered batches (each a
// JSON CreditBatch, as the relay packs them) in one ledger transaction. A
// delivery is Done (to be acknowledged after this commit) when each of its
// credits was applied now or before; a credit that can never apply (its key
// used for another credit, or malformed) is handed to park (a dead-letter
// place) and the rest of its delivery still counts; a failed transaction
// or a failed park retries the delivery, and the repeat finds its applied
// credits already done. The broker that carried them is the caller's.
//
// With routing (its fields set), a credit of a wallet that lives on
// another shard now (its slot moved) is forwarded there, and a credit of a
// wallet whose slot is moving right now waits: its delivery is retried.
func (l *Ledger) ApplyDeliveries(ctx context.Context, batch [][]byte, park func(context.Context, []CreditMessage) error, r Routing) []Delivery {
	{
		verdicts := make([]Delivery, len(batch))
		var credits []Credit
		var msgs []CreditMessage
		var owner []int // delivery of each credit
		var poison []CreditMessage
		var poisonOwner []int
		var away []CreditMessage
		var awayOwner []int
		for i, d := range batch {
			var b CreditBatch
			if err := json.Unmarshal(d, &b); err != nil || len(b.Credits) == 0 {
				verdicts[i] = Dead
				continue
			}
			for _, m := range b.Credits {
				if r.Moving != nil && r.Moving(m.User) {
					verdicts[i] = Retry
					continue
				}
				if r.Shard != nil && r.Shard(m.User) != l.shard {
					away, awayOwner = append(away, m), append(awayOwner, i)
					continue
				}
				from, ok := SystemAccount(m.From)
				if !ok {
					poison, poisonOwner = append(poison, m), append(poisonOwner, i)
					continue
				}
				credits = append(credits, Credit{Key: m.Key, From: from, User: m.User, Amount: m.Amount, Kind: m.Kind})
				msgs, owner = append(msgs, m), append(owner, i)
			}
		}
		if len(away) > 0 {
			if err := r.Forward(ctx, away); err != nil {
				l.log.Warn("credits of wallets that moved not forwarded, will be redelivered", "credits", len(away), "err", err)
				for _, i := range awayOwner {
					verdicts[i] = Retry
				}
			}
		}
		out, err := l.ApplyCredits(ctx, credits)
		if err != nil {
			l.log.Warn("credit batch failed, will be redelivered", "credits", len(credits), "err", err)
			for _, i := range owner {
				verdicts[i] = Retry
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
					verdicts[i] = Retry
				}
			}
		}
		return verdicts
	}
}

// Routing tells a shard's credit consumer where wallets live now.
type Routing struct {
	Shard   func(user int64) int                                     // the shard of a wallet
	Moving  func(user int64) bool                                    // its slot is being moved
	Forward func(ctx context.Context, credits []CreditMessage) error // to the shard they belong to
}

// Applied reports which idempotency keys this shard has applied.
func (l *Ledger) Applied(ctx context.Context, keys []string) (map[string]bool, error) {
	// A join with the keys, not key = ANY($1): the reconciler asks about
	// 10,000 keys at a time, and with ANY a page sometimes took 2-4 s of
	// the server's CPU after a storm (a plan kept for the prepared
	// statement that scans ops and compares each row with the array one
	// element at a time, when the table's statistics still said it was
	// small); the join takes milliseconds whatever the plan.
	rows, err := l.db.Query(ctx, `SELECT o.key FROM unnest($1::text[]) AS k(key) JOIN ops o ON o.key = k.key`, keys)
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
