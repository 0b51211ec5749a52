package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"hongbao/internal/events"
)

// Feeds is what the API asks of the conversations' feeds.
type Feeds interface {
	Read(ctx context.Context, conv string, after int64, limit int) ([]events.Event, error)
	// Wake signals when the conversation may have new events (a hint: the
	// feed is read again either way every few hundred milliseconds).
	Wake(conv string) (<-chan struct{}, func())
}

// Webhooks is what operators ask of the webhooks.
type Webhooks interface {
	Register(ctx context.Context, url, secret string, kinds []string) (events.Webhook, error)
	List(ctx context.Context) ([]events.Webhook, error)
	Deliveries(ctx context.Context, state string, before int64, limit int) ([]events.Delivery, error)
	Resend(ctx context.Context, id int64) (events.Delivery, error)
	Remove(ctx context.Context, id int64) error
}

// conversation reads the conversation of the path and checks that the
// caller may read it: a group's members, a one-to-one conversation's two
// users, a user's own; operators read all. Anyone else hears it does not
// exist.
func (s *Server) conversation(r *http.Request, c Claims) (string, error) {
	conv := r.PathValue("id")
	kind, a, b, ok := events.ParseConversation(conv)
	if !ok {
		return "", bad("bad_id", fmt.Sprintf("conversation %q: want g<group>, d<user>-<user> (smaller first) or u<user>", conv))
	}
	if c.Admin {
		return conv, nil
	}
	allowed := false
	switch kind {
	case 'g':
		member, err := s.b.Groups.IsMember(r.Context(), a, c.User)
		if err != nil {
			return "", err
		}
		allowed = member
	case 'd':
		allowed = c.User == a || c.User == b
	case 'u':
		allowed = c.User == a
	}
	if !allowed {
		return "", &apiError{Status: http.StatusNotFound, Code: "not_found", Message: "no such conversation"}
	}
	return conv, nil
}

// feed answers a conversation's events after a sequence number, in order.
func (s *Server) feed(r *http.Request, c Claims) (int, any, error) {
	conv, err := s.conversation(r, c)
	if err != nil {
		return 0, nil, err
	}
	after, err := queryInt(r, "after", 0)
	if err != nil || after < 0 {
		return 0, nil, bad("bad_query", "after must be a sequence number (0: from the start)")
	}
	limit, err := queryLimit(r, 100, 1000)
	if err != nil {
		return 0, nil, err
	}
	evs, err := s.b.Feeds.Read(r.Context(), conv, after, limit)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"events": nonNil(evs), "next": next(len(evs), limit, func() string { return fmt.Sprint(evs[len(evs)-1].Seq) })}, nil
}

// streamer is an answer that writes itself for as long as it lasts.
type streamer func(ctx context.Context, w http.ResponseWriter)

// stream is the live feed of a conversation as Server-Sent Events: each
// event once, in order, its sequence number as the SSE id; a client that
// reconnects with Last-Event-ID (or ?after=) resumes after it.
func (s *Server) stream(r *http.Request, c Claims) (int, any, error) {
	conv, err := s.conversation(r, c)
	if err != nil {
		return 0, nil, err
	}
	from := r.Header.Get("Last-Event-ID")
	if from == "" {
		from = r.URL.Query().Get("after")
	}
	after := int64(0)
	if from != "" {
		v, ok := digitsInt(from)
		if !ok {
			return 0, nil, bad("bad_query", "Last-Event-ID (or after) must be a sequence number")
		}
		after = v
	}
	return 200, streamer(func(ctx context.Context, w http.ResponseWriter) {
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives the server's write timeout
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(200)
		_ = rc.Flush()
		wake, stop := s.b.Feeds.Wake(conv)
		defer stop()
		poll := time.NewTicker(500 * time.Millisecond)
		defer poll.Stop()
		alive := time.NewTicker(15 * time.Second)
		defer alive.Stop()
		for {
			evs, err := s.b.Feeds.Read(ctx, conv, after, 200)
			if err != nil {
				return // the client reconnects with its Last-Event-ID
			}
			for _, e := range evs {
				data, _ := jsonLine(e)
				if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Kind, data); err != nil {
					return
				}
				after = e.Seq
			}
			if len(evs) > 0 {
				if rc.Flush() != nil {
					return
				}
			}
			if len(evs) == 200 {
				continue
			}
			select {
			case <-ctx.Done():
				return
			case <-s.stop:
				return
			case <-wake:
			case <-poll.C:
			case <-alive.C:
				if _, err := fmt.Fprint(w, ": alive\n\n"); err != nil || rc.Flush() != nil {
					return
				}
			}
		}
	}), nil
}

type webhookRequest struct {
	URL    string   `json:"url"`
	Secret string   `json:"secret"`
	Kinds  []string `json:"kinds"`
}

func (s *Server) registerWebhook(r *http.Request, _ Claims) (int, any, error) {
	var req webhookRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	h, err := s.b.Webhooks.Register(r.Context(), req.URL, req.Secret, req.Kinds)
	if err != nil {
		return 0, nil, err
	}
	return 201, created{fmt.Sprintf("/v1/admin/webhooks/%d", h.ID), h}, nil
}

func (s *Server) webhooks(r *http.Request, _ Claims) (int, any, error) {
	hs, err := s.b.Webhooks.List(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"webhooks": nonNil(hs)}, nil
}

func (s *Server) deliveries(r *http.Request, _ Claims) (int, any, error) {
	before, limit, err := page(r, 100, 1000)
	if err != nil {
		return 0, nil, err
	}
	ds, err := s.b.Webhooks.Deliveries(r.Context(), r.URL.Query().Get("state"), before, limit)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"deliveries": nonNil(ds), "next": next(len(ds), limit, func() string { return strconv.FormatInt(ds[len(ds)-1].ID, 10) })}, nil
}

func (s *Server) resend(r *http.Request, _ Claims) (int, any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return 0, nil, err
	}
	if err := decodeEmpty(r); err != nil {
		return 0, nil, err
	}
	d, err := s.b.Webhooks.Resend(r.Context(), id)
	return 200, d, err
}

// jsonLine is one event as one line of JSON (an SSE data line).
func jsonLine(e events.Event) ([]byte, error) { return json.Marshal(e) }

func (s *Server) removeWebhook(r *http.Request, _ Claims) (int, any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return 0, nil, err
	}
	if err := s.b.Webhooks.Remove(r.Context(), id); err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"id": strconv.FormatInt(id, 10), "removed": true}, nil
}
