package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries means the PostgreSQL server programs are not installed.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found in PATH or /usr/lib/postgresql/*/bin: " +
	"install them (Debian/Ubuntu: apt-get install -y postgresql) or give an external database with --database-url / HONGBAO_DATABASE_URL")

// ClusterOptions configures a private cluster.
type ClusterOptions struct {
	// Dir holds the data folder; it is created (and initdb'd) when missing.
	Dir string
	// Durable keeps fsync and synchronous_commit on. Off is only for tests.
	Durable bool
	// MaxConnections for the server (default 200).
	MaxConnections int
	Logger         *slog.Logger
}

// Cluster is a PostgreSQL server started from the installed binaries, owned
// by this process, listening on a free loopback port.
type Cluster struct {
	opts     ClusterOptions
	bin      string
	dataDir  string
	port     int
	password string
	cred     *syscall.Credential
	lock     *DirLock
}

// binGlob is where Debian and Ubuntu install the server programs.
var binGlob = "/usr/lib/postgresql/*/bin"

// FindBinaries returns the folder holding initdb and pg_ctl.
func FindBinaries() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob(binGlob)
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isFile(filepath.Join(d, "initdb")) && isFile(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isFile(p string) bool { st, err := os.Stat(p); return err == nil && !st.IsDir() }

// StartCluster initialises (when needed) and starts a private cluster.
// When running as root the server runs as the postgres user, which must own
// the data folder; StartCluster arranges that.
func StartCluster(ctx context.Context, opts ClusterOptions) (*Cluster, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = 200
	}
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, bin: bin, dataDir: filepath.Join(opts.Dir, "data")}
	if c.cred, err = serverCredential(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cluster folder: %w", err)
	}
	if c.cred != nil {
		if err := reachable(opts.Dir, int(c.cred.Uid)); err != nil {
			return nil, err
		}
	}
	// The lock says this process owns the cluster: a postmaster still
	// running on the data folder is then an orphan of an owner that died
	// (pg_ctl detaches the server, so a SIGKILL of its owner leaves it
	// behind), and is stopped before the cluster starts again.
	if c.lock, err = LockDir(opts.Dir, "cluster.lock"); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.lock.Unlock()
		}
	}()
	if c.cred != nil {
		if err := os.Chown(opts.Dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, fmt.Errorf("give cluster folder to postgres: %w", err)
		}
	}
	if pid, alive := runningPostmaster(c.dataDir); alive {
		opts.Logger.Warn("stopping the orphaned postgres of a previous run", "dir", opts.Dir, "pid", pid)
		if err := c.stopServer(); err != nil {
			return nil, fmt.Errorf("stop orphaned postgres (pid %d) in %s: %w", pid, c.dataDir, err)
		}
	}
	pwFile := filepath.Join(opts.Dir, "password")
	if !isFile(filepath.Join(c.dataDir, "PG_VERSION")) {
		if err := c.initdb(ctx, pwFile); err != nil {
			return nil, err
		}
	}
	pw, err := os.ReadFile(pwFile)
	if err != nil {
		return nil, fmt.Errorf("read cluster password: %w", err)
	}
	c.password = strings.TrimSpace(string(pw))
	var lastErr error
	for range 3 { // a free port can be taken between probe and bind: try again
		c.port, err = freePort()
		if err != nil {
			return nil, err
		}
		if lastErr = c.start(ctx); lastErr == nil {
			opts.Logger.Info("private postgres started", "dir", opts.Dir, "port", c.port, "durable", opts.Durable)
			ok = true
			return c, nil
		}
	}
	return nil, lastErr
}

func (c *Cluster) initdb(ctx context.Context, pwFile string) error {
	buf := make([]byte, 16)
	_, _ = rand.Read(buf)
	if err := os.WriteFile(pwFile, []byte(hex.EncodeToString(buf)), 0o600); err != nil {
		return fmt.Errorf("write cluster password: %w", err)
	}
	if c.cred != nil {
		if err := os.Chown(pwFile, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return err
		}
	}
	out, err := c.run(ctx, "initdb", "-D", c.dataDir, "-U", "hongbao", "--pwfile", pwFile,
		"--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync")
	if err != nil {
		return fmt.Errorf("initdb: %w: %s", err, out)
	}
	return nil
}

func (c *Cluster) start(ctx context.Context) error {
	settings := []string{
		"-p", strconv.Itoa(c.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + c.opts.Dir,
		"-c", "max_connections=" + strconv.Itoa(c.opts.MaxConnections),
		"-c", "shared_buffers=256MB",
		"-c", "max_wal_size=4GB",
	}
	if !c.opts.Durable {
		settings = append(settings, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	out, err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-w", "-t", "60", "-l", filepath.Join(c.opts.Dir, "server.log"),
		"-o", strings.Join(settings, " "), "start")
	if err != nil {
		return fmt.Errorf("pg_ctl start (log in %s): %w: %s", filepath.Join(c.opts.Dir, "server.log"), err, out)
	}
	return nil
}

func (c *Cluster) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, prog), args...)
	cmd.Dir = c.opts.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd.CombinedOutput()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// URL returns the connection URL of a database in the cluster.
func (c *Cluster) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword("hongbao", c.password),
		Host: "127.0.0.1:" + strconv.Itoa(c.port), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Port is the loopback port the server listens on.
func (c *Cluster) Port() int { return c.port }

// CreateDatabase creates db (from template when not empty) unless it exists.
func (c *Cluster) CreateDatabase(ctx context.Context, db, template string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect to private cluster: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	sql := "CREATE DATABASE " + pgx.Identifier{db}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	return nil
}

// Stop shuts the server down (fast mode: open sessions are ended) and
// releases the folder.
func (c *Cluster) Stop() error {
	err := c.stopServer()
	c.lock.Unlock()
	return err
}

func (c *Cluster) stopServer() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-w", "-m", "fast", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	return nil
}

// RestartImmediate restarts the server in immediate mode (no checkpoint,
// sessions cut: what a crash and a supervisor restart look like), on the
// same port, as an operator would.
func (c *Cluster) RestartImmediate() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-w", "-t", "60", "-m", "immediate", "-l", filepath.Join(c.opts.Dir, "server.log"), "restart")
	if err != nil {
		return fmt.Errorf("pg_ctl restart: %w: %s", err, out)
	}
	return nil
}

// reachable checks that the user uid (postgres, when run as root) can walk
// down to dir: every folder above it must let it through (x for it, its
// group or others). initdb otherwise fails with a misleading
// "permission denied" on its own binary.
func reachable(dir string, uid int) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		sys, _ := st.Sys().(*syscall.Stat_t)
		mode := st.Mode().Perm()
		ok := mode&0o001 != 0 || (sys != nil && int(sys.Uid) == uid && mode&0o100 != 0)
		if !ok {
			return fmt.Errorf("the data folder %s is not reachable by the postgres user, which runs the private cluster: "+
				"%s (mode %o) does not let it through; use a folder it can reach (say under /var/lib/hongbao), "+
				"or open the way with: chmod o+x %s", abs, p, mode, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// serverCredential is who runs the server: the postgres user when this
// process is root (PostgreSQL refuses to run as root), else this process.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, the private cluster runs as user postgres, which does not exist (install the postgresql package): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// Reap stops the server of a cluster folder that no live process owns (its
// owner died without stopping it). It returns ErrDirInUse when a live
// process holds the folder.
func Reap(dir string) error {
	lock, err := LockDir(dir, "cluster.lock")
	if err != nil {
		return err
	}
	defer lock.Unlock()
	c := &Cluster{opts: ClusterOptions{Dir: dir}, dataDir: filepath.Join(dir, "data")}
	if _, alive := runningPostmaster(c.dataDir); !alive {
		return nil
	}
	if c.bin, err = FindBinaries(); err != nil {
		return err
	}
	if c.cred, err = serverCredential(); err != nil {
		return err
	}
	return c.stopServer()
}
