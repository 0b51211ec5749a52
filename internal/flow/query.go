package flow

import (
	"context"
	"fmt"
	"slices"
	"time"

	"hongbao/internal/group"
	"hongbao/internal/ledger"
	"hongbao/internal/packet"
)

// Wallet is a user's balances, from the user's shard.
func (f *Flows) Wallet(ctx context.Context, user int64) (ledger.Wallet, error) {
	return f.Ledgers.For(user).Wallet(ctx, user)
}

// cursorShardBits: a statement cursor is shard << 53 | posting id (a
// posting id of shard 0 is its own cursor).
const cursorShardBits = 53

// Statement is a page of a user's entries, newest first. A wallet whose
// slot moved between shards has entries on each shard it lived on: the
// stays are apart in time (a move fences the wallet), so the shards'
// entries, each shard's in its own order, merge by time. The cursor names
// the last entry given (its shard and posting id).
func (f *Flows) Statement(ctx context.Context, user, cursor int64, limit int) ([]ledger.Entry, int64, error) {
	cutShard, cutID := int(cursor>>cursorShardBits), cursor&(1<<cursorShardBits-1)
	if cursor < 0 || cutShard >= len(f.Ledgers.Shards) {
		return nil, 0, fmt.Errorf("%w: cursor %d", ledger.ErrInvalid, cursor)
	}
	history := f.Ledgers.Table.History(user)
	if cursor == 0 {
		cutShard = -1
	}
	var cutAt time.Time
	if cursor > 0 && len(history) > 1 {
		var err error
		if cutAt, err = f.Ledgers.Shards[cutShard].PostingTime(ctx, cutID); err != nil {
			return nil, 0, err
		}
	}
	type tagged struct {
		e     ledger.Entry
		shard int
	}
	var all []tagged
	for _, sh := range history {
		l := f.Ledgers.Shards[sh]
		var es []ledger.Entry
		var err error
		switch {
		case cursor == 0:
			es, _, err = l.Statement(ctx, user, 0, limit)
		case sh == cutShard:
			es, _, err = l.Statement(ctx, user, cutID, limit)
		case len(history) > 1:
			es, _, err = l.StatementBefore(ctx, user, cutAt, limit)
		}
		if err != nil {
			return nil, 0, err
		}
		// One more than a page tells whether there is a next one.
		for _, e := range es {
			all = append(all, tagged{e, sh})
		}
		if len(es) == limit {
			more, _, err := l.Statement(ctx, user, es[len(es)-1].PostingID, 1)
			if err != nil {
				return nil, 0, err
			}
			for _, e := range more {
				all = append(all, tagged{e, sh})
			}
		}
	}
	if len(history) > 1 {
		// Newest first across shards; within a shard, its own order.
		slices.SortStableFunc(all, func(a, b tagged) int {
			if a.shard == b.shard {
				return cmpInt(b.e.PostingID, a.e.PostingID)
			}
			return b.e.At.Compare(a.e.At)
		})
	}
	var next int64
	if len(all) > limit {
		all = all[:limit]
		last := all[limit-1]
		next = int64(last.shard)<<cursorShardBits | last.e.PostingID
	}
	out := make([]ledger.Entry, len(all))
	for i, t := range all {
		out[i] = t.e
	}
	return out, next, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// PacketDetail is a packet with its claims, each shown credited once the
// grabber's ledger applied it.
func (f *Flows) PacketDetail(ctx context.Context, id int64) (packet.Detail, error) {
	set, err := f.Set(id)
	if err != nil {
		return packet.Detail{}, err
	}
	return set.Detail(ctx, id, f.Credited)
}

// Sent lists a sender's packets across every set, newest first, before the
// cursor (a packet id; 0 for the first page).
func (f *Flows) Sent(ctx context.Context, sender, before int64, limit int) ([]packet.Packet, error) {
	var all []packet.Packet
	for _, set := range f.Sets {
		ps, err := set.Sent(ctx, sender, before, limit)
		if err != nil {
			return nil, err
		}
		all = append(all, ps...)
	}
	slices.SortFunc(all, func(a, b packet.Packet) int { return cmpDesc(a.ID, b.ID) })
	return all[:min(len(all), limit)], nil
}

// Received lists a user's claims across every set, newest first (by the
// time of the grab, then the claim id), before the cursor (zero for the
// first page).
func (f *Flows) Received(ctx context.Context, user int64, beforeAt time.Time, beforeID int64, limit int) ([]packet.Claim, error) {
	var all []packet.Claim
	for _, set := range f.Sets {
		cs, err := set.Received(ctx, user, beforeAt, beforeID, limit)
		if err != nil {
			return nil, err
		}
		all = append(all, cs...)
	}
	slices.SortFunc(all, func(a, b packet.Claim) int {
		if c := cmpDesc(a.At.UnixNano(), b.At.UnixNano()); c != 0 {
			return c
		}
		return cmpDesc(a.ID, b.ID)
	})
	all = all[:min(len(all), limit)]
	// As the packet's detail does: credited as soon as the ledger applied it,
	// not only once the reconciler has marked it.
	var open []packet.Claim
	for _, c := range all {
		if !c.Credited {
			open = append(open, c)
		}
	}
	if len(open) > 0 {
		done, err := f.Credited(ctx, open)
		if err != nil {
			return nil, err
		}
		for i := range all {
			all[i].Credited = all[i].Credited || done[all[i].ID]
		}
	}
	return all, nil
}

func cmpDesc(a, b int64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// Group returns a group.
func (f *Flows) Group(ctx context.Context, id int64) (group.Group, error) {
	return f.Groups.Get(ctx, id)
}

// IsMember reports whether user is a member of a group.
func (f *Flows) IsMember(ctx context.Context, groupID, user int64) (bool, error) {
	return f.Groups.IsMember(ctx, groupID, user)
}

// Members is a page of a group's members, by user id after the cursor.
func (f *Flows) Members(ctx context.Context, groupID, after int64, limit int) ([]group.Member, error) {
	return f.Groups.Members(ctx, groupID, after, limit)
}
