package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"hongbao/internal/channel"
)

// Headers of a webhook delivery.
const (
	HeaderEventID   = "X-Hongbao-Event-Id"
	HeaderAttempt   = "X-Hongbao-Attempt"
	HeaderTimestamp = "X-Hongbao-Timestamp"
	HeaderSignature = "X-Hongbao-Signature" // hex HMAC-SHA256 of timestamp + "\n" + body
)

// Schedule is the wait after each failed attempt (as payment channels
// notify): 15 attempts after the first over about 24 hours; then the
// delivery is given up.
var Schedule = []time.Duration{15 * time.Second, 15 * time.Second, 30 * time.Second, 3 * time.Minute, 10 * time.Minute,
	20 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute, time.Hour, 3 * time.Hour, 3 * time.Hour,
	3 * time.Hour, 6 * time.Hour, 6 * time.Hour}

// Delivery states.
const (
	Pending   = "pending"
	Delivered = "delivered"
	GivenUp   = "given_up"
)

// Webhook is an application's endpoint.
type Webhook struct {
	ID        int64     `json:"id,string"`
	URL       string    `json:"url"`
	Kinds     []string  `json:"kinds"`
	CreatedAt time.Time `json:"created_at"`
}

// Delivery is one event on its way to one webhook.
type Delivery struct {
	ID        int64      `json:"id,string"`
	Webhook   int64      `json:"webhook,string"`
	EventID   string     `json:"event_id"`
	State     string     `json:"state"`
	Attempts  int        `json:"attempts"`
	NextAt    *time.Time `json:"next_at,omitempty"`
	LastError string     `json:"last_error,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	DoneAt    *time.Time `json:"done_at,omitempty"`
}

// Errors a caller branches on.
var (
	ErrInvalid  = errors.New("invalid webhook")
	ErrNotFound = errors.New("no such delivery or webhook")
)

// deliver creates the deliveries of new events to every webhook that
// wants their kind, in the sequencer's transaction.
func deliver(ctx context.Context, tx pgx.Tx, evs []Event, now time.Time) error {
	rows, err := tx.Query(ctx, `SELECT id, kinds FROM webhooks WHERE NOT disabled`)
	if err != nil {
		return err
	}
	type hook struct {
		id    int64
		kinds []string
	}
	hooks, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (hook, error) {
		var h hook
		return h, r.Scan(&h.id, &h.kinds)
	})
	if err != nil || len(hooks) == 0 {
		return err
	}
	var cp [][]any
	for _, e := range evs {
		for _, h := range hooks {
			if len(h.kinds) == 0 || slices.Contains(h.kinds, e.Kind) {
				cp = append(cp, []any{h.id, e.ID, Pending, now, now})
			}
		}
	}
	if len(cp) == 0 {
		return nil
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"deliveries"}, []string{"webhook_id", "event_id", "state", "next_at", "created_at"}, pgx.CopyFromRows(cp))
	return err
}

// Webhooks delivers events to applications with maximum effort: each
// delivery is POSTed, signed, until an endpoint answers 2xx, on Schedule
// (with up to 10% jitter), then given up and listed. The state is in the
// database, so deliveries survive restarts; each endpoint has its own
// bounded number of requests in flight, so a slow or dead one holds up
// nobody else.
type Webhooks struct {
	db     *pgxpool.Pool
	client *http.Client
	// Now and Jitter are the clock and the jitter of a wait (tests inject them).
	Now    func() time.Time
	Jitter func(time.Duration) time.Duration
	// PerEndpoint bounds the requests in flight to one webhook (default 4).
	PerEndpoint int
	log         *slog.Logger

	mu      sync.Mutex
	running map[int64]bool // webhooks with a sender working
	wg      sync.WaitGroup

	attempts, successes, giveUps prometheus.Counter
}

// NewWebhooks returns the deliverer over the events database.
func NewWebhooks(db *pgxpool.Pool, log *slog.Logger) *Webhooks {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Webhooks{db: db, client: &http.Client{Timeout: 5 * time.Second}, Now: time.Now, PerEndpoint: 4, log: log, running: map[int64]bool{},
		Jitter:    func(d time.Duration) time.Duration { return time.Duration(rand.Int64N(int64(d)/10 + 1)) },
		attempts:  prometheus.NewCounter(prometheus.CounterOpts{Name: "hongbao_webhook_attempts_total", Help: "Webhook delivery attempts."}),
		successes: prometheus.NewCounter(prometheus.CounterOpts{Name: "hongbao_webhook_delivered_total", Help: "Webhook deliveries an endpoint accepted (2xx)."}),
		giveUps:   prometheus.NewCounter(prometheus.CounterOpts{Name: "hongbao_webhook_given_up_total", Help: "Webhook deliveries given up after the last scheduled attempt (alert on any)."}),
	}
}

// Register adds an application's webhook: events of kinds (none: every
// kind) are delivered to url, signed with secret.
func (w *Webhooks) Register(ctx context.Context, rawURL, secret string, kinds []string) (Webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || len(rawURL) > 2000 {
		return Webhook{}, fmt.Errorf("%w: url %q: want http(s)://host[:port]/path", ErrInvalid, rawURL)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return Webhook{}, fmt.Errorf("%w: url port %q: want 1..65535", ErrInvalid, p)
		}
	}
	if u.User != nil {
		return Webhook{}, fmt.Errorf("%w: a webhook url carries no credentials (the signature authenticates us)", ErrInvalid)
	}
	if len(secret) < 16 || len(secret) > 256 {
		return Webhook{}, fmt.Errorf("%w: the secret must be 16 to 256 characters", ErrInvalid)
	}
	if kinds == nil {
		kinds = []string{}
	}
	for _, k := range kinds {
		if !slices.Contains(Kinds, k) {
			return Webhook{}, fmt.Errorf("%w: unknown event kind %q", ErrInvalid, k)
		}
	}
	h := Webhook{URL: rawURL, Kinds: kinds}
	err = w.db.QueryRow(ctx, `INSERT INTO webhooks (url, secret, kinds) VALUES ($1, $2, $3) RETURNING id, created_at`, rawURL, secret, kinds).Scan(&h.ID, &h.CreatedAt)
	return h, err
}

// Remove disables a webhook: nothing more is delivered to it, and its
// pending deliveries are given up.
func (w *Webhooks) Remove(ctx context.Context, id int64) error {
	tag, err := w.db.Exec(ctx, `UPDATE webhooks SET disabled = true WHERE id = $1 AND NOT disabled`, id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	_, err = w.db.Exec(ctx, `UPDATE deliveries SET state = 'given_up', next_at = NULL, done_at = $2, last_error = 'webhook removed'
		WHERE webhook_id = $1 AND state = 'pending'`, id, w.Now())
	return err
}

// List returns the webhooks (without their secrets).
func (w *Webhooks) List(ctx context.Context) ([]Webhook, error) {
	rows, err := w.db.Query(ctx, `SELECT id, url, kinds, created_at FROM webhooks WHERE NOT disabled ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Webhook, error) {
		var h Webhook
		return h, r.Scan(&h.ID, &h.URL, &h.Kinds, &h.CreatedAt)
	})
}

const deliveryColumns = `id, webhook_id, event_id, state, attempts, next_at, last_error, created_at, done_at`

func scanDelivery(r pgx.CollectableRow) (Delivery, error) {
	var d Delivery
	return d, r.Scan(&d.ID, &d.Webhook, &d.EventID, &d.State, &d.Attempts, &d.NextAt, &d.LastError, &d.CreatedAt, &d.DoneAt)
}

// Deliveries lists deliveries in a state ("" for all), newest first, before an id.
func (w *Webhooks) Deliveries(ctx context.Context, state string, before int64, limit int) ([]Delivery, error) {
	if state != "" && state != Pending && state != Delivered && state != GivenUp {
		return nil, fmt.Errorf("%w: state %q: pending, delivered or given_up", ErrInvalid, state)
	}
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := w.db.Query(ctx, `SELECT `+deliveryColumns+` FROM deliveries WHERE ($1 = '' OR state = $1) AND id < $2 ORDER BY id DESC LIMIT $3`, state, before, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanDelivery)
}

// Resend puts a delivery (given up, or any) back on its way now, with a
// fresh schedule.
func (w *Webhooks) Resend(ctx context.Context, id int64) (Delivery, error) {
	rows, err := w.db.Query(ctx, `UPDATE deliveries SET state = 'pending', attempts = 0, next_at = $2, done_at = NULL, last_error = ''
		WHERE id = $1 RETURNING `+deliveryColumns, id, w.Now())
	if err != nil {
		return Delivery{}, err
	}
	d, err := pgx.CollectExactlyOneRow(rows, scanDelivery)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, ErrNotFound
	}
	return d, err
}

// Run starts senders for due deliveries every tick until ctx ends, then
// waits for them.
func (w *Webhooks) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	defer w.wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.start(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("webhook pass failed", "err", err)
		}
	}
}

// Step runs one pass and waits until its sends are done (tests).
func (w *Webhooks) Step(ctx context.Context) error {
	err := w.start(ctx)
	w.wg.Wait()
	return err
}

// start starts a sender for every webhook with due deliveries and none running.
func (w *Webhooks) start(ctx context.Context) error {
	rows, err := w.db.Query(ctx, `SELECT DISTINCT webhook_id FROM deliveries WHERE state = 'pending' AND next_at <= $1`, w.Now())
	if err != nil {
		return err
	}
	due, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	for _, id := range due {
		w.mu.Lock()
		busy := w.running[id]
		w.running[id] = true
		w.mu.Unlock()
		if busy {
			continue
		}
		w.wg.Go(func() {
			defer func() { w.mu.Lock(); delete(w.running, id); w.mu.Unlock() }()
			if err := w.send(ctx, id); err != nil && ctx.Err() == nil {
				w.log.Warn("webhook sender failed", "webhook", id, "err", err)
			}
		})
	}
	return nil
}

// send leases up to PerEndpoint due deliveries of one webhook, posts them
// at once and records each outcome.
func (w *Webhooks) send(ctx context.Context, hook int64) error {
	var h struct{ url, secret string }
	if err := w.db.QueryRow(ctx, `SELECT url, secret FROM webhooks WHERE id = $1 AND NOT disabled`, hook).Scan(&h.url, &h.secret); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	}
	// Batch after batch while some are due: an endpoint that keeps up is
	// not held to one batch a tick.
	for ctx.Err() == nil {
		n, err := w.sendBatch(ctx, hook, h.url, h.secret)
		if err != nil || n == 0 {
			return err
		}
	}
	return nil
}

// sendBatch leases up to PerEndpoint due deliveries of one webhook, posts
// them at once and records each outcome; it returns how many.
func (w *Webhooks) sendBatch(ctx context.Context, hook int64, hookURL, secret string) (int, error) {
	h := struct{ url, secret string }{hookURL, secret}
	now := w.Now()
	// The lease: a sender that dies leaves them due again a minute later.
	rows, err := w.db.Query(ctx, `UPDATE deliveries d SET next_at = $3, attempts = attempts + 1
		WHERE id IN (SELECT id FROM deliveries WHERE webhook_id = $1 AND state = 'pending' AND next_at <= $2 ORDER BY next_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)
		RETURNING d.id, d.event_id, d.attempts, (SELECT json_build_object('id', id, 'kind', kind, 'conversation', conversation, 'seq', seq, 'user', user_id, 'payload', payload::json, 'at', at)
			FROM feed WHERE feed.id = d.event_id)::text`,
		hook, now, now.Add(time.Minute), max(w.PerEndpoint, 1))
	if err != nil {
		return 0, err
	}
	type job struct {
		id       int64
		event    string
		attempts int
		body     *string
	}
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (job, error) {
		var j job
		return j, r.Scan(&j.id, &j.event, &j.attempts, &j.body)
	})
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			w.attempts.Inc()
			var errText string
			if j.body == nil {
				errText = "the event is no longer in the feed"
			} else {
				errText = w.post(ctx, h.url, []byte(h.secret), j.event, j.attempts, []byte(*j.body))
			}
			w.record(ctx, j.id, j.attempts, errText)
		})
	}
	wg.Wait()
	return len(jobs), nil
}

// post sends one attempt; it returns what went wrong ("" for a 2xx).
func (w *Webhooks) post(ctx context.Context, url string, secret []byte, event string, attempt int, body []byte) string {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderEventID, event)
	req.Header.Set(HeaderAttempt, fmt.Sprint(attempt))
	channel.SignAs(req.Header, HeaderTimestamp, HeaderSignature, secret, body, w.Now())
	resp, err := w.client.Do(req)
	if err != nil {
		return err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Sprintf("answered %d", resp.StatusCode)
	}
	return ""
}

// record writes an attempt's outcome: delivered, the next attempt on the
// schedule, or given up after the last.
func (w *Webhooks) record(ctx context.Context, id int64, attempts int, errText string) {
	now := w.Now()
	ctx = context.WithoutCancel(ctx)
	var err error
	switch {
	case errText == "":
		w.successes.Inc()
		_, err = w.db.Exec(ctx, `UPDATE deliveries SET state = 'delivered', next_at = NULL, done_at = $2, last_error = '' WHERE id = $1`, id, now)
	case attempts > len(Schedule):
		w.giveUps.Inc()
		_, err = w.db.Exec(ctx, `UPDATE deliveries SET state = 'given_up', next_at = NULL, done_at = $2, last_error = $3 WHERE id = $1`, id, now, errText)
	default:
		wait := Schedule[attempts-1]
		wait += w.Jitter(wait)
		_, err = w.db.Exec(ctx, `UPDATE deliveries SET next_at = $2, last_error = $3 WHERE id = $1`, id, now.Add(wait), errText)
	}
	if err != nil {
		w.log.Warn("webhook outcome not recorded; the lease runs out and it is sent again", "delivery", id, "err", err)
	}
}

// Collectors are the webhook metrics, with the age of the oldest pending
// delivery from the database.
func (w *Webhooks) Collectors() []prometheus.Collector {
	return []prometheus.Collector{w.attempts, w.successes, w.giveUps,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hongbao_webhook_oldest_pending_seconds", Help: "Age of the oldest webhook delivery not delivered yet (-1: the database did not answer)."}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var at *time.Time
			if err := w.db.QueryRow(ctx, `SELECT min(created_at) FROM deliveries WHERE state = 'pending'`).Scan(&at); err != nil {
				return -1
			}
			if at == nil {
				return 0
			}
			return w.Now().Sub(*at).Seconds()
		})}
}
