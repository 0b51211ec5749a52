package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"hongbao/internal/app"
	"hongbao/internal/client"
	"hongbao/internal/group"
	"hongbao/internal/httpapi"
	"hongbao/internal/money"
	"hongbao/internal/packet"
)

// FestivalReport is what `hongbao bench spring-festival` measured.
type FestivalReport struct {
	URL            string       `json:"url"`
	Users          int          `json:"users"`
	Groups         int          `json:"groups"`
	Sends          Result       `json:"sends"`
	Grabs          Result       `json:"grabs"`
	CreditP50ms    float64      `json:"grab_to_credited_p50_ms"`
	CreditP99ms    float64      `json:"grab_to_credited_p99_ms"`
	CreditSamples  int          `json:"grab_to_credited_samples"`
	Packets        int          `json:"packets"`
	Claims         int          `json:"claims"`
	Deposited      money.Amount `json:"deposited"`
	Wallets        money.Amount `json:"wallets"`
	Escrow         money.Amount `json:"escrow"`
	Reconciled     bool         `json:"reconciled"`
	Internal       []string     `json:"internal_violations,omitempty"`
	AllCredited    bool         `json:"all_credited"`
	SecondsToDrain float64      `json:"seconds_until_all_credited"`
	// Forwarded are the grabs the nodes sent on to their set's owner
	// (scraped from each node's metrics; several --url nodes).
	Forwarded int64 `json:"grabs_forwarded"`
	// Baseline is the same clients reading their wallets (GET /v1/wallet,
	// the cheapest authenticated call) for as long, right after: the API's
	// own ceiling here; Ratio is sends and grabs a second against it.
	Baseline Result `json:"baseline_wallet_reads"`
	// Refused are grabs answered sold out, busy or not allowed (not
	// counted as grabs).
	Refused int64   `json:"grabs_refused"`
	Ratio   float64 `json:"ratio"`
}

func benchFestival(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("bench spring-festival", flag.ContinueOnError)
	var cfg app.Config
	cfg.Bind(fs, "")
	url := fs.String("url", app.Env("HONGBAO_URL", ""), "a running server (empty: start one in this process)")
	secret := app.SecretString(fs, "token-secret", "HONGBAO_TOKEN_SECRET", "the running server's token secret (with --url)")
	users := fs.Int("users", 2000, "users (fresh ids above 10,000,000 unless --first-user)")
	firstUser := fs.Int64("first-user", 10_000_000, "first user id")
	groups := fs.Int("groups", 20, "groups the users are spread over")
	workers := fs.Int("workers", 256, "concurrent clients")
	hotEvery := fs.Int("hot-every", 50, "one send in this many is a hot packet of thousands of shares to everyone (0: none)")
	d := fs.Duration("duration", 10*time.Second, "length of the run")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	progress := out
	if *asJSON {
		progress = io.Discard
	}
	var sys *app.Node
	if *url == "" {
		var stopNode func()
		var err error
		sys, stopNode, err = benchNode(ctx, cfg, log, app.NodeOptions{LedgerShards: 2, PacketSets: 2,
			Grace: 5 * time.Second, Every: 200 * time.Millisecond})
		if err != nil {
			return err
		}
		defer stopNode()
		local, key, stop, err := app.LocalAPI(sys, log)
		if err != nil {
			return err
		}
		defer stop()
		*url, *secret = local, string(key)
	}
	if len(*secret) < httpapi.MinSecret {
		return errors.New("--url needs the server's --token-secret (HONGBAO_TOKEN_SECRET) to act as many users")
	}
	rep := FestivalReport{URL: *url, Users: *users, Groups: *groups}
	forwardedBefore := scrapeForwarded(ctx, strings.Split(*url, ","))
	fmt.Fprintf(progress, "spring festival: %d users in %d groups, %d clients, %s, against %s\n", *users, *groups, *workers, *d, *url)
	b := client.NewUsers(*url, []byte(*secret), *workers)

	// Everyone funded; groups of consecutive users, each joined.
	const funding = money.Amount(1000_00)
	ids := make([]int64, *users)
	for i := range ids {
		ids[i] = *firstUser + int64(i)
	}
	run := func(n int, f func(i int) error) error { return Each(n, *workers, f) }
	if err := run(*users, func(i int) error {
		_, err := b.Call(ctx, "POST", "/v1/admin/deposits", 0, fmt.Sprint("festival-fund-", ids[i]), map[string]any{"user": ids[i], "amount": funding}, nil)
		return err
	}); err != nil {
		return err
	}
	rep.Deposited = funding * money.Amount(*users)
	per := *users / *groups
	gs := make([]group.Group, *groups)
	if err := run(*groups, func(g int) error {
		_, err := b.Call(ctx, "POST", "/v1/groups", ids[g*per], fmt.Sprint("festival-", g), map[string]any{"capacity": per, "fee": "0"}, &gs[g])
		return err
	}); err != nil {
		return err
	}
	if err := run(*groups*per, func(i int) error {
		g := i / per
		if i%per == 0 {
			return nil // the owner
		}
		_, err := b.Call(ctx, "POST", fmt.Sprintf("/v1/groups/%d/join", gs[g].ID), ids[i], "join", nil, nil)
		return err
	}); err != nil {
		return err
	}
	// And one hall everybody is in, for the few hot packets.
	var hall group.Group
	if *hotEvery > 0 {
		if _, err := b.Call(ctx, "POST", "/v1/groups", ids[0], "festival-hall", map[string]any{"capacity": *users, "fee": "0"}, &hall); err != nil {
			return err
		}
		if err := run(*users-1, func(i int) error {
			_, err := b.Call(ctx, "POST", fmt.Sprintf("/v1/groups/%d/join", hall.ID), ids[i+1], "join-hall", nil, nil)
			return err
		}); err != nil {
			return err
		}
	}
	fmt.Fprintf(progress, "  set up: %d funded users, %d groups of %d, and a hall of everyone\n", *users, *groups, per)

	// The festival: a quarter of the clients send packets to their groups,
	// the rest grab the newest packets as members of those groups.
	type live struct {
		id    int64
		group int // -1: the hall
	}
	var mu sync.Mutex
	var recent []live
	var all []int64
	var creditLat []time.Duration
	var tracking sync.WaitGroup
	var sampled, refused atomic.Int64
	senders := max(1, *workers/4)
	var sends, grabs Result
	var wg sync.WaitGroup
	wg.Go(func() {
		sends = Run(ctx, senders, *d, func(ctx context.Context, w, i int) (int, error) {
			r := rand.New(rand.NewPCG(uint64(w), uint64(i)))
			g := r.IntN(*groups)
			sender := ids[g*per+r.IntN(per)]
			// Mostly 5 to 50 shares (at most the group), 0.10 to 2.00 a
			// share; now and then a hot one of thousands to the hall.
			to, shares := gs[g].ID, min(5+r.IntN(46), per-1)
			amount := money.Amount(shares) * money.Amount(10+r.IntN(191))
			if *hotEvery > 0 && r.IntN(*hotEvery) == 0 {
				g, to, shares = -1, hall.ID, min(1000+r.IntN(2001), *users-1)
				amount = money.Amount(shares) * money.Amount(1+r.IntN(10)) // a fen to 0.10 a share
			}
			var p packet.Packet
			_, err := b.Call(ctx, "POST", "/v1/packets", sender, fmt.Sprintf("festival-%d-%d", w, i),
				map[string]any{"kind": "lucky", "group": to, "amount": amount, "shares": shares, "greeting": "春节快乐"}, &p)
			if err != nil {
				return 0, err
			}
			mu.Lock()
			recent = append(recent, live{p.ID, g})
			if len(recent) > 200 {
				recent = recent[len(recent)-200:]
			}
			all = append(all, p.ID)
			mu.Unlock()
			return 1, nil
		})
	})
	wg.Go(func() {
		grabs = Run(ctx, *workers-senders, *d, func(ctx context.Context, w, i int) (int, error) {
			mu.Lock()
			if len(recent) == 0 {
				mu.Unlock()
				time.Sleep(time.Millisecond)
				return 0, nil
			}
			r := rand.New(rand.NewPCG(uint64(w), uint64(i)))
			pk := recent[r.IntN(len(recent))]
			mu.Unlock()
			user := ids[r.IntN(len(ids))]
			if pk.group >= 0 {
				user = ids[pk.group*per+r.IntN(per)]
			}
			var g struct {
				Claim packet.Claim `json:"claim"`
			}
			status, err := b.Call(ctx, "POST", fmt.Sprintf("/v1/packets/%d/grab", pk.id), user, "grab", nil, &g)
			if status == 409 || status == 429 || status == 403 || status == 404 {
				// Sold out, busy, not allowed: part of the game, not a grab.
				// A packet sold out leaves the list, so that the clients go
				// where there is something left instead of asking again.
				refused.Add(1)
				if status == 409 {
					mu.Lock()
					if i := slices.Index(recent, pk); i >= 0 {
						recent = slices.Delete(recent, i, i+1)
					}
					mu.Unlock()
				}
				return 0, nil
			}
			if err != nil {
				return 0, err
			}
			if g.Claim.Duplicate {
				return 0, nil // this member's share of it already: not a new grab
			}
			if !g.Claim.Duplicate && sampled.Add(1)%100 == 0 { // sample grab-to-credited latency, lightly
				got := time.Now()
				tracking.Go(func() {
					if lat, ok := creditedAfter(context.WithoutCancel(ctx), b, pk.id, g.Claim.ID, got); ok {
						mu.Lock()
						creditLat = append(creditLat, lat)
						mu.Unlock()
					}
				})
			}
			return 1, nil
		})
	})
	wg.Wait()
	tracking.Wait()
	rep.Sends, rep.Grabs = sends, grabs
	rep.Refused = refused.Load()
	slices.Sort(creditLat)
	rep.CreditSamples = len(creditLat)
	if n := len(creditLat); n > 0 {
		rep.CreditP50ms = float64(creditLat[n/2].Microseconds()) / 1000
		rep.CreditP99ms = float64(creditLat[(n-1)*99/100].Microseconds()) / 1000
	}
	fmt.Fprintf(progress, "  %-34s %8.0f/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", "packets sent (TCC)", sends.PerSec, sends.P50ms, sends.P99ms, sends.Errors)
	fmt.Fprintf(progress, "  %-34s %8.0f/s  p50 %6.2f ms  p99 %6.2f ms  errors %d  (%d refused: sold out, busy)\n", "grabs", grabs.PerSec, grabs.P50ms, grabs.P99ms, grabs.Errors, rep.Refused)
	fmt.Fprintf(progress, "  %-34s p50 %6.0f ms  p99 %6.0f ms  (%d samples)\n", "grab to credited", rep.CreditP50ms, rep.CreditP99ms, rep.CreditSamples)
	if nodes := strings.Split(*url, ","); len(nodes) > 1 {
		rep.Forwarded = scrapeForwarded(ctx, nodes) - forwardedBefore
		fmt.Fprintf(progress, "  %-34s %d of %d (%.0f%%) across %d nodes\n", "grabs forwarded to the owner", rep.Forwarded, grabs.Ops,
			100*float64(rep.Forwarded)/max(float64(grabs.Ops), 1), len(nodes))
	}

	// The baseline: the same clients, the cheapest authenticated call.
	rep.Baseline = Run(ctx, *workers, *d, func(ctx context.Context, w, i int) (int, error) {
		r := rand.New(rand.NewPCG(uint64(w), uint64(i)))
		_, err := b.Call(ctx, "GET", "/v1/wallet", ids[r.IntN(len(ids))], "", nil, nil)
		return 1, err
	})
	rep.Ratio = (sends.PerSec + grabs.PerSec) / max(rep.Baseline.PerSec, 1)
	fmt.Fprintf(progress, "  %-34s %8.0f/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", "baseline: wallet reads, same clients", rep.Baseline.PerSec, rep.Baseline.P50ms, rep.Baseline.P99ms, rep.Baseline.Errors)
	fmt.Fprintf(progress, "  %-34s %8.2fx\n", "sends + grabs / wallet reads", rep.Ratio)

	// Reconcile through the API: every claim credited, and the bench's
	// money all accounted for: wallets + what live packets still hold. The
	// packets come from each user's sent list: a send whose answer was cut
	// off by the end of the run still happened.
	all = all[:0]
	if err := run(*users, func(i int) error {
		cursor := ""
		for {
			var page struct {
				Packets []packet.Packet `json:"packets"`
				Next    *string         `json:"next"`
			}
			if _, err := b.Call(ctx, "GET", "/v1/packets/sent?limit=500&cursor="+cursor, ids[i], "", nil, &page); err != nil {
				return err
			}
			mu.Lock()
			for _, p := range page.Packets {
				all = append(all, p.ID)
			}
			mu.Unlock()
			if page.Next == nil {
				return nil
			}
			cursor = *page.Next
		}
	}); err != nil {
		return err
	}
	start := time.Now()
	for {
		rep.Packets, rep.Claims, rep.Escrow = len(all), 0, 0
		pending := 0
		for _, id := range all {
			var det packet.Detail
			if _, err := b.Call(ctx, "GET", fmt.Sprintf("/v1/packets/%d", id), 0, "", nil, &det); err != nil {
				return err
			}
			rep.Claims += len(det.Claims)
			if det.Packet.State == packet.StateActive { // a cancelled send never took the money
				rep.Escrow += det.Packet.RemainingAmount
			}
			for _, c := range det.Claims {
				if !c.Credited {
					pending++
				}
			}
		}
		if pending == 0 || time.Since(start) > 2*time.Minute {
			rep.AllCredited = pending == 0
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	rep.SecondsToDrain = time.Since(start).Seconds()
	rep.Wallets = 0
	for _, u := range ids {
		var w struct {
			Balance money.Amount `json:"balance"`
		}
		if _, err := b.Call(ctx, "GET", "/v1/wallet", u, "", nil, &w); err != nil {
			return err
		}
		rep.Wallets += w.Balance
	}
	rep.Reconciled = rep.AllCredited && rep.Wallets+rep.Escrow == rep.Deposited
	if sys != nil {
		v, err := sys.Ledgers.Check(ctx)
		if err != nil {
			return err
		}
		for _, set := range sys.Sets {
			pv, err := set.Check(ctx)
			if err != nil {
				return err
			}
			v = append(v, pv...)
		}
		rep.Internal = v
		rep.Reconciled = rep.Reconciled && len(v) == 0
	}
	if *asJSON {
		return json.NewEncoder(out).Encode(rep)
	}
	fmt.Fprintf(out, "%d packets, %d claims, all credited: %v (%.1f s after the run); wallets %s + escrow %s = deposits %s: %v\n",
		rep.Packets, rep.Claims, rep.AllCredited, rep.SecondsToDrain, rep.Wallets, rep.Escrow, rep.Deposited, rep.Reconciled)
	if !rep.Reconciled {
		return fmt.Errorf("money did not reconcile %v", rep.Internal)
	}
	return nil
}

// creditedAfter polls a packet until the claim shows credited, waiting
// 10 ms and then twice as long each time up to 160 ms, so that the probe
// costs the server a few reads a sample, not fifty a second.
func creditedAfter(ctx context.Context, b *client.Users, packetID, claimID int64, since time.Time) (time.Duration, bool) {
	deadline := time.Now().Add(time.Minute)
	pause := 10 * time.Millisecond
	for time.Now().Before(deadline) {
		var det packet.Detail
		if _, err := b.Call(ctx, "GET", fmt.Sprintf("/v1/packets/%d", packetID), 0, "", nil, &det); err == nil {
			for _, c := range det.Claims {
				if c.ID == claimID && c.Credited {
					return time.Since(since), true
				}
			}
		}
		time.Sleep(pause)
		pause = min(2*pause, 160*time.Millisecond)
	}
	return 0, false
}

// scrapeForwarded sums hongbao_grabs_forwarded_total over the nodes.
func scrapeForwarded(ctx context.Context, nodes []string) int64 {
	var total int64
	for _, n := range nodes {
		req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(n, "/")+"/metrics", nil)
		if err != nil {
			continue
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "hongbao_grabs_forwarded_total "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				total += int64(f)
			}
		}
		resp.Body.Close()
	}
	return total
}
