package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ConversationSubject and UserSubject are what the IM side subscribes to.
func ConversationSubject(conv string) string { return "events.conversation." + conv }

// UserSubject carries the events addressed to one user.
func UserSubject(user int64) string { return fmt.Sprintf("events.user.%d", user) }

// Feeds keeps the conversations' feeds in the events database: the
// sequencer puts each event in once with the next sequence number of its
// conversation, creates its webhook deliveries in the same transaction,
// and publishes it for the IM side after the commit.
type Feeds struct {
	db  *pgxpool.Pool
	pub Publisher
	log *slog.Logger
	// Now is the clock deliveries are scheduled by (tests inject one).
	Now func() time.Time
}

// NewFeeds returns the feeds over the events database.
func NewFeeds(db *pgxpool.Pool, pub Publisher, log *slog.Logger) *Feeds {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Feeds{db: db, pub: pub, log: log, Now: time.Now}
}

// DB is the events database.
func (f *Feeds) DB() *pgxpool.Pool { return f.db }

// Append sequences a batch of events (as relayed, in order; repeats of
// events already in a feed are dropped) and returns the events it added
// with their sequence numbers. A batch is one transaction: a conversation's
// counter moves once per batch, however many of its events it holds.
func (f *Feeds) Append(ctx context.Context, evs []Event) ([]Event, error) {
	var added []Event
	err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		added = added[:0]
		ids := make([]string, len(evs))
		for i, e := range evs {
			ids[i] = e.ID
		}
		rows, err := tx.Query(ctx, `SELECT f.id FROM unnest($1::text[]) AS k(id) JOIN feed f ON f.id = k.id`, ids)
		if err != nil {
			return err
		}
		have, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, id := range have {
			seen[id] = true
		}
		byConv := map[string][]int{}
		var convs []string
		fresh := make([]Event, 0, len(evs))
		for _, e := range evs {
			if seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			if _, ok := byConv[e.Conversation]; !ok {
				convs = append(convs, e.Conversation)
			}
			byConv[e.Conversation] = append(byConv[e.Conversation], len(fresh))
			fresh = append(fresh, e)
		}
		sort.Strings(convs) // the counters are locked in one order
		for _, c := range convs {
			idx := byConv[c]
			var last int64
			if err := tx.QueryRow(ctx, `INSERT INTO conversations (id, last_seq) VALUES ($1, $2)
				ON CONFLICT (id) DO UPDATE SET last_seq = conversations.last_seq + excluded.last_seq RETURNING last_seq`, c, len(idx)).Scan(&last); err != nil {
				return err
			}
			for k, i := range idx {
				fresh[i].Seq = last - int64(len(idx)) + 1 + int64(k)
			}
		}
		if len(fresh) == 0 {
			return nil
		}
		cp := make([][]any, len(fresh))
		for i, e := range fresh {
			cp[i] = []any{e.Conversation, e.Seq, e.ID, e.Kind, e.User, string(e.Payload), e.At}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"feed"}, []string{"conversation", "seq", "id", "kind", "user_id", "payload", "at"}, pgx.CopyFromRows(cp)); err != nil {
			return fmt.Errorf("append to feeds: %w", err)
		}
		if err := deliver(ctx, tx, fresh, f.Now()); err != nil {
			return err
		}
		added = fresh
		return nil
	})
	if err != nil {
		return nil, err
	}
	return added, nil
}

// Publish sends sequenced events to their subjects and marks them. What
// fails here is published again by Republish.
func (f *Feeds) Publish(ctx context.Context, evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	msgs := make([]Message, 0, len(evs))
	for _, e := range evs {
		data, _ := json.Marshal(e)
		msgs = append(msgs, Message{Subject: ConversationSubject(e.Conversation), ID: e.ID, Data: data})
		if e.User > 0 && UserConversation(e.User) == e.Conversation {
			msgs = append(msgs, Message{Subject: UserSubject(e.User), ID: e.ID + ":user", Data: data})
		}
	}
	if err := f.pub.Publish(ctx, msgs); err != nil {
		return err
	}
	top := map[string]int64{}
	for _, e := range evs {
		top[e.Conversation] = max(top[e.Conversation], e.Seq)
	}
	convs := make([]string, 0, len(top))
	seqs := make([]int64, 0, len(top))
	for c, q := range top {
		convs, seqs = append(convs, c), append(seqs, q)
	}
	_, err := f.db.Exec(ctx, `UPDATE conversations c SET published_seq = greatest(c.published_seq, v.seq)
		FROM unnest($1::text[], $2::bigint[]) AS v(id, seq) WHERE c.id = v.id`, convs, seqs)
	return err
}

// Republish publishes events sequenced before `before` and not yet marked
// published (their sequencer stopped between the commit and the publish).
func (f *Feeds) Republish(ctx context.Context, before time.Time) (int, error) {
	rows, err := f.db.Query(ctx, `SELECT f.id, f.kind, f.conversation, f.seq, f.user_id, f.payload, f.at
		FROM conversations c JOIN feed f ON f.conversation = c.id AND f.seq > c.published_seq
		WHERE c.published_seq < c.last_seq AND f.at < $1 ORDER BY f.conversation, f.seq LIMIT 2000`, before)
	if err != nil {
		return 0, err
	}
	evs, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return 0, err
	}
	return len(evs), f.Publish(ctx, evs)
}

const feedColumns = `id, kind, conversation, seq, user_id, payload, at`

func scanEvent(r pgx.CollectableRow) (Event, error) {
	var e Event
	err := r.Scan(&e.ID, &e.Kind, &e.Conversation, &e.Seq, &e.User, &e.Payload, &e.At)
	return e, err
}

// Read returns a conversation's events after seq, in order, at most limit.
func (f *Feeds) Read(ctx context.Context, conv string, after int64, limit int) ([]Event, error) {
	rows, err := f.db.Query(ctx, `SELECT `+feedColumns+` FROM feed WHERE conversation = $1 AND seq > $2 ORDER BY seq LIMIT $3`, conv, after, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanEvent)
}

// ErrBadEvent: a relayed message that is not an event (parked, never applied).
var ErrBadEvent = errors.New("not an event")

// Decode reads a relayed message: its events in order.
func Decode(data []byte) ([]Event, error) {
	var b Batch
	if err := json.Unmarshal(data, &b); err != nil || len(b.Events) == 0 {
		return nil, fmt.Errorf("%w: %.80q", ErrBadEvent, data)
	}
	for _, e := range b.Events {
		if e.ID == "" || e.Conversation == "" || e.Kind == "" {
			return nil, fmt.Errorf("%w: %.80q", ErrBadEvent, data)
		}
	}
	return b.Events, nil
}
