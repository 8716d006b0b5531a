package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// createDatabase makes a fresh database on the server of adminURL, as the
// tests do (server/postgres/pgtest), and returns its URL and how to drop it.
func createDatabase(ctx context.Context, adminURL string) (string, func(context.Context) error, error) {
	// pgtest reads the administrative URL from its environment variable.
	if err := os.Setenv(pgtest.EnvURL, adminURL); err != nil {
		return "", nil, err
	}
	return pgtest.Create(ctx, "bench_issue")
}

// prepareDatabase migrates and registers the devices issue.sql expects,
// with setup.sql itself (its psql variable :ndevices substituted).
func prepareDatabase(ctx context.Context, dbURL, setupFile string, devices int) error {
	step("migrating")
	if err := postgres.Migrate(ctx, dbURL); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	b, err := os.ReadFile(setupFile)
	if err != nil {
		return fmt.Errorf("%w (run from the repository's root, or pass -setup)", err)
	}
	sql := strings.ReplaceAll(string(b), ":ndevices", strconv.Itoa(devices))
	step("registering %d devices (%s)", devices, setupFile)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", setupFile, err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM devices WHERE serial LIKE 'BENCH0#%'`).Scan(&n); err != nil {
		return err
	}
	if n != devices {
		return fmt.Errorf("%s registered %d devices, want %d", setupFile, n, devices)
	}

	// A history: one issuance per device two days ago, with its event,
	// outside every limit window. Planned against empty tables, the issue
	// transaction's statements get generic plans that scan issuances
	// sequentially, and pgx keeps its prepared statements (and PostgreSQL
	// their plans) for the connection's life: the first phase would then
	// measure that, and not the issue path of a service in use.
	step("recording a history of one issuance per device, outside the limit windows")
	_, err = conn.Exec(ctx, `WITH d AS (
			UPDATE devices SET last_sequence = 1, last_issued_at = now() - interval '2 days'
			WHERE serial LIKE 'BENCH0#%' AND last_sequence = 0 RETURNING serial, last_issued_at
		), i AS (
			INSERT INTO issuances (id, request_id, serial, sequence, key_generation, signing_kid,
				issued_at, expires_at, actor, actor_role, ticket, method)
			SELECT gen_random_uuid(), 'history-' || serial, serial, 1, 1, 'history', last_issued_at,
				last_issued_at + interval '24 hours', 'history-agent-' || (1 + random() * 199)::int, 'agent', 'HIST-1', 1
			FROM d RETURNING id, request_id, serial, actor
		)
		INSERT INTO audit_events (actor, role, action, outcome, serial, ticket, method, request_id, issuance_id, detail)
		SELECT actor, 'agent', 'recovery.issue', 'success', serial, 'HIST-1', 1, request_id, id, 'seq=1' FROM i`)
	if err != nil {
		return fmt.Errorf("recording a history: %w", err)
	}
	return nil
}

// vacuum brings the tables' statistics and visibility maps up to date, so
// that each phase starts from the same kind of state (and autovacuum, after
// the sealer's inserts, does not start in the middle of one).
func vacuum(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, `VACUUM (ANALYZE) devices, issuances, audit_events, audit_seals, audit_checkpoints`)
	return err
}

// lookPgbench finds pgbench on PATH or in Debian's PostgreSQL folders.
func lookPgbench(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if p, err := exec.LookPath("/usr/bin/pgbench"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("pgbench not found (%q): install PostgreSQL's client tools (Debian: postgresql-client) or pass -pgbench", name)
}

// redactURL hides a password in a database URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// dbStats are pg_stat_database's counters for the benchmark database: how
// much work each phase asked of PostgreSQL, per transaction.
type dbStats struct {
	commits, returned, fetched, hit, inserted, updated float64
}

func readDBStats(ctx context.Context, dbURL string) (dbStats, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return dbStats{}, err
	}
	defer conn.Close(context.Background())
	// The counters are sent to the stats system at transaction end with
	// some delay; ask for a fresh snapshot.
	var s dbStats
	err = conn.QueryRow(ctx, `SELECT xact_commit, tup_returned, tup_fetched, blks_hit, tup_inserted, tup_updated
		FROM pg_stat_database WHERE datname = current_database()`).
		Scan(&s.commits, &s.returned, &s.fetched, &s.hit, &s.inserted, &s.updated)
	return s, err
}

// per describes the work between a and b per committed transaction.
func (b dbStats) per(a dbStats) string {
	d := max(b.commits-a.commits, 1)
	return fmt.Sprintf("per transaction: %.1f rows returned, %.1f fetched, %.1f inserted, %.1f updated, %.0f blocks hit",
		(b.returned-a.returned)/d, (b.fetched-a.fetched)/d, (b.inserted-a.inserted)/d, (b.updated-a.updated)/d, (b.hit-a.hit)/d)
}
