// Package verifier decides, offline on the DVR, whether a temporary password
// (a voice code or a signed grant) opens this device.
//
// Verify checks, in this order, and stops at the first refusal:
//
//  1. the clock: before the build-date floor it is "clock not set";
//  2. the form: a grant is a JWT ("ey..." with two dots), anything else is a
//     voice code; a voice code whose check symbol fails is a typo, refused
//     without touching the state and not counted;
//  3. the lockout: while locked, nothing is checked;
//  4. the failed attempt is recorded before the check (see below);
//  5. the MAC (voice code) or signature, key and device (grant): wrong is a
//     failed attempt, and the record from step 4 stands;
//  6. expiry, not-yet-valid, then supersession: a credential is accepted only
//     if its (slot, seq8) is greater than the last accepted one's;
//  7. acceptance is saved (watermark moved, failure counter reset) before
//     Verify reports success; if the save fails, the credential is refused.
//
// # Counting before checking
//
// A failed attempt is written to the state file before the MAC or signature
// is checked, and taken back after a genuine credential. Counting only after
// a wrong answer would let an attacker cut the power between the answer and
// the write (the IP-Box attack on phone PINs) and guess forever.
//
// # Voice codes and grants are one credential
//
// A grant's (Slot, Sequence mod 256) is its watermark key, the same as the
// voice code of the same issuance: using either one kills the other.
//
// # Lockout
//
// After Lockout.Threshold consecutive failed attempts (default 5) the device
// locks for Lockout.Base (5 minutes); each further failed attempt after a
// lock doubles it (10, 20, 40 minutes...), capped at Lockout.Max (24 hours).
// Dahua locks 5 tries for 5 minutes, Hikvision 7 for 30; the doubling makes
// a year of guessing worth about 400 tries against a 45-bit MAC.
// Typos, expired, not-yet-valid and already-used credentials are not failed
// attempts: they are genuine or harmless. Acceptance resets the counter.
//
// # Clock
//
// The build date (set at link time in BuildDate) is the floor: a clock before
// it is not set and gets ClockNotSet with no state change. A genuine voice
// code or grant issued later than the clock (beyond the skew allowance) is
// NotYetValid: the DVR's clock is behind.
package verifier

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/serial"
	"github.com/dvrhotline/hotline/agent/state"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

// BuildDate is the agent's build date as YYYY-MM-DD, the floor below which
// the device clock counts as not set. Firmware builds set it to their
// release date:
//
//	go build -ldflags "-X github.com/dvrhotline/hotline/agent/verifier.BuildDate=2026-03-01"
var BuildDate = "2026-01-01"

// Floor returns BuildDate as a time (midnight UTC), or an error if the
// build set it wrongly.
func Floor() (time.Time, error) {
	t, err := time.Parse("2006-01-02", BuildDate)
	if err != nil {
		return time.Time{}, fmt.Errorf("build date %q: expected YYYY-MM-DD (set with -ldflags -X): %v", BuildDate, err)
	}
	return t, nil
}

// Lockout is the throttling of failed attempts.
type Lockout struct {
	// Threshold is the number of consecutive failed attempts that locks.
	Threshold uint32
	// Base is the first lock's length; each further failed attempt doubles it.
	Base time.Duration
	// Max caps the lock's length.
	Max time.Duration
}

// DefaultLockout: 5 attempts, then 5 minutes doubling up to 24 hours.
var DefaultLockout = Lockout{Threshold: 5, Base: 5 * time.Minute, Max: 24 * time.Hour}

// Duration returns how long the device locks after the given number of
// consecutive failed attempts (0 below the threshold).
func (l Lockout) Duration(failures uint32) time.Duration {
	if failures < l.Threshold {
		return 0
	}
	d := l.Base
	for i := l.Threshold; i < failures && d < l.Max; i++ {
		if d > l.Max/2 {
			return l.Max // doubling would pass Max (or overflow)
		}
		d *= 2
	}
	return min(d, l.Max)
}

// Kind says which form a credential came in.
type Kind string

// Kinds.
const (
	VoiceCode Kind = "voice-code"
	Grant     Kind = "grant"
	// BoundCode is a voice code bound to the request code on show
	// (format version 2), judged without the wall clock.
	BoundCode Kind = "bound-code"
	// RecoveryCode is the code the DVR e-mailed to its recovery address.
	RecoveryCode Kind = "recovery-code"
)

// Config configures a Verifier.
type Config struct {
	// Serial is the device's serial; New canonicalises it.
	Serial string
	// Key is the device key the factory flashed.
	Key voicecode.DeviceKey
	// Trust holds the grant issuers' public keys.
	Trust *grant.TrustSet
	// StateDir is the directory of the replay and lockout state; it must
	// exist.
	StateDir string
	// Lockout is the throttling policy; zero means DefaultLockout.
	Lockout Lockout
	// Floor is the earliest plausible clock; zero means BuildDate.
	Floor time.Time
	// Mono reads the monotonic clock (ReadMono on the DVR). Nil: the wall
	// clock stands in for it, which a clock that is set can move; only for
	// tests and callers that pass VerifyAt their own readings.
	Mono func() (Mono, error)
}

// Verifier verifies credentials for one device. Its methods may be called
// from several processes at once (the state is locked); within a process,
// one goroutine at a time.
type Verifier struct {
	_       [0]func() // holds a secret key: not comparable
	serial  string
	key     voicecode.DeviceKey
	trust   *grant.TrustSet
	lockout Lockout
	floor   time.Time
	mono    func() (Mono, error)
	open    func() (session, error)
}

// Format keeps the device key out of every %v and %+v of a Verifier
// (fmt prints unexported fields without calling their Format).
func (v *Verifier) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "verifier.Verifier{serial: %s, key: REDACTED}", v.serial)
}

// session is a locked, open state store: *state.Store, or a fake in tests.
type session interface {
	Load() (state.State, error)
	Save(state.State) error
	Close() error
}

// New returns a Verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	s, err := serial.Canonical(cfg.Serial)
	if err != nil {
		return nil, err
	}
	if cfg.Key.Generation() == 0 {
		return nil, errors.New("verifier: no device key")
	}
	if cfg.Trust == nil || cfg.Trust.Len() == 0 {
		return nil, errors.New("verifier: no trusted grant keys")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("verifier: no state directory")
	}
	v := &Verifier{serial: s, key: cfg.Key, trust: cfg.Trust, lockout: cfg.Lockout, floor: cfg.Floor, mono: cfg.Mono}
	if v.lockout == (Lockout{}) {
		v.lockout = DefaultLockout
	}
	if v.lockout.Threshold == 0 || v.lockout.Base <= 0 || v.lockout.Max < v.lockout.Base {
		return nil, fmt.Errorf("verifier: lockout policy %+v: expected a threshold of 1 or more and 0 < base <= max", v.lockout)
	}
	if v.floor.IsZero() {
		if v.floor, err = Floor(); err != nil {
			return nil, err
		}
	}
	if v.floor.Before(voicecode.Epoch) {
		v.floor = voicecode.Epoch
	}
	dir := cfg.StateDir
	v.open = func() (session, error) { return state.Open(dir) }
	return v, nil
}

// Serial returns the canonical serial the verifier is for.
func (v *Verifier) Serial() string { return v.serial }

// Result is what a verification found. Fields that do not apply are zero.
type Result struct {
	Outcome Outcome
	// Kind is the credential's form, when it could be told.
	Kind Kind
	// Message says what happened and what to do next, for the person at
	// the DVR.
	Message string
	// RetryAfter is when a locked-out device accepts attempts again.
	RetryAfter time.Time
	// IssuedAt and ExpiresAt are the credential's, once it proved genuine.
	IssuedAt, ExpiresAt time.Time
	// Slot and Sequence identify the issuance (Sequence is modulo 256 for a
	// voice code, the full number for a grant).
	Slot     uint64
	Sequence int64
	// Failures is the count of consecutive failed attempts after this one.
	Failures uint32
	// Err is the underlying cause of a refusal.
	Err error
}

// Error is a refusal: Verify returns one, with the same Outcome and Message
// as its Result.
type Error struct {
	Outcome Outcome
	Message string
	Err     error
}

// Error implements error.
func (e *Error) Error() string { return e.Outcome.String() + ": " + e.Message }

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// IsGrant reports whether input has the shape of a compact JWS: it starts
// with "ey" (base64 of '{"') and has exactly two dots. Everything else is
// treated as a voice code.
func IsGrant(input string) bool {
	return strings.HasPrefix(input, "ey") && strings.Count(input, ".") == 2
}

// Mono is a reading of the DVR's monotonic clock: the time since boot
// (CLOCK_BOOTTIME, /proc/uptime) and the boot it is counted from
// (/proc/sys/kernel/random/boot_id). It cannot be set; it restarts at
// every boot, which the boot id tells.
type Mono struct {
	Boot   [16]byte
	Uptime time.Duration
}

// Clock is what a verification knows of time: the wall clock, which anyone
// holding the DVR may set, and the monotonic clock, which nobody can.
type Clock struct {
	Now  time.Time
	Mono Mono
}

// Lifetimes measured on the monotonic clock, and the e-mail throttle.
const (
	// RequestLifetime is how long a request code stays answerable.
	RequestLifetime = 24 * time.Hour
	// RecoveryLifetime is how long an e-mailed recovery code is accepted.
	RecoveryLifetime = 30 * time.Minute
	// MailInterval is the least time between two recovery e-mails.
	MailInterval = 5 * time.Minute
)

// clock returns the Clock for wall time now: the monotonic reading of
// cfg.Mono, or, without one, the wall clock standing in for it (Boot zero).
func (v *Verifier) clock(now time.Time) (Clock, error) {
	if v.mono == nil {
		return Clock{Now: now, Mono: Mono{Uptime: time.Duration(max(now.UnixMilli(), 0)) * time.Millisecond}}, nil
	}
	m, err := v.mono()
	return Clock{Now: now, Mono: m}, err
}

// Verify verifies input, typed or pasted by the user, at wall time now and
// the monotonic clock of Config.Mono. It returns the Result and, unless the
// outcome is Accepted, an *Error.
func (v *Verifier) Verify(input string, now time.Time) (Result, error) {
	c, err := v.clock(now)
	if err != nil {
		r := Result{Outcome: Internal, Err: err, Message: "the DVR's monotonic clock cannot be read: " + err.Error()}
		return r, &Error{Outcome: r.Outcome, Message: r.Message, Err: err}
	}
	return v.VerifyAt(input, c)
}

// VerifyAt is Verify at the given clock readings.
func (v *Verifier) VerifyAt(input string, c Clock) (Result, error) {
	r := v.verify(strings.TrimSpace(input), c)
	if r.Outcome == Accepted {
		return r, nil
	}
	return r, &Error{Outcome: r.Outcome, Message: r.Message, Err: r.Err}
}

// check is one credential's proof, run after the attempt is recorded, with
// the state as loaded. It reports whether the attempt stays counted as
// failed: a wrong MAC, signature, key or device.
type check func(st state.State) (failed bool, r Result)

func (v *Verifier) verify(in string, c Clock) Result {
	now := c.Now
	if len(in) > grant.MaxTokenLen {
		return Result{Outcome: Malformed, Message: fmt.Sprintf("the input is %d characters long: neither a code nor a grant; check it and enter it again (not counted as a failed attempt)", len(in))}
	}
	timed := true // judged by the wall clock: a grant or a version 1 voice code
	kind := VoiceCode
	var chk check
	switch n := voicecode.Symbols(in); {
	case IsGrant(in):
		kind = Grant
		chk = func(st state.State) (bool, Result) { return v.checkGrant(in, v.judgeAt(st, now)) }
	case n == voicecode.RequestLength:
		return Result{Outcome: Malformed, Kind: kind, Message: "this is the request code the DVR shows: read it to the hotline, then type the code they give you (not counted as a failed attempt)"}
	case n == voicecode.RecoveryLength:
		kind, timed = RecoveryCode, false
		rv, err := voicecode.ParseRecoveryCode(in)
		if err != nil {
			return v.malformed(kind, err, now)
		}
		chk = func(st state.State) (bool, Result) { return v.checkRecovery(rv, st, c.Mono) }
	default:
		code, err := voicecode.Decode(in)
		if err != nil {
			return v.malformed(kind, err, now)
		}
		if code.Version == voicecode.BoundVersion {
			kind, timed = BoundCode, false
			chk = func(st state.State) (bool, Result) { return v.checkBound(code, st, c.Mono) }
		} else {
			chk = func(st state.State) (bool, Result) { return v.checkVoice(code, v.judgeAt(st, now)) }
		}
	}
	if timed && now.Before(v.floor) {
		return v.clockNotSet(kind, now)
	}
	return v.withState(c, kind, timed, chk)
}

func (v *Verifier) clockNotSet(kind Kind, now time.Time) Result {
	{
		return Result{Outcome: ClockNotSet, Kind: kind, Err: voicecode.ErrClockNotSet,
			Message: fmt.Sprintf("the DVR's clock (%s) is not set: it is before this firmware's build date %s; set the date and time, or ask the hotline for a code for the request code on the screen", now.UTC().Format("2006-01-02 15:04 MST"), v.floor.Format("2006-01-02"))}
	}
}

// malformed is the refusal of input that is no credential; on a clock that
// is not set, the clock is what the owner must hear about first.
func (v *Verifier) malformed(kind Kind, err error, now time.Time) Result {
	if now.Before(v.floor) {
		return v.clockNotSet(kind, now)
	}
	msg := err.Error()
	var de *voicecode.DecodeError
	if errors.As(err, &de) {
		msg = de.Reason
	}
	return Result{Outcome: Malformed, Kind: kind, Err: err, Message: msg + " (not counted as a failed attempt)"}
}

// judgeAt is the time a time-based credential is judged at: the clock, or
// the latest time learnt when that is later (by at most the skew, or the
// credential never gets this far). An expired code stays expired however
// the clock moves.
func (v *Verifier) judgeAt(st state.State, now time.Time) time.Time {
	if st.Learnt.After(now) {
		return st.Learnt
	}
	return now
}

// rebase makes st's monotonic fields refer to the boot of m. After a
// reboot the request code and a pending recovery code are void, a lock
// keeps what was left of it as of the last save on the old boot (counting
// from this boot's start), and the mail throttle counts from this boot's
// start. A version 1 lock (wall clock only) becomes a monotonic one.
func rebase(st state.State, m Mono, now time.Time, l Lockout) state.State {
	if st.LockLeft == 0 && !st.LockedUntil.IsZero() {
		st.LockLeft = min(max(st.LockedUntil.Sub(now), 0), l.Duration(st.Failures))
		st.LockStart = m.Uptime
	}
	if st.Boot != m.Boot {
		st.Boot = m.Boot
		st.LockLeft = max(st.LockLeft-max(st.SavedAt-st.LockStart, 0), 0)
		st.LockStart = 0
		st.Request, st.Nonce, st.RequestAt = false, 0, 0
		st.Recovery, st.RecoveryTag, st.RecoveryAt = false, [32]byte{}, 0
		st.MailAt = 0
	}
	return st
}

// lockLeft returns how long st stays locked at m, and clears an ended lock.
func lockLeft(st *state.State, m Mono) time.Duration {
	left := min(st.LockLeft-(m.Uptime-st.LockStart), st.LockLeft)
	if st.LockLeft == 0 || left <= 0 {
		st.LockLeft, st.LockStart, st.LockedUntil = 0, 0, time.Time{}
		return 0
	}
	return left
}

// lockAndLoad takes the state lock and loads the state; the refusal, when
// either fails, is the result to answer (nothing held then). The caller
// closes the session.
func (v *Verifier) lockAndLoad(kind Kind) (session, state.State, *Result) {
	s, err := v.open()
	if err != nil {
		r := stateUnreadable(kind, err)
		if errors.Is(err, state.ErrBusy) {
			r = Result{Outcome: StateBusy, Kind: kind, Err: err, Message: "another verification is running: " + err.Error() + "; try again in a moment"}
		}
		return nil, state.State{}, &r
	}
	st, err := s.Load()
	if err != nil {
		s.Close()
		r := stateUnreadable(kind, err)
		return nil, state.State{}, &r
	}
	return s, st, nil
}

// withState runs chk under the state lock: the clock learnt, the lockout,
// then the failed attempt recorded, then chk, then the outcome recorded.
func (v *Verifier) withState(c Clock, kind Kind, timed bool, chk check) Result {
	now, m := c.Now, c.Mono
	s, loaded, refused := v.lockAndLoad(kind)
	if refused != nil {
		return *refused
	}
	defer s.Close()
	if timed && now.Before(loaded.Learnt.Add(-voicecode.Skew)) {
		return Result{Outcome: ClockMovedBack, Kind: kind, Err: errClockBack,
			Message: fmt.Sprintf("the DVR's clock (%s) is earlier than a time it has already seen (%s): it was set back; set the date and time, or ask the hotline for a code for the request code on the screen (not counted as a failed attempt)",
				now.UTC().Format("2006-01-02 15:04 MST"), loaded.Learnt.Format("2006-01-02 15:04 MST"))}
	}
	st := rebase(loaded, m, now, v.lockout)
	if left := lockLeft(&st, m); left > 0 {
		r := Result{Outcome: LockedOut, Kind: kind, RetryAfter: now.Add(left), Failures: st.Failures,
			Message: fmt.Sprintf("locked out after %d failed attempts until %s; try again then", st.Failures, when(now.Add(left), now))}
		// Note the time served, at most once a minute, so that a reboot
		// keeps what was left of the lock rather than starting it again.
		if st.Boot != loaded.Boot || st.LockLeft != loaded.LockLeft || m.Uptime-loaded.SavedAt > time.Minute {
			st.SavedAt = m.Uptime
			if err := s.Save(st); err != nil {
				return stateUnwritable(kind, err, "nothing was checked")
			}
		}
		return r
	}
	st.SavedAt = m.Uptime
	if timed && now.After(st.Learnt) {
		st.Learnt = now.UTC().Truncate(time.Second)
	}

	// Record the attempt as failed before checking it.
	failed := st
	failed.Failures = sat(st.Failures + 1)
	if d := v.lockout.Duration(failed.Failures); d > 0 {
		failed.LockStart, failed.LockLeft, failed.LockedUntil = m.Uptime, d, now.Add(d)
	}
	if err := s.Save(failed); err != nil {
		return stateUnwritable(kind, err, "nothing was checked")
	}

	failedAttempt, r := chk(st)
	r.Kind = kind
	if failedAttempt {
		r.Failures = failed.Failures
		if failed.LockLeft > 0 {
			r.RetryAfter = failed.LockedUntil
			r.Message += fmt.Sprintf("; %d failed attempts: locked out until %s, try again then", failed.Failures, when(failed.LockedUntil, now))
		} else {
			r.Message += fmt.Sprintf(" (%d of %d failed attempts before a lockout)", failed.Failures, v.lockout.Threshold)
		}
		return r
	}
	if r.Outcome == Accepted {
		next := st
		next.Failures = 0
		switch kind {
		case RecoveryCode: // a local credential: the watermark stays
			next.Recovery, next.RecoveryTag, next.RecoveryAt = false, [32]byte{}, 0
		case BoundCode:
			// The code was issued after the request was made, so the issue
			// time is a true time, and any later time learnt a wrong clock.
			next.Request, next.Nonce, next.RequestAt = false, 0, 0
			next.Learnt = r.IssuedAt
			fallthrough
		default:
			next.Slot, next.Seq8 = r.Slot, uint8(r.Sequence)
			if r.IssuedAt.After(next.Learnt) {
				next.Learnt = r.IssuedAt
			}
		}
		if kind != RecoveryCode && !newer(next, st) {
			r.Outcome, r.Err = AlreadyUsed, errAlreadyUsed
			r.Message = "this password was already used, or a newer one was accepted since; ask the hotline for a new one"
		} else {
			if err := s.Save(next); err != nil {
				return stateUnwritable(kind, err, "the password was genuine but is not accepted because its use could not be recorded")
			}
			return r
		}
	}
	// Genuine but refused (expired, not yet valid, used, malformed grant
	// claims, no request on show): take the recorded failure back.
	r.Failures = st.Failures
	if err := s.Save(st); err != nil {
		r.Message += "; also, the state could not be saved: " + err.Error()
	}
	return r
}

var (
	errAlreadyUsed = errors.New("already used or superseded")
	errClockBack   = errors.New("clock earlier than a time already seen")
	errNoRequest   = errors.New("no live request code")
)

// newer reports whether a's watermark is greater than b's.
func newer(a, b state.State) bool {
	return a.Slot > b.Slot || a.Slot == b.Slot && a.Seq8 > b.Seq8
}

func sat(n uint32) uint32 {
	if n == 0 {
		return ^uint32(0)
	}
	return n
}

func stateUnreadable(kind Kind, err error) Result {
	return Result{Outcome: StateUnreadable, Kind: kind, Err: err,
		Message: "the agent's replay and lockout state cannot be read: " + err.Error() + "; nothing was checked; the DVR needs service (do not delete the state: that would re-open used passwords)"}
}

func stateUnwritable(kind Kind, err error, what string) Result {
	return Result{Outcome: StateUnwritable, Kind: kind, Err: err,
		Message: "the agent's state cannot be saved: " + err.Error() + "; " + what + "; the DVR needs service"}
}

// when formats t for a message: the time of day in UTC, with the date when
// it is not today's.
func when(t, now time.Time) string {
	t = t.UTC()
	if r := t.Truncate(time.Minute); r.Before(t) {
		t = r.Add(time.Minute) // round up: never tell someone to retry too early
	}
	if t.Format("2006-01-02") == now.UTC().Format("2006-01-02") {
		return t.Format("15:04 MST")
	}
	return t.Format("2006-01-02 15:04 MST")
}

func (v *Verifier) checkBound(c voicecode.Code, st state.State, m Mono) (bool, Result) {
	if !st.Request || m.Uptime-st.RequestAt >= RequestLifetime {
		return false, Result{Outcome: NoRequest, Err: errNoRequest,
			Message: "no request code is on show for this code (it was answered already, replaced, more than 24 hours old, or the DVR restarted): show a new request code and read it to the hotline (not counted as a failed attempt)"}
	}
	f, err := c.VerifyBound(v.key, v.serial, st.Nonce)
	if err != nil {
		return true, Result{Outcome: WrongCode, Err: err, Message: "wrong code: it is not a code for this DVR and the request code " + voicecode.FormatRequestCode(st.Nonce) + " on its screen; check the serial number and the request code you gave the hotline"}
	}
	return false, Result{Outcome: Accepted, IssuedAt: f.IssuedAt, Slot: f.Slot, Sequence: int64(f.Seq8),
		Message: fmt.Sprintf("accepted: temporary password for request code %s issued %s (sequence %d); now set a new admin password, and the DVR's date and time", voicecode.FormatRequestCode(st.Nonce), f.IssuedAt.Format("2006-01-02 15:04 MST"), f.Seq8)}
}

func (v *Verifier) checkRecovery(rv uint64, st state.State, m Mono) (bool, Result) {
	if !st.Recovery || m.Uptime-st.RecoveryAt >= RecoveryLifetime {
		return false, Result{Outcome: Expired, Err: voicecode.ErrExpired,
			Message: "no e-mailed recovery code is pending (it was used, is more than 30 minutes old, was replaced, or the DVR restarted): send a new one (not counted as a failed attempt)"}
	}
	tag := v.key.RecoveryTag(v.serial, rv)
	if subtle.ConstantTimeCompare(tag[:], st.RecoveryTag[:]) != 1 {
		return true, Result{Outcome: WrongCode, Err: voicecode.ErrWrongCode, Message: "wrong code: not the recovery code last e-mailed by this DVR; check the latest e-mail"}
	}
	return false, Result{Outcome: Accepted, Message: "accepted: the e-mailed recovery code; now set a new admin password"}
}

func (v *Verifier) checkVoice(c voicecode.Code, now time.Time) (bool, Result) {
	f, err := c.Verify(v.key, v.serial, now)
	if errors.Is(err, voicecode.ErrWrongCode) {
		return true, Result{Outcome: WrongCode, Err: err, Message: "wrong code: it is not a code for this DVR; check the serial number you gave the hotline"}
	}
	r := Result{IssuedAt: f.IssuedAt, ExpiresAt: f.ExpiresAt, Slot: f.Slot, Sequence: int64(f.Seq8), Err: err}
	switch {
	case err == nil:
		r.Outcome = Accepted
		r.Message = fmt.Sprintf("accepted: temporary password issued %s (sequence %d); now set a new admin password", f.IssuedAt.Format("2006-01-02 15:04 MST"), f.Seq8)
	case errors.Is(err, voicecode.ErrNotYetValid):
		r.Outcome = NotYetValid
		r.Message = fmt.Sprintf("this code was issued at %s, later than the DVR's clock (%s): set the DVR's date and time, then try again", f.IssuedAt.Format("2006-01-02 15:04 MST"), now.UTC().Format("2006-01-02 15:04 MST"))
	case errors.Is(err, voicecode.ErrExpired):
		r.Outcome = Expired
		r.Message = fmt.Sprintf("this code expired at %s; ask the hotline for a new one", f.ExpiresAt.Format("2006-01-02 15:04 MST"))
	case errors.Is(err, voicecode.ErrClockNotSet):
		r.Outcome = ClockNotSet
		r.Message = "the DVR's clock is not set; set the date and time, then try again"
	default:
		return true, Result{Outcome: Internal, Err: err, Message: "unexpected verification error: " + err.Error()}
	}
	return false, r
}

func (v *Verifier) checkGrant(tok string, now time.Time) (bool, Result) {
	c, err := v.trust.Verify(tok, v.serial, now)
	switch {
	case err == nil:
	case errors.Is(err, grant.ErrBadSignature), errors.Is(err, grant.ErrUnknownKey):
		return true, Result{Outcome: WrongCode, Err: err, Message: "this grant's signature is not from a key this DVR trusts: " + err.Error()}
	case errors.Is(err, grant.ErrWrongDevice):
		return true, Result{Outcome: WrongCode, Err: err, Message: "this grant was issued for another DVR; check the serial number you gave the hotline"}
	case errors.Is(err, grant.ErrExpired):
		return false, Result{Outcome: Expired, Err: err, Message: "this grant has expired; ask the hotline for a new one"}
	case errors.Is(err, grant.ErrNotYetValid):
		return false, Result{Outcome: NotYetValid, Err: err, Message: fmt.Sprintf("this grant is issued for later than the DVR's clock (%s): set the DVR's date and time, then try again", now.UTC().Format("2006-01-02 15:04 MST"))}
	default:
		// Malformed: syntax, or claims a genuine signer would never write.
		// Harmless, since nothing malformed is ever accepted: not counted.
		return false, Result{Outcome: Malformed, Err: err, Message: "not a valid grant: " + err.Error() + "; copy it again in full (not counted as a failed attempt)"}
	}
	r := Result{Outcome: Accepted, Slot: c.Slot, Sequence: c.Sequence, IssuedAt: c.IssuedAt.Time.UTC(), ExpiresAt: c.ExpiresAt.Time.UTC()}
	r.Message = fmt.Sprintf("accepted: grant issued %s (sequence %d); now set a new admin password", r.IssuedAt.Format("2006-01-02 15:04 MST"), c.Sequence)
	return false, r
}
