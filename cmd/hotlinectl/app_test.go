package main

// End-to-end tests of hotlinectl's Run against the real server, started
// in-process on port 0 over this package's own PostgreSQL database.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	hkeyring "github.com/dvrhotline/hotline/server/keyring"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/audit"
	grpcserver "github.com/dvrhotline/hotline/server/grpc"
	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

var testURL string

func TestMain(m *testing.M) {
	pgtest.Main(m, "cmd_hotlinectl", &testURL, postgres.Migrate)
}

type keyring struct{ signer ed25519.PrivateKey }

func (k *keyring) CurrentGeneration() int { return 1 }
func (k *keyring) DeviceKey(serial string, gen int) (voicecode.DeviceKey, error) {
	return voicecode.DeriveDeviceKey(bytes.Repeat([]byte{byte(gen)}, 32), gen, serial)
}
func (k *keyring) GrantSigner() (string, ed25519.PrivateKey)      { return "g1", k.signer }
func (k *keyring) GrantKey(kid string) (ed25519.PrivateKey, bool) { return k.signer, kid == "g1" }
func (k *keyring) OwnerCode(gen int, id, serial string) (string, error) {
	return hkeyring.DeriveOwnerCode(bytes.Repeat([]byte{byte(gen)}, 32), id, serial)
}
func (k *keyring) IssuanceMAC(gen int, msg []byte) ([]byte, error) {
	h := hmac.New(sha256.New, bytes.Repeat([]byte{byte(gen)}, 32))
	h.Write(msg)
	return h.Sum(nil), nil
}
func (k *keyring) GrantJWKS() ([]byte, error) {
	return grant.MarshalJWKS(map[string]ed25519.PublicKey{"g1": k.signer.Public().(ed25519.PublicKey)})
}

// serve starts a server, adjusted by opts, and returns its address and a
// token issuer.
func serve(t *testing.T, opts ...func(*server.Service)) (string, *server.StaffIssuer) {
	t.Helper()
	db, err := postgres.Open(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	_, gk, _ := ed25519.GenerateKey(rand.Reader)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	issuer, _ := server.NewStaffIssuer("s1", sk)
	verifier, _ := server.NewStaffVerifier(issuer.PublicKeys())
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := server.NewService(db, &keyring{signer: gk})
	svc.Logger = quiet
	svc.AuditLog = &audit.Log{DB: db.Pool(), Trusted: func() map[string]ed25519.PublicKey {
		return map[string]ed25519.PublicKey{auditKID: auditKey.Public().(ed25519.PublicKey)}
	}}
	for _, o := range opts {
		o(svc)
	}
	srv, err := grpcserver.New(grpcserver.Config{Service: svc, Verifier: verifier, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String(), issuer
}

// run runs hotlinectl with HOTLINE_ADDR and HOTLINE_TOKEN set.
func run(t *testing.T, addr, token string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	env := map[string]string{"HOTLINE_ADDR": addr, "HOTLINE_TOKEN": token}
	var out, errb bytes.Buffer
	code = (&App{Getenv: func(k string) string { return env[k] }}).Run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func token(t *testing.T, iss *server.StaffIssuer, role server.Role) string {
	t.Helper()
	tok, err := iss.Issue("t-"+string(role), role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestWalkThrough(t *testing.T) {
	addr, iss := serve(t)
	var r [5]byte
	rand.Read(r[:])
	sn := fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%X", r)
	prov, agent := token(t, iss, server.RoleProvisioner), token(t, iss, server.RoleAgent)

	if code, _, errs := run(t, addr, prov, "devices", "add", sn, "--model", "WBXHD041S1T", "--owner", "jane@example.com", "--firmware", "V4.0.1"); code != 0 {
		t.Fatalf("devices add: %d %s", code, errs)
	}
	code, out, errs := run(t, addr, agent, "lookup", strings.ToLower(sn), "-o", "json")
	if code != 0 {
		t.Fatalf("lookup: %d %s", code, errs)
	}
	var dev map[string]any
	if err := json.Unmarshal([]byte(out), &dev); err != nil {
		t.Fatalf("lookup -o json: %v\n%s", err, out)
	}
	if dev["serial"] != sn || dev["owner_contact_masked"] != "j***@example.com" {
		t.Errorf("lookup json %v", dev)
	}
	if code, _, _ := run(t, addr, agent, "check-owner", sn, "jane@example.com"); code != exitOK {
		t.Errorf("check-owner match: exit %d", code)
	}
	if code, _, _ := run(t, addr, agent, "check-owner", sn, "joe@example.com"); code != exitNoMatch {
		t.Errorf("check-owner mismatch: exit %d, want %d", code, exitNoMatch)
	}

	code, out, errs = run(t, addr, agent, "issue", sn, "--ticket", "T-1", "--verified-by", "owner-contact", "-o", "json", "--request-id", "req-walk-1")
	if code != 0 {
		t.Fatalf("issue: %d %s", code, errs)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("issue -o json: %v\n%s", err, out)
	}
	for _, k := range []string{"issuance_id", "voice_code", "grant", "expires_at", "request_id"} {
		if s, _ := got[k].(string); s == "" {
			t.Errorf("issue -o json lacks %s: %v", k, got)
		}
	}
	if !strings.Contains(errs, "req-walk-1") {
		t.Errorf("issue does not print the request id: %q", errs)
	}
	_, again, _ := run(t, addr, agent, "issue", sn, "--ticket", "T-1", "--verified-by", "owner-contact", "-o", "json", "--request-id", "req-walk-1")
	if again != out {
		t.Errorf("retry with the same --request-id gave another answer:\n%s\n%s", out, again)
	}
	if code, out, _ := run(t, addr, agent, "history", sn); code != 0 || !strings.Contains(out, "T-1") || strings.Contains(out, got["voice_code"].(string)) {
		t.Errorf("history: %d\n%s", code, out)
	}
	code, out, errs = run(t, addr, token(t, iss, server.RoleAuditor), "audit", "query", "--serial", sn, "--since", "1h", "-o", "json")
	if code != 0 || !strings.Contains(out, "recovery.issue") {
		t.Errorf("audit query: %d %s\n%s", code, errs, out)
	}
	if code, out, _ := run(t, addr, agent, "keys", "jwks"); code != 0 || !strings.Contains(out, `"kid": "g1"`) {
		t.Errorf("keys jwks: %d %s", code, out)
	}
}

func TestErrorsSayWhatToDo(t *testing.T) {
	addr, iss := serve(t)
	tests := []struct {
		name  string
		token string
		args  []string
		code  int
		hint  string
	}{
		{"refused/no-token", "", []string{"lookup", "DVR1101134C08011"}, exitFailed, "hotline-server token --subject you --role agent"},
		{"refused/bad-token", "x.y.z", []string{"audit", "query"}, exitFailed, "--role auditor"},
		{"refused/wrong-role", token(t, iss, server.RoleAuditor), []string{"hold", "DVR1101134C08011", "--reason", "x"}, exitFailed, "role supervisor"},
		{"refused/malformed-serial", token(t, iss, server.RoleAgent), []string{"lookup", "not a serial!"}, exitFailed, "fix the QUERY argument"},
		{"refused/unknown-device", token(t, iss, server.RoleAgent), []string{"lookup", "ZZ9999999999"}, exitFailed, "check the serial on the label"},
		{"usage/unknown-command", "", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"usage/issue-without-ticket", "", []string{"issue", "X", "--verified-by", "other"}, exitUsage, "--ticket is required"},
		{"usage/other-without-note", "", []string{"issue", "X", "--ticket", "T", "--verified-by", "other"}, exitUsage, "--note"},
		{"usage/bad-output", "", []string{"lookup", "X", "-o", "yaml"}, exitUsage, "text or json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := run(t, addr, tt.token, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.hint) {
				t.Errorf("exit %d (want %d), stderr %q lacks %q", code, tt.code, errs, tt.hint)
			}
		})
	}
}

func TestParseMethod(t *testing.T) {
	for in, ok := range map[string]bool{"owner-contact": true, "OWNER_CONTACT_MATCHED": true, "proof-of-purchase": true,
		"installer_account": true, "Other": true, "receipt": true, "installer": true, "": false, "unspecified": false,
		"phone": false} { // "phone" says how the customer called, not how ownership was checked
		if _, got := parseMethod(in); got != ok {
			t.Errorf("parseMethod(%q) ok = %v, want %v", in, got, ok)
		}
	}
}

// TestListsPage: history and audit query print a page, say how to get the
// next one, follow it with --page-token or every one with --all, and pass
// a --limit over the server's maximum through (the server clamps it).
func TestListsPage(t *testing.T) {
	addr, iss := serve(t)
	var r [5]byte
	rand.Read(r[:])
	sn, other := fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%X", r), fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%XF", r)
	prov, agent, auditor := token(t, iss, server.RoleProvisioner), token(t, iss, server.RoleAgent), token(t, iss, server.RoleAuditor)
	for _, s := range []string{sn, other} {
		if code, _, errs := run(t, addr, prov, "devices", "add", s, "--model", "WBXHD041S1T", "--owner", "jane@example.com", "--firmware", "V4.0.1"); code != 0 {
			t.Fatalf("devices add: %d %s", code, errs)
		}
	}
	for i := range 3 {
		if code, _, errs := run(t, addr, agent, "issue", sn, "--ticket", fmt.Sprintf("T-%d", i), "--verified-by", "proof-of-purchase"); code != 0 {
			t.Fatalf("issue: %d %s", code, errs)
		}
	}
	// rows counts the table rows under the header.
	rows := func(out string) int { return max(strings.Count(out, "\n")-1, 0) }
	nextToken := func(t *testing.T, errs string) string {
		t.Helper()
		_, after, ok := strings.Cut(errs, "--page-token ")
		if !ok {
			t.Fatalf("stderr %q names no next page token", errs)
		}
		return strings.Fields(after)[0]
	}

	code, out, errs := run(t, addr, agent, "history", sn, "--limit", "2")
	if code != 0 || rows(out) != 2 || !strings.Contains(out, "T-2") || strings.Contains(out, "T-0") {
		t.Fatalf("history --limit 2: %d %q\n%s", code, errs, out)
	}
	tok := nextToken(t, errs)

	tests := []struct {
		name     string
		token    string
		args     []string
		code     int
		rows     int    // table rows on stdout, -1 to skip
		contains string // on stdout
		stderr   string // on stderr; "" means no next-page line
	}{
		{"pages/follow-token-to-the-end", agent, []string{"history", sn, "--limit", "2", "--page-token", tok}, 0, 1, "T-0", ""},
		{"pages/all", agent, []string{"history", sn, "--limit", "1", "--all"}, 0, 3, "T-1", ""},
		{"pages/json-carries-the-token", agent, []string{"history", sn, "--limit", "1", "-o", "json"}, 0, -1, `"next_page_token": "ey`, ""},
		{"clamped/limit-over-the-server-max", agent, []string{"history", sn, "--limit", "100000"}, 0, 3, "T-2", ""},
		{"refused/token-for-another-serial", agent, []string{"history", other, "--page-token", tok}, exitFailed, 0, "", "--page-token"},
		{"usage/limit-zero", agent, []string{"history", sn, "--limit", "0"}, exitUsage, 0, "", "--all"},
		{"audit/pages/next-token-on-stderr", auditor, []string{"audit", "query", "--serial", sn, "--limit", "1"}, 0, 1, "", "more events: --page-token"},
		{"audit/pages/all", auditor, []string{"audit", "query", "--serial", sn, "--action", "recovery.issue", "--all"}, 0, 3, "recovery.issue", ""},
		{"audit/clamped/limit-over-the-server-max", auditor, []string{"audit", "query", "--serial", sn, "--action", "recovery.issue", "--limit", "100000"}, 0, 3, "recovery.issue", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := run(t, addr, tt.token, tt.args...)
			if code != tt.code || (tt.rows >= 0 && rows(out) != tt.rows) || !strings.Contains(out, tt.contains) {
				t.Fatalf("exit %d (want %d), %d rows (want %d) or no %q:\n%s\nstderr %q", code, tt.code, rows(out), tt.rows, tt.contains, out, errs)
			}
			if tt.stderr == "" && strings.Contains(errs, "--page-token") {
				t.Errorf("stderr %q offers a next page", errs)
			}
			if !strings.Contains(errs, tt.stderr) {
				t.Errorf("stderr %q lacks %q", errs, tt.stderr)
			}
		})
	}
}
