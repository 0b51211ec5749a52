// Package postgres adapts PostgreSQL: connection pools, embedded numbered
// migrations applied under an advisory lock, transaction helpers, and a
// private cluster started from the installed binaries when no URL is given.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Open connects a pool and checks the server answers.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", redact(err))
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	// No parallel plans unless the URL asks for them: the statements here
	// are short, and starting a plan's workers (tens of milliseconds on a
	// busy box) cost the reconciler's page 69 ms where the plan without
	// them took 5.
	if _, set := cfg.ConnConfig.RuntimeParams["max_parallel_workers_per_gather"]; !set {
		cfg.ConnConfig.RuntimeParams["max_parallel_workers_per_gather"] = "0"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool to %s/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// redact drops the error text from pgx's URL parser, which can echo the URL
// (and so a password) back.
func redact(err error) error {
	if err == nil {
		return nil
	}
	return errors.New("malformed connection string")
}

// Migration is one numbered SQL file of a named source.
type Migration struct {
	Source  string
	Version int
	Name    string
	SQL     string
}

// Migrations reads the files "NNN_name.sql" in the root of fsys.
func Migrations(source string, fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || path.Ext(name) != ".sql" {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s/%s: name must start with a number and _", source, name)
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Source: source, Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("migration %s: version %d twice", source, out[i].Version)
		}
	}
	return out, nil
}

// Embedded reads the migrations of an embedded folder. Embedded files are
// fixed at build time, so a malformed set is a programming error: it panics
// (and every test that opens a database shows it).
func Embedded(source string, fsys fs.FS, dir string) []Migration {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err)
	}
	m, err := Migrations(source, sub)
	if err != nil {
		panic(err)
	}
	return m
}

// migrationLock is the advisory lock key held while migrating.
const migrationLock = 0x68626d6967 // "hbmig"

// Migrate applies the migrations not yet recorded, each in its own
// transaction, holding an advisory lock so that concurrent starters queue.
func Migrate(ctx context.Context, pool *pgxpool.Pool, sets ...[]Migration) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", migrationLock) //nolint:errcheck
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		source text NOT NULL, version int NOT NULL, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, version))`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for _, set := range sets {
		for _, m := range set {
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				tag, err := tx.Exec(ctx, `INSERT INTO schema_migrations (source, version, name) VALUES ($1, $2, $3)
					ON CONFLICT DO NOTHING`, m.Source, m.Version, m.Name)
				if err != nil || tag.RowsAffected() == 0 {
					return err
				}
				_, err = tx.Exec(ctx, m.SQL)
				return err
			})
			if err != nil {
				return fmt.Errorf("migration %s/%s: %w", m.Source, m.Name, err)
			}
		}
	}
	return nil
}

// InTx runs fn in a READ COMMITTED transaction, committing when it returns
// nil. A serialization failure or deadlock is retried a few times: the
// transaction was rolled back, so nothing of it applied.
func InTx(ctx context.Context, db *pgxpool.Pool, fn func(pgx.Tx) error) error {
	return inTx(ctx, db, 5, 0, Retryable, fn)
}

// InTxLockWait runs fn as InTx does, with its lock requests waiting at
// most wait: an attempt that did not get a lock in time is rolled back and
// made again too, waiting a little longer each time (at most 10 attempts),
// so that work that takes whole tables (an archive) yields to the traffic,
// never the other way round.
func InTxLockWait(ctx context.Context, db *pgxpool.Pool, wait time.Duration, fn func(pgx.Tx) error) error {
	ms := strconv.FormatInt(wait.Milliseconds(), 10)
	return inTx(ctx, db, 10, 100*time.Millisecond, func(err error) bool { return Retryable(err) || IsLockTimeout(err) },
		func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, ms); err != nil {
				return err
			}
			return fn(tx)
		})
}

// inTx makes up to attempts transactions of fn while retry says so,
// pausing attempt times backoff between them.
func inTx(ctx context.Context, db *pgxpool.Pool, attempts int, backoff time.Duration, retry func(error) bool, fn func(pgx.Tx) error) error {
	var err error
	for attempt := 1; attempt <= attempts; attempt++ {
		if err = pgx.BeginFunc(ctx, db, fn); !retry(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * backoff):
		}
	}
	return err
}

// IsLockTimeout reports a lock not granted within lock_timeout.
func IsLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

// Retryable reports a serialization failure or a deadlock.
func Retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// IsUniqueViolation reports a unique constraint violation, optionally of
// the named constraint.
func IsUniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && (constraint == "" || pe.ConstraintName == constraint)
}

// IsCheckViolation reports a CHECK constraint violation of the named constraint.
func IsCheckViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23514" && (constraint == "" || pe.ConstraintName == constraint)
}

// ErrMissingDatabase means a database does not exist on its server and the
// role may not create it.
var ErrMissingDatabase = errors.New("database does not exist")

// EnsureDatabase makes sure the database named in url exists on its
// server, creating it (connected to the server's "postgres" database with
// the same role) when the role may. When it may not, the error says which
// database to create and how.
func EnsureDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parse database url: %w", redact(err))
	}
	name := cfg.Database
	// Each step has its own bound: a server busy creating other databases
	// (nodes starting at once) is slow, not refusing.
	connect := func(c *pgx.ConnConfig) (*pgx.Conn, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return pgx.ConnectConfig(cctx, c)
	}
	conn, err := connect(cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "3D000" {
		return fmt.Errorf("connect to %s:%d/%s: %w", cfg.Host, cfg.Port, name, err)
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err = connect(admin)
	if err != nil && !errors.As(err, &pe) {
		// Not a refusal (a timeout, a lost connection): nothing to tell
		// the operator to create by hand.
		return fmt.Errorf("database %s does not exist on %s:%d, and connecting to the server's postgres database to create it failed: %w",
			name, cfg.Host, cfg.Port, err)
	}
	if err != nil {
		return fmt.Errorf("%w: %s on %s:%d, and the role %q cannot connect to the server's postgres database to create it (%v); "+
			"create it by hand: CREATE DATABASE %s OWNER %s;", ErrMissingDatabase, name, cfg.Host, cfg.Port, cfg.User, err,
			pgx.Identifier{name}.Sanitize(), pgx.Identifier{cfg.User}.Sanitize())
	}
	defer conn.Close(ctx)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, err = conn.Exec(cctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	// Created meanwhile by another node: "already exists", or, when both
	// CREATEs ran at once, the catalog's unique index refusing the second.
	if errors.As(err, &pe) && (pe.Code == "42P04" || (pe.Code == "23505" && pe.ConstraintName == "pg_database_datname_index")) {
		return nil
	}
	if errors.As(err, &pe) && pe.Code == "42501" {
		return fmt.Errorf("%w: %s on %s:%d, and the role %q may not create databases; "+
			"create it by hand (CREATE DATABASE %s OWNER %s;) or grant CREATEDB (ALTER ROLE %s CREATEDB;)",
			ErrMissingDatabase, name, cfg.Host, cfg.Port, cfg.User, pgx.Identifier{name}.Sanitize(),
			pgx.Identifier{cfg.User}.Sanitize(), pgx.Identifier{cfg.User}.Sanitize())
	}
	if err != nil {
		return fmt.Errorf("create database %s on %s:%d: %w", name, cfg.Host, cfg.Port, err)
	}
	return nil
}

// ServerOf names the server a URL points at (host:port), for connection
// budgets.
func ServerOf(url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return url
	}
	return fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
}
