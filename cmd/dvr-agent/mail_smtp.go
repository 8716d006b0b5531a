//go:build smtp

package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/mailer"
	"github.com/dvrhotline/hotline/agent/verifier"
)

// mailBuilt says whether this build sends the recovery e-mail itself.
const mailBuilt = true

// maxSecretFile bounds what is read from the password and CA files.
const maxSecretFile = 1 << 20

// newMailer checks the SMTP settings and returns the function that
// e-mails a recovery code to recipient, or the outcome and message that
// refuse. Nothing is dialled until the code is made.
func newMailer(f mailFlags, recipient, serial string, stdin io.Reader) (func(code string, now time.Time) error, verifier.Outcome, string) {
	s := mailer.Settings{Server: f.server, SSL: mailer.SSL(f.ssl), User: f.user, From: f.from, To: recipient}
	if f.passwordFile != "" {
		var b []byte
		var err error
		if f.passwordFile == "-" {
			b, err = io.ReadAll(io.LimitReader(stdin, maxSecretFile))
		} else {
			b, err = readLimited(f.passwordFile)
		}
		if err != nil {
			return nil, verifier.ConfigUnreadable, fmt.Sprintf("--smtp-password-file: %v", err)
		}
		pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		s.Password = mailer.Password(pw)
	}
	if f.ca != "" {
		b, err := readLimited(f.ca)
		if err != nil {
			return nil, verifier.ConfigUnreadable, fmt.Sprintf("--smtp-ca: %v", err)
		}
		s.RootCAs = x509.NewCertPool()
		if !s.RootCAs.AppendCertsFromPEM(b) {
			return nil, verifier.ConfigUnreadable, fmt.Sprintf("--smtp-ca %s: no PEM certificate in it", f.ca)
		}
	}
	s, err := s.Check()
	if err != nil {
		var me *mailer.Error
		if errors.As(err, &me) && me.Setting == mailer.SettingRecipient && strings.TrimSpace(recipient) == "" {
			return nil, verifier.RecoveryNotSet, err.Error()
		}
		return nil, verifier.MailFailed, err.Error() + "; nothing was changed"
	}
	return func(code string, now time.Time) error {
		return mailer.Send(context.Background(), s, mailer.Message{Serial: serial, Model: f.model, Code: code, Valid: verifier.RecoveryLifetime, Date: now})
	}, verifier.Accepted, ""
}

// readLimited reads a small file whole.
func readLimited(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return io.ReadAll(io.LimitReader(fh, maxSecretFile))
}
