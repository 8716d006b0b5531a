package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgBin is where Debian installs PostgreSQL 15's programs.
const pgBin = "/usr/lib/postgresql/15/bin"

// cluster is a PostgreSQL cluster of the test's own, run as the postgres
// user on a free loopback port, stopped and removed at cleanup.
type cluster struct {
	t    *testing.T
	name string
	dir  string // owned by postgres; data/ and the log inside
	port int
}

// freePort returns a loopback TCP port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// asPostgres runs a PostgreSQL program as the postgres user (initdb and
// the server refuse root).
func asPostgres(t *testing.T, timeout time.Duration, prog string, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", filepath.Join(pgBin, prog)}, args...)...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
	return nil
}

// needPostgres skips when this machine cannot run clusters of its own.
func needPostgres(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
		t.Skipf("no PostgreSQL 15 programs in %s (deploy/dev/ensure-postgres.sh installs them)", pgBin)
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Skip("no postgres user to run a cluster as")
	}
	if os.Geteuid() != 0 {
		t.Skip("running clusters as the postgres user needs root (runuser)")
	}
}

// clusterDir makes a folder owned by the postgres user, removed at cleanup.
func clusterDir(t *testing.T, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hotline-faults-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	u, _ := user.Lookup("postgres")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serverConf is appended to every cluster's postgresql.conf.
const serverConf = `
listen_addresses = '127.0.0.1'
max_connections = 60
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 5
wal_keep_size = 64MB
hot_standby = on
logging_collector = off
`

// newCluster initialises and starts a primary.
func newCluster(t *testing.T, name string) *cluster {
	t.Helper()
	needPostgres(t)
	c := &cluster{t: t, name: name, dir: clusterDir(t, name), port: freePort(t)}
	if err := asPostgres(t, 2*time.Minute, "initdb", "-D", c.data(), "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--no-instructions", "--no-sync"); err != nil {
		t.Fatal(err)
	}
	c.appendConf(serverConf + fmt.Sprintf("port = %d\nunix_socket_directories = '%s'\n", c.port, c.dir))
	t.Cleanup(c.kill)
	c.start()
	return c
}

func (c *cluster) data() string { return filepath.Join(c.dir, "data") }

// url is a connection URL to database db on this cluster alone.
func (c *cluster) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

func (c *cluster) appendConf(s string) {
	c.t.Helper()
	f, err := os.OpenFile(filepath.Join(c.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) pgCtl(args ...string) error {
	return asPostgres(c.t, 2*time.Minute, "pg_ctl", append([]string{"-D", c.data(), "-l", filepath.Join(c.dir, "log"), "-w", "-t", "90"}, args...)...)
}

func (c *cluster) start() {
	c.t.Helper()
	if err := c.pgCtl("start"); err != nil {
		c.t.Fatalf("%s: %v\n%s", c.name, err, c.logTail())
	}
}

// stop is `pg_ctl stop -m mode` (fast: sessions are terminated with
// 57P01; immediate: the server crashes, and recovers from the WAL when
// started again).
func (c *cluster) stop(mode string) {
	c.t.Helper()
	if err := c.pgCtl("stop", "-m", mode); err != nil {
		c.t.Fatalf("%s: %v\n%s", c.name, err, c.logTail())
	}
}

// kill stops the server if it runs (cleanup; errors ignored).
func (c *cluster) kill() {
	if _, err := os.Stat(filepath.Join(c.data(), "postmaster.pid")); err == nil {
		asPostgres(c.t, time.Minute, "pg_ctl", "-D", c.data(), "stop", "-m", "immediate")
	}
}

func (c *cluster) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// exec runs sql on database db of this cluster.
func (c *cluster) exec(db, sql string, args ...any) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.url(db))
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		c.t.Fatalf("%s: %s: %v", c.name, sql, err)
	}
}

// standby makes a streaming standby of c with pg_basebackup -R, starts it
// and makes it c's synchronous standby: from then on a commit on c is
// acknowledged only once the standby has it.
func (c *cluster) standby(name string) *cluster {
	c.t.Helper()
	s := &cluster{t: c.t, name: name, dir: clusterDir(c.t, name), port: freePort(c.t)}
	if err := asPostgres(c.t, 2*time.Minute, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(c.port), "-U", "postgres",
		"-D", s.data(), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"); err != nil {
		c.t.Fatal(err)
	}
	s.appendConf(fmt.Sprintf("port = %d\nunix_socket_directories = '%s'\n", s.port, s.dir))
	// After -R's primary_conninfo in postgresql.auto.conf, which wins over
	// postgresql.conf: the last setting in the file counts.
	f, err := os.OpenFile(filepath.Join(s.data(), "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	fmt.Fprintf(f, "primary_conninfo = 'host=127.0.0.1 port=%d user=postgres application_name=%s'\n", c.port, name)
	f.Close()
	c.t.Cleanup(s.kill)
	s.start()
	c.exec("postgres", fmt.Sprintf("ALTER SYSTEM SET synchronous_standby_names = '%s'", name))
	c.exec("postgres", "SELECT pg_reload_conf()")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var state string
		conn, err := pgx.Connect(context.Background(), c.url("postgres"))
		if err == nil {
			conn.QueryRow(context.Background(), `SELECT coalesce(max(sync_state), '') FROM pg_stat_replication WHERE application_name = $1`, name).Scan(&state)
			conn.Close(context.Background())
		}
		if state == "sync" {
			return s
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("standby %s is not synchronous after 30s (state %q)\n%s", name, state, s.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// promote makes a standby the primary (pg_ctl promote waits for it).
func (c *cluster) promote() {
	c.t.Helper()
	if err := c.pgCtl("promote"); err != nil {
		c.t.Fatalf("%s: %v\n%s", c.name, err, c.logTail())
	}
}
