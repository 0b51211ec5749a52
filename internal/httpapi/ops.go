package httpapi

import (
	"context"

	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"hongbao/internal/bus"
	"hongbao/internal/dtx"
	"hongbao/internal/ledger"
	"hongbao/internal/recon"
)

// Operations is what the operators' console asks of a node beyond the
// rest of the API: the overview and the dead letters.
type Operations interface {
	Overview(ctx context.Context) (Overview, error)
	DeadLetters(ctx context.Context, after uint64, limit int) ([]DeadLetter, error)
	DeadLetter(ctx context.Context, seq uint64) (DeadLetter, error)
	Redrive(ctx context.Context, seq uint64) (DeadLetter, error)
}

// Overview is the figures an on-call operator looks at first. A figure
// that could not be read is -1, and Problems says which.
type Overview struct {
	At       time.Time `json:"at"`
	Problems []string  `json:"problems"`
	// Claims (and refunds) committed and not yet seen credited, and the
	// age of the oldest of them in seconds.
	Claims struct {
		Waiting       int64   `json:"waiting"`
		OldestSeconds float64 `json:"oldest_seconds"`
	} `json:"claims"`
	// DeadLetters parked on the bus, and those no operator re-drove.
	DeadLetters struct {
		Total       int64 `json:"total"`
		NotRedriven int64 `json:"not_redriven"`
	} `json:"dead_letters"`
	Transactions dtx.Counts `json:"transactions"`
	Deliveries   struct {
		Pending int64 `json:"pending"`
		GivenUp int64 `json:"given_up"`
	} `json:"deliveries"`
	Orders struct {
		Unknown int64 `json:"unknown"`
	} `json:"orders"`
	// Recon is the last stored reconciliation report (null: none yet).
	Recon *recon.Summary `json:"recon"`
	// Rates are grabs, sends and transfers per second over the last
	// minutes, one point per sample, oldest first.
	SampleSeconds float64 `json:"sample_seconds"`
	Rates         []Rate  `json:"rates"`
}

// Rate is one point of the overview's charts.
type Rate struct {
	At        time.Time `json:"at"`
	Grabs     float64   `json:"grabs"`
	Sends     float64   `json:"sends"`
	Transfers float64   `json:"transfers"`
}

// DeadLetter is a parked message with what it carries, decoded when it is
// a batch of credits.
type DeadLetter struct {
	bus.DeadLetter
	Credits []ledger.CreditMessage `json:"credits,omitempty"`
	// Payload is the message itself when it is not a credit batch (at
	// most 4 KiB of it, as text).
	Payload string `json:"payload,omitempty"`
	Size    int    `json:"size"`
}

func (s *Server) overview(r *http.Request, _ Claims) (int, any, error) {
	o, err := s.b.Operations.Overview(r.Context())
	return 200, o, err
}

func (s *Server) deadLetters(r *http.Request, _ Claims) (int, any, error) {
	after, err := queryInt(r, "cursor", 0)
	if err != nil {
		return 0, nil, err
	}
	limit, err := queryLimit(r, 50, 500)
	if err != nil {
		return 0, nil, err
	}
	ds, err := s.b.Operations.DeadLetters(r.Context(), uint64(after), limit)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"dead_letters": nonNil(ds), "next": next(len(ds), limit, func() string { return strconv.FormatUint(ds[len(ds)-1].Seq, 10) })}, nil
}

func (s *Server) deadLetter(r *http.Request, _ Claims) (int, any, error) {
	seq, err := pathID(r, "seq")
	if err != nil {
		return 0, nil, err
	}
	d, err := s.b.Operations.DeadLetter(r.Context(), uint64(seq))
	return 200, d, err
}

func (s *Server) redrive(r *http.Request, _ Claims) (int, any, error) {
	seq, err := pathID(r, "seq")
	if err != nil {
		return 0, nil, err
	}
	if err := decodeEmpty(r); err != nil {
		return 0, nil, err
	}
	d, err := s.b.Operations.Redrive(r.Context(), uint64(seq))
	return 200, d, err
}

// retryTransaction is an operator's "retry now" of an unfinished global
// transaction: 200 with the transaction as it is after the attempt.
func (s *Server) retryTransaction(r *http.Request, _ Claims) (int, any, error) {
	gid := r.PathValue("gid")
	if err := textValue("gid", gid, 512); err != nil {
		return 0, nil, err
	}
	if err := decodeEmpty(r); err != nil {
		return 0, nil, err
	}
	g, err := s.b.Transactions.Retry(r.Context(), gid)
	return 200, g, err
}

func (s *Server) adminStatement(r *http.Request, _ Claims) (int, any, error) {
	u, err := pathID(r, "user")
	if err != nil {
		return 0, nil, err
	}
	return s.statementOf(r, u)
}

func (s *Server) reconReports(r *http.Request, _ Claims) (int, any, error) {
	before, limit, err := page(r, 50, 500)
	if err != nil {
		return 0, nil, err
	}
	rs, err := s.b.Recon.Reports(r.Context(), before, limit)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"reports": nonNil(rs), "next": next(len(rs), limit, func() string { return strconv.FormatInt(rs[len(rs)-1].ID, 10) })}, nil
}

// txFilter reads the list's filters: state, kind, unfinished and
// older_than_seconds (created at least that long ago).
func txFilter(r *http.Request) (dtx.Filter, error) {
	q := r.URL.Query()
	var f dtx.Filter
	limit, err := queryLimit(r, 50, 1000)
	if err != nil {
		return f, err
	}
	f.Limit = limit
	if f.Unfinished, err = queryBool(r, "unfinished"); err != nil {
		return f, err
	}
	f.State = dtx.State(q.Get("state"))
	if !slices.Contains([]dtx.State{"", dtx.Trying, dtx.Confirming, dtx.Cancelling, dtx.Committed, dtx.Cancelled}, f.State) {
		return f, bad("bad_query", fmt.Sprintf("state %q is not one of trying, confirming, cancelling, committed, cancelled", f.State))
	}
	f.Kind = dtx.Kind(q.Get("kind"))
	if !slices.Contains([]dtx.Kind{"", dtx.TCC, dtx.Saga}, f.Kind) {
		return f, bad("bad_query", fmt.Sprintf("kind %q is not one of tcc, saga", f.Kind))
	}
	if cur := q.Get("cursor"); cur != "" {
		n, ok := digitsInt(cur)
		if !ok {
			return f, bad("bad_query", fmt.Sprintf("cursor=%q is not a cursor this list gave", cur))
		}
		f.Before = time.Unix(0, n)
	}
	age, err := queryInt(r, "older_than_seconds", 0)
	if err != nil {
		return f, err
	}
	if age > 10*365*24*3600 {
		return f, bad("bad_query", "older_than_seconds must be at most ten years")
	}
	if age > 0 {
		if t := time.Now().Add(-time.Duration(age) * time.Second); f.Before.IsZero() || t.Before(f.Before) {
			f.Before = t
		}
	}
	return f, nil
}
