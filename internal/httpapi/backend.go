package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"hongbao/internal/dtx"
	"hongbao/internal/flow"
	"hongbao/internal/group"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
)

// Wallets is what the API asks of the money side.
type Wallets interface {
	Wallet(ctx context.Context, user int64) (ledger.Wallet, error)
	Statement(ctx context.Context, user, before int64, limit int) ([]ledger.Entry, int64, error)
	Transfer(ctx context.Context, key string, from, to int64, amount money.Amount) (dtx.Result, error)
	Deposit(ctx context.Context, key string, operator, user int64, amount money.Amount) (flow.DepositResult, error)
}

// Packets is what the API asks of the red packet side.
type Packets interface {
	SendPacket(ctx context.Context, key string, p packet.Packet, expiresIn time.Duration) (packet.Packet, dtx.Result, error)
	Grab(ctx context.Context, packetID, user int64) (packet.Claim, error)
	PacketDetail(ctx context.Context, id int64) (packet.Detail, error)
	Sent(ctx context.Context, sender, before int64, limit int) ([]packet.Packet, error)
	Received(ctx context.Context, user int64, beforeAt time.Time, beforeID int64, limit int) ([]packet.Claim, error)
}

// Groups is what the API asks of the group side.
type Groups interface {
	CreateGroup(ctx context.Context, key string, owner int64, capacity int, fee money.Amount) (group.Group, error)
	JoinGroup(ctx context.Context, key string, user, groupID int64) (dtx.Result, error)
	Group(ctx context.Context, id int64) (group.Group, error)
	IsMember(ctx context.Context, groupID, user int64) (bool, error)
	Members(ctx context.Context, groupID, after int64, limit int) ([]group.Member, error)
}

// Transactions is what operators see of the coordinator.
type Transactions interface {
	List(ctx context.Context, f dtx.Filter) ([]dtx.Global, error)
	Get(ctx context.Context, gid string) (dtx.Global, error)
	Unfinished(ctx context.Context, stuck time.Duration) (all, old int64, err error)
	// Retry drives an unfinished transaction now (dtx.ErrFinished when it
	// is final already).
	Retry(ctx context.Context, gid string) (dtx.Global, error)
}

// Backend is everything the API serves from.
type Backend struct {
	Wallets      Wallets
	Packets      Packets
	Groups       Groups
	Transactions Transactions
	// Payments and Recon may be nil: their routes are not served then.
	Payments Payments
	Recon    Reconciliation
	// Feeds and Webhooks may be nil too.
	Feeds    Feeds
	Webhooks Webhooks
	// Forward sends a grab on to the node that owns its packet's set (nil:
	// one node serves every set).
	Forward func(ctx context.Context, packetID int64, r *http.Request) (*http.Response, error)
	// Migrations move ledger slots between shards (nil: not served).
	Migrations Migrations
	// Days are the day partitions for operators (nil: not served).
	Days Days
	// Operations are the console's overview and dead letters (nil: not served).
	Operations Operations
	// Nodes is the cluster view for operators (nil: not served).
	Nodes func(ctx context.Context) (any, error)
	// Ready reports whether every dependency answers (nil: ready).
	Ready func(ctx context.Context) error
	// Collectors are the metrics of the parts behind the API.
	Collectors []prometheus.Collector
}
