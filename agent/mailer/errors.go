package mailer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
)

// Setting names the SMTP setting a failure points at, as the DVR's SMTP
// screen labels it. The values are shown to the owner and matched by
// firmware: append-only.
type Setting string

// The settings a failure can point at.
const (
	SettingServer      Setting = "SMTP server and port"
	SettingSSL         Setting = "SSL setting"
	SettingCertificate Setting = "SMTP server name (certificate)"
	SettingLogin       Setting = "user name and password"
	SettingSender      Setting = "sender address"
	SettingRecipient   Setting = "recovery e-mail address"
	// SettingNone: a temporary failure of the server; nothing to change,
	// try again later.
	SettingNone Setting = ""
)

// Error is a failure to send, with the setting to check.
type Error struct {
	// Setting is the setting to check (SettingNone: try again later).
	Setting Setting
	// Msg says what happened and what to do, naming the setting.
	Msg string
	// Code is the SMTP reply code when the server refused (e.g. 535), or 0.
	Code int
	// Err is the underlying error, if any.
	Err error
}

// Error returns the message.
func (e *Error) Error() string { return e.Msg }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the server refused for now (a 4xx reply):
// the same settings may work later.
func (e *Error) Temporary() bool { return e.Code >= 400 && e.Code < 500 }

// stage is where in the exchange a failure happened.
type stage int

const (
	stageDial stage = iota
	stageHandshake
	stageGreeting
	stageStartTLS
	stageAuth
	stageMail
	stageRcpt
	stageData
)

// classify turns a failure at stage into an *Error naming the setting.
func classify(s Settings, st stage, err error) *Error {
	var me *Error
	if errors.As(err, &me) {
		return me
	}
	e := &Error{Err: err}
	var tp *textproto.Error
	if errors.As(err, &tp) {
		e.Code = tp.Code
		reply := fmt.Sprintf("%d %s", tp.Code, printable(tp.Msg))
		switch {
		case tp.Code >= 400 && tp.Code < 500:
			e.Setting = SettingNone
			e.Msg = fmt.Sprintf("the SMTP server %s refused for now (%s): try again in a few minutes", s.Server, reply)
			if st == stageAuth {
				e.Msg = fmt.Sprintf("the SMTP server %s could not check the login for now (%s): try again in a few minutes; if it persists, check the user name and password", s.Server, reply)
			}
		case st == stageAuth || tp.Code == 530 || tp.Code == 535 || tp.Code == 534 || strings.HasPrefix(tp.Msg, "5.7.8 "):
			e.Setting = SettingLogin
			e.Msg = fmt.Sprintf("the SMTP server %s refused the login of %q (%s): check the user name and password", s.Server, s.User, reply)
		case st == stageMail:
			e.Setting = SettingSender
			e.Msg = fmt.Sprintf("the SMTP server %s refused the sender %s (%s): check the sender address (many servers require the user name's own address)", s.Server, s.From, reply)
		case st == stageRcpt:
			e.Setting = SettingRecipient
			e.Msg = fmt.Sprintf("the SMTP server %s refused the recipient %s (%s): check the recovery e-mail address", s.Server, s.To, reply)
		case st == stageData:
			e.Setting = SettingSender
			e.Msg = fmt.Sprintf("the SMTP server %s refused the message (%s): check the sender address and the user name", s.Server, reply)
		default:
			e.Setting = SettingServer
			e.Msg = fmt.Sprintf("the SMTP server %s refused the connection (%s): check the SMTP server and port", s.Server, reply)
		}
		return e
	}
	var (
		unknownCA *x509.UnknownAuthorityError
		badName   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		ne        net.Error
	)
	host, _ := s.host()
	switch {
	case errors.As(err, &badName):
		e.Setting = SettingCertificate
		e.Msg = fmt.Sprintf("the SMTP server's certificate is not for %s (%v): check the SMTP server name, it must be the name on the server's certificate", host, printable(badName.Error()))
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &verify):
		e.Setting = SettingCertificate
		e.Msg = fmt.Sprintf("the SMTP server %s has a certificate this DVR does not trust (%v): check the SMTP server name, and that the DVR's date is set", s.Server, printable(err.Error()))
	case errors.As(err, &record):
		e.Setting = SettingSSL
		e.Msg = fmt.Sprintf("the SMTP server %s did not answer with TLS: check the SSL setting (%s chosen; port 465 is usually TLS, 587 and 25 STARTTLS)", s.Server, s.SSL)
	case errors.As(err, &ne) && ne.Timeout():
		e.Setting = SettingServer
		e.Msg = fmt.Sprintf("no answer from the SMTP server %s in time: check the SMTP server and port", s.Server)
		if st == stageGreeting || st == stageHandshake {
			e.Setting = SettingSSL
			e.Msg = fmt.Sprintf("the SMTP server %s did not greet in time: check the SSL setting (%s chosen; a port 465 server waits for TLS) and the port", s.Server, s.SSL)
		}
	case st == stageDial:
		e.Setting = SettingServer
		e.Msg = fmt.Sprintf("cannot reach the SMTP server %s (%v): check the SMTP server and port, and the DVR's network", s.Server, printable(err.Error()))
	case st == stageHandshake || st == stageStartTLS:
		e.Setting = SettingSSL
		e.Msg = fmt.Sprintf("the TLS handshake with the SMTP server %s failed (%v): check the SSL setting (%s chosen) and the port", s.Server, printable(err.Error()), s.SSL)
	default:
		e.Setting = SettingServer
		e.Msg = fmt.Sprintf("the SMTP exchange with %s failed (%v): check the SMTP server and port", s.Server, printable(err.Error()))
	}
	return e
}

// maxReply is how much of a server's reply a message quotes.
const maxReply = 120

// printable is a server's reply text as quoted to the owner: the server is
// not trusted, so control and non-ASCII characters become '?' and the text
// is cut to maxReply bytes.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c >= 0x7f {
			b[i] = '?'
		}
	}
	if len(b) > maxReply {
		return string(b[:maxReply]) + "..."
	}
	return string(b)
}
