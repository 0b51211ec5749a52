package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"hongbao/internal/app"
	"hongbao/internal/channel"
)

// runChannelSim serves the payment channel simulator as its own process
// until a signal stops it.
func runChannelSim(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("channel-sim", flag.ContinueOnError)
	addr := fs.String("addr", app.Env("HONGBAO_CHANNEL_ADDR", "127.0.0.1:8090"), "listen address (HONGBAO_CHANNEL_ADDR)")
	secret := app.SecretString(fs, "secret", "HONGBAO_CHANNEL_SECRET", "merchant secret that signs requests and callbacks, at least 32 characters (HONGBAO_CHANNEL_SECRET)")
	var k channel.Knobs
	fs.DurationVar(&k.Latency, "latency", 0, "added to every answer")
	fs.Float64Var(&k.LoseAnswer, "lose-answer", 0, "probability to do the work and answer 504 (the answer is lost)")
	fs.Float64Var(&k.Fail5xx, "fail-5xx", 0, "probability to answer 503 without doing the work")
	fs.Float64Var(&k.SystemError, "system-error", 0, `probability to answer {"code":"SYSTEMERROR"} without doing the work`)
	fs.StringVar(&k.PayoutOutcome, "payout", channel.PayoutSucceeded, "how payouts end: succeeded, failed or processing")
	fs.Float64Var(&k.DropCallback, "drop-callback", 0, "probability that a paid order's callback is never sent")
	fs.Float64Var(&k.DuplicateCallback, "duplicate-callback", 0, "probability that it is sent twice")
	fs.DurationVar(&k.CallbackDelay, "callback-delay", 0, "how late callbacks are")
	fs.DurationVar(&k.AutoPay, "auto-pay", 0, "pay every order after this long (0: only POST /control/pay/{id})")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	if fs.NArg() > 0 {
		return app.UsageErr(fmt.Errorf("channel-sim takes no arguments, only flags: %q", fs.Args()))
	}
	if len(*secret) < 32 {
		return app.UsageErr(errors.New("--secret (HONGBAO_CHANNEL_SECRET) must be at least 32 characters"))
	}
	for _, p := range []float64{k.LoseAnswer, k.Fail5xx, k.SystemError, k.DropCallback, k.DuplicateCallback} {
		if p < 0 || p > 1 {
			return app.UsageErr(errors.New("probabilities are 0..1"))
		}
	}
	switch k.PayoutOutcome {
	case channel.PayoutSucceeded, channel.PayoutFailed, channel.PayoutProcessing:
	default:
		return app.UsageErr(fmt.Errorf("--payout %q: succeeded, failed or processing", k.PayoutOutcome))
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	sim := channel.NewSimulator([]byte(*secret), k)
	hs := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(out, "payment channel simulator on http://%s\n", l.Addr())
	return app.ServeUntilDone(ctx, hs, l, func() {}, log)
}
