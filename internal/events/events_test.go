package events_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/channel"
	"hongbao/internal/events"
	"hongbao/internal/hbtest"
	"hongbao/internal/pgtest"
	"hongbao/internal/postgres"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

var (
	feedSchema   = pgtest.Schema{Name: "events-feed", Migrations: [][]postgres.Migration{events.FeedMigrations()}}
	outboxSchema = pgtest.Schema{Name: "events-outbox", Migrations: [][]postgres.Migration{events.OutboxMigrations()}}
)

// bus is a publisher that remembers, and can fail after storing (an ack
// lost: the relay publishes again).
type bus struct {
	mu       sync.Mutex
	msgs     []events.Message
	loseAcks atomic.Int64
}

func (b *bus) Publish(_ context.Context, msgs []events.Message) error {
	b.mu.Lock()
	b.msgs = append(b.msgs, msgs...)
	b.mu.Unlock()
	if b.loseAcks.Add(-1) >= 0 {
		return errors.New("no ack")
	}
	return nil
}

func (b *bus) taken() []events.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.msgs
	b.msgs = nil
	return out
}

// TestRelayAndSequenceOnceInOrder: events written in transactions are
// relayed in order; lost acks make the relay publish them again; the
// feed holds each once with gapless sequences per conversation.
func TestRelayAndSequenceOnceInOrder(t *testing.T) {
	ctx := context.Background()
	src := pgtest.NewDB(t, outboxSchema)
	b := &bus{}
	relay := events.NewRelay(src, "test", b, nil)
	feeds := events.NewFeeds(pgtest.NewDB(t, feedSchema), b, nil)
	at := time.Now()
	for i := range 300 {
		conv := events.GroupConversation(int64(1 + i%3))
		err := postgres.InTx(ctx, src, func(tx pgx.Tx) error {
			return events.Write(ctx, tx, events.New(fmt.Sprint("e", i), events.PacketOpened, conv, 0, map[string]int{"i": i}, at))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	b.loseAcks.Store(2) // two passes whose acks are lost: published, not marked
	var relayed []events.Message
	for range 10 {
		if _, err := relay.Step(ctx, 120); err != nil && err.Error() == "" {
			t.Fatal(err)
		}
		relayed = append(relayed, b.taken()...)
	}
	n := 0
	for _, m := range relayed {
		b, _ := events.Decode(m.Data)
		n += len(b)
	}
	if n <= 300 {
		t.Fatalf("lost acks must cause repeats: %d events relayed", n)
	}
	var evs []events.Event
	for _, m := range relayed {
		batch, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, batch...)
	}
	// Sequence in batches of 50, as the consumer would.
	for len(evs) > 0 {
		k := min(50, len(evs))
		if _, err := feeds.Append(ctx, evs[:k]); err != nil {
			t.Fatal(err)
		}
		evs = evs[k:]
	}
	for g := int64(1); g <= 3; g++ {
		got, err := feeds.Read(ctx, events.GroupConversation(g), 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 100 {
			t.Fatalf("group %d: %d events, want 100", g, len(got))
		}
		for i, e := range got {
			if e.Seq != int64(i+1) || e.ID != fmt.Sprint("e", int(g-1)+3*i) {
				t.Fatalf("group %d #%d: seq %d id %s", g, i, e.Seq, e.ID)
			}
		}
		more, _ := feeds.Read(ctx, events.GroupConversation(g), 40, 10)
		if len(more) != 10 || more[0].Seq != 41 {
			t.Fatalf("read after 40: %+v", more)
		}
	}
}

// TestWebhookSchedule: a receiver that fails, times out, answers 500 and
// then accepts gets exactly the scheduled attempts (an injected clock, no
// waiting), one success, a signature it can verify; one that never accepts
// is given up after the last attempt and can be re-sent.
func TestWebhookSchedule(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t, feedSchema)
	feeds := events.NewFeeds(db, &bus{}, nil)
	var mu sync.Mutex
	var hits []time.Time
	fails := 4
	secret := "webhook-secret-webhook-secret"
	var badSig atomic.Int64
	// The clock is read by the receiver's goroutines too (one of them
	// outlives the sender's wait), so it is read and moved under a lock.
	var clock sync.Mutex
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	at := func() time.Time { clock.Lock(); defer clock.Unlock(); return now }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := channel.VerifyAs(r.Header, events.HeaderTimestamp, events.HeaderSignature, []byte(secret), body, at()); err != nil {
			badSig.Add(1)
		}
		mu.Lock()
		n := len(hits)
		hits = append(hits, at())
		mu.Unlock()
		if r.Header.Get(events.HeaderAttempt) != fmt.Sprint(n+1) || r.Header.Get(events.HeaderEventID) != "ev-1" {
			t.Errorf("attempt header %q, event %q", r.Header.Get(events.HeaderAttempt), r.Header.Get(events.HeaderEventID))
		}
		switch {
		case n == 1:
			time.Sleep(6 * time.Second) // longer than the sender waits
		case n < fails:
			w.WriteHeader(500)
		default:
			w.WriteHeader(204)
		}
	}))
	defer srv.Close()
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer dead.Close()
	w := events.NewWebhooks(db, nil)
	w.Now = at
	w.Jitter = func(time.Duration) time.Duration { return 0 }
	feeds.Now = w.Now
	if _, err := w.Register(ctx, "ftp://x", secret, nil); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("bad url: %v", err)
	}
	if _, err := w.Register(ctx, srv.URL, secret, []string{"nope"}); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("unknown kind: %v", err)
	}
	for _, bad := range []string{"http://127.0.0.1:99999/hook", "http://127.0.0.1:0/hook", "http://user:pw@127.0.0.1:80/hook", "http://:80/"} {
		if _, err := w.Register(ctx, bad, secret, nil); !errors.Is(err, events.ErrInvalid) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	if _, err := w.Register(ctx, srv.URL, secret, []string{events.PacketSent}); err != nil {
		t.Fatal(err)
	}
	deadHook, err := w.Register(ctx, dead.URL, secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := events.New("ev-1", events.PacketSent, "g1", 0, map[string]string{"greeting": "hi"}, at())
	other := events.New("ev-2", events.GroupJoined, "g1", 0, map[string]int{"user": 2}, at())
	if _, err := feeds.Append(ctx, []events.Event{e, other}); err != nil {
		t.Fatal(err)
	}
	// Attempts at 0, +15 s, +15 s, +30 s, +3 min: the fifth succeeds.
	for i := 0; i <= len(events.Schedule); i++ {
		if err := w.Step(ctx); err != nil {
			t.Fatal(err)
		}
		if i < len(events.Schedule) {
			clock.Lock()
			now = now.Add(events.Schedule[i])
			clock.Unlock()
		}
	}
	mu.Lock()
	if len(hits) != fails+1 {
		t.Fatalf("%d attempts, want %d", len(hits), fails+1)
	}
	mu.Unlock()
	if badSig.Load() != 0 {
		t.Fatalf("%d deliveries with a signature that does not verify", badSig.Load())
	}
	delivered, err := w.Deliveries(ctx, events.Delivered, 0, 10)
	if err != nil || len(delivered) != 1 || delivered[0].EventID != "ev-1" || delivered[0].Attempts != fails+1 {
		t.Fatalf("%+v %v", delivered, err)
	}
	// The dead endpoint had both events (it wants every kind): given up
	// after 1 + len(Schedule) attempts each.
	given, err := w.Deliveries(ctx, events.GivenUp, 0, 10)
	if err != nil || len(given) != 2 || given[0].Webhook != deadHook.ID || given[0].Attempts != len(events.Schedule)+1 {
		t.Fatalf("%+v %v", given, err)
	}
	d, err := w.Resend(ctx, given[0].ID)
	if err != nil || d.State != events.Pending || d.Attempts != 0 {
		t.Fatalf("%+v %v", d, err)
	}
	if _, err := w.Resend(ctx, 999999); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("%v", err)
	}
	// Removed: its pending deliveries are given up, nothing more is sent.
	if err := w.Remove(ctx, deadHook.ID); err != nil {
		t.Fatal(err)
	}
	if err := w.Remove(ctx, deadHook.ID); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("removed twice: %v", err)
	}
	if pending, _ := w.Deliveries(ctx, events.Pending, 0, 10); len(pending) != 0 {
		t.Fatalf("pending after removal: %+v", pending)
	}
	if hooks, _ := w.List(ctx); len(hooks) != 1 {
		t.Fatalf("webhooks after removal: %+v", hooks)
	}
}
