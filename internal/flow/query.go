package flow

import (
	"context"
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

// Statement is a page of a user's entries, from the user's shard.
func (f *Flows) Statement(ctx context.Context, user, before int64, limit int) ([]ledger.Entry, int64, error) {
	return f.Ledgers.For(user).Statement(ctx, user, before, limit)
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
