package dtx

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/postgres"
)

//go:embed barriersql/*.sql
var barrierFS embed.FS

// BarrierMigrations create the barrier table; every participant database
// applies them.
func BarrierMigrations() []postgres.Migration {
	return postgres.Embedded("dtx_barrier", barrierFS, "barriersql")
}

// Op is a TCC phase as seen by a participant.
type Op string

// The three phases.
const (
	OpTry     Op = "try"
	OpConfirm Op = "confirm"
	OpCancel  Op = "cancel"
)

// BranchRef names one branch of one global transaction.
type BranchRef struct {
	GID    string
	Branch string
}

func (b BranchRef) String() string { return b.GID + "/" + b.Branch }

// ErrTryAfterCancel refuses a Try that arrives after its branch was
// cancelled (anti-hanging): the resource must not be reserved any more.
var ErrTryAfterCancel = errors.New("dtx: try refused: branch already cancelled")

// Verdict is what the barrier decided for a call.
type Verdict int

const (
	// Run: first time for this op; do the business change in the same tx.
	Run Verdict = iota
	// Repeat: this op already ran (and committed); answer as before.
	Repeat
	// EmptyCancel: cancel with no try before it; record it and succeed.
	EmptyCancel
)

// Barrier records op for the branch inside tx and says whether the business
// change must run. It must be called in the same local transaction as that
// change, under READ COMMITTED: a concurrent duplicate waits on the primary
// key until the first commits or rolls back. It takes no lock on missing
// rows, so it cannot deadlock the way a SELECT ... FOR UPDATE fence can.
//
// For OpTry it returns ErrTryAfterCancel when a cancel came first.
func Barrier(ctx context.Context, tx pgx.Tx, ref BranchRef, op Op) (Verdict, error) {
	if ref.GID == "" || ref.Branch == "" {
		return 0, errors.New("dtx: barrier needs a gid and a branch")
	}
	switch op {
	case OpTry:
		inserted, err := insertBarrier(ctx, tx, ref, OpTry, OpTry)
		if err != nil || inserted {
			return Run, err
		}
		var reason Op
		if err := tx.QueryRow(ctx, `SELECT reason FROM dtx_barrier WHERE gid = $1 AND branch = $2 AND op = 'try'`,
			ref.GID, ref.Branch).Scan(&reason); err != nil {
			return 0, fmt.Errorf("dtx: read barrier %s: %w", ref, err)
		}
		if reason == OpCancel {
			return 0, ErrTryAfterCancel
		}
		return Repeat, nil
	case OpConfirm:
		inserted, err := insertBarrier(ctx, tx, ref, OpConfirm, OpConfirm)
		if err != nil || inserted {
			return Run, err
		}
		return Repeat, nil
	case OpCancel:
		// Occupy the try slot first: if it was free, no try ever ran here
		// and none will (a late try finds this row and is refused).
		emptyCancel, err := insertBarrier(ctx, tx, ref, OpTry, OpCancel)
		if err != nil {
			return 0, err
		}
		inserted, err := insertBarrier(ctx, tx, ref, OpCancel, OpCancel)
		if err != nil {
			return 0, err
		}
		switch {
		case !inserted:
			return Repeat, nil
		case emptyCancel:
			return EmptyCancel, nil
		default:
			return Run, nil
		}
	}
	return 0, fmt.Errorf("dtx: unknown op %q", op)
}

func insertBarrier(ctx context.Context, tx pgx.Tx, ref BranchRef, op, reason Op) (bool, error) {
	tag, err := tx.Exec(ctx, `INSERT INTO dtx_barrier (gid, branch, op, reason) VALUES ($1, $2, $3, $4)
		ON CONFLICT DO NOTHING`, ref.GID, ref.Branch, string(op), string(reason))
	if err != nil {
		return false, fmt.Errorf("dtx: barrier %s %s: %w", ref, op, err)
	}
	return tag.RowsAffected() == 1, nil
}
