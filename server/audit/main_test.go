package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// testURL is the package's own database, created and migrated by TestMain.
// Tests that rebuild the audit log (resetLog) do not run in parallel.
var testURL string

func TestMain(m *testing.M) {
	pgtest.Main(m, "server_audit", &testURL, postgres.Migrate)
}

// The audit keys: the keyring's (trusted) and an attacker's.
var (
	auditKID    = "audit-test-1"
	auditKey    = ed25519.NewKeyFromSeed(seed("audit"))
	attackerKey = ed25519.NewKeyFromSeed(seed("attacker"))
	trusted     = map[string]ed25519.PublicKey{auditKID: auditKey.Public().(ed25519.PublicKey)}
)

func seed(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

// openPool opens a pool as the database owner (the test cluster's
// superuser), closed when tb ends. service runs it as ServiceRole.
func openPool(tb testing.TB, service bool) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(testURL)
	if err != nil {
		tb.Fatal(err)
	}
	if service {
		cfg.AfterConnect = SetServiceRole
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// ownerConn is one connection as the owner, the attacker with DBA rights.
func ownerConn(tb testing.TB) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), testURL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// execer is a pool, a connection or a transaction.
type execer interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}

// mustExec runs statements on conn, failing tb on the first error.
func mustExec(tb testing.TB, conn execer, sqls ...string) {
	tb.Helper()
	for _, q := range sqls {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
	}
}

// disableTriggers is what an owner does first to tamper: the append-only
// triggers refuse everyone, but the owner may switch them off. all also
// switches off the foreign keys (superuser only).
func disableTriggers(tb testing.TB, conn *pgx.Conn, all bool) {
	tb.Helper()
	which := "USER"
	if all {
		which = "ALL"
	}
	for _, t := range auditTables {
		mustExec(tb, conn, "ALTER TABLE "+t+" DISABLE TRIGGER "+which)
	}
}

// resetLog empties the audit log (triggers switched off for it and back
// on), so that each test starts from a clean chain.
func resetLog(tb testing.TB) {
	tb.Helper()
	conn := ownerConn(tb)
	disableTriggers(tb, conn, false)
	mustExec(tb, conn, "TRUNCATE audit_checkpoints, audit_seals, audit_events")
	for _, t := range auditTables {
		mustExec(tb, conn, "ALTER TABLE "+t+" ENABLE TRIGGER ALL")
	}
}

// insertEventsSQL appends $1 varied events at the current time: some
// optional fields NULL, some empty, some set.
const insertEventsSQL = `INSERT INTO audit_events
	(actor, role, client_addr, action, outcome, serial, ticket, method, reason, request_id, detail)
SELECT 'agent-' || (i % 7), 'agent', CASE WHEN i % 5 <> 0 THEN '10.0.0.' || (i % 200) || ':4242' END,
	CASE WHEN i % 4 = 0 THEN 'recovery.list' ELSE 'device.lookup' END,
	CASE WHEN i % 10 = 0 THEN 'refused' ELSE 'success' END,
	'JZ6OES#2017-08-01#3#DVR' || lpad((i % 97)::text, 13, '0'), 'T-' || i,
	CASE WHEN i % 3 = 0 THEN (i % 4 + 1)::smallint END, CASE WHEN i % 6 = 0 THEN '' END,
	md5(i::text), 'n=' || i
FROM generate_series(1, $1::int) AS i`

// insertEvents appends n events and returns their ids in order.
func insertEvents(tb testing.TB, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, n int) []int64 {
	tb.Helper()
	rows, err := q.Query(context.Background(), insertEventsSQL+" RETURNING id", n)
	if err != nil {
		tb.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		tb.Fatal(err)
	}
	return ids
}

// seal runs SealOnce and fails tb on an error.
func seal(tb testing.TB, s *Sealer) int {
	tb.Helper()
	n, err := s.SealOnce(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// verify runs Verify and fails tb on an error (not on a problem).
func verify(tb testing.TB, db DB, external *Checkpoint, opts ...Option) Report {
	tb.Helper()
	r, err := Verify(context.Background(), db, trusted, external, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// latest returns the newest stored checkpoint, which the test keeps as the
// external copy an auditor would.
func latest(tb testing.TB, q Querier) *Checkpoint {
	tb.Helper()
	c, ok, err := Latest(context.Background(), q)
	if err != nil || !ok {
		tb.Fatalf("Latest = %v, %v, %v", c, ok, err)
	}
	return &c
}

// now is a fixed reference for tests that need a time.
var now = time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
