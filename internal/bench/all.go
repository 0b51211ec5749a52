package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"hongbao/internal/app"
)

// AllReport is what `hongbao bench all` ran: each scenario's own JSON
// report, in order, with how long it took.
type AllReport struct {
	Started   time.Time  `json:"started"`
	GoVersion string     `json:"go_version"`
	CPUs      int        `json:"cpus"`
	Durable   bool       `json:"durable"`
	Scenarios []Scenario `json:"scenarios"`
}

// Scenario is one benchmark of the set.
type Scenario struct {
	Name    string          `json:"name"`
	Args    []string        `json:"args"`
	Seconds float64         `json:"seconds"`
	Error   string          `json:"error,omitempty"`
	Report  json.RawMessage `json:"report,omitempty"`
}

// allScenarios is the set, sized to run in a few minutes on two cores.
var allScenarios = []struct {
	name string
	run  func(context.Context, []string, io.Writer, *slog.Logger) error
	args []string
}{
	{"ledger", benchLedger, []string{"--duration", "3s"}},
	{"transfer", benchTransfer, []string{"--duration", "4s", "--backlog", "500"}},
	{"hot-packet", benchHotPacket, []string{"--shares", "60000", "--duration", "4s"}},
	{"spring-festival", benchFestival, []string{"--duration", "6s"}},
	{"topup", benchTopUp, []string{"--duration", "3s"}},
	{"migrate", benchMigrate, []string{"--wallets", "10000", "--before", "2s"}},
	{"partitions", benchPartitions, []string{"--claims", "300000", "--postings", "100000", "--days", "10"}},
}

func benchAll(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("bench all", flag.ContinueOnError)
	var cfg app.Config
	cfg.Bind(fs, "")
	asJSON := fs.Bool("json", false, "print the whole report as one JSON object")
	report := fs.String("report", "bench-report.html", "write a readable report (tables and charts) to this file; empty: none")
	only := fs.String("only", "", "run only these scenarios (comma-separated)")
	if err := fs.Parse(args); err != nil {
		return app.UsageErr(err)
	}
	progress := out
	if *asJSON {
		progress = io.Discard
	}
	rep := AllReport{Started: time.Now().UTC(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), Durable: cfg.Durable}
	common := []string{"--json"}
	if cfg.DatabaseURL != "" {
		common = append(common, "--database-url", cfg.DatabaseURL)
	}
	if !cfg.Durable {
		common = append(common, "--durable=false")
	}
	failed := 0
	for _, s := range allScenarios {
		if *only != "" && !strings.Contains(","+*only+",", ","+s.name+",") {
			continue
		}
		fmt.Fprintf(progress, "%-16s ", s.name)
		var buf bytes.Buffer
		t0 := time.Now()
		err := s.run(ctx, append(append([]string{}, s.args...), common...), &buf, log)
		sc := Scenario{Name: s.name, Args: s.args, Seconds: time.Since(t0).Seconds()}
		if err != nil {
			sc.Error = err.Error()
			failed++
		}
		if b := bytes.TrimSpace(buf.Bytes()); json.Valid(b) {
			sc.Report = b
		}
		rep.Scenarios = append(rep.Scenarios, sc)
		fmt.Fprintf(progress, "%5.0f s  %s\n", sc.Seconds, headline(sc))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if *report != "" {
		if err := os.WriteFile(*report, []byte(renderHTML(rep)), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(progress, "report: %s\n", *report)
	}
	if *asJSON {
		if err := json.NewEncoder(out).Encode(rep); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d scenarios failed", failed, len(rep.Scenarios))
	}
	return nil
}

// headline is a scenario's figures in one line: every number at the top of
// its report whose name says ratio or per second, and the verdicts.
func headline(s Scenario) string {
	if s.Error != "" {
		return "FAILED: " + s.Error
	}
	var top map[string]any
	if json.Unmarshal(s.Report, &top) != nil {
		return ""
	}
	return strings.Join(figures("", top), ", ")
}

// figures are the ratios, rates, durations and verdicts of a report
// object, and of the objects in its lists (a run per size, a plan per
// statement), prefixed by where they are.
func figures(prefix string, m map[string]any) []string {
	var parts []string
	for _, k := range sortedNames(m) {
		switch v := m[k].(type) {
		case float64:
			if strings.Contains(k, "ratio") || strings.Contains(k, "per_sec") || strings.Contains(k, "seconds") ||
				strings.Contains(k, "over_before") || k == "wallets" || k == "ms" {
				parts = append(parts, fmt.Sprintf("%s%s %.4g", prefix, k, v))
			}
		case bool:
			parts = append(parts, fmt.Sprintf("%s%s %v", prefix, k, v))
		case []any:
			for i, e := range v {
				if o, ok := e.(map[string]any); ok && i < 12 {
					parts = append(parts, figures(fmt.Sprintf("%s%s[%d].", prefix, k, i), o)...)
				}
			}
		}
	}
	return parts
}

func sortedNames(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// series finds every run over time in a report (a "series" list of
// points), named by where it is.
func series(path string, v any, out map[string][]Point) {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range sortedNames(x) {
			if k == "series" {
				b, _ := json.Marshal(x[k])
				var ps []Point
				if json.Unmarshal(b, &ps) == nil && len(ps) > 1 {
					out[path] = ps
				}
				continue
			}
			series(strings.TrimPrefix(path+"."+k, "."), x[k], out)
		}
	case []any:
		for i, e := range x {
			series(fmt.Sprintf("%s[%d]", path, i), e, out)
		}
	}
}

// renderHTML is the report a person reads: per scenario its headline, an
// SVG chart of each run's throughput and p99 latency over time, and the
// whole JSON folded away.
func renderHTML(r AllReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<!doctype html><html><head><meta charset="utf-8"><title>Hongbao benchmarks %s</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}h2{margin-top:2em}td,th{padding:2px 10px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}svg{background:#fafafa;border:1px solid #ddd;margin:4px}.err{color:#b00}</style></head><body>
<h1>Hongbao benchmarks</h1><p>%s UTC, %s, %d CPUs, durable %v. Figures are from one run on one machine: compare ratios, not absolutes.</p>
<table><tr><th>scenario</th><th>seconds</th><th>figures</th></tr>`,
		r.Started.Format(time.DateTime), r.Started.Format(time.DateTime), r.GoVersion, r.CPUs, r.Durable)
	for _, s := range r.Scenarios {
		cls := ""
		if s.Error != "" {
			cls = ` class="err"`
		}
		fmt.Fprintf(&b, `<tr%s><td>%s</td><td class="n">%.0f</td><td>%s</td></tr>`, cls, html.EscapeString(s.Name), s.Seconds, html.EscapeString(headline(s)))
	}
	b.WriteString(`</table>`)
	for _, s := range r.Scenarios {
		fmt.Fprintf(&b, `<h2>%s</h2><p>hongbao bench %s %s</p>`, html.EscapeString(s.Name), html.EscapeString(s.Name), html.EscapeString(strings.Join(s.Args, " ")))
		var v any
		_ = json.Unmarshal(s.Report, &v)
		runs := map[string][]Point{}
		series("", v, runs)
		names := make([]string, 0, len(runs))
		for k := range runs {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			b.WriteString(chart(k+": throughput /s", runs[k], func(p Point) float64 { return p.PerSec }))
			b.WriteString(chart(k+": p99 latency ms", runs[k], func(p Point) float64 { return p.P99ms }))
		}
		pretty, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(&b, `<details><summary>report</summary><pre>%s</pre></details>`, html.EscapeString(string(pretty)))
	}
	b.WriteString(`</body></html>`)
	return b.String()
}

// chart draws one line over time as a small SVG with its axis maxima.
func chart(title string, ps []Point, y func(Point) float64) string {
	const w, h, pad = 520.0, 160.0, 34.0
	maxT, maxY := ps[len(ps)-1].At, 0.0
	for _, p := range ps {
		maxY = max(maxY, y(p))
	}
	if maxY == 0 {
		maxY = 1
	}
	var pts []string
	for _, p := range ps {
		x := pad + (w-2*pad)*p.At/maxT
		yy := h - pad - (h-2*pad)*y(p)/maxY
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, yy))
	}
	return fmt.Sprintf(`<svg width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f"><text x="%.0f" y="16" font-size="12">%s</text>`+
		`<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/><line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`+
		`<text x="2" y="%.0f" font-size="10">%.4g</text><text x="%.0f" y="%.0f" font-size="10">%.1f s</text>`+
		`<polyline fill="none" stroke="#c0392b" stroke-width="1.5" points="%s"/></svg>`,
		w, h, w, h, pad, html.EscapeString(title),
		pad, h-pad, w-pad, h-pad, pad, pad, pad, h-pad,
		pad+4, maxY, w-pad-30, h-pad+14, maxT, strings.Join(pts, " "))
}
