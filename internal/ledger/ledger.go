// Package ledger is one ledger shard: wallets and system accounts kept by
// double-entry postings, two-phase holds, idempotent operations, statements
// and the invariant check that proves the books.
package ledger

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/days"
	"hongbao/internal/dtx"
	"hongbao/internal/events"
	"hongbao/internal/idempotency"
	"hongbao/internal/money"
	"hongbao/internal/postgres"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// Migrations are the schema of a ledger shard database.
func Migrations() [][]postgres.Migration {
	return [][]postgres.Migration{dtx.BarrierMigrations(), days.Migrations(), postgres.Embedded("ledger", sqlFS, "sql"), events.OutboxMigrations()}
}

// Errors a caller branches on.
var (
	ErrInsufficientFunds   = errors.New("insufficient available balance")
	ErrIdempotencyConflict = errors.New("idempotency key reused with a different request")
	ErrHoldNotFound        = errors.New("hold not found")
	ErrHoldResolved        = errors.New("hold already resolved")
	ErrPostExceedsHold     = errors.New("posted amount exceeds the held amount")
	ErrInvalid             = errors.New("invalid request")
	// ErrBalanceLimit: the receiving wallet would pass its maximum balance.
	ErrBalanceLimit = errors.New("the receiving wallet would exceed its maximum balance")
)

// DefaultMaxBalance is the default largest balance of a user's wallet:
// 100,000,000.00. Options.MaxBalance may raise it up to money.Max.
const DefaultMaxBalance money.Amount = 100_000_000_00

// Account names an account: a user's wallet (the user id, > 0) or a system
// account (one of the constants below; the ledger picks the stripe).
type Account int64

// System accounts. Each is striped over several rows so that no single row
// serializes the shard.
const (
	External        Account = -1 * stripeSpan // money entering or leaving the platform
	ClearingPackets Account = -2 * stripeSpan // escrow of active red packets
	ClearingGroups  Account = -3 * stripeSpan // entry fees between debit and settlement
	Fees            Account = -4 * stripeSpan // platform fees
	// ClearingTransfers carries cross-shard transfers: the sender's shard
	// credits it, the receiver's shard debits it; across shards it nets to zero.
	ClearingTransfers Account = -5 * stripeSpan
	// ClearingChannel is the payment channel's side: a top-up is credited
	// from it, a withdrawal posted to it. Its balance is what the channel
	// owes us net (negative: it holds top-ups paid to it).
	ClearingChannel Account = -6 * stripeSpan
	// Migration carries wallets moved between shards: the source shard
	// debits each moving wallet to it, the target shard credits the wallet
	// from it; summed over the shards it is zero once a move is done.
	Migration Account = -7 * stripeSpan
)

const stripeSpan = 1024

// SystemAccounts lists every system account.
var SystemAccounts = []Account{External, ClearingPackets, ClearingGroups, Fees, ClearingTransfers, ClearingChannel, Migration}

// User returns the wallet account of a user.
func User(id int64) Account { return Account(id) }

// IsUser reports whether a is a user wallet.
func (a Account) IsUser() bool { return a > 0 }

func (a Account) isSystem() bool {
	for _, s := range SystemAccounts {
		if a == s {
			return true
		}
	}
	return false
}

// system is the system account a stripe row belongs to (a itself for a
// user or an account that is not striped).
func (a Account) system() Account {
	if a >= 0 {
		return a
	}
	return Account(-(-int64(a) / stripeSpan * stripeSpan))
}

// Name is the readable name of an account.
func (a Account) String() string {
	switch a {
	case External:
		return "external"
	case ClearingPackets:
		return "clearing:packets"
	case ClearingGroups:
		return "clearing:groups"
	case Fees:
		return "fees"
	case ClearingTransfers:
		return "clearing:transfers"
	case ClearingChannel:
		return "clearing:channel"
	case Migration:
		return "clearing:migration"
	}
	if a > 0 {
		return fmt.Sprintf("user:%d", int64(a))
	}
	if a < 0 {
		sys := Account(-(-int64(a) / stripeSpan * stripeSpan))
		return fmt.Sprintf("%s#%d", sys, -int64(a)%stripeSpan)
	}
	return "account:0"
}

// Options configure a shard.
type Options struct {
	Shard int
	// Stripes per system account (default 64, at most 1024).
	Stripes int
	// MaxBalance bounds a user's balance plus what is on its way in, for
	// money the user is given by choice (deposits, transfers). Credits of
	// money already promised (red packet claims, refunds, compensations)
	// are never refused; money.Max bounds them in the schema.
	MaxBalance money.Amount
	Now        func() time.Time
	Logger     *slog.Logger
}

// Ledger is one ledger shard.
type Ledger struct {
	db         *pgxpool.Pool
	shard      int
	stripes    int
	maxBalance int64
	// CreditsApplied counts credits (claims, refunds) applied by this shard.
	CreditsApplied atomic.Int64
	// Days keeps the journal's day partitions ahead.
	Days *days.Keeper
	now  func() time.Time
	log  *slog.Logger
	// batches runs the participant's calls together (batch.go);
	// BranchBatches counts the batches, BranchCalls the calls in them.
	batches                    branchBatcher
	BranchBatches, BranchCalls atomic.Int64
}

// New opens a shard on a migrated database and makes sure the system
// account stripes exist.
func New(ctx context.Context, db *pgxpool.Pool, opts Options) (*Ledger, error) {
	if opts.Stripes == 0 {
		opts.Stripes = 64
	}
	if opts.Stripes < 1 || opts.Stripes > stripeSpan {
		return nil, fmt.Errorf("ledger: stripes %d out of range 1..%d", opts.Stripes, stripeSpan)
	}
	if opts.MaxBalance == 0 {
		opts.MaxBalance = DefaultMaxBalance
	}
	if opts.MaxBalance < 0 || opts.MaxBalance > money.Max {
		return nil, fmt.Errorf("ledger: maximum balance %s out of range 0.01..%s", opts.MaxBalance, money.Max)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Ledger{db: db, shard: opts.Shard, stripes: opts.Stripes, maxBalance: int64(opts.MaxBalance), now: opts.Now,
		log: opts.Logger.With("ledger_shard", opts.Shard)}
	for _, sys := range SystemAccounts {
		_, err := db.Exec(ctx, `INSERT INTO accounts (id, kind, name, stripe)
			SELECT $1::bigint - s, 'system', $2, s FROM generate_series(0, $3 - 1) s
			ON CONFLICT DO NOTHING`, int64(sys), sys.String(), opts.Stripes)
		if err != nil {
			return nil, fmt.Errorf("ledger: create system accounts: %w", err)
		}
	}
	// Postings take the database's clock: the partitions around today.
	l.Days = days.NewKeeper(db, nil, "postings")
	if err := l.Days.Ahead(ctx); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return l, nil
}

// MaxBalance is the largest balance a wallet may be given by choice.
func (l *Ledger) MaxBalance() money.Amount { return money.Amount(l.maxBalance) }

// Shard is the shard number this ledger serves.
func (l *Ledger) Shard() int { return l.shard }

// DB is the shard's pool, for callers that join its local transactions.
func (l *Ledger) DB() *pgxpool.Pool { return l.db }

// row returns the account row id that an operation keyed by key touches:
// the user id itself, or one stripe of a system account.
func (l *Ledger) row(a Account, key string) int64 {
	if a > 0 {
		return int64(a)
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int64(a) - int64(h.Sum32()%uint32(l.stripes))
}

func validAccount(a Account) error {
	if a > 0 || a.isSystem() {
		return nil
	}
	return fmt.Errorf("%w: unknown account %d", ErrInvalid, int64(a))
}

// idempotent runs fn once per key. The key row is inserted first, so a
// concurrent duplicate waits on it and then reads the committed result; a
// replay with the same request returns the stored result with replayed
// true; the same key with another request is ErrIdempotencyConflict. When fn
// fails, nothing (not even the key) is kept, so a retry runs again.
//
// user, when fn sets it, names the wallet the operation is about: the
// record moves with that wallet when its slot moves to another shard.
func idempotent[T any](ctx context.Context, tx pgx.Tx, key, kind string, req any, user *int64, fn func() (T, error)) (res T, replayed bool, err error) {
	if key == "" {
		return res, false, fmt.Errorf("%w: idempotency key is required", ErrInvalid)
	}
	hash, err := requestHash(kind, req)
	if err != nil {
		return res, false, err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO ops (key, kind, req_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, key, kind, hash)
	if err != nil {
		return res, false, fmt.Errorf("record key: %w", err)
	}
	if tag.RowsAffected() == 0 {
		var storedKind string
		var storedHash, stored []byte
		if err := tx.QueryRow(ctx, `SELECT kind, req_hash, result FROM ops WHERE key = $1`, key).Scan(&storedKind, &storedHash, &stored); err != nil {
			return res, false, fmt.Errorf("read key: %w", err)
		}
		if storedKind != kind || string(storedHash) != string(hash) {
			return res, false, fmt.Errorf("%w: key %q", ErrIdempotencyConflict, key)
		}
		if stored != nil {
			if err := json.Unmarshal(stored, &res); err != nil {
				return res, false, fmt.Errorf("decode stored result: %w", err)
			}
		}
		return res, true, nil
	}
	res, err = fn()
	if err != nil {
		return res, false, err
	}
	b, err := json.Marshal(res)
	if err != nil {
		return res, false, err
	}
	var u *int64
	if user != nil && *user > 0 {
		u = user
	}
	if _, err := tx.Exec(ctx, `UPDATE ops SET result = $2, user_id = $3 WHERE key = $1`, key, b, u); err != nil {
		return res, false, fmt.Errorf("store result: %w", err)
	}
	return res, false, nil
}

func requestHash(kind string, req any) ([]byte, error) { return idempotency.Digest(kind, req) }

// inTx runs fn in a transaction of the shard.
func (l *Ledger) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return postgres.InTx(ctx, l.db, fn)
}
