package packet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/days"
	"hongbao/internal/postgres"
)

// ErrArchived: the packet was sent on a day since archived.
var ErrArchived = days.ErrArchived

// ArchivedDay is one day of a set that Archive took out, or kept and why.
type ArchivedDay struct {
	Day     string `json:"day"`
	Packets int64  `json:"packets"`
	Claims  int64  `json:"claims"`
	Kept    string `json:"kept,omitempty"` // why the day was not archived
}

// Archive detaches the days before day before (never today or later)
// whose packets are all closed and whose claims and refunds are all
// credited: the day's packets, claims and refunds leave together (so the
// escrow the set holds is unchanged), into the schema archive, and the
// packet ids are kept in archived_packets so that a lookup answers
// ErrArchived. A day with money still on its way is kept and says why.
func (s *Set) Archive(ctx context.Context, before time.Time) ([]ArchivedDay, error) {
	if today := days.Of(time.Now()); before.After(today) {
		before = today
	}
	list, err := days.Attached(ctx, s.db, "packets", before)
	if err != nil {
		return nil, fmt.Errorf("packet set %d: archive: %w", s.o.Set, err)
	}
	var out []ArchivedDay
	for _, d := range list {
		a := ArchivedDay{Day: d.Format(time.DateOnly)}
		// Looked at first without a lock: a day with money on its way is
		// kept without holding anyone up. What is closed and credited stays
		// so, and it is looked at again under the lock.
		a.Kept, err = onItsWay(ctx, s.db, d)
		if err == nil && a.Kept == "" {
			err = postgres.InTxLockWait(ctx, s.db, days.LockWait, func(tx pgx.Tx) error {
				if err := days.LockTables(ctx, tx, "packets", "claims"); err != nil {
					return err
				}
				var err error
				if a.Kept, err = onItsWay(ctx, tx, d); err != nil || a.Kept != "" {
					return err
				}
				packets := pgx.Identifier{days.Name("packets", d)}.Sanitize()
				refunds := pgx.Identifier{"archive", days.Name("refunds", d)}.Sanitize()
				if _, err := tx.Exec(ctx, `CREATE TABLE `+refunds+` (LIKE refunds)`); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `WITH m AS (DELETE FROM refunds WHERE packet_id IN (SELECT id FROM `+packets+`) RETURNING *)
					INSERT INTO `+refunds+` SELECT * FROM m`); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `INSERT INTO archived_packets (id, day) SELECT id, $1::date FROM `+packets, d); err != nil {
					return err
				}
				if a.Packets, err = days.Detach(ctx, tx, "packets", d); err != nil {
					return err
				}
				a.Claims, err = days.Detach(ctx, tx, "claims", d)
				return err
			})
		}
		if err != nil {
			return out, fmt.Errorf("packet set %d: archive %s: %w", s.o.Set, a.Day, err)
		}
		if a.Kept == "" {
			s.log.Info("packet day archived", "day", a.Day, "packets", a.Packets, "claims", a.Claims)
		}
		out = append(out, a)
	}
	return out, nil
}

// onItsWay says why the packets of day d cannot leave yet ("": they can):
// packets still open, claims or refunds not yet credited.
func onItsWay(ctx context.Context, q days.Querier, d time.Time) (string, error) {
	packets := pgx.Identifier{days.Name("packets", d)}.Sanitize()
	var open, uncredited, unrefunded int64
	if err := q.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM `+packets+` WHERE state IN ('pending', 'active')),
		(SELECT coalesce(sum(claimed - credited_seq), 0) FROM `+packets+` WHERE credited_seq < claimed)
			+ (SELECT count(*) FROM claims_owed o JOIN `+packets+` p ON p.id = o.packet_id),
		(SELECT count(*) FROM refunds r JOIN `+packets+` p ON p.id = r.packet_id WHERE r.credited_at IS NULL)`).
		Scan(&open, &uncredited, &unrefunded); err != nil || open+uncredited+unrefunded == 0 {
		return "", err
	}
	return fmt.Sprintf("%d packets open, %d claims and %d refunds not yet credited", open, uncredited, unrefunded), nil
}

// missing says why packet id is not in the set: archived with its day, or
// not found.
func (s *Set) missing(ctx context.Context, id int64) error {
	var day time.Time
	err := s.db.QueryRow(ctx, `SELECT day::timestamp AT TIME ZONE 'UTC' FROM archived_packets WHERE id = $1`, id).Scan(&day)
	if err == nil {
		return fmt.Errorf("%w: packet %d was sent on %s, a day since archived", ErrArchived, id, day.UTC().Format(time.DateOnly))
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	return fmt.Errorf("%w: %d", ErrNotFound, id)
}
