package group

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/dtx"
	"hongbao/internal/events"
)

// Every change to a group's membership first takes the lock of the group
// row (the seat UPDATE of join, or lockGroup), so joins, leaves and bans of
// one group run one after the other, and each reads what the one before it
// committed. Nothing locks a row that may be missing.

// JoinRequest adds User to a group.
type JoinRequest struct {
	GroupID int64
	User    int64
	// Branch, when set, makes the join a saga action (the paid entry): it
	// runs the participant barrier (dtx.OpTry) in the same transaction, and
	// a user who is already a member is ErrAlreadyMember.
	Branch *dtx.BranchRef
}

// JoinResult is what a join did.
type JoinResult struct {
	// Joined: the user was added, by this call or, for a repeated saga
	// action, by its first attempt.
	Joined bool
	// Already: the user was a member before; nothing changed (free joins only).
	Already bool
}

// Join adds a user to a group. It fails with ErrNotFound, ErrGroupFull or
// ErrBanned and then changes nothing. Without a Branch, joining a group one
// is already in is a no-op (Already). With a Branch, a repeated call answers
// as the first one did and changes nothing, a call that arrives after the
// branch was compensated without it (empty cancel) is dtx.ErrTryAfterCancel,
// and joining a group one is already in is ErrAlreadyMember.
func (s *Store) Join(ctx context.Context, req JoinRequest) (JoinResult, error) {
	if err := validMember(req.GroupID, req.User, req.Branch); err != nil {
		return JoinResult{}, fmt.Errorf("join group %d: %w", req.GroupID, err)
	}
	var res JoinResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if req.Branch != nil {
			v, err := dtx.Barrier(ctx, tx, *req.Branch, dtx.OpTry)
			if err != nil {
				return err
			}
			if v == dtx.Repeat {
				res = JoinResult{Joined: true}
				return nil
			}
		}
		already, err := join(ctx, tx, req.GroupID, req.User, s.now())
		if err != nil {
			return err
		}
		if already && req.Branch != nil {
			return ErrAlreadyMember
		}
		res = JoinResult{Joined: !already, Already: already}
		return nil
	})
	if err != nil {
		return JoinResult{}, fmt.Errorf("join group %d as user %d: %w", req.GroupID, req.User, err)
	}
	return res, nil
}

// join adds user to the group and reports already when the user was a
// member before, in which case nothing changed. The conditional UPDATE takes
// a seat only while one is free and, when it does, holds the group row's
// lock to the end of the transaction.
func join(ctx context.Context, tx pgx.Tx, groupID, user int64, now time.Time) (already bool, err error) {
	tag, err := tx.Exec(ctx, `UPDATE groups SET member_count = member_count + 1
		WHERE id = $1 AND member_count < capacity`, groupID)
	if err != nil {
		return false, fmt.Errorf("take a seat: %w", err)
	}
	seated := tag.RowsAffected() == 1
	st, err := userStatus(ctx, tx, groupID, user)
	if err != nil {
		return false, err
	}
	switch {
	case !st.exists:
		return false, ErrNotFound
	case st.member:
		if seated {
			if err := freeSeat(ctx, tx, groupID); err != nil {
				return false, err
			}
		}
		return true, nil
	case st.banned:
		return false, ErrBanned
	case !seated:
		return false, ErrGroupFull
	}
	if _, err := tx.Exec(ctx, `INSERT INTO members (group_id, user_id, joined_at) VALUES ($1, $2, $3)`,
		groupID, user, now); err != nil {
		return false, fmt.Errorf("add member: %w", err)
	}
	// Joined, told to the group in the same transaction. A member who left
	// and joins again is a new event (the join time tells them apart).
	return false, events.Write(ctx, tx, events.New(fmt.Sprintf("group.joined:%d:%d:%d", groupID, user, now.UnixMicro()), events.GroupJoined,
		events.GroupConversation(groupID), 0, map[string]int64{"group": groupID, "user": user}, now))
}

// LeaveRequest removes User from a group.
type LeaveRequest struct {
	GroupID int64
	User    int64
	// Branch, when set, makes the leave the compensation of a paid Join
	// with the same branch (dtx.OpCancel): it removes the member only if
	// that join ran here.
	Branch *dtx.BranchRef
}

// LeaveResult is what a leave did.
type LeaveResult struct {
	// Left: this call removed the user from the group.
	Left bool
}

// Leave removes a user from a group; the owner cannot leave (ErrInvalid).
// Without a Branch, leaving a group one is not in is a no-op. With a Branch
// it compensates the paid Join of that branch: when the join never ran here
// (empty cancel) or the compensation already ran, it succeeds and changes
// nothing, and a late join of the branch is then refused.
func (s *Store) Leave(ctx context.Context, req LeaveRequest) (LeaveResult, error) {
	if err := validMember(req.GroupID, req.User, req.Branch); err != nil {
		return LeaveResult{}, fmt.Errorf("leave group %d: %w", req.GroupID, err)
	}
	var res LeaveResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		res = LeaveResult{}
		if req.Branch != nil {
			v, err := dtx.Barrier(ctx, tx, *req.Branch, dtx.OpCancel)
			if err != nil {
				return err
			}
			if v != dtx.Run {
				return nil
			}
		}
		owner, err := lockGroup(ctx, tx, req.GroupID)
		if err != nil {
			return err
		}
		if owner == req.User {
			return fmt.Errorf("%w: the owner cannot leave the group", ErrInvalid)
		}
		res.Left, err = removeMember(ctx, tx, req.GroupID, req.User)
		return err
	})
	if err != nil {
		return LeaveResult{}, fmt.Errorf("leave group %d as user %d: %w", req.GroupID, req.User, err)
	}
	if res.Left && req.Branch != nil {
		s.log.Info("paid join compensated", "group_id", req.GroupID, "user_id", req.User, "gid", req.Branch.GID)
	}
	return res, nil
}

// Ban removes a user from a group, if a member, and keeps them out: later
// joins are ErrBanned. Banning twice is a no-op; the owner cannot be
// banned (ErrInvalid).
func (s *Store) Ban(ctx context.Context, groupID, user int64) error {
	if err := validMember(groupID, user, nil); err != nil {
		return fmt.Errorf("ban from group %d: %w", groupID, err)
	}
	var removed bool
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		owner, err := lockGroup(ctx, tx, groupID)
		if err != nil {
			return err
		}
		if owner == user {
			return fmt.Errorf("%w: the owner cannot be banned", ErrInvalid)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO banned (group_id, user_id, banned_at) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, groupID, user, s.now()); err != nil {
			return fmt.Errorf("record ban: %w", err)
		}
		removed, err = removeMember(ctx, tx, groupID, user)
		return err
	})
	if err != nil {
		return fmt.Errorf("ban user %d from group %d: %w", user, groupID, err)
	}
	s.log.Info("user banned", "group_id", groupID, "user_id", user, "removed", removed)
	return nil
}

// lockGroup takes the lock the seat UPDATE of join takes and returns the
// owner.
func lockGroup(ctx context.Context, tx pgx.Tx, groupID int64) (owner int64, err error) {
	err = tx.QueryRow(ctx, `SELECT owner FROM groups WHERE id = $1 FOR NO KEY UPDATE`, groupID).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("lock group: %w", err)
	}
	return owner, nil
}

// removeMember deletes the membership, if any, and frees its seat. It
// reports whether there was one. The group row must be locked.
func removeMember(ctx context.Context, tx pgx.Tx, groupID, user int64) (bool, error) {
	tag, err := tx.Exec(ctx, `DELETE FROM members WHERE group_id = $1 AND user_id = $2`, groupID, user)
	if err != nil {
		return false, fmt.Errorf("remove member: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	return true, freeSeat(ctx, tx, groupID)
}

func freeSeat(ctx context.Context, tx pgx.Tx, groupID int64) error {
	if _, err := tx.Exec(ctx, `UPDATE groups SET member_count = member_count - 1 WHERE id = $1`, groupID); err != nil {
		return fmt.Errorf("free a seat: %w", err)
	}
	return nil
}

func validMember(groupID, user int64, branch *dtx.BranchRef) error {
	switch {
	case groupID <= 0:
		return fmt.Errorf("%w: group id %d must be positive", ErrInvalid, groupID)
	case user <= 0:
		return fmt.Errorf("%w: user id %d must be positive", ErrInvalid, user)
	case branch != nil && (branch.GID == "" || branch.Branch == ""):
		return fmt.Errorf("%w: branch needs a gid and a branch id", ErrInvalid)
	}
	return nil
}

// AddMembers adds many users at once (importing an existing IM group, an
// operator's bulk add): users already in the group or banned from it are
// skipped, the rest join, and the whole call fails with ErrGroupFull if
// they do not all fit. It returns how many joined.
func (s *Store) AddMembers(ctx context.Context, groupID int64, users []int64) (int, error) {
	for _, u := range users {
		if u <= 0 {
			return 0, fmt.Errorf("%w: user id %d", ErrInvalid, u)
		}
	}
	var added int
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := lockGroup(ctx, tx, groupID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO members (group_id, user_id, joined_at)
			SELECT $1, u, $3 FROM unnest($2::bigint[]) AS u
			WHERE NOT EXISTS (SELECT 1 FROM banned b WHERE b.group_id = $1 AND b.user_id = u)
			ON CONFLICT DO NOTHING`, groupID, users, s.now())
		if err != nil {
			return fmt.Errorf("add members: %w", err)
		}
		added = int(tag.RowsAffected())
		tag, err = tx.Exec(ctx, `UPDATE groups SET member_count = member_count + $2 WHERE id = $1 AND member_count + $2 <= capacity`, groupID, added)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: %d more members do not fit", ErrGroupFull, added)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("add %d members to group %d: %w", len(users), groupID, err)
	}
	return added, nil
}
