package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"hongbao/internal/app"
	"hongbao/internal/postgres"
)

// runCluster is `hongbao cluster up`: a local topology to try many nodes
// on one machine, all on loopback: two PostgreSQL servers (ledger shard 1
// on the second), a 3-server NATS JetStream cluster, a payment channel
// simulator and N serve processes sharing them. Ctrl-C stops it all.
func runCluster(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	if len(args) == 0 || args[0] != "up" {
		if len(args) > 0 && app.IsHelp(args[0]) {
			fmt.Fprintln(out, "usage: hongbao cluster up [--nodes 3] [--dir hongbao-cluster] [--port 8080]")
			return nil
		}
		return app.UsageErr(errors.New("usage: hongbao cluster up [--nodes 3] [--dir hongbao-cluster] [--port 8080]"))
	}
	fs := flag.NewFlagSet("cluster up", flag.ContinueOnError)
	nodes := fs.Int("nodes", 3, "serve processes")
	dir := fs.String("dir", "hongbao-cluster", "folder of the databases, NATS stores, node folders and logs")
	port := fs.Int("port", 8080, "API port of the first node (the others follow)")
	sets := fs.Int("packet-sets", 3, "packet sets, spread over the nodes")
	if err := fs.Parse(args[1:]); err != nil {
		return app.UsageErr(err)
	}
	if *nodes < 1 || *nodes > 9 || *sets < 1 || *sets > 64 {
		return app.UsageErr(errors.New("--nodes 1..9 and --packet-sets 1..64"))
	}
	base, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return err
	}
	_ = os.Chmod(base, 0o755) // the PostgreSQL servers may run as the postgres user
	self, err := os.Executable()
	if err != nil {
		return err
	}

	// Two PostgreSQL servers.
	var pgs []*postgres.Cluster
	defer func() {
		for _, c := range pgs {
			_ = c.Stop()
		}
	}()
	for i := range 2 {
		c, err := postgres.StartCluster(ctx, postgres.ClusterOptions{Dir: filepath.Join(base, fmt.Sprint("pg-", i)), Durable: true, MaxConnections: 400, Logger: log})
		if err != nil {
			return err
		}
		pgs = append(pgs, c)
	}
	// A 3-server NATS JetStream cluster.
	urls, stopNATS, err := natsCluster(base)
	if err != nil {
		return err
	}
	defer stopNATS()

	token, channelSecret := secret(), secret()
	env := filepath.Join(base, "cluster.env")
	if err := os.WriteFile(env, fmt.Appendf(nil, "export HONGBAO_TOKEN_SECRET=%s\nexport HONGBAO_URL=http://127.0.0.1:%d\n", token, *port), 0o600); err != nil {
		return err
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}()
	start := func(name string, extra []string, args ...string) (*exec.Cmd, error) {
		logf, err := os.OpenFile(filepath.Join(base, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(self, args...)
		cmd.Env = append(os.Environ(), extra...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			return nil, err
		}
		procs = append(procs, cmd)
		return cmd, nil
	}
	simAddr := fmt.Sprintf("127.0.0.1:%d", *port+100)
	if _, err := start("channel-sim", []string{"HONGBAO_CHANNEL_SECRET=" + channelSecret}, "channel-sim", "--addr", simAddr); err != nil {
		return err
	}
	dbURL := strings.Replace(pgs[0].URL("HBDBNAME"), "HBDBNAME", "{db}", 1)
	dbURLs := "hongbao_ledger_1=" + pgs[1].URL("hongbao_ledger_1")
	for i := range *nodes {
		addr := fmt.Sprintf("127.0.0.1:%d", *port+i)
		if _, err := start(fmt.Sprint("node-", i), []string{"HONGBAO_TOKEN_SECRET=" + token, "HONGBAO_CHANNEL_SECRET=" + channelSecret,
			"HONGBAO_DATABASE_URL=" + dbURL, "HONGBAO_DATABASE_URLS=" + dbURLs},
			"serve", "--node-id", fmt.Sprint("node-", i), "--addr", addr, "--public-url", "http://"+addr,
			"--data-dir", filepath.Join(base, fmt.Sprint("node-", i)), "--packet-sets", fmt.Sprint(*sets),
			"--nats-url", strings.Join(urls, ","), "--channel-url", "http://"+simAddr, "--log-format", "json"); err != nil {
			return err
		}
	}
	for i := range *nodes {
		if err := waitNodeReady(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", *port+i), 90*time.Second); err != nil {
			return fmt.Errorf("node-%d: %w (see %s)", i, err, filepath.Join(base, fmt.Sprintf("node-%d.log", i)))
		}
	}
	fmt.Fprintf(out, "hongbao cluster: %d nodes on http://127.0.0.1:%d..%d (any node takes any request; GET /v1/admin/nodes shows who owns which set)\n",
		*nodes, *port, *port+*nodes-1)
	fmt.Fprintf(out, "  PostgreSQL on 127.0.0.1:%d and :%d (ledger shard 1), NATS JetStream %s, channel simulator http://%s\n",
		pgs[0].Port(), pgs[1].Port(), strings.Join(urls, ","), simAddr)
	fmt.Fprintf(out, "  logs in %s; `. %s` sets the token secret and URL for the client commands; Ctrl-C stops everything\n", base, env)
	<-ctx.Done()
	fmt.Fprintln(out, "stopping the nodes, the channel simulator, NATS and PostgreSQL")
	return nil
}

func secret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// natsCluster runs three JetStream servers routed to each other on loopback.
func natsCluster(base string) ([]string, func(), error) {
	free := func() (int, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	var routes, urls []string
	var ports []int
	for range 3 {
		p, err := free()
		if err != nil {
			return nil, nil, err
		}
		ports = append(ports, p)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var servers []*server.Server
	stop := func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	for i := range 3 {
		s, err := server.NewServer(&server.Options{ServerName: fmt.Sprint("nats-", i), Host: "127.0.0.1", Port: -1, JetStream: true, NoSigs: true, NoLog: true,
			StoreDir: filepath.Join(base, fmt.Sprint("nats-", i)), Cluster: server.ClusterOpts{Name: "hongbao", Host: "127.0.0.1", Port: ports[i]},
			Routes: server.RoutesFromStr(strings.Join(routes, ","))})
		if err != nil {
			stop()
			return nil, nil, err
		}
		s.Start()
		servers = append(servers, s)
		if !s.ReadyForConnections(10 * time.Second) {
			stop()
			return nil, nil, errors.New("NATS did not start")
		}
		urls = append(urls, s.ClientURL())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return urls, stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, errors.New("the NATS cluster elected no JetStream leader")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitNodeReady(ctx context.Context, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	return errors.New("not ready in time")
}
