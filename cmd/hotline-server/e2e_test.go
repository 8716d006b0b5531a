package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// buildBinaries builds the three commands into a temporary folder.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, c := range []string{"hotline-server", "hotlinectl", "dvr-agent"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../"+c).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", c, err, out)
		}
	}
	return dir
}

type e2e struct {
	t       *testing.T
	bin     string
	env     []string
	keyring string
}

func (e *e2e) run(name string, args ...string) (stdout string, code int) {
	e.t.Helper()
	cmd := exec.Command(filepath.Join(e.bin, name), args...)
	cmd.Env = append(os.Environ(), e.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			e.t.Fatalf("%s %v: %v", name, args, err)
		}
		code = ee.ExitCode()
	}
	e.t.Logf("$ %s %s -> %d\n%s%s", name, strings.Join(args, " "), code, out.String(), errb.String())
	return out.String(), code
}

func (e *e2e) must(name string, args ...string) string {
	e.t.Helper()
	out, code := e.run(name, args...)
	if code != 0 {
		e.t.Fatalf("%s %s: exit %d", name, strings.Join(args, " "), code)
	}
	return out
}

// TestEndToEndThroughTheRealBinaries is the whole story with the shipped
// binaries: start the server, register a DVR, issue a code with hotlinectl,
// verify the voice code and then the grant offline with dvr-agent, and see
// the replay refused.
func TestEndToEndThroughTheRealBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	dbURL := pgtest.NewDatabase(t, "e2e")
	e := &e2e{t: t, bin: buildBinaries(t), keyring: filepath.Join(t.TempDir(), "keyring")}
	e.env = []string{"HOTLINE_KEYRING=" + e.keyring, "DATABASE_URL=" + dbURL}
	e.must("hotline-server", "keys", "init")
	e.must("hotline-server", "migrate")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := exec.CommandContext(ctx, filepath.Join(e.bin, "hotline-server"), "serve", "--listen", "127.0.0.1:0", "--trust-keyring-staff-issuer")
	srv.Env = append(os.Environ(), e.env...)
	srv.Cancel = func() error { return srv.Process.Signal(os.Interrupt) }
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct {
				Msg, Addr string
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" {
				addrc <- line.Addr
			}
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(60 * time.Second):
		t.Fatal("the server did not start within 60s")
	}
	t.Cleanup(func() {
		cancel()
		srv.Wait()
	})
	e.env = append(e.env, "HOTLINE_ADDR="+addr)

	const serial = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	token := func(role string) string {
		return "HOTLINE_TOKEN=" + strings.TrimSpace(e.must("hotline-server", "token", "--subject", "e2e-"+role, "--role", role))
	}
	base := e.env
	e.env = append(base, token("provisioner"))
	e.must("hotlinectl", "devices", "add", serial, "--model", "WBXHD082S2T", "--owner", "jane@example.com", "--firmware", "V4.0.1")

	e.env = append(base, token("agent"))
	var dev map[string]any
	if err := json.Unmarshal([]byte(e.must("hotlinectl", "lookup", "jz6oes # 2017-08-01 # 3 # dvr1101134c08011", "-o", "json")), &dev); err != nil {
		t.Fatal(err)
	}
	var iss struct {
		IssuanceID string `json:"issuance_id"`
		VoiceCode  string `json:"voice_code"`
		Grant      string `json:"grant"`
		ExpiresAt  string `json:"expires_at"`
	}
	out := e.must("hotlinectl", "issue", serial, "--ticket", "T-1001", "--verified-by", "owner-contact", "-o", "json")
	if err := json.Unmarshal([]byte(out), &iss); err != nil || iss.VoiceCode == "" || iss.Grant == "" || iss.IssuanceID == "" || iss.ExpiresAt == "" {
		t.Fatalf("issue -o json: %v: %s", err, out)
	}

	dvr := t.TempDir()
	keyFile, trust, state := filepath.Join(dvr, "device.key"), filepath.Join(dvr, "trust.jwks"), filepath.Join(dvr, "state")
	os.WriteFile(keyFile, []byte(e.must("hotline-server", "keys", "device-key", serial)), 0o600)
	os.WriteFile(trust, []byte(e.must("hotline-server", "keys", "jwks")), 0o644)
	os.Mkdir(state, 0o700)
	verify := func(code string) int {
		_, c := e.run("dvr-agent", "verify", "--serial", serial, "--key-file", keyFile, "--trust", trust, "--state", state, code)
		return c
	}
	if c := verify(iss.VoiceCode); c != 0 {
		t.Fatalf("dvr-agent refused the fresh voice code: exit %d", c)
	}
	if c := verify(iss.VoiceCode); c == 0 {
		t.Fatal("dvr-agent accepted the same voice code twice")
	}
	if c := verify(iss.Grant); c == 0 {
		t.Fatal("dvr-agent accepted the grant of an issuance whose voice code was already used")
	}

	// A second issuance: its grant is accepted, then its replay refused.
	e.env = append(base, token("supervisor"))
	out = e.must("hotlinectl", "issue", serial, "--ticket", "T-1002", "--verified-by", "proof-of-purchase", "-o", "json")
	if err := json.Unmarshal([]byte(out), &iss); err != nil {
		t.Fatal(err)
	}
	if c := verify(iss.Grant); c != 0 {
		t.Fatalf("dvr-agent refused the fresh grant: exit %d", c)
	}
	if c := verify(iss.Grant); c == 0 {
		t.Fatal("dvr-agent accepted the same grant twice")
	}

	// A DVR whose clock reads 2000-01-01: it shows a request code, the
	// hotline binds a code to it, the DVR accepts it once.
	dvrArgs := func(cmd string, rest ...string) []string {
		return append([]string{cmd, "--serial", serial, "--key-file", keyFile, "--trust", trust, "--state", state,
			"--now", "2000-01-01T00:00:00Z", "--boot-id", "0f6e2a51-5c8e-4c4b-9d1e-000000000001", "--uptime", "120"}, rest...)
	}
	reqCode := strings.TrimSpace(e.must("dvr-agent", dvrArgs("request")...))
	out = e.must("hotlinectl", "issue", serial, "--ticket", "T-1003", "--verified-by", "proof-of-purchase", "--request-code", strings.ToLower(reqCode), "-o", "json")
	if err := json.Unmarshal([]byte(out), &iss); err != nil {
		t.Fatal(err)
	}
	if _, c := e.run("dvr-agent", dvrArgs("verify", iss.VoiceCode)...); c != 0 {
		t.Fatalf("dvr-agent with its clock at 2000 refused the code bound to its request code %s: exit %d", reqCode, c)
	}
	if _, c := e.run("dvr-agent", dvrArgs("verify", iss.VoiceCode)...); c != 15 {
		t.Fatalf("the bound code a second time: exit %d, want 15 (no-request)", c)
	}
	if _, c := e.run("hotlinectl", "issue", serial, "--ticket", "T-1004", "--verified-by", "proof-of-purchase", "--request-code", "not-a-code"); c == 0 {
		t.Fatal("hotlinectl issued for a malformed request code")
	}
}
