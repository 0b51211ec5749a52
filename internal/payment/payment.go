// Package payment moves money in and out of wallets through a payment
// channel (seeds 002 and 004). A top-up is an order, then a pay order at
// the channel, then a credit (clearing:channel -> user) on a definite
// success only: a verified callback or our own query. A withdrawal is a
// hold with its order in one local transaction, then a payout at the
// channel with the order id as its idempotency key; the hold is posted on
// a definite success, voided on a definite failure, and kept while the
// answer is unknown. Orders live on their user's ledger shard; the order
// row is its own outbox: a worker (Run) visits each order whose next check
// has come, with capped backoff, until it is final. A process that dies at
// any point leaves an order in a recorded state that the next one resumes.
package payment

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"hongbao/internal/channel"
	"hongbao/internal/ids"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/postgres"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// Migrations are the order tables, applied to every ledger shard database.
func Migrations() []postgres.Migration { return postgres.Embedded("payment", sqlFS, "sql") }

// Kind of order.
type Kind string

// Kinds.
const (
	TopUp      Kind = "topup"
	Withdrawal Kind = "withdrawal"
)

// State of an order.
type State string

// States. A top-up goes created -> pending -> paid | closed (or failed when
// the channel refuses it); a withdrawal created -> unknown -> succeeded |
// failed, and succeeded -> reversed when the channel returns the money.
const (
	Created   State = "created"   // recorded; the channel has not answered definitely yet
	Pending   State = "pending"   // top-up: the channel has the pay order, the payer has not paid
	Unknown   State = "unknown"   // withdrawal: asked to pay out, the answer is not definite yet
	Paid      State = "paid"      // top-up: paid at the channel and credited, once
	Closed    State = "closed"    // top-up: closed unpaid at its deadline
	Succeeded State = "succeeded" // withdrawal: paid out, the hold posted
	Failed    State = "failed"    // definitely not done; any hold voided
	Reversed  State = "reversed"  // withdrawal: returned by the channel after it succeeded; refunded
)

// Final reports whether nothing more happens to an order in state s
// (Reversed aside, which only reconciliation causes).
func (s State) Final() bool {
	switch s {
	case Paid, Closed, Succeeded, Failed, Reversed:
		return true
	}
	return false
}

// Order is a top-up or a withdrawal.
type Order struct {
	ID        int64        `json:"id,string"`
	Kind      Kind         `json:"kind"`
	User      int64        `json:"user"`
	Amount    money.Amount `json:"amount"`
	State     State        `json:"state"`
	PayURL    string       `json:"pay_url,omitempty"` // top-up: where the payer pays
	Reason    string       `json:"reason,omitempty"`
	Deadline  time.Time    `json:"deadline"`
	ChannelAt *time.Time   `json:"channel_at,omitempty"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
	// Attempts is how often the worker has asked the channel about it.
	Attempts int `json:"attempts"`
}

// ChannelID is the order's id at the channel.
func (o Order) ChannelID() string { return fmt.Sprint(o.ID) }

// Event is one recorded transition of an order.
type Event struct {
	From State     `json:"from,omitempty"`
	To   State     `json:"to"`
	Note string    `json:"note,omitempty"`
	At   time.Time `json:"at"`
}

// Errors a caller branches on.
var (
	ErrNotFound   = errors.New("no such order")
	ErrInvalid    = errors.New("invalid order")
	ErrDailyLimit = errors.New("daily limit reached")
	// ErrNoChannel: no payment channel is configured.
	ErrNoChannel = errors.New("no payment channel is configured")
	// ErrCrash is what a Hook returns to stop an operation as if the
	// process died at that step (crash tests).
	ErrCrash = errors.New("crashed here (test hook)")
)

// Limits bound what one user may move through the channel per day (UTC).
type Limits struct {
	TopUpPerDay       money.Amount
	WithdrawalPerDay  money.Amount
	WithdrawalsPerDay int
}

// DefaultLimits: 200,000.00 of top-ups, 50,000.00 in at most 10 withdrawals
// per user and day.
var DefaultLimits = Limits{TopUpPerDay: 200_000_00, WithdrawalPerDay: 50_000_00, WithdrawalsPerDay: 10}

// Options configure the service.
type Options struct {
	Channel channel.Channel
	// Secret verifies the channel's callbacks.
	Secret []byte
	// Shards are the ledger shards; ShardOf routes a user to one.
	Shards  []*ledger.Ledger
	ShardOf func(user int64) int
	Limits  Limits
	// TopUpTTL: a top-up unpaid this long after it was created is closed
	// (default 30 min).
	TopUpTTL time.Duration
	// QueryAfter is the first wait before the worker asks the channel about
	// an order it has heard nothing definite of (default 10 s); each later
	// wait doubles, up to QueryCap (default 5 min).
	QueryAfter, QueryCap time.Duration
	// Lease is how long a worker owns an order it is asking about (default
	// 30 s; longer than any channel call).
	Lease time.Duration
	// Hook, when set, is called at every recorded step; an error stops the
	// operation there (crash tests).
	Hook   func(step string) error
	Now    func() time.Time
	Logger *slog.Logger
}

// Service runs top-ups and withdrawals.
type Service struct {
	o    Options
	gens []*ids.Blocks

	transitions *prometheus.CounterVec
	unknown     *prometheus.CounterVec
	queries     *prometheus.CounterVec
	callbacks   *prometheus.CounterVec
}

// New returns the service over migrated ledger shards.
func New(o Options) (*Service, error) {
	if len(o.Shards) == 0 || o.ShardOf == nil {
		return nil, errors.New("payment: ledger shards are required")
	}
	if o.Limits == (Limits{}) {
		o.Limits = DefaultLimits
	}
	if o.TopUpTTL == 0 {
		o.TopUpTTL = 30 * time.Minute
	}
	if o.QueryAfter == 0 {
		o.QueryAfter = 10 * time.Second
	}
	if o.QueryCap == 0 {
		o.QueryCap = 5 * time.Minute
	}
	if o.QueryCap < o.QueryAfter {
		o.QueryCap = o.QueryAfter
	}
	if o.Lease == 0 {
		o.Lease = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{o: o,
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hongbao_channel_orders_total",
			Help: "Channel orders entering a state, by kind and state."}, []string{"kind", "state"}),
		unknown: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hongbao_channel_unknown_results_total",
			Help: "Channel calls whose result was unknown (timeout, lost answer, 5xx, system error, processing), by call."}, []string{"call"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hongbao_channel_queries_total",
			Help: "Orders the worker asked the channel about, by kind."}, []string{"kind"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hongbao_channel_callbacks_total",
			Help: "Channel callbacks by result (applied, repeat, rejected_signature, rejected_order, rejected_amount, rejected_body, failed)."}, []string{"result"}),
	}
	for i, l := range o.Shards {
		db := l.DB()
		g, err := ids.NewBlocks(i, func(ctx context.Context) (n int64, err error) {
			return n, db.QueryRow(ctx, `SELECT nextval('channel_order_id_blocks')`).Scan(&n)
		})
		if err != nil {
			return nil, err
		}
		s.gens = append(s.gens, g)
	}
	return s, nil
}

// HasChannel reports whether a channel is configured.
func (s *Service) HasChannel() bool { return s.o.Channel != nil }

// NewID is a new order id for user: it carries the user's ledger shard and
// is unique across processes.
func (s *Service) NewID(ctx context.Context, user int64) (int64, error) {
	return s.gens[s.o.ShardOf(user)].Next(ctx)
}

// shardOfOrder is the ledger shard of an order id (false: no shard has it).
func (s *Service) shardOfOrder(id int64) (*ledger.Ledger, bool) {
	n := ids.Shard(id)
	if id <= 0 || n >= len(s.o.Shards) {
		return nil, false
	}
	return s.o.Shards[n], true
}

// locate is the ledger shard that keeps an order now: the one its id names,
// unless its user's wallet moved to another shard since (the order moved
// with it), when the other shards are asked.
func (s *Service) locate(ctx context.Context, id int64) (*ledger.Ledger, bool) {
	home, ok := s.shardOfOrder(id)
	if !ok {
		return nil, false
	}
	for _, l := range append([]*ledger.Ledger{home}, s.o.Shards...) {
		var one int
		err := l.DB().QueryRow(ctx, `SELECT 1 FROM channel_orders WHERE id = $1`, id).Scan(&one)
		if err == nil {
			return l, true
		}
	}
	return home, true // not found anywhere: the caller says so
}

func (s *Service) hook(step string) error {
	if s.o.Hook == nil {
		return nil
	}
	return s.o.Hook(step)
}

// backoff is the wait before the next question after attempts of them.
func (s *Service) backoff(attempts int) time.Duration {
	d := s.o.QueryAfter
	for i := 1; i < attempts && d < s.o.QueryCap; i++ {
		d *= 2
	}
	return min(d, s.o.QueryCap)
}

// day is the UTC day of t.
func day(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Collectors are the service's metrics: transitions, unknown results,
// queries, callbacks, and the orders not final yet by kind and state (from
// the databases; -1 when one does not answer).
func (s *Service) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.transitions, s.unknown, s.queries, s.callbacks, openOrders{s}}
}

type openOrders struct{ s *Service }

var openDesc = prometheus.NewDesc("hongbao_channel_orders_open", "Channel orders not final yet, by kind and state (a withdrawal long unknown needs a person).", []string{"kind", "state"}, nil)

func (c openOrders) Describe(ch chan<- *prometheus.Desc) { ch <- openDesc }

func (c openOrders) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts := map[[2]string]float64{{"topup", "created"}: 0, {"topup", "pending"}: 0, {"withdrawal", "created"}: 0, {"withdrawal", "unknown"}: 0}
	for _, l := range c.s.o.Shards {
		rows, err := l.DB().Query(ctx, `SELECT kind, state, count(*) FROM channel_orders WHERE next_check IS NOT NULL GROUP BY kind, state`)
		if err != nil {
			for k := range counts {
				counts[k] = -1
			}
			break
		}
		for rows.Next() {
			var k, st string
			var n int64
			if rows.Scan(&k, &st, &n) == nil && counts[[2]string{k, st}] >= 0 {
				counts[[2]string{k, st}] += float64(n)
			}
		}
		rows.Close()
	}
	for k, v := range counts {
		ch <- prometheus.MustNewConstMetric(openDesc, prometheus.GaugeValue, v, k[0], k[1])
	}
}
