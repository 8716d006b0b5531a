// Package mailtest runs a real SMTP server (emersion/go-smtp) on a
// loopback port, with a throwaway CA, for the tests of agent/mailer and
// dvr-agent's smtp build. It is imported by tests only: dvr-agent never
// links it (cmd/dvr-agent/deps_test.go).
package mailtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mode is how the server encrypts.
type Mode int

// Modes.
const (
	// ImplicitTLS: TLS from the first byte (port 465 style).
	ImplicitTLS Mode = iota
	// StartTLS: plain, offering STARTTLS.
	StartTLS
	// Plain: plain, not offering STARTTLS.
	Plain
)

// Options configure a Server.
type Options struct {
	Mode Mode
	// Users are the accepted logins (user name to password); any other
	// login gets 535. Empty: the server offers no AUTH.
	Users map[string]string
	// Mechanisms offered, default PLAIN and LOGIN.
	Mechanisms []string
	// RefuseRecipients get 550 at RCPT; TempFailRecipients get 451.
	RefuseRecipients, TempFailRecipients []string
	// Certificate is the server's; nil uses a fresh CA's certificate for
	// localhost and 127.0.0.1.
	Certificate *tls.Certificate
}

// Mail is one message the server took.
type Mail struct {
	From string
	To   []string
	Data []byte
	// User is the login that sent it ("" for none); TLS whether the
	// session was encrypted when the message was sent.
	User string
	TLS  bool
}

// Server is a running SMTP server.
type Server struct {
	// Addr is host:port to dial.
	Addr string
	// CAPEM is the PEM of the CA that signed the server's certificate.
	CAPEM []byte

	mu     sync.Mutex
	mails  []Mail
	logins []string
}

// Mails returns the messages taken so far.
func (s *Server) Mails() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Mail(nil), s.mails...)
}

// Logins returns the user names of every login attempt, in order.
func (s *Server) Logins() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.logins...)
}

// Start starts a server on 127.0.0.1:0, stopped by tb's cleanup.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	s := &Server{}
	cert := o.Certificate
	if cert == nil {
		caPEM, c := NewCA(tb, "localhost", "127.0.0.1")
		s.CAPEM, cert = caPEM, &c
	}
	if o.Mechanisms == nil {
		o.Mechanisms = []string{sasl.Plain, sasl.Login}
	}
	srv := smtp.NewServer(&backend{s: s, o: o})
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.ErrorLog = discard{}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	switch o.Mode {
	case ImplicitTLS:
		l = tls.NewListener(l, tlsCfg)
	case StartTLS:
		srv.TLSConfig = tlsCfg
	}
	s.Addr = l.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	// Close the listener too: a Close that runs before Serve has
	// registered it would leave Serve accepting for ever.
	tb.Cleanup(func() { srv.Close(); l.Close(); <-done })
	return s
}

type discard struct{}

func (discard) Printf(string, ...any) {}
func (discard) Println(...any)        {}

// NewCA makes a CA and a server certificate it signs for names (DNS names
// or IP literals); it returns the CA's PEM and the server's certificate.
func NewCA(tb testing.TB, names ...string) ([]byte, tls.Certificate) {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mailtest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

type backend struct {
	s *Server
	o Options
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{b: b, conn: c}, nil
}

type session struct {
	b    *backend
	conn *smtp.Conn
	user string
	mail Mail
}

var errAuth = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}

func (s *session) AuthMechanisms() []string {
	if len(s.b.o.Users) == 0 {
		return nil
	}
	return s.b.o.Mechanisms
}

func (s *session) check(user, pass string) error {
	s.b.s.mu.Lock()
	s.b.s.logins = append(s.b.s.logins, user)
	s.b.s.mu.Unlock()
	if want, ok := s.b.o.Users[user]; !ok || want != pass {
		return errAuth
	}
	s.user = user
	return nil
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return s.check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: s.check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if len(s.b.o.Users) > 0 && s.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	s.mail = Mail{From: from, User: s.user}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	for _, r := range s.b.o.RefuseRecipients {
		if r == to {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
		}
	}
	for _, r := range s.b.o.TempFailRecipients {
		if r == to {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
		}
	}
	s.mail.To = append(s.mail.To, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	var b bytes.Buffer
	if _, err := io.Copy(&b, r); err != nil {
		return err
	}
	m := s.mail
	m.Data = b.Bytes()
	_, m.TLS = s.conn.TLSConnectionState()
	s.b.s.mu.Lock()
	s.b.s.mails = append(s.b.s.mails, m)
	s.b.s.mu.Unlock()
	return nil
}

func (s *session) Reset()        { s.mail = Mail{} }
func (s *session) Logout() error { return nil }

// loginServer is the server side of AUTH LOGIN, which go-sasl no longer
// provides: prompt for the user name, then the password.
type loginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	l.step++
	switch l.step {
	case 1:
		if resp != nil {
			l.user, l.step = string(resp), 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 2:
		l.user = string(resp)
		return []byte("Password:"), false, nil
	case 3:
		return nil, true, l.check(l.user, string(resp))
	}
	return nil, false, errors.New("unexpected AUTH LOGIN step")
}
