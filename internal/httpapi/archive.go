package httpapi

import (
	"context"
	"net/http"
	"time"
)

// Days is what operators do with the day partitions (nil: not served).
type Days interface {
	// Partitions lists every partitioned table's days, per database.
	Partitions(ctx context.Context) (any, error)
	// Archive detaches the days before before that can go.
	Archive(ctx context.Context, before time.Time) (any, error)
	// ArchivedThrough is the first day of a user's journal still kept
	// when older days were archived (zero: none were).
	ArchivedThrough(ctx context.Context, user int64) (time.Time, error)
}

type archiveRequest struct {
	Before string `json:"before"`
}

func (s *Server) partitions(r *http.Request, _ Claims) (int, any, error) {
	v, err := s.b.Days.Partitions(r.Context())
	return 200, v, err
}

// archive detaches the days before "before" (YYYY-MM-DD, UTC, at most
// today): an operator's call, repeated safely (what is archived stays so).
func (s *Server) archive(r *http.Request, _ Claims) (int, any, error) {
	var req archiveRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	d, err := reconDay(req.Before)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Minute)
	defer cancel()
	v, err := s.b.Days.Archive(ctx, d)
	return 200, v, err
}
