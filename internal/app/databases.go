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
}

// OpenDatabases starts the private cluster when no URL is configured.
func OpenDatabases(ctx context.Context, cfg Config, log *slog.Logger) (*Databases, error) {
	d := &Databases{cfg: cfg}
	if cfg.DatabaseURL == "" {
		c, err := postgres.StartCluster(ctx, postgres.ClusterOptions{Dir: cfg.DataDir, Durable: cfg.Durable, MaxConnections: 300, Logger: log})
		if err != nil {
			return nil, err
		}
		d.cluster = c
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
	}
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
