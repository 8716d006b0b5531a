// Command bench-issue measures IssueTemporaryPassword end to end (staff
// token check, policy, the issue transaction on PostgreSQL, minting the
// voice code and the grant) over real gRPC on loopback TCP, and, in the same
// run and on the same database, pgbench running the same SQL transaction
// (server/postgres/bench/issue.sql), at the same concurrencies. It prints
// throughput, p50 and p99 of both, their ratio (the goal: gRPC at
// least 0.8 of pgbench), and the CPU that every party took.
//
//	make bench-issue
//	make bench-issue BENCH_ISSUE_FLAGS='-duration 20s -concurrency 2,4,8,16'
//
// Who runs where:
//
//   - The server runs in this process, built by cmd/internal/wiring as
//     `hotline-server serve` builds it (the pool working as the
//     hotline_service role, the audit log, the staff verifier, grpcserver
//     over server.Service over postgres.DB with Prometheus metrics, the
//     redacting JSON log, written to a file, and the keyring watcher), over
//     a fresh keyring, with limits that never refuse. Its audit sealer
//     runs every second as serve's does during every gRPC phase, and is
//     paused for the pgbench phases, whose events it seals, untimed,
//     before the next gRPC phase.
//   - The gRPC load generator runs in a child process (this binary
//     re-executed with -client) so that its CPU is measured apart from the
//     server's: the child reports getrusage over its timed window, the
//     parent reads its own getrusage over the same window.
//   - pgbench is a child too; its CPU is its ProcessState's.
//
// Fairness: both sides draw a random device of -devices and a random agent
// of -agents for every transaction, so the per-agent advisory lock (which
// serialises one staff member's issuances) and the device row lock contend
// as rarely on one side as on the other. Each gRPC client is one goroutine
// with its own connection and its own request ids, as each pgbench client
// has its own database connection. The server's pool may hold as many
// connections as the highest concurrency, so that neither side waits for
// a database connection the other would have. The gRPC side's agents are
// grpc-agent-N, pgbench's bench-agent-N: each side's per-agent count query
// sees only its own history. The tables are vacuumed and analysed before
// every phase.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// options are the command's flags.
type options struct {
	adminURL    string
	devices     int
	agents      int
	concurrency []int
	duration    time.Duration
	warmup      time.Duration
	poolConns   int
	pgbench     string
	script      string
	setup       string
	keep        bool
	cpuProfile  string
	memProfile  string
	serverLog   string
	sealer      bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-client" {
		os.Exit(clientMain())
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-issue:", err)
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-issue:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench-issue", flag.ContinueOnError)
	fs.StringVar(&o.adminURL, "database-url", pgtest.AdminURL(),
		"administrative PostgreSQL URL the benchmark database is created through (default from "+pgtest.EnvURL+")")
	fs.IntVar(&o.devices, "devices", 20000, "devices registered (setup.sql), drawn at random per issuance")
	fs.IntVar(&o.agents, "agents", 200, "staff subjects per side, drawn at random per issuance")
	conc := fs.String("concurrency", "4,8,16", "comma-separated client counts; each runs gRPC, then pgbench")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per phase (whole seconds: pgbench -T)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "untimed gRPC load before each gRPC phase")
	fs.IntVar(&o.poolConns, "pool-conns", 0, "server pool size (0: the highest concurrency)")
	fs.StringVar(&o.pgbench, "pgbench", "pgbench", "pgbench binary")
	fs.StringVar(&o.script, "script", "server/postgres/bench/issue.sql", "pgbench script of the issue transaction")
	fs.StringVar(&o.setup, "setup", "server/postgres/bench/setup.sql", "device setup script (psql :ndevices variable)")
	fs.BoolVar(&o.keep, "keep", false, "keep the benchmark database instead of dropping it")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the server's CPU profile (all gRPC phases) to this file")
	fs.StringVar(&o.memProfile, "memprofile", "", "write this process's allocation profile (go tool pprof -sample_index=alloc_space) to this file at the end")
	fs.BoolVar(&o.sealer, "sealer", true, "also compare issue throughput with the audit sealer running against without it, at the highest concurrency")
	fs.StringVar(&o.serverLog, "server-log", "", "the server's JSON log (default: a file in a temporary folder, removed)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for _, f := range strings.Split(*conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			return nil, fmt.Errorf("-concurrency %q: expected positive integers separated by commas", *conc)
		}
		o.concurrency = append(o.concurrency, c)
	}
	if o.duration < time.Second || o.duration%time.Second != 0 {
		return nil, fmt.Errorf("-duration %s: expected whole seconds, at least 1s", o.duration)
	}
	if o.devices < 1 || o.agents < 1 {
		return nil, fmt.Errorf("-devices and -agents must be positive")
	}
	if o.poolConns == 0 {
		for _, c := range o.concurrency {
			o.poolConns = max(o.poolConns, c)
		}
	}
	return o, nil
}

// row is one concurrency's results.
type row struct {
	c    int
	grpc clientResult
	pgb  pgbenchResult
	// CPU seconds over each phase's measured window.
	serverCPU, clientCPU, clientCPUTotal, pgbenchCPU float64
	machineGRPC, machinePgbench, pgGRPC, pgPgbench   float64
}

func run(ctx context.Context, o *options) error {
	pgbenchPath, err := lookPgbench(o.pgbench)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "bench-issue-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	step("creating a database on %s", redactURL(o.adminURL))
	dbURL, drop, err := createDatabase(ctx, o.adminURL)
	if err != nil {
		return err
	}
	if o.keep {
		step("keeping the database: %s", redactURL(dbURL))
	} else {
		defer func() {
			if err := drop(context.Background()); err != nil {
				fmt.Fprintln(os.Stderr, "bench-issue:", err)
			}
		}()
	}
	if err := prepareDatabase(ctx, dbURL, o.setup, o.devices); err != nil {
		return err
	}

	srv, err := startServer(ctx, dbURL, tmp, o)
	if err != nil {
		return err
	}
	defer srv.close()
	tokens, err := srv.tokens(o.agents)
	if err != nil {
		return err
	}

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	if o.memProfile != "" {
		// Allocations from here on: the phases, not the setup.
		runtime.MemProfileRate = 64 << 10
		defer func() {
			if err := writeHeapProfile(o.memProfile); err != nil {
				fmt.Fprintln(os.Stderr, "bench-issue:", err)
			}
		}()
	}

	pg := findPostgres(ctx, dbURL)
	if pg == nil {
		step("PostgreSQL is not a local process: its CPU is not measured")
	}
	var rows []row
	for _, c := range o.concurrency {
		r := row{c: c}
		// The gRPC phase runs with the sealer as serve runs it, from a
		// fully sealed log (the history, then the pgbench phase before).
		if n, err := srv.seal(ctx); err != nil {
			return err
		} else if n > 0 {
			step("c=%d: sealed the backlog of %d events", c, n)
		}
		srv.startSealer()
		if err := vacuum(ctx, dbURL); err != nil {
			return err
		}
		step("c=%d: gRPC for %s (after %s of warm-up), audit sealer running", c, o.duration, o.warmup)
		cfg := clientConfig{Addr: srv.Addr(), Tokens: tokens, Devices: o.devices, Concurrency: c,
			Duration: o.duration, Warmup: o.warmup, RunID: fmt.Sprintf("g%d-%d", c, time.Now().UnixNano())}
		// pg_stat_database: backends report their counters about every
		// second, so the window's figures are per committed transaction.
		var st0, st1 dbStats
		gr, err := runClient(ctx, cfg, pg,
			func() { st0, _ = readDBStats(ctx, dbURL) },
			func() { time.Sleep(600 * time.Millisecond); st1, _ = readDBStats(ctx, dbURL) })
		if err != nil {
			return err
		}
		step("c=%d: gRPC: %s", c, st1.per(st0))
		r.grpc, r.serverCPU, r.clientCPU, r.clientCPUTotal, r.machineGRPC, r.pgGRPC = gr.result, gr.serverCPU, gr.result.CPU, gr.childTotalCPU, gr.machine, gr.pg
		if gr.result.Calls == 0 {
			return fmt.Errorf("c=%d: no gRPC call completed (first error: %s)", c, gr.result.FirstError)
		}

		// pgbench is the database's own figure for the transaction: no
		// sealer takes CPU from it.
		srv.stopSealer()
		if err := vacuum(ctx, dbURL); err != nil {
			return err
		}
		step("c=%d: pgbench for %s", c, o.duration)
		st0, _ = readDBStats(ctx, dbURL)
		pr, err := runPgbench(ctx, pgbenchPath, dbURL, tmp, o, c, pg)
		if err != nil {
			return err
		}
		time.Sleep(600 * time.Millisecond)
		st1, _ = readDBStats(ctx, dbURL)
		step("c=%d: pgbench: %s", c, st1.per(st0))
		r.pgb, r.pgbenchCPU, r.machinePgbench, r.pgPgbench = pr, pr.CPU, pr.machine, pr.pg
		rows = append(rows, r)
	}
	var sc *sealerComparison
	if o.sealer {
		if sc, err = compareSealer(ctx, o, srv, tokens, dbURL); err != nil {
			return err
		}
	}
	printReport(os.Stdout, o, rows, srv)
	if sc != nil {
		sc.print(os.Stdout)
	}
	return nil
}

// writeHeapProfile writes the allocation profile to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-issue: "+format+"\n", args...)
}
