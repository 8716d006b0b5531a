package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/dvrhotline/hotline/cmd/internal/wiring"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/mail/smtptest"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// screenshotDir receives the README's PNGs of each console screen the
// browser test visits, when HOTLINE_SCREENSHOTS=1 (make screenshots);
// other runs write them to a temporary folder, so that a test run leaves
// the tracked files alone.
const screenshotDir = "../../server/console/screenshots"

// chromiumPath is Debian's Chromium (HOTLINE_CHROMIUM, as make test's
// deploy/dev/ensure-chromium.sh prints it, or found on PATH).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HOTLINE_CHROMIUM"); p != "" {
		return p
	}
	for _, c := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	t.Skip("no chromium: run deploy/dev/ensure-chromium.sh (make test does)")
	return ""
}

// consoleE2E is a running hotline-server with its console, an OpenID
// provider, and what the test needs to drive a browser against them.
type consoleE2E struct {
	t        *testing.T
	shots    string // where shot writes
	logs     *lockedBuffer
	m        *Main
	op       *mockoidc.MockOIDC
	idp      *maxAgeProvider
	dbURL    string
	svc      *server.Service
	chromium string
	url      string
	// smtp receives what the server mails (--smtp-security plain to this
	// loopback relay).
	smtp *smtptest.Server
}

func startConsoleE2E(t *testing.T) *consoleE2E {
	t.Helper()
	e := &consoleE2E{t: t, chromium: chromiumPath(t), idp: &maxAgeProvider{lastAuth: map[string]time.Time{}}}
	op, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	op.AddMiddleware(e.idp.middleware)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Shutdown() })
	e.op = op
	cfg := op.Config()

	kdir := filepath.Join(t.TempDir(), "keyring")
	kr, err := keyring.Init(kdir)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(io.Discard, io.Discard)
	e.dbURL = pgtest.NewDatabase(t, "console_e2e")
	e.smtp = smtptest.Start(t)
	if err := m.ParseFlags([]string{"--keyring", kdir, "--database-url", e.dbURL, "--listen", "127.0.0.1:0",
		"--smtp-addr", e.smtp.Addr, "--smtp-security", "plain", "--mail-from", "DVR Support <support@hotline.test>",
		"--limit-per-device", "1", "--trust-keyring-staff-issuer", "--console-listen", "127.0.0.1:0", "--console-oidc-issuer", cfg.Issuer,
		"--console-oidc-client-id", cfg.ClientID, "--console-roles", "hl-agents=agent,hl-supervisors=supervisor,hl-auditors=auditor"}); err != nil {
		t.Fatal(err)
	}
	m.Console.OIDCClientSecret = cfg.ClientSecret
	e.logs = &lockedBuffer{}
	m.Logger = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{ReplaceAttr: wiring.Redact, Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready():
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() { cancel(); <-done; m.Close() })
	e.m, e.url = m, m.console.URL()
	e.svc = server.NewService(m.srv.DB, kr)
	prov := server.Actor{Subject: "factory", Role: server.RoleProvisioner}
	for _, d := range demoDevices {
		if _, err := e.svc.RegisterDevice(ctx, prov, d); err != nil {
			t.Fatal(err)
		}
	}
	e.shots = t.TempDir()
	if os.Getenv("HOTLINE_SCREENSHOTS") == "1" {
		e.shots = screenshotDir
		os.MkdirAll(e.shots, 0o755)
	}
	return e
}

// browser starts a fresh Chromium (its own profile) for one staff member.
func (e *consoleE2E) browser() context.Context {
	e.t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(e.chromium), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(e.t.TempDir()), chromedp.WindowSize(1280, 800))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelB := chromedp.NewContext(actx)
	e.t.Cleanup(func() { cancelB(); cancelA() })
	// The first action starts the browser: no timeout on its context.
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		e.t.Fatal(err)
	}
	return bctx
}

func (e *consoleE2E) run(ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	e.t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		e.t.Fatalf("%s: %v (at %s)", what, err, loc)
	}
}

// value runs one action that reads a value.
func value[T any](e *consoleE2E, ctx context.Context, what string, a chromedp.Action[T]) T {
	e.t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		e.t.Fatalf("%s: %v (at %s)", what, err, loc)
	}
	return v
}

// shot writes a PNG of the whole page to e.shots.
func (e *consoleE2E) shot(ctx context.Context, name string) {
	e.t.Helper()
	png := value(e, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(e.shots, name+".png"), png, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// signIn goes through the OpenID code flow as subject in group.
func (e *consoleE2E) signIn(ctx context.Context, subject, group string, shot bool) {
	e.t.Helper()
	e.queueUser(subject, group)
	e.run(ctx, "open the console", chromedp.Navigate(e.url+"/"), chromedp.WaitVisible(chromedp.CSS("#oidc-sign-in")))
	if shot {
		e.shot(ctx, "01-sign-in")
	}
	e.run(ctx, "sign in", chromedp.Click(chromedp.CSS("#oidc-sign-in")), chromedp.WaitVisible(chromedp.CSS("form.who")))
	who := e.text(ctx, "form.who span")
	if !strings.Contains(who, subject) {
		e.t.Fatalf("signed in as %q, want %s", who, subject)
	}
}

func (e *consoleE2E) text(ctx context.Context, sel string) string {
	e.t.Helper()
	return value(e, ctx, "read "+sel, chromedp.Text(chromedp.CSS(sel)))
}

func (e *consoleE2E) exists(ctx context.Context, sel string) bool {
	e.t.Helper()
	return value(e, ctx, "count "+sel, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel))) > 0
}

// post sends a hand-made same-origin POST from the page and returns its status.
func (e *consoleE2E) post(ctx context.Context, path, body string) int {
	e.t.Helper()
	js := fmt.Sprintf(`fetch(%q, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: %q}).then(r => r.status)`, path, body)
	return value(e, ctx, "POST "+path, chromedp.Evaluate[int](js, chromedp.EvalAwaitPromise))
}

// TestConsoleInARealBrowser drives the console in Chromium against the
// real server, PostgreSQL and an OpenID provider: the agent's whole call
// (sloppy search, near match, owner check, issue, one-time reveal, the DVR
// accepting the code read off the page), the refusals an insider or another
// web site meets, the supervisor's override and hold, and the auditor's
// filters, export and summary.
func TestConsoleInARealBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	e := startConsoleE2E(t)
	const id = "DVR1101134C08011"
	serial := demoDevices[0].Serial

	// The agent.
	ag := e.browser()
	e.signIn(ag, "alice", "hl-agents", true)
	e.run(ag, "sloppy search", chromedp.SendKeys(chromedp.CSS("#q"), " jz6oes 2017-08-01 3 dvr1101134c08O12 "), chromedp.Submit(chromedp.CSS("#q")),
		chromedp.WaitVisible(chromedp.CSS("#q-error")))
	e.shot(ag, "02-search-near-match")
	e.run(ag, "follow the near match", chromedp.Click(chromedp.CSS("ul.near a")), chromedp.WaitVisible(chromedp.CSS("#serial")))
	if got := e.text(ag, "#serial"); got != serial {
		t.Fatalf("device page for %q, want %s", got, serial)
	}
	e.run(ag, "malformed search", chromedp.Navigate(e.url+"/search?q=JZ6OES%232017-13-01%233%23DVR1101134C08011"), chromedp.WaitVisible(chromedp.CSS("#q-error")))
	if msg := e.text(ag, "#q-error"); !strings.Contains(msg, "YYYY-MM-DD") {
		t.Fatalf("malformed date explained as %q", msg)
	}
	e.run(ag, "device page", chromedp.Navigate(e.url+"/devices/"+id), chromedp.WaitVisible(chromedp.CSS("#claimed")))
	e.run(ag, "owner check", chromedp.SendKeys(chromedp.CSS("#claimed"), "Jane@Example.com"), chromedp.Submit(chromedp.CSS("#claimed")),
		chromedp.WaitVisible(chromedp.CSS("#verify-result")))
	if r := e.text(ag, "#verify-result"); !strings.Contains(r, "matches") {
		t.Fatalf("owner check: %q", r)
	}
	if page := e.text(ag, "main"); strings.Contains(page, "jane@example.com") {
		t.Fatal("the device page shows the registered owner contact unmasked")
	}
	e.shot(ag, "03-device-verified")
	const ticket = `T-1<script>alert("x")</script>`
	e.run(ag, "issue", chromedp.SendKeys(chromedp.CSS("#ticket"), ticket), chromedp.Click(chromedp.CSS("#issue-button")),
		chromedp.WaitVisible(chromedp.CSS("#voice-code")))
	code := e.text(ag, "#voice-code")
	if len(strings.Split(code, "-")) != 4 {
		t.Fatalf("code on the page %q: want four groups", code)
	}
	scripts := value(e, ag, "count scripts", chromedp.Evaluate[int](`document.querySelectorAll("script").length`))
	if page := e.text(ag, "main"); scripts != 1 || !strings.Contains(page, ticket) {
		t.Fatalf("the ticket was not shown inert: %d scripts on the page, ticket shown: %v", scripts, strings.Contains(page, ticket))
	}
	if p := e.text(ag, "#phonetic"); !strings.Contains(p, " - ") {
		t.Fatalf("phonetic readout %q", p)
	}
	e.shot(ag, "04-reveal")
	e.run(ag, "reload", chromedp.Reload(), chromedp.WaitReady(chromedp.CSS("main")))
	if e.exists(ag, "#voice-code") || strings.Contains(e.text(ag, "main"), code) {
		t.Fatal("reloading the reveal showed the code again")
	}
	e.shot(ag, "05-reload-no-code")
	if c := value(e, ag, "document.cookie", chromedp.Evaluate[string](`document.cookie`)); strings.Contains(c, "hotline-session") {
		t.Fatal("the session cookie is readable by the page's script")
	}

	// The DVR accepts the code read off the page.
	bin := buildBinaries(t)
	dvr := t.TempDir()
	env := append(os.Environ(), "HOTLINE_KEYRING="+e.m.KeyringDir)
	out := func(name string, args ...string) []byte {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Env = env
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return b
	}
	keyFile, trust, state := filepath.Join(dvr, "device.key"), filepath.Join(dvr, "trust.jwks"), filepath.Join(dvr, "state")
	os.WriteFile(keyFile, out("hotline-server", "keys", "device-key", serial), 0o600)
	os.WriteFile(trust, out("hotline-server", "keys", "jwks"), 0o644)
	os.Mkdir(state, 0o700)
	verify := exec.Command(filepath.Join(bin, "dvr-agent"), "verify", "--serial", serial, "--key-file", keyFile, "--trust", trust, "--state", state, code)
	if b, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("dvr-agent verify refused the code read off the page: %v\n%s", err, b)
	}

	// A DVR whose clock reads 2000-01-01 shows a request code; the agent
	// types it on the issue form, and the code read off the page is
	// accepted by that DVR, once, without its clock.
	bound := demoDevices[1]
	bdir := t.TempDir()
	bKey, bState := filepath.Join(bdir, "device.key"), filepath.Join(bdir, "state")
	os.WriteFile(bKey, out("hotline-server", "keys", "device-key", bound.Serial), 0o600)
	os.Mkdir(bState, 0o700)
	dvrArgs := func(cmd string, rest ...string) []string {
		return append([]string{cmd, "--serial", bound.Serial, "--key-file", bKey, "--trust", trust, "--state", bState,
			"--now", "2000-01-01T00:00:00Z", "--boot-id", "0f6e2a51-5c8e-4c4b-9d1e-000000000002", "--uptime", "90"}, rest...)
	}
	reqCode := strings.TrimSpace(string(out("dvr-agent", dvrArgs("request")...)))
	bid := bound.Serial[strings.LastIndex(bound.Serial, "#")+1:]
	e.run(ag, "bound: device page", chromedp.Navigate(e.url+"/devices/"+bid), chromedp.WaitVisible(chromedp.CSS("#request-code")),
		chromedp.SendKeys(chromedp.CSS("#ticket"), "T-7"), chromedp.Click(chromedp.CSS(`input[name=method][value="2"]`)),
		chromedp.SendKeys(chromedp.CSS("#request-code"), "12345-6789"), chromedp.Click(chromedp.CSS("#issue-button")),
		chromedp.WaitVisible(chromedp.CSS("#request-code-error")))
	if msg := e.text(ag, "#request-code-error"); !strings.Contains(msg, "request_code") || !strings.Contains(msg, "XXXXX-XXXXX") {
		t.Fatalf("a malformed request code explained as %q", msg)
	}
	e.shot(ag, "13-request-code-refused")
	e.run(ag, "bound: issue", chromedp.SetValue(chromedp.CSS("#request-code"), strings.ToLower(reqCode)),
		chromedp.Click(chromedp.CSS("#issue-button")), chromedp.WaitVisible(chromedp.CSS("#bound-note")))
	boundCode := e.text(ag, "#voice-code")
	if got := e.text(ag, "#bound-request"); got != reqCode {
		t.Fatalf("the reveal says the code is bound to %q, want %s", got, reqCode)
	}
	e.shot(ag, "14-reveal-bound")
	if b, err := exec.Command(filepath.Join(bin, "dvr-agent"), dvrArgs("verify", boundCode)...).CombinedOutput(); err != nil {
		t.Fatalf("dvr-agent with its clock at 2000 refused the bound code read off the page (request %s): %v\n%s", reqCode, err, b)
	}
	if err := exec.Command(filepath.Join(bin, "dvr-agent"), dvrArgs("verify", boundCode)...).Run(); err == nil {
		t.Fatal("dvr-agent accepted the bound code read off the page twice")
	}

	// The e-mail route: the agent sends a code to the owner's registered
	// address (shown masked), enters what the caller reads from the real
	// message (a misread first), and issues a temporary password mailed
	// only: the page shows no code, the owner's message carries one that
	// the DVR accepts, and the device page follows the deliveries.
	const owner, ownerMask, mid = "kim@example.com", "k***@example.com", "DVR4405100M00077"
	mailDev := server.NewDevice{Serial: "R4MAIL#2022-05-10#2#" + mid, Model: "WBXHD041S1T", OwnerContact: owner, Firmware: "V4.1.0"}
	if _, err := e.svc.RegisterDevice(context.Background(), server.Actor{Subject: "factory", Role: server.RoleProvisioner}, mailDev); err != nil {
		t.Fatal(err)
	}
	e.run(ag, "mail: device page", chromedp.Navigate(e.url+"/devices/"+mid), chromedp.WaitVisible(chromedp.CSS("#send-code-button")))
	if b := e.text(ag, "#send-code-button"); !strings.Contains(b, ownerMask) {
		t.Fatalf("the send button says %q: want the masked address %s", b, ownerMask)
	}
	e.run(ag, "mail: send a code", chromedp.Click(chromedp.CSS("#send-code-button")), chromedp.WaitVisible(chromedp.CSS("#code-sent")))
	if sent := e.text(ag, "#code-sent"); !strings.Contains(sent, ownerMask) {
		t.Fatalf("after sending, the page says %q", sent)
	}
	e.shot(ag, "19-owner-code-sent")
	msgs := e.smtp.WaitFor(owner, 1, 30*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("%d messages reached %s, want the code", len(msgs), owner)
	}
	ownerCode := smtptest.OwnerCode(msgs[0].Body())
	if ownerCode == "" {
		t.Fatalf("no code in the owner's message:\n%s", msgs[0].Body())
	}
	misread := fmt.Sprintf("%03d %s", (int(ownerCode[0]-'0')+1)%10*100, ownerCode[3:])
	e.run(ag, "mail: a misread code", chromedp.SendKeys(chromedp.CSS("#owner-code-input"), misread), chromedp.Click(chromedp.CSS("#verify-code-button")),
		chromedp.WaitVisible(chromedp.CSS("#owner-code-error")))
	if msg := e.text(ag, "#owner-code-error"); !strings.Contains(msg, "does not match; 2 entries left") || !strings.Contains(msg, "read the code again") {
		t.Fatalf("a misread code explained as %q", msg)
	}
	e.shot(ag, "20-owner-code-wrong")
	e.run(ag, "mail: the code read back", chromedp.SendKeys(chromedp.CSS("#owner-code-input"), ownerCode[:3]+" "+ownerCode[3:]),
		chromedp.Click(chromedp.CSS("#verify-code-button")), chromedp.WaitVisible(chromedp.CSS("#verify-result")))
	if r := e.text(ag, "#verify-result"); !strings.Contains(r, "read back the code sent to "+ownerMask) ||
		!value(e, ag, "method chosen", chromedp.Evaluate[bool](`document.querySelector('input[name=method][value="5"]').checked`)) {
		t.Fatalf("the code read back: %q, and the e-mail code method is not chosen", r)
	}
	e.shot(ag, "21-owner-code-verified")
	e.run(ag, "mail: issue by e-mail only", chromedp.SendKeys(chromedp.CSS("#ticket"), "T-8"), chromedp.Click(chromedp.CSS("#delivery-email")),
		chromedp.Click(chromedp.CSS("#issue-button")), chromedp.WaitVisible(chromedp.CSS("#mailed-to")))
	if e.exists(ag, "#voice-code") || e.exists(ag, "button.copy") || !strings.Contains(e.text(ag, "#mailed-to"), "sent to "+ownerMask) || e.text(ag, "#mail-state") == "" {
		t.Fatalf("the e-mail-only reveal: %q", e.text(ag, "main"))
	}
	mailedPage := e.text(ag, "main")
	e.shot(ag, "22-reveal-mailed")
	msgs = e.smtp.WaitFor(owner, 2, 30*time.Second)
	if len(msgs) != 2 {
		t.Fatalf("%d messages reached %s, want the code and the temporary password", len(msgs), owner)
	}
	mailed := smtptest.VoiceCode(msgs[1].Body())
	if mailed == "" || strings.Contains(mailedPage, mailed) || strings.Contains(mailedPage, strings.ReplaceAll(mailed, "-", "")) || strings.Contains(mailedPage, owner) {
		t.Fatalf("the mailed code %q is missing or on the agent's page", mailed)
	}
	mdir := t.TempDir()
	mKey, mState := filepath.Join(mdir, "device.key"), filepath.Join(mdir, "state")
	os.WriteFile(mKey, out("hotline-server", "keys", "device-key", mailDev.Serial), 0o600)
	os.Mkdir(mState, 0o700)
	if b, err := exec.Command(filepath.Join(bin, "dvr-agent"), "verify", "--serial", mailDev.Serial, "--key-file", mKey, "--trust", trust, "--state", mState, mailed).CombinedOutput(); err != nil {
		t.Fatalf("dvr-agent verify refused the code from the owner's e-mail: %v\n%s", err, b)
	}
	var deliveries string
	sent := 0
	for range 20 {
		e.run(ag, "mail: device page with its deliveries", chromedp.Navigate(e.url+"/devices/"+mid), chromedp.WaitVisible(chromedp.CSS("#deliveries")))
		deliveries = e.text(ag, "#deliveries tbody")
		if sent = value(e, ag, "sent rows", chromedp.Evaluate[int](`document.querySelectorAll("#deliveries td.mail-sent").length`)); sent == 2 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if sent != 2 || !strings.Contains(deliveries, "temporary password") || !strings.Contains(deliveries, "verification code") || strings.Contains(deliveries, owner) {
		t.Fatalf("the device's deliveries after the mails went out:\n%s", deliveries)
	}
	e.shot(ag, "23-device-deliveries")

	// An agent's hand-made POST to a supervisor's act is refused.
	if st := e.post(ag, "/devices/"+id+"/hold", "reason=insider"); st != http.StatusForbidden {
		t.Fatalf("an agent's POST to hold: %d, want 403", st)
	}

	// A POST from another web site is refused, though the cookie goes along.
	evil := httptestServer(t, fmt.Sprintf(`<!doctype html><form id="f" method="post" action="%s/devices/%s/hold"><input name="reason" value="cross-site"></form><script>document.getElementById("f").submit()</script>`, e.url, id))
	sup := e.browser()
	e.signIn(sup, "bob", "hl-supervisors", false)
	e.run(sup, "cross-origin form", chromedp.Navigate(evil), chromedp.WaitVisible(chromedp.CSS("#problem-message")))
	if msg := e.text(sup, "#problem-message"); !strings.Contains(msg, "another web site") {
		t.Fatalf("cross-origin POST answered %q", msg)
	}
	d, err := e.svc.LookupDevice(context.Background(), server.Actor{Subject: "test", Role: server.RoleSupervisor}, id)
	if err != nil || d.Device.Hold != nil {
		t.Fatalf("after a cross-origin POST: hold %v, err %v", d.Device.Hold, err)
	}

	// The supervisor issues over the limit (one per device here) and holds.
	e.run(sup, "device page", chromedp.Navigate(e.url+"/devices/"+id), chromedp.WaitVisible(chromedp.CSS("#override")))
	if used := e.text(sup, "#codes-used"); !strings.Contains(used, "limit reached") {
		t.Fatalf("codes used %q: want the limit reached", used)
	}
	e.run(sup, "issue without a reason", chromedp.SendKeys(chromedp.CSS("#ticket"), "T-2"),
		chromedp.Click(chromedp.CSS(`input[name=method][value="2"]`)), chromedp.Click(chromedp.CSS("#issue-button")),
		chromedp.WaitVisible(chromedp.CSS("#problem")))
	e.shot(sup, "06-over-limit")
	e.run(sup, "override", chromedp.SendKeys(chromedp.CSS("#override"), "caller locked out of a shop's cameras"),
		chromedp.Click(chromedp.CSS("#issue-button")), chromedp.WaitVisible(chromedp.CSS("#voice-code")))
	if seq := e.text(sup, "#sequence"); seq != "2" {
		t.Fatalf("override issued sequence %q, want 2", seq)
	}

	// Over the limit, the agent asks for approval; the request appears in
	// the queue a supervisor already has open; the supervisor cannot
	// approve a request of their own; a second supervisor approves, and
	// the agent's page moves on to the code by itself.
	e.run(sup, "open the queue", chromedp.Navigate(e.url+"/approvals"), chromedp.WaitVisible(chromedp.CSS("#queue-empty")))
	e.run(ag, "agent over the limit", chromedp.Navigate(e.url+"/devices/"+id), chromedp.WaitVisible(chromedp.CSS("#ticket")),
		chromedp.SendKeys(chromedp.CSS("#ticket"), "T-3"), chromedp.Click(chromedp.CSS(`input[name=method][value="2"]`)),
		chromedp.Click(chromedp.CSS("#issue-button")), chromedp.WaitVisible(chromedp.CSS("#ask-approval")))
	e.run(ag, "ask for approval", chromedp.SendKeys(chromedp.CSS("#approval-reason"), "caller's shop cameras are down tonight"),
		chromedp.Click(chromedp.CSS("#ask-button")), chromedp.WaitVisible(chromedp.CSS("#approval-waiting")))
	agentAsk := value(e, ag, "approval page", chromedp.Location())
	agentAID := agentAsk[strings.LastIndex(agentAsk, "/")+1:]
	e.shot(ag, "15-approval-waiting")
	e.run(sup, "the request appears in the open queue", chromedp.WaitVisible(chromedp.CSS("#approval-"+agentAID)))
	if e.exists(sup, "#queue-empty") {
		t.Fatal("the queue still says it is empty")
	}
	e.run(sup, "supervisor asks too", chromedp.Navigate(e.url+"/devices/"+id), chromedp.WaitVisible(chromedp.CSS("#ticket")),
		chromedp.SendKeys(chromedp.CSS("#ticket"), "T-4"), chromedp.Click(chromedp.CSS(`input[name=method][value="2"]`)),
		chromedp.Click(chromedp.CSS("#issue-button")), chromedp.WaitVisible(chromedp.CSS("#ask-approval")),
		chromedp.SendKeys(chromedp.CSS("#approval-reason"), "four eyes, please"), chromedp.Click(chromedp.CSS("#ask-button")),
		chromedp.WaitVisible(chromedp.CSS("#approval-waiting")))
	supAsk := value(e, sup, "approval page", chromedp.Location())
	supAID := supAsk[strings.LastIndex(supAsk, "/")+1:]
	e.run(sup, "queue", chromedp.Navigate(e.url+"/approvals"), chromedp.WaitVisible(chromedp.CSS("#approval-"+supAID)))
	e.shot(sup, "16-approval-queue")
	e.run(sup, "approve own request", chromedp.SendKeys(chromedp.CSS("#comment-"+supAID), "mine"),
		chromedp.Click(chromedp.CSS("#approval-"+supAID+" button.primary")), chromedp.WaitVisible(chromedp.CSS("#problem-message")))
	if msg := e.text(sup, "#problem-message"); !strings.Contains(msg, "another supervisor must answer") {
		t.Fatalf("self-approval answered %q", msg)
	}
	sup2 := e.browser()
	e.signIn(sup2, "dave", "hl-supervisors", false)
	e.run(sup2, "approve", chromedp.Navigate(e.url+"/approvals"), chromedp.WaitVisible(chromedp.CSS("#approval-"+agentAID)),
		chromedp.SendKeys(chromedp.CSS("#comment-"+agentAID), "known shop, ticket checked"),
		chromedp.Click(chromedp.CSS("#approval-"+agentAID+" button.primary")), chromedp.WaitVisible(chromedp.CSS("#answered")))
	if e.exists(sup2, "#voice-code") {
		t.Fatal("the approving supervisor was shown the code")
	}
	e.run(ag, "the agent's page shows the code by itself", chromedp.WaitVisible(chromedp.CSS("#voice-code")))
	approved := e.text(ag, "#voice-code")
	e.shot(ag, "17-approval-reveal")
	if b, err := exec.Command(filepath.Join(bin, "dvr-agent"), "verify", "--serial", serial, "--key-file", keyFile, "--trust", trust, "--state", state, approved).CombinedOutput(); err != nil {
		t.Fatalf("dvr-agent refused the approved code read off the agent's page: %v\n%s", err, b)
	}
	e.run(ag, "reload the approved reveal", chromedp.Reload(), chromedp.WaitReady(chromedp.CSS("main")))
	if e.exists(ag, "#voice-code") {
		t.Fatal("reloading showed the approved code again")
	}
	evs, _, err := e.svc.QueryAudit(context.Background(), server.Actor{Subject: "test", Role: server.RoleAuditor}, server.AuditFilter{Serial: serial, Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[server.Action]string{}
	for _, ev := range evs {
		if strings.Contains(ev.Detail, "approval="+agentAID) {
			seen[ev.Action] = ev.Actor
		}
	}
	if seen[server.ActionApprovalRequest] != "alice" || seen[server.ActionApprovalGrant] != "dave" || seen[server.ActionApprovalReveal] != "alice" {
		t.Fatalf("the approval's audit trail: %v", seen)
	}

	e.run(sup, "hold", chromedp.Navigate(e.url+"/devices/"+id), chromedp.WaitVisible(chromedp.CSS("#hold-reason")),
		chromedp.SendKeys(chromedp.CSS("#hold-reason"), "reported stolen"), chromedp.Submit(chromedp.CSS("#hold-reason")),
		chromedp.WaitVisible(chromedp.CSS("#hold-banner")))
	if e.exists(sup, "#issue-form") {
		t.Fatal("a device on hold still offers the issue form")
	}
	e.shot(sup, "07-device-on-hold")
	e.run(sup, "team today", chromedp.Navigate(e.url+"/team/today"), chromedp.WaitVisible(chromedp.CSS("#team")))
	e.shot(sup, "08-team-today")

	// The auditor.
	au := e.browser()
	e.signIn(au, "carol", "hl-auditors", false)
	e.run(au, "audit page", chromedp.WaitVisible(chromedp.CSS("#f-actor")))
	// The unfiltered page shows #events too: mark it, so that the wait
	// below is met by the filtered page only.
	value(e, au, "mark the unfiltered page", chromedp.Evaluate[bool](`document.body.dataset.stale = "1"; true`))
	e.run(au, "audit filters", chromedp.SendKeys(chromedp.CSS("#f-actor"), "alice"),
		chromedp.SetValue(chromedp.CSS("#f-outcome"), "refused"), chromedp.Click(chromedp.CSS("#filter-button")),
		chromedp.WaitVisible(chromedp.CSS("body:not([data-stale]) #events tbody")))
	rows := e.text(au, "#events tbody")
	if !strings.Contains(rows, "device.hold") || !strings.Contains(rows, "permission_denied") || !strings.Contains(rows, "console") {
		t.Fatalf("the agent's refused hold is not in the audit log as a console act:\n%s", rows)
	}
	e.shot(au, "09-audit-query")
	dl := t.TempDir()
	done := make(chan string, 1)
	progress := chromedp.Events(au, browser.DownloadProgress)
	go func() {
		for ev, err := range progress {
			if err != nil {
				return
			}
			if ev.State == browser.DownloadProgressStateCompleted {
				done <- ev.GUID
				return
			}
		}
	}()
	allow := true
	e.run(au, "export", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dl, EventsEnabled: &allow})
		return err
	}), chromedp.Click(chromedp.CSS("#export-csv")))
	var guid string
	select {
	case guid = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the CSV export did not download")
	}
	csv, err := os.ReadFile(filepath.Join(dl, guid))
	if err != nil || !strings.HasPrefix(string(csv), "id,time,actor") || !strings.Contains(string(csv), "device.hold") {
		t.Fatalf("exported CSV (%v):\n%s", err, csv)
	}
	e.run(au, "summary", chromedp.Navigate(e.url+"/audit/summary"), chromedp.WaitVisible(chromedp.CSS("figure.chart svg")))
	bars := value(e, au, "bars", chromedp.Evaluate[int](`document.querySelectorAll("figure.chart svg rect").length`))
	if bars < 2 {
		t.Fatalf("summary charts have %d bars", bars)
	}
	e.shot(au, "10-summary")
	e.run(au, "verify", chromedp.Navigate(e.url+"/audit/verify"), chromedp.WaitVisible(chromedp.CSS("main h1")))
	e.shot(au, "11-verify")
	if st := e.post(au, "/devices/"+id+"/release", "reason=auditor"); st != http.StatusForbidden {
		t.Fatalf("an auditor's POST to release: %d, want 403", st)
	}

	if l := e.logs.String(); strings.Contains(l, code) || strings.Contains(l, strings.ReplaceAll(code, "-", "")) || strings.Contains(l, mailed) || !strings.Contains(l, "console serving") {
		t.Fatalf("the server log carries a code read off the page (or is not the server's log):\n%s", l)
	}

	// A sign-in older than the console's fresh-auth age reveals no code:
	// the console sends the agent back to the provider with max_age=0;
	// a provider that ignores it (auth_time still old) is refused, one that
	// makes the agent type the password again lets the code be shown.
	third := demoDevices[2].Serial
	tid := third[strings.LastIndex(third, "#")+1:]
	conn, err := pgx.Connect(context.Background(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `UPDATE console_sessions SET auth_time = auth_time - interval '2 hours' WHERE subject = 'alice'`); err != nil {
		t.Fatal(err)
	}
	e.idp.age("alice", 2*time.Hour)
	issueThird := func(what string, wait string) {
		e.run(ag, what, chromedp.Navigate(e.url+"/devices/"+tid), chromedp.WaitVisible(chromedp.CSS("#ticket")),
			chromedp.SendKeys(chromedp.CSS("#ticket"), "T-5"), chromedp.Click(chromedp.CSS(`input[name=method][value="2"]`)),
			chromedp.Click(chromedp.CSS("#issue-button")), chromedp.WaitVisible(chromedp.CSS(wait)))
	}
	issueThird("issue with a stale sign-in", `main a.button[href*="fresh=1"]`)
	if e.exists(ag, "#voice-code") {
		t.Fatal("a stale sign-in revealed a code")
	}
	e.shot(ag, "18-fresh-sign-in")
	e.idp.mu.Lock()
	e.idp.ignoreMaxAge = true
	e.idp.mu.Unlock()
	e.queueUser("alice", "hl-agents")
	e.run(ag, "fresh sign-in at a provider ignoring max_age", chromedp.Click(chromedp.CSS(`main a.button[href*="fresh=1"]`)),
		chromedp.WaitVisible(chromedp.CSS("#oidc-sign-in")), chromedp.Click(chromedp.CSS("#oidc-sign-in")), chromedp.WaitVisible(chromedp.CSS("#problem-message")))
	if msg := e.text(ag, "#problem-message"); !strings.Contains(msg, "did not ask for your password again") {
		t.Fatalf("a fresh sign-in with an old auth_time answered %q", msg)
	}
	e.idp.mu.Lock()
	e.idp.ignoreMaxAge = false
	e.idp.mu.Unlock()
	e.queueUser("alice", "hl-agents")
	e.run(ag, "fresh sign-in", chromedp.Navigate(e.url+"/sign-in?fresh=1&next=/devices/"+tid), chromedp.WaitVisible(chromedp.CSS("#oidc-sign-in")),
		chromedp.Click(chromedp.CSS("#oidc-sign-in")), chromedp.WaitVisible(chromedp.CSS("#ticket")))
	if maxAges, prompts := e.idp.requests(); maxAges[len(maxAges)-1] != "0" || prompts[len(prompts)-1] != "login" || maxAges[0] != "" {
		t.Fatalf("authorization requests' max_age %q prompt %q: want none at the first sign-in, 0 and login at a fresh one", maxAges, prompts)
	}
	issueThird("issue after the fresh sign-in", "#voice-code")

	// Narrow window: the device page still reads.
	e.run(sup, "narrow", chromedp.EmulateViewport(390, 844), chromedp.Navigate(e.url+"/devices/"+id), chromedp.WaitVisible(chromedp.CSS("#hold-banner")))
	e.shot(sup, "12-device-narrow")
}

// queueUser makes subject, in group, the next person to sign in at the
// provider.
func (e *consoleE2E) queueUser(subject, group string) {
	e.op.QueueUser(&authUser{MockUser: &mockoidc.MockUser{Subject: subject, Email: subject + "@hotline.example", Groups: []string{group}}, p: e.idp})
}

// maxAgeProvider is the identity provider's side of max_age (OpenID
// Connect Core 3.1.2.1), which mockoidc leaves out: it remembers when each
// person last typed their password, makes them type it again when an
// authorization request's max_age says that is too old, and says when in
// the ID token's auth_time. With ignoreMaxAge it behaves as a provider
// that drops the parameter.
type maxAgeProvider struct {
	mu           sync.Mutex
	lastAuth     map[string]time.Time
	maxAge       int // of the latest authorization request; -1 none
	maxAges      []string
	prompts      []string
	ignoreMaxAge bool
}

func (p *maxAgeProvider) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == mockoidc.AuthorizationEndpoint {
			q := r.URL.Query()
			p.mu.Lock()
			p.maxAges, p.prompts = append(p.maxAges, q.Get("max_age")), append(p.prompts, q.Get("prompt"))
			p.maxAge = -1
			if n, err := strconv.Atoi(q.Get("max_age")); err == nil && !p.ignoreMaxAge {
				p.maxAge = n
			}
			p.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

// authTime is when subject last authenticated, after the latest
// authorization request: now when they never did or max_age asked again.
func (p *maxAgeProvider) authTime(subject string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	last, ok := p.lastAuth[subject]
	if now := time.Now(); !ok || (p.maxAge >= 0 && now.Sub(last) > time.Duration(p.maxAge)*time.Second) {
		last = now
	}
	p.lastAuth[subject] = last
	return last
}

// age pretends subject last typed their password d ago.
func (p *maxAgeProvider) age(subject string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastAuth[subject] = time.Now().Add(-d)
}

func (p *maxAgeProvider) requests() (maxAges, prompts []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.maxAges), slices.Clone(p.prompts)
}

// authUser is a mockoidc user whose ID token carries auth_time.
type authUser struct {
	*mockoidc.MockUser
	p *maxAgeProvider
}

func (u *authUser) Claims(scope []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	c, err := u.MockUser.Claims(scope, base)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	m := jwt.MapClaims{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m["auth_time"] = u.p.authTime(u.Subject).Unix()
	return m, nil
}

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// httptestServer serves one HTML page on another origin and returns its URL.
func httptestServer(t *testing.T, html string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, html)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}
