package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/server/audit"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// TestServePublishesCheckpointsToTheWitness: with --audit-witness the
// running server's sealer appends every checkpoint it signs to the
// witness folder, signed by the keyring's audit key.
func TestServePublishesCheckpointsToTheWitness(t *testing.T) {
	dir := t.TempDir()
	krDir, witness := filepath.Join(dir, "keyring"), filepath.Join(dir, "witness")
	kr, err := keyring.Init(krDir)
	if err != nil {
		t.Fatal(err)
	}
	dbURL := pgtest.NewDatabase(t, "witness")
	m := NewMain(io.Discard, io.Discard)
	if err := m.ParseFlags([]string{"--keyring", krDir, "--database-url", dbURL, "--listen", "127.0.0.1:0", "--trust-keyring-staff-issuer",
		"--seal-every", "20ms", "--audit-witness", witness}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready():
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	defer func() { cancel(); <-done; m.Close() }()

	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `INSERT INTO audit_events (actor, role, action, outcome) VALUES ('t', 'agent', 'device.lookup', 'success')`); err != nil {
		t.Fatal(err)
	}
	w := audit.DirWitness{Dir: witness}
	trusted := kr.PublicKeys(keyring.PurposeAudit, time.Now(), audit.TrustForever)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, ok, err := w.Last(ctx, trusted)
		if err == nil && ok && c.Size >= 1 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(witness, audit.WitnessFileName))
			t.Fatalf("no checkpoint published within 10 s: %v, %v\n%s", ok, err, b)
		}
	}
}
