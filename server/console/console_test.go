package console

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

var testURL string

func TestMain(m *testing.M) {
	pgtest.Main(m, "server_console", &testURL, postgres.Migrate)
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// harness is a console over the real database with the dev sign-in.
type harness struct {
	t     testing.TB
	c     *Console
	srv   *httptest.Server
	svc   *server.Service
	db    *postgres.DB
	clock *clock
}

var serialN int
var serialMu sync.Mutex

// newSerial returns a fresh registered-able serial.
func newSerial() string {
	serialMu.Lock()
	defer serialMu.Unlock()
	serialN++
	return fmt.Sprintf("TSTCON#2020-01-01#1#DVR%09dA0", serialN)
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	db, err := postgres.Open(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	kr, err := keyring.Init(filepath.Join(t.TempDir(), "keyring"))
	if err != nil {
		t.Fatal(err)
	}
	svc := server.NewService(db, kr)
	svc.Approvals = db
	svc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ck := &clock{t: time.Now()}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.Dev, cfg.Now, cfg.PublicURL = true, ck.now, "http://127.0.0.1"
	c, err := New(context.Background(), cfg, svc, db, svc.Logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	return &harness{t: t, c: c, srv: srv, svc: svc, db: db, clock: ck}
}

// register adds a device and returns its device id.
func (h *harness) register(owner string) (serial, id string) {
	h.t.Helper()
	s := newSerial()
	v, err := h.svc.RegisterDevice(context.Background(), server.Actor{Subject: "factory", Role: server.RoleProvisioner},
		server.NewDevice{Serial: s, Model: "WBXHD041S", OwnerContact: owner, Firmware: "V1"})
	if err != nil {
		h.t.Fatal(err)
	}
	return v.Device.Serial, v.Device.DeviceID
}

// do sends a request with the session cookie (if any) and returns the
// answer with its body read.
func (h *harness) do(method, path, cookie string, form url.Values, hdr ...string) (*http.Response, string) {
	h.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, h.srv.URL+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// signIn uses the dev sign-in and returns the session cookie's value.
func (h *harness) signIn(name string, role server.Role) string {
	h.t.Helper()
	resp, _ := h.do("POST", "/dev/sign-in", "", url.Values{"name": {name}, "role": {string(role)}, "next": {"/"}})
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" {
				h.t.Fatalf("session cookie %+v: want Secure, HttpOnly, SameSite=Lax, Path=/ and no Domain", c)
			}
			return c.Value
		}
	}
	h.t.Fatalf("dev sign-in set no session cookie (status %d)", resp.StatusCode)
	return ""
}

func signedIn(resp *http.Response) bool {
	return resp.StatusCode == http.StatusOK
}

func TestStatusTableComplete(t *testing.T) {
	for _, c := range []server.Code{server.EInvalid, server.ENotFound, server.EConflict, server.EUnauthenticated, server.EPermission,
		server.ELimit, server.EPrecondition, server.EUnavailable, server.EInternal} {
		if _, ok := statusTable[c]; !ok {
			t.Errorf("statusTable has no entry for %s", c)
		}
	}
	p := asProblem(server.Internal(io.ErrUnexpectedEOF, "reading"))
	if p.Status != 500 || strings.Contains(p.Message, "EOF") {
		t.Errorf("an internal error is shown as %+v: want 500 and no cause", p)
	}
}

func TestForgedSessionCookieSignsNoOneIn(t *testing.T) {
	h := newHarness(t, Config{})
	var raw [32]byte
	for _, v := range []string{base64.RawURLEncoding.EncodeToString(raw[:]), "not-base64!", "c2hvcnQ", strings.Repeat("A", 4096)} {
		resp, _ := h.do("GET", "/search", v, nil)
		if signedIn(resp) {
			t.Errorf("cookie %.20q… was accepted", v)
		}
	}
}

func TestSessionIDIsStoredOnlyAsItsHash(t *testing.T) {
	h := newHarness(t, Config{})
	v := h.signIn("alice", server.RoleAgent)
	raw, _ := base64.RawURLEncoding.DecodeString(v)
	if len(raw) != 32 {
		t.Fatalf("session id of %d bytes, want 32 (256 bits)", len(raw))
	}
	pool, err := pgxpool.New(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	sum := sha256.Sum256(raw)
	var n, plain int
	pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE id_hash = $1), count(*) FILTER (WHERE id_hash = $2) FROM console_sessions`, sum[:], raw).Scan(&n, &plain)
	if n != 1 || plain != 0 {
		t.Fatalf("sessions stored by hash: %d, by the id itself: %d", n, plain)
	}
}

func TestSessionEndsWhenIdleAndAtItsAbsoluteLimit(t *testing.T) {
	h := newHarness(t, Config{IdleTimeout: 10 * time.Minute, AbsoluteTimeout: time.Hour})
	v := h.signIn("alice", server.RoleAgent)
	for i := 0; i < 5; i++ { // active every 9 minutes: idle never ends it
		h.clock.add(9 * time.Minute)
		if resp, _ := h.do("GET", "/search", v, nil); !signedIn(resp) {
			t.Fatalf("an active session ended after %d minutes", 9*(i+1))
		}
	}
	h.clock.add(16 * time.Minute) // 61 minutes after sign-in
	if resp, _ := h.do("GET", "/search", v, nil); signedIn(resp) {
		t.Fatal("a session outlived its absolute limit")
	}
	v = h.signIn("alice", server.RoleAgent)
	h.clock.add(11 * time.Minute)
	if resp, _ := h.do("GET", "/search", v, nil); signedIn(resp) {
		t.Fatal("a session outlived its idle timeout")
	}
}

func TestSignedOutCookieReplayedSignsNoOneIn(t *testing.T) {
	h := newHarness(t, Config{})
	v := h.signIn("alice", server.RoleAgent)
	h.do("POST", "/sign-out", v, url.Values{})
	if resp, _ := h.do("GET", "/search", v, nil); signedIn(resp) {
		t.Fatal("the cookie of a signed-out session still works")
	}
}

func TestResubmittedIssueFormNeverIssuesTwice(t *testing.T) {
	h := newHarness(t, Config{})
	serial, id := h.register("owner@example.com")
	v := h.signIn("alice", server.RoleAgent)
	form := url.Values{"request_id": {server.NewUUID()}, "ticket": {"T-9"}, "method": {"2"}}
	codeRE := regexp.MustCompile(`id="voice-code"`)
	_, first := h.do("POST", "/devices/"+id+"/issue", v, form)
	_, second := h.do("POST", "/devices/"+id+"/issue", v, form)
	if !codeRE.MatchString(first) || codeRE.MatchString(second) || !strings.Contains(second, "already shown") {
		t.Fatalf("first answer shows the code: %v; second shows it: %v", codeRE.MatchString(first), codeRE.MatchString(second))
	}
	p, err := h.svc.Issuances(context.Background(), server.Actor{Subject: "t", Role: server.RoleSupervisor}, serial, 0, "")
	if err != nil || len(p.Issuances) != 1 {
		t.Fatalf("issuances after two submissions: %d (%v), want 1", len(p.Issuances), err)
	}
	// Showing it again is an explicit act, audited as a replay.
	_, again := h.do("POST", "/devices/"+id+"/show-again", v, form)
	if !codeRE.MatchString(again) {
		t.Fatal("show again did not show the code")
	}
	evs, _, err := h.svc.QueryAudit(context.Background(), server.Actor{Subject: "t", Role: server.RoleAuditor}, server.AuditFilter{Serial: serial, Action: server.ActionIssueReplay})
	if err != nil || len(evs) != 1 || !strings.HasPrefix(evs[0].ClientAddr, "console:") {
		t.Fatalf("replay events: %+v (%v): want one, from the console", evs, err)
	}
}

func TestStaleSignInRevealsNoCode(t *testing.T) {
	h := newHarness(t, Config{FreshAuth: 10 * time.Minute, IdleTimeout: time.Hour})
	serial, id := h.register("owner@example.com")
	v := h.signIn("alice", server.RoleAgent)
	h.clock.add(11 * time.Minute)
	resp, body := h.do("POST", "/devices/"+id+"/issue", v, url.Values{"request_id": {server.NewUUID()}, "ticket": {"T-9"}, "method": {"2"}})
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, `id="voice-code"`) || !strings.Contains(body, "fresh=1") {
		t.Fatalf("stale sign-in: status %d, want 401 asking for a fresh sign-in", resp.StatusCode)
	}
	p, _ := h.svc.Issuances(context.Background(), server.Actor{Subject: "t", Role: server.RoleSupervisor}, serial, 0, "")
	if len(p.Issuances) != 0 {
		t.Fatal("a stale sign-in issued a code")
	}
}

func TestAgentHandMadeSupervisorActIsRefusedAndAudited(t *testing.T) {
	h := newHarness(t, Config{})
	_, id := h.register("")
	v := h.signIn("mallory", server.RoleAgent)
	for _, path := range []string{"/devices/" + id + "/hold", "/devices/" + id + "/release"} {
		if resp, _ := h.do("POST", path, v, url.Values{"reason": {"x"}}); resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s by an agent: %d, want 403", path, resp.StatusCode)
		}
	}
	for _, path := range []string{"/audit", "/audit/export?format=csv", "/audit/summary", "/team/today"} {
		if resp, _ := h.do("GET", path, v, nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s by an agent: %d, want 403", path, resp.StatusCode)
		}
	}
	evs, _, _ := h.svc.QueryAudit(context.Background(), server.Actor{Subject: "t", Role: server.RoleAuditor},
		server.AuditFilter{Actor: "mallory", Outcome: server.OutcomeRefused, Limit: 100})
	if len(evs) != 6 {
		t.Fatalf("%d refusals audited, want 6", len(evs))
	}
}

func TestCrossOriginPostIsRefused(t *testing.T) {
	h := newHarness(t, Config{})
	_, id := h.register("")
	v := h.signIn("bob", server.RoleSupervisor)
	resp, _ := h.do("POST", "/devices/"+id+"/hold", v, url.Values{"reason": {"x"}}, "Sec-Fetch-Site", "cross-site")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site POST: %d, want 403", resp.StatusCode)
	}
	resp, _ = h.do("POST", "/devices/"+id+"/hold", v, url.Values{"reason": {"x"}}, "Origin", "https://evil.example")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST with a foreign Origin: %d, want 403", resp.StatusCode)
	}
}

func TestEveryAnswerCarriesAStrictPolicyAndNoStateChangesOnGet(t *testing.T) {
	h := newHarness(t, Config{})
	_, id := h.register("")
	v := h.signIn("bob", server.RoleSupervisor)
	resp, _ := h.do("GET", "/devices/"+id, v, nil)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("CSP %q, Cache-Control %q", csp, resp.Header.Get("Cache-Control"))
	}
	for _, path := range []string{"/devices/" + id + "/hold", "/devices/" + id + "/issue", "/sign-out", "/dev/sign-in"} {
		if resp, _ := h.do("GET", path, v, nil); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET %s: %d, want 405", path, resp.StatusCode)
		}
	}
}

func TestDevSignInAndPlainHTTPRefusedOffLoopback(t *testing.T) {
	if _, err := (Config{Listen: "0.0.0.0:7444", Dev: true, InsecurePlaintext: true}).withDefaults(); err == nil {
		t.Error("the development sign-in was allowed on 0.0.0.0")
	}
	if _, err := (Config{Listen: "10.0.0.5:7444", OIDCIssuer: "https://idp", OIDCClientID: "c", Roles: map[string]server.Role{"g": "agent"}}).withDefaults(); err == nil {
		t.Error("plain HTTP was allowed off loopback")
	}
}

func TestRoleClaimMapsToExactlyOneRole(t *testing.T) {
	c := &Console{cfg: Config{RoleClaim: "groups", SubjectClaim: "email", Roles: map[string]server.Role{"agents": server.RoleAgent, "sups": server.RoleSupervisor}}}
	for _, tc := range []struct {
		name   string
		claims map[string]any
		role   server.Role
	}{
		{"agent/one-group", map[string]any{"sub": "1", "email": "a@x", "groups": []any{"staff", "agents"}}, server.RoleAgent},
		{"agent/string-claim", map[string]any{"sub": "1", "email": "a@x", "groups": "agents"}, server.RoleAgent},
		{"refused/no-group", map[string]any{"sub": "1", "email": "a@x", "groups": []any{"staff"}}, ""},
		{"refused/two-roles", map[string]any{"sub": "1", "email": "a@x", "groups": []any{"agents", "sups"}}, ""},
		{"refused/no-claim", map[string]any{"sub": "1", "email": "a@x"}, ""},
	} {
		_, role, msg := c.identity(tc.claims)
		if role != tc.role || (tc.role == "") != (msg != "") {
			t.Errorf("%s: role %q (%q), want %q", tc.name, role, msg, tc.role)
		}
	}
}

func TestOpenRedirectAfterSignInRefused(t *testing.T) {
	for _, next := range []string{"https://evil.example/", "//evil.example", "/\\evil.example", "javascript:alert(1)", "/ok\r\nSet-Cookie: x"} {
		if got := localPath(next); got != "/" {
			t.Errorf("localPath(%q) = %q, want /", next, got)
		}
	}
	if localPath("/devices/DVR1?page=x") != "/devices/DVR1?page=x" {
		t.Error("a local path was not kept")
	}
}

// FuzzLocalPath: whatever comes back as "next" is a path on the console.
func FuzzLocalPath(f *testing.F) {
	for _, s := range []string{"/", "//evil", "/\\evil", "https://x", "/a?b=c", "\t//x", "/%2F%2Fevil"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := localPath(s)
		u, err := url.Parse(got)
		if err != nil || u.Host != "" || u.Scheme != "" || !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\") {
			t.Fatalf("localPath(%q) = %q leaves the console", s, got)
		}
	})
}
