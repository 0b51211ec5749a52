package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"hongbao/internal/money"
	"hongbao/internal/payment"
	"hongbao/internal/recon"
	"hongbao/internal/text"
)

// Payments is what the API asks of top-ups and withdrawals.
type Payments interface {
	TopUp(ctx context.Context, key string, user int64, amount money.Amount) (payment.Order, bool, error)
	Withdraw(ctx context.Context, key string, user int64, amount money.Amount) (payment.Order, bool, error)
	Get(ctx context.Context, id int64) (payment.Order, error)
	Events(ctx context.Context, id int64) ([]payment.Event, error)
	List(ctx context.Context, kind payment.Kind, user, before int64, limit int) ([]payment.Order, error)
	Open(ctx context.Context, olderThan time.Time, limit int) ([]payment.Order, error)
	Notify(ctx context.Context, h http.Header, body []byte) (payment.Order, error)
}

// Reconciliation is what operators ask of T+1 reconciliation.
type Reconciliation interface {
	Run(ctx context.Context, day time.Time) (recon.Report, error)
	Latest(ctx context.Context, day time.Time) (recon.Report, error)
	Resolve(ctx context.Context, day time.Time, kind, order, note string) error
	// Reports lists stored reports newest first (ids below before; 0: all).
	Reports(ctx context.Context, before int64, limit int) ([]recon.Summary, error)
}

// orderPath is where an order of a kind is read.
func orderPath(k payment.Kind) string {
	if k == payment.TopUp {
		return "/v1/topups"
	}
	return "/v1/withdrawals"
}

type orderRequest struct {
	Amount money.Amount `json:"amount"`
}

// createOrder starts a top-up or a withdrawal: 201 with the order when the
// answer is final (a top-up waiting for its payer; a withdrawal paid out or
// failed), 202 while the channel's answer is unknown (ask again with the
// same key, or read the order at Location).
func (s *Server) createOrder(kind payment.Kind) func(r *http.Request, c Claims) (int, any, error) {
	return func(r *http.Request, c Claims) (int, any, error) {
		var req orderRequest
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		if req.Amount <= 0 {
			return 0, nil, bad("bad_amount", "amount must be at least 0.01")
		}
		start := s.b.Payments.TopUp
		if kind == payment.Withdrawal {
			start = s.b.Payments.Withdraw
		}
		o, final, err := start(r.Context(), idemKey(r), c.User, req.Amount)
		if err != nil {
			return 0, nil, err
		}
		code := 201
		if !final {
			code = 202
		}
		return code, created{fmt.Sprintf("%s/%d", orderPath(kind), o.ID), o}, nil
	}
}

type orderDetail struct {
	Order  payment.Order   `json:"order"`
	Events []payment.Event `json:"events"`
}

// getOrder reads an order of a kind with its transitions: its user and
// operators see it; anyone else is told it does not exist.
func (s *Server) getOrder(kind payment.Kind) func(r *http.Request, c Claims) (int, any, error) {
	return func(r *http.Request, c Claims) (int, any, error) {
		id, err := pathID(r, "id")
		if err != nil {
			return 0, nil, err
		}
		o, err := s.b.Payments.Get(r.Context(), id)
		if err != nil {
			return 0, nil, err
		}
		if o.Kind != kind || (!c.Admin && o.User != c.User) {
			return 0, nil, payment.ErrNotFound
		}
		evs, err := s.b.Payments.Events(r.Context(), id)
		if err != nil {
			return 0, nil, err
		}
		return 200, orderDetail{o, nonNil(evs)}, nil
	}
}

// listOrders lists the caller's orders of a kind, newest first.
func (s *Server) listOrders(kind payment.Kind) func(r *http.Request, c Claims) (int, any, error) {
	return func(r *http.Request, c Claims) (int, any, error) {
		before, limit, err := page(r, 50, 200)
		if err != nil {
			return 0, nil, err
		}
		os, err := s.b.Payments.List(r.Context(), kind, c.User, before, limit)
		if err != nil {
			return 0, nil, err
		}
		return 200, map[string]any{"orders": nonNil(os), "next": next(len(os), limit, func() string { return fmt.Sprint(os[len(os)-1].ID) })}, nil
	}
}

// openOrders is the operator's view of orders not final yet (query:
// older_than_seconds, default 0; limit).
func (s *Server) openOrders(r *http.Request, _ Claims) (int, any, error) {
	age, err := queryInt(r, "older_than_seconds", 0)
	if err != nil || age < 0 || age > 366*24*3600 {
		return 0, nil, bad("bad_query", "older_than_seconds must be 0 up to a year")
	}
	limit, err := queryLimit(r, 100, 1000)
	if err != nil {
		return 0, nil, err
	}
	os, err := s.b.Payments.Open(r.Context(), s.o.Now().Add(-time.Duration(age)*time.Second), limit)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"orders": nonNil(os)}, nil
}

// notify is the channel's callback: signed by the channel, not by a user.
// It answers 200 only after the credit (if any) has committed; a repeat
// answers the same.
func (s *Server) notify(r *http.Request, _ Claims) (int, any, error) {
	body, err := readBody(r)
	if err != nil {
		return 0, nil, err
	}
	o, err := s.b.Payments.Notify(r.Context(), r.Header, body)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"code": "SUCCESS", "order": fmt.Sprint(o.ID), "state": o.State}, nil
}

type reconRequest struct {
	Day string `json:"day"`
}

func reconDay(s string) (time.Time, error) {
	d, err := recon.ParseDay(s)
	if err != nil {
		return d, bad("bad_day", "day must be a date YYYY-MM-DD (UTC) from 2000-01-01 to today")
	}
	return d, nil
}

// runRecon reconciles a day now and answers the stored report.
func (s *Server) runRecon(r *http.Request, _ Claims) (int, any, error) {
	var req reconRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	d, err := reconDay(req.Day)
	if err != nil {
		return 0, nil, err
	}
	// A reconciliation may take longer than a request usually may.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Minute)
	defer cancel()
	rep, err := s.b.Recon.Run(ctx, d)
	if err != nil {
		return 0, nil, err
	}
	return 200, rep, nil
}

func (s *Server) latestRecon(r *http.Request, _ Claims) (int, any, error) {
	d, err := reconDay(r.PathValue("day"))
	if err != nil {
		return 0, nil, err
	}
	rep, err := s.b.Recon.Latest(r.Context(), d)
	return 200, rep, err
}

type resolveRequest struct {
	Kind  string `json:"kind"`
	Order string `json:"order"`
	Note  string `json:"note"`
}

// resolveRecon records an operator's resolution of one difference.
func (s *Server) resolveRecon(r *http.Request, _ Claims) (int, any, error) {
	d, err := reconDay(r.PathValue("day"))
	if err != nil {
		return 0, nil, err
	}
	var req resolveRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if _, bad := text.BadRune(req.Note); bad || len(req.Note) > 500 {
		return 0, nil, &apiError{Status: http.StatusBadRequest, Code: "invalid_request", Message: "note must be one line of visible text, at most 500 bytes"}
	}
	if _, ok := payment.ParseID(req.Order); !ok {
		return 0, nil, bad("invalid_request", "order must be the id of an order (digits)")
	}
	if err := s.b.Recon.Resolve(r.Context(), d, req.Kind, req.Order, req.Note); err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"day": r.PathValue("day"), "kind": req.Kind, "order": req.Order, "note": req.Note}, nil
}
