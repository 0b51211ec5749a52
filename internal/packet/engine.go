package packet

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/days"
	"hongbao/internal/events"
	"hongbao/internal/ids"
	"hongbao/internal/money"
	"hongbao/internal/postgres"
)

// Options configure a set.
type Options struct {
	Set     int
	Limits  Limits
	Members Membership
	// MaxBatch bounds the claims written in one transaction.
	MaxBatch int
	// SettlePage bounds the claims one Settle looks at (default 10,000;
	// a tenth of it the refunds).
	SettlePage int
	// OnCommit receives claims once they are durable (the relay's input).
	// It must not block for long.
	OnCommit func([]Claim)
	Now      func() time.Time
	Logger   *slog.Logger
}

// Set is one packet set: its database, the grab engine and its committer.
//
// Lock order (a lock may be taken while holding the ones above it, never
// the other way round):
//
//	Set.mu      guards live and loading (the map of packets in memory)
//	live.mu     guards one packet's share state: remaining, count, nextSeq,
//	            byUser, last, rng
//
// Nothing blocks while holding either: live.mu is held to draw a share and
// hand it to the committer's queue without waiting (a full queue answers
// ErrBusy); Set.mu only to read or change the map, and Evict takes a
// packet's lock with Set.mu released. The committer holds no lock while it
// writes; it only closes each claim's done channel after the commit.
type Set struct {
	db  *pgxpool.Pool
	o   Options
	ids *ids.Blocks
	// serving: this process owns the set (its cluster lease); a set that
	// does not serve refuses grabs with ErrNotOwner (the caller forwards).
	serving atomic.Bool
	// since is when this process last began to serve the set (unix
	// nanoseconds): what was claimed before it, the relay that held it may
	// be gone (Settle).
	since atomic.Int64
	log   *slog.Logger

	mu      sync.RWMutex            // guards live and loading
	live    map[int64]*live         // packets this process owns
	loading map[int64]chan struct{} // packets being loaded: closed when done

	queue           chan *pending
	stop            chan struct{}
	wg              sync.WaitGroup
	started, closed sync.Once

	// Grabs counts claims committed; Rejected counts grabs turned away by
	// admission control.
	Grabs, Rejected atomic.Int64

	// Days keeps the day partitions of packets and claims (a packet's
	// claims live in the partition of its day).
	Days *days.Keeper
}

// live is a packet owned by this process: its state runs ahead of the
// database by the claims not yet committed.
type live struct {
	p     Packet // as loaded; never changed after (read without a lock)
	epoch int64  // owner epoch this process fences its writes with (immutable)

	mu        sync.Mutex         // guards the fields down to rng
	remaining int64              // amount not yet handed out
	count     int                // shares not yet handed out
	nextSeq   int                // seq of the next claim
	byUser    map[int64]*pending // each grabber's claim, committed or queued
	last      *pending           // the latest claim handed to the committer
	rng       *rand.Rand         // draws lucky shares
	broken    atomic.Bool        // a commit failed or the row changed: reload before serving again

	left    atomic.Int64 // shares not yet handed out (mirror of count)
	waiting atomic.Int64 // grabs queued for mu (admission control)
}

// pending is a claim handed to the committer; done closes after commit.
type pending struct {
	c       Claim
	lv      *live
	count   int   // shares left after it
	remains int64 // amount left after it
	done    chan struct{}
	err     error
}

// New opens a set on a migrated database; Start runs its committer.
func New(db *pgxpool.Pool, o Options) (*Set, error) {
	if o.Limits == (Limits{}) {
		o.Limits = DefaultLimits
	}
	if o.SettlePage == 0 {
		o.SettlePage = 10_000
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 2000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.OnCommit == nil {
		o.OnCommit = func([]Claim) {}
	}
	g, err := ids.NewBlocks(o.Set, func(ctx context.Context) (n int64, err error) {
		return n, db.QueryRow(ctx, `SELECT nextval('packet_id_blocks')`).Scan(&n)
	})
	if err != nil {
		return nil, err
	}
	s := &Set{db: db, o: o, ids: g, log: o.Logger.With("packet_set", o.Set),
		live: map[int64]*live{}, loading: map[int64]chan struct{}{},
		queue: make(chan *pending, 4*o.MaxBatch), stop: make(chan struct{})}
	s.Days = days.NewKeeper(db, o.Now, "packets", "claims")
	s.serving.Store(true)
	return s, nil
}

// Start runs the committer; grabs wait for it. Calling it again does
// nothing.
func (s *Set) Start() {
	s.started.Do(func() { s.wg.Go(s.commitLoop) })
}

// Close stops the committer after it has written what is queued. Calling
// it again does nothing.
func (s *Set) Close() {
	s.closed.Do(func() {
		close(s.stop)
		s.wg.Wait()
	})
}

// Serve turns serving on (this process now owns the set) or off (it lost
// it: the packets in memory are dropped, so that owning it again reloads
// them and bumps their epochs).
func (s *Set) Serve(on bool) {
	if on {
		if !s.serving.Swap(true) {
			s.since.Store(s.o.Now().UnixNano())
		}
		return
	}
	s.serving.Store(false)
	s.mu.Lock()
	for _, lv := range s.live {
		lv.broken.Store(true)
	}
	s.live = map[int64]*live{}
	s.mu.Unlock()
}

// Serving reports whether this process owns the set.
func (s *Set) Serving() bool { return s.serving.Load() }

// Number is the set's number, carried by its packet ids.
func (s *Set) Number() int { return s.o.Set }

// DB is the set's database.
func (s *Set) DB() *pgxpool.Pool { return s.db }

// NewID makes a packet id that routes to this set, unique across processes.
func (s *Set) NewID(ctx context.Context) (int64, error) { return s.ids.Next(ctx) }

// Grab claims one share of a packet for user. A repeated grab by the same
// user returns the same claim (Duplicate set). It answers only after the
// claim is committed.
func (s *Set) Grab(ctx context.Context, packetID, user int64) (Claim, error) {
	if ids.Shard(packetID) != s.o.Set {
		return Claim{}, fmt.Errorf("%w: packet %d is in set %d", ErrWrongSet, packetID, ids.Shard(packetID))
	}
	if user <= 0 {
		return Claim{}, fmt.Errorf("%w: user %d", ErrNotAllowed, user)
	}
	if !s.serving.Load() {
		return Claim{}, fmt.Errorf("%w: set %d", ErrNotOwner, s.o.Set)
	}
	lv, err := s.owned(ctx, packetID)
	if err != nil {
		return Claim{}, err
	}
	// Someone who already grabbed gets the same answer, whatever the state;
	// so does one whose other grab took a share while this one was being
	// admitted: every refusal looks again first (refuse).
	mine := func() *pending {
		lv.mu.Lock()
		defer lv.mu.Unlock()
		return lv.byUser[user]
	}
	refuse := func(err error) (Claim, error) {
		if pc := mine(); pc != nil {
			return wait(ctx, pc, true)
		}
		return Claim{}, err
	}
	if pc := mine(); pc != nil {
		return wait(ctx, pc, true)
	}
	if err := s.admissible(ctx, lv, user); err != nil {
		return refuse(err)
	}
	// Admission control: no more queued grabs than shares left.
	if lv.waiting.Add(1) > lv.left.Load() {
		lv.waiting.Add(-1)
		s.Rejected.Add(1)
		if lv.left.Load() == 0 {
			return refuse(ErrSoldOut)
		}
		return refuse(ErrBusy)
	}
	lv.mu.Lock()
	lv.waiting.Add(-1)
	if pc, ok := lv.byUser[user]; ok {
		lv.mu.Unlock()
		return wait(ctx, pc, true)
	}
	if lv.broken.Load() {
		lv.mu.Unlock()
		return Claim{}, ErrFenced
	}
	if lv.count == 0 {
		lv.mu.Unlock()
		return Claim{}, ErrSoldOut
	}
	seq := lv.nextSeq
	var share int64
	switch lv.p.Kind {
	case Equal:
		share = equalShare(int64(lv.p.Amount), lv.p.Shares, seq)
	default:
		share = luckyShare(lv.rng, lv.remaining, lv.count)
	}
	lv.nextSeq++
	lv.count--
	lv.remaining -= share
	lv.left.Store(int64(lv.count))
	pc := &pending{
		// The database keeps microseconds: so does the answer, so that a
		// repeat (read back from the rows) answers byte for byte the same.
		c:  Claim{PacketID: lv.p.ID, User: user, Seq: seq, Amount: money.Amount(share), At: s.o.Now().Truncate(time.Microsecond)},
		lv: lv, count: lv.count, remains: lv.remaining, done: make(chan struct{}),
	}
	lv.byUser[user] = pc
	prev := lv.last
	lv.last = pc
	// Handed over while holding the packet's lock, so that claims of one
	// packet reach the committer in seq order; never blocking, so that a
	// backed-up committer cannot hold this lock (and with it every grab
	// of the packet, and Evict) hostage: a full queue gives the share back
	// as if never drawn and answers busy.
	select {
	case s.queue <- pc:
	default:
		lv.last = prev
		delete(lv.byUser, user)
		lv.nextSeq--
		lv.count++
		lv.remaining += share
		lv.left.Store(int64(lv.count))
		lv.mu.Unlock()
		s.Rejected.Add(1)
		return Claim{}, ErrBusy
	}
	lv.mu.Unlock()
	return wait(ctx, pc, false)
}

func wait(ctx context.Context, pc *pending, dup bool) (Claim, error) {
	select {
	case <-pc.done:
	case <-ctx.Done():
		return Claim{}, ctx.Err()
	}
	if pc.err != nil {
		return Claim{}, pc.err
	}
	c := pc.c
	c.Duplicate = dup
	return c, nil
}

// admissible checks that the user may grab the packet and then that it is
// open: eligibility first, so that someone who may not grab learns nothing
// of its state. Every "no share left" is ErrSoldOut; a cancelled send never
// existed (ErrNotFound).
func (s *Set) admissible(ctx context.Context, lv *live, user int64) error {
	p := lv.p
	if p.State == StateCancelled {
		return fmt.Errorf("%w: %d", ErrNotFound, p.ID)
	}
	switch {
	case p.Kind == Single && user != p.Receiver:
		return fmt.Errorf("%w: packet is for user %d", ErrNotAllowed, p.Receiver)
	case p.Kind != Single:
		if s.o.Members == nil {
			return fmt.Errorf("%w: no membership to check", ErrNotAllowed)
		}
		in, err := s.o.Members.IsMember(ctx, p.Group, user)
		if err != nil {
			return fmt.Errorf("check membership: %w", err)
		}
		if !in {
			return fmt.Errorf("%w: not a member of group %d", ErrNotAllowed, p.Group)
		}
	}
	switch p.State {
	case StateActive:
	case StateFinished:
		return ErrSoldOut
	case StateExpired:
		return ErrExpired
	case StatePending:
		// Its send is deciding or confirming (an answer of 202 says so): not
		// open yet, open in a moment. Retryable, and the next grab reads
		// the row again (a load that raced the activation may hold the
		// state from before it).
		lv.broken.Store(true)
		return fmt.Errorf("%w: the packet is still being sent", ErrBusy)
	default:
		return fmt.Errorf("%w: %s", ErrNotActive, p.State)
	}
	if !s.o.Now().Before(p.ExpiresAt) {
		return ErrExpired
	}
	return nil
}

// owned returns the live packet, loading it (and taking ownership by
// bumping its epoch) on first use. Concurrent first grabs load once.
func (s *Set) owned(ctx context.Context, id int64) (*live, error) {
	s.mu.RLock()
	lv, ok := s.live[id]
	s.mu.RUnlock()
	if ok && !lv.broken.Load() {
		return lv, nil // the hot path: one read lock, no writes
	}
	for {
		s.mu.Lock()
		if lv, ok := s.live[id]; ok && !lv.broken.Load() {
			s.mu.Unlock()
			return lv, nil
		}
		if ch, ok := s.loading[id]; ok {
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		s.loading[id] = ch
		s.mu.Unlock()

		lv, err := s.load(ctx, id)
		s.mu.Lock()
		delete(s.loading, id)
		if err == nil {
			s.live[id] = lv
		}
		s.mu.Unlock()
		close(ch)
		return lv, err
	}
}

// forget drops a packet's live state so that the next grab reloads it:
// after a state change made outside the engine (activation, expiry).
func (s *Set) forget(id int64) {
	s.mu.RLock()
	lv := s.live[id]
	s.mu.RUnlock()
	if lv != nil {
		lv.broken.Store(true)
	}
}

// Evict drops from memory the packets that need no owner any more: no
// share left (sold out, expired, cancelled) or marked for reload, with
// every claim committed. A later grab, say a repeat, loads the packet
// again from its rows. It returns how many it dropped.
func (s *Set) Evict() int {
	// Candidates under the set's read lock, each packet looked at under its
	// own lock alone, and the removal under the set's lock: the set's lock
	// is never held while waiting for a packet's (see the lock order above).
	s.mu.RLock()
	cands := make(map[int64]*live, len(s.live))
	for id, lv := range s.live {
		cands[id] = lv
	}
	s.mu.RUnlock()
	var gone []int64
	for id, lv := range cands {
		lv.mu.Lock()
		idle := lv.last == nil || isClosed(lv.last.done)
		done := lv.count == 0 || lv.broken.Load()
		lv.mu.Unlock()
		if idle && done {
			gone = append(gone, id)
		}
	}
	n := 0
	s.mu.Lock()
	for _, id := range gone {
		if s.live[id] == cands[id] { // not reloaded meanwhile
			delete(s.live, id)
			n++
		}
	}
	s.mu.Unlock()
	return n
}

// Live is how many packets the set holds in memory.
func (s *Set) Live() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.live)
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// load rebuilds a packet from its rows: what was committed is the truth.
func (s *Set) load(ctx context.Context, id int64) (*live, error) {
	lv := &live{byUser: map[int64]*pending{}}
	var seed [16]byte
	_, _ = crand.Read(seed[:])
	lv.rng = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		p := &lv.p
		var receiver, group *int64
		var creditedSeq int
		err := tx.QueryRow(ctx, `UPDATE packets SET owner_epoch = owner_epoch + 1 WHERE id = $1
			RETURNING id, kind, sender, receiver, group_id, amount, shares, greeting, state, remaining_amount, remaining_count,
			          refunded, expires_at, created_at, owner_epoch, credited_seq`, id).
			Scan(&p.ID, &p.Kind, &p.Sender, &receiver, &group, &p.Amount, &p.Shares, &p.Greeting, &p.State, &p.RemainingAmount,
				&p.RemainingCount, &p.Refunded, &p.ExpiresAt, &p.CreatedAt, &lv.epoch, &creditedSeq)
		if errors.Is(err, pgx.ErrNoRows) {
			return s.missing(ctx, id)
		}
		if err != nil {
			return err
		}
		if receiver != nil {
			p.Receiver = *receiver
		}
		if group != nil {
			p.Group = *group
		}
		rows, err := tx.Query(ctx, `SELECT id, user_id, seq, amount, created_at, `+creditedSQL("claims", "$3")+`
			FROM claims WHERE packet_id = $1 AND packet_at = $2`,
			id, p.CreatedAt, creditedSeq)
		if err != nil {
			return err
		}
		defer rows.Close()
		var claimed int64
		for rows.Next() {
			pc := &pending{lv: lv, done: make(chan struct{})}
			c := &pc.c
			if err := rows.Scan(&c.ID, &c.User, &c.Seq, &c.Amount, &c.At, &c.Credited); err != nil {
				return err
			}
			c.PacketID = id
			close(pc.done)
			lv.byUser[c.User] = pc
			claimed += int64(c.Amount)
			lv.nextSeq = max(lv.nextSeq, c.Seq)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		// The claims are the truth; the packet row's remainder must agree.
		lv.nextSeq++
		lv.count = p.Shares - len(lv.byUser)
		lv.remaining = int64(p.Amount) - claimed - int64(p.Refunded)
		switch p.State {
		case StateActive, StateFinished:
			if lv.count != p.RemainingCount || lv.remaining != int64(p.RemainingAmount) {
				return fmt.Errorf("packet %d: row says %d shares / %s left, claims say %d / %s",
					id, p.RemainingCount, p.RemainingAmount, lv.count, money.Amount(lv.remaining))
			}
		case StateExpired:
			if lv.remaining != 0 {
				return fmt.Errorf("packet %d: expired with %s neither claimed nor refunded", id, money.Amount(lv.remaining))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load packet %d: %w", id, err)
	}
	if lv.p.State != StateActive {
		lv.count = 0
	}
	lv.left.Store(int64(lv.count))
	return lv, nil
}

// commitLoop writes queued claims in batches: one transaction for many
// claims of many packets, and only then answers their waiters.
func (s *Set) commitLoop() {
	batch := make([]*pending, 0, s.o.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case pc := <-s.queue:
			batch = append(batch, pc)
		case <-s.stop:
			for {
				select {
				case pc := <-s.queue:
					s.commit([]*pending{pc})
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < s.o.MaxBatch {
			select {
			case pc := <-s.queue:
				batch = append(batch, pc)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

func (s *Set) commit(batch []*pending) {
	// Claims of a packet whose earlier claims failed cannot commit: its
	// state is being rebuilt.
	var ok []*pending
	for _, pc := range batch {
		if pc.lv.broken.Load() {
			pc.err = ErrFenced
			close(pc.done)
			continue
		}
		ok = append(ok, pc)
	}
	for len(ok) > 0 {
		fenced, err := s.write(ok)
		if err == nil {
			break
		}
		if len(fenced) == 0 {
			// The database failed the batch: nothing of it is durable. With
			// several packets in it, each is written on its own, so that one
			// packet's trouble fails only its own claims.
			if byPacket := splitByPacket(ok); len(byPacket) > 1 {
				for _, one := range byPacket {
					s.commit(one)
				}
				return
			}
			s.log.Error("claim batch failed", "claims", len(ok), "packet_id", ok[0].lv.p.ID, "err", err)
			if postgres.IsUniqueViolation(err, "") {
				err = fmt.Errorf("%w: %v", ErrFenced, err) // another owner wrote this packet: retry
			}
			for _, pc := range ok {
				pc.lv.broken.Store(true)
				pc.err = fmt.Errorf("commit claim: %w", err)
				close(pc.done)
			}
			return
		}
		// Another owner (or the sweeper) took some packets: fail their
		// claims, write the rest again.
		var rest []*pending
		for _, pc := range ok {
			if fenced[pc.lv.p.ID] {
				pc.lv.broken.Store(true)
				pc.err = ErrFenced
				close(pc.done)
			} else {
				rest = append(rest, pc)
			}
		}
		ok = rest
	}
	claims := make([]Claim, len(ok))
	for i, pc := range ok {
		claims[i] = pc.c
		close(pc.done)
	}
	s.Grabs.Add(int64(len(ok)))
	if len(claims) > 0 {
		s.o.OnCommit(claims)
	}
}

// writeTimeout bounds one batch of claims.
const writeTimeout = 15 * time.Second

// splitByPacket groups claims by packet, in the order they came.
func splitByPacket(batch []*pending) [][]*pending {
	idx := map[int64]int{}
	var out [][]*pending
	for _, pc := range batch {
		i, ok := idx[pc.lv.p.ID]
		if !ok {
			i = len(out)
			idx[pc.lv.p.ID] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], pc)
	}
	return out
}

// write inserts the claims and moves each packet's remainder to where its
// last claim in the batch left it, fenced by the owner epoch. It returns
// the packets whose fence failed (the batch is then rolled back).
func (s *Set) write(batch []*pending) (map[int64]bool, error) {
	// Bounded: a database that hangs fails the batch (its grabbers hear a
	// retryable error) instead of stalling the committer for good.
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	type after struct {
		epoch  int64
		count  int
		remain int64
	}
	last := map[int64]after{}
	var order []int64
	// The packets' days bound the statements to their partitions (today's,
	// except for packets sent before midnight).
	var lo, hi time.Time
	rows := make([][]any, len(batch))
	for i, pc := range batch {
		c := pc.c
		at := pc.lv.p.CreatedAt
		if lo.IsZero() || at.Before(lo) {
			lo = at
		}
		if at.After(hi) {
			hi = at
		}
		rows[i] = []any{c.ID, c.PacketID, c.User, c.Seq, int64(c.Amount), c.At, at}
	}
	// Whole days: the rows' created_at are the database's (microseconds).
	lo, hi = days.Of(lo), days.Of(hi).AddDate(0, 0, 1)
	for _, pc := range batch {
		c := pc.c
		if _, seen := last[c.PacketID]; !seen {
			order = append(order, c.PacketID)
		}
		last[c.PacketID] = after{pc.lv.epoch, pc.count, pc.remains}
	}
	pids := make([]int64, len(order))
	epochs := make([]int64, len(order))
	counts := make([]int32, len(order))
	remains := make([]int64, len(order))
	for i, id := range order {
		a := last[id]
		pids[i], epochs[i], counts[i], remains[i] = id, a.epoch, int32(a.count), a.remain
	}
	// The "opened" events of the batch, made before the transaction (their
	// ids name packet and seq, known already).
	opened := openedEvents(batch)
	var fenced map[int64]bool
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		// Claim ids come from the set's sequence, times 1024 plus the set
		// number: unique across sets (they are credit keys) and across
		// processes, even two that both think they own a packet.
		idRows, err := tx.Query(ctx, `SELECT nextval('claim_ids') * 1024 + $2 FROM generate_series(1, $1)`, len(batch), s.o.Set)
		if err != nil {
			return err
		}
		claimIDs, err := pgx.CollectRows(idRows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		for i, pc := range batch {
			pc.c.ID = claimIDs[i]
			rows[i][0] = claimIDs[i]
		}
		res, err := tx.Query(ctx, `UPDATE packets p SET remaining_count = v.count, remaining_amount = v.remain, claimed = p.shares - v.count,
				state = CASE WHEN v.count = 0 THEN 'finished' ELSE p.state END,
				closed_at = CASE WHEN v.count = 0 THEN $5 ELSE p.closed_at END
			FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[]) AS v(id, epoch, count, remain)
			WHERE p.id = v.id AND p.owner_epoch = v.epoch AND p.state = 'active' AND p.created_at >= $6 AND p.created_at < $7
			RETURNING p.id, p.state = 'finished'`, pids, epochs, counts, remains, s.o.Now(), lo, hi)
		if err != nil {
			return fmt.Errorf("move packet remainders: %w", err)
		}
		var updated, finished []int64
		for res.Next() {
			var id int64
			var done bool
			if err := res.Scan(&id, &done); err != nil {
				res.Close()
				return err
			}
			updated = append(updated, id)
			if done {
				finished = append(finished, id)
			}
		}
		res.Close()
		if err := res.Err(); err != nil {
			return err
		}
		if len(updated) < len(order) {
			got := map[int64]bool{}
			for _, id := range updated {
				got[id] = true
			}
			fenced = map[int64]bool{}
			for _, id := range order {
				if !got[id] {
					fenced[id] = true
				}
			}
			return ErrFenced
		}
		// Fenced first: the packet rows are now locked at this owner's
		// epoch, so no other owner's claims can collide with these.
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"claims"}, []string{"id", "packet_id", "user_id", "seq", "amount", "created_at", "packet_at"},
			pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("insert claims: %w", err)
		}
		// The events of the batch, in the same transaction: each claim an
		// "opened" for its packet's sender, each packet now empty "finished"
		// with its best luck.
		evs := append(make([]events.Event, 0, len(opened)+len(finished)), opened...)
		if len(finished) > 0 {
			best, err := tx.Query(ctx, `SELECT DISTINCT ON (packet_id) packet_id, user_id, amount FROM claims
				WHERE packet_id = ANY($1) AND packet_at >= $2 AND packet_at < $3 ORDER BY packet_id, amount DESC, seq`, finished, lo, hi)
			if err != nil {
				return err
			}
			byID := map[int64]Packet{}
			for _, pc := range batch {
				byID[pc.lv.p.ID] = pc.lv.p
			}
			for best.Next() {
				var id, user int64
				var amount money.Amount
				if err := best.Scan(&id, &user, &amount); err != nil {
					best.Close()
					return err
				}
				evs = append(evs, finishedEvent(byID[id], user, amount, s.o.Now()))
			}
			best.Close()
			if err := best.Err(); err != nil {
				return err
			}
		}
		return events.Copy(ctx, tx, evs)
	})
	return fenced, err
}
