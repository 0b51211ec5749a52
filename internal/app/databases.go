package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"hongbao/internal/postgres"
)

// Databases hands out migrated pools for named databases, either in the
// private cluster (created on demand) or on an external server.
type Databases struct {
	cfg     Config
	cluster *postgres.Cluster
	pools   []*pgxpool.Pool
	// wanted is every database this process opens with the pool it asks
	// for; the sizes are scaled so that the pools on one server add up to at
	// most the connection budget.
	wanted map[string]int32
}

// Plan tells the databases every pool the process will open (name ->
// largest size), so that Open can share each server's budget among them.
func (d *Databases) Plan(wanted map[string]int32) { d.wanted = wanted }

// OpenDatabases starts the private cluster when no URL is configured.
func OpenDatabases(ctx context.Context, cfg Config, log *slog.Logger) (*Databases, error) {
	d := &Databases{cfg: cfg}
	if cfg.DatabaseURL == "" {
		if d.cfg.DBConnections <= 0 {
			d.cfg.DBConnections = 380
		}
		c, err := postgres.StartCluster(ctx, postgres.ClusterOptions{Dir: cfg.DataDir, Durable: cfg.Durable, MaxConnections: 400, Logger: log})
		if err != nil {
			return nil, err
		}
		d.cluster = c
	} else if d.cfg.DBConnections <= 0 {
		d.cfg.DBConnections = 90
	}
	return d, nil
}

// Open returns a pool to database name, created and migrated as needed.
func (d *Databases) Open(ctx context.Context, name string, maxConns int32, migrations ...[]postgres.Migration) (*pgxpool.Pool, error) {
	overrides, err := d.cfg.overrides()
	if err != nil {
		return nil, err
	}
	url, placed := overrides[name]
	if !placed {
		url = strings.ReplaceAll(d.cfg.DatabaseURL, "{db}", name)
	}
	if d.cluster != nil && !placed {
		if err := d.cluster.CreateDatabase(ctx, name, ""); err != nil {
			return nil, err
		}
		url = d.cluster.URL(name)
	} else if err := postgres.EnsureDatabase(ctx, url); err != nil {
		return nil, err
	}
	maxConns = d.size(name, url, maxConns, overrides)
	pool, err := postgres.Open(ctx, url, maxConns)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", name, err)
	}
	if err := postgres.Migrate(ctx, pool, migrations...); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s: %w", name, err)
	}
	d.pools = append(d.pools, pool)
	return pool, nil
}

// size scales a pool so that all pools planned on the same server fit in
// the budget (--db-connections), each keeping at least 2 connections.
func (d *Databases) size(name, url string, want int32, overrides map[string]string) int32 {
	budget := d.cfg.DBConnections
	if budget <= 0 || d.wanted == nil {
		return want
	}
	server := postgres.ServerOf(url)
	var total int32
	for other, n := range d.wanted {
		if d.serverOf(other, overrides) == server {
			total += n
		}
	}
	if _, ok := d.wanted[name]; !ok {
		total += want
	}
	if total <= int32(budget) {
		return want
	}
	return max(2, want*int32(budget)/total)
}

func (d *Databases) serverOf(name string, overrides map[string]string) string {
	if u, ok := overrides[name]; ok {
		return postgres.ServerOf(u)
	}
	if d.cluster != nil {
		return postgres.ServerOf(d.cluster.URL(name))
	}
	return postgres.ServerOf(strings.ReplaceAll(d.cfg.DatabaseURL, "{db}", name))
}

// Close closes every pool and stops the private cluster.
func (d *Databases) Close() error {
	for _, p := range d.pools {
		p.Close()
	}
	if d.cluster != nil {
		return d.cluster.Stop()
	}
	return nil
}
