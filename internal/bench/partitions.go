package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/app"
	"hongbao/internal/days"
	"hongbao/internal/ledger"
	"hongbao/internal/packet"
	"hongbao/internal/shard"
)

// PartitionsReport is what `hongbao bench partitions` saw: the plans of
// the statements that matter on a realistic volume, with the partitions
// each one touched.
type PartitionsReport struct {
	Days     int         `json:"days"`
	Packets  int64       `json:"packets"`
	Claims   int64       `json:"claims"`
	Postings int64       `json:"postings"`
	LoadSecs float64     `json:"load_seconds"`
	Plans    []PlanCheck `json:"plans"`
	// PruningRatio is the time of a packet read by id alone (every day's
	// partition) over by id and its day (one partition), from this run.
	PruningRatio float64 `json:"pruning_ratio"`
}

// PlanCheck is one statement's plan: the partitions it read, how many the
// planner or executor pruned, and how long it took.
type PlanCheck struct {
	Name       string   `json:"name"`
	HotPath    bool     `json:"hot_path"`
	Partitions []string `json:"partitions"`
	Removed    int      `json:"subplans_removed"`
	Nodes      []string `json:"nodes"`
	Ms         float64  `json:"ms"`
}

func benchPartitions(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("bench partitions", flag.ContinueOnError)
	var cfg app.Config
	cfg.Bind(fs, "")
	claims := fs.Int64("claims", 10_000_000, "claims spread over the days")
	perPacket := fs.Int("claims-per-packet", 100, "claims of each packet")
	postings := fs.Int64("postings", 3_000_000, "journal postings spread over the days")
	nDays := fs.Int("days", 30, "days of data, ending today")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	if *perPacket < 2 || *perPacket > 1000 || *nDays < 2 || *nDays > 366 || *claims < int64(*perPacket) || *postings < 1 {
		return app.UsageErr(fmt.Errorf("want --claims-per-packet 2..1000, --days 2..366, --claims >= claims-per-packet, --postings >= 1"))
	}
	progress := out
	if *asJSON {
		progress = io.Discard
	}
	dbs, closeAll, err := benchDatabases(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeAll()
	pdb, err := dbs.Open(ctx, "bench-partitions-packets", 8, packet.Migrations()...)
	if err != nil {
		return err
	}
	ldb, err := dbs.Open(ctx, "bench-partitions-ledger", 8, ledger.Migrations()...)
	if err != nil {
		return err
	}
	if _, err := ledger.New(ctx, ldb, ledger.Options{}); err != nil {
		return err
	}
	rep := PartitionsReport{Days: *nDays, Packets: *claims / int64(*perPacket), Postings: *postings}
	rep.Claims = rep.Packets * int64(*perPacket)
	today := days.Of(time.Now())
	first := today.AddDate(0, 0, -(*nDays - 1))
	fmt.Fprintf(progress, "partitions: %d packets with %d claims each (%d claims) and %d postings over %d days to %s, durable=%v\n",
		rep.Packets, *perPacket, rep.Claims, rep.Postings, *nDays, today.Format(time.DateOnly), cfg.Durable)
	start := time.Now()
	if err := days.Ensure(ctx, pdb, first, today.AddDate(0, 0, days.Ahead), "packets", "claims"); err != nil {
		return err
	}
	if err := days.Ensure(ctx, ldb, first, today.AddDate(0, 0, days.Ahead), "postings"); err != nil {
		return err
	}
	ids, slotNos := make([]int64, 100_000), make([]int32, 100_000)
	for i := range ids {
		ids[i] = int64(i + 1)
		slotNos[i] = int32(shard.SlotOf(ids[i]))
	}
	if _, err := ldb.Exec(ctx, `INSERT INTO accounts (id, kind, name, slot) SELECT u, 'user', '', s FROM unnest($1::bigint[], $2::int[]) x(u, s)`, ids, slotNos); err != nil {
		return err
	}
	// Day by day: packets finished and credited, with their claims; the
	// last packet of today is still open (the hot one).
	perDay := rep.Packets / int64(*nDays)
	for d := range *nDays {
		day := first.AddDate(0, 0, d)
		lo, n := int64(d)*perDay+1, perDay
		if d == *nDays-1 {
			n = rep.Packets - int64(d)*perDay
		}
		// Spread over the day (today: up to now).
		span := 24 * time.Hour
		if day.Equal(today) {
			span = max(time.Since(today), time.Minute)
		}
		if _, err := pdb.Exec(ctx, `INSERT INTO packets (id, kind, sender, group_id, amount, shares, greeting, state,
				remaining_amount, remaining_count, expires_at, created_at, closed_at, claimed, credited_seq)
			SELECT g, 'lucky', 1 + g % 100000, 1 + g % 5000, $3::int * 100, $3, '', 'finished', 0, 0, t + interval '1 day', t, t + interval '1 minute', $3, $3
			FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) g,
			     LATERAL (SELECT $4::timestamptz + ((g - $1)::float8 / $2) * $5::interval AS t) x`, lo, n, *perPacket, day, span); err != nil {
			return fmt.Errorf("load packets of %s: %w", day.Format(time.DateOnly), err)
		}
		if _, err := pdb.Exec(ctx, `INSERT INTO claims (id, packet_id, user_id, seq, amount, created_at, packet_at)
			SELECT p.id * 1000 + s, p.id, 1 + (p.id * 7919 + s * 104729) % 1000000, s, 100,
			       p.created_at + s * interval '10 ms', p.created_at
			FROM packets p, generate_series(1, $3) s WHERE p.id BETWEEN $1 AND $1 + $2 - 1`, lo, n, *perPacket); err != nil {
			return fmt.Errorf("load claims of %s: %w", day.Format(time.DateOnly), err)
		}
		pd := *postings / int64(*nDays)
		if _, err := ldb.Exec(ctx, `INSERT INTO postings (kind, ref, debit_account, credit_account, amount, debit_balance, credit_balance, created_at)
			SELECT 'transfer', 'bench:' || g, 1 + g % 100000, 1 + (g * 31 + 7) % 100000, 1, 0, 0,
			       $2::timestamptz + (g::float8 / $1) * $3::interval
			FROM generate_series(1, $1::bigint) g`, pd, day, span); err != nil {
			return fmt.Errorf("load postings of %s: %w", day.Format(time.DateOnly), err)
		}
		fmt.Fprintf(progress, "  loaded %s (%s)\n", day.Format(time.DateOnly), time.Since(start).Round(time.Second))
	}
	hot := rep.Packets
	if _, err := pdb.Exec(ctx, `UPDATE packets SET state = 'active', remaining_count = 1, remaining_amount = 100, closed_at = NULL,
		expires_at = now() + interval '1 day', claimed = shares - 1, credited_seq = shares - 2 WHERE id = $1`, hot); err != nil {
		return err
	}
	if _, err := pdb.Exec(ctx, `DELETE FROM claims WHERE packet_id = $1 AND seq = $2`, hot, *perPacket); err != nil {
		return err
	}
	for _, db := range []*pgxpool.Pool{pdb, ldb} {
		if _, err := db.Exec(ctx, `ANALYZE`); err != nil {
			return err
		}
	}
	rep.LoadSecs = time.Since(start).Seconds()
	fmt.Fprintf(progress, "  loaded and analysed in %.0f s\n", rep.LoadSecs)

	var hotAt time.Time
	if err := pdb.QueryRow(ctx, `SELECT created_at FROM packets WHERE id = $1`, hot).Scan(&hotAt); err != nil {
		return err
	}
	old := hot / 2
	var oldAt time.Time
	if err := pdb.QueryRow(ctx, `SELECT created_at FROM packets WHERE id = $1`, old).Scan(&oldAt); err != nil {
		return err
	}
	lo, hi := days.Of(hotAt), days.Of(hotAt).AddDate(0, 0, 1)
	checks := []struct {
		name string
		hot  bool
		db   *pgxpool.Pool
		sql  string
		args []any
	}{
		{"grab commit: move the packet's remainder (fenced)", true, pdb, `UPDATE packets p SET remaining_count = v.count, remaining_amount = v.remain, claimed = p.shares - v.count,
				state = CASE WHEN v.count = 0 THEN 'finished' ELSE p.state END, closed_at = CASE WHEN v.count = 0 THEN $5 ELSE p.closed_at END
			FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[]) AS v(id, epoch, count, remain)
			WHERE p.id = v.id AND p.owner_epoch = v.epoch AND p.state = 'active' AND p.created_at >= $6 AND p.created_at < $7
			RETURNING p.id, p.state = 'finished'`, []any{[]int64{hot}, []int64{0}, []int32{0}, []int64{0}, time.Now(), lo, hi}},
		{"grab commit: write the claim", true, pdb, `INSERT INTO claims (id, packet_id, user_id, seq, amount, created_at, packet_at)
			VALUES ($1, $2, $3, $4, 100, now(), $5)`, []any{hot*1000 + int64(*perPacket), hot, int64(2_000_001), *perPacket, hotAt}},
		{"grab commit: best luck of the packet just finished", true, pdb, `SELECT DISTINCT ON (packet_id) packet_id, user_id, amount FROM claims
			WHERE packet_id = ANY($1) AND packet_at >= $2 AND packet_at < $3 ORDER BY packet_id, amount DESC, seq`, []any{[]int64{hot}, lo, hi}},
		{"credit: the journal posting", true, ldb, `INSERT INTO postings (kind, ref, debit_account, credit_account, amount, debit_balance, credit_balance)
			VALUES ('credit', 'bench:explain', 5, 6, 1, 0, 0)`, nil},
		{"load a packet into the engine: its claims", false, pdb, `SELECT id, user_id, seq, amount, created_at,
				seq <= $3 AND NOT EXISTS (SELECT 1 FROM claims_owed o WHERE o.claim_id = claims.id)
			FROM claims WHERE packet_id = $1 AND packet_at = $2`, []any{hot, hotAt, *perPacket - 2}},
		{"packet detail: claims of a packet 15 days old", false, pdb, `SELECT id, packet_id, user_id, seq, amount, created_at,
				seq <= (SELECT credited_seq FROM packets WHERE id = $1 AND created_at = $2)
					AND NOT EXISTS (SELECT 1 FROM claims_owed o WHERE o.claim_id = claims.id)
			FROM claims WHERE packet_id = $1 AND packet_at = $2 ORDER BY seq`, []any{old, oldAt}},
		{"packet by id (no day known)", false, pdb, `SELECT id, state FROM packets WHERE id = $1`, []any{old}},
		{"packet by id and day", false, pdb, `SELECT id, state FROM packets WHERE id = $1 AND created_at = $2`, []any{old, oldAt}},
		{"received list of a user, first page", false, pdb, `SELECT id, packet_id, user_id, seq, amount, created_at,
				seq <= (SELECT credited_seq FROM packets p WHERE p.id = c.packet_id AND p.created_at = c.packet_at)
					AND NOT EXISTS (SELECT 1 FROM claims_owed o WHERE o.claim_id = c.id)
			FROM claims c WHERE user_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) ORDER BY created_at DESC, id DESC LIMIT $4`,
			[]any{int64(4242), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), int64(0), 50}},
		{"reconciler: claims not yet seen credited", false, pdb, `SELECT c.id, false, c.user_id, c.amount, p.id, c.seq, p.created_at, p.credited_seq
			FROM (SELECT id, created_at, credited_seq FROM packets WHERE credited_seq < claimed ORDER BY created_at LIMIT 1000) p,
			LATERAL (SELECT id, user_id, amount, seq FROM claims c WHERE c.packet_id = p.id AND c.packet_at = p.created_at
				AND c.seq > p.credited_seq AND c.created_at <= $1 ORDER BY c.seq LIMIT 10000) c
			LIMIT 10000`,
			[]any{time.Now().Add(-time.Minute)}},
		{"reconciler: move packets' credited watermarks (by id and day)", false, pdb, `UPDATE packets p SET credited_seq = v.seq
			FROM unnest($1::bigint[], $2::timestamptz[], $3::int[]) AS v(id, day, seq)
			WHERE p.id = v.id AND p.created_at = v.day AND p.credited_seq < v.seq`,
			[]any{[]int64{hot}, []time.Time{hotAt}, []int32{int32(*perPacket - 1)}}},
		{"expiry sweep", false, pdb, `SELECT id, created_at FROM packets WHERE state = 'active' AND expires_at <= $1 ORDER BY expires_at LIMIT 1000`,
			[]any{time.Now()}},
		{"statement of a user, first page", false, ldb, `
			(SELECT id, kind, ref, amount, credit_balance, debit_account, created_at, coalesce(peer, 0) FROM postings
			  WHERE credit_account = $1 AND id < $2 ORDER BY id DESC LIMIT $3)
			UNION ALL
			(SELECT id, kind, ref, -amount, debit_balance, credit_account, created_at, coalesce(peer, 0) FROM postings
			  WHERE debit_account = $1 AND id < $2 ORDER BY id DESC LIMIT $3)
			ORDER BY id DESC LIMIT $3`, []any{int64(4242), int64(1<<63 - 1), 51}},
	}
	for _, c := range checks {
		pc, err := explain(ctx, c.db, c.sql, c.args)
		if err != nil {
			return fmt.Errorf("explain %q: %w", c.name, err)
		}
		pc.Name, pc.HotPath = c.name, c.hot
		rep.Plans = append(rep.Plans, pc)
		read := fmt.Sprintf("%2d partitions read", len(pc.Partitions))
		if pc.Nodes[0] == "ModifyTable" && len(pc.Partitions) == 0 {
			read = "row routed to its day" // an INSERT names no partition it reads
		}
		fmt.Fprintf(progress, "  %-52s %-20s %2d pruned at run time %8.3f ms  %s\n", pc.Name, read, pc.Removed, pc.Ms, strings.Join(pc.Nodes, " > "))
	}
	// The ratio, from the same run: a packet read by id alone (every day's
	// partition) against by id and day (one).
	byName := map[string]float64{}
	for _, p := range rep.Plans {
		byName[p.Name] = p.Ms
	}
	rep.PruningRatio = byName["packet by id (no day known)"] / max(byName["packet by id and day"], 0.001)
	fmt.Fprintf(progress, "  %-52s %.1fx\n", "a packet by id alone / by id and day", rep.PruningRatio)
	if *asJSON {
		return json.NewEncoder(out).Encode(rep)
	}
	for _, p := range rep.Plans {
		if p.HotPath && len(p.Partitions) > 1 {
			return fmt.Errorf("hot path %q read %d partitions: %v", p.Name, len(p.Partitions), p.Partitions)
		}
	}
	fmt.Fprintln(out, "every hot-path statement read one partition")
	return nil
}

// explain runs EXPLAIN (ANALYZE, FORMAT JSON) of a statement in a
// transaction it rolls back, and reads the plan: the partitions scanned,
// the subplans pruned at run time, the node types from the top.
func explain(ctx context.Context, db *pgxpool.Pool, sql string, args []any) (PlanCheck, error) {
	var pc PlanCheck
	tx, err := db.Begin(ctx)
	if err != nil {
		return pc, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read only in effect
	var raw []byte
	if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
		return pc, err
	}
	var doc []struct {
		Plan map[string]any `json:"Plan"`
		Exec float64        `json:"Execution Time"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc) == 0 {
		return pc, fmt.Errorf("plan: %v", err)
	}
	pc.Ms = doc[0].Exec
	parts := map[string]bool{}
	var walk func(n map[string]any, depth int)
	walk = func(n map[string]any, depth int) {
		if t, ok := n["Node Type"].(string); ok && depth < 3 && len(pc.Nodes) < 4 {
			pc.Nodes = append(pc.Nodes, t)
		}
		// A partition name ends in _YYYYMMDD; its loops are 0 when it was
		// never executed.
		if r, ok := n["Relation Name"].(string); ok && len(r) > 9 && r[len(r)-9] == '_' {
			if loops, _ := n["Actual Loops"].(float64); loops > 0 {
				parts[r] = true
			}
		}
		if removed, ok := n["Subplans Removed"].(float64); ok {
			pc.Removed += int(removed)
		}
		if kids, ok := n["Plans"].([]any); ok {
			for _, k := range kids {
				if m, ok := k.(map[string]any); ok {
					walk(m, depth+1)
				}
			}
		}
	}
	walk(doc[0].Plan, 0)
	for p := range parts {
		pc.Partitions = append(pc.Partitions, p)
	}
	sort.Strings(pc.Partitions)
	return pc, nil
}
