//go:build smtp

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/mailer/mailtest"
	"github.com/dvrhotline/hotline/agent/state"
	"github.com/dvrhotline/hotline/agent/verifier"
)

const (
	smtpUser     = "dvr@example.net"
	smtpPassword = "s3cret pass"
	owner        = "jane@example.com"
)

// smtpEnv is a DVR (env) and its SMTP server.
type smtpEnv struct {
	*env
	srv            *mailtest.Server
	caFile, pwFile string
}

func newSMTPEnv(t *testing.T, o mailtest.Options) *smtpEnv {
	t.Helper()
	o.Users = map[string]string{smtpUser: smtpPassword}
	e := &smtpEnv{env: newEnv(t), srv: mailtest.Start(t, o)}
	e.caFile, e.pwFile = filepath.Join(e.dir, "smtp-ca.pem"), filepath.Join(e.dir, "smtp.password")
	if err := os.WriteFile(e.caFile, e.srv.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.pwFile, []byte(smtpPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *smtpEnv) flags(ssl string) []string {
	return []string{"--recipient", owner, "--smtp-server", e.srv.Addr, "--smtp-ssl", ssl, "--smtp-user", smtpUser,
		"--smtp-password-file", e.pwFile, "--smtp-ca", e.caFile, "--model", "HDVR-1104"}
}

var mailedCode = regexp.MustCompile(`Recovery code: (\S+)`)

// codeInMail returns the recovery code of the i-th message the server took.
func (e *smtpEnv) codeInMail(t *testing.T, i int) string {
	t.Helper()
	mails := e.srv.Mails()
	if len(mails) <= i {
		t.Fatalf("%d messages taken, want at least %d", len(mails), i+1)
	}
	m := mailedCode.FindSubmatch(mails[i].Data)
	if m == nil {
		t.Fatalf("no recovery code in\n%s", mails[i].Data)
	}
	return string(m[1])
}

// snapshot is every file of the state directory, by name.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, ent := range ents {
		if ent.Name() == state.LockName {
			continue // the flock target: no state in it
		}
		b, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[ent.Name()] = string(b)
	}
	return out
}

func sameState(t *testing.T, before, after map[string]string) {
	t.Helper()

	if len(before) != len(after) {
		t.Fatalf("state files %d before, %d after", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("state file %s changed", k)
		}
	}
}

func TestRecoveryCodeByMailIsAcceptedOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode mailtest.Mode
		ssl  string
	}{{"sent/implicit-tls", mailtest.ImplicitTLS, "tls"}, {"sent/starttls", mailtest.StartTLS, "starttls"}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSMTPEnv(t, mailtest.Options{Mode: tc.mode})
			rc, out, errOut := e.cmd(t, "recovery-code", t0, e.flags(tc.ssl)...)
			c := e.codeInMail(t, 0)
			if rc != 0 || strings.Contains(out+errOut, c) || !strings.Contains(out, "sent to the recovery e-mail address") {
				t.Fatalf("recovery-code: exit %d, stdout %q, stderr %q", rc, out, errOut)
			}
			mails := e.srv.Mails()
			if len(mails) != 1 || mails[0].User != smtpUser || !mails[0].TLS || mails[0].To[0] != owner {
				t.Fatalf("server took %+v", mails)
			}
			for _, want := range []string{"Subject: DVR password recovery code for HDVR-1104\r\n " + testSerial, "From: " + smtpUser, "To: " + owner, "within 30 minutes"} {
				if !bytes.Contains(mails[0].Data, []byte(want)) {
					t.Errorf("message lacks %q:\n%s", want, mails[0].Data)
				}
			}
			if rc, _, errOut := e.verify(t, t0.Add(10*time.Minute), c); rc != 0 {
				t.Fatalf("mailed code: exit %d %s", rc, errOut)
			}
			if rc, _, _ := e.verify(t, t0.Add(11*time.Minute), c); rc == 0 {
				t.Fatal("mailed code accepted a second time")
			}
		})
	}
}

// TestRecoveryCodePasswordFromStandardInput: the password comes on
// standard input, never from a flag; the --json report has no code.
func TestRecoveryCodePasswordFromStandardInput(t *testing.T) {
	e := newSMTPEnv(t, mailtest.Options{Mode: mailtest.StartTLS})
	args := e.flags("starttls")
	args[9] = "-" // --smtp-password-file -
	rc, out, errOut := e.cmdIn(t, smtpPassword+"\n", "recovery-code", t0, append(args, "--json")...)
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rc != 0 || rep["outcome"] != "accepted" || rep["code"] != nil || strings.Contains(out, e.codeInMail(t, 0)) {
		t.Fatalf("exit %d %q %q: want accepted with code null (a mailed code is never printed)", rc, out, errOut)
	}
	if rc, _, errOut := e.verify(t, t0.Add(time.Minute), e.codeInMail(t, 0)); rc != 0 {
		t.Fatalf("mailed code: exit %d %s", rc, errOut)
	}
}

// TestRefusedMailChangesNothing: a refused login, a server without
// STARTTLS and an untrusted certificate each leave the state byte for
// byte as it was (no code recorded, no throttle used): the next, working
// send goes through at once.
func TestRefusedMailChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    mailtest.Mode
		ssl     string
		edit    func(e *smtpEnv, args []string)
		setting string
	}{
		{"refused/wrong-password-535", mailtest.ImplicitTLS, "tls", func(e *smtpEnv, _ []string) { os.WriteFile(e.pwFile, []byte("guess\n"), 0o600) }, "check the user name and password"},
		{"refused/starttls-not-offered", mailtest.Plain, "starttls", nil, "does not offer STARTTLS"},
		{"refused/untrusted-certificate", mailtest.ImplicitTLS, "tls", func(e *smtpEnv, args []string) { args[11] = e.keyFile }, ""},
		{"refused/recipient-550", mailtest.ImplicitTLS, "tls", func(e *smtpEnv, args []string) { args[1] = "nobody@example.com" }, "check the recovery e-mail address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := mailtest.Options{Mode: tc.mode, RefuseRecipients: []string{"nobody@example.com"}}
			e := newSMTPEnv(t, o)
			// A first acceptance, so that there is a state to compare.
			if rc, _, errOut := e.verify(t, t0, code(t, testSerial, t0, 1)); rc != 0 {
				t.Fatalf("voice code: exit %d %s", rc, errOut)
			}
			before := snapshot(t, e.stateDir)
			args := e.flags(tc.ssl)
			if tc.edit != nil {
				tc.edit(e, args)
			}
			rc, out, errOut := e.cmd(t, "recovery-code", t0.Add(time.Minute), args...)
			wantRC := verifier.MailFailed.ExitCode()
			if tc.name == "refused/untrusted-certificate" {
				wantRC = verifier.ConfigUnreadable.ExitCode() // the key file is no PEM
			}
			if rc != wantRC || out != "" || !strings.Contains(errOut, tc.setting) || strings.Contains(errOut, smtpPassword) {
				t.Fatalf("exit %d (want %d), stdout %q, stderr %q (want it to say %q)", rc, wantRC, out, errOut, tc.setting)
			}
			sameState(t, before, snapshot(t, e.stateDir))
			if len(e.srv.Mails()) != 0 {
				t.Fatal("a message was delivered")
			}
			if tc.mode == mailtest.Plain && len(e.srv.Logins()) != 0 {
				t.Fatal("the login went to a server without TLS")
			}
			// Nothing used: a good send right after is not throttled.
			if tc.mode != mailtest.Plain {
				os.WriteFile(e.pwFile, []byte(smtpPassword), 0o600)
				if rc, _, errOut := e.cmd(t, "recovery-code", t0.Add(2*time.Minute), e.flags(tc.ssl)...); rc != 0 {
					t.Fatalf("the next good send: exit %d %s", rc, errOut)
				}
			}
		})
	}
}

func TestRecoveryCodeUntrustedCertificateNamesTheServerName(t *testing.T) {
	e := newSMTPEnv(t, mailtest.Options{Mode: mailtest.ImplicitTLS})
	other, _ := mailtest.NewCA(t, "localhost")
	os.WriteFile(e.caFile, other, 0o600)
	before := snapshot(t, e.stateDir)
	rc, _, errOut := e.cmd(t, "recovery-code", t0, e.flags("tls")...)
	if rc != verifier.MailFailed.ExitCode() || !strings.Contains(errOut, "does not trust") || !strings.Contains(errOut, "check the SMTP server name") {
		t.Fatalf("exit %d %q", rc, errOut)
	}
	sameState(t, before, snapshot(t, e.stateDir))
}

func TestRecoveryCodeMailFlagMistakes(t *testing.T) {
	e := newSMTPEnv(t, mailtest.Options{Mode: mailtest.ImplicitTLS})
	for _, tc := range []struct {
		name string
		args []string
		rc   verifier.Outcome
		msg  string
	}{
		{"usage/stdout-and-smtp", append(e.flags("tls"), "--stdout"), verifier.Usage, "give one or the other"},
		{"refused/plain-to-a-remote-server", []string{"--recipient", owner, "--smtp-server", "smtp.example.com:25", "--smtp-ssl", "none", "--smtp-from", smtpUser}, verifier.MailFailed, "allowed only to a server on this DVR"},
		{"refused/bad-recipient", []string{"--recipient", "jane@example.com\r\nBcc: eve@example.com", "--smtp-server", e.srv.Addr, "--smtp-ssl", "tls", "--smtp-from", smtpUser}, verifier.MailFailed, "recovery e-mail address"},
		{"refused/no-recipient", []string{"--smtp-server", e.srv.Addr, "--smtp-ssl", "tls"}, verifier.RecoveryNotSet, "set up the recovery e-mail first"},
		{"config/password-file-missing", []string{"--recipient", owner, "--smtp-server", e.srv.Addr, "--smtp-ssl", "tls", "--smtp-user", smtpUser, "--smtp-password-file", filepath.Join(e.dir, "nope")}, verifier.ConfigUnreadable, "--smtp-password-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, _, errOut := e.cmd(t, "recovery-code", t0, tc.args...)
			if rc != tc.rc.ExitCode() || !strings.Contains(errOut, tc.msg) {
				t.Fatalf("exit %d %q, want %d %q", rc, errOut, tc.rc, tc.msg)
			}
		})
	}
	if len(e.srv.Mails()) != 0 {
		t.Fatal("a message was delivered")
	}
}
