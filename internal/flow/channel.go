package flow

import (
	"context"
	"fmt"

	"hongbao/internal/money"
	"hongbao/internal/payment"
)

// TopUp starts a top-up of amount for user through the payment channel.
// The user's key names this one order: a replay answers the same order.
// The answer is the order: pending with the URL the payer pays at, or
// created when the channel's answer is not known yet (final false: ask
// again with the same key, or read the order).
func (f *Flows) TopUp(ctx context.Context, key string, user int64, amount money.Amount) (payment.Order, bool, error) {
	return f.channelOrder(ctx, key, user, amount, payment.TopUp)
}

// Withdraw starts a withdrawal of amount from user's wallet through the
// payment channel, keyed like TopUp. The answer is the order: succeeded,
// failed, or still unknown (final false: the hold stays until the channel
// answers definitely).
func (f *Flows) Withdraw(ctx context.Context, key string, user int64, amount money.Amount) (payment.Order, bool, error) {
	return f.channelOrder(ctx, key, user, amount, payment.Withdrawal)
}

func (f *Flows) channelOrder(ctx context.Context, key string, user int64, amount money.Amount, kind payment.Kind) (payment.Order, bool, error) {
	if f.Payments == nil || !f.Payments.HasChannel() {
		return payment.Order{}, false, payment.ErrNoChannel
	}
	if !validUser(user) {
		return payment.Order{}, false, fmt.Errorf("%w: %s by user %d", ErrInvalid, kind, user)
	}
	if err := f.checkAmount(string(kind), amount); err != nil {
		return payment.Order{}, false, err
	}
	req := struct {
		Amount money.Amount `json:"amount"`
	}{amount}
	// The order id is chosen before the key is claimed and stored with it,
	// so that every replay names the same order.
	id, err := f.Payments.NewID(ctx, user)
	if err != nil {
		return payment.Order{}, false, err
	}
	params := &struct {
		Order int64 `json:"order"`
	}{id}
	type answer struct {
		Order payment.Order `json:"order"`
		Final bool          `json:"final"`
	}
	a, err := once(ctx, f.requests, user, key, string(kind), req, params, func(ctx context.Context, _ bool) (answer, bool, error) {
		var o payment.Order
		var err error
		if kind == payment.TopUp {
			o, err = f.Payments.CreateTopUp(ctx, params.Order, user, amount)
		} else {
			o, err = f.Payments.CreateWithdrawal(ctx, params.Order, user, amount)
		}
		if err != nil {
			return answer{}, false, err
		}
		// A top-up waiting for its payer is a final answer to "create"; a
		// withdrawal's only when the channel's answer is definite.
		final := o.State.Final() || (kind == payment.TopUp && o.State == payment.Pending)
		return answer{o, final}, final, nil
	})
	return a.Order, a.Final, err
}
