package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/cmd/internal/wiring"
	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// rotationEnv runs hotline-server's commands in-process over one keyring and
// one database.
type rotationEnv struct {
	t       *testing.T
	keyring string
	dbURL   string
	// m is the server serve started last.
	m *Main
}

func (e *rotationEnv) cmd(args ...string) (string, error) {
	e.t.Helper()
	var out, errb bytes.Buffer
	all := append(args, "--keyring", e.keyring, "--database-url", e.dbURL)
	if code := Run(context.Background(), all, &out, &errb); code != 0 {
		return out.String(), &server.Error{Code: server.EInternal, Message: strings.TrimSpace(errb.String())}
	}
	return out.String(), nil
}

func (e *rotationEnv) must(args ...string) string {
	e.t.Helper()
	out, err := e.cmd(args...)
	if err != nil {
		e.t.Fatalf("hotline-server %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// serve starts the server in-process on port 0 with extra flags and
// returns a client connection and a stop function; the server's log goes
// to log when it is not nil.
func (e *rotationEnv) serve(log io.Writer, flags ...string) (*grpc.ClientConn, func()) {
	e.t.Helper()
	m := NewMain(io.Discard, io.Discard)
	if err := m.ParseFlags(append([]string{"--keyring", e.keyring, "--database-url", e.dbURL, "--listen", "127.0.0.1:0", "--trust-keyring-staff-issuer"}, flags...)); err != nil {
		e.t.Fatal(err)
	}
	if log != nil {
		m.Logger = wiring.NewLogger(log)
	}
	e.m = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready():
	case err := <-done:
		e.t.Fatalf("serve: %v", err)
	}
	conn, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	return conn, func() {
		conn.Close()
		cancel()
		<-done
		m.Close()
	}
}

func (e *rotationEnv) as(role server.Role) context.Context {
	tok := strings.TrimSpace(e.must("token", "--subject", "rot-"+string(role), "--role", string(role)))
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func (e *rotationEnv) deviceKey(serial string, gen int) voicecode.DeviceKey {
	e.t.Helper()
	out := e.must("keys", "device-key", serial, "--generation", string(rune('0'+gen)))
	s, k, err := voicecode.ParseKeyFile([]byte(out))
	if err != nil || s != serial {
		e.t.Fatalf("device key file for %s: %v", serial, err)
	}
	return k
}

func issue(t *testing.T, ctx context.Context, conn *grpc.ClientConn, serial, ticket string) *hotlinev1.IssueTemporaryPasswordResponse {
	t.Helper()
	r, err := hotlinev1.NewRecoveryServiceClient(conn).IssueTemporaryPassword(ctx, &hotlinev1.IssueTemporaryPasswordRequest{
		RequestId: server.NewUUID(), Serial: serial, Ticket: ticket,
		VerificationMethod: hotlinev1.VerificationMethod_VERIFICATION_METHOD_PROOF_OF_PURCHASE,
	})
	if err != nil {
		t.Fatalf("issue for %s: %v", serial, err)
	}
	return r
}

func register(t *testing.T, ctx context.Context, conn *grpc.ClientConn, serial string) int32 {
	t.Helper()
	r, err := hotlinev1.NewDeviceServiceClient(conn).RegisterDevice(ctx, &hotlinev1.RegisterDeviceRequest{
		Serial: serial, Model: "WBXHD041S", OwnerContact: "owner@example.com", Firmware: "V4.0.1"})
	if err != nil {
		t.Fatalf("register %s: %v", serial, err)
	}
	return r.Device.KeyGeneration
}

// publishedKeys returns the kids of the grant JWK set the server publishes.
func publishedKeys(t *testing.T, ctx context.Context, conn *grpc.ClientConn) string {
	t.Helper()
	r, err := hotlinev1.NewKeyServiceClient(conn).GetGrantKeys(ctx, &hotlinev1.GetGrantKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return r.JwksJson
}

// waitForGrantKey waits until the running server publishes kid: it has
// loaded the keyring that holds it.
func waitForGrantKey(t *testing.T, ctx context.Context, conn *grpc.ClientConn, kid string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(publishedKeys(t, ctx, conn), `"`+kid+`"`); {
		if time.Now().After(deadline) {
			t.Fatalf("the running server never published %s", kid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func verifyCode(t *testing.T, k voicecode.DeviceKey, serial, code string) {
	t.Helper()
	c, err := voicecode.Decode(code)
	if err == nil {
		_, err = c.Verify(k, serial, time.Now())
	}
	if err != nil {
		t.Fatalf("code for %s under generation %d: %v", serial, k.Generation(), err)
	}
}

// TestKeyRotationStrandsNoDevice: a rotation of the master key and of the
// grant key is loaded by the running server on SIGHUP, without a restart:
// a device registered after it (key generation 0, "the current one") gets
// the new generation and new grants are signed by the new key, while
// devices of both generations keep verifying their codes, a grant signed by
// the old key still verifies until it expires, and the old keys cannot be
// retired while a device or a live grant needs them.
func TestKeyRotationStrandsNoDevice(t *testing.T) {
	e := &rotationEnv{t: t, keyring: filepath.Join(t.TempDir(), "keyring"), dbURL: pgtest.NewDatabase(t, "rotation")}
	e.must("keys", "init")
	e.must("migrate")
	const old, young = "ROTAAA#2020-01-01#1#DVR0000000000001", "ROTBBB#2026-01-01#1#DVR0000000000002"

	// No polling: only the signal can make this server reload.
	conn, stop := e.serve(nil, "--keyring-poll", "0")
	defer stop()
	if gen := register(t, e.as(server.RoleProvisioner), conn, old); gen != 1 {
		t.Fatalf("first device under generation %d, want 1", gen)
	}
	first := issue(t, e.as(server.RoleAgent), conn, old, "ROT-1")

	e.must("keys", "rotate", "--purpose", "master")
	e.must("keys", "rotate", "--purpose", "grant")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitForGrantKey(t, e.as(server.RoleAgent), conn, "grant-2")
	if gen := register(t, e.as(server.RoleProvisioner), conn, young); gen != 2 {
		t.Fatalf("device provisioned after the rotation under generation %d, want 2", gen)
	}
	agent := e.as(server.RoleAgent)
	a, b := issue(t, agent, conn, old, "ROT-2"), issue(t, agent, conn, young, "ROT-3")
	if a.KeyGeneration != 1 || b.KeyGeneration != 2 {
		t.Fatalf("codes under generations %d and %d, want 1 and 2", a.KeyGeneration, b.KeyGeneration)
	}
	verifyCode(t, e.deviceKey(old, 1), old, a.VoiceCode)
	verifyCode(t, e.deviceKey(young, 2), young, b.VoiceCode)

	// The published key set carries both grant keys; the grant signed
	// before the rotation still verifies, the new one is signed by grant-2.
	jwks, err := hotlinev1.NewKeyServiceClient(conn).GetGrantKeys(agent, &hotlinev1.GetGrantKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	trust, err := grant.ParseJWKS([]byte(jwks.JwksJson))
	if err != nil || trust.Len() != 2 {
		t.Fatalf("published %d keys (%v), want grant-1 and grant-2", trust.Len(), err)
	}
	if _, err := trust.Verify(first.Grant, old, time.Now()); err != nil {
		t.Fatalf("a grant signed before the rotation: %v", err)
	}
	onlyNew := grant.NewTrustSet(map[string]ed25519.PublicKey{"grant-2": trust.Keys()["grant-2"]})
	if _, err := onlyNew.Verify(b.Grant, young, time.Now()); err != nil {
		t.Fatalf("a grant signed after the rotation does not verify under grant-2 alone: %v", err)
	}

	// Retiring what is still needed is refused.
	if _, err := e.cmd("keys", "retire", "--kid", "grant-1"); err == nil || !strings.Contains(err.Error(), "still live") {
		t.Fatalf("retired grant-1 while its grants are live: %v", err)
	}
	if _, err := e.cmd("keys", "retire", "--generation", "1"); err == nil || !strings.Contains(err.Error(), "strand") {
		t.Fatalf("destroyed master generation 1 while a device needs it: %v", err)
	}
	if _, err := e.cmd("keys", "retire", "--kid", "grant-2"); err == nil || !strings.Contains(err.Error(), "newest") {
		t.Fatalf("retired the newest grant key: %v", err)
	}

	// Once every grant-1 grant has expired (time moved on: the owner ages
	// them in the database), grant-1 can be retired; it stays published
	// for a grant's lifetime after that, then leaves the set.
	owner, err := pgx.Connect(context.Background(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(context.Background())
	if _, err := owner.Exec(context.Background(), `UPDATE issuances SET issued_at = issued_at - interval '2 days',
		expires_at = expires_at - interval '2 days' WHERE signing_kid = 'grant-1'`); err != nil {
		t.Fatal(err)
	}
	e.must("keys", "retire", "--kid", "grant-1")
	k, err := keyring.Open(e.keyring)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.PublicKeys(keyring.PurposeGrant, time.Now(), grant.MaxLifetime)["grant-1"]; !ok {
		t.Fatal("grant-1 left the published set at once")
	}
	if _, ok := k.PublicKeys(keyring.PurposeGrant, time.Now().Add(grant.MaxLifetime+time.Minute), grant.MaxLifetime)["grant-1"]; ok {
		t.Fatal("grant-1 still published a grant's lifetime after its retirement")
	}
	if _, ok := k.GrantKey("grant-1"); ok {
		t.Fatal("a retired grant key still signs")
	}
}

// TestARotationIsLoadedByPollingTheKeyringFile: with --keyring-poll and no
// signal, the running server sees the rotated keyring file and provisions
// the next device under the new generation.
func TestARotationIsLoadedByPollingTheKeyringFile(t *testing.T) {
	e := &rotationEnv{t: t, keyring: filepath.Join(t.TempDir(), "keyring"), dbURL: pgtest.NewDatabase(t, "rotation_poll")}
	e.must("keys", "init")
	conn, stop := e.serve(nil, "--keyring-poll", "20ms")
	defer stop()
	e.must("keys", "rotate", "--purpose", "master")
	e.must("keys", "rotate", "--purpose", "grant")
	waitForGrantKey(t, e.as(server.RoleAgent), conn, "grant-2")
	const serial = "ROTCCC#2026-02-01#1#DVR0000000000003"
	if gen := register(t, e.as(server.RoleProvisioner), conn, serial); gen != 2 {
		t.Fatalf("device provisioned after the rotation under generation %d, want 2", gen)
	}
}

// syncBuffer is a log sink the test reads while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestAReloadThatDropsAGenerationIsRefusedWhileServing: a master
// generation destroyed in the folder (`keys retire --generation`, allowed
// while no device is registered under it) is not let go of by a running
// server: the reload is refused, logged with the file and the reason and
// counted, and a device can still be provisioned under that generation (a
// factory may have flashed keys of it already).
func TestAReloadThatDropsAGenerationIsRefusedWhileServing(t *testing.T) {
	e := &rotationEnv{t: t, keyring: filepath.Join(t.TempDir(), "keyring"), dbURL: pgtest.NewDatabase(t, "rotation_refused")}
	e.must("keys", "init")
	var log syncBuffer
	conn, stop := e.serve(&log, "--keyring-poll", "0")
	defer stop()
	e.must("keys", "rotate", "--purpose", "master")
	e.must("keys", "retire", "--generation", "1")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.keyring, keyring.FileName)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(log.String(), "keyring reload refused"); {
		if time.Now().After(deadline) {
			t.Fatalf("no refused reload logged:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{`"level":"ERROR"`, `"file":"` + path + `"`, "no longer holds master generation 1"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the refusal's log lacks %s:\n%s", want, log.String())
		}
	}
	if n := reloadsCounted(t, e.m, "failed"); n < 1 {
		t.Errorf("hotline_keyring_reloads_total{outcome=\"failed\"} = %v, want at least 1", n)
	}

	r, err := hotlinev1.NewDeviceServiceClient(conn).RegisterDevice(e.as(server.RoleProvisioner), &hotlinev1.RegisterDeviceRequest{
		Serial: "ROTDDD#2026-03-01#1#DVR0000000000004", Model: "WBXHD041S", OwnerContact: "owner@example.com", Firmware: "V4.0.1", KeyGeneration: 1})
	if err != nil || r.Device.KeyGeneration != 1 {
		t.Fatalf("register under generation 1 after the refused reload: %v", err)
	}
	if gen := register(t, e.as(server.RoleProvisioner), conn, "ROTEEE#2026-03-01#1#DVR0000000000005"); gen != 1 {
		t.Fatalf("device provisioned under generation %d: the refused keyring's generation 2 was taken", gen)
	}
}

// reloadsCounted reads hotline_keyring_reloads_total{outcome} from the
// server's registry.
func reloadsCounted(t *testing.T, m *Main, outcome string) float64 {
	t.Helper()
	mfs, err := m.srv.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "hotline_keyring_reloads_total" {
			continue
		}
		for _, c := range mf.GetMetric() {
			for _, l := range c.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return c.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
