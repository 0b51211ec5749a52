package app

import (
	"context"
	"time"

	"hongbao/internal/days"
	"hongbao/internal/ledger"
	"hongbao/internal/packet"
)

// dayOps are the operators' day partitions of every database of the node.
type dayOps struct{ n *Node }

// PartitionsView lists the day partitions per database.
type PartitionsView struct {
	Ledgers []DBPartitions `json:"ledger_shards"`
	Sets    []DBPartitions `json:"packet_sets"`
}

// DBPartitions are one database's partitioned tables and their days.
type DBPartitions struct {
	Number int              `json:"number"`
	Tables []days.Partition `json:"days"`
}

func (d dayOps) Partitions(ctx context.Context) (any, error) {
	var v PartitionsView
	for _, l := range d.n.Ledgers.Shards {
		ps, err := days.List(ctx, l.DB(), "postings")
		if err != nil {
			return nil, err
		}
		v.Ledgers = append(v.Ledgers, DBPartitions{Number: l.Shard(), Tables: ps})
	}
	for _, s := range d.n.Sets {
		var all []days.Partition
		for _, t := range []string{"packets", "claims"} {
			ps, err := days.List(ctx, s.DB(), t)
			if err != nil {
				return nil, err
			}
			all = append(all, ps...)
		}
		v.Sets = append(v.Sets, DBPartitions{Number: s.Number(), Tables: all})
	}
	return v, nil
}

// ArchiveReport is what one archive run did, per database.
type ArchiveReport struct {
	Before  string           `json:"before"`
	Ledgers []LedgerArchived `json:"ledger_shards"`
	Sets    []SetArchived    `json:"packet_sets"`
}

// LedgerArchived are the journal days one ledger shard archived.
type LedgerArchived struct {
	Shard int               `json:"shard"`
	Days  []ledger.Archived `json:"days"`
}

// SetArchived are the days one packet set archived or kept.
type SetArchived struct {
	Set  int                  `json:"set"`
	Days []packet.ArchivedDay `json:"days"`
}

// Archive runs every database's archive of the days before before. It
// is safe to repeat and to run on any node: what is archived stays so,
// and a day that cannot go yet says why.
func (d dayOps) Archive(ctx context.Context, before time.Time) (any, error) {
	rep := ArchiveReport{Before: before.Format(time.DateOnly)}
	for _, l := range d.n.Ledgers.Shards {
		ds, err := l.Archive(ctx, before)
		if err != nil {
			return nil, err
		}
		rep.Ledgers = append(rep.Ledgers, LedgerArchived{Shard: l.Shard(), Days: nonNilSlice(ds)})
	}
	for _, s := range d.n.Sets {
		ds, err := s.Archive(ctx, before)
		if err != nil {
			return nil, err
		}
		rep.Sets = append(rep.Sets, SetArchived{Set: s.Number(), Days: nonNilSlice(ds)})
	}
	return rep, nil
}

func (d dayOps) ArchivedThrough(ctx context.Context, user int64) (time.Time, error) {
	return d.n.Ledgers.For(user).ArchivedThrough(ctx)
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
