// Package packet is one packet set: red packets, the grab engine that
// serializes each packet in memory and group-commits claims, the send
// participant, the expiry sweeper, and the relay that turns committed
// claims and refunds into credit messages.
package packet

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"hongbao/internal/days"
	"hongbao/internal/dtx"
	"hongbao/internal/events"
	"hongbao/internal/money"
	"hongbao/internal/postgres"
	"hongbao/internal/text"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// Migrations are the schema of a packet set database.
func Migrations() [][]postgres.Migration {
	return [][]postgres.Migration{dtx.BarrierMigrations(), days.Migrations(), postgres.Embedded("packet", sqlFS, "sql"), events.OutboxMigrations()}
}

// Kind of packet.
type Kind string

// Kinds of packet.
const (
	Single Kind = "single" // to one user
	Lucky  Kind = "lucky"  // to a group, random split at grab time
	Equal  Kind = "equal"  // to a group, equal split
)

// State of a packet.
type State string

// States of a packet.
const (
	StatePending   State = "pending"   // sent, its TCC not yet confirmed
	StateActive    State = "active"    // can be grabbed
	StateFinished  State = "finished"  // every share grabbed
	StateExpired   State = "expired"   // expired; the remainder refunded
	StateCancelled State = "cancelled" // its TCC cancelled; never grabbable
)

// Errors a caller branches on.
var (
	ErrInvalid  = errors.New("invalid packet")
	ErrNotFound = errors.New("packet not found")
	ErrWrongSet = errors.New("packet belongs to another set")
	// ErrNotOwner: another node owns the packet's set (forward the grab).
	ErrNotOwner       = errors.New("another node owns this packet set")
	ErrNotActive      = errors.New("packet is not open for grabbing")
	ErrExpired        = errors.New("packet has expired")
	ErrSoldOut        = errors.New("packet is empty")
	ErrBusy           = errors.New("too many grabbers for the shares left: try again")
	ErrNotAllowed     = errors.New("user may not grab this packet")
	ErrFenced         = errors.New("packet moved to another owner: try again")
	ErrNotGroupMember = errors.New("sender is not a member of the group")
)

// Limits bound what a packet may be.
type Limits struct {
	MaxAmount   money.Amount  // per packet
	MaxShares   int           // per packet
	MaxGreeting int           // characters
	Expiry      time.Duration // default lifetime
}

// DefaultLimits: 200.00 a share at most, 10,000 shares, 64 characters, 24 h.
var DefaultLimits = Limits{MaxAmount: 2_000_000_00, MaxShares: 10_000, MaxGreeting: 64, Expiry: 24 * time.Hour}

// Packet is a red packet.
type Packet struct {
	ID              int64        `json:"id,string"`
	Kind            Kind         `json:"kind"`
	Sender          int64        `json:"sender"`
	Receiver        int64        `json:"receiver,omitempty"`
	Group           int64        `json:"group,omitempty"`
	Amount          money.Amount `json:"amount"`
	Shares          int          `json:"shares"`
	Greeting        string       `json:"greeting"`
	State           State        `json:"state"`
	RemainingAmount money.Amount `json:"remaining_amount"`
	RemainingCount  int          `json:"remaining_count"`
	Refunded        money.Amount `json:"refunded"`
	ExpiresAt       time.Time    `json:"expires_at"`
	CreatedAt       time.Time    `json:"created_at"`
}

// Validate checks a packet to be sent against the limits.
func (p Packet) Validate(l Limits) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	switch {
	case p.Sender <= 0:
		return bad("sender %d", p.Sender)
	case p.Kind != Single && p.Kind != Lucky && p.Kind != Equal:
		return bad("kind %q: want single, lucky or equal", p.Kind)
	case p.Kind == Single && (p.Receiver <= 0 || p.Receiver == p.Sender):
		return bad("a single packet needs a receiver other than the sender")
	case p.Kind == Single && p.Shares != 1:
		return bad("a single packet has exactly 1 share")
	case p.Kind != Single && p.Group == 0:
		return bad("a group packet needs a group")
	case p.Kind == Single && p.Group != 0:
		return bad("a single packet goes to a receiver, not a group")
	case p.Kind != Single && p.Receiver != 0:
		return bad("a group packet goes to a group, not a receiver")
	case p.Shares < 1 || p.Shares > l.MaxShares:
		return bad("%d shares: want 1..%d", p.Shares, l.MaxShares)
	case p.Amount < money.Amount(p.Shares):
		return bad("%s for %d shares: at least 0.01 a share", p.Amount, p.Shares)
	case p.Amount > l.MaxAmount:
		return bad("%s is above the limit of %s", p.Amount, l.MaxAmount)
	case !utf8.ValidString(p.Greeting):
		return bad("greeting is not valid UTF-8")
	case utf8.RuneCountInString(p.Greeting) > l.MaxGreeting:
		return bad("greeting of %d characters: at most %d", utf8.RuneCountInString(p.Greeting), l.MaxGreeting)
	}
	if r, ok := text.BadRune(p.Greeting); ok {
		return bad("greeting contains %U: a greeting is one line of visible text (no control, formatting or direction characters)", r)
	}
	return nil
}

// Claim is one grab.
type Claim struct {
	ID        int64        `json:"id,string"`
	PacketID  int64        `json:"packet_id,string"`
	User      int64        `json:"user"`
	Seq       int          `json:"seq"`
	Amount    money.Amount `json:"amount"`
	At        time.Time    `json:"at"`
	Credited  bool         `json:"credited"`
	Duplicate bool         `json:"-"` // answered from an earlier grab by the same user
}

// Membership answers whether a user is in a group.
type Membership interface {
	IsMember(ctx context.Context, group, user int64) (bool, error)
}
