package mailer

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/smtp"
	"strings"
)

// Send checks s, composes the recovery e-mail m and sends it. Every
// failure is an *Error naming the setting to check; nothing is sent
// unencrypted except to a loopback server.
func Send(ctx context.Context, s Settings, m Message) error {
	s, err := s.Check()
	if err != nil {
		return err
	}
	msg, err := Compose(s, m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	return send(ctx, s, msg)
}

func send(ctx context.Context, s Settings, msg []byte) error {
	host, _ := s.host()
	cfg := &tls.Config{ServerName: host, RootCAs: s.RootCAs, MinVersion: tls.VersionTLS12}
	d := net.Dialer{Timeout: s.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", s.Server)
	if err != nil {
		return classify(s, stageDial, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if s.SSL == TLS {
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return classify(s, stageHandshake, err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return classify(s, stageGreeting, err)
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return classify(s, stageGreeting, err)
	}
	if s.SSL == StartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return &Error{Setting: SettingSSL, Msg: "the SMTP server " + s.Server + " does not offer STARTTLS, and the recovery code is never sent unencrypted: check the SSL setting (TLS for port 465) and the SMTP server"}
		}
		if err := c.StartTLS(cfg); err != nil {
			return classify(s, stageStartTLS, err)
		}
	}
	if s.User != "" {
		a, err := chooseAuth(c, s, host)
		if err != nil {
			return err
		}
		if err := c.Auth(a); err != nil {
			return classify(s, stageAuth, err)
		}
	}
	if err := c.Mail(s.From); err != nil {
		return classify(s, stageMail, err)
	}
	if err := c.Rcpt(s.To); err != nil {
		return classify(s, stageRcpt, err)
	}
	w, err := c.Data()
	if err != nil {
		return classify(s, stageData, err)
	}
	if _, err := w.Write(msg); err != nil {
		return classify(s, stageData, err)
	}
	if err := w.Close(); err != nil {
		return classify(s, stageData, err)
	}
	// The server has taken the message; a failed QUIT changes nothing.
	c.Quit()
	return nil
}

// chooseAuth picks AUTH PLAIN, else LOGIN, from what the server offers.
func chooseAuth(c *smtp.Client, s Settings, host string) (smtp.Auth, error) {
	if _, tlsOn := c.TLSConnectionState(); !tlsOn {
		return nil, &Error{Setting: SettingSSL, Msg: "a login is sent over TLS only: choose TLS or STARTTLS"}
	}
	ok, mechs := c.Extension("AUTH")
	if !ok {
		return nil, &Error{Setting: SettingLogin, Msg: "the SMTP server " + s.Server + " offers no login, but a user name is set: clear the user name, or check the SMTP server and port (587 or 465 usually take a login)"}
	}
	for _, m := range strings.Fields(strings.ToUpper(mechs)) {
		if m == "PLAIN" {
			return smtp.PlainAuth("", s.User, string(s.Password), host), nil
		}
	}
	for _, m := range strings.Fields(strings.ToUpper(mechs)) {
		if m == "LOGIN" {
			return &loginAuth{user: s.User, password: string(s.Password), host: host}, nil
		}
	}
	return nil, &Error{Setting: SettingLogin, Msg: "the SMTP server " + s.Server + " offers only the login methods " + mechs + "; this DVR speaks PLAIN and LOGIN: check the SMTP server"}
}

// loginAuth is AUTH LOGIN (the user name, then the password, each
// base64-encoded by net/smtp), which servers that lack PLAIN still offer.
type loginAuth struct {
	user, password, host string
	step                 int
}

func (a *loginAuth) Start(si *smtp.ServerInfo) (string, []byte, error) {
	if !si.TLS {
		return "", nil, errors.New("AUTH LOGIN over an unencrypted connection refused")
	}
	if si.Name != a.host {
		return "", nil, errors.New("AUTH LOGIN for the wrong host name")
	}
	return "LOGIN", nil, nil
}

func (a *loginAuth) Next(from []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	a.step++
	prompt := strings.ToLower(strings.TrimSpace(string(from)))
	switch {
	case a.step == 1 && strings.HasPrefix(prompt, "user"):
		return []byte(a.user), nil
	case a.step == 2 && strings.HasPrefix(prompt, "pass"):
		return []byte(a.password), nil
	}
	return nil, errors.New("unexpected AUTH LOGIN prompt " + string(from))
}
