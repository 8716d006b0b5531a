package faults

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("faults: skipped in -short mode (they build hotline-server and run PostgreSQL clusters)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "hotline-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	serverBin = filepath.Join(dir, "hotline-server")
	if out, err := exec.Command("go", "build", "-o", serverBin, "../../cmd/hotline-server").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build hotline-server: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	printTable()
	os.RemoveAll(dir)
	os.Exit(code)
}

// createDatabase makes the hotline database on c.
func createDatabase(c *cluster) { c.exec("postgres", "CREATE DATABASE hotline") }

// TestFaultPostgresRestart: PostgreSQL restarted under load, fast (every
// session terminated with 57P01, then a clean start) and immediate (a
// crash, then WAL recovery). Recovery is timed from the moment the server
// is down, so it includes PostgreSQL's start; health must say NOT_SERVING
// meanwhile.
func TestFaultPostgresRestart(t *testing.T) {
	c := newCluster(t, "restart")
	createDatabase(c)
	url := c.url("hotline")
	e := newEnv(t, url, func() string { return url }, 2)
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) {
			e.t = t
			p := defaultPlan(2 * time.Second)
			p.notServing = true
			e.runFault("postgres restart "+mode, p, func() time.Time {
				c.stop(mode)
				at := time.Now() // down: recovery counts from here, the start included
				c.start()
				return at
			})
		})
	}
}

// TestFaultReplicaSIGKILL: a replica killed with SIGKILL while it has calls
// in flight; its clients retry their request ids through another replica,
// and the killed one is started again, as its pod would be. Recovery is
// timed from the kill.
func TestFaultReplicaSIGKILL(t *testing.T) {
	url := pgtest.NewDatabase(t, "faults_kill")
	e := newEnv(t, url, func() string { return url }, 3)
	e.runFault("replica SIGKILL", defaultPlan(2*time.Second), func() time.Time {
		victim := e.replicas[0]
		deadline := time.Now().Add(5 * time.Second)
		for victim.inFlight.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		inFlight := victim.inFlight.Load()
		victim.sigkill()
		at := time.Now()
		t.Logf("killed replica 0 with %d calls in flight", inFlight)
		time.Sleep(time.Second)
		victim.start()
		return at
	})
}

// TestFaultFailover: a primary with a synchronous streaming standby (an
// acknowledged commit is on both); the primary crashes and the standby is
// promoted. The replicas connect with a multi-host URL and
// target_session_attrs=read-write, so they find the new primary on their
// own; the sealer continues the chain there. Recovery is timed from the
// crash, so it includes the promotion.
func TestFaultFailover(t *testing.T) {
	primary := newCluster(t, "primary")
	createDatabase(primary)
	standby := primary.standby("standby1")
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/hotline?sslmode=disable&target_session_attrs=read-write",
		primary.port, standby.port)
	var current atomic.Pointer[cluster]
	current.Store(primary)
	e := newEnv(t, url, func() string { return current.Load().url("hotline") }, 2)
	e.runFault("failover to sync standby", defaultPlan(10*time.Second), func() time.Time {
		primary.stop("immediate")
		at := time.Now() // the primary is gone: recovery counts from here, the promotion included
		standby.promote()
		current.Store(standby)
		t.Logf("primary crashed and standby promoted in %s", time.Since(at).Round(time.Millisecond))
		return at
	})
}

// TestFaultSwitchoverReadOnlyPrimary: the old primary stays up but turns
// read-only (as a demoted primary does) while its synchronous standby is
// promoted. The replicas' pooled connections to the old primary now get
// 25006 (read-only transaction) on every write: they must be closed, not
// handed out again, so that the pool reconnects and
// target_session_attrs=read-write takes it to the new primary. Recovery
// is timed from the moment the old primary turned read-only.
func TestFaultSwitchoverReadOnlyPrimary(t *testing.T) {
	old := newCluster(t, "oldprimary")
	createDatabase(old)
	standby := old.standby("standby1")
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/hotline?sslmode=disable&target_session_attrs=read-write",
		old.port, standby.port)
	var current atomic.Pointer[cluster]
	current.Store(old)
	e := newEnv(t, url, func() string { return current.Load().url("hotline") }, 2)
	p := defaultPlan(10 * time.Second)
	p.notServing = true
	e.runFault("switchover, old read-only", p, func() time.Time {
		old.exec("postgres", "ALTER SYSTEM SET default_transaction_read_only = on")
		old.exec("postgres", "SELECT pg_reload_conf()")
		at := time.Now()
		standby.promote()
		current.Store(standby)
		return at
	})
}

// proxy is a toxiproxy TCP proxy in front of a cluster.
type proxy struct {
	t *testing.T
	p *toxiproxy.Proxy
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "postgres", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &proxy{t: t, p: p}
}

// toxic adds a toxic in both directions; the returned func removes it.
func (p *proxy) toxic(typ, attrs string) func() {
	p.t.Helper()
	var names []string
	for _, stream := range []string{"upstream", "downstream"} {
		name := typ + "_" + stream
		if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`,
			name, typ, stream, attrs))); err != nil {
			p.t.Fatal(err)
		}
		names = append(names, name)
	}
	return func() {
		for _, n := range names {
			if err := p.p.Toxics.RemoveToxic(context.Background(), n); err != nil {
				p.t.Error(err)
			}
		}
	}
}

// TestFaultNetwork: faults between the replicas and PostgreSQL through a
// TCP proxy: latency (timed from its start: the service must keep
// issuing), connection resets and a black hole (both timed from the
// moment the network heals).
func TestFaultNetwork(t *testing.T) {
	c := newCluster(t, "network")
	createDatabase(c)
	px := newProxy(t, fmt.Sprintf("127.0.0.1:%d", c.port))
	direct := c.url("hotline")
	e := newEnv(t, fmt.Sprintf("postgres://postgres@%s/hotline?sslmode=disable", px.p.Listen), func() string { return direct }, 2)
	hold := func(short, long time.Duration) time.Duration {
		if chaos {
			return long
		}
		return short
	}
	t.Run("latency", func(t *testing.T) {
		e.t = t
		e.runFault("network latency 200ms", defaultPlan(2*time.Second), func() time.Time {
			at := time.Now()
			remove := px.toxic("latency", `{"latency":100,"jitter":50}`)
			time.Sleep(hold(3*time.Second, 15*time.Second))
			remove()
			return at
		})
	})
	t.Run("reset", func(t *testing.T) {
		e.t = t
		e.runFault("network resets", defaultPlan(2*time.Second), func() time.Time {
			remove := px.toxic("reset_peer", `{"timeout":0}`)
			time.Sleep(hold(2*time.Second, 8*time.Second))
			remove()
			return time.Now()
		})
	})
	t.Run("blackhole", func(t *testing.T) {
		e.t = t
		p := defaultPlan(5 * time.Second)
		p.notServing = true
		e.runFault("network black hole", p, func() time.Time {
			remove := px.toxic("timeout", `{"timeout":0}`)
			time.Sleep(hold(4*time.Second, 12*time.Second))
			remove()
			return time.Now()
		})
	})
}

// TestFaultPoolExhausted: slow calls hold every connection of small pools
// (pool_max_conns=3): a transaction of the test's own locks half the
// devices, so issuances of those wait on the lock while the other calls
// wait for a connection. Every call must end within its deadline, and the
// service must issue again at once when the lock goes (timed from then).
func TestFaultPoolExhausted(t *testing.T) {
	c := newCluster(t, "pool")
	createDatabase(c)
	direct := c.url("hotline")
	e := newEnv(t, direct+"&pool_max_conns=3", func() string { return direct }, 2)
	p := defaultPlan(2 * time.Second)
	p.alwaysServing = true // a busy pool is not a database that is down
	e.runFault("pool exhausted", p, func() time.Time {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, direct)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `SELECT 1 FROM devices WHERE serial = ANY($1) FOR UPDATE`, e.serials[:len(e.serials)/2]); err != nil {
			t.Fatal(err)
		}
		hold := 4 * time.Second
		if chaos {
			hold = 12 * time.Second
		}
		time.Sleep(hold)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	})
}
