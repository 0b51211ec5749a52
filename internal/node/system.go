package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/bus"
	"hongbao/internal/dtx"
	"hongbao/internal/group"
	"hongbao/internal/ids"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/postgres"
)

// OpenDB opens (creating and migrating) a named database.
type OpenDB func(ctx context.Context, name string, maxConns int32, migrations ...[]postgres.Migration) (*pgxpool.Pool, error)

// SystemOptions size and tune a whole Hongbao node.
type SystemOptions struct {
	LedgerShards int
	PacketSets   int
	Limits       packet.Limits
	// MaxAmount bounds a single transfer, deposit or entry fee; MaxBalance a
	// user's wallet (defaults: node.DefaultMaxAmount, ledger.DefaultMaxBalance).
	MaxAmount, MaxBalance money.Amount
	// Bus: a NATS URL, or an embedded server storing in BusDir.
	NatsURL string
	BusDir  string
	BusPort int
	// NatsReplicas of the stream (0: 1 in process, min(3, servers) on a
	// cluster); AckTimeout bounds each wait for a publish ack (default 5 s).
	NatsReplicas int
	AckTimeout   time.Duration
	// Grace before the reconciler republishes a credit it has not seen applied.
	Grace time.Duration
	// Every is how often sweepers and the reconciler run.
	Every time.Duration
	// TxRetention keeps finished global transactions this long (default 7 days).
	TxRetention time.Duration
	// NodeID names this node across its restarts (one live process per id):
	// a restarted node takes over at once what its dead predecessor was
	// driving. Empty: a fresh identity, and a predecessor's leases run out.
	NodeID string
	Logger *slog.Logger
}

// System is every part of a node, started and stopped together.
type System struct {
	Ledgers *Ledgers
	Groups  *group.Store
	Sets    []*packet.Set
	Coord   *dtx.Coordinator
	Bus     *bus.Bus
	Relay   *packet.Relay
	Flows   *Flows
	Credits []*bus.Consumer
	// DeadCredits counts credits parked on a dead-letter subject;
	// RelayRestarts the relay's restarts after a stall; Redriven the
	// credits the reconciler published again.
	DeadCredits, RelayRestarts, Redriven atomic.Int64

	o       SystemOptions
	grace   atomic.Int64 // time.Duration
	members *memberCache
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// StartSystem opens every database, connects the bus and starts the
// long-running parts: coordinator recovery, relay, credit consumers,
// sweepers and the reconciler.
func StartSystem(ctx context.Context, open OpenDB, o SystemOptions) (*System, error) {
	if o.Limits == (packet.Limits{}) {
		o.Limits = packet.DefaultLimits
	}
	if o.Grace == 0 {
		// Long enough that a credit still queued in the stream behind a
		// storm is not published again; short enough to heal a lost one.
		o.Grace = time.Minute
	}
	if o.Every == 0 {
		o.Every = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.PacketSets < 1 || o.PacketSets > ids.MaxShard+1 {
		return nil, fmt.Errorf("packet sets %d: want 1..%d", o.PacketSets, ids.MaxShard+1)
	}
	s := &System{o: o}
	s.grace.Store(int64(o.Grace))
	var err error
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if s.Ledgers, err = OpenLedgers(ctx, open, o.LedgerShards, ledger.Options{MaxBalance: o.MaxBalance, Logger: o.Logger}); err != nil {
		return nil, err
	}
	tab := s.Ledgers.Table
	sizes := PoolSizes(o.LedgerShards, o.PacketSets)
	gpool, err := open(ctx, GroupDB, sizes[GroupDB], group.Migrations()...)
	if err != nil {
		return nil, err
	}
	s.Groups = group.New(gpool, group.Options{Logger: o.Logger})

	if s.Bus, err = bus.Start(ctx, bus.Options{URL: o.NatsURL, StoreDir: o.BusDir, Port: o.BusPort, Replicas: o.NatsReplicas, AckTimeout: o.AckTimeout, Logger: o.Logger}); err != nil {
		return nil, err
	}
	s.Relay = packet.NewRelay(s.Bus, tab.Of, o.Logger)
	s.members = newMemberCache(s.Groups)
	members := s.members
	for i := range o.PacketSets {
		pool, err := open(ctx, PacketDB(i), sizes[PacketDB(i)], packet.Migrations()...)
		if err != nil {
			return nil, err
		}
		set, err := packet.New(pool, packet.Options{Set: i, Limits: o.Limits, Members: members, OnCommit: s.Relay.EnqueueClaims, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		s.Sets = append(s.Sets, set)
	}
	dpool, err := open(ctx, DtxDB, sizes[DtxDB], dtx.Migrations()...)
	if err != nil {
		return nil, err
	}
	parts := Participants(s.Ledgers, s.Groups)
	for _, set := range s.Sets {
		parts[PacketParticipant(set.Number())] = set.Participant()
	}
	s.Coord = dtx.New(dpool, dtx.Options{Identity: o.NodeID, Participants: parts, Retention: o.TxRetention, Logger: o.Logger})
	s.Flows = NewFlows(s.Coord, s.Ledgers, s.Groups, s.Sets, o.Limits, o.MaxAmount)

	for _, l := range s.Ledgers.Shards {
		c, err := s.Bus.NewConsumer(ctx, bus.ConsumerOptions{Name: fmt.Sprintf("ledger-%d", l.Shard()),
			Subject: ledger.CreditSubject(l.Shard()), DeadSubject: ledger.DeadCreditSubject(l.Shard())})
		if err != nil {
			return nil, err
		}
		s.Credits = append(s.Credits, c)
	}

	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.Coord.Start(run)
	s.wg.Go(func() { s.superviseRelay(run) })
	for i, c := range s.Credits {
		h := s.Ledgers.Shards[i].CreditHandler(func(ctx context.Context, dead []ledger.CreditMessage) error {
			data, _ := json.Marshal(ledger.CreditBatch{Credits: dead})
			err := s.Bus.Publish(ctx, []bus.Msg{{Subject: ledger.DeadCreditSubject(i), ID: fmt.Sprintf("dead:%s:%d", dead[0].Key, len(dead)), Data: data}})
			if err == nil {
				s.DeadCredits.Add(int64(len(dead)))
			}
			return err
		})
		s.wg.Go(func() { c.Run(run, h) })
	}
	s.wg.Go(func() { s.sweepLoop(run) })
	ok = true
	return s, nil
}

// PacketParticipant is the registry name of packet set n.
func PacketParticipant(n int) string { return fmt.Sprintf("packet:%d", n) }

// Close stops the parts in order, after the callers have stopped: the
// sets commit the claims they hold, the relay publishes what it holds,
// then the loops stop (recovery, consumers, sweepers) and the bus closes.
// Whatever is still in flight is found again by the reconciler.
func (s *System) Close() {
	for _, set := range s.Sets {
		set.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.Relay != nil && s.Bus != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if n, err := s.Relay.Drain(ctx); err != nil {
			s.o.Logger.Warn("relay not drained; the reconciler will republish", "left", n, "err", err)
		}
		cancel()
	}
	if s.Coord != nil {
		s.Coord.Close()
	}
	if s.Bus != nil {
		s.Bus.Close()
	}
}

// sweepLoop expires packets (refunding their remainder), expires holds, and
// settles what the relay may have lost.
func (s *System) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.o.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.Sweep(ctx)
	}
}

// RelayStall is how long the relay may have work and publish nothing before
// it is restarted.
const RelayStall = 30 * time.Second

// superviseRelay runs the relay and restarts it when it stalls: with work
// queued and nothing published for RelayStall. (Every wait on the broker
// is bounded, so a stall means the broker is unreachable or refuses; the
// restart drops the relay's in-hand batch, which the reconciler re-drives.)
func (s *System) superviseRelay(ctx context.Context) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); s.Relay.Run(rctx) }()
		t := time.NewTicker(time.Second)
	watch:
		for {
			select {
			case <-done:
				break watch
			case <-ctx.Done():
				break watch
			case <-t.C:
				if d := s.Relay.Stalled(); d > RelayStall {
					s.o.Logger.Warn("relay stalled; restarting it", "stalled_for", d.Round(time.Second), "queued", s.Relay.Queued())
					s.RelayRestarts.Add(1)
					break watch
				}
			}
		}
		t.Stop()
		cancel()
		<-done
	}
}

// republish is the reconciler's re-drive: straight to the bus, bounded,
// not through the relay's queue (which may be what is stuck).
func (s *System) republish(ctx context.Context) func([]ledger.CreditMessage) {
	return func(msgs []ledger.CreditMessage) {
		for len(msgs) > 0 {
			n := min(len(msgs), 5000)
			if err := s.Relay.PublishNow(ctx, msgs[:n]); err != nil {
				s.o.Logger.Warn("re-drive of uncredited claims failed; the next pass tries again", "credits", len(msgs), "err", err)
				return
			}
			s.Redriven.Add(int64(n))
			msgs = msgs[n:]
		}
	}
}

// SetGrace changes how long the reconciler waits before republishing a
// credit it has not seen applied.
func (s *System) SetGrace(d time.Duration) { s.grace.Store(int64(d)) }

// Sweep runs one pass of the sweepers and the reconciler.
func (s *System) Sweep(ctx context.Context) {
	for _, set := range s.Sets {
		refunds, err := set.Expire(ctx, 1000)
		if err != nil {
			s.o.Logger.Warn("expiry sweep failed", "packet_set", set.Number(), "err", err)
		}
		msgs := make([]ledger.CreditMessage, len(refunds))
		for i, r := range refunds {
			msgs[i] = packet.RefundMessage(r)
		}
		s.Relay.Enqueue(msgs)
		if _, _, err := set.Settle(ctx, time.Duration(s.grace.Load()), s.applied, s.republish(ctx)); err != nil && ctx.Err() == nil {
			s.o.Logger.Warn("settle failed", "packet_set", set.Number(), "err", err)
		}
		set.Evict()
	}
	s.members.evict(5 * time.Minute)
	keep := s.o.TxRetention
	if keep == 0 {
		keep = 7 * 24 * time.Hour
	}
	for _, l := range s.Ledgers.Shards {
		if _, err := l.PurgeRequests(ctx, time.Now().Add(-keep), 1000); err != nil && ctx.Err() == nil {
			s.o.Logger.Warn("request key purge failed", "ledger_shard", l.Shard(), "err", err)
		}
		if _, err := l.ExpireHolds(ctx, 1000); err != nil && ctx.Err() == nil {
			s.o.Logger.Warn("hold expiry failed", "ledger_shard", l.Shard(), "err", err)
		}
	}
}

// applied asks each user's ledger shard which credits it has applied.
func (s *System) applied(ctx context.Context, msgs []ledger.CreditMessage) (map[string]bool, error) {
	byShard := map[int][]string{}
	for _, m := range msgs {
		n := s.Ledgers.Table.Of(m.User)
		byShard[n] = append(byShard[n], m.Key)
	}
	out := map[string]bool{}
	for n, keys := range byShard {
		got, err := s.Ledgers.Shards[n].Applied(ctx, keys)
		if err != nil {
			return nil, err
		}
		for k := range got {
			out[k] = true
		}
	}
	return out, nil
}

// memberCache answers membership for grabs from a per-group member set
// loaded once (and again after a while); a user not in it is asked of the
// group shard directly, so a new member is never refused.
type memberCache struct {
	groups *group.Store
	mu     sync.RWMutex
	sets   map[int64]*memberSet
}

type memberSet struct {
	mu      sync.RWMutex
	loaded  time.Time
	users   map[int64]bool
	loading sync.Mutex // one reload at a time; the others wait for it
}

// reload reads the group's members again unless another caller just did,
// and reports whether user is among them.
func (ms *memberSet) reload(ctx context.Context, groups *group.Store, groupID, user int64) (bool, error) {
	ms.loading.Lock()
	defer ms.loading.Unlock()
	ms.mu.RLock()
	fresh := time.Since(ms.loaded) < 30*time.Second
	in := ms.users[user]
	ms.mu.RUnlock()
	if fresh {
		return in, nil
	}
	users := map[int64]bool{}
	after := int64(0)
	for {
		page, err := groups.Members(ctx, groupID, after, 1000)
		if err != nil {
			return false, err
		}
		for _, mb := range page {
			users[mb.User] = true
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].User
	}
	ms.mu.Lock()
	ms.users, ms.loaded = users, time.Now()
	ms.mu.Unlock()
	return users[user], nil
}

// evict forgets member sets loaded longer ago than maxAge.
func (m *memberCache) evict(maxAge time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, ms := range m.sets {
		ms.mu.RLock()
		old := time.Since(ms.loaded) > maxAge
		ms.mu.RUnlock()
		if old {
			delete(m.sets, id)
		}
	}
}

func newMemberCache(g *group.Store) *memberCache {
	return &memberCache{groups: g, sets: map[int64]*memberSet{}}
}

func (m *memberCache) IsMember(ctx context.Context, groupID, user int64) (bool, error) {
	m.mu.RLock()
	ms, ok := m.sets[groupID]
	m.mu.RUnlock()
	if !ok {
		m.mu.Lock()
		if ms, ok = m.sets[groupID]; !ok {
			ms = &memberSet{}
			m.sets[groupID] = ms
		}
		m.mu.Unlock()
	}
	ms.mu.RLock()
	fresh := time.Since(ms.loaded) < 30*time.Second
	in := ms.users[user]
	ms.mu.RUnlock()
	if in && fresh {
		return true, nil
	}
	if !fresh {
		in, err := ms.reload(ctx, m.groups, groupID, user)
		if err != nil || in {
			return in, err
		}
	}
	in, err := m.groups.IsMember(ctx, groupID, user)
	if in {
		ms.mu.Lock()
		ms.users[user] = true
		ms.mu.Unlock()
	}
	return in, err
}

// ClaimsCredited reports which claims their grabbers' ledgers applied.
func (s *System) ClaimsCredited(ctx context.Context, cs []packet.Claim) (map[int64]bool, error) {
	msgs := make([]ledger.CreditMessage, len(cs))
	for i, c := range cs {
		msgs[i] = packet.ClaimMessage(c)
	}
	done, err := s.applied(ctx, msgs)
	if err != nil {
		return nil, err
	}
	out := map[int64]bool{}
	for i, c := range cs {
		out[c.ID] = done[msgs[i].Key]
	}
	return out, nil
}
