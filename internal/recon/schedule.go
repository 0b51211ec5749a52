package recon

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Schedule reconciles yesterday (UTC) once a day, as soon as after has
// passed since midnight and no report of yesterday is stored; it looks
// every `every`. Nodes take turns through an advisory lock, so one runs it.
func (r *Reconciler) Schedule(ctx context.Context, after, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UTC()
		midnight := now.Truncate(24 * time.Hour)
		if now.Sub(midnight) < after {
			continue
		}
		yesterday := midnight.AddDate(0, 0, -1)
		if _, err := r.Latest(ctx, yesterday); !errors.Is(err, ErrNoReport) {
			continue
		}
		r.scheduled(ctx, yesterday)
	}
}

func (r *Reconciler) scheduled(ctx context.Context, day time.Time) {
	conn, err := r.o.DB.Acquire(ctx)
	if err != nil {
		return
	}
	defer conn.Release()
	const lock = 0x6862_7265_636f // "hbreco"
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lock).Scan(&got); err != nil || !got {
		return
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lock)
	if _, err := r.Latest(ctx, day); !errors.Is(err, ErrNoReport) {
		return // another node ran it meanwhile
	}
	run, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	rep, err := r.Run(run, day)
	if err != nil {
		r.o.Logger.Error("scheduled reconciliation failed", "day", day.Format("2006-01-02"), "err", err)
		return
	}
	level := r.o.Logger.Info
	if !rep.Sound {
		level = r.o.Logger.Error
	}
	level("reconciliation", "day", rep.Day, "sound", rep.Sound, "differences", len(rep.Differences), "repaired", rep.Repaired, "unresolved", rep.Unresolved)
}

// Collectors are reconciliation's metrics: runs, repairs, and the last
// report's unresolved differences by kind and failed checks.
func (r *Reconciler) Collectors() []prometheus.Collector {
	return []prometheus.Collector{r.repairs, r.runs, lastReport{r}}
}

type lastReport struct{ r *Reconciler }

var (
	diffDesc   = prometheus.NewDesc("hongbao_recon_differences", "Unresolved differences of the last reconciliation run by this node, by kind (alert on any).", []string{"kind"}, nil)
	checksDesc = prometheus.NewDesc("hongbao_recon_checks_failed", "Internal checks of the books that failed in the last reconciliation run by this node (alert on any).", nil, nil)
	lastDesc   = prometheus.NewDesc("hongbao_recon_last_run_timestamp_seconds", "When this node last ran a reconciliation (0: never).", nil, nil)
)

func (c lastReport) Describe(ch chan<- *prometheus.Desc) {
	ch <- diffDesc
	ch <- checksDesc
	ch <- lastDesc
}

func (c lastReport) Collect(ch chan<- prometheus.Metric) {
	c.r.last.Lock()
	rep := c.r.last.r
	c.r.last.Unlock()
	byKind := map[string]float64{}
	for _, k := range Kinds {
		byKind[k] = 0
	}
	var failed, at float64
	if rep != nil {
		for _, d := range rep.Differences {
			if !d.Repaired && !d.Resolved {
				byKind[d.Kind]++
			}
		}
		for _, k := range rep.Checks {
			if !k.OK && !k.Skipped {
				failed++
			}
		}
		at = float64(rep.RanAt.Unix())
	}
	for k, v := range byKind {
		ch <- prometheus.MustNewConstMetric(diffDesc, prometheus.GaugeValue, v, k)
	}
	ch <- prometheus.MustNewConstMetric(checksDesc, prometheus.GaugeValue, failed)
	ch <- prometheus.MustNewConstMetric(lastDesc, prometheus.GaugeValue, at)
}
