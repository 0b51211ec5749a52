package group_test

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"hongbao/internal/dtx/dtxtest"
	"hongbao/internal/group"
	"hongbao/internal/pgtest"
)

func TestParticipantConformance(t *testing.T) {
	t.Parallel()
	s := group.New(pgtest.NewDB(t, schema), group.Options{})
	var next atomic.Int64
	dtxtest.Run(t, dtxtest.Subject{
		Participant: s.Participant(),
		Saga:        true,
		Fresh: func(t *testing.T) json.RawMessage {
			id := next.Add(1)
			if _, err := s.Create(t.Context(), group.CreateRequest{ID: id, Owner: 1, Capacity: 10, Fee: 100}); err != nil {
				t.Fatal(err)
			}
			return group.Payload(id, 2)
		},
		State: func(t *testing.T, p json.RawMessage) any {
			var bp group.BranchPayload
			if err := json.Unmarshal(p, &bp); err != nil {
				t.Fatal(err)
			}
			g, err := s.Get(t.Context(), bp.Group)
			if err != nil {
				t.Fatal(err)
			}
			in, err := s.IsMember(t.Context(), bp.Group, bp.User)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("members %d, user in %v", g.MemberCount, in)
		},
	})
}
