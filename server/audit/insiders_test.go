package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// serviceConn is one connection as the service's database login would
// use it: SET ROLE hotline_service, as every pooled connection does.
func serviceConn(tb testing.TB) *pgx.Conn {
	tb.Helper()
	conn := ownerConn(tb)
	mustExec(tb, conn, SetRoleSQL)
	return conn
}

// wantDenied fails tb unless err is PostgreSQL's permission denied (or a
// trigger's insufficient_privilege).
func wantDenied(tb testing.TB, what string, err error) {
	tb.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		tb.Fatalf("%s as %s: %v, want permission denied", what, ServiceRole, err)
	}
}

// hasProblem returns the first problem of kind in r that names eventID
// (any when 0) and whose message contains msg.
func hasProblem(r Report, kind ProblemKind, eventID int64, msg string) *Problem {
	for _, p := range r.Problems {
		if p.Kind == kind && (eventID == 0 || p.EventID == eventID) && strings.Contains(p.Message, msg) {
			return p
		}
	}
	return nil
}

// TestServiceRoleCannotDateAnEvent: the service's login tried to insert an
// event dated 30 days ahead (which made verify blame every genuine later
// event as inserted, forever). The time column is not its to write; an
// event it inserts takes the database's clock.
func TestServiceRoleCannotDateAnEvent(t *testing.T) {
	resetLog(t)
	ctx := context.Background()
	conn := serviceConn(t)
	_, err := conn.Exec(ctx, `INSERT INTO audit_events (at, actor, role, action, outcome)
		VALUES (now() + interval '30 days', 'mallory', 'agent', 'device.lookup', 'success')`)
	wantDenied(t, "INSERT of audit_events.at", err)
	var skew float64
	if err := conn.QueryRow(ctx, `INSERT INTO audit_events (actor, role, action, outcome)
		VALUES ('mallory', 'agent', 'device.lookup', 'success') RETURNING abs(extract(epoch FROM at - clock_timestamp()))::float8`).Scan(&skew); err != nil {
		t.Fatal(err)
	}
	if skew > 5 {
		t.Fatalf("an event inserted without a time is %v s off the database's clock", skew)
	}
	if err := CheckServiceRole(ctx, conn); err != nil {
		t.Fatalf("CheckServiceRole: %v", err)
	}
}

// TestServiceRoleCannotWriteSealsOrCheckpoints: a junk row in audit_seals
// stopped the sealer for good. Only the sealer's role writes seals and
// checkpoints; the service's login is refused, and the sealer (which
// writes as hotline_sealer) still seals.
func TestServiceRoleCannotWriteSealsOrCheckpoints(t *testing.T) {
	ids, s, _ := sealedLog(t)
	ctx := context.Background()
	conn := serviceConn(t)
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO audit_seals (seq, event_id, hash) VALUES (26, %d, sha256('junk'))`, ids[0]),
		`INSERT INTO audit_checkpoints (size, head, at, kid, signature)
			VALUES (26, sha256('junk'), now(), 'audit-test-1', sha512('junk'))`,
	} {
		_, err := conn.Exec(ctx, q)
		wantDenied(t, q, err)
	}
	insertEvents(t, conn, 3)
	if n := seal(t, s); n != 3 {
		t.Fatalf("sealed %d after the refused junk, want 3", n)
	}
	if r := verify(t, conn, nil); r.Err() != nil {
		t.Fatalf("verify: %v", r.Err())
	}
}

// TestEventFromTheFutureBlamesNoGenuineEvent: an owner (the service's
// login no longer can) inserts an event dated 30 days ahead. The sealer
// does not seal what it could not have seen, keeps sealing the genuine
// events after it, and verify names the forged one as "future" without
// blaming any genuine event; a change made afterwards is reported too,
// not masked by the first problem.
func TestEventFromTheFutureBlamesNoGenuineEvent(t *testing.T) {
	ids, s, _ := sealedLog(t)
	ctx := context.Background()
	owner := ownerConn(t)
	var forged int64
	if err := owner.QueryRow(ctx, `INSERT INTO audit_events (at, actor, role, action, outcome)
		VALUES (now() + interval '30 days', 'mallory', 'supervisor', 'device.release', 'success') RETURNING id`).Scan(&forged); err != nil {
		t.Fatal(err)
	}
	pool := openPool(t, true)
	later := insertEvents(t, pool, 4)
	if n := seal(t, s); n != 4 {
		t.Fatalf("sealed %d, want the 4 genuine events and not the future one", n)
	}
	disableTriggers(t, owner, false)
	mustExec(t, owner, fmt.Sprintf(`UPDATE audit_events SET actor = 'someone-else' WHERE id = %d`, ids[2]))

	r := verify(t, pool, nil)
	for _, p := range r.Problems {
		t.Logf("problem: %v", p)
	}
	if hasProblem(r, ProblemFuture, forged, "after the database's clock") == nil {
		t.Errorf("the forged future event %d is not reported as future", forged)
	}
	if hasProblem(r, ProblemChanged, ids[2], "a field was changed") == nil {
		t.Errorf("the change of event %d after it is not reported", ids[2])
	}
	for _, id := range later {
		for _, p := range r.Problems {
			if p.EventID == id {
				t.Errorf("genuine event %d blamed: %v", id, p)
			}
		}
	}
}

// TestFutureEventSealedBeforeTheFixIsNamed: a log poisoned by an older
// sealer (which sealed the future event): verify names that event, by the
// checkpoint that sealed it, and does not blame the genuine events sealed
// after it.
func TestFutureEventSealedBeforeTheFixIsNamed(t *testing.T) {
	_, s, _ := sealedLog(t)
	ctx := context.Background()
	owner := ownerConn(t)
	var forged int64
	if err := owner.QueryRow(ctx, `INSERT INTO audit_events (at, actor, role, action, outcome)
		VALUES (now() + interval '30 days', 'mallory', 'supervisor', 'device.release', 'success') RETURNING id`).Scan(&forged); err != nil {
		t.Fatal(err)
	}
	// What the old sealer did: seal it, signing a checkpoint over it.
	var leaf Hash
	rows, err := owner.Query(ctx, `SELECT `+eventColumns+` FROM audit_events e WHERE id = $1`, forged)
	if err != nil {
		t.Fatal(err)
	}
	var lf leafer
	for rows.Next() {
		leaf = lf.leaf(rows.RawValues())
	}
	rows.Close()
	c := latest(t, owner)
	h := Next(c.Head, leaf, c.Size+1)
	cp := SignCheckpoint(c.Size+1, h, c.Time, auditKID, auditKey)
	mustExec(t, owner, "SET ROLE "+SealerRole)
	if _, err := owner.Exec(ctx, `INSERT INTO audit_seals (seq, event_id, hash) VALUES ($1, $2, $3)`, c.Size+1, forged, h[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, sealCheckpointSQL, cp.Size, cp.Head[:], cp.Time, cp.KID, cp.Signature); err != nil {
		t.Fatal(err)
	}
	mustExec(t, owner, "RESET ROLE")
	pool := openPool(t, true)
	later := insertEvents(t, pool, 3)
	if n := seal(t, NewSealer(pool, auditKID, auditKey)); n != 3 {
		t.Fatalf("sealed %d, want 3", n)
	}
	_ = s
	r := verify(t, pool, nil)
	if p := hasProblem(r, ProblemFuture, forged, "was sealed by the checkpoint of"); p == nil {
		t.Fatalf("problems %v: the sealed future event %d is not named", r.Problems, forged)
	}
	for _, p := range r.Problems {
		for _, id := range later {
			if p.EventID == id {
				t.Errorf("genuine event %d blamed: %v", id, p)
			}
		}
	}
}

// TestVerifyReportsEveryProblemUpToTheCap: 150 changed events are 100
// problems and a note that there were more.
func TestVerifyReportsEveryProblemUpToTheCap(t *testing.T) {
	resetLog(t)
	pool := openPool(t, true)
	insertEvents(t, pool, 150)
	seal(t, NewSealer(pool, auditKID, auditKey))
	owner := ownerConn(t)
	disableTriggers(t, owner, false)
	mustExec(t, owner, `UPDATE audit_events SET detail = 'rewritten'`)
	r := verify(t, pool, nil)
	if len(r.Problems) != MaxProblems || !r.Truncated || r.FirstProblem != r.Problems[0] {
		t.Fatalf("%d problems, truncated %v, want %d and true", len(r.Problems), r.Truncated, MaxProblems)
	}
}

// TestOwnerDeletesTheTailAndTheSealerRefuses: an owner deleted events with
// their seals and checkpoints. The running sealer, and after a restart a
// fresh one, refuse to extend a chain that does not continue the
// checkpoint published to the witness; each records an
// audit.chain_rewritten event; verify against the witness names it.
func TestOwnerDeletesTheTailAndTheSealerRefuses(t *testing.T) {
	resetLog(t)
	ctx := context.Background()
	pool := openPool(t, true)
	w := DirWitness{Dir: filepath.Join(t.TempDir(), "witness")}
	newSealer := func() *Sealer {
		s := NewSealer(pool, auditKID, auditKey)
		s.Witness = w
		return s
	}
	s := newSealer()
	ids := insertEvents(t, pool, 20)
	seal(t, s)
	insertEvents(t, pool, 5)
	seal(t, s)
	pub, ok, err := w.Last(ctx, trusted)
	if err != nil || !ok || pub.Size != 25 {
		t.Fatalf("witness Last = %v, %v, %v: want the checkpoint of size 25", pub, ok, err)
	}
	b, _ := os.ReadFile(filepath.Join(w.Dir, WitnessFileName))
	if n := strings.Count(string(b), "\n"); n != 2 {
		t.Fatalf("witness holds %d lines, want one per checkpoint (2)", n)
	}

	owner := ownerConn(t)
	disableTriggers(t, owner, true)
	mustExec(t, owner, `DELETE FROM audit_checkpoints WHERE size > 20`, `DELETE FROM audit_seals WHERE seq > 20`,
		fmt.Sprintf(`DELETE FROM audit_events WHERE id > %d`, ids[19]))
	for _, tb := range auditTables {
		mustExec(t, owner, "ALTER TABLE "+tb+" ENABLE TRIGGER ALL")
	}
	insertEvents(t, pool, 2) // the history the owner wants sealed instead

	for _, sealer := range []struct {
		name string
		s    *Sealer
	}{{"running", s}, {"restarted", newSealer()}} {
		if n, err := sealer.s.SealOnce(ctx); !errors.Is(err, ErrRewritten) || n != 0 ||
			sealer.name == "restarted" && !strings.Contains(err.Error(), "witness's checkpoint") {
			t.Fatalf("%s sealer: SealOnce = %d, %v; want 0 and ErrRewritten", sealer.name, n, err)
		} else {
			t.Logf("%s sealer: %v", sealer.name, err)
		}
	}
	var events int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE action = $1 AND actor = $2 AND outcome = 'refused'`,
		ActionChainRewritten, SealerActor).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if events != 2 {
		t.Errorf("%d %s events, want one per sealer that found the rewrite (2)", events, ActionChainRewritten)
	}
	if _, err := s.SealOnce(ctx); !errors.Is(err, ErrRewritten) {
		t.Fatalf("again: %v", err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE action = $1`, ActionChainRewritten).Scan(&events); err != nil || events != 2 {
		t.Errorf("%d %s events after a retry, want still 2 (once per finding): %v", events, ActionChainRewritten, err)
	}
	if r := verify(t, pool, nil); hasProblem(r, ProblemTruncated, 0, "witness") != nil {
		t.Fatalf("without the witness verify cannot know: %v", r.Problems)
	}
	r := verify(t, pool, nil, WithPublished(pub))
	if hasProblem(r, ProblemTruncated, 0, "the witness's checkpoint") == nil {
		t.Fatalf("verify with the witness: %v, want truncated naming the witness", r.Problems)
	}
}

// TestWitnessSkipsATornLine: a crash mid-append leaves a torn line; Last
// returns the checkpoint before it and the next Publish starts a line of
// its own.
func TestWitnessSkipsATornLine(t *testing.T) {
	ctx := context.Background()
	w := DirWitness{Dir: t.TempDir()}
	c1 := SignCheckpoint(1, Hash{1}, now, auditKID, auditKey)
	if err := w.Publish(ctx, c1); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(w.Dir, WitnessFileName), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"size":2,"head":"00`)
	f.Close()
	if c, ok, err := w.Last(ctx, trusted); err != nil || !ok || c.Size != 1 {
		t.Fatalf("Last = %v, %v, %v, want size 1", c, ok, err)
	}
	c3 := SignCheckpoint(3, Hash{3}, now, auditKID, auditKey)
	if err := w.Publish(ctx, c3); err != nil {
		t.Fatal(err)
	}
	if c, ok, err := w.Last(ctx, trusted); err != nil || !ok || c.Size != 3 {
		t.Fatalf("Last = %v, %v, %v, want size 3", c, ok, err)
	}
	forged := SignCheckpoint(4, Hash{4}, now, auditKID, attackerKey)
	if err := w.Publish(ctx, forged); err != nil {
		t.Fatal(err)
	}
	if c, _, _ := w.Last(ctx, trusted); c.Size != 3 {
		t.Fatalf("Last = size %d: a checkpoint signed by an untrusted key was taken", c.Size)
	}
}
