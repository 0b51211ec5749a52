// Package channel adapts a payment channel (WeChat Pay, Alipay, a bank):
// pay orders that fund wallets, payouts that drain them, and the daily
// statement. Every remote answer has three states (seed 004): a definite
// success, a definite failure, or unknown (a timeout, a 5xx, a "system
// error", a payout still processing); only a definite answer may change
// an order, an unknown one is queried until it is definite. Client speaks
// to a channel over signed HTTP; Simulator is one to test against.
package channel

import (
	"context"
	"errors"
	"time"

	"hongbao/internal/money"
)

// States of a pay order at the channel.
const (
	PayCreated = "created" // waiting for the payer
	PayPaid    = "paid"    // the payer paid: credit the wallet
	PayClosed  = "closed"  // closed unpaid: nothing will be paid
)

// States of a payout at the channel.
const (
	PayoutProcessing = "processing" // not definite yet: query again
	PayoutSucceeded  = "succeeded"  // the money left: post the hold
	PayoutFailed     = "failed"     // definitely not paid: void the hold
	// PayoutReversed: paid, then returned by the bank (seen on a statement).
	PayoutReversed = "reversed"
)

// Statement line kinds.
const (
	LinePay    = "pay"
	LinePayout = "payout"
)

// Errors a caller branches on.
var (
	// ErrUnknown: the channel's answer is not known (timeout, 5xx, system
	// error, a lost answer): the operation may or may not have happened.
	// Ask again with the same order id; never take it as a failure.
	ErrUnknown = errors.New("channel: result unknown")
	// ErrRejected: a definite refusal (bad request, an order id reused with
	// another amount); nothing happened at the channel.
	ErrRejected = errors.New("channel: rejected")
	// ErrNoOrder: the channel has no order with this id (definite).
	ErrNoOrder = errors.New("channel: no such order")
)

// PayOrder is a pay order as the channel knows it.
type PayOrder struct {
	ID     string       `json:"id"` // our order id, the channel's idempotency key
	Amount money.Amount `json:"amount"`
	State  string       `json:"state"`
	// PayURL is what the client opens to pay.
	PayURL string    `json:"pay_url,omitempty"`
	PaidAt time.Time `json:"paid_at,omitzero"`
}

// Payout is a payout as the channel knows it.
type Payout struct {
	ID     string       `json:"id"` // our order id, the channel's idempotency key
	User   int64        `json:"user"`
	Amount money.Amount `json:"amount"`
	State  string       `json:"state"`
	Reason string       `json:"reason,omitempty"`
	// DoneAt is when the payout became definite (the statement's day).
	DoneAt time.Time `json:"done_at,omitzero"`
}

// Line is one line of a day's statement: what the channel says moved.
type Line struct {
	Kind   string       `json:"kind"` // "pay" or "payout"
	ID     string       `json:"id"`
	Amount money.Amount `json:"amount"`
	State  string       `json:"state"`
	At     time.Time    `json:"at"`
}

// Channel is what Hongbao asks of a payment channel. Every method is
// idempotent on the order id; an error is ErrUnknown, ErrRejected or
// ErrNoOrder (wrapped).
type Channel interface {
	CreatePay(ctx context.Context, id string, amount money.Amount) (PayOrder, error)
	QueryPay(ctx context.Context, id string) (PayOrder, error)
	ClosePay(ctx context.Context, id string) (PayOrder, error)
	Payout(ctx context.Context, id string, user int64, amount money.Amount) (Payout, error)
	QueryPayout(ctx context.Context, id string) (Payout, error)
	Statement(ctx context.Context, day time.Time) ([]Line, error)
}
