package app

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"hongbao/internal/events"
	"hongbao/internal/hbtest"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/pgtest"
)

// NATS is down while packets are sent and grabbed: the money paths go on
// (nothing waits for a message), and when NATS is back every event arrives,
// once, in a gapless feed.
func TestEventsWhileNATSIsDown(t *testing.T) {
	t.Parallel()
	sys := startNode(t, pgtest.Opener(t), t.TempDir(), -1, time.Second)
	defer sys.Close()
	p := newParty(t, sys, 30, 10_000)
	conv := events.GroupConversation(p.group)
	hbtest.WaitFor(t, 10*time.Second, "the joins in the feed", func() bool {
		evs, _ := sys.Feeds.Read(t.Context(), conv, 0, 100)
		return len(evs) == 30
	})
	if err := sys.Bus.StopServer(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var packets []packet.Packet
	for range 3 {
		packets = append(packets, sendLucky(t, sys, p, 300, 10, time.Time{}))
	}
	for _, pk := range packets {
		for _, u := range p.members[:10] {
			for {
				_, err := sys.Flows.Grab(t.Context(), pk.ID, u)
				if errors.Is(err, packet.ErrBusy) {
					time.Sleep(time.Millisecond)
					continue
				}
				if err != nil {
					t.Fatalf("grab with NATS down: %v", err)
				}
				break
			}
		}
	}
	took := time.Since(start)
	if evs, _ := sys.Feeds.Read(t.Context(), conv, 30, 100); len(evs) != 0 {
		t.Fatalf("events arrived with NATS down: %d", len(evs))
	}
	if err := sys.Bus.StartServer(); err != nil {
		t.Fatal(err)
	}
	var evs []events.Event
	count := func() (sent, opened, finished int) {
		for _, e := range evs {
			switch e.Kind {
			case events.PacketSent:
				sent++
			case events.PacketFinished:
				finished++
			case events.PacketOpened:
				var p struct{ Opened []json.RawMessage }
				_ = json.Unmarshal(e.Payload, &p)
				opened += len(p.Opened)
			}
		}
		return
	}
	hbtest.WaitFor(t, 30*time.Second, "every event after NATS came back", func() bool {
		evs, _ = sys.Feeds.Read(t.Context(), conv, 30, 1000)
		s, o, f := count()
		return s == 3 && o == 30 && f == 3
	})
	ids := map[string]bool{}
	for i, e := range evs {
		if e.Seq != int64(31+i) || ids[e.ID] {
			t.Fatalf("event %d: seq %d id %s (repeat %v)", i, e.Seq, e.ID, ids[e.ID])
		}
		ids[e.ID] = true
	}
	hbtest.WaitFor(t, 30*time.Second, "every claim credited", func() bool {
		got := map[int64]money.Amount{}
		for _, pk := range packets {
			d, err := sys.Flows.PacketDetail(t.Context(), pk.ID)
			if err != nil {
				return false
			}
			for _, c := range d.Claims {
				got[c.User] += c.Amount
			}
		}
		for u, a := range got {
			if balance(t, sys, u) != a {
				return false
			}
		}
		return true
	})
	reconcile(t, sys)
	t.Logf("3 sends and 30 grabs with NATS down took %s", took.Round(time.Millisecond))
}
