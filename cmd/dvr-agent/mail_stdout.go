//go:build !smtp

package main

import (
	"io"
	"time"

	"github.com/dvrhotline/hotline/agent/verifier"
)

// mailBuilt says whether this build sends the recovery e-mail itself.
const mailBuilt = false

// newMailer is the mailer of a build without the smtp tag: there is none.
// net/smtp and crypto/tls do not fit the armv7 size budget, so the
// default build hands the code over on standard output only.
func newMailer(mailFlags, string, string, io.Reader) (func(code string, now time.Time) error, verifier.Outcome, string) {
	return nil, verifier.MailNotBuilt, "this build hands the code over on standard output only: pass --stdout, or use the smtp build (go build -tags smtp)"
}
