package postgres_test

import (
	"context"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// TestBenchScript runs bench/issue.sql under pgbench against a database of
// its own, so the script the issue benchmark compares against keeps working
// with the schema, and leaves the invariants DB.Issue keeps: sequences
// without gaps, one success event per issuance.
func TestBenchScript(t *testing.T) {
	pgbench, err := exec.LookPath("pgbench")
	if err != nil {
		t.Skip("pgbench is not installed")
	}
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql is not installed")
	}
	ctx := context.Background()
	url := pgtest.NewDatabase(t, "bench_script")
	if err := postgres.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil || strings.Contains(string(out), "ERROR") {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run(psql, "-q", "-v", "ON_ERROR_STOP=1", "-v", "ndevices=20", "-f", "bench/setup.sql", url)
	run(pgbench, "-n", "-M", "prepared", "-c", "4", "-t", "25", "-D", "ndevices=20", "-D", "nagents=10",
		"-f", "bench/issue.sql", url)

	// The Go side then continues every device's sequence.
	db, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	owner := ownerConnTo(t, url)
	var issued, events, gaps int
	err = owner.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM issuances),
		(SELECT count(*) FROM audit_events WHERE action = 'recovery.issue' AND outcome = 'success'),
		(SELECT count(*) FROM devices d WHERE last_sequence <> (SELECT count(*) FROM issuances i WHERE i.serial = d.serial))`).
		Scan(&issued, &events, &gaps)
	if err != nil {
		t.Fatal(err)
	}
	if issued != 100 || events != 100 || gaps != 0 {
		t.Fatalf("after pgbench: %d issuances, %d events, %d devices with gaps; want 100, 100, 0", issued, events, gaps)
	}
	lim := server.Limits{PerDevice: 1000, PerAgent: 1000}
	iss, err := db.Issue(ctx, agent("go-agent"), issueRequest("BENCH0#2020-01-01#1#DVR0000000000001"), lim, policy)
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	owner.QueryRow(ctx, `SELECT count(*) FROM issuances WHERE serial = $1`, iss.Serial).Scan(&want)
	if iss.Sequence != want {
		t.Errorf("Go issued sequence %d after pgbench, want %d", iss.Sequence, want)
	}
}

// BenchmarkIssue measures DB.Issue's success path with GOMAXPROCS issuers
// (-cpu sets it; the pool has at most 4 connections unless the URL says
// pool_max_conns), a random device of 200 each time and limits that never
// bite; compare with bench/issue.sql under pgbench at the same concurrency.
func BenchmarkIssue(b *testing.B) {
	ctx := context.Background()
	db := openDB(b)
	const devices = 200
	serials := make([]string, devices)
	for i := range serials {
		serials[i] = registerDevice(b, db, "")
	}
	lim := server.Limits{PerDevice: 1 << 30, PerAgent: 1 << 30}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		a := agent(newName("bench"))
		for pb.Next() {
			s := serials[rand.IntN(devices)]
			if _, err := db.Issue(ctx, a, issueRequest(s), lim, policy); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
