package httpapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"hongbao/internal/events"
	"hongbao/internal/hbtest"
	"hongbao/internal/httpapi"
)

// TestConversationFeedAndStream: a group's joins, a red packet, a storm of
// grabs; the group's feed holds every event once in a gapless sequence, the
// same events go out on events.conversation.<id>, outsiders are refused,
// and the live stream resumed after a disconnect loses and repeats nothing.
func TestConversationFeedAndStream(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	var mu sync.Mutex
	onBus := map[string]int{}
	sub, err := a.sys.Bus.Conn().Subscribe("events.conversation.>", func(m *nats.Msg) {
		var e events.Event
		_ = json.Unmarshal(m.Data, &e)
		mu.Lock()
		onBus[e.ID]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_, otok := a.funded("100.00")
	g := a.must(a.do("POST", "/v1/groups", otok, "g", map[string]any{"capacity": 50}), 201).body["id"].(float64)
	conv := fmt.Sprintf("g%.0f", g)
	var toks []string
	for i := range 20 {
		_, tok := a.funded("0.01")
		toks = append(toks, tok)
		a.must(a.do("POST", fmt.Sprintf("/v1/groups/%.0f/join", g), tok, fmt.Sprint("j", i), nil), 200)
	}
	pk := a.must(a.do("POST", "/v1/packets", otok, "p", map[string]any{"kind": "lucky", "group": g, "amount": "10.00", "shares": 10, "greeting": "新年快乐"}), 201).body["id"].(string)
	var wg sync.WaitGroup
	for _, tok := range toks {
		wg.Go(func() { a.do("POST", "/v1/packets/"+pk+"/grab", tok, "", nil) })
	}
	wg.Wait()
	// joined 20, sent 1, opened (the ten shares, a few per commit), finished 1
	var feed []map[string]any
	openings := func() (n int, users map[float64]bool) {
		users = map[float64]bool{}
		for _, e := range feed {
			if e["kind"] == events.PacketOpened {
				for _, o := range e["payload"].(map[string]any)["opened"].([]any) {
					n++
					users[o.(map[string]any)["user"].(float64)] = true
				}
			}
		}
		return n, users
	}
	hbtest.WaitFor(t, 10*time.Second, "the feed to fill", func() bool {
		r := a.do("GET", "/v1/conversations/"+conv+"/events?limit=1000", otok, "", nil)
		if r.status != 200 {
			return false
		}
		feed = nil
		finished := false
		for _, e := range r.body["events"].([]any) {
			feed = append(feed, e.(map[string]any))
			finished = finished || e.(map[string]any)["kind"] == events.PacketFinished
		}
		return finished && len(feed) >= 22
	})
	if n, users := openings(); n != 10 || len(users) != 10 {
		t.Fatalf("%d openings by %d users, want 10 by 10", n, len(users))
	}
	want := len(feed)
	kinds := map[string]int{}
	seen := map[string]bool{}
	for i, e := range feed {
		if e["seq"].(float64) != float64(i+1) {
			t.Fatalf("event %d has seq %v", i, e["seq"])
		}
		if seen[e["id"].(string)] {
			t.Fatalf("event %s twice", e["id"])
		}
		seen[e["id"].(string)] = true
		kinds[e["kind"].(string)]++
	}
	if kinds[events.GroupJoined] != 20 || kinds[events.PacketSent] != 1 || kinds[events.PacketOpened] < 1 || kinds[events.PacketFinished] != 1 {
		t.Fatalf("kinds %v", kinds)
	}
	// One database's events keep their order: sent, the ten opened, finished
	// (joins come from another database, relayed on their own).
	var packetKinds []string
	for _, e := range feed {
		if k := e["kind"].(string); strings.HasPrefix(k, "packet.") {
			packetKinds = append(packetKinds, k)
		}
	}
	if packetKinds[0] != events.PacketSent || packetKinds[len(packetKinds)-1] != events.PacketFinished {
		t.Fatalf("packet events out of order: %v", packetKinds)
	}
	hbtest.WaitFor(t, 5*time.Second, "every event on the bus", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(onBus) == want
	})
	// Outsiders and bad ids.
	_, outsider := a.funded("0.01")
	if r := a.do("GET", "/v1/conversations/"+conv+"/events", outsider, "", nil); r.status != 404 {
		t.Fatalf("an outsider reads the group: %d", r.status)
	}
	if r := a.do("GET", "/v1/conversations/"+conv+"/stream", outsider, "", nil); r.status != 404 {
		t.Fatalf("an outsider streams the group: %d", r.status)
	}
	for _, bad := range []string{"x1", "g0", "g01", "d2-1", "u", "g1%00"} {
		if r := a.do("GET", "/v1/conversations/"+bad+"/events", otok, "", nil); r.status != 400 && r.status != 404 {
			t.Fatalf("%q: %d %s", bad, r.status, r.raw)
		}
	}
	if r := a.do("GET", "/v1/conversations/"+conv+"/events", token(t, httpapi.Claims{Admin: true}), "", nil); r.status != 200 {
		t.Fatalf("an operator: %d", r.status)
	}
	// The stream: read 7, drop the connection, resume from the last id.
	got := sse(t, a.srv.URL+"/v1/conversations/"+conv+"/stream", toks[0], "", 7)
	got = append(got, sse(t, a.srv.URL+"/v1/conversations/"+conv+"/stream", toks[0], fmt.Sprint(len(got)), want-len(got))...)
	if len(got) != want {
		t.Fatalf("%d events streamed", len(got))
	}
	for i, e := range got {
		if e.Seq != int64(i+1) || e.ID != feed[i]["id"] {
			t.Fatalf("streamed #%d: seq %d id %s, feed has %v", i, e.Seq, e.ID, feed[i]["id"])
		}
	}
}

// sse reads n events from a stream (resuming after last, if given) and
// hangs up.
func sse(t *testing.T, url, tok, last string, n int) []events.Event {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if last != "" {
		req.Header.Set("Last-Event-ID", last)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var out []events.Event
	sc := bufio.NewScanner(resp.Body)
	var id string
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "data: "):
			var e events.Event
			if err := json.Unmarshal([]byte(line[6:]), &e); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(e.Seq) != id {
				t.Fatalf("SSE id %s for seq %d", id, e.Seq)
			}
			out = append(out, e)
		}
	}
	return out
}
