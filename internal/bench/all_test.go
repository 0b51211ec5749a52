package bench

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"hongbao/internal/hbtest"
)

func TestMain(m *testing.M) { hbtest.Main(m) }

// The report finds every run over time, draws throughput and latency for
// each, escapes what it shows, and a failed scenario says so.
func TestReport(t *testing.T) {
	run := Result{PerSec: 100, Series: []Point{{At: 0.25, PerSec: 80, P99ms: 3}, {At: 0.5, PerSec: 120, P99ms: 5}}}
	b, _ := json.Marshal(map[string]any{"ratio": 42.5, "engine": run, "baseline": run, "sound": true})
	r := AllReport{Started: time.Now(), Scenarios: []Scenario{
		{Name: "hot<packet>", Report: b},
		{Name: "broken", Error: "books <not> sound"},
	}}
	out := renderHTML(r)
	if n := strings.Count(out, "<svg"); n != 4 {
		t.Fatalf("%d charts, want 4 (two runs, throughput and latency each)", n)
	}
	for _, want := range []string{"hot&lt;packet&gt;", "ratio 42.5", "sound true", `class="err"`, "FAILED: books &lt;not&gt; sound"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out, "<packet>") || strings.Contains(out, "<not>") {
		t.Error("names not escaped")
	}
}

// Run records the run over time: a point per step, rates that add up.
func TestRunSeries(t *testing.T) {
	res := Run(t.Context(), 2, 600*time.Millisecond, func(_ context.Context, _, _ int) (int, error) {
		time.Sleep(time.Millisecond)
		return 1, nil
	})
	if len(res.Series) < 2 {
		t.Fatalf("%d points", len(res.Series))
	}
	var sum float64
	for _, p := range res.Series {
		sum += p.PerSec * SeriesStep.Seconds()
	}
	if int64(sum+0.5) != res.Ops {
		t.Fatalf("series sums to %.0f ops, the run did %d", sum, res.Ops)
	}
}
