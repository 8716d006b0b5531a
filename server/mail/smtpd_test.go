package mail_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// received is one message the test SMTP server accepted.
type received struct {
	From string
	To   []string
	Data string
}

// smtpd is a real SMTP server (emersion/go-smtp) in the test process,
// with TLS and PLAIN authentication, recording what it accepts. reply,
// when set, may refuse a message at the end of DATA with an SMTP error.
type smtpd struct {
	Addr   string
	CAFile string
	User   string
	Pass   string

	mu    sync.Mutex
	msgs  []received
	seen  int // messages that reached the end of DATA, accepted or not
	reply func(n int, data string) error
	// onData, when set, runs when a message's data has been read, before
	// the reply is sent (a test blocks here to kill a sender mid-send).
	onData func(data string)
}

// startSMTPD serves on 127.0.0.1:0 until t ends; implicit is implicit TLS
// (SMTPS), else STARTTLS.
func startSMTPD(t testing.TB, implicit bool) *smtpd {
	t.Helper()
	cert, caPEM := selfSigned(t)
	d := &smtpd{User: "hotline", Pass: "s3cret-smtp", CAFile: filepath.Join(t.TempDir(), "ca.pem")}
	if err := os.WriteFile(d.CAFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s := smtp.NewServer(backend{d})
	s.Domain = "mx.test"
	s.ReadTimeout, s.WriteTimeout = 30*time.Second, 30*time.Second
	s.MaxRecipients = 5
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if implicit {
		l = tls.NewListener(l, tc)
	} else {
		s.TLSConfig = tc
	}
	d.Addr = l.Addr().String()
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return d
}

// messages returns what the server accepted so far.
func (d *smtpd) messages() []received {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]received(nil), d.msgs...)
}

type backend struct{ d *smtpd }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{d: b.d, conn: c}, nil
}

type session struct {
	d      *smtpd
	conn   *smtp.Conn
	authed bool
	from   string
	to     []string
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if _, isTLS := s.conn.TLSConnectionState(); !isTLS {
			return &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "encryption required"}
		}
		if user != s.d.User || pass != s.d.Pass {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		s.authed = true
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	data := string(b)
	d := s.d
	if d.onData != nil {
		d.onData(data)
	}
	d.mu.Lock()
	d.seen++
	n, reply := d.seen, d.reply
	d.mu.Unlock()
	if reply != nil {
		if err := reply(n, data); err != nil {
			return err
		}
	}
	d.mu.Lock()
	d.msgs = append(d.msgs, received{From: s.from, To: s.to, Data: data})
	d.mu.Unlock()
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

// selfSigned makes a certificate for 127.0.0.1 and localhost, and its PEM.
func selfSigned(t testing.TB) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mx.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// header returns a header's value in a raw message ("" when absent).
func header(data, name string) string {
	head, _, _ := strings.Cut(strings.ReplaceAll(data, "\r\n", "\n"), "\n\n")
	for _, l := range strings.Split(head, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

var errTemp = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
var errPerm = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
