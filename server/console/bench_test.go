package console

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dvrhotline/hotline/server"
)

// benchRows is how many devices and audit events the page benchmark
// builds (HOTLINE_BENCH_CONSOLE_ROWS; make bench-console: 1,000,000).
func benchRows() int {
	if n, err := strconv.Atoi(os.Getenv("HOTLINE_BENCH_CONSOLE_ROWS")); err == nil && n > 0 {
		return n
	}
	return 20000
}

// fillBench adds n generated devices and n audit events (once per database).
func fillBench(b *testing.B, n int) {
	b.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testURL)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	var have int
	pool.QueryRow(ctx, `SELECT count(*) FROM devices WHERE serial LIKE 'BENCHX#%'`).Scan(&have)
	if have >= n {
		return
	}
	start := time.Now()
	if _, err := pool.Exec(ctx, `INSERT INTO devices (serial, device_id, model, production_date, firmware, owner_contact)
		SELECT 'BENCHX#2021-05-05#1#DVRB' || lpad(i::text, 10, '0'), 'DVRB' || lpad(i::text, 10, '0'), 'WBXHD082S2T', '2021-05-05', 'V4.0.1', 'owner' || i || '@example.com'
		FROM generate_series($1::int + 1, $2::int) i`, have, n); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO audit_events (at, actor, role, client_addr, action, outcome, serial, ticket, detail)
		SELECT now() - make_interval(secs => i), 'agent' || (i % 50), 'agent', 'console:127.0.0.1:1', 
		       CASE WHEN i % 3 = 0 THEN 'device.lookup' ELSE 'device.owner_check' END,
		       CASE WHEN i % 7 = 0 THEN 'refused' ELSE 'success' END,
		       'BENCHX#2021-05-05#1#DVRB' || lpad((i % $1::int + 1)::text, 10, '0'), 'T-' || i, 'bench'
		FROM generate_series(1, $1::int) i`, n); err != nil {
		b.Fatal(err)
	}
	pool.Exec(ctx, `ANALYZE devices; ANALYZE audit_events`)
	b.Logf("built %d devices and %d audit events in %s", n, n, time.Since(start).Round(time.Millisecond))
}

// percentiles returns the p50 and p99 of ds in milliseconds.
func percentiles(ds []time.Duration) (p50, p99 float64) {
	slices.Sort(ds)
	at := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))]) / 1e6 }
	return at(0.50), at(0.99)
}

// BenchmarkConsolePages measures the server time to answer the device page
// and the audit query page (handler, service, PostgreSQL, template) over a
// registry and a log of benchRows rows each, against a baseline measured in
// the same run: the service calls the page makes, without the console.
// It reports p50/p99 in ms, the ratio of page p99 to baseline p99, and the
// page's weight without cache (HTML plus its style sheet and script).
// Goals: p99 < 20 ms, weight < 150 KB.
func BenchmarkConsolePages(b *testing.B) {
	n := benchRows()
	fillBench(b, n)
	h := newHarness(b, Config{})
	ctx := context.Background()
	agent := server.Actor{Subject: "bench-agent", Role: server.RoleAgent, ClientAddr: "console:bench"}
	auditor := server.Actor{Subject: "bench-auditor", Role: server.RoleAuditor, ClientAddr: "console:bench"}
	sessA := h.signIn("bench-agent", server.RoleAgent)
	sessU := h.signIn("bench-auditor", server.RoleAuditor)
	handler := h.c.Handler()
	weight := func(body int) float64 {
		css, _ := staticFS.ReadFile("static/console.css")
		js, _ := staticFS.ReadFile("static/console.js")
		return float64(body+len(css)+len(js)) / 1024
	}
	id := func(i int) string { return fmt.Sprintf("DVRB%010d", i%n+1) }

	pages := []struct {
		name     string
		baseline func(i int) error
		path     func(i int) string
		cookie   string
	}{
		{"device", func(i int) error {
			v, err := h.svc.LookupDevice(ctx, agent, id(i))
			if err == nil {
				_, err = h.svc.Issuances(ctx, agent, v.Device.Serial, historyPage, "")
			}
			return err
		}, func(i int) string { return "/devices/" + id(i) }, sessA},
		{"audit", func(i int) error {
			_, _, err := h.svc.QueryAudit(ctx, auditor, server.AuditFilter{Actor: "agent" + strconv.Itoa(i%50), Limit: 50})
			return err
		}, func(i int) string { return "/audit?actor=agent" + strconv.Itoa(i%50) }, sessU},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			var base, page []time.Duration
			var body int
			i := 0
			for b.Loop() {
				t0 := time.Now()
				if err := p.baseline(i); err != nil {
					b.Fatal(err)
				}
				base = append(base, time.Since(t0))
				req := httptest.NewRequest("GET", p.path(i), nil)
				req.AddCookie(&http.Cookie{Name: sessionCookie, Value: p.cookie})
				rec := httptest.NewRecorder()
				t0 = time.Now()
				handler.ServeHTTP(rec, req)
				page = append(page, time.Since(t0))
				if rec.Code != http.StatusOK {
					b.Fatalf("GET %s: %d", p.path(i), rec.Code)
				}
				body = rec.Body.Len()
				i += 7919
			}
			b50, b99 := percentiles(base)
			p50, p99 := percentiles(page)
			b.ReportMetric(p50, "p50-ms")
			b.ReportMetric(p99, "p99-ms")
			b.ReportMetric(b99, "baseline-p99-ms")
			b.ReportMetric(p99/b99, "x-baseline-p99")
			b.ReportMetric(weight(body), "page-KB")
			b.ReportMetric(0, "ns/op")
			b.Logf("%s page over %d rows: p50 %.2f ms p99 %.2f ms; service calls alone p50 %.2f ms p99 %.2f ms (%.2fx); weight %.1f KB (goals: p99 < 20 ms, < 150 KB)",
				p.name, n, p50, p99, b50, b99, p99/b99, weight(body))
		})
	}
}
