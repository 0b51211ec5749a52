// Package cluster lets many nodes share one system: a registry of live
// nodes and a lease per packet set, held in PostgreSQL (the coordinator's
// database), renewed every beat, spread evenly over the live nodes and
// fenced by the packets' owner epochs. A node that dies loses its sets when
// their leases run out; one that stops gracefully gives them up first.
package cluster

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/postgres"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// Migrations are the registry's tables.
func Migrations() []postgres.Migration { return postgres.Embedded("cluster", sqlFS, "sql") }

// Options configure a member.
type Options struct {
	Node string // this node's id
	URL  string // where other nodes reach its API
	Sets int
	// TTL is how long a lease lasts unrenewed (default 6 s); Beat how often
	// it is renewed (default TTL/3).
	TTL, Beat time.Duration
	// Gained and Lost are told of sets this node starts and stops owning.
	Gained, Lost func(set int)
	Logger       *slog.Logger
}

// Member is this node's part of the cluster.
type Member struct {
	db *pgxpool.Pool
	o  Options

	mu     sync.Mutex
	owned  map[int]bool
	owners map[int]Lease
	nodes  []Node

	// Moves counts the sets this node took over.
	Moves atomic.Int64
}

// Lease is who owns a set.
type Lease struct {
	Set       int       `json:"set"`
	Owner     string    `json:"owner"`
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
	Since     time.Time `json:"since"`
	Moves     int64     `json:"moves"`
}

// Node is a live node.
type Node struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	StartedAt time.Time `json:"started_at"`
	SeenAt    time.Time `json:"seen_at"`
}

// Join registers the node and takes its first share of the sets before it
// returns (a single node owns them all at once).
func Join(ctx context.Context, db *pgxpool.Pool, o Options) (*Member, error) {
	if o.Node == "" || o.Sets < 1 {
		return nil, errors.New("cluster: a node id and at least one set are required")
	}
	if o.TTL == 0 {
		o.TTL = 6 * time.Second
	}
	if o.Beat == 0 {
		o.Beat = o.TTL / 3
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Gained == nil {
		o.Gained = func(int) {}
	}
	if o.Lost == nil {
		o.Lost = func(int) {}
	}
	m := &Member{db: db, o: o, owned: map[int]bool{}, owners: map[int]Lease{}}
	if _, err := db.Exec(ctx, `INSERT INTO set_leases (set_no) SELECT s FROM generate_series(0, $1 - 1) s ON CONFLICT DO NOTHING`, o.Sets); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := m.beat(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Run renews and rebalances every beat until ctx ends, and at once when
// another node gives sets up (it notifies on the leases' channel), so that
// a graceful hand-over takes milliseconds, not a beat.
func (m *Member) Run(ctx context.Context) {
	wake := make(chan struct{}, 1)
	listening := make(chan struct{})
	go func() { defer close(listening); m.listen(ctx, wake) }()
	defer func() { <-listening }()
	t := time.NewTicker(m.o.Beat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		pass, cancel := context.WithTimeout(ctx, m.o.TTL)
		if err := m.beat(pass); err != nil && ctx.Err() == nil {
			m.o.Logger.Warn("cluster beat failed; the leases run out unless the next one succeeds", "err", err)
			// Not renewed: past the TTL another node may own these sets.
			m.dropExpired()
		}
		cancel()
	}
}

// notifyChannel is where a node that gives sets up says so.
const notifyChannel = "hongbao_set_leases"

// listen passes the leases' notifications on to wake until ctx ends.
func (m *Member) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		conn, err := m.db.Acquire(ctx)
		if err != nil {
			sleep(ctx, m.o.Beat)
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
		sleep(ctx, m.o.Beat)
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

// beat: heartbeat, renew what is ours, give up what is more than our
// share, take free or expired sets while below it.
func (m *Member) beat(ctx context.Context) error {
	var gained, lost []int
	err := pgx.BeginFunc(ctx, m.db, func(tx pgx.Tx) error {
		gained, lost = nil, nil
		if _, err := tx.Exec(ctx, `INSERT INTO cluster_nodes (id, url) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET url = excluded.url, seen_at = now()`, m.o.Node, m.o.URL); err != nil {
			return err
		}
		var live int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM cluster_nodes WHERE seen_at > now() - $1::interval`, m.o.TTL.String()).Scan(&live); err != nil {
			return err
		}
		share := (m.o.Sets + max(live, 1) - 1) / max(live, 1)
		// Renew ours (one row each, locked in set order).
		rows, err := tx.Query(ctx, `UPDATE set_leases SET expires_at = now() + $2::interval
			WHERE owner = $1 AND expires_at > now() RETURNING set_no`, m.o.Node, m.o.TTL.String())
		if err != nil {
			return err
		}
		mine, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return err
		}
		sort.Ints(mine)
		if len(mine) > share {
			give := mine[share:]
			if _, err := tx.Exec(ctx, `UPDATE set_leases SET owner = NULL, expires_at = 'epoch' WHERE owner = $1 AND set_no = ANY($2)`, m.o.Node, give); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "NOTIFY "+notifyChannel); err != nil {
				return err
			}
			mine = mine[:share]
		}
		if len(mine) < share {
			rows, err := tx.Query(ctx, `UPDATE set_leases SET owner = $1, expires_at = now() + $2::interval, since = now(),
				moves = moves + CASE WHEN owner IS NULL OR owner = $1 THEN 0 ELSE 1 END
				WHERE set_no IN (SELECT set_no FROM set_leases WHERE owner IS NULL OR expires_at <= now()
					ORDER BY set_no LIMIT $3 FOR UPDATE SKIP LOCKED)
				RETURNING set_no`, m.o.Node, m.o.TTL.String(), share-len(mine))
			if err != nil {
				return err
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[int])
			if err != nil {
				return err
			}
			mine = append(mine, got...)
		}
		have := map[int]bool{}
		for _, s := range mine {
			have[s] = true
		}
		m.mu.Lock()
		for s := range m.owned {
			if !have[s] {
				lost = append(lost, s)
			}
		}
		for s := range have {
			if !m.owned[s] {
				gained = append(gained, s)
			}
		}
		m.mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("cluster beat: %w", err)
	}
	// Lost first: never two sets' engines for one set in this process.
	for _, s := range lost {
		m.mu.Lock()
		delete(m.owned, s)
		m.mu.Unlock()
		m.o.Lost(s)
	}
	for _, s := range gained {
		m.o.Gained(s)
		m.mu.Lock()
		m.owned[s] = true
		m.mu.Unlock()
		m.Moves.Add(1)
	}
	return m.refresh(ctx)
}

// dropExpired gives up locally what this node could not renew.
func (m *Member) dropExpired() {
	m.mu.Lock()
	var lost []int
	for s := range m.owned {
		if l, ok := m.owners[s]; !ok || time.Now().After(l.ExpiresAt) {
			lost = append(lost, s)
			delete(m.owned, s)
		}
	}
	m.mu.Unlock()
	for _, s := range lost {
		m.o.Lost(s)
	}
}

// refresh reads every lease and live node.
func (m *Member) refresh(ctx context.Context) error {
	rows, err := m.db.Query(ctx, `SELECT l.set_no, coalesce(l.owner, ''), coalesce(n.url, ''), l.expires_at, l.since, l.moves
		FROM set_leases l LEFT JOIN cluster_nodes n ON n.id = l.owner ORDER BY l.set_no`)
	if err != nil {
		return err
	}
	leases, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Lease, error) {
		var l Lease
		return l, r.Scan(&l.Set, &l.Owner, &l.URL, &l.ExpiresAt, &l.Since, &l.Moves)
	})
	if err != nil {
		return err
	}
	rows, err = m.db.Query(ctx, `SELECT id, url, started_at, seen_at FROM cluster_nodes WHERE seen_at > now() - $1::interval ORDER BY id`, (2 * m.o.TTL).String())
	if err != nil {
		return err
	}
	nodes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Node, error) {
		var n Node
		return n, r.Scan(&n.ID, &n.URL, &n.StartedAt, &n.SeenAt)
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range leases {
		m.owners[l.Set] = l
	}
	m.nodes = nodes
	return nil
}

// Owns reports whether this node owns a set now.
func (m *Member) Owns(set int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.owned[set]
}

// Owner is the node that owns a set (as of the last beat) and its URL.
func (m *Member) Owner(set int) (Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.owners[set]
	return l, ok && l.Owner != "" && time.Now().Before(l.ExpiresAt)
}

// View is who owns what, and the live nodes.
func (m *Member) View(ctx context.Context) ([]Lease, []Node, error) {
	if err := m.refresh(ctx); err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ls := make([]Lease, 0, len(m.owners))
	for _, l := range m.owners {
		ls = append(ls, l)
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].Set < ls[j].Set })
	return ls, append([]Node(nil), m.nodes...), nil
}

// Leave gives up every set (after the caller stopped serving them) and
// leaves the registry, so other nodes take over at once.
func (m *Member) Leave(ctx context.Context) error {
	m.mu.Lock()
	var lost []int
	for s := range m.owned {
		lost = append(lost, s)
	}
	m.owned = map[int]bool{}
	m.mu.Unlock()
	for _, s := range lost {
		m.o.Lost(s)
	}
	_, err := m.db.Exec(ctx, `UPDATE set_leases SET owner = NULL, expires_at = 'epoch' WHERE owner = $1`, m.o.Node)
	if err == nil {
		_, err = m.db.Exec(ctx, `DELETE FROM cluster_nodes WHERE id = $1`, m.o.Node)
	}
	if err == nil {
		_, err = m.db.Exec(ctx, "NOTIFY "+notifyChannel)
	}
	return err
}
