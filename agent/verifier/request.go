package verifier

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/state"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

// ReadMono reads the monotonic clock of a Linux DVR: the first field of
// /proc/uptime (seconds since boot, CLOCK_BOOTTIME, counting suspend) and
// /proc/sys/kernel/random/boot_id (a random UUID the kernel draws at each
// boot). Neither can be set from user space.
func ReadMono() (Mono, error) {
	var m Mono
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return m, fmt.Errorf("boot id: %w", err)
	}
	id, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(b)), "-", ""))
	if err != nil || len(id) != 16 {
		return m, fmt.Errorf("boot id %q: expected a UUID", bytes.TrimSpace(b))
	}
	copy(m.Boot[:], id)
	u, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return m, fmt.Errorf("uptime: %w", err)
	}
	f, _, _ := strings.Cut(string(u), " ")
	sec, err := strconv.ParseFloat(f, 64)
	if err != nil || sec < 0 {
		return m, fmt.Errorf("/proc/uptime %q: expected seconds since boot", f)
	}
	m.Uptime = time.Duration(sec * float64(time.Second))
	return m, nil
}

// Request makes a fresh request code, shows it by returning it, and keeps
// its nonce in the state: it replaces any request code shown before, whose
// answer is then refused. A challenge-bound code for it is accepted once,
// within RequestLifetime of the monotonic clock, until the DVR restarts.
func (v *Verifier) Request(c Clock) (string, Result) {
	var code string
	r := v.edit(c, RequestCodeKind, func(st *state.State) Result {
		n, err := voicecode.NewNonce(rand.Reader, voicecode.RequestNonceBits)
		if err != nil {
			return Result{Outcome: Internal, Err: err, Message: err.Error()}
		}
		st.Request, st.Nonce, st.RequestAt = true, n, c.Mono.Uptime
		code = voicecode.FormatRequestCode(n)
		return Result{Outcome: Accepted, Message: "request code " + code + ": read it and the serial number to the hotline; it is valid for 24 hours and until a new one is shown or the DVR restarts"}
	})
	return code, r
}

// RecoveryCode makes a one-time recovery code, hands it to send (which
// e-mails it; nil when the caller mails it itself after this returns),
// and keeps only its tag in the state. It refuses with Throttled within
// MailInterval of the last one; when send fails, the outcome is MailFailed
// and the state is unchanged. send runs under the state lock and before
// the save: a failed send (or a power cut during it) leaves the state as it
// was, and two calls at once never both mail. A cut after the send and
// before the save leaves a mailed code that was never recorded, which is
// refused: the failure is on the side of no access.
func (v *Verifier) RecoveryCode(c Clock, send func(code string) error) (string, Result) {
	var code string
	r := v.edit(c, RecoveryCode, func(st *state.State) Result {
		if st.Mail && (c.Mono.Uptime-st.MailAt < MailInterval || !c.Now.Before(st.MailWall) && c.Now.Sub(st.MailWall) < MailInterval) {
			return Result{Outcome: Throttled, Err: errors.New("throttled"),
				Message: fmt.Sprintf("a recovery e-mail was sent less than %s ago: check the mailbox (and its spam folder), or try again later", MailInterval)}
		}
		rv, err := voicecode.NewNonce(rand.Reader, voicecode.RecoveryBits)
		if err != nil {
			return Result{Outcome: Internal, Err: err, Message: err.Error()}
		}
		code = voicecode.FormatRecoveryCode(rv)
		if send != nil {
			if err := send(code); err != nil {
				code = ""
				return Result{Outcome: MailFailed, Err: err, Message: err.Error() + "; nothing was changed"}
			}
		}
		st.Recovery, st.RecoveryTag, st.RecoveryAt = true, v.key.RecoveryTag(v.serial, rv), c.Mono.Uptime
		st.Mail, st.MailAt, st.MailWall = true, c.Mono.Uptime, c.Now
		return Result{Outcome: Accepted, ExpiresAt: c.Now.Add(RecoveryLifetime),
			Message: "a recovery code was sent to the recovery e-mail address: type it within 30 minutes"}
	})
	if r.Outcome == StateUnwritable && send != nil && code != "" {
		// The mail went out before the save failed: the code it carries
		// was never recorded, so it will be refused.
		r.Message += "; the e-mail just sent carries a code that will not work"
	}
	if r.Outcome != Accepted {
		code = ""
	}
	return code, r
}

// RequestCodeKind is the Kind of a Request call's result.
const RequestCodeKind Kind = "request-code"

// edit runs change on the state (rebased to c's boot) under the lock and
// saves it when change accepts; a refusal leaves the state as it was.
func (v *Verifier) edit(c Clock, kind Kind, change func(*state.State) Result) Result {
	s, st, refused := v.lockAndLoad(kind)
	if refused != nil {
		return *refused
	}
	defer s.Close()
	st = rebase(st, c.Mono, c.Now, v.lockout)
	st.SavedAt = c.Mono.Uptime
	r := change(&st)
	r.Kind = kind
	if r.Outcome == Accepted {
		if err := s.Save(st); err != nil {
			return stateUnwritable(kind, err, "nothing was made")
		}
	}
	return r
}
