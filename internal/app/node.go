// Package app is the one place that starts and stops Hongbao's parts: a
// node's databases, ledger shards, packet sets, group shard, coordinator,
// bus, relay, credit consumers and sweepers (Node), and the HTTP service
// around them (Serve). Everything else is a library it wires together.
package app

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"hongbao/internal/bus"
	"hongbao/internal/channel"
	"hongbao/internal/cluster"
	"hongbao/internal/dtx"
	"hongbao/internal/events"
	"hongbao/internal/flow"
	"hongbao/internal/group"
	"hongbao/internal/httpapi"
	"hongbao/internal/ids"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/payment"
	"hongbao/internal/postgres"
	"hongbao/internal/recon"
	"hongbao/internal/shard"
	"hongbao/internal/slots"
)

// OpenDB opens (creating and migrating) a named database.
type OpenDB func(ctx context.Context, name string, maxConns int32, migrations ...[]postgres.Migration) (*pgxpool.Pool, error)

// Database names of a node's shards.
const (
	GroupDB  = "hongbao_group_0"
	DtxDB    = "hongbao_dtx"
	EventsDB = "hongbao_events"
)

// LedgerDB is the database of ledger shard n.
func LedgerDB(n int) string { return fmt.Sprintf("hongbao_ledger_%d", n) }

// PacketDB is the database of packet set n.
func PacketDB(n int) string { return fmt.Sprintf("hongbao_packet_%d", n) }

// PoolSizes is every database a node opens with the largest pool it wants
// for it; a connection budget per server scales them down (Databases).
func PoolSizes(ledgerShards, packetSets int) map[string]int32 {
	m := map[string]int32{GroupDB: 32, DtxDB: 64, EventsDB: 32}
	for i := range ledgerShards {
		m[LedgerDB(i)] = 64
	}
	for i := range packetSets {
		m[PacketDB(i)] = 32
	}
	return m
}

// Subjects on the bus: the credits of ledger shard n, and those of them that
// can never apply.
func creditSubject(n int) string     { return fmt.Sprintf("hb.credit.%d", n) }
func deadCreditSubject(n int) string { return fmt.Sprintf("hb.dead.credit.%d", n) }

// OpenLedgers opens (creating and migrating) every ledger shard database.
func OpenLedgers(ctx context.Context, open OpenDB, n int, o ledger.Options) (*flow.Ledgers, error) {
	t, err := shard.NewTable(n)
	if err != nil {
		return nil, err
	}
	ls := &flow.Ledgers{Table: t}
	sizes := PoolSizes(n, 0)
	for i := range n {
		pool, err := open(ctx, LedgerDB(i), sizes[LedgerDB(i)], append(ledger.Migrations(), payment.Migrations())...)
		if err != nil {
			return nil, err
		}
		o.Shard = i
		l, err := ledger.New(ctx, pool, o)
		if err != nil {
			return nil, err
		}
		ls.Shards = append(ls.Shards, l)
	}
	return ls, nil
}

// DefaultCreditWorkers is how many batches of credits a node applies at
// once per ledger shard. In a hot packet's storm the credits share the
// database with the grabs: two keep up with them (the storm's last claim
// credited within 0.3 s of its end) and leave the grabs 16% more than
// four did (bench hot-packet, 2026-12-04).
const DefaultCreditWorkers = 2

// NodeOptions size and tune a whole Hongbao node.
type NodeOptions struct {
	LedgerShards int
	PacketSets   int
	Limits       packet.Limits
	// MaxAmount bounds a single transfer, deposit or entry fee; MaxBalance a
	// user's wallet (defaults: flow.DefaultMaxAmount, ledger.DefaultMaxBalance).
	MaxAmount, MaxBalance money.Amount
	// Bus: a NATS URL, or an embedded server storing in BusDir.
	NatsURL string
	BusDir  string
	BusPort int
	// NatsReplicas of the stream (0: 1 in process, min(3, servers) on a
	// cluster); AckTimeout bounds each wait for a publish ack (default 5 s).
	NatsReplicas int
	AckTimeout   time.Duration
	// RelayStall is how long the relay may have credits and publish none
	// before it is restarted (default 30 s).
	RelayStall time.Duration
	// Grace before the reconciler republishes a credit it has not seen applied.
	Grace time.Duration
	// Every is how often sweepers and the reconciler run.
	Every time.Duration
	// TxRetention keeps finished global transactions this long (default 7 days).
	TxRetention time.Duration
	// AnswerEarly: see dtx.Options.AnswerEarly.
	AnswerEarly bool
	// SlotDrainWait bounds a slot migration's wait for the moving wallets'
	// holds to resolve; SlotHook is the migrations' test hook.
	SlotDrainWait time.Duration
	SlotHook      func(step string) error
	// CreditWorkers pull each shard's credits side by side (default
	// DefaultCreditWorkers).
	CreditWorkers int
	// SlotResume is how often the node resumes unfinished migrations
	// (default 2 s; negative: never, a test drives them itself).
	SlotResume time.Duration
	// NodeID names this node across its restarts (one live process per id):
	// a restarted node takes over at once what its dead predecessor was
	// driving. Empty: a fresh identity, and a predecessor's leases run out.
	NodeID string
	// Channel is the payment channel (nil: top-ups and withdrawals answer
	// 503 no_channel); ChannelSecret verifies its callbacks. Payments tunes
	// the orders (its Channel, Secret and shards are filled in here).
	Channel       channel.Channel
	ChannelSecret []byte
	Payments      payment.Options
	// ReconAfter: reconcile yesterday once a day this long after midnight
	// UTC (0: no schedule; `hongbao recon` runs one by hand).
	ReconAfter time.Duration
	// URL is where other nodes reach this node's API (grabs for the sets it
	// owns are forwarded there); LeaseTTL bounds how long a dead node keeps
	// its sets (default 6 s).
	URL      string
	LeaseTTL time.Duration
	// TxBackoff, when set, is the coordinator's retry delay (minimum and
	// maximum); TxHook its step hook (tests make a transaction stick).
	TxBackoff time.Duration
	TxHook    func(point string) error
	// SampleEvery is how often the operators' overview samples the
	// counters (default 2 s; it keeps 10 minutes of them).
	SampleEvery time.Duration
	Logger      *slog.Logger
}

// Node is every part of a Hongbao node, started and stopped together.
type Node struct {
	Ledgers *flow.Ledgers
	// Slots is the stored slot table and the driver of slot migrations.
	Slots   *slots.Slots
	Groups  *group.Store
	Sets    []*packet.Set
	Coord   *dtx.Coordinator
	Bus     *bus.Bus
	Relay   *packet.Relay
	Flows   *flow.Flows
	Credits []*bus.Consumer
	// Payments runs top-ups and withdrawals; Recon reconciles the books.
	Payments *payment.Service
	Recon    *recon.Reconciler
	// The message side: a relay per database's outbox, the conversations'
	// feeds (with the sequencer's consumer) and the webhooks.
	// Cluster is this node's membership: which packet sets it owns.
	Cluster *cluster.Member
	// Forwarded counts grabs sent on to the node owning their set.
	Forwarded   atomic.Int64
	EventRelays []*events.Relay
	Feeds       *events.Feeds
	Webhooks    *events.Webhooks
	feedIn      *bus.Consumer
	samples     *sampler
	// DeadCredits counts credits parked on a dead-letter subject;
	// RelayRestarts the relay's restarts after a stall; Redriven the
	// credits the reconciler published again.
	DeadCredits, RelayRestarts, Redriven atomic.Int64

	o       NodeOptions
	grace   atomic.Int64 // time.Duration
	members *group.MemberCache
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stop    sync.Once
}

// StartNode opens every database, connects the bus and starts the
// long-running parts: coordinator recovery, relay, credit consumers,
// sweepers and the reconciler.
func StartNode(ctx context.Context, open OpenDB, o NodeOptions) (*Node, error) {
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
	if o.RelayStall == 0 {
		o.RelayStall = DefaultRelayStall
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.PacketSets < 1 || o.PacketSets > ids.MaxShard+1 {
		return nil, fmt.Errorf("packet sets %d: want 1..%d", o.PacketSets, ids.MaxShard+1)
	}
	n := &Node{o: o}
	n.grace.Store(int64(o.Grace))
	var err error
	ok := false
	defer func() {
		if !ok {
			n.Close()
		}
	}()
	if n.Ledgers, err = OpenLedgers(ctx, open, o.LedgerShards, ledger.Options{MaxBalance: o.MaxBalance, Logger: o.Logger}); err != nil {
		return nil, err
	}
	sizes := PoolSizes(o.LedgerShards, o.PacketSets)
	gpool, err := open(ctx, GroupDB, sizes[GroupDB], group.Migrations()...)
	if err != nil {
		return nil, err
	}
	n.Groups = group.New(gpool, group.Options{Logger: o.Logger})

	// Nodes starting at the same moment create the streams one at a time
	// (concurrent creation of a replicated stream on a fresh cluster timed
	// out): an advisory lock on the group database, shared by all nodes.
	unlock, err := advisoryLock(ctx, gpool, 0x6862_6275_73)
	if err != nil {
		return nil, err
	}
	n.Bus, err = bus.Start(ctx, bus.Options{URL: o.NatsURL, StoreDir: o.BusDir, Port: o.BusPort, Replicas: o.NatsReplicas,
		AckTimeout: o.AckTimeout, Logger: o.Logger})
	unlock()
	if err != nil {
		return nil, err
	}
	n.Relay = packet.NewRelay(publisher{n.Bus}, n.Ledgers.Table.Of, creditSubject, o.Logger)
	n.members = group.NewMemberCache(n.Groups)
	for i := range o.PacketSets {
		pool, err := open(ctx, PacketDB(i), sizes[PacketDB(i)], packet.Migrations()...)
		if err != nil {
			return nil, err
		}
		set, err := packet.New(pool, packet.Options{Set: i, Limits: o.Limits, Members: n.members, OnCommit: n.Relay.EnqueueClaims, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		n.Sets = append(n.Sets, set)
	}
	dpool, err := open(ctx, DtxDB, sizes[DtxDB], append(dtx.Migrations(), recon.Migrations(), cluster.Migrations(), slots.Migrations())...)
	if err != nil {
		return nil, err
	}
	// The slot table: the stored one is the truth (seeded on first start).
	if n.Slots, err = slots.New(ctx, slots.Options{DB: dpool, Ledgers: n.Ledgers.Shards, Table: n.Ledgers.Table, Logger: o.Logger,
		DrainWait: o.SlotDrainWait, Hook: o.SlotHook}); err != nil {
		return nil, err
	}
	n.Coord = dtx.New(dpool, dtx.Options{Identity: o.NodeID, Participants: flow.Participants(n.Ledgers, n.Groups, n.Sets),
		Retention: o.TxRetention, AnswerEarly: o.AnswerEarly, Logger: o.Logger, MinBackoff: o.TxBackoff, MaxBackoff: o.TxBackoff, Hook: o.TxHook})
	n.Flows = flow.New(n.Coord, n.Ledgers, n.Groups, n.Sets, o.Limits, o.MaxAmount)
	po := o.Payments
	po.Channel, po.Secret, po.Shards, po.ShardOf, po.Logger = o.Channel, o.ChannelSecret, n.Ledgers.Shards, n.Ledgers.Table.Of, o.Logger
	if n.Payments, err = payment.New(po); err != nil {
		return nil, err
	}
	n.Flows.Payments = n.Payments
	n.Recon = recon.New(recon.Options{Channel: o.Channel, Payments: n.Payments, Ledgers: n.Ledgers, Sets: n.Sets, DB: dpool,
		Grace: o.Grace, Logger: o.Logger, Unfinished: func(ctx context.Context) (int64, error) {
			all, _, err := n.Coord.Unfinished(ctx, time.Hour)
			return all, err
		}})

	epool, err := open(ctx, EventsDB, sizes[EventsDB], events.FeedMigrations())
	if err != nil {
		return nil, err
	}
	pub := eventPublisher{n.Bus}
	n.Feeds = events.NewFeeds(epool, pub, o.Logger)
	n.Webhooks = events.NewWebhooks(epool, o.Logger)
	for _, l := range n.Ledgers.Shards {
		n.EventRelays = append(n.EventRelays, events.NewRelay(l.DB(), fmt.Sprintf("ledger-%d", l.Shard()), pub, o.Logger))
	}
	for _, set := range n.Sets {
		n.EventRelays = append(n.EventRelays, events.NewRelay(set.DB(), fmt.Sprintf("packet-%d", set.Number()), pub, o.Logger))
	}
	n.EventRelays = append(n.EventRelays, events.NewRelay(n.Groups.DB(), "group-0", pub, o.Logger))
	if n.feedIn, err = n.Bus.NewConsumer(ctx, bus.ConsumerOptions{Name: "events-feed", Stream: bus.EventStream, Subject: events.SourceSubject(">"),
		Batch: 20, DeadSubject: "events.dead"}); err != nil {
		return nil, err
	}

	for _, l := range n.Ledgers.Shards {
		c, err := n.Bus.NewConsumer(ctx, bus.ConsumerOptions{Name: fmt.Sprintf("ledger-%d", l.Shard()),
			Subject: creditSubject(l.Shard()), DeadSubject: deadCreditSubject(l.Shard())})
		if err != nil {
			return nil, err
		}
		n.Credits = append(n.Credits, c)
	}

	// Each set is served by the one live node whose lease it holds: none
	// until the first beat hands this node its share (all of them when it
	// is alone).
	for _, set := range n.Sets {
		set.Serve(false)
	}
	id := o.NodeID
	if id == "" {
		b := make([]byte, 8)
		_, _ = crand.Read(b)
		id = fmt.Sprintf("node-%x", b)
	}
	n.o.NodeID = id
	if n.Cluster, err = cluster.Join(ctx, dpool, cluster.Options{Node: id, URL: o.URL, Sets: o.PacketSets, TTL: o.LeaseTTL, Logger: o.Logger,
		Gained: func(s int) { n.Sets[s].Serve(true) }, Lost: func(s int) { n.Sets[s].Serve(false) }}); err != nil {
		return nil, err
	}

	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.wg.Go(func() { n.Cluster.Run(run) })
	for _, set := range n.Sets {
		set.Start()
	}
	n.Coord.Start(run)
	n.wg.Go(func() { n.superviseRelay(run) })
	// Several pullers per shard's durable consumer, so that batches commit
	// side by side (each locks its users in id order and one stripe per
	// clearing account: no deadlock, at most a short wait on a shared
	// stripe).
	for i, c := range n.Credits {
		h := n.creditHandler(n.Ledgers.Shards[i])
		for range cmp.Or(o.CreditWorkers, DefaultCreditWorkers) {
			n.wg.Go(func() { c.Run(run, h) })
		}
	}
	n.wg.Go(func() { n.sweepLoop(run) })
	n.samples = newSampler(cmp.Or(o.SampleEvery, 2*time.Second), 10*time.Minute, n.counters)
	n.wg.Go(func() { n.samples.Run(run) })
	n.wg.Go(func() { n.Slots.Watch(run, 2*time.Second) })
	if o.SlotResume >= 0 {
		n.wg.Go(func() { n.Slots.Keep(run, cmp.Or(o.SlotResume, 2*time.Second)) })
	}
	// Day partitions ahead, on every node (creating one is idempotent).
	for _, l := range n.Ledgers.Shards {
		n.wg.Go(func() { l.Days.Keep(run, time.Hour, o.Logger) })
	}
	for _, set := range n.Sets {
		n.wg.Go(func() { set.Days.Keep(run, time.Hour, o.Logger) })
	}
	n.wg.Go(func() { n.Payments.Run(run, o.Every) })
	for _, r := range n.EventRelays {
		n.wg.Go(func() { r.Run(run, eventEvery(o.Every)) })
	}
	n.wg.Go(func() { n.feedIn.Run(run, n.feedHandler) })
	n.wg.Go(func() { n.Webhooks.Run(run, o.Every) })
	if o.ReconAfter > 0 {
		n.wg.Go(func() { n.Recon.Schedule(run, o.ReconAfter, time.Minute) })
	}
	ok = true
	return n, nil
}

// advisoryLock holds a session advisory lock on a connection of db until
// unlock is called.
func advisoryLock(ctx context.Context, db *pgxpool.Pool, key int64) (unlock func(), err error) {
	conn, err := db.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		conn.Release()
		return nil, err
	}
	return func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key)
		conn.Release()
	}, nil
}

// eventEvery is how often the event relays look at their outboxes: often,
// events are messages people wait for.
func eventEvery(every time.Duration) time.Duration { return min(every, 100*time.Millisecond) }

// eventPublisher carries events on the bus.
type eventPublisher struct{ b *bus.Bus }

func (p eventPublisher) Publish(ctx context.Context, msgs []events.Message) error {
	out := make([]bus.Msg, len(msgs))
	for i, m := range msgs {
		out[i] = bus.Msg(m)
	}
	return p.b.Publish(ctx, out)
}

// feedHandler is the sequencer: relayed events into the conversations'
// feeds (once each, in order, gapless), then out to the IM side.
func (n *Node) feedHandler(ctx context.Context, ds []bus.Delivery) []bus.Verdict {
	out := make([]bus.Verdict, len(ds))
	var evs []events.Event
	var idx []int
	for i, d := range ds {
		batch, err := events.Decode(d.Data)
		if err != nil {
			out[i] = bus.Dead
			continue
		}
		evs = append(evs, batch...)
		idx = append(idx, i)
	}
	added, err := n.Feeds.Append(ctx, evs)
	for _, i := range idx {
		out[i] = bus.Done
		if err != nil {
			out[i] = bus.Retry
		}
	}
	if err != nil {
		n.o.Logger.Warn("events not sequenced; redelivered", "events", len(evs), "err", err)
		return out
	}
	if err := n.Feeds.Publish(ctx, added); err != nil {
		n.o.Logger.Warn("events sequenced, not published yet; republished later", "events", len(added), "err", err)
	}
	return out
}

// publisher carries the relay's messages on the bus.
type publisher struct{ b *bus.Bus }

func (p publisher) Publish(ctx context.Context, msgs []packet.Message) error {
	out := make([]bus.Msg, len(msgs))
	for i, m := range msgs {
		out[i] = bus.Msg(m)
	}
	return p.b.Publish(ctx, out)
}

// creditHandler plugs a ledger shard's credit application into the bus:
// deliveries in, verdicts out, and the credits that can never apply parked
// on the shard's dead-letter subject.
func (n *Node) creditHandler(l *ledger.Ledger) bus.Handler {
	park := func(ctx context.Context, dead []ledger.CreditMessage) error {
		data, _ := json.Marshal(ledger.CreditBatch{Credits: dead})
		err := n.Bus.Publish(ctx, []bus.Msg{{Subject: deadCreditSubject(l.Shard()), ID: fmt.Sprintf("dead:%s:%d", dead[0].Key, len(dead)), Data: data}})
		if err == nil {
			n.DeadCredits.Add(int64(len(dead)))
		}
		return err
	}
	return func(ctx context.Context, ds []bus.Delivery) []bus.Verdict {
		data := make([][]byte, len(ds))
		for i, d := range ds {
			data[i] = d.Data
		}
		out := make([]bus.Verdict, len(ds))
		routing := ledger.Routing{Shard: n.Ledgers.Table.Of, Moving: n.Ledgers.Table.Moving, Forward: n.Relay.PublishNow}
		for i, v := range l.ApplyDeliveries(ctx, data, park, routing) {
			out[i] = map[ledger.Delivery]bus.Verdict{ledger.Done: bus.Done, ledger.Retry: bus.Retry, ledger.Dead: bus.Dead}[v]
		}
		return out
	}
}

// Close stops the parts in order, after the callers have stopped: the
// sets commit the claims they hold, the relay publishes what it holds,
// then the loops stop (recovery, consumers, sweepers) and the bus closes.
// Whatever is still in flight is found again by the reconciler. Calling it
// again does nothing.
func (n *Node) Close() { n.close(true) }

// close stops the node; leave false keeps its leases, as a process killed
// would (tests).
func (n *Node) close(leave bool) {
	n.stop.Do(func() {
		if n.Cluster != nil && leave {
			// Hand the sets over first: other nodes take them at their next beat.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := n.Cluster.Leave(ctx); err != nil {
				n.o.Logger.Warn("leases not given up; they run out", "err", err)
			}
			cancel()
		}
		for _, set := range n.Sets {
			set.Close()
		}
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
		if n.Relay != nil && n.Bus != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if left, err := n.Relay.Drain(ctx); err != nil {
				n.o.Logger.Warn("relay not drained; the reconciler will republish", "left", left, "err", err)
			}
			cancel()
		}
		if n.Coord != nil {
			n.Coord.Close()
		}
		if n.Bus != nil {
			n.Bus.Close()
		}
	})
}

// sweepLoop expires packets (refunding their remainder), expires holds,
// purges old request keys, and settles what the relay may have lost; each
// pass is bounded.
func (n *Node) sweepLoop(ctx context.Context) {
	t := time.NewTicker(n.o.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pass, cancel := context.WithTimeout(ctx, sweepPass)
		start := time.Now()
		took := n.sweep(pass)
		cancel()
		if d := time.Since(start); d > slowSweep {
			// Where a slow pass spent its time: the reconciler waits for
			// the others.
			args := []any{"took", d.Round(time.Millisecond)}
			for _, s := range took {
				if s.d > slowSweep/10 {
					args = append(args, s.name, s.d.Round(time.Millisecond))
				}
			}
			n.o.Logger.Warn("sweep slow", args...)
		}
	}
}

// sweepPass bounds one pass of the sweepers and the reconciler; a pass
// longer than slowSweep is logged with its steps.
const (
	sweepPass = 30 * time.Second
	slowSweep = 3 * time.Second
)

// step is how long one step of a sweep took.
type step struct {
	name string
	d    time.Duration
}

// DefaultRelayStall is how long the relay may have work and publish nothing
// before it is restarted.
const DefaultRelayStall = 30 * time.Second

// superviseRelay runs the relay and restarts it when it stalls: with work
// queued and nothing published for o.RelayStall. (Every wait on the broker
// is bounded, so a stall means the broker is unreachable or refuses; the
// restart drops the relay's in-hand batch, which the reconciler re-drives.)
func (n *Node) superviseRelay(ctx context.Context) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); n.Relay.Run(rctx) }()
		t := time.NewTicker(time.Second)
	watch:
		for {
			select {
			case <-done:
				break watch
			case <-ctx.Done():
				break watch
			case <-t.C:
				if d := n.Relay.Stalled(); d > n.o.RelayStall {
					n.o.Logger.Warn("relay stalled; restarting it", "stalled_for", d.Round(time.Second), "queued", n.Relay.Queued())
					n.RelayRestarts.Add(1)
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
func (n *Node) republish(ctx context.Context) func([]ledger.CreditMessage) {
	return func(msgs []ledger.CreditMessage) {
		for len(msgs) > 0 {
			k := min(len(msgs), 5000)
			if err := n.Relay.PublishNow(ctx, msgs[:k]); err != nil {
				n.o.Logger.Warn("re-drive of uncredited claims failed; the next pass tries again", "credits", len(msgs), "err", err)
				return
			}
			n.Redriven.Add(int64(k))
			msgs = msgs[k:]
		}
	}
}

// SetGrace changes how long the reconciler waits before republishing a
// credit it has not seen applied (a benchmark flushing its tail sets 0).
func (n *Node) SetGrace(d time.Duration) { n.grace.Store(int64(d)) }

// sweep runs one pass of the sweepers and the reconciler and says how long
// each step took.
func (n *Node) sweep(ctx context.Context) (took []step) {
	t := time.Now()
	lap := func(name string) {
		took = append(took, step{name, time.Since(t)})
		t = time.Now()
	}
	for _, set := range n.Sets {
		if !set.Serving() {
			continue // its owner sweeps it
		}
		pages(func() bool {
			refunds, err := set.Expire(ctx, sweepPage)
			if err != nil {
				n.o.Logger.Warn("expiry sweep failed", "packet_set", set.Number(), "err", err)
			}
			msgs := make([]ledger.CreditMessage, len(refunds))
			for i, r := range refunds {
				msgs[i] = packet.RefundMessage(r)
			}
			n.Relay.Enqueue(msgs)
			return len(refunds) == sweepPage
		})
		lap(fmt.Sprint("expiry_", set.Number()))
		pages(func() bool {
			credited, _, more, err := set.Settle(ctx, time.Duration(n.grace.Load()), n.Ledgers.Applied, n.republish(ctx))
			if err != nil && ctx.Err() == nil {
				n.o.Logger.Warn("settle failed", "packet_set", set.Number(), "err", err)
			}
			return err == nil && more && credited > 0
		})
		lap(fmt.Sprint("settle_", set.Number()))
		set.Evict()
		lap(fmt.Sprint("evict_", set.Number()))
	}
	n.members.Evict(5 * time.Minute)
	if _, err := n.Feeds.Republish(ctx, time.Now().Add(-5*time.Second)); err != nil && ctx.Err() == nil {
		n.o.Logger.Warn("event republish failed", "err", err)
	}
	lap("feeds")
	for _, r := range n.EventRelays {
		if _, err := r.Purge(ctx, time.Now().Add(-24*time.Hour)); err != nil && ctx.Err() == nil {
			n.o.Logger.Warn("event outbox purge failed", "err", err)
		}
	}
	lap("outbox_purge")
	keep := n.o.TxRetention
	if keep == 0 {
		keep = 7 * 24 * time.Hour
	}
	for _, l := range n.Ledgers.Shards {
		pages(func() bool {
			k, err := l.PurgeRequests(ctx, time.Now().Add(-keep), sweepPage)
			if err != nil && ctx.Err() == nil {
				n.o.Logger.Warn("request key purge failed", "ledger_shard", l.Shard(), "err", err)
			}
			return err == nil && k == sweepPage
		})
		pages(func() bool {
			k, err := l.ExpireHolds(ctx, sweepPage)
			if err != nil && ctx.Err() == nil {
				n.o.Logger.Warn("hold expiry failed", "ledger_shard", l.Shard(), "err", err)
			}
			return err == nil && k == sweepPage
		})
	}
	lap("ledgers")
	return took
}

// sweepPage is what one page of a sweeper takes (packets expired, keys
// purged, holds expired; the reconciler has its own page).
const sweepPage = 1000

// pages runs one page of a sweeper after another while the last was full
// and moved on (page says so), for at most a second: a page a sweep would
// cap a sweeper at a page a second, below what a storm makes.
func pages(page func() (again bool)) {
	for start := time.Now(); page() && time.Since(start) < time.Second; {
	}
}

// Backend is what the HTTP API serves from: the node's flows, coordinator,
// readiness and metrics.
func (n *Node) Backend() httpapi.Backend {
	return httpapi.Backend{Wallets: n.Flows, Packets: n.Flows, Groups: n.Flows, Transactions: n.Coord, Payments: payments{n.Flows, n.Payments},
		Recon: n.Recon, Feeds: feeds{n}, Webhooks: n.Webhooks, Ready: n.Ready, Collectors: n.collectors(),
		Forward: n.forward, Nodes: n.nodes, Days: dayOps{n}, Migrations: n.Slots, Operations: operations{n}}
}

var forwardClient = &http.Client{Timeout: 10 * time.Second}

// forward sends a grab to the node owning its packet's set, with the
// caller's own token (every node shares the token secret).
func (n *Node) forward(ctx context.Context, packetID int64, r *http.Request) (*http.Response, error) {
	l, ok := n.Cluster.Owner(ids.Shard(packetID))
	if !ok || l.URL == "" || l.Owner == n.o.NodeID {
		return nil, fmt.Errorf("no live owner for set %d", ids.Shard(packetID))
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, strings.TrimRight(l.URL, "/")+r.URL.RequestURI(), nil)
	if err != nil {
		return nil, err
	}
	for _, h := range []string{"Authorization", "X-Request-Id"} {
		req.Header.Set(h, r.Header.Get(h))
	}
	req.Header.Set(httpapi.ForwardedHeader, "1")
	n.Forwarded.Add(1)
	return forwardClient.Do(req)
}

// nodes is the operators' view: the live nodes and who owns which set.
func (n *Node) nodes(ctx context.Context) (any, error) {
	leases, nodes, err := n.Cluster.View(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]any{"nodes": nodes, "sets": leases}, nil
}

// feeds serves the API's conversation feeds: read from the events
// database, woken by the events the sequencer publishes.
type feeds struct{ n *Node }

func (f feeds) Read(ctx context.Context, conv string, after int64, limit int) ([]events.Event, error) {
	return f.n.Feeds.Read(ctx, conv, after, limit)
}

func (f feeds) Wake(conv string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	sub, err := f.n.Bus.Conn().Subscribe(events.ConversationSubject(conv), func(*nats.Msg) {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return ch, func() {} // the stream polls
	}
	return ch, func() { _ = sub.Unsubscribe() }
}

// payments serves the API's Payments: creation through the flows (with
// the user's idempotency key), the rest from the orders.
type payments struct {
	f *flow.Flows
	s *payment.Service
}

func (p payments) TopUp(ctx context.Context, key string, user int64, a money.Amount) (payment.Order, bool, error) {
	return p.f.TopUp(ctx, key, user, a)
}

func (p payments) Withdraw(ctx context.Context, key string, user int64, a money.Amount) (payment.Order, bool, error) {
	return p.f.Withdraw(ctx, key, user, a)
}

func (p payments) Get(ctx context.Context, id int64) (payment.Order, error) { return p.s.Get(ctx, id) }

func (p payments) Events(ctx context.Context, id int64) ([]payment.Event, error) {
	return p.s.Events(ctx, id)
}

func (p payments) List(ctx context.Context, k payment.Kind, user, before int64, limit int) ([]payment.Order, error) {
	return p.s.List(ctx, k, user, before, limit)
}

func (p payments) Open(ctx context.Context, olderThan time.Time, limit int) ([]payment.Order, error) {
	return p.s.Open(ctx, olderThan, limit)
}

func (p payments) Notify(ctx context.Context, h http.Header, body []byte) (payment.Order, error) {
	return p.s.Notify(ctx, h, body)
}

// Ready reports the first dependency that does not answer: a database of
// a shard or set, or NATS.
func (n *Node) Ready(ctx context.Context) error {
	for _, l := range n.Ledgers.Shards {
		if err := l.DB().Ping(ctx); err != nil {
			return fmt.Errorf("ledger shard %d: database unreachable", l.Shard())
		}
	}
	if err := n.Groups.DB().Ping(ctx); err != nil {
		return errors.New("group shard: database unreachable")
	}
	for _, set := range n.Sets {
		if err := set.DB().Ping(ctx); err != nil {
			return fmt.Errorf("packet set %d: database unreachable", set.Number())
		}
	}
	if err := n.Coord.DB().Ping(ctx); err != nil {
		return errors.New("coordinator log: database unreachable")
	}
	if err := n.Feeds.DB().Ping(ctx); err != nil {
		return errors.New("events: database unreachable")
	}
	if !n.Bus.Conn().IsConnected() {
		return errors.New("NATS: not connected")
	}
	return nil
}

// collectors are the node's metrics, read when scraped.
func (n *Node) collectors() []prometheus.Collector {
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	sum := func(f func(*packet.Set) int64) func() float64 {
		return func() float64 { return float64(total(n.Sets, f)) }
	}
	sumLedgers := func(f func(*ledger.Ledger) int64) func() float64 {
		return func() float64 { return float64(total(n.Ledgers.Shards, f)) }
	}
	cs := []prometheus.Collector{
		counter("hongbao_grabs_total", "Claims committed by the grab engines.", sum(func(s *packet.Set) int64 { return s.Grabs.Load() })),
		counter("hongbao_grabs_rejected_total", "Grabs turned away by admission control.", sum(func(s *packet.Set) int64 { return s.Rejected.Load() })),
		gauge("hongbao_credits_pending", "Credits committed but not yet published by the relay.", func() float64 { return float64(n.Relay.Queued()) }),
		counter("hongbao_credit_messages_applied_total", "Credit messages (batches of credits) acknowledged by the ledger consumers.", func() float64 {
			var t int64
			for _, c := range n.Credits {
				t += c.Applied.Load()
			}
			return float64(t)
		}),
		counter("hongbao_credits_applied_total", "Credits (red packet claims and refunds) applied to wallets.", sumLedgers(func(l *ledger.Ledger) int64 { return l.CreditsApplied.Load() })),
		counter("hongbao_ledger_branch_calls_total", "Global transaction branch calls run by the ledger shards.", sumLedgers(func(l *ledger.Ledger) int64 { return l.BranchCalls.Load() })),
		counter("hongbao_ledger_branch_batches_total", "Batches (one statement and one local transaction each) the branch calls ran in; calls per batch is the batching.", sumLedgers(func(l *ledger.Ledger) int64 { return l.BranchBatches.Load() })),
		counter("hongbao_dead_letters_total", "Credits and messages parked on a dead-letter subject (alert on any).", func() float64 {
			t := n.DeadCredits.Load()
			for _, c := range n.Credits {
				t += c.Dead.Load()
			}
			return float64(t)
		}),
		counter("hongbao_coordinator_retries_total", "Global transactions rescheduled for another attempt.", func() float64 { return float64(n.Coord.Metrics.Retries.Load()) }),
		counter("hongbao_coordinator_committed_total", "Global transactions committed.", func() float64 { return float64(n.Coord.Metrics.Committed.Load()) }),
		gauge("hongbao_coordinator_backlog", "Unfinished global transactions due for recovery and leased by nobody (a backlog that does not drain needs a person).", func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := n.Coord.Backlog(ctx)
			if err != nil {
				return -1
			}
			return float64(n)
		}),
		counter("hongbao_coordinator_cancelled_total", "Global transactions cancelled (all branches rolled back or compensated).", func() float64 {
			return float64(n.Coord.Metrics.Cancelled.Load())
		}),
		gauge("hongbao_relay_stalled_seconds", "How long the relay has had credits to publish and published none (alert above 10).", func() float64 {
			return n.Relay.Stalled().Seconds()
		}),
		counter("hongbao_set_takeovers_total", "Packet sets this node started owning (a move when another node had them).", func() float64 { return float64(n.Cluster.Moves.Load()) }),
		counter("hongbao_grabs_forwarded_total", "Grabs sent on to the node owning their set.", func() float64 { return float64(n.Forwarded.Load()) }),
		counter("hongbao_relay_restarts_total", "Relay restarts after a stall.", func() float64 { return float64(n.RelayRestarts.Load()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
		&poolCollector{n: n},
		&creditLag{n: n},
		counter("hongbao_credits_redriven_total", "Credits the reconciler published again because no ledger had applied them.", func() float64 {
			return float64(n.Redriven.Load())
		}),
	}
	cs = append(cs, n.Payments.Collectors()...)
	cs = append(cs, n.Webhooks.Collectors()...)
	return append(cs, n.Recon.Collectors()...)
}

// poolCollector reports each database pool's connections.
type poolCollector struct{ n *Node }

var (
	poolConns   = prometheus.NewDesc("hongbao_db_connections", "Connections of a database pool by state (idle, in_use) and its maximum (max).", []string{"database", "state"}, nil)
	poolAcquire = prometheus.NewDesc("hongbao_db_acquires_total", "Connections acquired from a database pool.", []string{"database"}, nil)
	poolWaits   = prometheus.NewDesc("hongbao_db_acquire_waits_total", "Acquires that had to wait for a connection (the pool was empty).", []string{"database"}, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolConns
	ch <- poolAcquire
	ch <- poolWaits
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for name, pool := range c.n.pools() {
		st := pool.Stat()
		ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(st.IdleConns()), name, "idle")
		ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(st.AcquiredConns()), name, "in_use")
		ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(st.MaxConns()), name, "max")
		ch <- prometheus.MustNewConstMetric(poolAcquire, prometheus.CounterValue, float64(st.AcquireCount()), name)
		ch <- prometheus.MustNewConstMetric(poolWaits, prometheus.CounterValue, float64(st.EmptyAcquireCount()), name)
	}
}

// pools are the node's database pools by database name.
func (n *Node) pools() map[string]*pgxpool.Pool {
	m := map[string]*pgxpool.Pool{GroupDB: n.Groups.DB(), DtxDB: n.Coord.DB(), EventsDB: n.Feeds.DB()}
	for _, l := range n.Ledgers.Shards {
		m[LedgerDB(l.Shard())] = l.DB()
	}
	for _, set := range n.Sets {
		m[PacketDB(set.Number())] = set.DB()
	}
	return m
}

// creditLag reports, from the databases, the claims and refunds not yet
// seen credited and the age of the oldest of them.
type creditLag struct{ n *Node }

var (
	uncredited    = prometheus.NewDesc("hongbao_claims_overdue", "Claims and refunds older than the reconciler's grace and still not seen credited, from the databases (alert on any that stay).", nil, nil)
	uncreditedAge = prometheus.NewDesc("hongbao_claims_overdue_oldest_seconds", "Age of the oldest overdue claim or refund (0 when none).", nil, nil)
)

func (c *creditLag) Describe(ch chan<- *prometheus.Desc) { ch <- uncredited; ch <- uncreditedAge }

func (c *creditLag) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var total int64
	var oldest time.Time
	for _, set := range c.n.Sets {
		// Overdue: older than the reconciler's grace and still not seen
		// credited (0 when all is well, whatever the load).
		k, at, err := set.Overdue(ctx, time.Now().Add(-time.Duration(c.n.grace.Load())-5*time.Second))
		if err != nil {
			// A database down must not cost the whole scrape: -1 says unknown.
			ch <- prometheus.MustNewConstMetric(uncredited, prometheus.GaugeValue, -1)
			ch <- prometheus.MustNewConstMetric(uncreditedAge, prometheus.GaugeValue, -1)
			return
		}
		total += k
		if !at.IsZero() && (oldest.IsZero() || at.Before(oldest)) {
			oldest = at
		}
	}
	age := 0.0
	if !oldest.IsZero() {
		age = time.Since(oldest).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(uncredited, prometheus.GaugeValue, float64(total))
	ch <- prometheus.MustNewConstMetric(uncreditedAge, prometheus.GaugeValue, age)
}

// total adds up a counter of each of xs.
func total[T any](xs []T, f func(T) int64) int64 {
	var t int64
	for _, x := range xs {
		t += f(x)
	}
	return t
}
