package dtx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Call is one phase of one branch, as a participant receives it. For a
// saga, the action is OpTry and its compensation OpCancel.
type Call struct {
	GID     string          `json:"gid"`
	Branch  string          `json:"branch"`
	Op      Op              `json:"op"`
	Payload json.RawMessage `json:"payload"`
}

// Ref is the barrier reference of the call.
func (c Call) Ref() BranchRef { return BranchRef{GID: c.GID, Branch: c.Branch} }

// Key is an idempotency key for the call's business write.
func (c Call) Key() string { return c.GID + "/" + c.Branch + "/" + string(c.Op) }

// Participant does one phase of a branch. Its answer has three states
// (seed 004): nil is success; an error marked with Fail is a definite
// failure (nothing was done, and it will not succeed by repeating); any
// other error is unknown, and the coordinator repeats the same idempotent
// call or, for a try, may cancel.
type Participant interface {
	Do(ctx context.Context, c Call) error
}

// ParticipantFunc adapts a function: the in-process transport.
type ParticipantFunc func(ctx context.Context, c Call) error

// Do calls f.
func (f ParticipantFunc) Do(ctx context.Context, c Call) error { return f(ctx, c) }

type failure struct{ err error }

func (f failure) Error() string { return f.err.Error() }
func (f failure) Unwrap() error { return f.err }

// Fail marks err as a definite failure.
func Fail(err error) error {
	if err == nil {
		return nil
	}
	return failure{err}
}

// IsFailure reports a definite failure. Everything else that is not nil is unknown.
func IsFailure(err error) bool {
	var f failure
	return errors.As(err, &f)
}

// HTTPParticipant calls a participant over HTTP/JSON: 200 is success, 409
// a definite failure; a timeout, a refused connection, a 5xx or anything
// else is unknown.
type HTTPParticipant struct {
	URL     string
	Client  *http.Client
	Timeout time.Duration // per call (default 3s)
}

// Do posts the call and reads the three-state answer.
func (h HTTPParticipant) Do(ctx context.Context, c Call) error {
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, err := json.Marshal(c)
	if err != nil {
		return Fail(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return Fail(err)
	}
	req.Header.Set("Content-Type", "application/json")
	client := h.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: unknown outcome: %w", c.Op, c.Branch, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode == http.StatusConflict:
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(msg, &e)
		return Fail(fmt.Errorf("%s %s: %s", c.Op, c.Branch, e.Error))
	default:
		return fmt.Errorf("%s %s: unknown outcome: HTTP %d", c.Op, c.Branch, resp.StatusCode)
	}
}

// Handler serves a participant over HTTP for HTTPParticipant.
func Handler(p Participant) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c Call
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		if err := dec.Decode(&c); err != nil || c.GID == "" || c.Branch == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad call"})
			return
		}
		err := p.Do(r.Context(), c)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, map[string]string{"result": "ok"})
		case IsFailure(err):
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
