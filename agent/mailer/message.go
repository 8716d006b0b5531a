package mailer

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/password"
)

// Message is what the recovery e-mail says.
type Message struct {
	// Serial is the DVR's serial number; Model its model name, if known.
	Serial, Model string
	// Code is the one-time recovery code.
	Code string
	// Valid is how long the code is accepted (30 minutes).
	Valid time.Duration
	// Date is when the code was made (the DVR's clock).
	Date time.Time
}

// Subject is the e-mail's subject: it names the DVR, never the code.
func (m Message) Subject() string {
	if m.Model != "" {
		return fmt.Sprintf("DVR password recovery code for %s %s", m.Model, m.Serial)
	}
	return "DVR password recovery code for " + m.Serial
}

// Body is the e-mail's plain-text body, lines ending in CRLF.
func (m Message) Body() string {
	dvr := "serial " + m.Serial
	if m.Model != "" {
		dvr = "model " + m.Model + ", serial " + m.Serial
	}
	lines := []string{
		"Someone asked this DVR to recover its admin password",
		"(\"Send password to your E-mail\" on its \"find password\" screen):",
		"",
		"  DVR:           " + dvr,
		"  Recovery code: " + m.Code,
		"",
		"What to do next:",
		"",
		"1. On the DVR's \"find password\" screen, type the recovery code",
		fmt.Sprintf("   within %s of this e-mail (sent %s).", duration(m.Valid), m.Date.UTC().Format("2006-01-02 15:04 UTC")),
		"   It works once, and only until the DVR restarts or a newer code",
		"   is sent.",
		"",
		"2. Then set a new admin password: " + fmt.Sprintf("%d to %d characters,", password.MinLen, password.MaxLen),
		"   with at least two kinds of: digits, lower case letters, upper",
		"   case letters, special characters (such as ! # % + - . @ _).",
		"",
		"If you did not ask for this, ignore this e-mail: the admin password",
		"stays as it is, and the code expires by itself. Nobody from support",
		"will ever ask you for this code.",
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}

// duration writes d for the owner ("30 minutes").
func duration(d time.Duration) string {
	if d%time.Hour == 0 && d >= time.Hour {
		return fmt.Sprintf("%d hours", d/time.Hour)
	}
	return fmt.Sprintf("%d minutes", d/time.Minute)
}

// Compose returns the whole message (headers and body, CRLF) for
// settings s, which must have passed Check. A header value with a control
// character is refused, so nothing given can add a header.
func Compose(s Settings, m Message) ([]byte, error) {
	if err := checkLine(SettingServer, m.Serial); err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	if err := checkLine(SettingServer, m.Model); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	for _, v := range []string{m.Serial, m.Model, m.Code} {
		for _, r := range v {
			if r >= 0x7f {
				return nil, fmt.Errorf("serial, model and code must be ASCII, got %q", v)
			}
		}
	}
	if strings.ContainsAny(m.Code, "\r\n") || m.Code == "" {
		return nil, fmt.Errorf("recovery code %q: expected one line", m.Code)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	domain := s.From[strings.LastIndexByte(s.From, '@')+1:]
	headers := [][2]string{
		{"Date", m.Date.Format(time.RFC1123Z)},
		{"From", s.From},
		{"To", s.To},
		{"Subject", m.Subject()},
		{"Message-ID", "<" + hex.EncodeToString(id[:]) + "@" + domain + ">"},
		{"MIME-Version", "1.0"},
		{"Content-Type", "text/plain; charset=us-ascii"},
		{"Content-Transfer-Encoding", "7bit"},
		{"Auto-Submitted", "auto-generated"},
	}
	var b strings.Builder
	for _, h := range headers {
		if err := checkLine(SettingServer, h[1]); err != nil {
			return nil, fmt.Errorf("header %s: %w", h[0], err)
		}
		b.WriteString(fold(h[0]+": "+h[1]) + "\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(m.Body())
	return []byte(b.String()), nil
}

// fold breaks a header line longer than 78 characters at spaces (RFC 5322
// folding: CRLF then the space), so mail readers show it whole.
func fold(line string) string {
	var b strings.Builder
	for len(line) > 78 {
		i := strings.LastIndexByte(line[:78], ' ')
		if i <= strings.IndexByte(line, ':')+1 {
			break
		}
		b.WriteString(line[:i] + "\r\n")
		line = line[i:]
	}
	b.WriteString(line)
	return b.String()
}
