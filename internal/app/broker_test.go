package app

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"hongbao/internal/bus"
	"hongbao/internal/hbtest"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/pgtest"
)

// natsProxy forwards TCP between clients and a NATS server, reading the
// server's side frame by frame. While dropping, it swallows every publish
// ack (a MSG whose payload is a JetStream PubAck) and passes the rest, so
// the connection stays up and only the acks are lost, as in a leader
// change. It drops the next dropNext acks, whenever they come.
type natsProxy struct {
	l        net.Listener
	target   string
	dropNext atomic.Int64
	Dropped  atomic.Int64
}

func newNATSProxy(t *testing.T, target string) *natsProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &natsProxy{l: l, target: target}
	go p.accept()
	t.Cleanup(func() { l.Close() })
	return p
}

func (p *natsProxy) URL() string { return "nats://" + p.l.Addr().String() }

func (p *natsProxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		go func() { _, _ = io.Copy(s, c); s.Close() }()
		go func() { p.serverToClient(s, c); c.Close() }()
	}
}

func (p *natsProxy) serverToClient(s io.Reader, c io.Writer) {
	r := bufio.NewReaderSize(s, 64<<10)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		frame := []byte(line)
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "MSG" || f[0] == "HMSG") {
			size, _ := strconv.Atoi(f[len(f)-1])
			body := make([]byte, size+2)
			if _, err := io.ReadFull(r, body); err != nil {
				return
			}
			if p.dropNext.Load() > 0 && bytes.Contains(body, []byte(`{"stream":"`+bus.Stream+`"`)) && p.dropNext.Add(-1) >= 0 {
				p.Dropped.Add(1)
				continue
			}
			frame = append(frame, body...)
		}
		if _, err := c.Write(frame); err != nil {
			return
		}
	}
}

func runNATS(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o.JetStream, o.NoSigs, o.NoLog = true, true, true
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// stormAll grabs pk with every member once (busy answers retried) and
// calls during(i) before the i-th grab starts.
func stormAll(t *testing.T, sys *Node, pk packet.Packet, members []int64, during func(i int)) {
	t.Helper()
	var wg sync.WaitGroup
	for i, u := range members {
		during(i)
		wg.Go(func() {
			for {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				_, err := sys.Flows.Grab(ctx, pk.ID, u)
				cancel()
				if errors.Is(err, packet.ErrBusy) {
					time.Sleep(time.Millisecond)
					continue
				}
				if err != nil {
					t.Errorf("grab by %d: %v", u, err)
				}
				return
			}
		})
		if i%20 == 0 {
			time.Sleep(5 * time.Millisecond) // spread the storm over the fault
		}
	}
	wg.Wait()
}

// proxiedNode is a node whose NATS connection goes through a natsProxy,
// with the reconciler's grace at an hour so that only the relay delivers.
func proxiedNode(t *testing.T, ackTimeout, relayStall time.Duration) (*Node, *natsProxy) {
	t.Helper()
	ns := runNATS(t, &server.Options{Port: -1})
	proxy := newNATSProxy(t, ns.Addr().String())
	sys, err := StartNode(t.Context(), pgtest.Opener(t), NodeOptions{LedgerShards: 2, PacketSets: 1, NatsURL: proxy.URL(),
		AckTimeout: ackTimeout, RelayStall: relayStall, Grace: time.Hour, Every: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	return sys, proxy
}

// Publish acks lost (the broker stores the messages, its answers never
// come back, the connection stays up): the relay's waits end, it publishes
// again, and every claim is credited once without any help.
func TestLostPublishAcks(t *testing.T) {
	t.Parallel()
	sys, proxy := proxiedNode(t, 300*time.Millisecond, DefaultRelayStall)
	p := newParty(t, sys, 300, 100_000)
	pk := sendLucky(t, sys, p, 30_000, 300, time.Time{})
	stormAll(t, sys, pk, p.members, func(i int) {
		if i == 100 {
			proxy.dropNext.Store(2) // the next two acks, whenever they come
		}
	})
	// The grace is an hour: the reconciler does not help here, the relay does.
	waitCredited(t, sys, pk.ID, map[int64]money.Amount{})
	hbtest.WaitFor(t, 10*time.Second, "an ack to be dropped", func() bool { return proxy.Dropped.Load() > 0 })
	if proxy.Dropped.Load() == 0 {
		t.Fatal("no ack was dropped: the test proved nothing")
	}
	t.Logf("%d publish acks dropped", proxy.Dropped.Load())
	if n := sys.RelayRestarts.Load(); n != 0 {
		t.Fatalf("the relay hung until its watchdog restarted it %d times: a wait on the broker was not bounded", n)
	}
	reconcile(t, sys)
}

// A relay whose wait on the broker never ends (an ack timeout of an hour,
// acks lost) is found stalled by its watchdog and restarted, and every
// claim is still credited once without the reconciler.
func TestStalledRelayRestarted(t *testing.T) {
	t.Parallel()
	sys, proxy := proxiedNode(t, time.Hour, time.Second)
	p := newParty(t, sys, 200, 100_000)
	pk := sendLucky(t, sys, p, 20_000, 200, time.Time{})
	stormAll(t, sys, pk, p.members, func(i int) {
		if i == 50 {
			proxy.dropNext.Store(1)
		}
	})
	waitCredited(t, sys, pk.ID, map[int64]money.Amount{})
	if proxy.Dropped.Load() == 0 || sys.RelayRestarts.Load() == 0 {
		t.Fatalf("%d acks dropped, %d relay restarts: the watchdog was not exercised", proxy.Dropped.Load(), sys.RelayRestarts.Load())
	}
	reconcile(t, sys)
}

// A 3-node JetStream cluster: the stream is created with 3 replicas, and
// the node leading it is killed mid-storm; every claim is credited once.
func TestStreamLeaderKilled(t *testing.T) {
	t.Parallel()
	servers, urls := natsCluster(t)
	sys, err := StartNode(t.Context(), pgtest.Opener(t), NodeOptions{LedgerShards: 2, PacketSets: 1, NatsURL: strings.Join(urls, ","),
		AckTimeout: time.Second, Grace: 3 * time.Second, Every: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	if sys.Bus.Replicas() != 3 {
		t.Fatalf("stream replicas %d on a 3-node cluster", sys.Bus.Replicas())
	}
	// An operator's raise survives a restart, and a lower ask never shrinks it.
	again, err := bus.Start(t.Context(), bus.Options{URL: strings.Join(urls, ","), Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if again.Replicas() != 3 {
		t.Fatalf("a start asking for 1 replica set the stream to %d", again.Replicas())
	}
	again.Close()
	p := newParty(t, sys, 300, 100_000)
	pk := sendLucky(t, sys, p, 30_000, 300, time.Time{})
	stormAll(t, sys, pk, p.members, func(i int) {
		if i != 150 {
			return
		}
		leader := streamLeader(t, urls)
		for _, s := range servers {
			if s.Name() == leader {
				s.Shutdown()
				t.Logf("killed the stream leader %s", leader)
			}
		}
	})
	start := time.Now()
	waitCredited(t, sys, pk.ID, map[int64]money.Amount{})
	t.Logf("all credited %s after the storm", time.Since(start).Round(time.Millisecond))
	reconcile(t, sys)
}

// natsCluster runs a 3-server JetStream cluster on loopback and waits for
// its meta leader.
func natsCluster(t *testing.T) ([]*server.Server, []string) {
	t.Helper()
	ports := make([]int, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var servers []*server.Server
	var urls []string
	for i := range 3 {
		s := runNATS(t, &server.Options{ServerName: fmt.Sprint("n", i), Port: -1,
			Cluster: server.ClusterOpts{Name: "hb", Host: "127.0.0.1", Port: ports[i]}, Routes: server.RoutesFromStr(strings.Join(routes, ","))})
		servers = append(servers, s)
		urls = append(urls, s.ClientURL())
	}
	hbtest.WaitFor(t, 30*time.Second, "a JetStream meta leader", func() bool {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return true
			}
		}
		return false
	})
	return servers, urls
}

func streamLeader(t *testing.T, urls []string) string {
	t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, bus.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.Cluster == nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.Cluster.Leader
}
