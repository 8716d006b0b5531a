package grpcserver_test

// Integration tests: the gRPC server in-process on port 0, over the real
// PostgreSQL store in this package's own database (server/postgres/pgtest), with a
// real client. Nothing is mocked but the keyring, which is a few lines of
// fixed key material.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"github.com/dvrhotline/hotline/server/keyring"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/voicecode"
	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
	grpcserver "github.com/dvrhotline/hotline/server/grpc"
	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

var testURL string

func TestMain(m *testing.M) {
	pgtest.Main(m, "server_grpc", &testURL, postgres.Migrate)
}

// testKeyring is a fixed in-memory server.Keyring: master key of generation
// g is 32 bytes of g, current generation 2, one random grant key.
type testKeyring struct {
	signer ed25519.PrivateKey
}

func (k *testKeyring) CurrentGeneration() int { return 2 }
func (k *testKeyring) DeviceKey(serial string, gen int) (voicecode.DeviceKey, error) {
	master := make([]byte, 32)
	for i := range master {
		master[i] = byte(gen)
	}
	return voicecode.DeriveDeviceKey(master, gen, serial)
}
func (k *testKeyring) GrantSigner() (string, ed25519.PrivateKey) { return "grant-test-1", k.signer }
func (k *testKeyring) GrantKey(kid string) (ed25519.PrivateKey, bool) {
	return k.signer, kid == "grant-test-1"
}
func (k *testKeyring) OwnerCode(gen int, id, serial string) (string, error) {
	return keyring.DeriveOwnerCode(bytes.Repeat([]byte{byte(gen)}, 32), id, serial)
}
func (k *testKeyring) IssuanceMAC(gen int, msg []byte) ([]byte, error) {
	h := hmac.New(sha256.New, bytes.Repeat([]byte{byte(gen)}, 32))
	h.Write(msg)
	return h.Sum(nil), nil
}
func (k *testKeyring) GrantJWKS() ([]byte, error) {
	return grant.MarshalJWKS(map[string]ed25519.PublicKey{"grant-test-1": k.signer.Public().(ed25519.PublicKey)})
}

// env is one running server and a client connection to it.
type env struct {
	conn     *grpc.ClientConn
	issuer   *server.StaffIssuer
	staffKey ed25519.PrivateKey
	keyring  *testKeyring
	devices  hotlinev1.DeviceServiceClient
	recovery hotlinev1.RecoveryServiceClient
	audit    hotlinev1.AuditServiceClient
	keys     hotlinev1.KeyServiceClient
}

// serveOn serves svc on a loopback port 0, trusting issuer's staff tokens,
// until t ends, and returns a client connection to it.
func serveOn(t *testing.T, svc *server.Service, issuer *server.StaffIssuer, log *slog.Logger) *grpc.ClientConn {
	t.Helper()
	verifier, err := server.NewStaffVerifier(issuer.PublicKeys())
	if err != nil {
		t.Fatal(err)
	}
	addr := serveConfig(t, grpcserver.Config{Service: svc, Verifier: verifier, Logger: log})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// serveConfig serves a server built from cfg on a loopback port 0 until t
// ends, and returns its address.
func serveConfig(t *testing.T, cfg grpcserver.Config) string {
	t.Helper()
	srv, err := grpcserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	return l.Addr().String()
}

// start runs a server with the test audit log (testAuditLog); edits
// adjust its service before it serves.
func start(t *testing.T, edits ...func(*server.Service)) *env {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	_, gk, _ := ed25519.GenerateKey(rand.Reader)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	kr := &testKeyring{signer: gk}
	svc := server.NewService(db, kr)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc.Logger = log
	svc.AuditLog = testAuditLog(db.Pool())
	for _, edit := range edits {
		edit(svc)
	}
	issuer, err := server.NewStaffIssuer("staff-test-1", sk)
	if err != nil {
		t.Fatal(err)
	}
	conn := serveOn(t, svc, issuer, log)
	return &env{
		conn: conn, issuer: issuer, staffKey: sk, keyring: kr,
		devices:  hotlinev1.NewDeviceServiceClient(conn),
		recovery: hotlinev1.NewRecoveryServiceClient(conn),
		audit:    hotlinev1.NewAuditServiceClient(conn),
		keys:     hotlinev1.NewKeyServiceClient(conn),
	}
}

var subjects atomic.Int64

// as returns a context carrying a fresh token for a new staff member in
// role (a fresh subject per call keeps per-agent limits apart).
func (e *env) as(t *testing.T, role server.Role) context.Context {
	t.Helper()
	return e.asSubject(t, fmt.Sprintf("%s-%d", role, subjects.Add(1)), role)
}

func (e *env) asSubject(t *testing.T, subject string, role server.Role) context.Context {
	t.Helper()
	tok, err := e.issuer.Issue(subject, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return withToken(tok)
}

func withToken(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

var serials atomic.Int64

func init() { serials.Store(time.Now().UnixNano() % 1e9 * 1000) }

// newSerial returns a fresh, valid serial whose device id is unique.
func newSerial() string {
	return fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%013d", serials.Add(1))
}

// register adds a device through the API as a provisioner.
func (e *env) register(t *testing.T, gen int32) string {
	t.Helper()
	sn := newSerial()
	_, err := e.devices.RegisterDevice(e.as(t, server.RoleProvisioner), &hotlinev1.RegisterDeviceRequest{
		Serial: sn, Model: "WBXHD082S2T", OwnerContact: "Jane.Doe@Example.com", Firmware: "V4.0.1", KeyGeneration: gen,
	})
	if err != nil {
		t.Fatalf("RegisterDevice: %v", err)
	}
	return sn
}

func wantCode(t *testing.T, err error, want codes.Code) *status.Status {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != want {
		t.Fatalf("code %v (%q), want %v", st.Code(), st.Message(), want)
	}
	return st
}

// wantReason fails unless st carries an ErrorInfo of domain hotline.v1
// with reason, and returns it.
func wantReason(t *testing.T, st *status.Status, reason server.Reason) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			if ei.GetDomain() != "hotline.v1" || ei.GetReason() != string(reason) {
				t.Errorf("ErrorInfo %v, want domain hotline.v1 reason %s", ei, reason)
			}
			return ei
		}
	}
	t.Fatalf("status %v has no ErrorInfo, want reason %s", st, reason)
	return nil
}

func issueReq(sn string) *hotlinev1.IssueTemporaryPasswordRequest {
	return &hotlinev1.IssueTemporaryPasswordRequest{
		RequestId: server.NewUUID(), Serial: sn, Ticket: "T-1001",
		VerificationMethod: hotlinev1.VerificationMethod_VERIFICATION_METHOD_PROOF_OF_PURCHASE,
	}
}

func TestRegisterAndLookup(t *testing.T) {
	e := start(t)
	sn := e.register(t, 0)
	id := sn[strings.LastIndexByte(sn, '#')+1:]
	agent := e.as(t, server.RoleAgent)
	for name, q := range map[string]string{
		"full-serial":       sn,
		"device-id":         id,
		"qr-payload":        "SN:" + sn,
		"sloppy-lower-case": "  " + strings.ToLower(strings.ReplaceAll(sn, "#", " # ")) + " ",
	} {
		t.Run("found/"+name, func(t *testing.T) {
			resp, err := e.devices.LookupDevice(agent, &hotlinev1.LookupDeviceRequest{Query: q})
			if err != nil {
				t.Fatal(err)
			}
			d := resp.GetDevice()
			if d.GetSerial() != sn || d.GetDeviceId() != id {
				t.Errorf("serial %q id %q", d.GetSerial(), d.GetDeviceId())
			}
			if d.GetOwnerContactMasked() != "j***@example.com" {
				t.Errorf("owner contact %q: want masked j***@example.com", d.GetOwnerContactMasked())
			}
			if m := d.GetModel(); m.GetCode() != "WBXHD082S2T" || m.GetChannels() != 8 || !m.GetShipsWithDrive() {
				t.Errorf("model %v", m)
			}
			if d.GetKeyGeneration() != 2 || d.GetHold() != nil || resp.GetPerDeviceLimit() != 3 {
				t.Errorf("device %v", resp)
			}
		})
	}
	t.Run("refused/already-registered", func(t *testing.T) {
		_, err := e.devices.RegisterDevice(e.as(t, server.RoleProvisioner), &hotlinev1.RegisterDeviceRequest{
			Serial: sn, Model: "WBXHD082S2T", OwnerContact: "x@example.com", Firmware: "V4.0.1"})
		wantReason(t, wantCode(t, err, codes.AlreadyExists), server.ReasonDeviceExists)
	})
}

func TestCheckOwner(t *testing.T) {
	e := start(t)
	sn := e.register(t, 0)
	agent := e.as(t, server.RoleAgent)
	for claim, want := range map[string]bool{"jane.doe@example.com": true, " JANE.DOE@EXAMPLE.COM": true, "john@example.com": false} {
		resp, err := e.devices.CheckOwner(agent, &hotlinev1.CheckOwnerRequest{Serial: sn, ClaimedContact: claim})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetMatched() != want {
			t.Errorf("claim %q: matched %v, want %v", claim, resp.GetMatched(), want)
		}
	}
}

func TestIssueVerifiesOfflineAndIsIdempotent(t *testing.T) {
	e := start(t)
	sn := e.register(t, 1) // provisioned under generation 1, current is 2
	agent := e.as(t, server.RoleAgent)
	req := issueReq(sn)
	first, err := e.recovery.IssueTemporaryPassword(agent, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetKeyGeneration() != 1 {
		t.Errorf("key generation %d: want the device's own (1)", first.GetKeyGeneration())
	}
	if first.GetSequence() != 1 || first.GetIssuanceId() == "" || first.GetVoiceCodePhonetic() == "" {
		t.Errorf("response %v", first)
	}
	if exp := first.GetExpiresAt().AsTime(); exp.After(first.GetIssuedAt().AsTime().Add(24*time.Hour)) || exp.Before(time.Now().Add(23*time.Hour)) {
		t.Errorf("expires_at %v", exp)
	}

	// The code verifies on the device with the device's key.
	dk, _ := e.keyring.DeviceKey(sn, 1)
	code, err := voicecode.Decode(first.GetVoiceCode())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := code.Verify(dk, sn, time.Now()); err != nil {
		t.Fatalf("voice code does not verify: %v", err)
	}
	// The grant verifies against the published key set.
	jwks, err := e.keys.GetGrantKeys(agent, &hotlinev1.GetGrantKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	trust, err := grant.ParseJWKS([]byte(jwks.GetJwksJson()))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := trust.Verify(first.GetGrant(), sn, time.Now()); err != nil || c.ID != first.GetIssuanceId() {
		t.Fatalf("grant: claims %v err %v", c, err)
	}

	// A retry returns the identical answer, not a second code.
	again, err := e.recovery.IssueTemporaryPassword(agent, req)
	if err != nil {
		t.Fatal(err)
	}
	if again.GetVoiceCode() != first.GetVoiceCode() || again.GetGrant() != first.GetGrant() || again.GetIssuanceId() != first.GetIssuanceId() {
		t.Fatal("retry with the same request id gave a different answer")
	}

	// History lists it, without the code.
	list, err := e.recovery.ListIssuances(agent, &hotlinev1.ListIssuancesRequest{Serial: sn})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetIssuances()) != 1 || list.GetIssuances()[0].GetIssuanceId() != first.GetIssuanceId() ||
		list.GetIssuances()[0].GetActorRole() != hotlinev1.Role_ROLE_AGENT {
		t.Fatalf("issuances %v", list.GetIssuances())
	}
	if strings.Contains(list.String(), first.GetVoiceCode()) {
		t.Fatal("ListIssuances leaks the voice code")
	}
	look, err := e.devices.LookupDevice(agent, &hotlinev1.LookupDeviceRequest{Query: sn})
	if err != nil || look.GetRecentIssuanceCount() != 1 {
		t.Fatalf("recent issuance count %d, err %v", look.GetRecentIssuanceCount(), err)
	}
}

func TestIssueLimitsAndHolds(t *testing.T) {
	e := start(t)
	t.Run("refused/per-device-limit-then-supervisor-override", func(t *testing.T) {
		sn := e.register(t, 0)
		for i := 0; i < 3; i++ {
			if _, err := e.recovery.IssueTemporaryPassword(e.as(t, server.RoleAgent), issueReq(sn)); err != nil {
				t.Fatalf("issue %d: %v", i, err)
			}
		}
		_, err := e.recovery.IssueTemporaryPassword(e.as(t, server.RoleAgent), issueReq(sn))
		st := wantCode(t, err, codes.ResourceExhausted)
		if !hasDetail[*errdetails.QuotaFailure](st) {
			t.Errorf("no QuotaFailure in %v", st.Details())
		}
		info := wantReason(t, st, server.ReasonLimitPerDevice)
		if md := info.GetMetadata(); md["limit"] != "per-device" || md["count"] != "3" || md["max"] != "3" || md["retry_at"] == "" {
			t.Errorf("ErrorInfo metadata %v, want the per-device limit 3/3 with retry_at", md)
		}
		sup := e.as(t, server.RoleSupervisor)
		_, err = e.recovery.IssueTemporaryPassword(sup, issueReq(sn))
		wantCode(t, err, codes.ResourceExhausted) // a supervisor too needs a reason
		r := issueReq(sn)
		r.OverrideReason = "customer locked out of site CCTV, manager approved"
		if _, err := e.recovery.IssueTemporaryPassword(sup, r); err != nil {
			t.Fatalf("supervisor override: %v", err)
		}
	})
	t.Run("refused/on-hold-then-released", func(t *testing.T) {
		sn := e.register(t, 0)
		sup := e.as(t, server.RoleSupervisor)
		h, err := e.devices.HoldDevice(sup, &hotlinev1.HoldDeviceRequest{Serial: sn, Reason: "reported stolen"})
		if err != nil || h.GetHold().GetReason() != "reported stolen" {
			t.Fatalf("hold %v err %v", h, err)
		}
		look, err := e.devices.LookupDevice(e.as(t, server.RoleAgent), &hotlinev1.LookupDeviceRequest{Query: sn})
		if err != nil || look.GetDevice().GetHold().GetReason() != "reported stolen" {
			t.Fatalf("lookup on hold %v err %v", look, err)
		}
		_, err = e.recovery.IssueTemporaryPassword(e.as(t, server.RoleAgent), issueReq(sn))
		wantReason(t, wantCode(t, err, codes.FailedPrecondition), server.ReasonDeviceOnHold)
		if _, err := e.devices.ReleaseDevice(sup, &hotlinev1.ReleaseDeviceRequest{Serial: sn, Reason: "found by owner"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.recovery.IssueTemporaryPassword(e.as(t, server.RoleAgent), issueReq(sn)); err != nil {
			t.Fatalf("after release: %v", err)
		}
	})
}

func TestIssueRefusalReasons(t *testing.T) {
	e := start(t)
	agent := e.as(t, server.RoleAgent)
	t.Run("refused/request-id-reused-for-another-device", func(t *testing.T) {
		r := issueReq(e.register(t, 0))
		if _, err := e.recovery.IssueTemporaryPassword(agent, r); err != nil {
			t.Fatal(err)
		}
		r.Serial = e.register(t, 0)
		_, err := e.recovery.IssueTemporaryPassword(agent, r)
		wantReason(t, wantCode(t, err, codes.AlreadyExists), server.ReasonRequestIDReused)
	})
	t.Run("refused/agent-gives-override-reason", func(t *testing.T) {
		r := issueReq(e.register(t, 0))
		r.OverrideReason = "I am sure"
		_, err := e.recovery.IssueTemporaryPassword(agent, r)
		if info := wantReason(t, wantCode(t, err, codes.PermissionDenied), server.ReasonOverrideNotAllowed); info.GetMetadata()["field"] != "override_reason" {
			t.Errorf("metadata %v, want field override_reason", info.GetMetadata())
		}
	})
	t.Run("refused/unknown-device", func(t *testing.T) {
		_, err := e.recovery.IssueTemporaryPassword(agent, issueReq(newSerial()))
		wantReason(t, wantCode(t, err, codes.NotFound), server.ReasonDeviceNotFound)
	})
}

func hasDetail[T any](st *status.Status) bool {
	for _, d := range st.Details() {
		if _, ok := d.(T); ok {
			return true
		}
	}
	return false
}

func TestInvalidArgumentAndNotFound(t *testing.T) {
	e := start(t)
	sn := e.register(t, 0)
	agent := e.as(t, server.RoleAgent)
	invalid := []struct {
		name  string
		call  func() error
		field string
	}{
		{"lookup/garbage", func() error {
			_, err := e.devices.LookupDevice(agent, &hotlinev1.LookupDeviceRequest{Query: "hello world!"})
			return err
		}, "query"},
		{"lookup/bad-date", func() error {
			_, err := e.devices.LookupDevice(agent, &hotlinev1.LookupDeviceRequest{Query: "JZ6OES#2017-13-01#3#DVR1101134C08011"})
			return err
		}, "query"},
		{"issue/no-ticket", func() error {
			r := issueReq(sn)
			r.Ticket = ""
			_, err := e.recovery.IssueTemporaryPassword(agent, r)
			return err
		}, "ticket"},
		{"issue/no-method", func() error {
			r := issueReq(sn)
			r.VerificationMethod = 0
			_, err := e.recovery.IssueTemporaryPassword(agent, r)
			return err
		}, "verification_method"},
		{"issue/other-without-note", func() error {
			r := issueReq(sn)
			r.VerificationMethod = hotlinev1.VerificationMethod_VERIFICATION_METHOD_OTHER
			_, err := e.recovery.IssueTemporaryPassword(agent, r)
			return err
		}, "verification_note"},
		{"issue/no-request-id", func() error {
			r := issueReq(sn)
			r.RequestId = ""
			_, err := e.recovery.IssueTemporaryPassword(agent, r)
			return err
		}, "request_id"},
		{"register/unknown-model", func() error {
			_, err := e.devices.RegisterDevice(e.as(t, server.RoleProvisioner), &hotlinev1.RegisterDeviceRequest{
				Serial: newSerial(), Model: "WBX999", OwnerContact: "a@example.com", Firmware: "V4.0.1"})
			return err
		}, "model"},
		{"register/bad-contact", func() error {
			_, err := e.devices.RegisterDevice(e.as(t, server.RoleProvisioner), &hotlinev1.RegisterDeviceRequest{
				Serial: newSerial(), Model: "WBXHD041S", OwnerContact: "nobody", Firmware: "V4.0.1"})
			return err
		}, "owner_contact"},
		{"hold/no-reason", func() error {
			_, err := e.devices.HoldDevice(e.as(t, server.RoleSupervisor), &hotlinev1.HoldDeviceRequest{Serial: sn})
			return err
		}, "reason"},
		{"audit/negative-page-size", func() error {
			_, err := e.audit.QueryEvents(e.as(t, server.RoleAuditor), &hotlinev1.QueryEventsRequest{PageSize: -1})
			return err
		}, "page_size"},
		{"list/negative-page-size", func() error {
			_, err := e.recovery.ListIssuances(agent, &hotlinev1.ListIssuancesRequest{Serial: sn, PageSize: -1})
			return err
		}, "page_size"},
		{"list/bad-page-token", func() error {
			_, err := e.recovery.ListIssuances(agent, &hotlinev1.ListIssuancesRequest{Serial: sn, PageToken: "xyz"})
			return err
		}, "page_token"},
		{"audit/bad-page-token", func() error {
			_, err := e.audit.QueryEvents(e.as(t, server.RoleAuditor), &hotlinev1.QueryEventsRequest{PageToken: "xyz"})
			return err
		}, "page_token"},
	}
	for _, tt := range invalid {
		t.Run("invalid/"+tt.name, func(t *testing.T) {
			st := wantCode(t, tt.call(), codes.InvalidArgument)
			var field string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 {
					field = br.FieldViolations[0].Field
				}
			}
			if field != tt.field {
				t.Errorf("BadRequest field %q, want %q (message %q)", field, tt.field, st.Message())
			}
		})
	}
	t.Run("not-found/near-matches", func(t *testing.T) {
		// A device id unlike the other tests' so that it is the only near match.
		var r [6]byte
		rand.Read(r[:])
		sn := fmt.Sprintf("JZ6OES#2017-08-01#3#Q%X", r)
		if _, err := e.devices.RegisterDevice(e.as(t, server.RoleProvisioner), &hotlinev1.RegisterDeviceRequest{
			Serial: sn, Model: "WBXHD041S", OwnerContact: "a@example.com", Firmware: "V4.0.1"}); err != nil {
			t.Fatal(err)
		}
		last := "Z"
		if strings.HasSuffix(sn, "Z") {
			last = "Y"
		}
		typo := sn[:len(sn)-1] + last
		_, err := e.devices.LookupDevice(agent, &hotlinev1.LookupDeviceRequest{Query: typo})
		st := wantCode(t, err, codes.NotFound)
		if !strings.Contains(st.Message(), sn) {
			t.Errorf("message %q does not suggest %s", st.Message(), sn)
		}
		if ei := wantReason(t, st, server.ReasonDeviceNotFound); !strings.Contains(ei.GetMetadata()["near_matches"], sn) {
			t.Errorf("near_matches %q lacks %s", ei.GetMetadata()["near_matches"], sn)
		}
		_, err = e.recovery.IssueTemporaryPassword(agent, issueReq(typo))
		wantCode(t, err, codes.NotFound)
	})
}

func TestUnauthenticated(t *testing.T) {
	e := start(t)
	now := time.Now()
	claims := server.StaffClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: server.StaffTokenIssuer, Subject: "mallory", Audience: jwt.ClaimStrings{server.StaffTokenAudience},
			IssuedAt: jwt.NewNumericDate(now.Add(-2 * time.Hour)), ExpiresAt: jwt.NewNumericDate(now.Add(-time.Hour)),
		},
		Role: server.RoleSupervisor,
	}
	expired := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	expired.Header["kid"] = "staff-test-1"
	expiredTok, _ := expired.SignedString(e.staffKey)

	claims.ExpiresAt = jwt.NewNumericDate(now.Add(time.Hour))
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	forged := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	forged.Header["kid"] = "staff-test-1"
	forgedTok, _ := forged.SignedString(otherKey)

	none := jwt.NewWithClaims(jwt.SigningMethodNone, claims)
	none.Header["kid"] = "staff-test-1"
	noneTok, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)

	for name, ctx := range map[string]context.Context{
		"missing":  context.Background(),
		"expired":  withToken(expiredTok),
		"forged":   withToken(forgedTok),
		"alg-none": withToken(noneTok),
	} {
		t.Run("refused/"+name, func(t *testing.T) {
			_, err := e.devices.LookupDevice(ctx, &hotlinev1.LookupDeviceRequest{Query: "DVR1101134C08011"})
			wantCode(t, err, codes.Unauthenticated)
			_, err = e.keys.GetGrantKeys(ctx, &hotlinev1.GetGrantKeysRequest{})
			wantCode(t, err, codes.Unauthenticated)
		})
	}
	t.Run("health-needs-no-token", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(e.conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "hotline.v1.RecoveryService"})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %v err %v", resp, err)
		}
	})
}

func TestPermissionDenied(t *testing.T) {
	e := start(t)
	sn := e.register(t, 0)
	calls := map[string]func(ctx context.Context) error{
		"register": func(ctx context.Context) error {
			_, err := e.devices.RegisterDevice(ctx, &hotlinev1.RegisterDeviceRequest{Serial: newSerial(), Model: "WBXHD041S", OwnerContact: "a@example.com", Firmware: "V4.0.1"})
			return err
		},
		"lookup": func(ctx context.Context) error {
			_, err := e.devices.LookupDevice(ctx, &hotlinev1.LookupDeviceRequest{Query: sn})
			return err
		},
		"check-owner": func(ctx context.Context) error {
			_, err := e.devices.CheckOwner(ctx, &hotlinev1.CheckOwnerRequest{Serial: sn, ClaimedContact: "a@example.com"})
			return err
		},
		"hold": func(ctx context.Context) error {
			_, err := e.devices.HoldDevice(ctx, &hotlinev1.HoldDeviceRequest{Serial: sn, Reason: "test"})
			return err
		},
		"release": func(ctx context.Context) error {
			_, err := e.devices.ReleaseDevice(ctx, &hotlinev1.ReleaseDeviceRequest{Serial: sn, Reason: "test"})
			return err
		},
		"issue": func(ctx context.Context) error {
			_, err := e.recovery.IssueTemporaryPassword(ctx, issueReq(sn))
			return err
		},
		"history": func(ctx context.Context) error {
			_, err := e.recovery.ListIssuances(ctx, &hotlinev1.ListIssuancesRequest{Serial: sn})
			return err
		},
		"audit": func(ctx context.Context) error {
			_, err := e.audit.QueryEvents(ctx, &hotlinev1.QueryEventsRequest{Serial: sn})
			return err
		},
		"audit-export": func(ctx context.Context) error {
			st, err := e.audit.ExportEvents(ctx, &hotlinev1.ExportEventsRequest{Serial: sn})
			if err != nil {
				return err
			}
			_, err = st.Recv() // a stream's status comes with its first message
			return err
		},
		"audit-summary": func(ctx context.Context) error {
			_, err := e.audit.Summarize(ctx, &hotlinev1.SummarizeRequest{})
			return err
		},
		"audit-checkpoint": func(ctx context.Context) error {
			_, err := e.audit.GetCheckpoint(ctx, &hotlinev1.GetCheckpointRequest{})
			return err
		},
		"audit-verify": func(ctx context.Context) error {
			_, err := e.audit.VerifyLog(ctx, &hotlinev1.VerifyLogRequest{})
			return err
		},
	}
	auditCalls := []string{"audit", "audit-export", "audit-summary", "audit-checkpoint", "audit-verify"}
	denied := map[server.Role][]string{
		server.RoleAgent:       append([]string{"register", "hold", "release"}, auditCalls...),
		server.RoleSupervisor:  {"register"},
		server.RoleAuditor:     {"register", "lookup", "check-owner", "hold", "release", "issue", "history"},
		server.RoleProvisioner: append([]string{"lookup", "check-owner", "hold", "release", "issue", "history"}, auditCalls...),
	}
	for role, names := range denied {
		for _, name := range names {
			t.Run(fmt.Sprintf("refused/%s-%s", role, name), func(t *testing.T) {
				wantReason(t, wantCode(t, calls[name](e.as(t, role)), codes.PermissionDenied), server.ReasonRoleNotAllowed)
			})
		}
	}
	t.Run("refused/role-not-allowed-lists-the-roles-that-may", func(t *testing.T) {
		st := wantCode(t, calls["hold"](e.as(t, server.RoleAgent)), codes.PermissionDenied)
		if ei := wantReason(t, st, server.ReasonRoleNotAllowed); ei.GetMetadata()["roles"] != "supervisor" {
			t.Errorf("roles %q, want supervisor", ei.GetMetadata()["roles"])
		}
	})
	t.Run("refused/agent-override-reason", func(t *testing.T) {
		r := issueReq(sn)
		r.OverrideReason = "I am sure"
		_, err := e.recovery.IssueTemporaryPassword(e.as(t, server.RoleAgent), r)
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("refusals-are-audited", func(t *testing.T) {
		resp, err := e.audit.QueryEvents(e.as(t, server.RoleAuditor), &hotlinev1.QueryEventsRequest{
			Serial: sn, Action: string(server.ActionIssue), Outcome: hotlinev1.Outcome_OUTCOME_REFUSED})
		if err != nil {
			t.Fatal(err)
		}
		// auditor and provisioner denied, agent override refused
		if n := len(resp.GetEvents()); n != 3 { // auditor, provisioner, agent with an override reason
			t.Fatalf("%d refused issue events for %s", n, sn)
		}
	})
}

func TestAuditQueryPages(t *testing.T) {
	e := start(t)
	sn := e.register(t, 0)
	agent := e.as(t, server.RoleAgent)
	for i := 0; i < 5; i++ {
		if _, err := e.devices.LookupDevice(agent, &hotlinev1.LookupDeviceRequest{Query: sn}); err != nil {
			t.Fatal(err)
		}
	}
	auditor := e.as(t, server.RoleAuditor)
	req := &hotlinev1.QueryEventsRequest{
		Serial: sn, Action: string(server.ActionLookup), PageSize: 2,
		StartTime: timestamppb.New(time.Now().Add(-time.Hour)), EndTime: timestamppb.New(time.Now().Add(time.Hour)),
	}
	seen := map[int64]bool{}
	pages := 0
	for {
		resp, err := e.audit.QueryEvents(auditor, req)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, ev := range resp.GetEvents() {
			if seen[ev.GetId()] {
				t.Fatalf("event %d twice", ev.GetId())
			}
			seen[ev.GetId()] = true
			if ev.GetSerial() != sn || ev.GetOutcome() != hotlinev1.Outcome_OUTCOME_SUCCESS || ev.GetRole() != hotlinev1.Role_ROLE_AGENT {
				t.Errorf("event %v", ev)
			}
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if len(seen) != 5 || pages != 3 {
		t.Fatalf("%d events in %d pages, want 5 in 3", len(seen), pages)
	}
	t.Run("refused/token-with-other-filter", func(t *testing.T) {
		r := &hotlinev1.QueryEventsRequest{Serial: sn, PageSize: 1}
		resp, err := e.audit.QueryEvents(auditor, r)
		if err != nil || resp.GetNextPageToken() == "" {
			t.Fatalf("resp %v err %v", resp, err)
		}
		r.PageToken, r.Actor = resp.GetNextPageToken(), "someone-else"
		_, err = e.audit.QueryEvents(auditor, r)
		wantCode(t, err, codes.InvalidArgument)
	})
	t.Run("clamped/page-size-over-max", func(t *testing.T) {
		// MaxAuditPage+1 events of one actor, written straight into the log
		// in one statement.
		actor := fmt.Sprintf("clamp-%d", subjects.Add(1))
		if _, err := openStore(t).Pool().Exec(context.Background(), `INSERT INTO audit_events (actor, role, action, outcome)
			SELECT $1, 'agent', 'device.lookup', 'success' FROM generate_series(1, $2)`, actor, server.MaxAuditPage+1); err != nil {
			t.Fatal(err)
		}
		r := &hotlinev1.QueryEventsRequest{Actor: actor, PageSize: math.MaxInt32}
		resp, err := e.audit.QueryEvents(auditor, r)
		if err != nil {
			t.Fatalf("page_size over the maximum refused: %v", err)
		}
		if n := len(resp.GetEvents()); n != server.MaxAuditPage || resp.GetNextPageToken() == "" {
			t.Fatalf("%d events, next page token %q: want %d and a token", n, resp.GetNextPageToken(), server.MaxAuditPage)
		}
		r.PageToken = resp.GetNextPageToken()
		if resp, err = e.audit.QueryEvents(auditor, r); err != nil || len(resp.GetEvents()) != 1 || resp.GetNextPageToken() != "" {
			t.Fatalf("last page: %d events, token %q, %v", len(resp.GetEvents()), resp.GetNextPageToken(), err)
		}
	})
}

func TestListIssuancesPages(t *testing.T) {
	e := start(t, func(s *server.Service) {
		s.Limits.PerDevice, s.Limits.PerAgent = server.MaxIssuancesPage+1, server.MaxIssuancesPage+10
	})
	agent := e.as(t, server.RoleAgent)
	issue := func(t *testing.T, sn string, n int) {
		t.Helper()
		for range n {
			if _, err := e.recovery.IssueTemporaryPassword(agent, issueReq(sn)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// list follows the tokens from page_size and token, and returns the
	// sequences seen and the number of pages.
	list := func(t *testing.T, sn string, size int32, token string) (seqs []int64, pages int) {
		t.Helper()
		for {
			resp, err := e.recovery.ListIssuances(agent, &hotlinev1.ListIssuancesRequest{Serial: sn, PageSize: size, PageToken: token})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, iss := range resp.GetIssuances() {
				seqs = append(seqs, iss.GetSequence())
			}
			if token = resp.GetNextPageToken(); token == "" {
				return seqs, pages
			}
		}
	}
	sn := e.register(t, 0)
	issue(t, sn, 5)

	t.Run("pages/follow-token-to-the-end", func(t *testing.T) {
		seqs, pages := list(t, sn, 2, "")
		if !slices.Equal(seqs, []int64{5, 4, 3, 2, 1}) || pages != 3 {
			t.Fatalf("sequences %v in %d pages, want 5..1 in 3", seqs, pages)
		}
	})
	t.Run("pages/exact-fit-has-no-token", func(t *testing.T) {
		if seqs, pages := list(t, sn, 5, ""); len(seqs) != 5 || pages != 1 {
			t.Fatalf("sequences %v in %d pages, want 5 in 1", seqs, pages)
		}
	})
	t.Run("pages/default-size", func(t *testing.T) {
		if seqs, pages := list(t, sn, 0, ""); len(seqs) != 5 || pages != 1 {
			t.Fatalf("sequences %v in %d pages, want 5 in 1 (default %d)", seqs, pages, server.DefaultIssuancesPage)
		}
	})
	first, err := e.recovery.ListIssuances(agent, &hotlinev1.ListIssuancesRequest{Serial: sn, PageSize: 2})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page %v, %v", first, err)
	}
	t.Run("pages/token-is-opaque-base64url", func(t *testing.T) {
		if _, err := base64.RawURLEncoding.DecodeString(first.GetNextPageToken()); err != nil {
			t.Fatalf("token %q: %v", first.GetNextPageToken(), err)
		}
	})
	t.Run("pages/token-with-the-serial-in-lower-case", func(t *testing.T) {
		if seqs, _ := list(t, strings.ToLower(sn), 2, first.GetNextPageToken()); !slices.Equal(seqs, []int64{3, 2, 1}) {
			t.Fatalf("sequences %v, want 3, 2, 1", seqs)
		}
	})

	refused := []struct {
		name, serial, token string
	}{
		{"refused/token-for-another-serial", e.register(t, 0), first.GetNextPageToken()},
		{"refused/forged-token", sn, "forged"},
		{"refused/token-of-another-version", sn, base64.RawURLEncoding.EncodeToString(
			fmt.Appendf(nil, `{"v":2,"s":%q,"q":3}`, sn))},
		{"refused/token-without-sequence", sn, base64.RawURLEncoding.EncodeToString(
			fmt.Appendf(nil, `{"v":1,"s":%q}`, sn))},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.recovery.ListIssuances(agent, &hotlinev1.ListIssuancesRequest{Serial: tt.serial, PageToken: tt.token})
			st := wantCode(t, err, codes.InvalidArgument)
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 && br.FieldViolations[0].Field == "page_token" {
					return
				}
			}
			t.Errorf("no BadRequest naming page_token: %v", st.Details())
		})
	}

	t.Run("clamped/page-size-over-max", func(t *testing.T) {
		big := e.register(t, 0)
		issue(t, big, server.MaxIssuancesPage+1)
		for _, size := range []int32{server.MaxIssuancesPage + 1, math.MaxInt32} {
			resp, err := e.recovery.ListIssuances(agent, &hotlinev1.ListIssuancesRequest{Serial: big, PageSize: size})
			if err != nil {
				t.Fatalf("page_size %d refused: %v", size, err)
			}
			if n := len(resp.GetIssuances()); n != server.MaxIssuancesPage || resp.GetNextPageToken() == "" {
				t.Fatalf("page_size %d: %d issuances, token %q; want %d and a token", size, n, resp.GetNextPageToken(), server.MaxIssuancesPage)
			}
		}
		if seqs, pages := list(t, big, math.MaxInt32, ""); len(seqs) != server.MaxIssuancesPage+1 || pages != 2 || seqs[len(seqs)-1] != 1 {
			t.Fatalf("%d issuances in %d pages, want %d in 2", len(seqs), pages, server.MaxIssuancesPage+1)
		}
	})
}

// TestPageSizesMatchProto: the numbers the proto comments give a client
// are the service's constants.
func TestPageSizesMatchProto(t *testing.T) {
	for _, tt := range []struct {
		file, message string
		def, max      int
	}{
		{"recovery.proto", "ListIssuancesRequest", server.DefaultIssuancesPage, server.MaxIssuancesPage},
		{"audit.proto", "QueryEventsRequest", server.DefaultAuditPage, server.MaxAuditPage},
	} {
		t.Run(tt.message, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "..", "proto", "hotline", "v1", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			// The comment lines just above the message's page_size field.
			m := regexp.MustCompile(`(?s)\nmessage ` + tt.message + ` \{\n(.*?)\n\}`).FindSubmatch(b)
			if m == nil {
				t.Fatalf("no message %s in %s", tt.message, tt.file)
			}
			f := regexp.MustCompile(`((?:\n *//[^\n]*)+)\n *int32 page_size = `).FindSubmatch(append([]byte("\n"), m[1]...))
			if f == nil {
				t.Fatalf("%s: no commented page_size field", tt.message)
			}
			comment := regexp.MustCompile(`\s*//\s*`).ReplaceAllString(string(f[1]), " ")
			n := regexp.MustCompile(`default (\d+), at most (\d+), larger values are clamped`).FindStringSubmatch(comment)
			if n == nil {
				t.Fatalf("%s.page_size comment %q: expected \"default N, at most M, larger values are clamped\"", tt.message, comment)
			}
			if n[1] != strconv.Itoa(tt.def) || n[2] != strconv.Itoa(tt.max) {
				t.Errorf("%s.page_size comment says default %s, at most %s; the service's constants are %d and %d", tt.message, n[1], n[2], tt.def, tt.max)
			}
		})
	}
}
