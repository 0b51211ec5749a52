package packet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/dtx"
	"hongbao/internal/events"
	"hongbao/internal/postgres"
)

// Payload encodes the packet branch of a send: the packet to create.
func Payload(p Packet) json.RawMessage {
	b, _ := json.Marshal(p)
	return b
}

// Participant returns the set as the packet branch of a send (TCC): try
// creates the packet pending, confirm activates it, cancel cancels it.
// Each runs the barrier in the same local transaction.
func (s *Set) Participant() dtx.Participant { return dtx.ParticipantFunc(s.do) }

func (s *Set) do(ctx context.Context, c dtx.Call) error {
	var p Packet
	if err := json.Unmarshal(c.Payload, &p); err != nil {
		return dtx.Fail(fmt.Errorf("packet branch payload: %w", err))
	}
	if err := p.Validate(s.o.Limits); err != nil {
		return dtx.Fail(err)
	}
	if p.ID == 0 || p.ExpiresAt.IsZero() {
		return dtx.Fail(fmt.Errorf("%w: branch packet needs an id and an expiry", ErrInvalid))
	}
	ref := c.Ref()
	err := postgres.InTx(ctx, s.db, func(tx pgx.Tx) error {
		v, err := dtx.Barrier(ctx, tx, ref, c.Op)
		if err != nil || v != dtx.Run {
			return err
		}
		switch c.Op {
		case dtx.OpTry:
			// Microseconds, as the database keeps it: the claims' packet_at
			// equals it exactly and falls in the same day.
			created := s.o.Now().Truncate(time.Microsecond)
			if err := s.Days.Need(ctx, created); err != nil {
				return err
			}
			var receiver, group *int64
			if p.Kind == Single {
				receiver = &p.Receiver
			} else {
				group = &p.Group
			}
			_, err = tx.Exec(ctx, `INSERT INTO packets (id, kind, sender, receiver, group_id, amount, shares, greeting, state,
				remaining_amount, remaining_count, expires_at, created_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $6, $7, $9, $10)`,
				p.ID, p.Kind, p.Sender, receiver, group, int64(p.Amount), p.Shares, p.Greeting, p.ExpiresAt, created)
			if postgres.IsUniqueViolation(err, "") {
				return dtx.Fail(fmt.Errorf("%w: packet id %d already used", ErrInvalid, p.ID))
			}
			return err
		case dtx.OpConfirm:
			rows, err := tx.Query(ctx, `UPDATE packets SET state = 'active' WHERE id = $1 AND state = 'pending'
				RETURNING `+packetCols, p.ID)
			if err != nil {
				return err
			}
			ps, err := pgx.CollectRows(rows, scanPacket)
			if err != nil || len(ps) == 0 {
				return err
			}
			q := ps[0]
			// The red packet message, in the same transaction as the activation.
			return events.Write(ctx, tx, events.New(fmt.Sprint("packet.sent:", q.ID), events.PacketSent, q.Conversation(), 0, SentPayload(q), s.o.Now()))
		default:
			_, err = tx.Exec(ctx, `UPDATE packets SET state = 'cancelled', closed_at = $2 WHERE id = $1 AND state = 'pending'`, p.ID, s.o.Now())
			return err
		}
	})
	if errors.Is(err, dtx.ErrTryAfterCancel) {
		return dtx.Fail(err)
	}
	if err == nil && c.Op != dtx.OpTry {
		s.forget(p.ID) // a grab that saw it pending loads it again
	}
	return err
}
