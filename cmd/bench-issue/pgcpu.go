package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// pgCPU measures the CPU PostgreSQL spends, when it runs on this machine:
// the postmaster's own and its reaped children's time (a backend's whole
// CPU lands in the postmaster's cutime/cstime when it exits, which is how
// pgbench's short-lived backends are counted) plus the live children's.
// Live backends of other databases (other test runs on the same cluster)
// are left out; their reaped time cannot be, so the figure may include a
// little of theirs.
type pgCPU struct {
	postmaster int
	db         string
}

// backendRE matches a client backend's title: "postgres: [CLUSTER: ]USER DB HOST(PORT) ...".
var backendRE = regexp.MustCompile(`^postgres: (?:\S+: )?\S+ (\S+) (\S+\(\d+\)|\[local\])`)

// findPostgres returns a pgCPU for dbURL's server, or nil when the server
// is not a process on this machine that /proc shows.
func findPostgres(ctx context.Context, dbURL string) *pgCPU {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil
	}
	defer conn.Close(context.Background())
	var pid int
	var db string
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid(), current_database()`).Scan(&pid, &db); err != nil {
		return nil
	}
	f, ok := procStat(pid)
	if !ok || !strings.HasPrefix(cmdline(pid), "postgres: ") {
		return nil // another machine, or a container's PID namespace
	}
	ppid, _ := strconv.Atoi(f[1])
	return &pgCPU{postmaster: ppid, db: db}
}

// seconds is PostgreSQL's CPU so far, as above.
func (p *pgCPU) seconds() float64 {
	if p == nil {
		return 0
	}
	f, ok := procStat(p.postmaster)
	if !ok {
		return 0
	}
	total := ticks(f, 11) + ticks(f, 12) + ticks(f, 13) + ticks(f, 14)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		f, ok := procStat(pid)
		if !ok || f[1] != strconv.Itoa(p.postmaster) {
			continue
		}
		if m := backendRE.FindStringSubmatch(cmdline(pid)); m != nil && m[1] != p.db {
			continue
		}
		total += ticks(f, 11) + ticks(f, 12)
	}
	return total / clockTicks
}

// procStat returns /proc/PID/stat's fields after the command name: [0] is
// the state, [1] the parent, [11] utime, [12] stime, [13] cutime, [14] cstime.
func procStat(pid int) ([]string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, false
	}
	f := strings.Fields(string(b[i+1:]))
	return f, len(f) > 14
}

func ticks(f []string, i int) float64 {
	v, _ := strconv.ParseFloat(f[i], 64)
	return v
}

func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
}
