package mailer_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/mailer"
	"github.com/dvrhotline/hotline/agent/mailer/mailtest"
)

const (
	testSerial = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	testCode   = "7KQF-M2XW-9PLC"
	owner      = "jane@example.com"
	dvrFrom    = "dvr@example.net"
)

func pool(t *testing.T, caPEM []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA")
	}
	return p
}

func message() mailer.Message {
	return mailer.Message{Serial: testSerial, Model: "HDVR-1104", Code: testCode, Valid: 30 * time.Minute, Date: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
}

var users = map[string]string{"dvr@example.net": "s3cret pass"}

func TestSendDeliversOverTLS(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  mailtest.Mode
		ssl   mailer.SSL
		mechs []string
	}{
		{"sent/implicit-tls-auth-plain", mailtest.ImplicitTLS, mailer.TLS, []string{"PLAIN"}},
		{"sent/implicit-tls-auth-login", mailtest.ImplicitTLS, mailer.TLS, []string{"LOGIN"}},
		{"sent/starttls-auth-plain", mailtest.StartTLS, mailer.StartTLS, nil},
		{"sent/starttls-auth-login", mailtest.StartTLS, mailer.StartTLS, []string{"LOGIN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := mailtest.Start(t, mailtest.Options{Mode: tc.mode, Users: users, Mechanisms: tc.mechs})
			s := mailer.Settings{Server: srv.Addr, SSL: tc.ssl, User: "dvr@example.net", Password: "s3cret pass", To: owner, RootCAs: pool(t, srv.CAPEM)}
			if err := mailer.Send(context.Background(), s, message()); err != nil {
				t.Fatal(err)
			}
			got := srv.Mails()
			if len(got) != 1 || got[0].From != dvrFrom || len(got[0].To) != 1 || got[0].To[0] != owner || got[0].User != "dvr@example.net" || !got[0].TLS {
				t.Fatalf("server took %+v", got)
			}
			checkMessage(t, got[0].Data)
		})
	}
}

func TestSendPlainOnlyToALoopbackRelayWithoutLogin(t *testing.T) {
	srv := mailtest.Start(t, mailtest.Options{Mode: mailtest.Plain})
	s := mailer.Settings{Server: srv.Addr, SSL: mailer.None, From: dvrFrom, To: owner}
	if err := mailer.Send(context.Background(), s, message()); err != nil {
		t.Fatal(err)
	}
	if got := srv.Mails(); len(got) != 1 || got[0].TLS {
		t.Fatalf("server took %+v", got)
	}
}

// checkMessage parses the message as a mail reader would and checks what
// the owner needs in it.
func checkMessage(t *testing.T, data []byte) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	for _, k := range []string{"Date", "From", "To", "Subject", "Message-Id", "Mime-Version", "Content-Type"} {
		if len(h[k]) != 1 {
			t.Errorf("header %s appears %d times", k, len(h[k]))
		}
	}
	if d, err := h.Date(); err != nil || !d.Equal(message().Date) {
		t.Errorf("Date %q: %v", h.Get("Date"), err)
	}
	if h.Get("From") != dvrFrom || h.Get("To") != owner {
		t.Errorf("From %q To %q", h.Get("From"), h.Get("To"))
	}
	if !regexp.MustCompile(`^<[0-9a-f]{32}@example\.net>$`).MatchString(h.Get("Message-Id")) {
		t.Errorf("Message-ID %q", h.Get("Message-Id"))
	}
	subj := h.Get("Subject")
	if !strings.Contains(subj, testSerial) || !strings.Contains(subj, "HDVR-1104") || strings.Contains(subj, testCode) {
		t.Errorf("Subject %q: want the model and serial, never the code", subj)
	}
	body, _ := io.ReadAll(m.Body)
	for _, want := range []string{"Recovery code: " + testCode, "serial " + testSerial, "model HDVR-1104", `"find password" screen`, "within 30 minutes", "6 to 32 characters", "at least two kinds of: digits, lower case letters, upper", "case letters, special characters"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	for i, line := range strings.Split(string(data), "\r\n") {
		if len(line) > 78 || strings.ContainsAny(line, "\r\n") {
			t.Errorf("line %d is %d bytes or has a bare line break: %q", i, len(line), line)
		}
	}
}

// failure sends with s and returns the *mailer.Error.
func failure(t *testing.T, s mailer.Settings) *mailer.Error {
	t.Helper()
	err := mailer.Send(context.Background(), s, message())
	var me *mailer.Error
	if !errors.As(err, &me) {
		t.Fatalf("Send: %v (%T), want a *mailer.Error", err, err)
	}
	return me
}

func TestSendFailuresNameTheSetting(t *testing.T) {
	tlsSrv := mailtest.Start(t, mailtest.Options{Mode: mailtest.ImplicitTLS, Users: users})
	startSrv := mailtest.Start(t, mailtest.Options{Mode: mailtest.StartTLS, Users: users, RefuseRecipients: []string{"nobody@example.com"}, TempFailRecipients: []string{"later@example.com"}})
	plainSrv := mailtest.Start(t, mailtest.Options{Mode: mailtest.Plain, Users: users})
	noAuthSrv := mailtest.Start(t, mailtest.Options{Mode: mailtest.StartTLS})
	caPEM, cert := mailtest.NewCA(t, "mail.example.com")
	otherName := mailtest.Start(t, mailtest.Options{Mode: mailtest.ImplicitTLS, Certificate: &cert})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	ok := func(srv *mailtest.Server, ssl mailer.SSL) mailer.Settings {
		return mailer.Settings{Server: srv.Addr, SSL: ssl, User: "dvr@example.net", Password: "s3cret pass", To: owner, RootCAs: pool(t, srv.CAPEM), Timeout: 2 * time.Second}
	}
	for _, tc := range []struct {
		name    string
		s       func() mailer.Settings
		srv     *mailtest.Server
		setting mailer.Setting
		code    int
		msg     string
	}{
		{"refused/wrong-password-535", func() mailer.Settings { s := ok(tlsSrv, mailer.TLS); s.Password = "guess"; return s }, tlsSrv, mailer.SettingLogin, 535, "check the user name and password"},
		{"refused/unknown-user-535-over-starttls", func() mailer.Settings { s := ok(startSrv, mailer.StartTLS); s.User = "eve@example.net"; return s }, startSrv, mailer.SettingLogin, 535, `refused the login of "eve@example.net"`},
		{"refused/starttls-not-offered-never-plain", func() mailer.Settings { s := ok(plainSrv, mailer.StartTLS); s.RootCAs = nil; return s }, plainSrv, mailer.SettingSSL, 0, "does not offer STARTTLS"},
		{"refused/untrusted-certificate", func() mailer.Settings { s := ok(tlsSrv, mailer.TLS); s.RootCAs = nil; return s }, tlsSrv, mailer.SettingCertificate, 0, "does not trust"},
		{"refused/certificate-for-another-name", func() mailer.Settings {
			return mailer.Settings{Server: otherName.Addr, SSL: mailer.TLS, From: dvrFrom, To: owner, RootCAs: pool(t, caPEM)}
		}, otherName, mailer.SettingCertificate, 0, "not for 127.0.0.1"},
		{"refused/tls-to-a-starttls-port", func() mailer.Settings { return ok(startSrv, mailer.TLS) }, startSrv, mailer.SettingSSL, 0, "did not answer with TLS"},
		{"refused/starttls-to-a-tls-port", func() mailer.Settings { return ok(tlsSrv, mailer.StartTLS) }, tlsSrv, mailer.SettingSSL, 0, "check the SSL setting"},
		{"refused/recipient-550", func() mailer.Settings { s := ok(startSrv, mailer.StartTLS); s.To = "nobody@example.com"; return s }, startSrv, mailer.SettingRecipient, 550, "check the recovery e-mail address"},
		{"temporary/recipient-451", func() mailer.Settings { s := ok(startSrv, mailer.StartTLS); s.To = "later@example.com"; return s }, startSrv, mailer.SettingNone, 451, "try again in a few minutes"},
		{"refused/login-required-530", func() mailer.Settings {
			s := ok(startSrv, mailer.StartTLS)
			s.User, s.Password, s.From = "", "", dvrFrom
			return s
		}, startSrv, mailer.SettingLogin, 530, "check the user name and password"},
		{"refused/login-set-but-not-offered", func() mailer.Settings { return ok(noAuthSrv, mailer.StartTLS) }, noAuthSrv, mailer.SettingLogin, 0, "offers no login"},
		{"refused/nothing-listening", func() mailer.Settings { s := ok(tlsSrv, mailer.TLS); s.Server = closedAddr; return s }, nil, mailer.SettingServer, 0, "cannot reach the SMTP server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := 0
			if tc.srv != nil {
				before = len(tc.srv.Mails())
			}
			e := failure(t, tc.s())
			if e.Setting != tc.setting || e.Code != tc.code || !strings.Contains(e.Error(), tc.msg) {
				t.Fatalf("got setting %q code %d %q; want %q %d %q", e.Setting, e.Code, e.Error(), tc.setting, tc.code, tc.msg)
			}
			if e.Temporary() != (tc.setting == mailer.SettingNone) {
				t.Errorf("Temporary() = %v", e.Temporary())
			}
			if strings.Contains(e.Error(), "s3cret") || strings.Contains(e.Error(), "guess") {
				t.Errorf("the error carries the password: %q", e.Error())
			}
			if tc.srv != nil && len(tc.srv.Mails()) != before {
				t.Errorf("a message was delivered")
			}
		})
	}
	for _, srv := range []*mailtest.Server{plainSrv} {
		if l := srv.Logins(); len(l) != 0 {
			t.Errorf("a login was sent to a server without TLS: %v", l)
		}
	}
}

func TestCheckRefusesBadSettings(t *testing.T) {
	good := mailer.Settings{Server: "smtp.example.com:465", SSL: mailer.TLS, User: "dvr@example.net", Password: "pw", To: owner}
	for _, tc := range []struct {
		name    string
		edit    func(*mailer.Settings)
		setting mailer.Setting
	}{
		{"refused/header-injection-in-recipient", func(s *mailer.Settings) { s.To = owner + "\r\nBcc: eve@example.com" }, mailer.SettingRecipient},
		{"refused/header-injection-in-sender", func(s *mailer.Settings) { s.From = dvrFrom + "\nBcc: eve@example.com" }, mailer.SettingSender},
		{"refused/recipient-with-display-name", func(s *mailer.Settings) { s.To = "Jane <jane@example.com>" }, mailer.SettingRecipient},
		{"refused/recipient-two-addresses", func(s *mailer.Settings) { s.To = "jane@example.com, eve@example.com" }, mailer.SettingRecipient},
		{"refused/recipient-quoted-local-part", func(s *mailer.Settings) { s.To = `"jane doe"@example.com` }, mailer.SettingRecipient},
		{"refused/recipient-not-ascii", func(s *mailer.Settings) { s.To = "jané@example.com" }, mailer.SettingRecipient},
		{"refused/recipient-without-domain", func(s *mailer.Settings) { s.To = "jane@" }, mailer.SettingRecipient},
		{"refused/no-recipient", func(s *mailer.Settings) { s.To = " " }, mailer.SettingRecipient},
		{"refused/no-sender-and-user-not-an-address", func(s *mailer.Settings) { s.User = "dvr" }, mailer.SettingSender},
		{"refused/user-with-line-break", func(s *mailer.Settings) { s.User = "dvr\r\nRSET" }, mailer.SettingLogin},
		{"refused/password-with-line-break", func(s *mailer.Settings) { s.Password = "pw\r\nRSET" }, mailer.SettingLogin},
		{"refused/password-without-user", func(s *mailer.Settings) { s.User, s.From = "", dvrFrom }, mailer.SettingLogin},
		{"refused/server-without-port", func(s *mailer.Settings) { s.Server = "smtp.example.com" }, mailer.SettingServer},
		{"refused/port-out-of-range", func(s *mailer.Settings) { s.Server = "smtp.example.com:70000" }, mailer.SettingServer},
		{"refused/server-with-line-break", func(s *mailer.Settings) { s.Server = "smtp.example.com:465\r\n" }, mailer.SettingServer},
		{"refused/unknown-ssl-setting", func(s *mailer.Settings) { s.SSL = "ssl3" }, mailer.SettingSSL},
		{"refused/plain-to-a-remote-server", func(s *mailer.Settings) { s.SSL, s.User, s.Password, s.From = mailer.None, "", "", dvrFrom }, mailer.SettingSSL},
		{"refused/plain-with-a-password", func(s *mailer.Settings) { s.SSL, s.Server = mailer.None, "127.0.0.1:25" }, mailer.SettingSSL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.edit(&s)
			_, err := s.Check()
			var me *mailer.Error
			if !errors.As(err, &me) || me.Setting != tc.setting {
				t.Fatalf("Check: %v, want a failure naming %q", err, tc.setting)
			}
		})
	}
	s, err := good.Check()
	if err != nil || s.From != "dvr@example.net" || s.Timeout != mailer.DefaultTimeout {
		t.Fatalf("good settings: %+v %v", s, err)
	}
	u := mailer.Settings{Server: "[::1]:587", SSL: " STARTTLS ", From: dvrFrom, To: owner}
	if c, err := u.Check(); err != nil || c.SSL != mailer.StartTLS {
		t.Fatalf("upper-case SSL setting: %+v %v", c, err)
	}
}

func TestPasswordNeverPrinted(t *testing.T) {
	s := mailer.Settings{Server: "smtp.example.com:465", User: "dvr", Password: "s3cret"}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(f, s); strings.Contains(out, "s3cret") {
			t.Errorf("%s printed the password: %s", f, out)
		}
	}
}

// TestServerReplyQuotedSafely: a hostile server's reply is quoted cut and
// without control characters (it is shown on the DVR's screen).
func TestServerReplyQuotedSafely(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "554 \x1b[2J\x07go away "+strings.Repeat("x", 500)+"\r\n")
		io.Copy(io.Discard, c)
	}()
	e := failure(t, mailer.Settings{Server: l.Addr().String(), SSL: mailer.None, From: dvrFrom, To: owner, Timeout: 2 * time.Second})
	if e.Code != 554 || e.Setting != mailer.SettingServer || strings.ContainsAny(e.Error(), "\x1b\x07") || len(e.Error()) > 300 {
		t.Fatalf("setting %q code %d: %q", e.Setting, e.Code, e.Error())
	}
}
