package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/audit"
)

// serviceConn is a connection as the service's database login uses it
// (SET ROLE hotline_service): what an insider holding that login has.
func serviceConn(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(context.Background(), audit.SetRoleSQL); err != nil {
		t.Fatal(err)
	}
	return conn
}

// ownerConn is a connection as the database owner.
func ownerConn(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// denied fails t unless err is PostgreSQL's insufficient_privilege.
func denied(t *testing.T, what string, err error) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Errorf("%s as %s: %v, want permission denied", what, audit.ServiceRole, err)
	}
}

// newDevice registers a fresh device and returns its serial.
func newDevice(t *testing.T, addr, prov string) string {
	t.Helper()
	var r [5]byte
	rand.Read(r[:])
	sn := fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%X", r)
	if code, _, errs := run(t, addr, prov, "devices", "add", sn, "--model", "WBXHD041S1T", "--firmware", "V4.0.1", "--owner", "jane@example.com"); code != 0 {
		t.Fatalf("devices add: %d %s", code, errs)
	}
	return sn
}

// TestMintingThroughTheDatabaseIsRefused: holding the service's database
// login, an insider inserts an issuance by hand (actor the agent, request
// id forged-1, the proof of a genuine issuance copied over) and has the
// agent "retry" it. The service refuses to derive a code from it and
// audits the refusal; the same login may not change a device's key
// generation or move its sequence; audit verify names the forged row.
func TestMintingThroughTheDatabaseIsRefused(t *testing.T) {
	addr, iss := serve(t)
	prov, agent, auditor := token(t, iss, server.RoleProvisioner), token(t, iss, server.RoleAgent), token(t, iss, server.RoleAuditor)
	sn := newDevice(t, addr, prov)
	if code, _, errs := run(t, addr, agent, "issue", sn, "--ticket", "SUP-1", "--verified-by", "proof-of-purchase", "--request-id", "genuine-1"); code != 0 {
		t.Fatalf("genuine issue: %d %s", code, errs)
	}
	ctx := context.Background()
	svc := serviceConn(t)
	forged := map[string]string{}
	for i, f := range []struct{ req, proof string }{
		{"forged-1", "proof"}, // a genuine proof, over other fields
		{"forged-2", "NULL"},  // none
	} {
		var id string
		err := svc.QueryRow(ctx, `INSERT INTO issuances (id, request_id, serial, sequence, key_generation, signing_kid,
				issued_at, expires_at, actor, actor_role, ticket, method, method_note, override_reason, proof)
			SELECT gen_random_uuid(), $2, serial, sequence + $3, key_generation, signing_kid, clock_timestamp(),
				clock_timestamp() + interval '12 hours', actor, actor_role, 'SUP-FORGED', method, '', '', `+f.proof+`
			FROM issuances WHERE serial = $1 AND request_id = 'genuine-1' RETURNING id::text`, sn, f.req, i+1).Scan(&id)
		if err != nil {
			t.Fatalf("the service role inserts an issuance: %v", err)
		}
		forged[f.req] = id
		code, out, errs := run(t, addr, agent, "issue", sn, "--ticket", "SUP-FORGED", "--verified-by", "proof-of-purchase",
			"--request-id", f.req, "-o", "json")
		if code != exitFailed || !strings.Contains(errs, "not made by this service") || strings.Contains(out, "voice_code") {
			t.Fatalf("issue --request-id %s: exit %d\n%s\n%s\nwant a refusal and no code", f.req, code, out, errs)
		}
		t.Logf("issue --request-id %s: %s", f.req, strings.TrimSpace(errs))
	}
	code, out, errs := run(t, addr, auditor, "audit", "query", "--serial", sn, "--outcome", "refused", "-o", "json")
	if code != exitOK || strings.Count(out, "issuance_unproven") != 2 {
		t.Errorf("audit query: %d %s\n%s\nwant both refusals, detail issuance_unproven", code, errs, out)
	}

	for _, q := range []string{
		`UPDATE devices SET key_generation = 2 WHERE serial = $1`,
		`UPDATE devices SET registered_at = now() - interval '1 year' WHERE serial = $1`,
		`UPDATE devices SET last_sequence = last_sequence + 10 WHERE serial = $1`,
		`UPDATE devices SET last_sequence = 0, last_issued_at = NULL WHERE serial = $1`,
	} {
		_, err := svc.Exec(ctx, q, sn)
		denied(t, q, err)
	}

	sealNow(t)
	code, out, _ = run(t, addr, auditor, "audit", "verify")
	if code != exitBadLog {
		t.Fatalf("audit verify: exit %d, want %d\n%s", code, exitBadLog, out)
	}
	for req, id := range forged {
		if !strings.Contains(out, "issuance "+id) || !strings.Contains(out, "written outside the service") {
			t.Errorf("audit verify does not name the forged issuance %s (%s):\n%s", id, req, out)
		}
	}
	t.Logf("audit verify:\n%s", out)
}

// TestPoisoningTheAuditLogIsRefused: the service's login may neither date
// an event nor write a seal or a checkpoint; an owner's event dated 30
// days ahead is left unsealed, blames no genuine event, and audit verify
// names it.
func TestPoisoningTheAuditLogIsRefused(t *testing.T) {
	addr, iss := serve(t)
	prov, agent, auditor := token(t, iss, server.RoleProvisioner), token(t, iss, server.RoleAgent), token(t, iss, server.RoleAuditor)
	ctx := context.Background()
	svc := serviceConn(t)
	for _, q := range []string{
		`INSERT INTO audit_events (at, actor, role, action, outcome) VALUES (now() + interval '30 days', 'bob', 'agent', 'device.lookup', 'success')`,
		`INSERT INTO audit_seals (seq, event_id, hash) SELECT max(seq) + 1, max(event_id), sha256('junk') FROM audit_seals`,
		`INSERT INTO audit_checkpoints (size, head, at, kid, signature) VALUES (1000000, sha256('junk'), now(), 'audit-1', sha512('junk'))`,
	} {
		_, err := svc.Exec(ctx, q)
		denied(t, q, err)
	}
	var future int64
	if err := ownerConn(t).QueryRow(ctx, `INSERT INTO audit_events (at, actor, role, action, outcome)
		VALUES (now() + interval '30 days', 'bob', 'supervisor', 'device.release', 'success') RETURNING id`).Scan(&future); err != nil {
		t.Fatal(err)
	}
	sn := newDevice(t, addr, prov)
	if code, _, errs := run(t, addr, agent, "lookup", sn); code != 0 {
		t.Fatalf("lookup: %d %s", code, errs)
	}
	sealNow(t)
	code, out, _ := run(t, addr, auditor, "audit", "verify")
	if code != exitBadLog || !strings.Contains(out, fmt.Sprintf("event %d is dated", future)) || !strings.Contains(out, "time was forged") {
		t.Fatalf("audit verify: exit %d, want %d naming event %d as future:\n%s", code, exitBadLog, future, out)
	}
	if strings.Contains(out, "inserted after the fact") {
		t.Errorf("a genuine event is blamed:\n%s", out)
	}
	t.Logf("audit verify:\n%s", out)
}

// TestDeletedTailIsNotResealed: an owner deletes the newest events with
// their seals and checkpoints. The sealer (a restarted one, which has seen
// nothing) refuses to extend the chain because it does not continue the
// checkpoint published to the witness, and records an
// audit.chain_rewritten event; audit verify names the truncation.
func TestDeletedTailIsNotResealed(t *testing.T) {
	w := audit.DirWitness{Dir: filepath.Join(t.TempDir(), "witness")}
	addr, iss := serve(t, func(s *server.Service) { s.AuditLog.(*audit.Log).Witness = w })
	prov, agent, auditor := token(t, iss, server.RoleProvisioner), token(t, iss, server.RoleAgent), token(t, iss, server.RoleAuditor)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	sealer := func() *audit.Sealer {
		s := audit.NewSealer(pool, auditKID, auditKey)
		s.Witness = w
		s.Trusted = func() map[string]ed25519.PublicKey {
			return map[string]ed25519.PublicKey{auditKID: auditKey.Public().(ed25519.PublicKey)}
		}
		return s
	}
	s := sealer()
	sn := newDevice(t, addr, prov)
	if _, err := s.SealOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var kept int64
	if err := pool.QueryRow(ctx, `SELECT max(seq) FROM audit_seals`).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if code, _, errs := run(t, addr, agent, "lookup", sn); code != 0 {
			t.Fatalf("lookup: %d %s", code, errs)
		}
	}
	if _, err := s.SealOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := run(t, addr, auditor, "audit", "verify"); !strings.Contains(out, "witness\tthe chain continues") &&
		!strings.Contains(out, "the chain continues the last checkpoint") {
		t.Fatalf("audit verify before the attack: exit %d\n%s\nwant the witness matched", code, out)
	}

	owner := ownerConn(t)
	for _, tb := range []string{"audit_events", "audit_seals", "audit_checkpoints"} {
		if _, err := owner.Exec(ctx, "ALTER TABLE "+tb+" DISABLE TRIGGER USER"); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`CREATE TEMP TABLE gone AS SELECT event_id FROM audit_seals WHERE seq > $1`,
		`DELETE FROM audit_checkpoints WHERE size > $1`,
		`DELETE FROM audit_seals WHERE seq > $1`,
	} {
		if _, err := owner.Exec(ctx, q, kept); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := owner.Exec(ctx, `DELETE FROM audit_events WHERE id IN (SELECT event_id FROM gone)`); err != nil {
		t.Fatal(err)
	}
	for _, tb := range []string{"audit_events", "audit_seals", "audit_checkpoints"} {
		if _, err := owner.Exec(ctx, "ALTER TABLE "+tb+" ENABLE TRIGGER USER"); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := sealer().SealOnce(ctx); !errors.Is(err, audit.ErrRewritten) {
		t.Fatalf("restarted sealer: %v, want ErrRewritten", err)
	}
	code, out, errs := run(t, addr, auditor, "audit", "query", "--action", audit.ActionChainRewritten, "--since", "1h", "-o", "json")
	if code != exitOK || !strings.Contains(out, "witness") {
		t.Errorf("audit query --action %s: %d %s\n%s\nwant the sealer's finding", audit.ActionChainRewritten, code, errs, out)
	}
	code, out, _ = run(t, addr, auditor, "audit", "verify")
	if code != exitBadLog || !strings.Contains(out, "truncated") || !strings.Contains(out, "the witness's checkpoint") {
		t.Fatalf("audit verify: exit %d, want %d naming the witness's checkpoint:\n%s", code, exitBadLog, out)
	}
	t.Logf("audit verify:\n%s", out)
}
