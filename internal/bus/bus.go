// Package bus adapts NATS JetStream: the embedded server (in-process by
// default, a URL when configured), the stream Hongbao's reliable messages
// live in, batched publishing with Nats-Msg-Id, and a consumer runner that
// acks only after the handler committed.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream is the JetStream stream that carries every subject under "hb.".
const Stream = "HONGBAO"

// EventStream holds the value events for the IM side: events.conversation.<id>
// and events.user.<id>, each event once (its id is the Nats-Msg-Id).
const EventStream = "HONGBAO_EVENTS"

// Options configure the bus.
type Options struct {
	// URL of a NATS cluster; empty runs a server in this process.
	URL string
	// StoreDir of the embedded server's file store.
	StoreDir string
	// Port of the embedded server on 127.0.0.1: 0 accepts in-process
	// connections only, -1 picks a free port.
	Port int
	// Replicas of the stream: 0 picks them (1 in process; on a cluster as
	// many as it has servers, at most 3). A stream that already has more
	// replicas (raised by an operator) keeps them.
	Replicas int
	// AckTimeout bounds every wait for JetStream to acknowledge a publish
	// (default 5 s): an ack lost in a leader change fails the publish, which
	// is then retried, instead of blocking its caller for good.
	AckTimeout time.Duration
	Logger     *slog.Logger
}

// Bus is a connection to JetStream (and the embedded server, if any).
type Bus struct {
	srv        *server.Server
	sopt       *server.Options
	nc         *nats.Conn
	js         jetstream.JetStream
	log        *slog.Logger
	ackTimeout time.Duration
	replicas   int
	port       int // of the embedded server while it is stopped
}

// Start connects (starting the embedded server when no URL is given) and
// makes sure the stream exists.
func Start(ctx context.Context, o Options) (*Bus, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 5 * time.Second
	}
	b := &Bus{log: o.Logger, ackTimeout: o.AckTimeout}
	url := o.URL
	var connOpts []nats.Option
	if url == "" {
		so := &server.Options{ServerName: "hongbao-embedded", JetStream: true, StoreDir: o.StoreDir,
			Host: "127.0.0.1", Port: o.Port, NoSigs: true, NoLog: true}
		if o.Port == 0 {
			so.DontListen = true
		}
		srv, err := server.NewServer(so)
		if err != nil {
			return nil, fmt.Errorf("bus: embedded NATS: %w", err)
		}
		srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			srv.Shutdown()
			return nil, errors.New("bus: embedded NATS did not become ready")
		}
		b.srv, b.sopt = srv, so
		url = srv.ClientURL()
		if o.Port == 0 {
			connOpts = append(connOpts, nats.InProcessServer(srv))
		}
	}
	connOpts = append(connOpts, nats.Name("hongbao"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				o.Logger.Warn("nats disconnected", "err", err)
			}
		}))
	nc, err := nats.Connect(url, connOpts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: connect to NATS: %w", err)
	}
	b.nc = nc
	if b.js, err = jetstream.New(nc, jetstream.WithPublishAsyncTimeout(o.AckTimeout), jetstream.WithPublishAsyncMaxPending(8192)); err != nil {
		b.Close()
		return nil, err
	}
	if err := b.ensureStream(ctx, o.Replicas); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// ensureStream creates the stream or updates it, with the replicas asked
// for (0: as many servers as the cluster has, at most 3; 1 in process), and
// never fewer than it already has.
func (b *Bus) ensureStream(ctx context.Context, replicas int) error {
	if replicas <= 0 {
		replicas = 1
		if b.srv == nil {
			replicas = min(3, max(1, len(b.nc.Servers())))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, sc := range []struct{ name, subjects string }{{Stream, "hb.>"}, {EventStream, "events.>"}} {
		r := replicas
		if st, err := b.js.Stream(ctx, sc.name); err == nil {
			if have := st.CachedInfo().Config.Replicas; have > r {
				b.log.Info("stream keeps the replicas it has", "stream", sc.name, "replicas", have, "asked", r)
				r = have
			}
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("bus: look up stream %s: %w", sc.name, err)
		}
		_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: sc.name, Subjects: []string{sc.subjects}, Storage: jetstream.FileStorage,
			Duplicates: 2 * time.Minute, Replicas: r, MaxAge: 7 * 24 * time.Hour,
		})
		if err != nil {
			return fmt.Errorf("bus: create stream %s with %d replicas: %w", sc.name, r, err)
		}
		if sc.name == Stream {
			b.replicas = r
		}
	}
	return nil
}

// Replicas is how many replicas the stream has.
func (b *Bus) Replicas() int { return b.replicas }

// RestartServer stops the embedded server and starts it again on the same
// port and store, as an operator restarting NATS would; the connection
// reconnects by itself. Only for a server that listens on a port.
func (b *Bus) RestartServer() error {
	if err := b.StopServer(); err != nil {
		return err
	}
	return b.StartServer()
}

// StopServer stops the embedded server (the connection keeps trying to
// reconnect), as an outage of NATS would; StartServer brings it back on
// the same port and store.
func (b *Bus) StopServer() error {
	if b.srv == nil || b.sopt.DontListen {
		return errors.New("bus: no listening embedded server to stop")
	}
	b.port = b.srv.Addr().(*net.TCPAddr).Port
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
	return nil
}

// StartServer starts the embedded server StopServer stopped.
func (b *Bus) StartServer() error {
	so := *b.sopt
	so.Port = b.port
	srv, err := server.NewServer(&so)
	if err != nil {
		return err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		return errors.New("bus: restarted NATS did not become ready")
	}
	b.srv = srv
	return nil
}

// ClientURL is where other processes reach the embedded server ("" when
// this bus has none, or it does not listen).
func (b *Bus) ClientURL() string {
	if b.srv == nil || b.sopt.DontListen {
		return ""
	}
	return b.srv.ClientURL()
}

// Conn exposes the NATS connection (for plain subjects such as events).
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Close drains the connection and stops the embedded server.
func (b *Bus) Close() {
	if b.nc != nil {
		_ = b.nc.Drain()
		b.nc.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// Msg is one message to publish.
type Msg struct {
	Subject string
	ID      string // Nats-Msg-Id: JetStream drops a repeat inside its window
	Data    []byte
}

// Publish sends msgs asynchronously and waits until JetStream has stored
// every one, at most the ack timeout (or until ctx ends). On an error the
// caller publishes the whole batch again: the ids make repeats harmless.
func (b *Bus) Publish(ctx context.Context, msgs []Msg) error {
	ctx, cancel := context.WithTimeout(ctx, b.ackTimeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := b.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}}, jetstream.WithMsgID(m.ID))
		if err != nil {
			return fmt.Errorf("bus: publish %s: %w", m.ID, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("bus: publish %s: %w", f.Msg().Header.Get(jetstream.MsgIDHeader), err)
		case <-ctx.Done():
			return fmt.Errorf("bus: no ack for %s: %w", f.Msg().Header.Get(jetstream.MsgIDHeader), ctx.Err())
		}
	}
	return nil
}
