package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// pgbenchResult is one pgbench run's figures.
type pgbenchResult struct {
	// TPS is pgbench's own "tps = ... (without initial connection time)".
	TPS float64
	// Transactions and Failed are as pgbench counts them.
	Transactions, Failed int
	// P50, P99 and Mean come from the per-transaction log (-l).
	P50, P99, Mean time.Duration
	// CPU is pgbench's user+system CPU seconds (ProcessState).
	CPU float64
	// machine is every CPU's busy seconds while pgbench ran.
	machine float64
	// pg is PostgreSQL's CPU seconds while pgbench ran (0 when not local).
	pg float64
	// Command is the command line, for the report.
	Command string
}

var (
	tpsRE    = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	txRE     = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	failedRE = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// runPgbench runs the issue script with c clients and c threads for
// o.duration, logging every transaction's latency.
func runPgbench(ctx context.Context, pgbench, dbURL, tmp string, o *options, c int, pg *pgCPU) (pgbenchResult, error) {
	prefix := filepath.Join(tmp, fmt.Sprintf("pgbench-c%d", c))
	args := []string{"-n", "-M", "prepared", "-c", strconv.Itoa(c), "-j", strconv.Itoa(c),
		"-T", strconv.Itoa(int(o.duration / time.Second)),
		"-D", "ndevices=" + strconv.Itoa(o.devices), "-D", "nagents=" + strconv.Itoa(o.agents),
		"-l", "--log-prefix=" + prefix, "-f", o.script, dbURL}
	cmd := exec.CommandContext(ctx, pgbench, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	busy0, pg0 := machineBusy(), pg.seconds()
	err := cmd.Run()
	r := pgbenchResult{machine: machineBusy() - busy0, pg: pg.seconds() - pg0,
		Command: "pgbench " + strings.Join(args[:len(args)-1], " ") + " $URL"}
	if err != nil {
		return r, fmt.Errorf("pgbench: %w\n%s", err, out.String())
	}
	r.CPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	m := tpsRE.FindStringSubmatch(out.String())
	if m == nil {
		return r, fmt.Errorf("pgbench printed no tps:\n%s", out.String())
	}
	r.TPS, _ = strconv.ParseFloat(m[1], 64)
	if m := txRE.FindStringSubmatch(out.String()); m != nil {
		r.Transactions, _ = strconv.Atoi(m[1])
	}
	if m := failedRE.FindStringSubmatch(out.String()); m != nil {
		r.Failed, _ = strconv.Atoi(m[1])
	}
	if strings.Contains(out.String(), "ERROR") || r.Failed > 0 {
		return r, fmt.Errorf("pgbench reported errors:\n%s", out.String())
	}
	lat, err := readPgbenchLogs(prefix)
	if err != nil {
		return r, err
	}
	r.P50, r.P99, r.Mean = percentiles(lat)
	return r, nil
}

// readPgbenchLogs reads the latencies of every per-transaction log file
// of prefix ("client_id transaction_no time script_no time_epoch time_us
// ...", time in microseconds; "failed" or "skipped" for the others).
func readPgbenchLogs(prefix string) ([]time.Duration, error) {
	files, err := filepath.Glob(prefix + ".*")
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("pgbench left no transaction log %s.*", prefix)
	}
	var lat []time.Duration
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 3 {
				continue
			}
			us, err := strconv.ParseInt(fs[2], 10, 64)
			if err != nil {
				continue
			}
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return lat, nil
}
