package audit

import (
	"context"
	"crypto/ed25519"
	"testing"
)

// TestAuditKeyRotationKeepsVerifying: after the audit key rotates, the
// checkpoints signed by the old key still verify (the verifier trusts every
// audit key ever used) and the chain continues under the new key; a
// verifier that forgot the old key is told which checkpoint it cannot check.
func TestAuditKeyRotationKeepsVerifying(t *testing.T) {
	resetLog(t)
	pool := openPool(t, true)
	insertEvents(t, pool, 10)
	if n := seal(t, NewSealer(pool, auditKID, auditKey)); n != 10 {
		t.Fatalf("sealed %d under the first key, want 10", n)
	}
	before := latest(t, pool)

	newKID, newKey := "audit-test-2", ed25519.NewKeyFromSeed(seed("audit-2"))
	insertEvents(t, pool, 7)
	if n := seal(t, NewSealer(pool, newKID, newKey)); n != 7 {
		t.Fatalf("sealed %d under the new key, want 7", n)
	}
	if c := latest(t, pool); c.KID != newKID || c.Size != 17 {
		t.Fatalf("newest checkpoint %s of size %d, want %s of size 17", c.KID, c.Size, newKID)
	}

	both := map[string]ed25519.PublicKey{auditKID: auditKey.Public().(ed25519.PublicKey), newKID: newKey.Public().(ed25519.PublicKey)}
	r, err := Verify(context.Background(), pool, both, before)
	if err != nil || r.Err() != nil || r.Sealed != 17 || r.Checkpoints != 2 || !r.External {
		t.Fatalf("after rotation, with every audit key trusted: %+v, %v", r, err)
	}

	onlyNew := map[string]ed25519.PublicKey{newKID: newKey.Public().(ed25519.PublicKey)}
	r, err = Verify(context.Background(), pool, onlyNew, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Err() == nil {
		t.Fatal("a checkpoint signed by a key the verifier does not trust passed")
	}
}

// TestVerifyReportsEventsNoSealerPickedUp: with no sealer running, events
// older than the grace period are not protected yet, and verify says so.
func TestVerifyReportsEventsNoSealerPickedUp(t *testing.T) {
	resetLog(t)
	pool := openPool(t, true)
	conn := ownerConn(t)
	mustExec(t, conn, `INSERT INTO audit_events (at, actor, role, action, outcome) VALUES (now() - interval '1 hour', 'a', 'agent', 'device.lookup', 'success')`)
	r := verify(t, pool, nil)
	if r.FirstProblem == nil || r.FirstProblem.Kind != ProblemStale {
		t.Fatalf("an hour-old unsealed event with no sealer: %+v", r.FirstProblem)
	}
	seal(t, NewSealer(pool, auditKID, auditKey))
	if r := verify(t, pool, nil); r.Err() != nil {
		t.Fatalf("after sealing: %v", r.Err())
	}
}
