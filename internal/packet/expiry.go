package packet

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/events"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/postgres"
)

// Refund is the unclaimed remainder of an expired packet, owed to its sender.
type Refund struct {
	PacketID int64
	Sender   int64
	Amount   money.Amount
	packet   Packet // what its event needs: kind, sender, receiver, group
}

// Expire closes up to limit active packets past their expiry and, in the
// same transaction, records the refund of each remainder (the outbox of
// refunds). A packet expires once: the state check makes a second sweep
// find nothing.
func (s *Set) Expire(ctx context.Context, limit int) ([]Refund, error) {
	var out []Refund
	now := s.o.Now()
	err := postgres.InTx(ctx, s.db, func(tx pgx.Tx) error {
		out = out[:0]
		rows, err := tx.Query(ctx, `UPDATE packets SET state = 'expired', refunded = remaining_amount, remaining_amount = 0,
				remaining_count = 0, closed_at = $1
			WHERE (id, created_at) IN (SELECT id, created_at FROM packets WHERE state = 'active' AND expires_at <= $1
				ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING id, sender, refunded, kind, coalesce(receiver, 0), coalesce(group_id, 0)`, now, limit)
		if err != nil {
			return err
		}
		all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Refund, error) {
			var f Refund
			err := r.Scan(&f.PacketID, &f.Sender, &f.Amount, &f.packet.Kind, &f.packet.Receiver, &f.packet.Group)
			f.packet.ID, f.packet.Sender = f.PacketID, f.Sender
			return f, err
		})
		if err != nil {
			return err
		}
		for _, f := range all {
			if f.Amount == 0 {
				continue
			}
			if _, err := tx.Exec(ctx, `INSERT INTO refunds (packet_id, sender, amount, created_at) VALUES ($1, $2, $3, $4)`,
				f.PacketID, f.Sender, int64(f.Amount), now); err != nil {
				return err
			}
			if err := events.Write(ctx, tx, refundedEvent(f.packet, f.Amount, now)); err != nil {
				return err
			}
			out = append(out, f)
		}
		for _, f := range all {
			s.forget(f.PacketID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("expire packets: %w", err)
	}
	return out, nil
}

// ClaimMessage is the credit a claim asks of the grabber's ledger shard.
func ClaimMessage(c Claim) ledger.CreditMessage {
	return ledger.CreditMessage{Key: fmt.Sprint("claim:", c.ID), User: c.User, Amount: c.Amount, Kind: ledger.KindCredit, From: ledger.ClearingPackets.String()}
}

// RefundMessage is the credit a refund asks of the sender's ledger shard.
func RefundMessage(r Refund) ledger.CreditMessage {
	return ledger.CreditMessage{Key: fmt.Sprint("refund:", r.PacketID), User: r.Sender, Amount: r.Amount, Kind: ledger.KindRefund, From: ledger.ClearingPackets.String()}
}

// Settle is the reconciler's pass over this set: claims and refunds older
// than grace and not yet seen credited are looked up in the ledger (applied
// reports which keys a ledger applied); a packet's watermark moves up over
// its claims seen applied (a refund is marked), the others are handed to
// republish. It returns both counts, and more when it left some unseen
// (a page full). (Looking
// sooner would put a per-claim update on the database while a storm is
// still grabbing.) What was claimed before this process began to serve the
// set is looked at at once, whatever the grace: the relay that held it
// belonged to a process that died or let the set go, so waiting for it
// would only delay the credit (after a kill -9, by the whole grace).
func (s *Set) Settle(ctx context.Context, grace time.Duration, applied func(context.Context, []ledger.CreditMessage) (map[string]bool, error),
	republish func([]ledger.CreditMessage)) (credited, again int, more bool, err error) {
	now := s.o.Now()
	cutoff := now.Add(-grace)
	if since := time.Unix(0, s.since.Load()); s.Serving() && since.After(cutoff) {
		cutoff = since
	}
	// Claims and refunds not yet seen credited, each with the message the
	// relay would have sent for it (one place makes the keys). A packet's
	// claims come in seq order from the first above its watermark, so the
	// watermark moves up over those seen applied without a gap.
	type owed struct {
		id     int64 // claim id, or packet id of a refund
		refund bool
		msg    ledger.CreditMessage
		packet int64 // a claim's packet, its seq, day and watermark
		seq    int
		day    time.Time
		mark   int
	}
	scan := func(r pgx.CollectableRow) (owed, error) {
		var o owed
		var user int64
		var amount money.Amount
		if err := r.Scan(&o.id, &o.refund, &user, &amount, &o.packet, &o.seq, &o.day, &o.mark); err != nil {
			return o, err
		}
		if o.refund {
			o.msg = RefundMessage(Refund{PacketID: o.id, Sender: user, Amount: amount})
		} else {
			o.msg = ClaimMessage(Claim{ID: o.id, User: user, Amount: amount})
		}
		return o, nil
	}
	rows, err := s.db.Query(ctx, `
		SELECT c.id, false, c.user_id, c.amount, p.id, c.seq, p.created_at, p.credited_seq
		FROM (SELECT id, created_at, credited_seq FROM packets WHERE credited_seq < claimed ORDER BY created_at LIMIT 1000) p,
		LATERAL (SELECT id, user_id, amount, seq FROM claims c WHERE c.packet_id = p.id AND c.packet_at = p.created_at
			AND c.seq > p.credited_seq AND c.created_at <= $1 ORDER BY c.seq LIMIT $2) c
		LIMIT $2`, cutoff, s.o.SettlePage)
	if err != nil {
		return 0, 0, false, err
	}
	all, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return 0, 0, false, err
	}
	rows, err = s.db.Query(ctx, `SELECT packet_id, true, sender, amount, 0::bigint, 0, created_at, 0 FROM refunds
		WHERE credited_at IS NULL AND created_at <= $1 LIMIT $2`, cutoff, max(s.o.SettlePage/10, 1))
	if err != nil {
		return 0, 0, false, err
	}
	refunds, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return 0, 0, false, err
	}
	more = len(all) == s.o.SettlePage || len(refunds) == max(s.o.SettlePage/10, 1)
	// In order of packet and seq, whatever order the rows came in.
	slices.SortFunc(all, func(a, b owed) int { return cmp.Or(cmp.Compare(a.packet, b.packet), cmp.Compare(a.seq, b.seq)) })
	all = append(all, refunds...)
	if len(all) == 0 {
		return 0, 0, false, nil
	}
	msgs := make([]ledger.CreditMessage, len(all))
	for i, o := range all {
		msgs[i] = o.msg
	}
	done, err := applied(ctx, msgs)
	if err != nil {
		return 0, 0, false, err
	}
	var refundIDs, marked []int64
	var marks []int32
	var markDays []time.Time
	var missing []ledger.CreditMessage
	credited = 0
	next := map[int64]int{} // a packet's next seq that would move its watermark (-1: a gap was met)
	for _, o := range all {
		ok := done[o.msg.Key]
		if !ok {
			missing = append(missing, o.msg)
		}
		switch {
		case o.refund:
			if ok {
				refundIDs = append(refundIDs, o.id)
			}
		default:
			n, seen := next[o.packet]
			if !seen {
				n = o.mark + 1
			}
			if ok && n == o.seq {
				credited++
				if n == o.mark+1 {
					marked, markDays, marks = append(marked, o.packet), append(markDays, o.day), append(marks, 0)
				}
				marks[len(marks)-1] = int32(o.seq)
				next[o.packet] = n + 1
			} else {
				next[o.packet] = -1
			}
		}
	}
	// By (id, created_at): only the partitions of those packets' days are
	// searched. Never down: a second reconciler may have moved it further.
	if _, err := s.db.Exec(ctx, `UPDATE packets p SET credited_seq = v.seq
		FROM unnest($1::bigint[], $2::timestamptz[], $3::int[]) AS v(id, day, seq)
		WHERE p.id = v.id AND p.created_at = v.day AND p.credited_seq < v.seq`, marked, markDays, marks); err != nil {
		return 0, 0, false, err
	}
	if _, err := s.db.Exec(ctx, `UPDATE refunds SET credited_at = $2 WHERE packet_id = ANY($1)`, refundIDs, s.o.Now()); err != nil {
		return 0, 0, false, err
	}
	if len(missing) > 0 {
		republish(missing)
	}
	return credited + len(refundIDs), len(missing), more, nil
}
