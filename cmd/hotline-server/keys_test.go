package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dvrhotline/hotline/agent/voicecode"
	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// TestFlashingStationHoldsOnlyMasterKeys: the factory gets a folder from
// `keys export-masters` and derives the same device keys from it as from
// the full keyring, while the folder holds no grant, staff or audit key:
// a stolen station mints no grant, no staff token, no checkpoint, and a
// server refuses to run on it.
func TestFlashingStationHoldsOnlyMasterKeys(t *testing.T) {
	dir := t.TempDir()
	e := &rotationEnv{t: t, keyring: filepath.Join(dir, "keyring"), dbURL: "postgres://unused"}
	e.must("keys", "init")
	factory := filepath.Join(dir, "factory")
	e.must("keys", "export-masters", "--out", factory)

	b, err := os.ReadFile(filepath.Join(factory, keyring.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "ed25519_seed") || strings.Contains(string(b), `"signing_keys": [`) {
		t.Errorf("the factory folder holds signing keys:\n%s", b)
	}

	const sn = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	serials := filepath.Join(dir, "serials.txt")
	os.WriteFile(serials, []byte(sn+"\n"), 0o600)
	st := &rotationEnv{t: t, keyring: factory, dbURL: ""}
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"keys", "device-keys", "--keyring", factory, "--serials", serials, "--out", filepath.Join(dir, "keys.jsonl")}, &out, &errb); code != 0 {
		t.Fatalf("device-keys from the factory folder: %d %s", code, errb.String())
	}
	got, err := os.ReadFile(filepath.Join(dir, "keys.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	_, fromFactory, err := voicecode.ParseKeyFile(bytes.TrimSpace(got))
	if err != nil {
		t.Fatal(err)
	}
	full := e.deviceKey(sn, 1)
	if !fromFactory.Equal(full) {
		t.Error("the factory folder derives another device key than the keyring")
	}

	for _, args := range [][]string{{"token", "--subject", "mallory", "--role", "supervisor"}, {"keys", "jwks"}, {"keys", "staff-jwks"}} {
		if _, err := st.cmd(args...); err == nil {
			t.Errorf("hotline-server %s works from the factory folder", strings.Join(args, " "))
		}
	}
	if _, err := e.cmd("keys", "export-masters", "--out", factory); err == nil {
		t.Error("export-masters overwrote a folder")
	}
}

// TestServeRefusesTheKeyringStaffIssuerOutsideDev: serve without
// --staff-jwks would trust tokens that anyone holding the keyring mints:
// refused outside --dev unless asked for by name.
func TestServeRefusesTheKeyringStaffIssuerOutsideDev(t *testing.T) {
	e := &rotationEnv{t: t, keyring: filepath.Join(t.TempDir(), "keyring"), dbURL: pgtest.NewDatabase(t, "staffissuer")}
	e.must("keys", "init")
	e.must("migrate")
	m := NewMain(io.Discard, io.Discard)
	if err := m.ParseFlags([]string{"--keyring", e.keyring, "--database-url", e.dbURL, "--listen", "127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	err := m.Run(context.Background())
	m.Close()
	if err == nil || !strings.Contains(err.Error(), "--staff-jwks") {
		t.Fatalf("serve without --staff-jwks outside --dev: %v, want a refusal naming --staff-jwks", err)
	}
}

// TestRevokedStaffKeyIsRefusedAtOnce: a staff key that leaked is revoked
// with `keys revoke` after a rotation; a server started then refuses a
// token it signed, where a retired key would stay trusted for 31 days.
func TestRevokedStaffKeyIsRefusedAtOnce(t *testing.T) {
	e := &rotationEnv{t: t, keyring: filepath.Join(t.TempDir(), "keyring"), dbURL: pgtest.NewDatabase(t, "revoke")}
	e.must("keys", "init")
	e.must("migrate")
	leaked := e.as("supervisor") // signed by staff-1
	if _, err := e.cmd("keys", "revoke", "--kid", "staff-1"); err == nil {
		t.Fatal("revoked the only staff key")
	}
	e.must("keys", "rotate", "--purpose", "staff")
	e.must("keys", "revoke", "--kid", "staff-1")
	conn, stop := e.serve(nil)
	defer stop()
	_, err := hotlinev1.NewDeviceServiceClient(conn).LookupDevice(leaked, &hotlinev1.LookupDeviceRequest{Query: "DVR1101134C08011"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a token of the revoked key: %v, want Unauthenticated", err)
	}
	_, err = hotlinev1.NewDeviceServiceClient(conn).LookupDevice(e.as("agent"), &hotlinev1.LookupDeviceRequest{Query: "DVR1101134C08011"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("a token of the new key: %v, want NotFound (authenticated)", err)
	}
	e.must("keys", "rotate", "--purpose", "staff")
	if out := e.must("keys", "list"); strings.Contains(out, "staff-1 ") || !strings.Contains(out, "staff-3") {
		t.Errorf("after a revoke and a rotation the keys are:\n%s\nwant staff-1 gone and never reused", out)
	}
}
