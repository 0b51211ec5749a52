// Package recon is T+1 reconciliation (seed 002): the channel's statement
// of a day against our orders and the ledger, every difference classified,
// the safe ones repaired through the same idempotent paths as a callback or
// a query, the rest listed for an operator; and the internal checks of the
// books (ledger invariants, packets balanced, claims credited, clearing
// accounts netting to what they carry) in the same report, so that one
// command says whether the books are sound. Reports are stored.
package recon

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"hongbao/internal/channel"
	"hongbao/internal/flow"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/payment"
	"hongbao/internal/postgres"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// Migrations are the report tables.
func Migrations() []postgres.Migration { return postgres.Embedded("recon", sqlFS, "sql") }

// Kinds of difference.
const (
	// MissingHere: paid (or paid out) at the channel, not done here.
	MissingHere = "missing_here"
	// MissingAtChannel: done here, absent from the channel's statement.
	MissingAtChannel = "missing_at_channel"
	// AmountDiffers: the channel's amount is not ours.
	AmountDiffers = "amount_differs"
	// PayoutStateDiffers: a payout's state at the channel is not ours.
	PayoutStateDiffers = "payout_state_differs"
	// UnknownOrder: a line of the statement for no order of ours.
	UnknownOrder = "unknown_order"
)

// Kinds lists every kind of difference.
var Kinds = []string{MissingHere, MissingAtChannel, AmountDiffers, PayoutStateDiffers, UnknownOrder}

// Difference is one way the channel and we disagree about an order.
type Difference struct {
	Kind    string       `json:"kind"`
	Order   string       `json:"order"`
	User    int64        `json:"user,omitempty"`
	Amount  money.Amount `json:"amount"`
	Ours    string       `json:"ours"`
	Channel string       `json:"channel"`
	// Repaired: fixed by this run (a definite answer of the channel applied).
	Repaired bool `json:"repaired"`
	// Resolved: an operator resolved it (Note says how).
	Resolved bool   `json:"resolved"`
	Note     string `json:"note,omitempty"`
}

// Check is one internal check of the books.
type Check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Skipped: not checked this time (money was moving); not a failure.
	Skipped bool     `json:"skipped,omitempty"`
	Detail  []string `json:"detail,omitempty"`
}

// Side totals one side of the statement.
type Side struct {
	Pays    int          `json:"pays"`
	Paid    money.Amount `json:"paid"`
	Payouts int          `json:"payouts"`
	PaidOut money.Amount `json:"paid_out"`
}

// Report is one reconciliation of a day.
type Report struct {
	ID          int64        `json:"id,string"`
	Day         string       `json:"day"`
	RanAt       time.Time    `json:"ran_at"`
	Channel     Side         `json:"channel"`
	Ours        Side         `json:"ours"`
	Differences []Difference `json:"differences"`
	Checks      []Check      `json:"checks"`
	Repaired    int          `json:"repaired"`
	Unresolved  int          `json:"unresolved"`
	// Sound: nothing unresolved and every check passed.
	Sound bool `json:"sound"`
}

// Options are what reconciliation reads.
type Options struct {
	Channel  channel.Channel
	Payments *payment.Service
	Ledgers  *flow.Ledgers
	Sets     []*packet.Set
	// Unfinished counts global transactions in flight (clearing is only
	// compared when none is).
	Unfinished func(ctx context.Context) (int64, error)
	// Grace: a claim older than this and not credited is overdue.
	Grace time.Duration
	// DB stores the reports.
	DB     *pgxpool.Pool
	Logger *slog.Logger
}

// Reconciler runs reconciliations.
type Reconciler struct {
	o    Options
	mu   sync.Mutex // one run at a time in this process
	last struct {
		sync.Mutex
		r  *Report
		ok bool
	}
	repairs prometheus.Counter
	runs    *prometheus.CounterVec
}

// New returns a reconciler.
func New(o Options) *Reconciler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Grace == 0 {
		o.Grace = time.Minute
	}
	return &Reconciler{o: o,
		repairs: prometheus.NewCounter(prometheus.CounterOpts{Name: "hongbao_recon_repairs_total", Help: "Differences reconciliation repaired."}),
		runs:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hongbao_recon_runs_total", Help: "Reconciliation runs by result (sound, unsound, failed)."}, []string{"result"}),
	}
}

// ParseDay reads YYYY-MM-DD (UTC): a day from 2000 on that has begun
// (today's reconciliation covers what happened so far).
func ParseDay(s string) (time.Time, error) {
	d, err := time.Parse("2006-01-02", s)
	if err != nil || d.Format("2006-01-02") != s {
		return time.Time{}, fmt.Errorf("%w: day %q: want YYYY-MM-DD", ErrInvalid, s)
	}
	if err := validDay(d); err != nil {
		return time.Time{}, err
	}
	return d, nil
}

func validDay(d time.Time) error {
	if d.Year() < 2000 || d.After(time.Now().UTC()) {
		return fmt.Errorf("%w: day %s: want a day from 2000-01-01 to today (UTC)", ErrInvalid, d.Format("2006-01-02"))
	}
	return nil
}

// Run reconciles a day (UTC), repairs what is safe, stores the report and
// returns it.
func (r *Reconciler) Run(ctx context.Context, day time.Time) (Report, error) {
	if err := validDay(day); err != nil {
		return Report{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rep, err := r.run(ctx, day)
	if err != nil {
		r.runs.WithLabelValues("failed").Inc()
		return rep, err
	}
	if err := r.store(ctx, &rep); err != nil {
		r.runs.WithLabelValues("failed").Inc()
		return rep, err
	}
	if rep.Sound {
		r.runs.WithLabelValues("sound").Inc()
	} else {
		r.runs.WithLabelValues("unsound").Inc()
	}
	r.last.Lock()
	r.last.r, r.last.ok = &rep, true
	r.last.Unlock()
	return rep, nil
}

func (r *Reconciler) run(ctx context.Context, day time.Time) (Report, error) {
	rep := Report{Day: day.Format("2006-01-02"), RanAt: time.Now().UTC(), Differences: []Difference{}, Checks: []Check{}}
	if r.o.Channel != nil {
		if err := r.statement(ctx, day, &rep); err != nil {
			return rep, err
		}
	}
	if err := r.checks(ctx, &rep); err != nil {
		return rep, err
	}
	resolved, err := r.resolutions(ctx, rep.Day)
	if err != nil {
		return rep, err
	}
	for i := range rep.Differences {
		d := &rep.Differences[i]
		if note, ok := resolved[d.Kind+"/"+d.Order]; ok && !d.Repaired {
			d.Resolved, d.Note = true, note
		}
		switch {
		case d.Repaired:
			rep.Repaired++
		case !d.Resolved:
			rep.Unresolved++
		}
	}
	rep.Sound = rep.Unresolved == 0
	for _, c := range rep.Checks {
		if !c.OK && !c.Skipped {
			rep.Sound = false
		}
	}
	return rep, nil
}

// statement compares the channel's lines of the day with our orders.
func (r *Reconciler) statement(ctx context.Context, day time.Time, rep *Report) error {
	lines, err := r.o.Channel.Statement(ctx, day)
	if err != nil {
		return fmt.Errorf("download the channel's statement of %s: %w", rep.Day, err)
	}
	ours, err := r.o.Payments.Settled(ctx, day)
	if err != nil {
		return err
	}
	for _, o := range ours {
		switch o.State {
		case payment.Paid:
			rep.Ours.Pays++
			rep.Ours.Paid += o.Amount
		case payment.Succeeded:
			rep.Ours.Payouts++
			rep.Ours.PaidOut += o.Amount
		}
	}
	seen := map[int64]bool{}
	for _, l := range lines {
		switch {
		case l.Kind == channel.LinePay && l.State == channel.PayPaid:
			rep.Channel.Pays++
			rep.Channel.Paid += l.Amount
		case l.Kind == channel.LinePayout && l.State == channel.PayoutSucceeded:
			rep.Channel.Payouts++
			rep.Channel.PaidOut += l.Amount
		}
		d, ok := r.line(ctx, l, seen)
		if ok {
			rep.Differences = append(rep.Differences, d)
		}
	}
	for _, o := range ours {
		if seen[o.ID] || (o.State != payment.Paid && o.State != payment.Succeeded && o.State != payment.Reversed) {
			continue
		}
		rep.Differences = append(rep.Differences, Difference{Kind: MissingAtChannel, Order: o.ChannelID(), User: o.User, Amount: o.Amount,
			Ours: fmt.Sprintf("%s %s %s", o.Kind, o.State, o.Amount), Channel: "no line"})
	}
	sort.SliceStable(rep.Differences, func(i, j int) bool { return rep.Differences[i].Order < rep.Differences[j].Order })
	return nil
}

// line compares one statement line with our order, repairing what is safe.
func (r *Reconciler) line(ctx context.Context, l channel.Line, seen map[int64]bool) (Difference, bool) {
	d := Difference{Order: l.ID, Amount: l.Amount, Channel: fmt.Sprintf("%s %s %s", l.Kind, l.State, l.Amount)}
	id, ok := payment.ParseID(l.ID)
	var o payment.Order
	var err error
	if ok {
		o, err = r.o.Payments.Get(ctx, id)
	}
	wantKind := payment.TopUp
	if l.Kind == channel.LinePayout {
		wantKind = payment.Withdrawal
	}
	if !ok || errors.Is(err, payment.ErrNotFound) || (err == nil && o.Kind != wantKind) {
		d.Kind, d.Ours = UnknownOrder, "no such order"
		return d, true
	}
	if err != nil {
		d.Kind, d.Ours, d.Note = MissingHere, "unreadable", err.Error()
		return d, true
	}
	seen[id] = true
	d.User, d.Ours = o.User, fmt.Sprintf("%s %s %s", o.Kind, o.State, o.Amount)
	if l.Amount != o.Amount {
		d.Kind = AmountDiffers
		return d, true
	}
	repair := func(kind string, fix func() (payment.Order, error)) (Difference, bool) {
		d.Kind = kind
		got, err := fix()
		if err != nil {
			d.Note = "repair failed: " + err.Error()
			return d, true
		}
		d.Repaired, d.Note = true, fmt.Sprintf("repaired: now %s", got.State)
		r.repairs.Inc()
		r.o.Logger.Info("reconciliation repaired an order", "order", o.ID, "kind", kind, "state", got.State)
		return d, true
	}
	by := "statement"
	switch {
	case l.Kind == channel.LinePay && l.State == channel.PayPaid:
		if o.State == payment.Paid {
			return d, false
		}
		return repair(MissingHere, func() (payment.Order, error) { return r.o.Payments.CreditPaid(ctx, id, l.At, by) })
	case l.Kind == channel.LinePay:
		return d, false // an unpaid line moves nothing
	case l.State == channel.PayoutSucceeded:
		switch o.State {
		case payment.Succeeded:
			return d, false
		case payment.Created, payment.Unknown:
			return repair(MissingHere, func() (payment.Order, error) { return r.o.Payments.ResolvePayout(ctx, id, l.State, l.At, by) })
		}
	case l.State == channel.PayoutFailed:
		switch o.State {
		case payment.Failed:
			return d, false
		case payment.Created, payment.Unknown:
			return repair(PayoutStateDiffers, func() (payment.Order, error) { return r.o.Payments.ResolvePayout(ctx, id, l.State, l.At, by) })
		}
	case l.State == channel.PayoutReversed:
		switch o.State {
		case payment.Reversed:
			return d, false
		case payment.Succeeded:
			return repair(PayoutStateDiffers, func() (payment.Order, error) { return r.o.Payments.Reverse(ctx, id, by) })
		}
	case l.State == channel.PayoutProcessing:
		return d, false
	}
	// Failed here but paid at the channel, and the like: money may be
	// lost; an operator decides.
	d.Kind = PayoutStateDiffers
	return d, true
}

// checks are the internal checks of the books.
func (r *Reconciler) checks(ctx context.Context, rep *Report) error {
	add := func(name string, detail []string, err error) error {
		if err != nil {
			return fmt.Errorf("check %s: %w", name, err)
		}
		rep.Checks = append(rep.Checks, Check{Name: name, OK: len(detail) == 0, Detail: detail})
		return nil
	}
	v, err := r.o.Ledgers.Check(ctx)
	if err := add("ledger invariants", v, err); err != nil {
		return err
	}
	var bad []string
	var overdue int64
	for _, set := range r.o.Sets {
		v, err := set.Check(ctx)
		if err != nil {
			return err
		}
		bad = append(bad, v...)
		n, _, err := set.Overdue(ctx, time.Now().Add(-r.o.Grace-5*time.Second))
		if err != nil {
			return err
		}
		overdue += n
	}
	if err := add("packets balanced", bad, nil); err != nil {
		return err
	}
	var late []string
	if overdue > 0 {
		late = []string{fmt.Sprintf("%d claims or refunds older than %s are not credited yet", overdue, r.o.Grace)}
	}
	if err := add("claims credited", late, nil); err != nil {
		return err
	}
	if r.o.Payments != nil {
		v, err := r.o.Payments.Check(ctx)
		if err := add("channel money", v, err); err != nil {
			return err
		}
	}
	c, err := r.clearing(ctx)
	if err != nil {
		return err
	}
	rep.Checks = append(rep.Checks, c)
	return nil
}

// clearing compares the clearing accounts across shards with what they
// carry: clearing:groups and clearing:transfers net to zero, and
// clearing:packets holds the packets' escrow plus the credits not applied
// yet. Only a quiet reading counts: no global transaction in flight and
// the same figures twice in a row; otherwise the check is skipped.
func (r *Reconciler) clearing(ctx context.Context) (Check, error) {
	c := Check{Name: "clearing accounts"}
	type reading struct {
		groups, transfers, packets, escrow money.Amount
	}
	read := func() (reading, bool, error) {
		var x reading
		if r.o.Unfinished != nil {
			n, err := r.o.Unfinished(ctx)
			if err != nil || n > 0 {
				return x, false, err
			}
		}
		var unmarked []ledger.CreditMessage
		for _, set := range r.o.Sets {
			held, u, more, err := set.Escrow(ctx, 10000)
			if err != nil || more {
				return x, false, err
			}
			x.escrow += held
			unmarked = append(unmarked, u...)
		}
		for _, l := range r.o.Ledgers.Shards {
			for _, a := range []struct {
				acct ledger.Account
				into *money.Amount
			}{{ledger.ClearingGroups, &x.groups}, {ledger.ClearingTransfers, &x.transfers}, {ledger.ClearingPackets, &x.packets}} {
				b, err := l.SystemBalance(ctx, a.acct)
				if err != nil {
					return x, false, err
				}
				*a.into += b
			}
		}
		applied, err := r.o.Ledgers.Applied(ctx, unmarked)
		if err != nil {
			return x, false, err
		}
		for _, m := range unmarked {
			if !applied[m.Key] {
				x.escrow += m.Amount // still in clearing until applied
			}
		}
		return x, true, nil
	}
	for range 5 {
		a, ok1, err := read()
		if err != nil {
			return c, err
		}
		b, ok2, err := read()
		if err != nil {
			return c, err
		}
		if !ok1 || !ok2 || a != b {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if a.groups != 0 {
			c.Detail = append(c.Detail, fmt.Sprintf("clearing:groups nets to %s across shards", a.groups))
		}
		if a.transfers != 0 {
			c.Detail = append(c.Detail, fmt.Sprintf("clearing:transfers nets to %s across shards", a.transfers))
		}
		if a.packets != a.escrow {
			c.Detail = append(c.Detail, fmt.Sprintf("clearing:packets holds %s, the packets say %s", a.packets, a.escrow))
		}
		c.OK = len(c.Detail) == 0
		return c, nil
	}
	c.Skipped, c.Detail = true, []string{"money was moving (transactions in flight); not compared this time"}
	return c, nil
}

func (r *Reconciler) resolutions(ctx context.Context, day string) (map[string]string, error) {
	rows, err := r.o.DB.Query(ctx, `SELECT kind, ref, note FROM recon_resolutions WHERE day = $1`, day)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for rows.Next() {
		var k, ref, note string
		if err := rows.Scan(&k, &ref, &note); err != nil {
			rows.Close()
			return nil, err
		}
		out[k+"/"+ref] = note
	}
	rows.Close()
	return out, rows.Err()
}

func (r *Reconciler) store(ctx context.Context, rep *Report) error {
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	return r.o.DB.QueryRow(ctx, `INSERT INTO recon_reports (day, ran_at, unresolved, sound, report) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
		rep.Day, rep.RanAt, rep.Unresolved, rep.Sound, b).Scan(&rep.ID)
}

// ErrNoReport: no reconciliation of that day has run.
var (
	ErrNoReport = errors.New("no reconciliation report for that day")
	// ErrInvalid: a day that is not a day to reconcile, a resolution
	// without a known kind, an order or a note.
	ErrInvalid = errors.New("invalid reconciliation request")
	// ErrNoDifference: a resolution for a difference no report lists.
	ErrNoDifference = errors.New("no such difference")
)

// Latest is the last stored report of a day.
func (r *Reconciler) Latest(ctx context.Context, day time.Time) (Report, error) {
	var rep Report
	var id int64
	var b []byte
	err := r.o.DB.QueryRow(ctx, `SELECT id, report FROM recon_reports WHERE day = $1 ORDER BY id DESC LIMIT 1`, day.Format("2006-01-02")).Scan(&id, &b)
	if errors.Is(err, pgx.ErrNoRows) {
		return rep, ErrNoReport
	}
	if err != nil {
		return rep, err
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, err
	}
	rep.ID = id
	return rep, nil
}

// Resolve records an operator's resolution of a difference (kind, order)
// of a day; the next run counts it resolved. The note says what was done.
func (r *Reconciler) Resolve(ctx context.Context, day time.Time, kind, order, note string) error {
	known := false
	for _, k := range Kinds {
		known = known || k == kind
	}
	if !known || order == "" || strings.TrimSpace(note) == "" {
		return fmt.Errorf("%w: a resolution needs a known kind, the order and a note", ErrInvalid)
	}
	// Only a difference the last report of the day lists may be resolved:
	// a resolution recorded ahead could hide one found later.
	last, err := r.Latest(ctx, day)
	if err != nil {
		return err
	}
	listed := false
	for _, d := range last.Differences {
		listed = listed || (d.Kind == kind && d.Order == order && !d.Repaired)
	}
	if !listed {
		return fmt.Errorf("%w: the last report of %s lists no %s difference for order %s", ErrNoDifference, day.Format("2006-01-02"), kind, order)
	}
	_, err = r.o.DB.Exec(ctx, `INSERT INTO recon_resolutions (day, kind, ref, note) VALUES ($1, $2, $3, $4)
		ON CONFLICT (day, kind, ref) DO UPDATE SET note = excluded.note, at = now()`, day.Format("2006-01-02"), kind, order, note)
	return err
}
