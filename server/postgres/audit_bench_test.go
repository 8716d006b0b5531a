package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// BenchmarkQueryAudit measures QueryAudit, the store method behind
// QueryEvents (the page and its own audit event in one statement), on a
// log of a million events over 30 days (HOTLINE_BENCH_AUDIT=1; server/audit's
// BenchmarkAuditQuery measures the bare SELECTs): p50 and p99 of a page of
// 50 by serial and by actor over a 7-day range (goal: p99 under 5 ms), and
// SummarizeAudit over 7 days.
func BenchmarkQueryAudit(b *testing.B) {
	if os.Getenv("HOTLINE_BENCH_AUDIT") != "1" {
		b.Skip("set HOTLINE_BENCH_AUDIT=1 to build a 1,000,000-event audit log and measure")
	}
	ctx := context.Background()
	db := openDB(b)
	owner := ownerConn(b)
	const n, actors, serials, days = 1_000_000, 200, 100_000, 30
	var have int64
	owner.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE detail = 'bench'`).Scan(&have)
	if have < n {
		start := time.Now()
		if _, err := owner.Exec(ctx, `INSERT INTO audit_events (at, actor, role, action, outcome, serial, ticket, detail)
			SELECT now() - make_interval(days => 30) + make_interval(secs => i * (30 * 86400.0 / $1)),
				'bench-' || (i * 7919 % 200), 'agent',
				CASE WHEN i % 4 = 0 THEN 'recovery.list' ELSE 'device.lookup' END,
				CASE WHEN i % 10 = 0 THEN 'refused' ELSE 'success' END,
				'JZ6OES#2017-08-01#3#DVR' || lpad((i * 104729 % 100000)::text, 13, '0'), 'T-' || i, 'bench'
			FROM generate_series(1, $1::bigint) AS i`, n); err != nil {
			b.Fatal(err)
		}
		if _, err := owner.Exec(ctx, `VACUUM ANALYZE audit_events`); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(os.Stderr, "bench: %d events in %v\n", n, time.Since(start).Round(time.Millisecond))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	end := time.Now()
	auditor := server.Actor{Subject: "bench-auditor", Role: server.RoleAuditor}
	cases := []struct {
		name   string
		filter func() server.AuditFilter
	}{
		{"by-serial", func() server.AuditFilter {
			return server.AuditFilter{Serial: fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%013d", rng.IntN(serials)), Limit: 50}
		}},
		{"by-actor-and-7-day-range", func() server.AuditFilter {
			to := end.Add(-time.Duration(rng.Int64N(int64((days - 7) * 24 * time.Hour))))
			return server.AuditFilter{Actor: fmt.Sprintf("bench-%d", rng.IntN(actors)), From: to.Add(-7 * 24 * time.Hour), To: to, Limit: 50}
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var lat []time.Duration
			for range b.N * 1000 {
				f := c.filter()
				start := time.Now()
				if _, err := db.QueryAudit(ctx, auditor, f); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
		})
	}
	b.Run("summary-7-days", func(b *testing.B) {
		for range b.N {
			if _, err := db.SummarizeAudit(ctx, auditor, end.Add(-7*24*time.Hour), end); err != nil {
				b.Fatal(err)
			}
		}
	})
}
