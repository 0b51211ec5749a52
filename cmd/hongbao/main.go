// Command hongbao runs the Hongbao money platform: serve, demo, bench and
// the operator commands. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

// main runs one command until it ends or a signal stops it: SIGTERM is a
// graceful stop (exit 0 once drained), Ctrl-C (SIGINT) the same but exits
// 130, as shells expect of an interrupted program.
func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var interrupted atomic.Bool
	go func() {
		s := <-sigs
		interrupted.Store(s == os.Interrupt)
		cancel()
		signal.Stop(sigs) // a second signal ends the process at once
	}()
	code := Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if interrupted.Load() && code == 0 {
		code = 130
	}
	cancel()
	os.Exit(code)
}
