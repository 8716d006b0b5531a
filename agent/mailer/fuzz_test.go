package mailer_test

import (
	"bytes"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/mailer"
)

// FuzzCheckSettings feeds the owner-typed SMTP settings (untrusted: anyone
// at the DVR's screen, or a tampered settings file, sets them) and the
// model name through Check and Compose. Whatever passes must compose to a
// message whose headers are exactly the nine written, with the recipient
// and sender as given: no input adds a header or a recipient.
func FuzzCheckSettings(f *testing.F) {
	// Seeds: a good setting, then each trick the table tests refuse.
	f.Add("smtp.example.com:465", "tls", "dvr@example.net", "", "jane@example.com", "HDVR-1104")
	f.Add("smtp.example.com:587", "STARTTLS", "dvr", "dvr@example.net", "jane@example.com", "")
	f.Add("127.0.0.1:25", "none", "", "dvr@example.net", "jane@example.com", "")
	f.Add("smtp.example.com:465", "tls", "dvr@example.net", "", "jane@example.com\r\nBcc: eve@example.com", "")
	f.Add("smtp.example.com:465", "tls", "dvr@example.net", "", "jane@example.com", "X\r\nBcc: eve@example.com")
	f.Add("smtp.example.com:465", "tls", "dvr@example.net", "", "Jane <jane@example.com>", "")
	f.Add("smtp.example.com:465", "tls", "dvr@example.net", "", `"a\"b"@example.com`, "")
	f.Add("smtp.example.com:465", "tls", "dvr@example.net", "", "jane@example.com, eve@example.com", "")
	f.Add("smtp.example.com:465", "tls", "dvr@example.net", "", "=?utf-8?q?eve?=@example.com", "")
	f.Add("[::1]:25", "none", "", "dvr@example.net", "jane@example.com", "")
	f.Add("smtp.example.com", "tls", "dvr@example.net", "", "jane@example.com", "")
	f.Add("10.0.0.1:25", "none", "", "dvr@example.net", "jane@example.com", "")
	f.Add("smtp.example.com:465", "tls", "dvr@example.net", "", "jane@"+strings.Repeat("a", 300)+".com", strings.Repeat("M ", 100))
	f.Fuzz(func(t *testing.T, server, ssl, user, from, to, model string) {
		s, err := mailer.Settings{Server: server, SSL: mailer.SSL(ssl), User: user, From: from, To: to}.Check()
		if err != nil {
			if _, ok := err.(*mailer.Error); !ok {
				t.Fatalf("Check: %T %v, want *mailer.Error", err, err)
			}
			return
		}
		if s.SSL == mailer.None && s.User != "" {
			t.Fatalf("plain SMTP with a login passed: %+v", s)
		}
		msg, err := mailer.Compose(s, mailer.Message{Serial: "JZ6OES#2017-08-01#3#DVR1101134C08011", Model: model, Code: "7KQF-M2XW-9PLC", Valid: 30 * time.Minute, Date: time.Unix(1e9, 0)})
		if err != nil {
			return // a model with a control character or non-ASCII
		}
		head, _, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
		if !ok {
			t.Fatal("no end of headers")
		}
		if n := bytes.Count(head, []byte("\r\n")) + 1 - bytes.Count(head, []byte("\r\n ")); n != 9 {
			t.Fatalf("%d header lines, want 9:\n%s", n, head)
		}
		m, err := mail.ReadMessage(bytes.NewReader(msg))
		if err != nil {
			t.Fatalf("composed message does not parse: %v\n%s", err, msg)
		}
		tos, err := m.Header.AddressList("To")
		if err != nil || len(tos) != 1 || tos[0].Address != s.To || m.Header.Get("Bcc") != "" || m.Header.Get("Cc") != "" {
			t.Fatalf("To %q (%v): want exactly %q", m.Header.Get("To"), err, s.To)
		}
		if fr, err := mail.ParseAddress(m.Header.Get("From")); err != nil || fr.Address != s.From {
			t.Fatalf("From %q: want %q", m.Header.Get("From"), s.From)
		}
	})
}
