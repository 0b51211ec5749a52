// Package events is the message side (seed 000: "local transaction + NATS
// retries", never a distributed transaction): value events written in the
// same local transaction as the change that causes them (Write, into each
// database's outbox), relayed to JetStream (Relay), put in order in each
// conversation's feed with a gapless sequence and published for the IM
// side on events.conversation.<id> and events.user.<id> (Sequencer), read
// by clients (Feed, and a live stream), and pushed to applications'
// webhooks with maximum effort on a schedule (Webhooks).
package events

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/postgres"
)

//go:embed sql/outbox/*.sql sql/feed/*.sql
var sqlFS embed.FS

// OutboxMigrations are the outbox of a database whose changes cause events.
func OutboxMigrations() []postgres.Migration {
	return postgres.Embedded("events-outbox", sqlFS, "sql/outbox")
}

// FeedMigrations are the feeds, webhooks and deliveries (the events database).
func FeedMigrations() []postgres.Migration {
	return postgres.Embedded("events-feed", sqlFS, "sql/feed")
}

// Kinds of event.
const (
	PacketSent       = "packet.sent"          // a red packet message into its conversation
	PacketOpened     = "packet.opened"        // someone opened it (addressed to the sender)
	PacketFinished   = "packet.finished"      // all shares gone, with the best luck
	PacketRefunded   = "packet.refunded"      // the remainder refunded to the sender
	GroupJoined      = "group.joined"         // a user joined (and paid the fee)
	EntryRefunded    = "group.entry_refunded" // a paid entry refused, the fee refunded
	TransferReceived = "transfer.received"    // money from another user
	TopUpPaid        = "topup.paid"
	TopUpClosed      = "topup.closed"
	WithdrawalDone   = "withdrawal.succeeded"
	WithdrawalFailed = "withdrawal.failed"
)

// Kinds lists every kind.
var Kinds = []string{PacketSent, PacketOpened, PacketFinished, PacketRefunded, GroupJoined, EntryRefunded, TransferReceived,
	TopUpPaid, TopUpClosed, WithdrawalDone, WithdrawalFailed}

// Event is one value event.
type Event struct {
	ID           string          `json:"id"`
	Kind         string          `json:"kind"`
	Conversation string          `json:"conversation"`
	Seq          int64           `json:"seq,omitempty"`  // in its conversation, once in a feed
	User         int64           `json:"user,omitempty"` // addressed to this user (0: the conversation)
	Payload      json.RawMessage `json:"payload"`
	At           time.Time       `json:"at"`
}

// Conversations: a group's, a one-to-one conversation's (the two users,
// smaller first) and a user's own (what is addressed to them alone).
func GroupConversation(group int64) string { return fmt.Sprintf("g%d", group) }

// DirectConversation is the conversation of two users.
func DirectConversation(a, b int64) string { return fmt.Sprintf("d%d-%d", min(a, b), max(a, b)) }

// UserConversation is a user's own feed.
func UserConversation(user int64) string { return fmt.Sprintf("u%d", user) }

// ParseConversation reads a conversation id: its kind ('g', 'd' or 'u')
// and its one or two numbers.
func ParseConversation(s string) (kind byte, a, b int64, ok bool) {
	if len(s) < 2 || len(s) > 45 {
		return 0, 0, 0, false
	}
	num := func(x string) (int64, bool) {
		if x == "" || len(x) > 19 || x[0] == '0' {
			return 0, false
		}
		var n int64
		for _, c := range x {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int64(c-'0')
		}
		return n, n > 0
	}
	switch s[0] {
	case 'g', 'u':
		a, ok = num(s[1:])
		return s[0], a, 0, ok
	case 'd':
		x, y, found := strings.Cut(s[1:], "-")
		a, ok1 := num(x)
		b, ok2 := num(y)
		return 'd', a, b, found && ok1 && ok2 && a < b
	}
	return 0, 0, 0, false
}

// New makes an event with its payload.
func New(id, kind, conversation string, user int64, payload any, at time.Time) Event {
	b, err := json.Marshal(payload)
	if err != nil {
		panic(fmt.Sprintf("events: payload of %s: %v", kind, err)) // payloads are our own structs
	}
	return Event{ID: id, Kind: kind, Conversation: conversation, User: user, Payload: b, At: at.UTC()}
}

// Write records events in the caller's transaction (the outbox). Each
// change writes its events once (the change's own guard sees to it); a
// repeat would be dropped by the feed anyway.
func Write(ctx context.Context, tx pgx.Tx, evs ...Event) error {
	if len(evs) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, e := range evs {
		b.Queue(`INSERT INTO event_outbox (id, kind, conversation, user_id, payload, at) VALUES ($1, $2, $3, $4, $5, $6)`,
			e.ID, e.Kind, e.Conversation, e.User, string(e.Payload), e.At)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write events: %w", err)
	}
	return nil
}

// Copy records many new events in the caller's transaction in one COPY
// (a batch of claims); their ids must be new.
func Copy(ctx context.Context, tx pgx.Tx, evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	rows := make([][]any, len(evs))
	for i, e := range evs {
		rows[i] = []any{e.ID, e.Kind, e.Conversation, e.User, string(e.Payload), e.At}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"event_outbox"}, []string{"id", "kind", "conversation", "user_id", "payload", "at"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("write events: %w", err)
	}
	return nil
}
