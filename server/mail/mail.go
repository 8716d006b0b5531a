// Package mail is the outbox's SMTP client: server.Mailer on
// wneessen/go-mail. It speaks implicit TLS (port 465 style), STARTTLS
// (required: a server that does not offer it is refused, never spoken to
// in plaintext), or plaintext to a loopback relay only; authenticates when
// given a user; and writes each message with a Date, the outbox's
// Message-ID, the configured From and Reply-To and a plain-text UTF-8
// body.
//
// It classifies each message's result for the outbox's at-most-once rule:
// accepted; temporary (a 4xx reply, or a failure before the message was
// handed over, so that the server does not have it); permanent (a 5xx);
// or ambiguous (the connection failed after the message's final dot and
// before the server's reply: it may have been accepted, so it is never
// retried).
package mail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/dvrhotline/hotline/proto/hotline/netaddr"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/envflag"
)

// The transport security modes.
const (
	// SecurityTLS is implicit TLS from the first byte (SMTPS, port 465).
	SecurityTLS = "tls"
	// SecuritySTARTTLS upgrades with STARTTLS and refuses a server that
	// does not offer it (port 587).
	SecuritySTARTTLS = "starttls"
	// SecurityPlain is plaintext, allowed to a loopback address only (a
	// local relay).
	SecurityPlain = "plain"
)

// Config is the SMTP configuration; a zero Addr means no mail is sent.
type Config struct {
	// Addr is the server's host:port.
	Addr string
	// Security is SecurityTLS, SecuritySTARTTLS or SecurityPlain.
	Security string
	// Username and Password authenticate (PLAIN or LOGIN, as the server
	// offers); no username means no authentication.
	Username, Password string
	// From is the sender address (required), ReplyTo the optional
	// Reply-To.
	From, ReplyTo string
	// CAFile is a PEM bundle of CAs to trust instead of the system's.
	CAFile string
	// Timeout bounds the connection and each command (default 30s).
	Timeout time.Duration
}

// RegisterFlags adds the SMTP flags to fs, with environment variables as
// defaults. The password is read from HOTLINE_SMTP_PASSWORD or a file
// (--smtp-password-file), never from a flag (flags show in ps).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "smtp-addr", os.Getenv("HOTLINE_SMTP_ADDR"), "SMTP server host:port; empty sends no mail (env HOTLINE_SMTP_ADDR)")
	fs.StringVar(&c.Security, "smtp-security", envflag.String("HOTLINE_SMTP_SECURITY", SecuritySTARTTLS), "tls (implicit), starttls (required) or plain (loopback only) (env HOTLINE_SMTP_SECURITY)")
	fs.StringVar(&c.Username, "smtp-user", os.Getenv("HOTLINE_SMTP_USER"), "SMTP user; empty: no authentication (env HOTLINE_SMTP_USER)")
	fs.Func("smtp-password-file", "file holding the SMTP password (default env HOTLINE_SMTP_PASSWORD)", func(p string) error {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		c.Password = strings.TrimRight(string(b), "\r\n")
		return nil
	})
	c.Password = os.Getenv("HOTLINE_SMTP_PASSWORD")
	fs.StringVar(&c.From, "mail-from", os.Getenv("HOTLINE_MAIL_FROM"), "sender address, e.g. 'DVR Support <support@example.com>' (env HOTLINE_MAIL_FROM)")
	fs.StringVar(&c.ReplyTo, "mail-reply-to", os.Getenv("HOTLINE_MAIL_REPLY_TO"), "Reply-To address (env HOTLINE_MAIL_REPLY_TO)")
	fs.StringVar(&c.CAFile, "smtp-ca-file", os.Getenv("HOTLINE_SMTP_CA_FILE"), "PEM CAs to trust for the SMTP server instead of the system's (env HOTLINE_SMTP_CA_FILE)")
	fs.DurationVar(&c.Timeout, "smtp-timeout", 30*time.Second, "SMTP connection and command timeout")
}

// Mailer sends through one SMTP server. It implements server.Mailer.
type Mailer struct {
	cfg    Config
	host   string
	port   int
	from   *mail.Address
	domain string
	tls    *tls.Config
}

var _ server.Mailer = (*Mailer)(nil)

// New checks c and returns its Mailer; every mistake is named.
func New(c Config) (*Mailer, error) {
	host, ps, err := net.SplitHostPort(c.Addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("smtp-addr %q: expected host:port, e.g. smtp.example.com:465", c.Addr)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("smtp-addr %q: expected a port from 1 to 65535", c.Addr)
	}
	switch c.Security {
	case SecurityTLS, SecuritySTARTTLS:
	case SecurityPlain:
		if !netaddr.IsLoopback(c.Addr) {
			return nil, fmt.Errorf("smtp-security plain refused for %s, which is not a loopback address: use tls or starttls", c.Addr)
		}
	default:
		return nil, fmt.Errorf("smtp-security %q: expected tls, starttls or plain (loopback only)", c.Security)
	}
	if c.Username != "" && c.Password == "" {
		return nil, errors.New("smtp-user is set but no password: set HOTLINE_SMTP_PASSWORD or --smtp-password-file")
	}
	from, err := mail.ParseAddress(c.From)
	if err != nil {
		return nil, fmt.Errorf("mail-from %q: expected an address like 'DVR Support <support@example.com>': %v", c.From, err)
	}
	if c.ReplyTo != "" {
		if _, err := mail.ParseAddress(c.ReplyTo); err != nil {
			return nil, fmt.Errorf("mail-reply-to %q: expected an address: %v", c.ReplyTo, err)
		}
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("smtp-ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("smtp-ca-file %s: no PEM certificate in it", c.CAFile)
		}
		tc.RootCAs = pool
	}
	domain := from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	return &Mailer{cfg: c, host: host, port: port, from: from, domain: domain, tls: tc}, nil
}

// Domain implements server.Mailer: the sender address's domain.
func (m *Mailer) Domain() string { return m.domain }

func (m *Mailer) client() (*gomail.Client, error) {
	opts := []gomail.Option{gomail.WithPort(m.port), gomail.WithTimeout(m.cfg.Timeout), gomail.WithTLSConfig(m.tls)}
	switch m.cfg.Security {
	case SecurityTLS:
		opts = append(opts, gomail.WithSSL())
	case SecuritySTARTTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case SecurityPlain:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if m.cfg.Username != "" {
		auth := gomail.SMTPAuthAutoDiscover
		if m.cfg.Security == SecurityPlain {
			auth = gomail.SMTPAuthPlainNoEnc // loopback only, checked in New
		}
		opts = append(opts, gomail.WithSMTPAuth(auth), gomail.WithUsername(m.cfg.Username), gomail.WithPassword(m.cfg.Password))
	}
	return gomail.NewClient(m.host, opts...)
}

// compose builds one message.
func (m *Mailer) compose(in server.Mail) (*gomail.Msg, error) {
	msg := gomail.NewMsg(gomail.WithCharset(gomail.CharsetUTF8), gomail.WithEncoding(gomail.EncodingQP))
	msg.FromMailAddress(m.from)
	if err := msg.To(in.To); err != nil {
		return nil, err
	}
	if m.cfg.ReplyTo != "" {
		if err := msg.ReplyTo(m.cfg.ReplyTo); err != nil {
			return nil, err
		}
	}
	msg.Subject(in.Subject)
	msg.SetDateWithValue(time.Now())
	msg.SetMessageIDWithValue(strings.Trim(in.MessageID, "<>"))
	msg.SetGenHeader(gomail.HeaderContentLang, "en")
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetUserAgent("hotline")
	msg.SetBodyString(gomail.TypeTextPlain, in.Body)
	return msg, nil
}

// Send implements server.Mailer: one connection for every message.
func (m *Mailer) Send(ctx context.Context, in []server.Mail) []server.MailResult {
	out := make([]server.MailResult, len(in))
	msgs := make([]*gomail.Msg, 0, len(in))
	idx := make([]int, 0, len(in))
	for i, x := range in {
		msg, err := m.compose(x)
		if err != nil {
			out[i] = server.MailResult{Err: err, Reply: "not sent: " + err.Error()}
			continue
		}
		msgs = append(msgs, msg)
		idx = append(idx, i)
	}
	if len(msgs) == 0 {
		return out
	}
	c, err := m.client()
	if err != nil {
		for _, i := range idx {
			out[i] = server.MailResult{Err: err, Reply: "not sent: " + err.Error()}
		}
		return out
	}
	sendErr := c.DialAndSendWithContext(ctx, msgs...)
	for j, msg := range msgs {
		out[idx[j]] = classify(msg, sendErr)
	}
	return out
}

// classify turns one message's fate into a server.MailResult.
func classify(msg *gomail.Msg, sendErr error) server.MailResult {
	if msg.IsDelivered() {
		// A failed RSET after acceptance does not undo the acceptance.
		return server.MailResult{Reply: msg.ServerResponse()}
	}
	var se *gomail.SendError
	if !msg.HasSendError() || !errors.As(msg.SendError(), &se) {
		// Never attempted (the connection, TLS or authentication failed):
		// the server does not have it.
		if sendErr == nil {
			sendErr = errors.New("not attempted")
		}
		return server.MailResult{Err: sendErr, Reply: "not sent: " + sendErr.Error(), Temporary: true}
	}
	r := server.MailResult{Err: se, Reply: se.Error()}
	switch code := se.ErrorCode(); {
	case code >= 500:
	case code >= 400:
		r.Temporary = true
	case se.Reason == gomail.ErrSMTPDataClose:
		// The final dot went out and no reply came back.
		r.Ambiguous = true
	default:
		// A local or connection failure before the final dot.
		r.Temporary = true
	}
	return r
}
