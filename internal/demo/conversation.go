package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"hongbao/internal/channel"
	"hongbao/internal/events"
)

// conversation shows the family group's conversation as the IM side sees
// it: the red packet, who opened it, the best luck (read as a member).
func (d *demo) conversation(ctx context.Context, group, packetID int64, claims int) error {
	conv := events.GroupConversation(group)
	mine := fmt.Sprintf(`"packet": "%d"`, packetID)
	ofPacket := func(e events.Event) bool {
		return strings.Contains(strings.ReplaceAll(string(e.Payload), `":"`, `": "`), mine)
	}
	var all []events.Event
	deadline := time.Now().Add(20 * time.Second)
	for {
		all = all[:0]
		for after := int64(0); ; {
			var page struct{ Events []events.Event }
			if _, err := d.Call(ctx, "GET", fmt.Sprintf("/v1/conversations/%s/events?after=%d&limit=1000", conv, after), 2, "", nil, &page); err != nil {
				return err
			}
			all = append(all, page.Events...)
			if len(page.Events) < 1000 {
				break
			}
			after = page.Events[len(page.Events)-1].Seq
		}
		opened, finished := 0, false
		for _, e := range all {
			if ofPacket(e) {
				if e.Kind == events.PacketOpened {
					opened += len(openings(e))
				}
				finished = finished || e.Kind == events.PacketFinished
			}
		}
		if opened == claims && finished {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("conversation %s: %d of %d opened events, finished %v", conv, opened, claims, finished)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, e := range all {
		if e.Seq != int64(i+1) {
			return fmt.Errorf("conversation %s: event %d has seq %d", conv, i+1, e.Seq)
		}
	}
	d.step("conversation %s through GET /v1/conversations/%s/events: %d events, seq 1..%d without a gap (openings come a commit at a time); the red packet's lines:", conv, conv, len(all), len(all))
	shown := 0
	for _, e := range all {
		if !ofPacket(e) {
			continue
		}
		var p map[string]any
		_ = json.Unmarshal(e.Payload, &p)
		switch {
		case e.Kind == events.PacketSent:
			d.step("  #%d  user %v sent a red packet: %q, %v in %v shares", e.Seq, p["sender"], p["greeting"], p["amount"], p["shares"])
		case e.Kind == events.PacketOpened && shown < 3:
			for _, o := range openings(e) {
				if shown++; shown > 3 {
					break
				}
				d.step("  #%d  user %d opened it: %s", e.Seq, o.User, o.Amount)
			}
		case e.Kind == events.PacketFinished:
			d.step("  ... #%d  all %v shares taken; best luck: user %v with %v", e.Seq, p["shares"], p["best_luck_user"], p["best_luck_amount"])
		}
	}
	return nil
}

type opening struct {
	User   int64
	Amount string
}

// openings are the shares an opened event reports.
func openings(e events.Event) []opening {
	var p struct{ Opened []opening }
	_ = json.Unmarshal(e.Payload, &p)
	return p.Opened
}

// receiver is a webhook endpoint that verifies signatures and counts.
type receiver struct {
	url, secret  string
	srv          *http.Server
	mu           sync.Mutex
	seen         map[string]bool
	bad, repeats atomic.Int64
}

func startReceiver() (*receiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{url: "http://" + l.Addr().String() + "/hook", secret: "demo-webhook-secret-0123456789", seen: map[string]bool{}}
	r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		if channel.VerifyAs(req.Header, events.HeaderTimestamp, events.HeaderSignature, []byte(r.secret), body, time.Now()) != nil {
			r.bad.Add(1)
			w.WriteHeader(401)
			return
		}
		id := req.Header.Get(events.HeaderEventID)
		r.mu.Lock()
		if r.seen[id] {
			r.repeats.Add(1)
		}
		r.seen[id] = true
		r.mu.Unlock()
		w.WriteHeader(204)
	})}
	go r.srv.Serve(l) //nolint:errcheck // ends with Close
	return r, nil
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *receiver) stop() { _ = r.srv.Close() }

// webhooks waits until the receiver has every packet sent and finished
// event of the demo and reports.
func (d *demo) webhooks(ctx context.Context, hook *receiver, want int) error {
	deadline := time.Now().Add(20 * time.Second)
	for hook.count() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("the webhook receiver has %d of %d notifications", hook.count(), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var dl struct{ Deliveries []events.Delivery }
	if _, err := d.Call(ctx, "GET", "/v1/admin/deliveries?state=given_up", 0, "", nil, &dl); err != nil {
		return err
	}
	d.step("webhook receiver: %d notifications (packets sent and finished), every signature verified (%d bad), %d repeats, %d given up",
		hook.count(), hook.bad.Load(), hook.repeats.Load(), len(dl.Deliveries))
	return nil
}
