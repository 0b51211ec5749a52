package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"hongbao/internal/slots"
)

// Migrations are the live moves of ledger slots (nil: not served).
type Migrations interface {
	Start(ctx context.Context, slots []int, to int) (slots.Migration, error)
	Get(ctx context.Context, id int64) (slots.Migration, error)
	// List is newest first, before the cursor (an id; 0: from the newest).
	List(ctx context.Context, before int64, limit int) ([]slots.Migration, error)
	Cancel(ctx context.Context, id int64) (slots.Migration, error)
	Wake()
}

type migrationRequest struct {
	Slots []int `json:"slots"`
	To    *int  `json:"to"`
}

// startMigration records a move of slots to a shard and has it driven at
// once (by this node's resumer): 202 with the migration, to be followed at
// its Location.
func (s *Server) startMigration(r *http.Request, _ Claims) (int, any, error) {
	var req migrationRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.To == nil {
		return 0, nil, bad("invalid_request", "to: name the ledger shard to move the slots to")
	}
	m, err := s.b.Migrations.Start(r.Context(), req.Slots, *req.To)
	if err != nil {
		return 0, nil, err
	}
	s.b.Migrations.Wake()
	return http.StatusAccepted, m, nil
}

func (s *Server) migration(r *http.Request, _ Claims) (int, any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return 0, nil, err
	}
	m, err := s.b.Migrations.Get(r.Context(), id)
	return 200, m, err
}

func (s *Server) migrations(r *http.Request, _ Claims) (int, any, error) {
	before, limit, err := page(r, 20, 500)
	if err != nil {
		return 0, nil, err
	}
	ms, err := s.b.Migrations.List(r.Context(), before, limit)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"migrations": nonNil(ms), "next": next(len(ms), limit, func() string { return strconv.FormatInt(ms[len(ms)-1].ID, 10) })}, nil
}

func (s *Server) cancelMigration(r *http.Request, _ Claims) (int, any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return 0, nil, err
	}
	m, err := s.b.Migrations.Cancel(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	s.b.Migrations.Wake()
	return 200, m, nil
}
