// Package mailer sends the DVR's recovery e-mail through the SMTP server
// the owner configured (System setting > Network > SMTP), with the
// standard library only.
//
// The code it carries opens the DVR, so it is never sent in the clear to
// another machine: the SSL setting is implicit TLS (port 465 style) or
// STARTTLS, which must be offered (there is no fallback to plain text);
// plain SMTP is allowed only to a loopback server (a local relay), and
// then without a login. A login (AUTH PLAIN or LOGIN) is sent over TLS
// only. Every setting is checked before anything is dialled, every header
// value refuses CR and LF, and every failure is an *Error naming the
// setting the owner should check.
package mailer

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"time"
)

// SSL is the SSL setting: how the connection to the SMTP server is
// encrypted.
type SSL string

// The SSL settings.
const (
	// TLS is implicit TLS: the connection is TLS from its first byte
	// (SMTPS, usually port 465).
	TLS SSL = "tls"
	// StartTLS is plain SMTP upgraded with STARTTLS before anything else
	// is sent (usually port 587 or 25). A server that does not offer it is
	// refused.
	StartTLS SSL = "starttls"
	// None is plain SMTP, allowed only to a loopback server and without a
	// login.
	None SSL = "none"
)

// Default timeouts: reaching the server, and the whole exchange.
const (
	DefaultDialTimeout = 10 * time.Second
	DefaultTimeout     = 30 * time.Second
)

// MaxHeaderValue is the longest setting accepted for an address, a server
// name or a user name, in bytes.
const MaxHeaderValue = 254

// Password is the SMTP password. It prints as "[redacted]".
type Password string

// String redacts the password.
func (Password) String() string { return "[redacted]" }

// GoString redacts the password.
func (Password) GoString() string { return "[redacted]" }

// Settings are the DVR's SMTP settings and the recovery recipient.
type Settings struct {
	// Server is the SMTP server as host:port.
	Server string
	// SSL is the SSL setting.
	SSL SSL
	// User and Password are the login; an empty User sends no AUTH.
	User     string
	Password Password
	// From is the sender address (the SMTP settings' sender).
	From string
	// To is the "E-mail (Recovery the password)" recipient.
	To string
	// RootCAs verifies the server's certificate; nil is the system pool.
	RootCAs *x509.CertPool
	// DialTimeout bounds reaching the server and Timeout the whole
	// exchange; zero is DefaultDialTimeout and DefaultTimeout.
	DialTimeout, Timeout time.Duration
}

// host returns the server's host name (or IP) and port.
func (s Settings) host() (string, string) {
	h, p, _ := net.SplitHostPort(s.Server)
	return h, p
}

// Check validates every setting without dialling, and returns the
// normalised settings (bare addresses, lower-case SSL). The *Error names
// the setting that is wrong and what was expected.
func (s Settings) Check() (Settings, error) {
	s.SSL = SSL(strings.ToLower(strings.TrimSpace(string(s.SSL))))
	if err := checkLine(SettingServer, s.Server); err != nil {
		return s, err
	}
	host, port, err := net.SplitHostPort(s.Server)
	if err != nil || host == "" || strings.ContainsAny(host, " \t/@") {
		return s, &Error{Setting: SettingServer, Msg: fmt.Sprintf("SMTP server %q: expected host:port, e.g. smtp.example.com:465", s.Server)}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return s, &Error{Setting: SettingServer, Msg: fmt.Sprintf("SMTP port %q: expected a number from 1 to 65535 (465 for TLS, 587 for STARTTLS)", port)}
	}
	switch s.SSL {
	case TLS, StartTLS:
	case None:
		if !isLoopback(host) {
			return s, &Error{Setting: SettingSSL, Msg: fmt.Sprintf("SSL setting none sends the code unencrypted, so it is allowed only to a server on this DVR (localhost), not %s: choose TLS or STARTTLS", host)}
		}
		if s.User != "" {
			return s, &Error{Setting: SettingSSL, Msg: "SSL setting none never sends a password: choose TLS or STARTTLS, or clear the user name"}
		}
	default:
		return s, &Error{Setting: SettingSSL, Msg: fmt.Sprintf("SSL setting %q: expected tls (implicit TLS, port 465), starttls (port 587) or none (a local relay only)", s.SSL)}
	}
	if err := checkLine(SettingLogin, s.User); err != nil {
		return s, err
	}
	if strings.ContainsAny(string(s.Password), "\r\n\x00") {
		return s, &Error{Setting: SettingLogin, Msg: "the SMTP password contains a line break or NUL: expected one line"}
	}
	if s.User == "" && s.Password != "" {
		return s, &Error{Setting: SettingLogin, Msg: "an SMTP password without a user name: set the user name too, or clear the password"}
	}
	if s.From == "" && strings.Contains(s.User, "@") {
		s.From = s.User
	}
	if s.From, err = checkAddress(SettingSender, "sender address", s.From); err != nil {
		return s, err
	}
	if strings.TrimSpace(s.To) == "" {
		return s, &Error{Setting: SettingRecipient, Msg: "set up the recovery e-mail first: System setting > Network > SMTP"}
	}
	if s.To, err = checkAddress(SettingRecipient, "recovery e-mail address", s.To); err != nil {
		return s, err
	}
	if s.DialTimeout <= 0 {
		s.DialTimeout = DefaultDialTimeout
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	return s, nil
}

// checkLine refuses a value that would break an SMTP line or a header.
func checkLine(setting Setting, v string) error {
	if len(v) > MaxHeaderValue {
		return &Error{Setting: setting, Msg: fmt.Sprintf("%s: %d bytes, expected at most %d", setting, len(v), MaxHeaderValue)}
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return &Error{Setting: setting, Msg: fmt.Sprintf("%s %q contains a control character (a line break?): expected one line of text", setting, v)}
		}
	}
	return nil
}

// checkAddress parses an e-mail address with net/mail and returns the bare
// address. Only ASCII addresses are accepted (the DVR's server need not
// speak SMTPUTF8), with no display name, quoting or comments.
func checkAddress(setting Setting, what, v string) (string, error) {
	if err := checkLine(setting, v); err != nil {
		return "", err
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return "", &Error{Setting: setting, Msg: fmt.Sprintf("no %s: expected an address like name@example.com", what)}
	}
	a, err := mail.ParseAddress(v)
	if err != nil || a.Name != "" || a.Address != v {
		return "", &Error{Setting: setting, Msg: fmt.Sprintf("%s %q is not an e-mail address: expected one plain address like name@example.com", what, v)}
	}
	at := strings.LastIndexByte(v, '@')
	for _, r := range v {
		if r <= ' ' || r >= 0x7f || r == '"' || r == '\\' || r == '<' || r == '>' || r == '(' || r == ')' || r == ',' || r == ';' {
			return "", &Error{Setting: setting, Msg: fmt.Sprintf("%s %q: expected letters, digits and . _ - + @ only (no spaces, quotes or non-ASCII)", what, v)}
		}
	}
	if at < 1 || at == len(v)-1 || strings.HasPrefix(v[at+1:], ".") || strings.HasSuffix(v, ".") || strings.Contains(v[at+1:], "..") {
		return "", &Error{Setting: setting, Msg: fmt.Sprintf("%s %q: expected a domain after the @, like name@example.com", what, v)}
	}
	return v, nil
}

// isLoopback reports whether host is this machine: localhost or a loopback
// IP literal.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
