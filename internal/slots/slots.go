// Package slots keeps the slot table (1024 slots -> ledger shard) in the
// coordinator's database and moves slots between shards while traffic goes
// on: a migration is a saga of recorded, resumable steps (fence, copy,
// verify, switch, release, clean), and until the switch it can be
// cancelled and undone.
package slots

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/ledger"
	"hongbao/internal/postgres"
	"hongbao/internal/shard"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// Migrations are the slot table and the migrations' log, in the
// coordinator's database.
func Migrations() []postgres.Migration { return postgres.Embedded("slots", sqlFS, "sql") }

// Errors a caller branches on.
var (
	ErrInvalid  = errors.New("invalid migration")
	ErrNotFound = errors.New("migration not found")
	// ErrTooLate: a migration past its switch moves only forward.
	ErrTooLate = errors.New("the migration has switched the slots already: move them back with another migration")
	// ErrCrash is what a test's hook returns to stop a migration as if the
	// process died there.
	ErrCrash = errors.New("crash (test hook)")
)

const notifyChannel = "hongbao_slots"

// States of a migration.
const (
	Fencing    = "fencing"
	Copying    = "copying"
	Verifying  = "verifying"
	Switching  = "switching"
	Releasing  = "releasing"
	Cleaning   = "cleaning"
	Done       = "done"
	Cancelling = "cancelling"
	Cancelled  = "cancelled"
)

// Options configure the slot table and its migrations.
type Options struct {
	DB      *pgxpool.Pool    // the coordinator's database
	Ledgers []*ledger.Ledger // by shard number
	Table   *shard.Table
	// DrainWait bounds how long fencing waits for the moving wallets' holds
	// and incoming transfers to resolve (default 10 s); past it the
	// migration is cancelled.
	DrainWait time.Duration
	// Hook, when set, is called after each step's work with "after:<state>"
	// and may return ErrCrash (tests).
	Hook   func(step string) error
	Logger *slog.Logger
}

// Slots is the slot table of a node and the driver of migrations.
type Slots struct {
	o    Options
	log  *slog.Logger
	wake chan struct{}
}

// Migration is one move of slots from a shard to another.
type Migration struct {
	ID         int64      `json:"id"`
	Slots      []int      `json:"slots"`
	From       int        `json:"from"`
	To         int        `json:"to"`
	State      string     `json:"state"`
	Wallets    int        `json:"wallets"`
	Amount     int64      `json:"amount_fen"`
	Error      string     `json:"error,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Steps      []Step     `json:"steps,omitempty"`
}

// Step is one recorded transition of a migration.
type Step struct {
	State string    `json:"state"`
	Note  string    `json:"note,omitempty"`
	At    time.Time `json:"at"`
}

// New seeds the stored table when it is empty (slot i on shard i mod n, as
// shard.NewTable spreads them) and loads it into the node's table.
func New(ctx context.Context, o Options) (*Slots, error) {
	if o.DrainWait == 0 {
		o.DrainWait = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Slots{o: o, log: o.Logger, wake: make(chan struct{}, 1)}
	err := pgx.BeginFunc(ctx, o.DB, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE slot_map IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM slot_map`).Scan(&n); err != nil || n > 0 {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO slot_map (slot, shard) SELECT s, s % $1 FROM generate_series(0, 1023) s`, len(o.Ledgers)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO slot_stays (slot, shard, since) SELECT slot, shard, '-infinity' FROM slot_map`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO slot_version (version) VALUES (1)`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("slot table: %w", err)
	}
	return s, s.Load(ctx)
}

// Load reads the stored table into the node's table.
func (s *Slots) Load(ctx context.Context) error {
	var version int64
	var m [shard.Slots]int
	var moving [shard.Slots]bool
	var history [shard.Slots][]int
	err := pgx.BeginTxFunc(ctx, s.o.DB, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT version FROM slot_version`).Scan(&version); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT slot, shard FROM slot_map`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var slot, sh int
			if err := rows.Scan(&slot, &sh); err != nil {
				rows.Close()
				return err
			}
			m[slot] = sh
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT slot, shard FROM slot_stays ORDER BY slot, since`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var slot, sh int
			if err := rows.Scan(&slot, &sh); err != nil {
				rows.Close()
				return err
			}
			if !slices.Contains(history[slot], sh) {
				history[slot] = append(history[slot], sh)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT ms.slot FROM slot_migration_slots ms JOIN slot_migrations m ON m.id = ms.migration
			WHERE m.state IN ('fencing', 'copying', 'verifying', 'switching', 'releasing', 'cancelling')`)
		if err != nil {
			return err
		}
		slotsMoving, err := pgx.CollectRows(rows, pgx.RowTo[int])
		for _, sl := range slotsMoving {
			moving[sl] = true
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("load the slot table: %w", err)
	}
	return s.o.Table.Set(version, m, moving, history)
}

// Watch follows the stored table until ctx ends: at once on NOTIFY, and
// every interval anyway (a lost notification, a restarted database).
func (s *Slots) Watch(ctx context.Context, every time.Duration) {
	wake := make(chan struct{}, 1)
	go s.listen(ctx, wake)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-t.C:
		}
		if err := s.Load(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("slot table", "err", err)
		}
	}
}

func (s *Slots) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		conn, err := s.o.DB.Acquire(ctx)
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err == nil {
			for {
				if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
					break
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}
		conn.Release()
		sleep(ctx, time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Start records a migration of slots to shard to; all of them must be on
// one shard now and in no other unfinished migration. Run (or the resumer
// of any node) then drives it.
func (s *Slots) Start(ctx context.Context, slots []int, to int) (Migration, error) {
	if len(slots) == 0 || len(slots) > shard.Slots {
		return Migration{}, fmt.Errorf("%w: name 1 to %d slots", ErrInvalid, shard.Slots)
	}
	slots = slices.Clone(slots)
	slices.Sort(slots)
	for i, sl := range slots {
		if sl < 0 || sl >= shard.Slots {
			return Migration{}, fmt.Errorf("%w: slot %d out of range 0..%d", ErrInvalid, sl, shard.Slots-1)
		}
		if i > 0 && slots[i-1] == sl {
			return Migration{}, fmt.Errorf("%w: slot %d named twice", ErrInvalid, sl)
		}
	}
	if to < 0 || to >= len(s.o.Ledgers) {
		return Migration{}, fmt.Errorf("%w: shard %d out of range 0..%d", ErrInvalid, to, len(s.o.Ledgers)-1)
	}
	var id int64
	err := pgx.BeginFunc(ctx, s.o.DB, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM slot_map WHERE slot = ANY($1) FOR UPDATE`, slots); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT DISTINCT shard FROM slot_map WHERE slot = ANY($1)`, slots)
		if err != nil {
			return err
		}
		from, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return err
		}
		if len(from) != 1 {
			return fmt.Errorf("%w: the slots are on shards %v; move the slots of one shard at a time", ErrInvalid, from)
		}
		if from[0] == to {
			return fmt.Errorf("%w: the slots are on shard %d already", ErrInvalid, to)
		}
		if err := tx.QueryRow(ctx, `INSERT INTO slot_migrations (slots, from_shard, to_shard, state) VALUES ($1, $2, $3, 'fencing') RETURNING id`,
			slots, from[0], to).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO slot_migration_slots (slot, migration) SELECT s, $2 FROM unnest($1::int[]) s`, slots, id); err != nil {
			if postgres.IsUniqueViolation(err, "") {
				return fmt.Errorf("%w: a slot of %v is in another unfinished migration", ErrInvalid, slots)
			}
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO slot_migration_steps (migration, state, note) VALUES ($1, 'fencing', $2)`,
			id, fmt.Sprintf("move slots %v from shard %d to shard %d", slots, from[0], to)); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "NOTIFY "+notifyChannel)
		return err
	})
	if err != nil {
		return Migration{}, fmt.Errorf("start migration: %w", err)
	}
	if err := s.Load(ctx); err != nil {
		return Migration{}, err
	}
	return s.Get(ctx, id)
}

// Cancel asks a migration that has not switched yet to undo itself.
func (s *Slots) Cancel(ctx context.Context, id int64) (Migration, error) {
	tag, err := s.o.DB.Exec(ctx, `UPDATE slot_migrations SET state = 'cancelling', updated_at = now(), error = 'cancelled by an operator'
		WHERE id = $1 AND state IN ('fencing', 'copying', 'verifying')`, id)
	if err != nil {
		return Migration{}, err
	}
	if tag.RowsAffected() == 0 {
		m, err := s.Get(ctx, id)
		if err != nil {
			return m, err
		}
		if m.State == Cancelling || m.State == Cancelled {
			return m, nil
		}
		return m, fmt.Errorf("%w (migration %d is %s)", ErrTooLate, id, m.State)
	}
	if _, err := s.o.DB.Exec(ctx, `INSERT INTO slot_migration_steps (migration, state, note) VALUES ($1, 'cancelling', 'cancelled by an operator')`, id); err != nil {
		return Migration{}, err
	}
	return s.Get(ctx, id)
}

// Get returns a migration with its steps.
func (s *Slots) Get(ctx context.Context, id int64) (Migration, error) {
	ms, err := s.list(ctx, `WHERE id = $1`, id)
	if err != nil {
		return Migration{}, err
	}
	if len(ms) == 0 {
		return Migration{}, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	m := ms[0]
	rows, err := s.o.DB.Query(ctx, `SELECT state, note, at FROM slot_migration_steps WHERE migration = $1 ORDER BY seq`, id)
	if err != nil {
		return m, err
	}
	m.Steps, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Step])
	return m, err
}

// List returns the latest migrations, newest first.
func (s *Slots) List(ctx context.Context, before int64, limit int) ([]Migration, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	return s.list(ctx, `WHERE id < $1 ORDER BY id DESC LIMIT $2`, before, limit)
}

func (s *Slots) list(ctx context.Context, tail string, args ...any) ([]Migration, error) {
	rows, err := s.o.DB.Query(ctx, `SELECT id, slots, from_shard, to_shard, state, wallets, amount, error, created_at, updated_at, finished_at
		FROM slot_migrations `+tail, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Migration, error) {
		var m Migration
		err := r.Scan(&m.ID, &m.Slots, &m.From, &m.To, &m.State, &m.Wallets, &m.Amount, &m.Error, &m.CreatedAt, &m.UpdatedAt, &m.FinishedAt)
		return m, err
	})
}

// Resume drives every unfinished migration this node can take (another
// node may be driving one: it is skipped). It returns the first error.
func (s *Slots) Resume(ctx context.Context) error {
	rows, err := s.o.DB.Query(ctx, `SELECT id FROM slot_migrations WHERE state NOT IN ('done', 'cancelled') ORDER BY id`)
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	var first error
	for _, id := range ids {
		if _, err := s.Run(ctx, id); err != nil && first == nil && !errors.Is(err, ErrDriven) {
			first = err
		}
	}
	return first
}

// Keep resumes unfinished migrations every interval until ctx ends, so a
// migration whose driver died goes on from its last recorded step.
func (s *Slots) Keep(ctx context.Context, every time.Duration) {
	for {
		if err := s.Resume(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, ErrCrash) {
			s.log.Warn("slot migration", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-time.After(every):
		}
	}
}

// Wake makes Keep look for migrations to drive now (one just started).
func (s *Slots) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// ErrDriven: another driver (this node's resumer, another node) holds the
// migration now; it goes on there.
var ErrDriven = errors.New("another node drives this migration")

// lockKey is the advisory lock a driver of migration id holds.
func lockKey(id int64) int64 { return 0x68627360<<24 | id }

// Run drives a migration from its recorded state to done (or cancelled),
// holding its advisory lock on the coordinator's database.
func (s *Slots) Run(ctx context.Context, id int64) (Migration, error) {
	conn, err := s.o.DB.Acquire(ctx)
	if err != nil {
		return Migration{}, err
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey(id)).Scan(&got); err != nil {
		return Migration{}, err
	}
	if !got {
		return Migration{}, ErrDriven
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey(id)) //nolint:errcheck
	for {
		m, err := s.Get(ctx, id)
		if err != nil {
			return m, err
		}
		if m.State == Done || m.State == Cancelled {
			return m, nil
		}
		next, note, err := s.step(ctx, m)
		if err != nil {
			if errors.Is(err, ErrCrash) {
				return m, err
			}
			if m.State == Cancelling || !errors.Is(err, errCancel) {
				_, _ = s.o.DB.Exec(ctx, `UPDATE slot_migrations SET error = $2, updated_at = now() WHERE id = $1`, id, err.Error())
				return m, err
			}
			next, note = Cancelling, err.Error()
		}
		if err := s.hook("after:" + m.State); err != nil {
			return m, err
		}
		if err := s.advance(ctx, m, next, note); err != nil {
			return m, err
		}
	}
}

// errCancel: the step found the migration cannot go on; it is cancelled.
var errCancel = errors.New("cannot go on")

func (s *Slots) hook(step string) error {
	if s.o.Hook == nil {
		return nil
	}
	return s.o.Hook(step)
}

// advance records the next state (the switch records it with the table,
// in one transaction, see step).
func (s *Slots) advance(ctx context.Context, m Migration, next, note string) error {
	if next == "" {
		return nil // recorded by the step itself
	}
	return pgx.BeginFunc(ctx, s.o.DB, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE slot_migrations SET state = $3, updated_at = now(),
			finished_at = CASE WHEN $3 IN ('done', 'cancelled') THEN now() END,
			error = CASE WHEN $3 = 'cancelling' AND error = '' THEN $4 ELSE error END
			WHERE id = $1 AND state = $2`, m.ID, m.State, next, note)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil // someone (an operator's cancel) moved it meanwhile: read it again
		}
		if _, err := tx.Exec(ctx, `INSERT INTO slot_migration_steps (migration, state, note) VALUES ($1, $2, $3)`, m.ID, next, note); err != nil {
			return err
		}
		if next == Done || next == Cancelled {
			if _, err := tx.Exec(ctx, `DELETE FROM slot_migration_slots WHERE migration = $1`, m.ID); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, "NOTIFY "+notifyChannel)
		return err
	})
}

// step does the work of a migration's state and says the next one.
func (s *Slots) step(ctx context.Context, m Migration) (string, string, error) {
	src, dst := s.o.Ledgers[m.From], s.o.Ledgers[m.To]
	switch m.State {
	case Fencing:
		// The shard they go to first, so that a node routing by a stale
		// table cannot write there; then the shard they leave, as soon as
		// none of its moving wallets holds money or waits for some.
		if err := dst.Fence(ctx, m.ID, m.Slots, "incoming"); err != nil {
			return "", "", err
		}
		deadline := time.Now().Add(s.o.DrainWait)
		for {
			if err := src.Fence(ctx, m.ID, m.Slots, "frozen"); err != nil {
				return "", "", err
			}
			busy, err := src.Busy(ctx, m.Slots)
			if err != nil {
				return "", "", err
			}
			if busy == 0 {
				return Copying, "fenced: writes of the slots' wallets wait or are told to retry", nil
			}
			// Let their holds and transfers finish, then try again.
			if err := src.Unfence(ctx, m.ID, m.Slots, ledger.FenceRestore); err != nil {
				return "", "", err
			}
			if time.Now().After(deadline) {
				return "", "", fmt.Errorf("%w: %d wallets of the slots still hold money or wait for incoming transfers after %s", errCancel, busy, s.o.DrainWait)
			}
			sleep(ctx, 100*time.Millisecond)
			if ctx.Err() != nil {
				return "", "", ctx.Err()
			}
		}
	case Copying:
		out, err := src.MigrateOut(ctx, m.ID, m.Slots)
		if err != nil {
			return "", "", err
		}
		if err := s.hook("between:copying"); err != nil {
			return "", "", err
		}
		// The global transactions still running: their barriers come along.
		rows, err := s.o.DB.Query(ctx, `SELECT gid FROM dtx_global WHERE finished_at IS NULL`)
		if err != nil {
			return "", "", err
		}
		gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return "", "", err
		}
		in, err := dst.MigrateIn(ctx, m.ID, src, out, gids)
		if err != nil {
			return "", "", err
		}
		var total int64
		for _, w := range in {
			total += int64(w.Amount)
		}
		if _, err := s.o.DB.Exec(ctx, `UPDATE slot_migrations SET wallets = $2, amount = $3 WHERE id = $1`, m.ID, len(in), total); err != nil {
			return "", "", err
		}
		return Verifying, fmt.Sprintf("copied %d wallets holding %d fen", len(in), total), nil
	case Verifying:
		out, err := src.MigrateOut(ctx, m.ID, m.Slots) // the recorded moves
		if err != nil {
			return "", "", err
		}
		in, err := dst.MigrateIn(ctx, m.ID, src, out, nil) // the recorded moves
		if err != nil {
			return "", "", err
		}
		if !slices.Equal(out, in) {
			return "", "", fmt.Errorf("%w: %d wallets taken out, %d brought in, or their amounts differ", errCancel, len(out), len(in))
		}
		users := make([]int64, len(in))
		for i, w := range in {
			users[i] = w.User
		}
		got, err := dst.Balances(ctx, users)
		if err != nil {
			return "", "", err
		}
		left, err := src.Balances(ctx, users)
		if err != nil {
			return "", "", err
		}
		var sum int64
		for _, w := range in {
			if got[w.User] != w.Amount || left[w.User] != 0 {
				return "", "", fmt.Errorf("%w: wallet %d has %s on shard %d and %s left on shard %d, moved %s", errCancel,
					w.User, got[w.User], m.To, left[w.User], m.From, w.Amount)
			}
			sum += int64(w.Amount)
		}
		return Switching, fmt.Sprintf("verified: %d wallets, %d fen, on shard %d exactly as they left shard %d", len(in), sum, m.To, m.From), nil
	case Switching:
		err := pgx.BeginFunc(ctx, s.o.DB, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE slot_map SET shard = $2 WHERE slot = ANY($1)`, m.Slots, m.To); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE slot_version SET version = version + 1`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO slot_stays (slot, shard) SELECT s, $2 FROM unnest($1::int[]) s`, m.Slots, m.To); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `UPDATE slot_migrations SET state = 'releasing', updated_at = now() WHERE id = $1 AND state = 'switching'`, m.ID)
			if err != nil {
				return err
			}
			if tag.RowsAffected() != 1 {
				return fmt.Errorf("migration %d is no longer switching", m.ID)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO slot_migration_steps (migration, state, note) VALUES ($1, 'releasing', $2)`,
				m.ID, fmt.Sprintf("switched: the slots are on shard %d in the table", m.To)); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "NOTIFY "+notifyChannel)
			return err
		})
		if err != nil {
			return "", "", err
		}
		return "", "", s.Load(ctx)
	case Releasing:
		if err := src.Unfence(ctx, m.ID, m.Slots, ledger.FenceGone); err != nil {
			return "", "", err
		}
		if err := dst.Unfence(ctx, m.ID, m.Slots, ledger.FenceDrop); err != nil {
			return "", "", err
		}
		return Cleaning, "released: the wallets are written on their new shard; the old one tells stale routers to retry", nil
	case Cleaning:
		out, err := src.MigrateOut(ctx, m.ID, m.Slots)
		if err != nil {
			return "", "", err
		}
		users := make([]int64, len(out))
		for i, w := range out {
			users[i] = w.User
		}
		if err := src.Forget(ctx, users); err != nil {
			return "", "", err
		}
		return Done, "cleaned: the payment orders that moved are gone from the old shard", nil
	case Cancelling:
		if err := dst.UndoMove(ctx, m.ID, "in"); err != nil {
			return "", "", err
		}
		if err := src.UndoMove(ctx, m.ID, "out"); err != nil {
			return "", "", err
		}
		if err := src.Unfence(ctx, m.ID, m.Slots, ledger.FenceRestore); err != nil {
			return "", "", err
		}
		if err := dst.Unfence(ctx, m.ID, m.Slots, ledger.FenceRestore); err != nil {
			return "", "", err
		}
		return Cancelled, "cancelled: every wallet back as it was on shard " + fmt.Sprint(m.From), nil
	}
	return "", "", fmt.Errorf("migration %d in unknown state %q", m.ID, m.State)
}
