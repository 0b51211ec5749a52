package dtx

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/idempotency"
	"hongbao/internal/postgres"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// Migrations are the schema of the coordinator's database.
func Migrations() [][]postgres.Migration {
	return [][]postgres.Migration{postgres.Embedded("dtx", sqlFS, "sql")}
}

// Kind of global transaction.
type Kind string

// The two protocols.
const (
	TCC  Kind = "tcc"
	Saga Kind = "saga"
)

// State of a global transaction. A saga uses trying while it drives its
// actions forward and cancelling while it compensates.
type State string

// States; committed and cancelled are final.
const (
	Trying     State = "trying"
	Confirming State = "confirming"
	Cancelling State = "cancelling"
	Committed  State = "committed"
	Cancelled  State = "cancelled"
)

// Final reports a state that never changes again.
func (s State) Final() bool { return s == Committed || s == Cancelled }

// Branch is one participant's part of a global transaction.
type Branch struct {
	Participant string          `json:"participant"`
	Payload     json.RawMessage `json:"payload"`
	// Retryable saga steps are driven forward until they succeed and are
	// never compensated; they must come after every compensable step.
	Retryable bool `json:"retryable,omitempty"`
}

// Spec describes a global transaction to run.
type Spec struct {
	GID      string
	Kind     Kind
	Branches []Branch
}

// Outcome is what a caller that waited learns.
type Outcome string

const (
	// OutcomeCommitted: every branch confirmed (every saga step done).
	OutcomeCommitted Outcome = "committed"
	// OutcomeCancelled: every branch cancelled or compensated.
	OutcomeCancelled Outcome = "cancelled"
	// OutcomePending: still being driven; ask again later. Never a failure
	// for something that may yet succeed.
	OutcomePending Outcome = "pending"
)

// Result of Run.
type Result struct {
	GID     string  `json:"gid"`
	Outcome Outcome `json:"outcome"`
	State   State   `json:"state"`
	Reason  string  `json:"reason,omitempty"`
}

// Errors a caller branches on.
var (
	ErrInvalidSpec = errors.New("dtx: invalid global transaction")
	ErrGIDConflict = errors.New("dtx: gid reused with different branches")
	ErrNotFound    = errors.New("dtx: global transaction not found")
	errLeaseLost   = errors.New("dtx: lease lost to another coordinator")
)

// Options configure a coordinator.
type Options struct {
	// ID names this instance in leases (default: Identity#random).
	ID string
	// Identity names the node this coordinator runs for, the same across
	// its restarts (one live process per identity: the caller guarantees
	// it, e.g. with a lock on the node's data folder). A fresh incarnation
	// takes over at once the transactions its dead predecessor leased,
	// rather than waiting out their leases.
	Identity     string
	Participants map[string]Participant
	// TryTimeout bounds phase 1 (TCC tries, compensable saga actions).
	TryTimeout time.Duration
	// CallTimeout bounds each participant call.
	CallTimeout time.Duration
	// Lease is how long a recovery worker owns a transaction it drives.
	Lease time.Duration
	// MinBackoff and MaxBackoff bound the retry delay of phase 2.
	MinBackoff, MaxBackoff time.Duration
	// Workers drive recovered transactions concurrently.
	Workers int
	// Poll is how often recovery looks for due transactions when idle.
	Poll time.Duration
	// Retention keeps finished transactions this long before purging.
	Retention time.Duration
	// LogFlushers group-commit the log concurrently.
	LogFlushers int
	// AnswerEarly answers a TCC's caller committed as soon as its
	// confirming state is on disk (the outcome is fixed then: every
	// confirm is repeated until it succeeds); the confirms go on in the
	// background, under the driver's lease, and recovery finishes them if
	// this process dies. The caller may then read the receiving wallet a
	// moment before the money is on it. Off: Run returns after every
	// confirm acknowledged.
	AnswerEarly bool
	Now         func() time.Time
	Logger      *slog.Logger
	// Hook is called at every step boundary with its name; an error stops
	// the driver right there, as a crash would (tests only).
	Hook func(point string) error
}

func (o *Options) defaults() {
	if o.ID == "" && o.Identity != "" {
		o.ID = fmt.Sprintf("%s#%08x", o.Identity, rand.Uint32())
	}
	if o.ID == "" {
		o.ID = fmt.Sprintf("coord-%08x", rand.Uint32())
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.TryTimeout, 5*time.Second)
	def(&o.CallTimeout, 3*time.Second)
	def(&o.Lease, 30*time.Second)
	def(&o.MinBackoff, 100*time.Millisecond)
	def(&o.MaxBackoff, 30*time.Second)
	def(&o.Poll, 200*time.Millisecond)
	def(&o.Retention, 7*24*time.Hour)
	if o.Workers == 0 {
		o.Workers = 64
	}
	if o.LogFlushers == 0 {
		o.LogFlushers = 4
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Coordinator runs global transactions and recovers unfinished ones.
type Coordinator struct {
	db   *pgxpool.Pool
	o    Options
	log  *logWriter
	slog *slog.Logger

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
	early  sync.WaitGroup // confirms after an early answer (Options.AnswerEarly)
	// orphans are transactions this coordinator stopped driving but could
	// not hand over to recovery (the log was down): their leases are ended
	// as soon as the log answers again, instead of at lease end.
	orphanMu sync.Mutex
	orphans  []string
	// Metrics are read by the API's /metrics and the demo's summary.
	Metrics Metrics
}

// Metrics counts what the coordinator did (for /metrics and summaries).
type Metrics struct {
	Started, Committed, Cancelled, Retries, Calls atomic.Int64
}

// New returns a coordinator on a migrated database. Call Start to run
// recovery and Close to stop.
func New(db *pgxpool.Pool, o Options) *Coordinator {
	o.defaults()
	return &Coordinator{db: db, o: o, log: newLogWriter(db, o.LogFlushers), slog: o.Logger.With("coordinator", o.ID)}
}

// record is a global transaction as the driver holds it.
type record struct {
	gid         string
	kind        Kind
	state       State
	branches    []Branch
	tryDeadline time.Time
	attempts    int
	reason      string
}

func (c *Coordinator) hook(point string) error {
	if c.o.Hook == nil {
		return nil
	}
	return c.o.Hook(point)
}

func (s Spec) validate(known map[string]Participant) error {
	if s.GID == "" {
		return fmt.Errorf("%w: gid is empty", ErrInvalidSpec)
	}
	if s.Kind != TCC && s.Kind != Saga {
		return fmt.Errorf("%w: kind %q", ErrInvalidSpec, s.Kind)
	}
	if len(s.Branches) == 0 {
		return fmt.Errorf("%w: no branches", ErrInvalidSpec)
	}
	retryableSeen := false
	for i, b := range s.Branches {
		if _, ok := known[b.Participant]; !ok {
			return fmt.Errorf("%w: branch %d: unknown participant %q", ErrInvalidSpec, i+1, b.Participant)
		}
		if b.Retryable && s.Kind == TCC {
			return fmt.Errorf("%w: branch %d: TCC branches are not retryable steps", ErrInvalidSpec, i+1)
		}
		if retryableSeen && !b.Retryable {
			return fmt.Errorf("%w: branch %d: a compensable step after a retryable one", ErrInvalidSpec, i+1)
		}
		retryableSeen = retryableSeen || b.Retryable
	}
	return nil
}

// Run writes the global transaction to the log and drives it. It returns
// committed or cancelled when the transaction ended, pending when it is
// still being driven (a participant did not answer yet, ctx ended); the
// recovery workers then finish it. Running a gid again returns its state.
func (c *Coordinator) Run(ctx context.Context, s Spec) (Result, error) {
	if err := s.validate(c.o.Participants); err != nil {
		return Result{}, err
	}
	branches, err := json.Marshal(s.Branches)
	if err != nil {
		return Result{}, err
	}
	digest, err := idempotency.Digest(string(s.Kind), s.Branches)
	if err != nil {
		return Result{}, err
	}
	now := c.o.Now()
	r := &record{gid: s.GID, kind: s.Kind, state: Trying, branches: s.Branches, tryDeadline: now.Add(c.o.TryTimeout)}
	if err := c.hook("before-log:begin"); err != nil {
		return Result{}, err
	}
	// The creator holds the lease for the whole try window and then some,
	// so recovery leaves it alone while it works.
	n, err := c.log.exec(ctx, `INSERT INTO dtx_global (gid, kind, state, branches, spec_hash, try_deadline, next_attempt, owner, lease_until, created_at, updated_at)
		VALUES ($1, $2, 'trying', $3, $8, $4, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING`,
		s.GID, string(s.Kind), branches, r.tryDeadline, c.o.ID, r.tryDeadline.Add(c.o.Lease), now, digest)
	if err != nil {
		// The row may have been written with the answer lost: if it was, its
		// lease is ours, so hand it to recovery as soon as the log answers.
		c.orphan(s.GID)
		return Result{}, fmt.Errorf("dtx: log %s: %w", s.GID, err)
	}
	if n == 0 {
		g, err := c.Get(ctx, s.GID)
		if err != nil {
			return Result{}, err
		}
		var stored []byte
		if err := c.db.QueryRow(ctx, `SELECT spec_hash FROM dtx_global WHERE gid = $1`, s.GID).Scan(&stored); err != nil {
			return Result{}, fmt.Errorf("dtx: read %s: %w", s.GID, err)
		}
		if !bytes.Equal(stored, digest) {
			return Result{}, fmt.Errorf("%w: %s", ErrGIDConflict, s.GID)
		}
		return g.result(), nil
	}
	c.Metrics.Started.Add(1)
	if err := c.hook("after-log:begin"); err != nil {
		return Result{}, err
	}
	res, err := c.drive(ctx, r, false)
	if err != nil {
		if errors.Is(err, ErrCrash) {
			return res, err
		}
		c.leaveToRecovery(ctx, r, err)
		return c.pending(r), nil
	}
	return res, nil
}

// leaveToRecovery hands a transaction whose driver stopped on err to
// recovery: the log holds it, so recovery finishes it; handing it over now
// saves waiting for the lease to end.
func (c *Coordinator) leaveToRecovery(ctx context.Context, r *record, err error) {
	if !errors.Is(err, errLeaseLost) {
		if serr := c.schedule(context.WithoutCancel(ctx), r, err.Error()); serr != nil {
			c.orphan(r.gid) // the log was unreachable: hand it over when it is back
		}
	}
	c.slog.Info("global transaction left pending", "gid", r.gid, "state", r.state, "err", err)
}

// drive moves a transaction on until it is final or must wait for a retry.
// recovered: the driver that started it is gone, so a TCC still trying is
// cancelled rather than tried again.
func (c *Coordinator) drive(ctx context.Context, r *record, recovered bool) (Result, error) {
	for {
		switch {
		case r.state.Final():
			return Result{GID: r.gid, Outcome: r.state.Outcome(), State: r.state, Reason: r.reason}, nil

		case r.state == Trying && r.kind == TCC:
			next, reason := Cancelling, "recovered before every try succeeded"
			if !recovered {
				var err error
				next, reason, err = c.tryAll(ctx, r)
				if err != nil {
					return c.pending(r), err
				}
			}
			if err := c.transition(ctx, r, next, reason); err != nil {
				return c.pending(r), err
			}
			if next == Confirming && c.o.AnswerEarly && !recovered {
				c.confirmLater(ctx, r)
				return Result{GID: r.gid, Outcome: OutcomeCommitted, State: Confirming}, nil
			}

		case r.state == Trying && r.kind == Saga:
			next, reason, err := c.forward(ctx, r)
			if err != nil {
				return c.pending(r), err
			}
			if next == Trying { // a retryable step must be repeated later
				return c.pending(r), c.schedule(ctx, r, reason)
			}
			if err := c.transition(ctx, r, next, reason); err != nil {
				return c.pending(r), err
			}

		default: // confirming or cancelling: phase 2 until every branch acknowledges
			if err := c.phase2(ctx, r); err != nil {
				if errors.Is(err, ErrCrash) {
					return c.pending(r), err
				}
				return c.pending(r), c.schedule(ctx, r, err.Error())
			}
			final := Committed
			if r.state == Cancelling {
				final = Cancelled
			}
			if err := c.transition(ctx, r, final, r.reason); err != nil {
				return c.pending(r), err
			}
		}
	}
}

// confirmLater drives a transaction whose confirming state is on disk to
// its end in the background (Close waits for it). A failure leaves it to
// recovery, as it would in the foreground.
func (c *Coordinator) confirmLater(ctx context.Context, r *record) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.o.Lease)
	c.early.Go(func() {
		defer cancel()
		if _, err := c.drive(ctx, r, false); err != nil && !errors.Is(err, ErrCrash) {
			c.leaveToRecovery(ctx, r, err)
		}
	})
}

// Outcome is what a caller hears of a transaction in state s.
func (s State) Outcome() Outcome {
	switch s {
	case Committed:
		return OutcomeCommitted
	case Cancelled:
		return OutcomeCancelled
	}
	return OutcomePending
}

func (c *Coordinator) pending(r *record) Result {
	return Result{GID: r.gid, Outcome: OutcomePending, State: r.state, Reason: r.reason}
}

// ErrCrash is what a test hook returns to stop a driver dead at a step
// boundary, as a crash would.
var ErrCrash = errors.New("dtx: stopped at a step boundary")

// call runs one participant call with the per-call deadline.
func (c *Coordinator) call(ctx context.Context, r *record, i int, op Op) error {
	b := r.branches[i]
	point := fmt.Sprintf("%s:%d", op, i+1)
	if err := c.hook("before-call:" + point); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, c.o.CallTimeout)
	defer cancel()
	c.Metrics.Calls.Add(1)
	err := c.o.Participants[b.Participant].Do(cctx, Call{GID: r.gid, Branch: fmt.Sprint(i + 1), Op: op, Payload: b.Payload})
	if herr := c.hook("after-call:" + point); herr != nil {
		return herr
	}
	return err
}

// tryAll calls every Try in parallel. Unknown answers are repeated (the
// call is idempotent) until the try deadline; a definite failure or the
// deadline decides cancel.
func (c *Coordinator) tryAll(ctx context.Context, r *record) (State, string, error) {
	tctx, stop := context.WithCancel(ctx)
	defer stop()
	errs := make([]error, len(r.branches))
	var wg sync.WaitGroup
	for i := range r.branches {
		wg.Go(func() {
			errs[i] = c.untilDeadline(tctx, r, i, OpTry)
			if errs[i] != nil {
				stop() // no point waiting for the others
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if errors.Is(err, ErrCrash) {
			return "", "", err
		}
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return Cancelling, fmt.Sprintf("branch %d try: %v", i+1, err), nil
		}
	}
	if ctx.Err() != nil {
		return Cancelling, "caller gave up during the tries", nil
	}
	return Confirming, "", nil
}

// untilDeadline repeats an unknown call until the try deadline.
func (c *Coordinator) untilDeadline(ctx context.Context, r *record, i int, op Op) error {
	for attempt := 0; ; attempt++ {
		err := c.call(ctx, r, i, op)
		if err == nil || IsFailure(err) || errors.Is(err, ErrCrash) || ctx.Err() != nil {
			return err
		}
		wait := c.backoff(attempt, 10*time.Millisecond, 500*time.Millisecond)
		if c.o.Now().Add(wait).After(r.tryDeadline) {
			return fmt.Errorf("no definite answer before the try deadline: %w", err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// forward runs a saga's actions in order. It returns cancelling on a
// definite failure of a compensable step (or no answer before the try
// deadline), trying when a retryable step has to be repeated later, and
// committed when every step is done. Actions already done answer as
// repeats, so recovery simply runs them all again.
func (c *Coordinator) forward(ctx context.Context, r *record) (State, string, error) {
	for i, b := range r.branches {
		if !b.Retryable {
			err := c.untilDeadline(ctx, r, i, OpTry)
			if errors.Is(err, ErrCrash) {
				return "", "", err
			}
			if err != nil {
				return Cancelling, fmt.Sprintf("step %d: %v", i+1, err), nil
			}
			continue
		}
		err := c.call(ctx, r, i, OpTry)
		if errors.Is(err, ErrCrash) {
			return "", "", err
		}
		if err != nil {
			return Trying, fmt.Sprintf("step %d (retried forward): %v", i+1, err), nil
		}
	}
	return Committed, "", nil
}

// phase2 confirms or cancels every TCC branch (in parallel), or compensates
// every compensable saga step in reverse order. Any answer other than
// success leaves the transaction for a retry.
func (c *Coordinator) phase2(ctx context.Context, r *record) error {
	op := OpConfirm
	if r.state == Cancelling {
		op = OpCancel
	}
	if r.kind == Saga {
		for i := len(r.branches) - 1; i >= 0; i-- {
			if r.branches[i].Retryable {
				continue
			}
			if err := c.call(ctx, r, i, OpCancel); err != nil {
				return fmt.Errorf("compensate step %d: %w", i+1, err)
			}
		}
		return nil
	}
	errs := make([]error, len(r.branches))
	var wg sync.WaitGroup
	for i := range r.branches {
		wg.Go(func() { errs[i] = c.call(ctx, r, i, op) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			if errors.Is(err, ErrCrash) {
				return err
			}
			return fmt.Errorf("branch %d %s: %w", i+1, op, err)
		}
	}
	return nil
}

// transition writes the next state, fenced by ownership and the current
// state, before anything of that state is done.
func (c *Coordinator) transition(ctx context.Context, r *record, to State, reason string) error {
	point := fmt.Sprintf("log:%s", to)
	if err := c.hook("before-" + point); err != nil {
		return err
	}
	now := c.o.Now()
	var finished *time.Time
	if to.Final() {
		finished = &now
	}
	// A final state is written after every branch acknowledged: losing it
	// in a crash only makes recovery repeat phase 2, so its commit does not
	// wait for the disk. Every other state must be durable before anything
	// of it is done.
	exec := c.log.exec
	if to.Final() {
		exec = c.log.execLazy
	}
	n, err := exec(ctx, `UPDATE dtx_global SET state = $3, reason = $4, updated_at = $5, finished_at = $6, next_attempt = $5
		WHERE gid = $1 AND owner = $2 AND state = $7`, r.gid, c.o.ID, string(to), reason, now, finished, string(r.state))
	if err != nil {
		return fmt.Errorf("dtx: log %s -> %s: %w", r.gid, to, err)
	}
	if n == 0 {
		return errLeaseLost
	}
	r.state, r.reason = to, reason
	switch to {
	case Committed:
		c.Metrics.Committed.Add(1)
	case Cancelled:
		c.Metrics.Cancelled.Add(1)
	}
	return c.hook("after-" + point)
}

// schedule records a failed attempt and hands the transaction to recovery
// at the next attempt time (exponential backoff with jitter, capped).
func (c *Coordinator) schedule(ctx context.Context, r *record, lastErr string) error {
	if err := c.hook("before-log:retry"); err != nil {
		return err
	}
	now := c.o.Now()
	next := now.Add(c.backoff(r.attempts, c.o.MinBackoff, c.o.MaxBackoff))
	c.Metrics.Retries.Add(1)
	_, err := c.log.exec(ctx, `UPDATE dtx_global SET attempts = attempts + 1, last_error = $3, next_attempt = $4, lease_until = $5, updated_at = $5
		WHERE gid = $1 AND owner = $2`, r.gid, c.o.ID, lastErr, next, now)
	c.slog.Info("global transaction will be retried", "gid", r.gid, "state", r.state, "attempt", r.attempts+1, "at", next, "err", lastErr)
	return err
}

// backoff is exponential in the attempt with full jitter in its upper half.
func (c *Coordinator) backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo << min(attempt, 20)
	if d <= 0 || d > hi {
		d = hi
	}
	return d/2 + rand.N(d/2+1)
}
