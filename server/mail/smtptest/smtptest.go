// Package smtptest is a real SMTP server (emersion/go-smtp) for tests of
// what the hotline mails: plaintext on a loopback port, no
// authentication, recording every message it accepts, with a hook to
// refuse one. It also reads the codes out of the hotline's messages.
package smtptest

import (
	"io"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message the server accepted.
type Message struct {
	From string
	To   []string
	// Data is the message as received (headers and encoded body).
	Data string
}

// Body is the message's plain-text body, decoded, with "\n" line ends.
func (m Message) Body() string {
	pm, err := netmail.ReadMessage(strings.NewReader(m.Data))
	if err != nil {
		return ""
	}
	var rd io.Reader = pm.Body
	if strings.EqualFold(pm.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		rd = quotedprintable.NewReader(pm.Body)
	}
	b, _ := io.ReadAll(rd)
	return strings.ReplaceAll(string(b), "\r\n", "\n")
}

// Server is a running test SMTP server.
type Server struct {
	// Addr is its host:port on 127.0.0.1 (hotline-server's --smtp-addr,
	// with --smtp-security plain).
	Addr string

	mu     sync.Mutex
	msgs   []Message
	refuse func(to []string) error
	added  chan struct{}
}

// Start serves on 127.0.0.1:0 until t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	d := &Server{added: make(chan struct{}, 1)}
	s := smtp.NewServer(backend{d})
	s.Domain = "mx.test"
	s.ReadTimeout, s.WriteTimeout = 30*time.Second, 30*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.Addr = l.Addr().String()
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return d
}

// Refuse makes the server answer the end of a message's data with f's
// error (an *smtp.SMTPError sets the reply); nil accepts it.
func (d *Server) Refuse(f func(to []string) error) {
	d.mu.Lock()
	d.refuse = f
	d.mu.Unlock()
}

// Messages returns what the server accepted so far.
func (d *Server) Messages() []Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Message(nil), d.msgs...)
}

// WaitFor waits up to timeout for n messages to rcpt and returns them, in
// the order received; fewer when the time ran out.
func (d *Server) WaitFor(rcpt string, n int, timeout time.Duration) []Message {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		var got []Message
		for _, m := range d.Messages() {
			for _, to := range m.To {
				if strings.EqualFold(to, rcpt) {
					got = append(got, m)
					break
				}
			}
		}
		if len(got) >= n {
			return got
		}
		select {
		case <-d.added:
		case <-deadline.C:
			return got
		}
	}
}

var (
	ownerCodeRE = regexp.MustCompile(`(?m)^    (\d{3}) (\d{3})$`)
	voiceCodeRE = regexp.MustCompile(`(?m)^    ([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})$`)
)

// OwnerCode is the six-digit verification code in an owner-code
// message's body, "" when there is none.
func OwnerCode(body string) string {
	if m := ownerCodeRE.FindStringSubmatch(body); m != nil {
		return m[1] + m[2]
	}
	return ""
}

// VoiceCode is the voice code (XXXX-XXXX-XXXX-XXXX) in a temporary
// password's body, "" when there is none.
func VoiceCode(body string) string {
	if m := voiceCodeRE.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

type backend struct{ d *Server }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{d: b.d}, nil }

type session struct {
	d    *Server
	from string
	to   []string
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error { s.to = append(s.to, to); return nil }

func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	d := s.d
	d.mu.Lock()
	refuse := d.refuse
	d.mu.Unlock()
	if refuse != nil {
		if err := refuse(s.to); err != nil {
			return err
		}
	}
	d.mu.Lock()
	d.msgs = append(d.msgs, Message{From: s.from, To: append([]string(nil), s.to...), Data: string(b)})
	d.mu.Unlock()
	select {
	case d.added <- struct{}{}:
	default:
	}
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }
