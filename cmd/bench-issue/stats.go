package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/stat (100 on every Linux
// architecture Go supports).
const clockTicks = 100

// machineBusy is the seconds every CPU spent not idle since boot
// (/proc/stat), 0 where there is no /proc.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fs := strings.Fields(line)
	if len(fs) < 6 || fs[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, f := range fs[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		busy += v
	}
	return busy / clockTicks
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// printReport prints the comparison and the CPU table.
func printReport(w io.Writer, o *options, rows []row, srv *benchServer) {
	fmt.Fprintf(w, "\nIssueTemporaryPassword over gRPC vs pgbench on the same SQL transaction\n")
	fmt.Fprintf(w, "(%d devices, %d agents per side, %s per phase, server pool %d connections, %d CPUs, GOMAXPROCS %d)\n\n",
		o.devices, o.agents, o.duration, srv.poolConns, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "%-4s | %10s %8s %8s | %10s %8s %8s | %s\n", "c", "gRPC/s", "p50 ms", "p99 ms", "pgbench/s", "p50 ms", "p99 ms", "gRPC/pgbench")
	fmt.Fprintf(w, "%s\n", strings.Repeat("-", 84))
	for _, r := range rows {
		ratio := r.grpc.Rate() / r.pgb.TPS
		verdict := "ok"
		if ratio < 0.8 {
			verdict = "BELOW 0.8"
		}
		fmt.Fprintf(w, "%-4d | %10.0f %8s %8s | %10.0f %8s %8s | %.2f %s\n", r.c,
			r.grpc.Rate(), ms(r.grpc.P50), ms(r.grpc.P99), r.pgb.TPS, ms(r.pgb.P50), ms(r.pgb.P99), ratio, verdict)
	}
	fmt.Fprintf(w, "\nCPU seconds (user+system) over each %s window:\n", o.duration)
	fmt.Fprintf(w, "%-4s | %-44s | %-28s\n", "", "gRPC phase", "pgbench phase")
	fmt.Fprintf(w, "%-4s | %8s %8s %8s %8s %8s | %8s %8s %8s\n", "c", "server", "client", "(whole)", "postgres", "machine", "pgbench", "postgres", "machine")
	fmt.Fprintf(w, "%s\n", strings.Repeat("-", 84))
	for _, r := range rows {
		fmt.Fprintf(w, "%-4d | %8.2f %8.2f %8.2f %8.2f %8.2f | %8.2f %8.2f %8.2f\n", r.c,
			r.serverCPU, r.clientCPU, r.clientCPUTotal, r.pgGRPC, r.machineGRPC, r.pgbenchCPU, r.pgPgbench, r.machinePgbench)
	}
	fmt.Fprintf(w, "\nCPU µs per issuance (per transaction):\n")
	fmt.Fprintf(w, "%-4s | %8s %8s %8s %8s | %8s %8s %8s | %s\n", "c", "server", "client", "postgres", "total", "pgbench", "postgres", "total", "pgbench total / gRPC total")
	fmt.Fprintf(w, "%s\n", strings.Repeat("-", 100))
	for _, r := range rows {
		n, m := float64(max(1, r.grpc.Calls))/1e6, float64(max(1, r.pgb.Transactions))/1e6
		gt := (r.serverCPU + r.clientCPU + r.pgGRPC) / n
		pt := (r.pgbenchCPU + r.pgPgbench) / m
		fmt.Fprintf(w, "%-4d | %8.0f %8.0f %8.0f %8.0f | %8.0f %8.0f %8.0f | %.2f\n", r.c,
			r.serverCPU/n, r.clientCPU/n, r.pgGRPC/n, gt, r.pgbenchCPU/m, r.pgPgbench/m, pt, pt/gt)
	}
	errs := false
	for _, r := range rows {
		if len(r.grpc.Errors) > 0 {
			errs = true
			fmt.Fprintf(w, "c=%d: gRPC errors %v, first: %s\n", r.c, r.grpc.Errors, r.grpc.FirstError)
		}
	}
	if !errs {
		fmt.Fprintf(w, "\nNo gRPC call failed; pgbench reported no failed transaction.\n")
	}
	fmt.Fprintf(w, `
server:  this process (the server as serve builds it, audit sealer included), getrusage over the window.
client:  the gRPC load generator, a child process, getrusage over its window; (whole) is its
         ProcessState, warm-up and connection set-up included.
pgbench: its ProcessState.
postgres: the postmaster, its background processes and this database's backends (/proc; when
         PostgreSQL runs on this machine). machine: all CPUs' busy time (/proc/stat), which
         includes anything else running here.
On a machine whose CPUs are all busy, throughput follows CPU per issuance: the last column is
the ratio that alone would give.
With %d CPUs the load generator, the server, pgbench and PostgreSQL all compete for the same
cores: every CPU second the client or pgbench spends is taken from the server and PostgreSQL.
pgbench command: %s
`, runtime.NumCPU(), rows[len(rows)-1].pgb.Command)
}
