package events

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Message is one message for the broker (its ID is the Nats-Msg-Id).
type Message struct {
	Subject, ID string
	Data        []byte
}

// Publisher carries messages to the broker and waits, bounded, until it
// stored them; an error means they are published again (ids dedupe).
type Publisher interface {
	Publish(ctx context.Context, msgs []Message) error
}

// SourceSubject is where the relay of a database publishes its events for
// the sequencer (internal: the IM side reads events.conversation.* and
// events.user.*).
func SourceSubject(source string) string { return "events.source." + source }

// perMessage is how many events travel in one relayed message.
const perMessage = 200

// Batch is what a relayed message carries: events in the order written.
type Batch struct {
	Events []Event `json:"events"`
}

// Relay publishes a database's outbox. One relay at a time works on a
// database (an advisory lock), so its events reach the bus in the order
// they were written; a relay that cannot reach the bus leaves them for
// the next pass: the money paths never wait for it.
type Relay struct {
	db     *pgxpool.Pool
	source string
	pub    Publisher
	log    *slog.Logger
	lock   int64
}

// NewRelay returns the relay of the outbox in db, named source.
func NewRelay(db *pgxpool.Pool, source string, pub Publisher, log *slog.Logger) *Relay {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := fnv.New64a()
	h.Write([]byte("hongbao-events-relay"))
	return &Relay{db: db, source: source, pub: pub, log: log, lock: int64(h.Sum64() >> 1)}
}

// Run relays every tick until ctx ends.
func (r *Relay) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			pass, cancel := context.WithTimeout(ctx, 10*time.Second)
			n, err := r.Step(pass, 5000)
			cancel()
			if err != nil && ctx.Err() == nil {
				r.log.Warn("event relay: not published; the next pass tries again", "source", r.source, "err", err)
			}
			if err != nil || n < 5000 {
				break
			}
		}
	}
}

// Step publishes up to limit events in the order written and moves the
// relay's cursor past them, in one transaction; it returns how many. It
// takes only events of transactions older than every transaction still
// running (the snapshot's xmin), so an event committed later can never
// land behind the cursor.
func (r *Relay) Step(ctx context.Context, limit int) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		n = 0
		var mine bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, r.lock).Scan(&mine); err != nil || !mine {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT e.txid::text, e.seq, e.id, e.kind, e.conversation, e.user_id, e.payload, e.at
			FROM event_outbox e, event_relay c
			WHERE c.id = 1 AND (e.txid, e.seq) > (c.txid, c.seq) AND e.txid < pg_snapshot_xmin(pg_current_snapshot())
			ORDER BY e.txid, e.seq LIMIT $1`, limit)
		if err != nil {
			return err
		}
		var lastTx string
		var lastSeq int64
		var evs []Event
		for rows.Next() {
			var e Event
			if err := rows.Scan(&lastTx, &lastSeq, &e.ID, &e.Kind, &e.Conversation, &e.User, &e.Payload, &e.At); err != nil {
				rows.Close()
				return err
			}
			evs = append(evs, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(evs) == 0 {
			return err
		}
		var msgs []Message
		for i := 0; i < len(evs); i += perMessage {
			chunk := evs[i:min(i+perMessage, len(evs))]
			data, _ := json.Marshal(Batch{Events: chunk})
			msgs = append(msgs, Message{Subject: SourceSubject(r.source), Data: data,
				ID: fmt.Sprintf("ev:%s:%d:%s", r.source, len(chunk), chunk[0].ID)})
		}
		if err := r.pub.Publish(ctx, msgs); err != nil {
			return fmt.Errorf("publish %d events: %w", len(evs), err)
		}
		if _, err := tx.Exec(ctx, `UPDATE event_relay SET txid = $1::xid8, seq = $2 WHERE id = 1`, lastTx, lastSeq); err != nil {
			return err
		}
		n = len(evs)
		return nil
	})
	return n, err
}

// Purge deletes published events older than before, at most 10,000 a call.
func (r *Relay) Purge(ctx context.Context, before time.Time) (int64, error) {
	tag, err := r.db.Exec(ctx, `DELETE FROM event_outbox WHERE seq IN (
		SELECT e.seq FROM event_outbox e, event_relay c WHERE c.id = 1 AND (e.txid, e.seq) <= (c.txid, c.seq) AND e.at < $1 LIMIT 10000)`, before)
	return tag.RowsAffected(), err
}
