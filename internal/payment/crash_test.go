package payment_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"hongbao/internal/channel"
	"hongbao/internal/money"
	"hongbao/internal/payment"
)

// dying is a hook that makes the process die at one step: from then on
// every step fails, as if nothing after it ran.
type dying struct {
	at   string
	dead atomic.Bool
}

func (d *dying) hook(step string) error {
	if step == d.at {
		d.dead.Store(true)
	}
	if d.dead.Load() {
		return payment.ErrCrash
	}
	return nil
}

var steps = []string{"topup.recorded", "topup.asked", "topup.pending", "topup.paid-heard", "topup.credited",
	"withdrawal.held", "withdrawal.asked", "withdrawal.unknown", "withdrawal.definite-heard", "withdrawal.settled"}

// TestCrashMatrix stops the process after each recorded step of a top-up
// and of a withdrawal, in every way the channel may answer; a fresh
// process finishes each order exactly once.
func TestCrashMatrix(t *testing.T) {
	type scenario struct {
		name     string
		kind     payment.Kind
		knobs    channel.Knobs // in the first process's life
		outcome  string        // the payout's end
		wantPaid bool
	}
	scenarios := []scenario{
		{"top-up by callback", payment.TopUp, channel.Knobs{}, "", true},
		{"top-up by query", payment.TopUp, channel.Knobs{DropCallback: 1}, "", true},
		{"top-up answer lost", payment.TopUp, channel.Knobs{LoseAnswer: 1}, "", true},
		{"withdrawal succeeds", payment.Withdrawal, channel.Knobs{}, channel.PayoutSucceeded, true},
		{"withdrawal answer lost", payment.Withdrawal, channel.Knobs{LoseAnswer: 1}, channel.PayoutSucceeded, true},
		{"withdrawal processing then paid", payment.Withdrawal, channel.Knobs{PayoutOutcome: channel.PayoutProcessing}, channel.PayoutSucceeded, true},
		{"withdrawal fails", payment.Withdrawal, channel.Knobs{PayoutOutcome: channel.PayoutFailed}, channel.PayoutFailed, false},
	}
	fired := map[string]bool{}
	for _, sc := range scenarios {
		for _, step := range steps {
			if string(sc.kind) != step[:len(sc.kind)] {
				continue
			}
			t.Run(sc.name+"/"+step, func(t *testing.T) {
				r := newRig(t, sc.knobs)
				const user = 42
				r.deposit(user, 10_00)
				d := &dying{at: step}
				o := r.o
				o.Hook = d.hook
				first := r.start(o)
				id := mustNewID(t, first, user)
				ctx := context.Background()
				// The first process's life, until it dies or the order ends.
				var ord payment.Order
				var err error
				if sc.kind == payment.TopUp {
					ord, err = first.CreateTopUp(ctx, id, user, 5_00)
				} else {
					ord, err = first.CreateWithdrawal(ctx, id, user, 4_00)
				}
				for i := 0; i < 100 && !d.dead.Load() && !ord.State.Final(); i++ {
					if sc.kind == payment.TopUp && ord.PayURL != "" {
						if po, _ := r.ch.QueryPay(ctx, ord.ChannelID()); po.State == channel.PayCreated {
							payer(t, ord)
						}
					}
					if p, err := r.ch.QueryPayout(ctx, ord.ChannelID()); err == nil && p.State == channel.PayoutProcessing {
						_ = signedPost(r.ch, "/control/payout/"+ord.ChannelID(), `{"State":"`+sc.outcome+`"}`, nil)
					}
					time.Sleep(10 * time.Millisecond)
					_, _ = first.Step(ctx, 10)
					if got, gerr := first.Get(ctx, id); gerr == nil {
						ord = got
					}
				}
				_ = err
				if !d.dead.Load() {
					t.Skipf("this way of answering never passes %s", step)
				}
				fired[step] = true
				// A fresh process on the same databases finishes it.
				r.sim.SetKnobs(channel.Knobs{PayoutOutcome: sc.outcome})
				fresh := r.start(r.o)
				var got payment.Order
				for i := 0; i < 500; i++ {
					_, _ = fresh.Step(ctx, 10)
					got, _ = fresh.Get(ctx, id)
					if got.State.Final() {
						break
					}
					if got.PayURL != "" {
						if po, _ := r.ch.QueryPay(ctx, got.ChannelID()); po.State == channel.PayCreated {
							payer(t, got)
						}
					}
					if p, err := r.ch.QueryPayout(ctx, got.ChannelID()); err == nil && p.State == channel.PayoutProcessing {
						_ = signedPost(r.ch, "/control/payout/"+got.ChannelID(), `{"State":"`+sc.outcome+`"}`, nil)
					}
					time.Sleep(10 * time.Millisecond)
				}
				if !got.State.Final() {
					t.Fatalf("not finished by the fresh process: %+v", got)
				}
				want := money.Amount(10_00)
				switch {
				case sc.kind == payment.TopUp:
					want += 5_00
					if got.State != payment.Paid {
						t.Fatalf("%+v", got)
					}
				case sc.wantPaid:
					want -= 4_00
					if got.State != payment.Succeeded || r.sim.PaidOut() != 1 {
						t.Fatalf("%+v, paid out %d times", got, r.sim.PaidOut())
					}
				default:
					if got.State != payment.Failed || r.sim.PaidOut() != 0 {
						t.Fatalf("%+v, paid out %d times", got, r.sim.PaidOut())
					}
				}
				time.Sleep(50 * time.Millisecond) // late callbacks land
				if w := r.wallet(user); w.Balance != want || w.Held != 0 || w.Incoming != 0 {
					t.Fatalf("wallet %+v, want balance %s, nothing held or reserved", w, want)
				}
				r.sound()
			})
		}
	}
	for _, step := range steps {
		if !fired[step] {
			t.Errorf("no scenario crashed at %s", step)
		}
	}
}
