package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hongbao/internal/app"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/dtx"
	"hongbao/internal/group"
	"hongbao/internal/httpapi"
	"hongbao/internal/money"
	"hongbao/internal/packet"
)

// HotPacketReport is what `hongbao bench hot-packet` measured.
type HotPacketReport struct {
	Grabbers            int      `json:"grabbers"`
	BaselineClients     int      `json:"baseline_clients"`
	Shares              int      `json:"shares"`
	Engine              Result   `json:"engine"`
	Baseline            Result   `json:"baseline"`
	GrabsPerSec         float64  `json:"grabs_per_sec"`
	BaselineGrabsPerSec float64  `json:"baseline_grabs_per_sec"`
	Ratio               float64  `json:"ratio"`
	P50ms               float64  `json:"p50_ms"`
	P99ms               float64  `json:"p99_ms"`
	Oversold            bool     `json:"oversold"`
	Conserved           bool     `json:"conserved"`
	Claims              int64    `json:"claims"`
	Credited            int64    `json:"credited"`
	CreditSeconds       float64  `json:"seconds_until_all_credited"`
	Violations          []string `json:"violations"`
	CreditsPerSec       float64  `json:"credits_per_sec_during_storm"`
	CreditLagAtEnd      int64    `json:"claims_not_credited_at_storm_end"`
	// DrainSeconds is how long after the storm its last claim was
	// credited; DrainPerSec every claim of the storm over the storm and
	// that time (the rate at which the ledgers kept up).
	DrainSeconds float64 `json:"seconds_to_credit_after_storm"`
	DrainPerSec  float64 `json:"credits_per_sec"`
	// HTTP is the same storm on a third packet through the HTTP API on
	// loopback (a lean keep-alive client a grabber), and HTTPRatio its
	// rate against the engine's in process, both from this run.
	HTTP             *Result `json:"http,omitempty"`
	HTTPGrabsPerSec  float64 `json:"http_grabs_per_sec,omitempty"`
	HTTPRatio        float64 `json:"http_ratio_to_in_process,omitempty"`
	HTTPDrainSeconds float64 `json:"http_seconds_to_credit_after_storm,omitempty"`
	// CreditLag is grab answered -> claim in the grabber's wallet, for one
	// grab in probeOneIn of each storm (HTTPCreditLag: over HTTP).
	CreditLag     CreditLag  `json:"credit_lag"`
	HTTPCreditLag *CreditLag `json:"http_credit_lag,omitempty"`
	// ReconcileSeconds is how long the reconciler took, from being told
	// to look at every claim at once (grace 0, after the storms), until
	// it had seen every claim credited; ReconcilePerSec every claim over
	// that time.
	ReconcileSeconds float64 `json:"reconciler_seconds"`
	ReconcilePerSec  float64 `json:"reconciler_claims_per_sec"`
}

// probeOneIn is how many grabs of a storm there are to one watched until
// credited.
const probeOneIn = 200

// countClaimCredits counts the claims the ledger shards have applied.
func countClaimCredits(ctx context.Context, sys *app.Node) (int64, error) {
	var applied int64
	for _, l := range sys.Ledgers.Shards {
		var n int64
		if err := l.DB().QueryRow(ctx, `SELECT count(*) FROM ops WHERE key LIKE 'claim:%'`).Scan(&n); err != nil {
			return 0, err
		}
		applied += n
	}
	return applied, nil
}

func benchHotPacket(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("bench hot-packet", flag.ContinueOnError)
	var cfg app.Config
	cfg.Bind(fs, "")
	grabbers := fs.Int("grabbers", 512, "concurrent grabbers on the engine")
	clients := fs.Int("baseline-clients", 64, "concurrent clients of the plain SELECT ... FOR UPDATE baseline")
	d := fs.Duration("duration", 8*time.Second, "length of each measured run")
	shares := fs.Int("shares", 400_000, "shares of the hot packet (and members of its group)")
	creditWorkers := fs.Int("credit-workers", app.DefaultCreditWorkers, "credit batches applied at once per ledger shard")
	overHTTP := fs.Bool("http", true, "also grab a third packet through the HTTP API on loopback and compare it with the engine in process")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	progress := out
	if *asJSON {
		progress = io.Discard
	}
	limits := packet.DefaultLimits
	limits.MaxShares = *shares
	limits.MaxAmount = money.Amount(*shares) * 100
	sys, stop, err := benchNode(ctx, cfg, log, app.NodeOptions{LedgerShards: 2, PacketSets: 1, Limits: limits, CreditWorkers: *creditWorkers})
	if err != nil {
		return err
	}
	defer stop()
	rep := HotPacketReport{Grabbers: *grabbers, BaselineClients: *clients, Shares: *shares}
	fmt.Fprintf(progress, "hot packet: %d shares, %d grabbers (baseline %d clients), %s per run, durable=%v\n", *shares, *grabbers, *clients, *d, cfg.Durable)

	// A group of everyone who will grab, and a sender with the money.
	const sender, groupID = 1, 1
	if _, err := sys.Groups.Create(ctx, group.CreateRequest{ID: groupID, Owner: sender, Capacity: *shares + 1}); err != nil {
		return err
	}
	users := make([]int64, 0, 50_000)
	for u := 2; u <= *shares+1; u++ {
		users = append(users, int64(u))
		if len(users) == cap(users) || u == *shares+1 {
			if _, err := sys.Groups.AddMembers(ctx, groupID, users); err != nil {
				return err
			}
			users = users[:0]
		}
	}
	amount := money.Amount(*shares) * 10
	if _, err := sys.Ledgers.For(sender).Deposit(ctx, "bench-fund", sender, 3*amount); err != nil {
		return err
	}
	send := func(key string) (packet.Packet, error) {
		p, res, err := sys.Flows.SendPacket(ctx, key, packet.Packet{Kind: packet.Lucky, Sender: sender, Group: groupID, Amount: amount, Shares: *shares}, 0)
		if err == nil && res.Outcome != dtx.OutcomeCommitted {
			err = fmt.Errorf("send %s: %s (%s)", key, res.Outcome, res.Reason)
		}
		return p, err
	}
	hot, err := send("bench-hot")
	if err != nil {
		return err
	}
	plain, err := send("bench-plain")
	if err != nil {
		return err
	}
	packets := []packet.Packet{hot, plain}
	var viaHTTP packet.Packet
	if *overHTTP {
		if viaHTTP, err = send("bench-http"); err != nil {
			return err
		}
		packets = append(packets, viaHTTP)
	}
	set, _ := sys.Flows.Set(hot.ID)
	// Warm up: the first grab loads the packet and the group's members.
	if _, err := sys.Flows.Grab(ctx, hot.ID, 2); err != nil {
		return err
	}

	// claimsOf counts a packet's claims from its set: a grab still in
	// flight when a run ended may have committed uncounted. drainTo
	// waits until the ledgers have applied want claims in all, before the
	// next run (so that neither slows the other), and says how long.
	claimsOf := func(p packet.Packet) (n int64, err error) {
		err = set.DB().QueryRow(ctx, `SELECT count(*) FROM claims WHERE packet_id = $1 AND packet_at = $2`, p.ID, p.CreatedAt).Scan(&n)
		return n, err
	}
	drainTo := func(start time.Time, want int64) (time.Duration, error) {
		for time.Since(start) < 3*time.Minute {
			applied, err := countClaimCredits(ctx, sys)
			if err != nil || applied >= want {
				return time.Since(start), err
			}
			time.Sleep(100 * time.Millisecond) // the count scans the keys: not too often
		}
		return time.Since(start), fmt.Errorf("claims still not credited after 3 minutes")
	}

	next := atomic.Int64{}
	next.Store(2)
	probe := newCreditProbe(sys.Flows.Credited, probeOneIn)
	var appliedAtEnd int64
	var countErr error
	var stormEnd time.Time
	rep.CreditLag = probe.watch(ctx, time.Minute, func() {
		rep.Engine = Run(ctx, *grabbers, *d, func(ctx context.Context, w, i int) (int, error) {
			u := next.Add(1)
			if u > int64(*shares)+1 {
				return 0, ErrDone
			}
			c, err := sys.Flows.Grab(ctx, hot.ID, u)
			if errors.Is(err, packet.ErrSoldOut) {
				return 0, ErrDone
			}
			if err == nil && probe.take() {
				probe.add(c, time.Now())
			}
			return 1, err
		})
		// The credit drain while the storm ran: what the ledgers applied
		// by its end (the stage runs alongside the grabs).
		appliedAtEnd, countErr = countClaimCredits(ctx, sys)
		stormEnd = time.Now()
	})
	fmt.Fprintf(progress, "  %-46s %8.0f/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", "grab engine (group commit)", rep.Engine.PerSec, rep.Engine.P50ms, rep.Engine.P99ms, rep.Engine.Errors)
	if countErr != nil {
		return countErr
	}
	// Over the storm's own length: a packet sold out early ends it early.
	rep.CreditsPerSec = float64(appliedAtEnd) / rep.Engine.Elapsed.Seconds()
	hotClaims, err := claimsOf(hot)
	if err != nil {
		return err
	}
	rep.CreditLagAtEnd = hotClaims - appliedAtEnd
	fmt.Fprintf(progress, "  %-46s %8.0f/s  %d claims not yet credited when the storm ended\n", "credits applied during the storm", rep.CreditsPerSec, rep.CreditLagAtEnd)
	drain, err := drainTo(stormEnd, hotClaims)
	if err != nil {
		return err
	}
	rep.DrainSeconds = drain.Seconds()
	rep.DrainPerSec = float64(hotClaims) / (rep.Engine.Elapsed.Seconds() + rep.DrainSeconds)
	fmt.Fprintf(progress, "  %-46s %8.0f/s  the last %.1f s after the storm\n", "every claim of the storm credited", rep.DrainPerSec, rep.DrainSeconds)
	fmt.Fprintf(progress, "  %-46s p50 %6.0f ms  p99 %6.0f ms  max %6.0f ms  (%d samples)\n", "grab answered -> credited", rep.CreditLag.P50ms, rep.CreditLag.P99ms, rep.CreditLag.MaxMs, rep.CreditLag.Samples)
	relayed := hotClaims

	if *overHTTP {
		res, lag, httpEnd, err := grabOverHTTP(ctx, sys, log, viaHTTP.ID, *shares, *grabbers, *d)
		if err != nil {
			return err
		}
		rep.HTTPCreditLag = &lag
		rep.HTTP = &res
		rep.HTTPGrabsPerSec = res.PerSec
		rep.HTTPRatio = res.PerSec / max(rep.Engine.PerSec, 1)
		fmt.Fprintf(progress, "  %-46s %8.0f/s  p50 %6.2f ms  p99 %6.2f ms  errors %d  (%.2fx in process)\n", "grab over HTTP (lean client a grabber)", res.PerSec, res.P50ms, res.P99ms, res.Errors, rep.HTTPRatio)
		if res.FirstErr != "" {
			fmt.Fprintf(progress, "    first error: %s\n", res.FirstErr)
		}
		fmt.Fprintf(progress, "  %-46s p50 %6.0f ms  p99 %6.0f ms  max %6.0f ms  (%d samples)\n", "grab answered over HTTP -> credited", lag.P50ms, lag.P99ms, lag.MaxMs, lag.Samples)
		n, err := claimsOf(viaHTTP)
		if err != nil {
			return err
		}
		relayed += n
		if drain, err = drainTo(httpEnd, relayed); err != nil {
			return err
		}
		rep.HTTPDrainSeconds = drain.Seconds()
	}

	// The plain way on the same database: lock the packet row, one
	// transaction per grab.
	next.Store(1)
	rep.Baseline = Run(ctx, *clients, *d, func(ctx context.Context, w, i int) (int, error) {
		u := next.Add(1)
		r := rand.New(rand.NewPCG(uint64(w), uint64(i)))
		return 1, pgx.BeginFunc(ctx, set.DB(), func(tx pgx.Tx) error {
			var count int
			var remaining int64
			if err := tx.QueryRow(ctx, `SELECT remaining_count, remaining_amount FROM packets WHERE id = $1 FOR UPDATE`, plain.ID).Scan(&count, &remaining); err != nil {
				return err
			}
			if count == 0 {
				return ErrDone
			}
			share := remaining
			if count > 1 {
				share = 1 + r.Int64N(max(1, min(2*(remaining/int64(count)), remaining-int64(count-1))))
			}
			if _, err := tx.Exec(ctx, `UPDATE packets SET remaining_count = remaining_count - 1, remaining_amount = remaining_amount - $2, claimed = claimed + 1,
				state = CASE WHEN remaining_count = 1 THEN 'finished' ELSE state END WHERE id = $1`, plain.ID, share); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO claims (id, packet_id, user_id, seq, amount, created_at, packet_at)
				VALUES (nextval('claim_ids') * 1024 + $5, $1, $2, $3, $4, now(), $6)`, plain.ID, u, *shares-count+1, share, set.Number(), plain.CreatedAt)
			return err
		})
	})
	fmt.Fprintf(progress, "  %-46s %8.0f/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", "baseline: SELECT ... FOR UPDATE, one tx a grab", rep.Baseline.PerSec, rep.Baseline.P50ms, rep.Baseline.P99ms, rep.Baseline.Errors)
	rep.GrabsPerSec, rep.BaselineGrabsPerSec = rep.Engine.PerSec, rep.Baseline.PerSec
	rep.Ratio = rep.Engine.PerSec / max(rep.Baseline.PerSec, 1)
	rep.P50ms, rep.P99ms = rep.Engine.P50ms, rep.Engine.P99ms

	// Nothing oversold: per packet, claims within the shares, sums exact.
	for _, p := range packets {
		id := p.ID
		var n, shares int
		var amt, claimed, remaining int64
		if err := set.DB().QueryRow(ctx, `SELECT p.shares, p.amount, p.remaining_amount, count(c.id), coalesce(sum(c.amount), 0)
			FROM packets p LEFT JOIN claims c ON c.packet_id = p.id AND c.packet_at = p.created_at WHERE p.id = $1 GROUP BY p.id, p.created_at`, id).Scan(&shares, &amt, &remaining, &n, &claimed); err != nil {
			return err
		}
		if n > shares || claimed+remaining != amt {
			rep.Oversold = true
			rep.Violations = append(rep.Violations, fmt.Sprintf("packet %d: %d claims of %d shares, claimed %s + remaining %s != %s",
				id, n, shares, money.Amount(claimed), money.Amount(remaining), money.Amount(amt)))
		}
		rep.Claims += int64(n)
	}
	// Every claim credited once, then the books. The engine's claims go
	// through the relay; the baseline's were never relayed, so once the
	// engine's are applied the reconciler is told to send the rest now.
	start := time.Now()
	var graceAt time.Time
	for {
		applied, err := countClaimCredits(ctx, sys)
		if err != nil {
			return err
		}
		if applied >= relayed && graceAt.IsZero() {
			sys.SetGrace(0)
			graceAt = time.Now()
		}
		rep.Credited = applied
		if applied == rep.Claims || time.Since(start) > 3*time.Minute {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	rep.CreditSeconds = time.Since(start).Seconds()
	for !graceAt.IsZero() {
		n, _, err := set.Overdue(ctx, time.Now())
		if err != nil {
			return err
		}
		if n == 0 || time.Since(graceAt) > 3*time.Minute {
			rep.ReconcileSeconds = time.Since(graceAt).Seconds()
			rep.ReconcilePerSec = float64(rep.Claims) / rep.ReconcileSeconds
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	v, err := sys.Ledgers.Check(ctx)
	if err != nil {
		return err
	}
	pv, err := set.Check(ctx)
	if err != nil {
		return err
	}
	rep.Violations = append(append(rep.Violations, v...), pv...)
	rep.Conserved = len(rep.Violations) == 0 && rep.Credited == rep.Claims
	if *asJSON {
		return json.NewEncoder(out).Encode(rep)
	}
	fmt.Fprintf(out, "ratio engine / baseline: %.1fx\n", rep.Ratio)
	fmt.Fprintf(out, "%d claims, %d credited (%.1f s after the runs), oversold: %v, conserved: %v %v\n",
		rep.Claims, rep.Credited, rep.CreditSeconds, rep.Oversold, rep.Conserved, rep.Violations)
	fmt.Fprintf(out, "reconciler: every claim seen credited %.1f s after it was told to look (%.0f claims/s)\n", rep.ReconcileSeconds, rep.ReconcilePerSec)
	if rep.Oversold || !rep.Conserved {
		return errors.New("the hot packet did not reconcile")
	}
	return nil
}

// grabOverHTTP runs the hot-packet storm on packet id through the node's
// HTTP API on a loopback port: grabbers keep-alive connections, each
// grab a different member (users 2..shares+1) with the member's own
// token, issued before the run so that the client's signing is not
// measured. The server verifies every token (each is new to it).
func grabOverHTTP(ctx context.Context, sys *app.Node, log *slog.Logger, id int64, shares, grabbers int, d time.Duration) (res Result, lag CreditLag, end time.Time, err error) {
	url, secret, stop, err := app.LocalAPI(sys, log)
	if err != nil {
		return res, lag, end, err
	}
	defer stop()
	addr := strings.TrimPrefix(url, "http://")
	tokens := make([]string, shares+2)
	if err := Each(shares, 2, func(i int) (err error) {
		tokens[i+2], err = httpapi.IssueToken(secret, httpapi.Claims{User: int64(i + 2), Expires: time.Now().Add(time.Hour).Unix()})
		return err
	}); err != nil {
		return res, lag, end, err
	}
	path := fmt.Sprintf("/v1/packets/%d/grab", id)
	var probe *creditProbe // the warm-up is not watched
	grab := func(ctx context.Context, c *rawConn, u int64) (int, error) {
		status, body, err := c.post(ctx, path, tokens[u])
		switch {
		case err != nil:
			return 0, err
		case status == 200:
			if probe != nil && probe.take() {
				var g struct{ Claim packet.Claim }
				if err := json.Unmarshal(body, &g); err != nil {
					return 0, fmt.Errorf("grab answer %q: %w", body, err)
				}
				probe.add(g.Claim, time.Now())
			}
			return 1, nil
		case status == 409 && bytes.Contains(body, []byte(`"sold_out"`)):
			return 0, ErrDone
		}
		return 0, fmt.Errorf("grab: %d %s", status, body)
	}
	// Warm up: the first grab loads the packet and the group's members.
	warm := newRawConn(addr)
	defer warm.close()
	if _, err := grab(ctx, warm, 2); err != nil {
		return res, lag, end, err
	}
	conns := make([]*rawConn, grabbers)
	for w := range conns {
		conns[w] = newRawConn(addr)
		defer conns[w].close()
	}
	var next atomic.Int64
	next.Store(2)
	probe = newCreditProbe(sys.Flows.Credited, probeOneIn)
	lag = probe.watch(ctx, time.Minute, func() {
		res = Run(ctx, grabbers, d, func(ctx context.Context, w, i int) (int, error) {
			u := next.Add(1)
			if u > int64(shares)+1 {
				return 0, ErrDone
			}
			return grab(ctx, conns[w], u)
		})
		end = time.Now()
	})
	return res, lag, end, nil
}
