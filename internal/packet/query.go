package packet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/ledger"
	"hongbao/internal/money"
)

const packetCols = `id, kind, sender, coalesce(receiver, 0), coalesce(group_id, 0), amount, shares, greeting, state,
	remaining_amount, remaining_count, refunded, expires_at, created_at`

func scanPacket(r pgx.CollectableRow) (Packet, error) {
	var p Packet
	err := r.Scan(&p.ID, &p.Kind, &p.Sender, &p.Receiver, &p.Group, &p.Amount, &p.Shares, &p.Greeting, &p.State,
		&p.RemainingAmount, &p.RemainingCount, &p.Refunded, &p.ExpiresAt, &p.CreatedAt)
	return p, err
}

// Get returns a packet as committed.
func (s *Set) Get(ctx context.Context, id int64) (Packet, error) {
	rows, err := s.db.Query(ctx, `SELECT `+packetCols+` FROM packets WHERE id = $1`, id)
	if err != nil {
		return Packet{}, err
	}
	p, err := pgx.CollectExactlyOneRow(rows, scanPacket)
	if errors.Is(err, pgx.ErrNoRows) {
		return Packet{}, s.missing(ctx, id)
	}
	return p, err
}

// Detail is a packet with its claims in grab order and the best luck.
type Detail struct {
	Packet Packet  `json:"packet"`
	Claims []Claim `json:"claims"`
	Best   *Claim  `json:"best_luck,omitempty"`
}

// Detail returns a packet and its claims. A claim is credited once the
// reconciler has seen its credit in the ledger; credited is checked live
// for the others when credited != nil (it reports which claim ids a ledger
// has applied).
func (s *Set) Detail(ctx context.Context, id int64, credited func(context.Context, []Claim) (map[int64]bool, error)) (Detail, error) {
	p, err := s.Get(ctx, id)
	if err != nil {
		return Detail{}, err
	}
	d := Detail{Packet: p}
	rows, err := s.db.Query(ctx, `SELECT id, packet_id, user_id, seq, amount, created_at,
			`+creditedSQL("claims", "(SELECT credited_seq FROM packets WHERE id = $1 AND created_at = $2)")+`
		FROM claims WHERE packet_id = $1 AND packet_at = $2 ORDER BY seq`, id, p.CreatedAt)
	if err != nil {
		return d, err
	}
	d.Claims, err = pgx.CollectRows(rows, scanClaim)
	if err != nil {
		return d, err
	}
	var open []Claim
	for _, c := range d.Claims {
		if !c.Credited {
			open = append(open, c)
		}
	}
	if credited != nil && len(open) > 0 {
		done, err := credited(ctx, open)
		if err != nil {
			return d, err
		}
		for i := range d.Claims {
			d.Claims[i].Credited = d.Claims[i].Credited || done[d.Claims[i].ID]
		}
	}
	// Best luck: the largest share, the earliest on a tie; shown once the
	// packet is closed, as the apps do.
	if p.State == StateFinished || p.State == StateExpired {
		for i := range d.Claims {
			if d.Best == nil || d.Claims[i].Amount > d.Best.Amount {
				d.Best = &d.Claims[i]
			}
		}
	}
	return d, nil
}

func scanClaim(r pgx.CollectableRow) (Claim, error) {
	var c Claim
	return c, r.Scan(&c.ID, &c.PacketID, &c.User, &c.Seq, &c.Amount, &c.At, &c.Credited)
}

// Sent lists a sender's packets in this set, newest first, before the
// cursor (a packet id; 0 for the first page). A cancelled send changed
// nothing and is not listed.
func (s *Set) Sent(ctx context.Context, sender, before int64, limit int) ([]Packet, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := s.db.Query(ctx, `SELECT `+packetCols+` FROM packets WHERE sender = $1 AND id < $2 AND state <> 'cancelled' ORDER BY id DESC LIMIT $3`,
		sender, before, clampLimit(limit))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanPacket)
}

// Received lists a user's claims in this set, newest first (by the time of
// the grab, then the id), before the cursor (zero time for the first page).
func (s *Set) Received(ctx context.Context, user int64, beforeAt time.Time, beforeID int64, limit int) ([]Claim, error) {
	if beforeAt.IsZero() {
		beforeAt, beforeID = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), 0
	}
	rows, err := s.db.Query(ctx, `SELECT id, packet_id, user_id, seq, amount, created_at,
			`+creditedSQL("c", "(SELECT credited_seq FROM packets p WHERE p.id = c.packet_id AND p.created_at = c.packet_at)")+`
		FROM claims c WHERE user_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3))
		ORDER BY created_at DESC, id DESC LIMIT $4`, user, beforeAt, beforeID, clampLimit(limit))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanClaim)
}

func clampLimit(n int) int {
	if n <= 0 {
		return 50
	}
	return min(n, 500)
}

// Check proves the set's packets: each packet that took money pays out
// exactly its amount (claimed + remaining + refunded) in at most its
// shares, no user twice (the schema), a finished packet has every share
// claimed, and its claims are seqs 1..claimed (what the credited watermark
// stands on). It returns the violations, none when sound.
func (s *Set) Check(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, `
		SELECT p.id, p.state, p.amount, p.shares, p.remaining_amount, p.remaining_count, p.refunded,
		       coalesce(sum(c.amount), 0), count(c.id), p.claimed, coalesce(max(c.seq), 0)
		FROM packets p LEFT JOIN claims c ON c.packet_id = p.id AND c.packet_at = p.created_at
		WHERE p.state IN ('active', 'finished', 'expired')
		GROUP BY p.id, p.created_at
		HAVING p.amount <> coalesce(sum(c.amount), 0) + p.remaining_amount + p.refunded
		    OR count(c.id) > p.shares
		    OR count(c.id) <> p.claimed OR coalesce(max(c.seq), 0) <> p.claimed
		    OR (p.state <> 'expired' AND count(c.id) + p.remaining_count <> p.shares)
		    OR (p.state = 'finished' AND count(c.id) <> p.shares)`)
	if err != nil {
		return nil, fmt.Errorf("check packet set %d: %w", s.o.Set, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, amount, remaining, refunded, claimed int64
		var shares, left, n, counted, last int
		var state string
		if err := rows.Scan(&id, &state, &amount, &shares, &remaining, &left, &refunded, &claimed, &n, &counted, &last); err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf("packet %d (%s): amount %s, claimed %s in %d of %d shares (counted %d, last seq %d), remaining %s in %d, refunded %s",
			id, state, money.Amount(amount), money.Amount(claimed), n, shares, counted, last, money.Amount(remaining), left, money.Amount(refunded)))
	}
	return out, rows.Err()
}

// creditedSQL is whether claim row c is seen credited, mark being its
// packet's watermark: at or below it and not kept aside as not applied.
func creditedSQL(c, mark string) string {
	return c + ".seq <= " + mark + " AND NOT EXISTS (SELECT 1 FROM claims_owed o WHERE o.claim_id = " + c + ".id)"
}

// owedClaims are the claims the reconciler has still to see credited: those
// above their packet's watermark (credited_seq), and those it kept when it
// found them not applied (claims_owed).
const owedClaims = `SELECT c.id, c.user_id, c.amount, c.created_at FROM packets p
	JOIN claims c ON c.packet_id = p.id AND c.packet_at = p.created_at AND c.seq > p.credited_seq
	WHERE p.credited_seq < p.claimed
	UNION ALL SELECT claim_id, user_id, amount, created_at FROM claims_owed`

// Overdue counts the claims and refunds made before since that are still
// not seen credited (the reconciler looks at each once it is older than its
// grace: applied, it is marked; not, it is published again), and gives the
// time of the oldest: what an operator alerts on.
func (s *Set) Overdue(ctx context.Context, since time.Time) (n int64, oldest time.Time, err error) {
	var at *time.Time
	err = s.db.QueryRow(ctx, `SELECT count(*), min(created_at) FROM (
		SELECT created_at FROM (`+owedClaims+`) c WHERE created_at <= $1
		UNION ALL SELECT created_at FROM refunds WHERE credited_at IS NULL AND created_at <= $1) u`, since).Scan(&n, &at)
	if at != nil {
		oldest = *at
	}
	return n, oldest, err
}

// Escrow is what the set says clearing:packets should hold for it: the
// amounts of packets that took money (active, finished, expired) less every
// claim and refund made, and the claims and refunds not yet seen credited
// (at most limit; more is reported as more), whose amounts are still in
// clearing until their ledger applies them.
func (s *Set) Escrow(ctx context.Context, limit int) (held money.Amount, unmarked []ledger.CreditMessage, more bool, err error) {
	err = pgx.BeginTxFunc(ctx, s.db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT
			(SELECT coalesce(sum(amount), 0) FROM packets WHERE state IN ('active', 'finished', 'expired'))
			- (SELECT coalesce(sum(amount), 0) FROM claims) - (SELECT coalesce(sum(amount), 0) FROM refunds)`).Scan(&held); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT id, false, user_id, amount FROM (`+owedClaims+`) c
			UNION ALL SELECT packet_id, true, sender, amount FROM refunds WHERE credited_at IS NULL LIMIT $1`, limit+1)
		if err != nil {
			return err
		}
		unmarked, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ledger.CreditMessage, error) {
			var id, user int64
			var refund bool
			var amount money.Amount
			if err := r.Scan(&id, &refund, &user, &amount); err != nil {
				return ledger.CreditMessage{}, err
			}
			if refund {
				return RefundMessage(Refund{PacketID: id, Sender: user, Amount: amount}), nil
			}
			return ClaimMessage(Claim{ID: id, User: user, Amount: amount}), nil
		})
		return err
	})
	if len(unmarked) > limit {
		unmarked, more = unmarked[:limit], true
	}
	return held, unmarked, more, err
}
