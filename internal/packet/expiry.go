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
// reports which keys a ledger applied). A packet's watermark moves up over
// its claims looked at, in seq order: a claim not applied is kept in
// claims_owed (in the same transaction) and handed to republish, and is
// looked at again every pass until applied, so that one claim that cannot
// be credited holds back neither its packet nor the pages. A refund is
// marked. It returns how many were seen credited and how many were handed
// to republish, and more when it left some unseen (a page full). (Looking
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
	// relay would have sent for it (one place makes the keys).
	type owed struct {
		kind   int // above a watermark, kept in claims_owed, or a refund
		msg    ledger.CreditMessage
		id     int64 // claim id, or packet id of a refund
		user   int64
		amount money.Amount
		at     time.Time
		packet int64 // a claim's packet, its seq, day and watermark
		seq    int
		day    time.Time
		mark   int
	}
	const (
		above = iota
		kept
		refund
	)
	scan := func(kind int) pgx.RowToFunc[owed] {
		return func(r pgx.CollectableRow) (owed, error) {
			o := owed{kind: kind}
			var err error
			switch kind {
			case refund:
				err = r.Scan(&o.id, &o.user, &o.amount, &o.at)
				o.msg = RefundMessage(Refund{PacketID: o.id, Sender: o.user, Amount: o.amount})
			default:
				err = r.Scan(&o.id, &o.user, &o.amount, &o.at, &o.packet, &o.seq, &o.day, &o.mark)
				o.msg = ClaimMessage(Claim{ID: o.id, User: o.user, Amount: o.amount})
			}
			return o, err
		}
	}
	page, side := s.o.SettlePage, max(s.o.SettlePage/10, 1)
	var claims, keptRows, refunds []owed
	for _, q := range []struct {
		into *[]owed
		kind int
		sql  string
		n    int
	}{
		{&claims, above, `SELECT c.id, c.user_id, c.amount, c.created_at, p.id, c.seq, p.created_at, p.credited_seq
			FROM (SELECT id, created_at, credited_seq FROM packets WHERE credited_seq < claimed ORDER BY created_at LIMIT 1000) p,
			LATERAL (SELECT id, user_id, amount, seq, created_at FROM claims c WHERE c.packet_id = p.id AND c.packet_at = p.created_at
				AND c.seq > p.credited_seq AND c.created_at <= $1 ORDER BY c.seq LIMIT $2) c
			LIMIT $2`, page},
		{&keptRows, kept, `SELECT claim_id, user_id, amount, created_at, packet_id, seq, packet_at, 0 FROM claims_owed
			WHERE created_at <= $1 ORDER BY created_at LIMIT $2`, side},
		{&refunds, refund, `SELECT packet_id, sender, amount, created_at FROM refunds
			WHERE credited_at IS NULL AND created_at <= $1 LIMIT $2`, side},
	} {
		rows, err := s.db.Query(ctx, q.sql, cutoff, q.n)
		if err != nil {
			return 0, 0, false, err
		}
		if *q.into, err = pgx.CollectRows(rows, scan(q.kind)); err != nil {
			return 0, 0, false, err
		}
	}
	more = len(claims) == page || len(keptRows) == side || len(refunds) == side
	// In order of packet and seq, whatever order the rows came in.
	slices.SortFunc(claims, func(a, b owed) int { return cmp.Or(cmp.Compare(a.packet, b.packet), cmp.Compare(a.seq, b.seq)) })
	all := slices.Concat(claims, keptRows, refunds)
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
	var marked, settledKept, refundIDs []int64
	var marks []int32
	var markDays []time.Time
	var newlyKept []owed
	var missing []ledger.CreditMessage
	next := map[int64]int{} // a packet's next seq that moves its watermark (-1: the seqs were not in a row)
	for _, o := range all {
		ok := done[o.msg.Key]
		if o.kind == above {
			n, seen := next[o.packet]
			if !seen {
				n = o.mark + 1
			}
			if n != o.seq {
				next[o.packet] = -1 // looked at again next pass, from the watermark
				continue
			}
			if n == o.mark+1 {
				marked, markDays, marks = append(marked, o.packet), append(markDays, o.day), append(marks, 0)
			}
			marks[len(marks)-1] = int32(o.seq)
			next[o.packet] = n + 1
			if !ok {
				newlyKept = append(newlyKept, o)
			}
		}
		if !ok {
			missing = append(missing, o.msg)
			continue
		}
		credited++
		switch o.kind {
		case refund:
			refundIDs = append(refundIDs, o.id)
		case kept:
			settledKept = append(settledKept, o.id)
		}
	}
	// One transaction: a watermark never moves past a claim not applied
	// without that claim kept. By (id, created_at): only the partitions of
	// those packets' days are searched. Never down: a second reconciler may
	// have moved it further.
	if len(marked)+len(settledKept)+len(refundIDs) > 0 {
		ids, pids, seqs, users, amounts := make([]int64, len(newlyKept)), make([]int64, len(newlyKept)), make([]int32, len(newlyKept)), make([]int64, len(newlyKept)), make([]int64, len(newlyKept))
		days, ats := make([]time.Time, len(newlyKept)), make([]time.Time, len(newlyKept))
		for i, o := range newlyKept {
			ids[i], pids[i], seqs[i], users[i], amounts[i], days[i], ats[i] = o.id, o.packet, int32(o.seq), o.user, int64(o.amount), o.day, o.at
		}
		err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue(`INSERT INTO claims_owed (claim_id, packet_id, packet_at, seq, user_id, amount, created_at)
				SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::int[], $5::bigint[], $6::bigint[], $7::timestamptz[])
				ON CONFLICT DO NOTHING`, ids, pids, days, seqs, users, amounts, ats)
			b.Queue(`UPDATE packets p SET credited_seq = v.seq
				FROM unnest($1::bigint[], $2::timestamptz[], $3::int[]) AS v(id, day, seq)
				WHERE p.id = v.id AND p.created_at = v.day AND p.credited_seq < v.seq`, marked, markDays, marks)
			b.Queue(`DELETE FROM claims_owed WHERE claim_id = ANY($1)`, settledKept)
			b.Queue(`UPDATE refunds SET credited_at = $2 WHERE packet_id = ANY($1)`, refundIDs, s.o.Now())
			return tx.SendBatch(ctx, b).Close()
		})
		if err != nil {
			return 0, 0, false, err
		}
	}
	if len(missing) > 0 {
		republish(missing)
	}
	return credited, len(missing), more, nil
}
