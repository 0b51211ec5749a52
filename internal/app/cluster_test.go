package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hongbao/internal/hbtest"
	"hongbao/internal/httpapi"
	"hongbao/internal/ids"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/pgtest"
)

// clusterNode is one node of a test cluster with its API.
type clusterNode struct {
	*Node
	url string
	hs  *http.Server
}

var clusterSecret = []byte("cluster-token-secret-cluster-token!")

func startClusterNode(t *testing.T, open OpenDB, id, natsURL string, busPort int) *clusterNode {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	sys, err := StartNode(t.Context(), open, NodeOptions{LedgerShards: 2, PacketSets: 3, BusDir: t.TempDir(), BusPort: busPort, NatsURL: natsURL,
		Grace: time.Second, Every: 50 * time.Millisecond, NodeID: id, URL: url, LeaseTTL: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(sys.Backend(), httpapi.Options{Secret: clusterSecret})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(l) //nolint:errcheck // ends with Close
	return &clusterNode{Node: sys, url: url, hs: hs}
}

func (c *clusterNode) stop(leave bool) {
	_ = c.hs.Close()
	c.close(leave)
}

// owned counts the sets a node serves.
func (c *clusterNode) owned() int {
	n := 0
	for _, s := range c.Sets {
		if s.Serving() {
			n++
		}
	}
	return n
}

// Three nodes on the same databases and NATS: the sets spread one each; a
// storm on one hot packet through all three (grabs landing anywhere are
// forwarded to the owner) has no 5xx and exact sums; the owner is killed
// (no hand-over) mid-storm and another node takes its set within the lease
// bound; every acknowledged grab is credited once.
func TestThreeNodes(t *testing.T) {
	open := pgtest.Opener(t)
	a := startClusterNode(t, open, "a", "", -1)
	defer a.stop(true)
	b := startClusterNode(t, open, "b", a.Bus.ClientURL(), 0)
	defer b.stop(true)
	c := startClusterNode(t, open, "c", a.Bus.ClientURL(), 0)
	defer c.stop(true)
	nodes := []*clusterNode{a, b, c}
	hbtest.WaitFor(t, 15*time.Second, "one set per node", func() bool {
		return a.owned() == 1 && b.owned() == 1 && c.owned() == 1
	})
	p := newParty(t, a.Node, 600, 100_000)
	// A packet in a set that a does not own (a runs the NATS server the
	// others use, so it is not the one killed).
	var pk packet.Packet
	var set int
	var owner *clusterNode
	for owner == nil || owner == a {
		pk = sendLucky(t, a.Node, p, 60_000, 300, time.Time{})
		set = ids.Shard(pk.ID)
		for _, n := range nodes {
			if n.Sets[set].Serving() {
				owner = n
			}
		}
	}
	var five, ok, sold, busy atomic.Int64
	var killed atomic.Bool
	grab := func(i int, u int64) {
		n := nodes[i%3]
		if killed.Load() && n == owner {
			n = nodes[(i+1)%3]
			if n == owner {
				n = nodes[(i+2)%3]
			}
		}
		for attempt := 0; attempt < 50; attempt++ {
			status, err := grabAt(n.url, pk.ID, u)
			if err != nil {
				if killed.Load() {
					n = nodes[(i+1)%3]
					if n == owner {
						n = nodes[(i+2)%3]
					}
					continue
				}
				t.Errorf("grab: %v", err)
				return
			}
			switch {
			case status == 200:
				ok.Add(1)
				return
			case status == 409:
				sold.Add(1)
				return
			case status == 429 || status == 503:
				busy.Add(1)
				time.Sleep(20 * time.Millisecond)
			default:
				five.Add(1)
				t.Errorf("grab answered %d", status)
				return
			}
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, u := range p.members {
		if i == 300 {
			wg.Wait()
			// kill -9 of the owner: no hand-over; its lease runs out.
			killed.Store(true)
			owner.stop(false)
			start := time.Now()
			hbtest.WaitFor(t, 10*time.Second, "the set taken over", func() bool {
				for _, n := range nodes {
					if n != owner && n.Sets[set].Serving() {
						return true
					}
				}
				return false
			})
			t.Logf("set %d moved %s after its owner was killed", set, time.Since(start).Round(100*time.Millisecond))
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() { defer wg.Done(); defer func() { <-sem }(); grab(i, u) }()
	}
	wg.Wait()
	if five.Load() > 0 {
		t.Fatalf("%d answers 5xx", five.Load())
	}
	var survivor *clusterNode
	for _, n := range nodes {
		if n != owner {
			survivor = n
		}
	}
	d, err := survivor.Flows.PacketDetail(context.Background(), pk.ID)
	if err != nil {
		t.Fatal(err)
	}
	var sum money.Amount
	users := map[int64]bool{}
	for _, cl := range d.Claims {
		sum += cl.Amount
		if users[cl.User] {
			t.Fatalf("user %d twice", cl.User)
		}
		users[cl.User] = true
	}
	if len(d.Claims) != 300 || sum != 60_000 || d.Packet.State != packet.StateFinished {
		t.Fatalf("%d claims, sum %s, state %s", len(d.Claims), sum, d.Packet.State)
	}
	if int(ok.Load()) < 300 {
		t.Fatalf("%d grabs answered 200 for 300 claims", ok.Load())
	}
	hbtest.WaitFor(t, 30*time.Second, "every claim credited", func() bool {
		for _, cl := range d.Claims {
			if balance(t, survivor.Node, cl.User) != cl.Amount {
				return false
			}
		}
		return true
	})
	var fwd int64
	for _, n := range nodes {
		fwd += n.Forwarded.Load()
	}
	if fwd == 0 {
		t.Fatal("no grab was forwarded")
	}
	t.Logf("ok %d, sold out %d, busy/retry %d, forwarded %d", ok.Load(), sold.Load(), busy.Load(), fwd)
	// The ledger consumers are durable and shared: every node pulls from
	// them, so no node's consumers sit idle while another applies all.
	for _, n := range nodes {
		var applied int64
		for _, c := range n.Credits {
			applied += c.Applied.Load()
		}
		t.Logf("node %s applied %d credit messages", n.o.NodeID, applied)
		if applied == 0 && n != owner {
			t.Errorf("node %s applied no credit message", n.o.NodeID)
		}
	}
	// The dead node restarted (same id) rejoins: the sets spread one each
	// again, and a grab through it is served.
	re := startClusterNode(t, open, owner.o.NodeID, a.Bus.ClientURL(), 0)
	defer re.stop(true)
	live := []*clusterNode{re}
	for _, n := range nodes {
		if n != owner {
			live = append(live, n)
		}
	}
	hbtest.WaitFor(t, 15*time.Second, "one set per node after the restart", func() bool {
		return live[0].owned() == 1 && live[1].owned() == 1 && live[2].owned() == 1
	})
	q := newParty(t, a.Node, 3, 10_000)
	again := sendLucky(t, a.Node, q, 300, 3, time.Time{})
	for _, u := range q.members {
		status, err := grabAt(re.url, again.ID, u)
		if err != nil || status != 200 {
			t.Fatalf("grab through the restarted node: %d %v", status, err)
		}
	}
}

// A node stopped gracefully mid-storm hands its set over first: the other
// nodes take it at once (they are notified), and no grab sent to them
// fails.
func TestGracefulHandOver(t *testing.T) {
	open := pgtest.Opener(t)
	a := startClusterNode(t, open, "a", "", -1)
	defer a.stop(true)
	b := startClusterNode(t, open, "b", a.Bus.ClientURL(), 0)
	defer b.stop(true)
	hbtest.WaitFor(t, 15*time.Second, "the sets spread", func() bool { return a.owned() >= 1 && b.owned() >= 1 && a.owned()+b.owned() == 3 })
	p := newParty(t, a.Node, 400, 100_000)
	var pk packet.Packet
	for {
		pk = sendLucky(t, a.Node, p, 40_000, 400, time.Time{})
		if b.Sets[ids.Shard(pk.ID)].Serving() {
			break
		}
	}
	var bad, okN atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, u := range p.members {
		if i == 150 {
			wg.Wait()
			start := time.Now()
			b.stop(true) // graceful: leases given up, a notified
			hbtest.WaitFor(t, 5*time.Second, "a owns every set", func() bool { return a.owned() == 3 })
			t.Logf("hand-over took %s", time.Since(start).Round(time.Millisecond))
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for {
				status, err := grabAt(a.url, pk.ID, u)
				if err != nil {
					bad.Add(1)
					return
				}
				if status == 429 {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if status == 200 {
					okN.Add(1)
				} else {
					bad.Add(1)
					t.Errorf("grab answered %d", status)
				}
				return
			}
		}()
	}
	wg.Wait()
	if bad.Load() > 0 || okN.Load() != 400 {
		t.Fatalf("%d grabs failed, %d succeeded of 400", bad.Load(), okN.Load())
	}
}

// Two nodes, and their PostgreSQL restarted in immediate mode mid-storm:
// grabs in the way are told to retry (never another 5xx), the leases are
// renewed or taken over after it, every set is served again, and the
// packet pays out exactly its amount, every claim credited once.
func TestTwoNodesPostgresRestart(t *testing.T) {
	dir, err := os.MkdirTemp("", "hongbao-pgrestart-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	dbs, err := OpenDatabases(t.Context(), Config{DataDir: dir, LedgerShards: 2, Durable: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer dbs.Close()
	a := startClusterNode(t, dbs.Open, "a", "", -1)
	defer a.stop(true)
	b := startClusterNode(t, dbs.Open, "b", a.Bus.ClientURL(), 0)
	defer b.stop(true)
	nodes := []*clusterNode{a, b}
	hbtest.WaitFor(t, 15*time.Second, "the sets spread", func() bool { return a.owned() >= 1 && b.owned() >= 1 && a.owned()+b.owned() == 3 })
	p := newParty(t, a.Node, 300, 100_000)
	pk := sendLucky(t, a.Node, p, 30_000, 300, time.Time{})
	var other, okN atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, u := range p.members {
		if i == 100 {
			wg.Wait()
			if err := dbs.cluster.RestartImmediate(); err != nil {
				t.Fatal(err)
			}
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				status, err := grabAt(nodes[i%2].url, pk.ID, u)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				switch status {
				case 200:
					okN.Add(1)
					return
				case 429, 503:
					time.Sleep(50 * time.Millisecond)
					continue
				}
				other.Add(1)
				t.Errorf("grab answered %d", status)
				return
			}
			t.Errorf("user %d never got an answer", u)
		}()
	}
	wg.Wait()
	if other.Load() > 0 || okN.Load() != 300 {
		t.Fatalf("%d other answers, %d of 300 grabs succeeded", other.Load(), okN.Load())
	}
	hbtest.WaitFor(t, 20*time.Second, "every set served again", func() bool { return a.owned()+b.owned() == 3 })
	d, err := a.Flows.PacketDetail(context.Background(), pk.ID)
	if err != nil {
		t.Fatal(err)
	}
	var sum money.Amount
	for _, cl := range d.Claims {
		sum += cl.Amount
	}
	if len(d.Claims) != 300 || sum != 30_000 {
		t.Fatalf("%d claims, sum %s", len(d.Claims), sum)
	}
	hbtest.WaitFor(t, 60*time.Second, "every claim credited", func() bool {
		for _, cl := range d.Claims {
			if balance(t, a.Node, cl.User) != cl.Amount {
				return false
			}
		}
		return true
	})
}

// Three nodes on a 3-server JetStream cluster (each node prefers its own
// server), and the server leading the stream killed mid-storm: grabs go
// on through all three nodes with no 5xx, and every claim is credited once.
func TestThreeNodesNATSServerKilled(t *testing.T) {
	servers, urls := natsCluster(t)
	open := pgtest.Opener(t)
	var nodes []*clusterNode
	for i := range 3 {
		order := []string{urls[i], urls[(i+1)%3], urls[(i+2)%3]}
		n := startClusterNode(t, open, fmt.Sprint("n", i), strings.Join(order, ","), 0)
		defer n.stop(true)
		nodes = append(nodes, n)
	}
	hbtest.WaitFor(t, 15*time.Second, "one set per node", func() bool {
		return nodes[0].owned() == 1 && nodes[1].owned() == 1 && nodes[2].owned() == 1
	})
	p := newParty(t, nodes[0].Node, 300, 100_000)
	pk := sendLucky(t, nodes[0].Node, p, 30_000, 300, time.Time{})
	var other, okN atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, u := range p.members {
		if i == 150 {
			wg.Wait()
			leader := streamLeader(t, urls)
			for _, s := range servers {
				if s.Name() == leader {
					s.Shutdown()
					t.Logf("killed the stream leader %s", leader)
				}
			}
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for range 200 {
				status, err := grabAt(nodes[i%3].url, pk.ID, u)
				if err != nil {
					t.Errorf("grab: %v", err)
					return
				}
				switch status {
				case 200:
					okN.Add(1)
					return
				case 429, 503:
					time.Sleep(20 * time.Millisecond)
					continue
				}
				other.Add(1)
				t.Errorf("grab answered %d", status)
				return
			}
		}()
	}
	wg.Wait()
	if other.Load() > 0 || okN.Load() != 300 {
		t.Fatalf("%d other answers, %d of 300 grabs succeeded", other.Load(), okN.Load())
	}
	d, err := nodes[0].Flows.PacketDetail(context.Background(), pk.ID)
	if err != nil {
		t.Fatal(err)
	}
	hbtest.WaitFor(t, 60*time.Second, "every claim credited", func() bool {
		for _, cl := range d.Claims {
			if balance(t, nodes[0].Node, cl.User) != cl.Amount {
				return false
			}
		}
		return true
	})
}

// grabAt sends one grab as user to the node at url and returns its status.
func grabAt(url string, packetID, user int64) (int, error) {
	tok, err := httpapi.IssueToken(clusterSecret, httpapi.Claims{User: user, Expires: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		return 0, err
	}
	req, _ := http.NewRequest("POST", fmt.Sprintf("%s/v1/packets/%d/grab", url, packetID), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
