package group

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"hongbao/internal/dtx"
)

// BranchPayload is what a group branch carries: who joins which group.
type BranchPayload struct {
	Group int64 `json:"group"`
	User  int64 `json:"user"`
}

// Payload encodes a join branch.
func Payload(groupID, user int64) json.RawMessage {
	b, _ := json.Marshal(BranchPayload{Group: groupID, User: user})
	return b
}

// Participant returns the store as a saga participant: the action joins
// the user (a paid join: already being a member is a definite failure, so
// nobody pays twice), the compensation takes the seat back.
func (s *Store) Participant() dtx.Participant { return dtx.ParticipantFunc(s.do) }

func (s *Store) do(ctx context.Context, c dtx.Call) error {
	var p BranchPayload
	if err := json.Unmarshal(c.Payload, &p); err != nil {
		return dtx.Fail(fmt.Errorf("group branch payload: %w", err))
	}
	ref := c.Ref()
	var err error
	switch c.Op {
	case dtx.OpTry:
		_, err = s.Join(ctx, JoinRequest{GroupID: p.Group, User: p.User, Branch: &ref})
	case dtx.OpCancel:
		_, err = s.Leave(ctx, LeaveRequest{GroupID: p.Group, User: p.User, Branch: &ref})
	default:
		return dtx.Fail(fmt.Errorf("%w: a group join has no %s", ErrInvalid, c.Op))
	}
	for _, definite := range []error{ErrNotFound, ErrGroupFull, ErrBanned, ErrAlreadyMember, ErrInvalid, dtx.ErrTryAfterCancel} {
		if errors.Is(err, definite) {
			return dtx.Fail(err)
		}
	}
	return err
}
