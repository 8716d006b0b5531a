package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/state"
	"github.com/dvrhotline/hotline/agent/verifier"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

const (
	testSerial  = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	otherSerial = "JZ6OES#2017-08-01#3#DVR1101134C08012"
)

var (
	master = bytes.Repeat([]byte{0x42}, 32)
	signer = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	t0     = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
)

// env is a DVR as the factory leaves it: key file, trust file, state dir.
type env struct {
	dir, keyFile, trustFile, stateDir string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{dir: dir, keyFile: filepath.Join(dir, "device.key"), trustFile: filepath.Join(dir, "trust.jwks"), stateDir: filepath.Join(dir, "state")}
	k, err := voicecode.DeriveDeviceKey(master, 1, testSerial)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := voicecode.MarshalKeyFile(testSerial, k)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := grant.MarshalJWKS(map[string]ed25519.PublicKey{"k1": signer.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	for p, b := range map[string][]byte{e.keyFile: kb, e.trustFile: jb} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(e.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	return e
}

func code(t *testing.T, serial string, at time.Time, seq int64) string {
	t.Helper()
	k, err := voicecode.DeriveDeviceKey(master, 1, serial)
	if err != nil {
		t.Fatal(err)
	}
	c, err := voicecode.Mint(k, serial, at, seq)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func grantFor(t *testing.T, serial string, at time.Time, seq int64) string {
	t.Helper()
	g, err := grant.Sign(signer, "k1", grant.NewClaims(serial, "iss-1", seq, at, voicecode.ExpiresAt(at)))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	rc := Run(args, strings.NewReader(stdin), &out, &errb)
	return rc, out.String(), errb.String()
}

func (e *env) verify(t *testing.T, now time.Time, input string, extra ...string) (int, string, string) {
	t.Helper()
	return e.cmd(t, "verify", now, append(extra, input)...)
}

// testBootID is the boot of every command of a test: its monotonic clock
// runs with the test's wall clock, from 2026-01-01 (a DVR whose clock is
// not set passes its own --uptime).
const testBootID = "6d1c4d9e-0000-4000-8000-000000000001"

func (e *env) cmd(t *testing.T, name string, now time.Time, rest ...string) (int, string, string) {
	t.Helper()
	return e.cmdIn(t, "", name, now, rest...)
}

// cmdIn is cmd with stdin as standard input.
func (e *env) cmdIn(t *testing.T, stdin, name string, now time.Time, rest ...string) (int, string, string) {
	t.Helper()
	up := now.Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)).Seconds()
	args := []string{name, "--serial", testSerial, "--key-file", e.keyFile, "--trust", e.trustFile, "--state", e.stateDir, "--now", now.Format(time.RFC3339),
		"--boot-id", testBootID, "--uptime", strconv.FormatFloat(max(up, 1), 'f', 3, 64)}
	return run(t, stdin, append(args, rest...)...)
}

func (e *env) verifyJSON(t *testing.T, now time.Time, input string) (int, map[string]any) {
	t.Helper()
	rc, out, errOut := e.verify(t, now, input, "--json")
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("--json printed %q (stderr %q): %v", out, errOut, err)
	}
	if strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("--json printed more than one line: %q", out)
	}
	if int(m["exit_code"].(float64)) != rc {
		t.Fatalf("exit_code %v, exit status %d", m["exit_code"], rc)
	}
	return rc, m
}

func TestVerifyExitStatuses(t *testing.T) {
	e := newEnv(t)
	used := code(t, testSerial, t0, 5)
	tests := []struct {
		name  string
		now   time.Time
		input string
		want  verifier.Outcome
	}{
		{"accepted/voice-code", t0, used, verifier.Accepted},
		{"refused/replayed-code", t0, used, verifier.AlreadyUsed},
		{"refused/grant-of-the-used-code", t0, grantFor(t, testSerial, t0, 5), verifier.AlreadyUsed},
		{"refused/typo", t0, strings.Replace(used, used[:1], map[bool]string{true: "1", false: "0"}[used[0] == '0'], 1), verifier.Malformed},
		{"refused/not-a-code", t0, "hello", verifier.Malformed},
		{"refused/another-devices-code", t0, code(t, otherSerial, t0, 6), verifier.WrongCode},
		{"refused/not-yet-valid", t0, code(t, testSerial, t0.Add(3*time.Hour), 8), verifier.NotYetValid},
		{"refused/clock-not-set", time.Unix(0, 0), code(t, testSerial, t0.Add(time.Hour), 9), verifier.ClockNotSet},
		{"accepted/grant", t0.Add(time.Hour), grantFor(t, testSerial, t0.Add(time.Hour), 10), verifier.Accepted},
		{"refused/expired", t0.Add(48 * time.Hour), code(t, testSerial, t0.Add(2*time.Hour), 11), verifier.Expired},
		{"refused/clock-moved-back", t0.Add(3 * time.Hour), code(t, testSerial, t0.Add(2*time.Hour), 11), verifier.ClockMovedBack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, m := e.verifyJSON(t, tt.now, tt.input)
			if rc != tt.want.ExitCode() || m["outcome"] != tt.want.String() {
				t.Fatalf("exit %d %v (%v), want %d %s", rc, m["outcome"], m["message"], tt.want.ExitCode(), tt.want)
			}
		})
	}
}

func TestVerifyAcceptedJSONHasTheIssuance(t *testing.T) {
	e := newEnv(t)
	rc, m := e.verifyJSON(t, t0, code(t, testSerial, t0, 5))
	if rc != 0 || m["issued_at"] != "2026-05-01T12:00:00Z" || m["sequence"] != 5.0 || m["kind"] != "voice-code" || m["retry_after"] != nil {
		t.Fatalf("exit %d, %v", rc, m)
	}
}

func TestVerifyLockedOutSaysWhenToRetry(t *testing.T) {
	e := newEnv(t)
	wrong := code(t, otherSerial, t0, 1)
	for i := 0; i < 5; i++ {
		if rc, _, _ := e.verify(t, t0, wrong); rc != verifier.WrongCode.ExitCode() {
			t.Fatalf("attempt %d: exit %d", i+1, rc)
		}
	}
	rc, out, errOut := e.verify(t, t0.Add(time.Minute), code(t, testSerial, t0, 2))
	if rc != verifier.LockedOut.ExitCode() || out != "" || !strings.Contains(errOut, "until 12:05 UTC, try again then") && !strings.Contains(errOut, "until 12:05 UTC; try again then") {
		t.Fatalf("exit %d, stdout %q, stderr %q", rc, out, errOut)
	}
	rc, m := e.verifyJSON(t, t0.Add(time.Minute), code(t, testSerial, t0, 2))
	if rc != verifier.LockedOut.ExitCode() || m["retry_after"] != "2026-05-01T12:05:00Z" {
		t.Fatalf("exit %d, %v", rc, m)
	}
	if rc, _, _ := e.verify(t, t0.Add(5*time.Minute), code(t, testSerial, t0, 2)); rc != 0 {
		t.Fatalf("after the lockout: exit %d", rc)
	}
}

func TestVerifyCodeFromStandardInput(t *testing.T) {
	e := newEnv(t)
	args := []string{"verify", "--serial", testSerial, "--key-file", e.keyFile, "--trust", e.trustFile, "--state", e.stateDir, "--now", t0.Format(time.RFC3339), "-"}
	if rc, out, errOut := run(t, code(t, testSerial, t0, 5)+"\n", args...); rc != 0 {
		t.Fatalf("exit %d: %s %s", rc, out, errOut)
	}
}

func TestVerifyFlagsAfterTheCode(t *testing.T) {
	e := newEnv(t)
	c := code(t, testSerial, t0, 5)
	rc, out, _ := run(t, "", "verify", c, "--serial", testSerial, "--key-file", e.keyFile, "--trust", e.trustFile, "--state", e.stateDir, "--now", t0.Format(time.RFC3339), "--json")
	if rc != 0 || !strings.HasPrefix(out, `{"outcome":"accepted"`) {
		t.Fatalf("exit %d: %s", rc, out)
	}
}

func TestVerifyRefusesConfigurationMistakes(t *testing.T) {
	e := newEnv(t)
	c := code(t, testSerial, t0, 5)
	otherKey := filepath.Join(e.dir, "other.key")
	k, _ := voicecode.DeriveDeviceKey(master, 1, otherSerial)
	kb, _ := voicecode.MarshalKeyFile(otherSerial, k)
	os.WriteFile(otherKey, kb, 0o600)
	garbage := filepath.Join(e.dir, "garbage")
	os.WriteFile(garbage, []byte("{not json"), 0o600)
	base := func(key, trust, st string) []string {
		return []string{"verify", "--serial", testSerial, "--key-file", key, "--trust", trust, "--state", st, "--now", t0.Format(time.RFC3339)}
	}
	tests := []struct {
		name string
		args []string
		want verifier.Outcome
		says string
	}{
		{"usage/no-arguments", []string{"verify"}, verifier.Usage, "missing --serial"},
		{"usage/no-code", base(e.keyFile, e.trustFile, e.stateDir), verifier.Usage, "no code"},
		{"usage/bad-now", append(base(e.keyFile, e.trustFile, e.stateDir)[:9], "--now", "yesterday", c), verifier.Usage, "RFC 3339"},
		{"usage/bad-serial", []string{"verify", "--serial", "JZ6OES#x", "--key-file", e.keyFile, "--trust", e.trustFile, "--state", e.stateDir, c}, verifier.Usage, "serial"},
		{"usage/unknown-flag", append(base(e.keyFile, e.trustFile, e.stateDir), "--frobnicate", c), verifier.Usage, "frobnicate"},
		{"config/key-file-of-another-serial", append(base(otherKey, e.trustFile, e.stateDir), c), verifier.ConfigUnreadable, "another device's key"},
		{"config/missing-key-file", append(base(filepath.Join(e.dir, "none"), e.trustFile, e.stateDir), c), verifier.ConfigUnreadable, "device key file"},
		{"config/garbage-key-file", append(base(garbage, e.trustFile, e.stateDir), c), verifier.ConfigUnreadable, "garbage"},
		{"config/garbage-trust-file", append(base(e.keyFile, garbage, e.stateDir), c), verifier.ConfigUnreadable, "JWK"},
		{"config/key-file-as-trust-file", append(base(e.keyFile, e.keyFile, e.stateDir), c), verifier.ConfigUnreadable, "trust"},
		{"state/missing-directory", append(base(e.keyFile, e.trustFile, filepath.Join(e.dir, "unmounted", "state")), c), verifier.StateUnreadable, "state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, out, errOut := run(t, "", tt.args...)
			if rc != tt.want.ExitCode() || !strings.Contains(errOut, tt.says) || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d mentioning %q", rc, out, errOut, tt.want.ExitCode(), tt.says)
			}
		})
	}
}

func TestVerifyCorruptStateIsUnreadable(t *testing.T) {
	e := newEnv(t)
	c := code(t, testSerial, t0, 5)
	if rc, _, _ := e.verify(t, t0, c); rc != 0 {
		t.Fatal("not accepted")
	}
	p := filepath.Join(e.stateDir, state.FileName)
	b, _ := os.ReadFile(p)
	b[12] ^= 0x80
	os.WriteFile(p, b, 0o600)
	rc, m := e.verifyJSON(t, t0, c)
	if rc != verifier.StateUnreadable.ExitCode() || !strings.Contains(m["message"].(string), "checksum") {
		t.Fatalf("exit %d: %v", rc, m)
	}
}

func TestCheckPassword(t *testing.T) {
	tests := []struct {
		name, stdin string
		want        int
	}{
		{"accepted/with-trailing-newline", "Secret12\n", 0},
		{"accepted/with-crlf", "Secret12\r\n", 0},
		{"accepted/without-newline", "secret12", 0},
		{"refused-length/too-short", "ab1\n", exitPasswordLength},
		{"refused-length/too-long", strings.Repeat("a1", 17) + "\n", exitPasswordLength},
		{"refused-length/empty", "", exitPasswordLength},
		{"refused-kinds/digits-only", "12345678\n", exitPasswordKinds},
		{"refused-characters/two-newlines-strip-only-one", "Secret12\n\n", exitPasswordCharacters},
		{"refused-characters/space", "Secret 12\n", exitPasswordCharacters},
		{"refused-characters/non-ascii", "Sécret12\n", exitPasswordCharacters},
		{"refused-length/very-long-input-is-not-cut-to-fit", strings.Repeat("a1", 1000), exitPasswordLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, out, errOut := run(t, tt.stdin, "check-password")
			if rc != tt.want {
				t.Fatalf("exit %d (%s%s), want %d", rc, out, errOut, tt.want)
			}
			if rc != 0 && !strings.Contains(errOut, "refused") {
				t.Fatalf("stderr %q does not say why", errOut)
			}
		})
	}
	rc, out, _ := run(t, "abc\n", "check-password", "--json")
	if rc != exitPasswordLength || !strings.Contains(out, `"outcome":"password-length"`) {
		t.Fatalf("--json: exit %d %s", rc, out)
	}
	if rc, _, _ := run(t, "", "check-password", "Secret12"); rc != verifier.Usage.ExitCode() {
		t.Fatalf("password on the command line: exit %d", rc)
	}
}

func TestVersionAndUsage(t *testing.T) {
	if rc, out, _ := run(t, "", "version"); rc != 0 || !strings.HasPrefix(out, "dvr-agent ") || !strings.Contains(out, verifier.BuildDate) {
		t.Fatalf("version: exit %d %q", rc, out)
	}
	if rc, _, errOut := run(t, ""); rc != verifier.Usage.ExitCode() || !strings.Contains(errOut, "usage") {
		t.Fatalf("no arguments: exit %d %q", rc, errOut)
	}
	if rc, _, _ := run(t, "", "mint"); rc != verifier.Usage.ExitCode() {
		t.Fatalf("unknown command: exit %d", rc)
	}
}

// TestBinaryAcceptanceForm builds the real binary and runs it in exactly
// the form the acceptance check uses, with the build date set by -ldflags.
func TestBinaryAcceptanceForm(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	e := newEnv(t)
	bin := filepath.Join(e.dir, "dvr-agent")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X github.com/dvrhotline/hotline/agent/verifier.BuildDate=2026-04-01", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	c := code(t, testSerial, t0, 5)
	runBin := func(now time.Time) (int, string) {
		cmd := exec.Command(bin, "verify", "--serial", "jz6oes#2017-08-01#3#dvr1101134c08011", "--key-file", e.keyFile, "--trust", e.trustFile, "--state", e.stateDir, "--now", now.Format(time.RFC3339), c)
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	if rc, out := runBin(time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)); rc != verifier.ClockNotSet.ExitCode() || !strings.Contains(out, "2026-04-01") {
		t.Fatalf("before the -ldflags build date: exit %d %s", rc, out)
	}
	if rc, out := runBin(t0); rc != 0 {
		t.Fatalf("exit %d %s", rc, out)
	}
	if rc, out := runBin(t0); rc != verifier.AlreadyUsed.ExitCode() {
		t.Fatalf("replay: exit %d %s", rc, out)
	}
}

// TestRequestCodeThenBoundCodeWithTheClockAt2000: the command shows a
// request code; the code bound to it is accepted once by a DVR whose clock
// reads 2000-01-01, which refuses time-based codes as clock-not-set.
func TestRequestCodeThenBoundCodeWithTheClockAt2000(t *testing.T) {
	e := newEnv(t)
	y2000 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	rc, out, errOut := e.cmd(t, "request", y2000)
	if rc != 0 || len(strings.TrimSpace(out)) != voicecode.RequestLength+1 {
		t.Fatalf("request: exit %d, stdout %q, stderr %q", rc, out, errOut)
	}
	nonce, err := voicecode.ParseRequestCode(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if rc, _, _ := e.verify(t, y2000, code(t, testSerial, t0, 1)); rc != verifier.ClockNotSet.ExitCode() {
		t.Fatalf("time-based code at 2000: exit %d", rc)
	}
	k, _ := voicecode.DeriveDeviceKey(master, 1, testSerial)
	bound, err := voicecode.MintBound(k, testSerial, t0, 2, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if rc, _, errOut := e.verify(t, y2000, bound); rc != 0 {
		t.Fatalf("bound code at 2000: exit %d: %s", rc, errOut)
	}
	if rc, _, _ := e.verify(t, y2000, bound); rc != verifier.NoRequest.ExitCode() {
		t.Fatalf("bound code a second time: exit %d", rc)
	}
}

func TestRecoveryCodeNeedsARecipientAndPrintsTheCode(t *testing.T) {
	e := newEnv(t)
	rc, _, errOut := e.cmd(t, "recovery-code", t0, "--stdout")
	if rc != verifier.RecoveryNotSet.ExitCode() || !strings.Contains(errOut, "set up the recovery e-mail first: System setting > Network > SMTP") {
		t.Fatalf("no recipient: exit %d, %q", rc, errOut)
	}
	// Without --stdout the build's own mailer is asked for: the default
	// build has none; the smtp build needs the SMTP server.
	wantRC, wantMsg := verifier.MailNotBuilt.ExitCode(), "this build hands the code over on standard output only: pass --stdout, or use the smtp build"
	if mailBuilt {
		wantRC, wantMsg = verifier.MailFailed.ExitCode(), "SMTP server \"\": expected host:port"
	}
	if rc, out, errOut := e.cmd(t, "recovery-code", t0, "--recipient", "jane@example.com"); rc != wantRC || !strings.Contains(errOut, wantMsg) || out != "" {
		t.Fatalf("without --stdout: exit %d, %q %q; want %d, %q", rc, out, errOut, wantRC, wantMsg)
	}
	rc, out, _ := e.cmd(t, "recovery-code", t0, "--recipient", "jane@example.com", "--stdout")
	c := strings.TrimSpace(out)
	if rc != 0 || voicecode.Symbols(c) != voicecode.RecoveryLength {
		t.Fatalf("exit %d, %q", rc, out)
	}
	if rc, _, _ := e.cmd(t, "recovery-code", t0.Add(time.Minute), "--recipient", "jane@example.com", "--stdout"); rc != verifier.Throttled.ExitCode() {
		t.Fatalf("second within a minute: exit %d", rc)
	}
	if rc, _, errOut := e.verify(t, t0.Add(10*time.Minute), c); rc != 0 {
		t.Fatalf("recovery code: exit %d %s", rc, errOut)
	}
	if rc, _, _ := e.verify(t, t0.Add(11*time.Minute), c); rc != verifier.Expired.ExitCode() {
		t.Fatalf("recovery code again: exit %d", rc)
	}
}

// TestRecoveryCodeKeepsTheRequestCodeOnShow: making a recovery code does
// not replace the request code the DVR shows: the code bound to it still
// works afterwards.
func TestRecoveryCodeKeepsTheRequestCodeOnShow(t *testing.T) {
	e := newEnv(t)
	rc, out, _ := e.cmd(t, "request", t0)
	nonce, err := voicecode.ParseRequestCode(strings.TrimSpace(out))
	if rc != 0 || err != nil {
		t.Fatalf("request: exit %d %v", rc, err)
	}
	if rc, _, errOut := e.cmd(t, "recovery-code", t0.Add(time.Minute), "--recipient", "jane@example.com", "--stdout"); rc != 0 {
		t.Fatalf("recovery-code: exit %d %s", rc, errOut)
	}
	k, _ := voicecode.DeriveDeviceKey(master, 1, testSerial)
	bound, err := voicecode.MintBound(k, testSerial, t0, 2, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if rc, _, errOut := e.verify(t, t0.Add(2*time.Minute), bound); rc != 0 {
		t.Fatalf("bound code after a recovery code: exit %d: %s", rc, errOut)
	}
}
