package verifier

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/state"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

var (
	y2000 = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	boot1 = Mono{Boot: [16]byte{1}, Uptime: time.Hour}
	boot2 = Mono{Boot: [16]byte{2}, Uptime: time.Minute}
)

// after returns m advanced by d.
func after(m Mono, d time.Duration) Mono { return Mono{Boot: m.Boot, Uptime: m.Uptime + d} }

func expectAt(tb testing.TB, v *Verifier, input string, c Clock, want Outcome) Result {
	tb.Helper()
	r, err := v.VerifyAt(input, c)
	if r.Outcome != want {
		tb.Fatalf("VerifyAt(%.40q) at %s, uptime %s = %s (%s), want %s", input, c.Now.Format(time.RFC3339), c.Mono.Uptime, r.Outcome, r.Message, want)
	}
	if (err == nil) != (want == Accepted) || r.Message == "" {
		tb.Fatalf("VerifyAt(%.40q): outcome %s, error %v, message %q", input, r.Outcome, err, r.Message)
	}
	return r
}

// request shows a request code at c and returns its nonce.
func request(tb testing.TB, v *Verifier, c Clock) uint64 {
	tb.Helper()
	code, r := v.Request(c)
	if r.Outcome != Accepted {
		tb.Fatalf("Request: %s: %s", r.Outcome, r.Message)
	}
	n, err := voicecode.ParseRequestCode(code)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func mintBound(tb testing.TB, at time.Time, seq int64, nonce uint64) string {
	tb.Helper()
	c, err := voicecode.MintBound(deviceKey(tb, testSerial), testSerial, at, seq, nonce)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestBoundCodeOnAClockAt2000: a DVR whose clock reads 2000-01-01 accepts
// the code bound to the request code it shows, once; not a code for another
// request code, not after its request was replaced, not a second time.
func TestBoundCodeOnAClockAt2000(t *testing.T) {
	v := newVerifier(t, "")
	c := Clock{Now: y2000, Mono: boot1}
	expectAt(t, v, mintCode(t, testSerial, t0, 1), c, ClockNotSet)

	n := request(t, v, c)
	expectAt(t, v, mintBound(t, t0, 1, n^1), c, WrongCode) // another request code's
	r := expectAt(t, v, mintBound(t, t0, 2, n), Clock{Now: y2000, Mono: after(boot1, time.Minute)}, Accepted)
	if r.Kind != BoundCode || r.Failures != 0 || !r.IssuedAt.Equal(voicecode.SlotStart(t0)) {
		t.Fatalf("accepted %+v", r)
	}
	expectAt(t, v, mintBound(t, t0, 2, n), c, NoRequest) // a second time
	expectAt(t, v, mintBound(t, t0, 3, n), c, NoRequest) // its request is answered

	old := request(t, v, c)
	request(t, v, c) // replaces it
	expectAt(t, v, mintBound(t, t0, 4, old), c, WrongCode)
}

func TestBoundCodeRefusedAfterRebootAnd24Hours(t *testing.T) {
	v := newVerifier(t, "")
	c := Clock{Now: y2000, Mono: boot1}
	n := request(t, v, c)
	expectAt(t, v, mintBound(t, t0, 1, n), Clock{Now: y2000, Mono: boot2}, NoRequest)

	n = request(t, v, Clock{Now: y2000, Mono: boot2})
	expectAt(t, v, mintBound(t, t0, 1, n), Clock{Now: y2000, Mono: after(boot2, RequestLifetime)}, NoRequest)
	expectAt(t, v, mintBound(t, t0, 1, n), Clock{Now: y2000, Mono: after(boot2, RequestLifetime-time.Second)}, Accepted)
}

// TestNewerKillsOlderAcrossBothKinds: the watermark orders bound and
// time-based codes of one device by their issuance.
func TestNewerKillsOlderAcrossBothKinds(t *testing.T) {
	v := newVerifier(t, "")
	c := Clock{Now: t0.Add(time.Hour), Mono: boot1}
	expectAt(t, v, mintCode(t, testSerial, t0, 5), c, Accepted)
	n := request(t, v, c)
	expectAt(t, v, mintBound(t, t0, 4, n), c, AlreadyUsed)
	expectAt(t, v, mintBound(t, t0, 6, n), c, Accepted)
	expectAt(t, v, mintCode(t, testSerial, t0, 6), c, AlreadyUsed)
	expectAt(t, v, mintGrant(t, testSerial, t0, 6), c, AlreadyUsed)
	expectAt(t, v, mintCode(t, testSerial, t0, 7), c, Accepted)
}

// TestClockSetBackDoesNotReviveAnExpiredCode: a code refused as expired
// stays refused when the clock is set back to inside its validity.
func TestClockSetBackDoesNotReviveAnExpiredCode(t *testing.T) {
	v := newVerifier(t, "")
	code := mintCode(t, testSerial, t0, 5)
	expectAt(t, v, code, Clock{Now: t0.Add(25 * time.Hour), Mono: boot1}, Expired)
	expectAt(t, v, code, Clock{Now: t0.Add(time.Hour), Mono: after(boot1, time.Minute)}, ClockMovedBack)
	expectAt(t, v, code, Clock{Now: t0.Add(time.Hour), Mono: boot2}, ClockMovedBack)
	// Within the skew, it is judged at the latest time seen: still expired.
	expectAt(t, v, code, Clock{Now: t0.Add(25*time.Hour - 5*time.Minute), Mono: boot2}, Expired)
}

// TestClockEarlierThanTheLastAcceptedIssueTimeIsRefused: after a code
// issued at t0+2h is accepted, a clock before that judges nothing.
func TestClockEarlierThanTheLastAcceptedIssueTimeIsRefused(t *testing.T) {
	v := newVerifier(t, "")
	n := request(t, v, Clock{Now: y2000, Mono: boot1})
	expectAt(t, v, mintBound(t, t0.Add(2*time.Hour), 1, n), Clock{Now: y2000, Mono: boot1}, Accepted)
	expectAt(t, v, mintCode(t, testSerial, t0, 2), Clock{Now: t0.Add(time.Hour), Mono: boot1}, ClockMovedBack)
	expectAt(t, v, mintCode(t, testSerial, t0.Add(3*time.Hour), 2), Clock{Now: t0.Add(3 * time.Hour), Mono: boot1}, Accepted)
}

// TestClockSetAheadIsCuredByABoundCode: a clock once set to 2099 makes
// every later reading "moved back"; an accepted bound code replaces the
// time learnt by its own issue time, the server's.
func TestClockSetAheadIsCuredByABoundCode(t *testing.T) {
	v := newVerifier(t, "")
	expectAt(t, v, mintCode(t, otherSerial, t0, 1), Clock{Now: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), Mono: boot1}, WrongCode)
	c := Clock{Now: t0.Add(time.Hour), Mono: after(boot1, time.Minute)}
	expectAt(t, v, mintCode(t, testSerial, t0, 2), c, ClockMovedBack)
	n := request(t, v, c)
	expectAt(t, v, mintBound(t, t0, 3, n), c, Accepted)
	expectAt(t, v, mintCode(t, testSerial, t0.Add(30*time.Minute), 4), c, Accepted)
}

// TestClockSetForwardDoesNotShortenALockout: the lock runs on the
// monotonic clock; a day added to the wall clock ends nothing.
func TestClockSetForwardDoesNotShortenALockout(t *testing.T) {
	v := newVerifier(t, "")
	wrong := mintCode(t, otherSerial, t0, 1)
	c := Clock{Now: t0, Mono: boot1}
	for range 5 {
		expectAt(t, v, wrong, c, WrongCode)
	}
	good := mintCode(t, testSerial, t0, 2)
	expectAt(t, v, good, Clock{Now: t0.Add(23 * time.Hour), Mono: after(boot1, time.Minute)}, LockedOut)
	expectAt(t, v, good, Clock{Now: t0.Add(23 * time.Hour), Mono: after(boot1, 5*time.Minute)}, Accepted)
}

// TestRebootDoesNotShortenALockout: after a power cut the lock keeps what
// was left of it as of the last save, counted from the new boot.
func TestRebootDoesNotShortenALockout(t *testing.T) {
	v := newVerifier(t, "")
	wrong := mintCode(t, otherSerial, t0, 1)
	for range 5 {
		expectAt(t, v, wrong, Clock{Now: t0, Mono: boot1}, WrongCode)
	}
	good := mintCode(t, testSerial, t0, 2)
	// 2 minutes served and noted; then a reboot.
	expectAt(t, v, good, Clock{Now: t0, Mono: after(boot1, 2*time.Minute)}, LockedOut)
	expectAt(t, v, good, Clock{Now: t0.Add(time.Hour), Mono: Mono{Boot: boot2.Boot, Uptime: 2*time.Minute + 59*time.Second}}, LockedOut)
	expectAt(t, v, good, Clock{Now: t0.Add(time.Hour), Mono: Mono{Boot: boot2.Boot, Uptime: 3 * time.Minute}}, Accepted)
}

// TestRecoveryCodeAcceptedOnceWithin30Minutes: the e-mail route's code
// works once, not after 30 minutes, not after a newer one, not after a
// reboot; a wrong one counts.
func TestRecoveryCodeAcceptedOnceWithin30Minutes(t *testing.T) {
	v := newVerifier(t, "")
	m := inMemory(v)
	c := Clock{Now: y2000, Mono: boot1}
	code, r := v.RecoveryCode(c, nil)
	if r.Outcome != Accepted || code == "" || m.st.RecoveryTag == ([32]byte{}) {
		t.Fatalf("RecoveryCode: %q %s: %s", code, r.Outcome, r.Message)
	}
	rv, _ := voicecode.ParseRecoveryCode(code)
	expectAt(t, v, voicecode.FormatRecoveryCode(rv^1), c, WrongCode)
	expectAt(t, v, code, Clock{Now: y2000, Mono: after(boot1, RecoveryLifetime-time.Second)}, Accepted)
	expectAt(t, v, code, c, Expired)

	// The wall clock of a DVR without a clock battery restarts at 2000
	// too; here it runs on with the monotonic one.
	next := func(d time.Duration) { c = Clock{Now: c.Now.Add(d), Mono: after(c.Mono, d)} }
	next(time.Hour)
	code, _ = v.RecoveryCode(c, nil)
	expectAt(t, v, code, Clock{Now: y2000, Mono: after(c.Mono, RecoveryLifetime)}, Expired)
	next(time.Hour)
	code, _ = v.RecoveryCode(c, nil)
	expectAt(t, v, code, Clock{Now: y2000, Mono: boot2}, Expired)
	next(time.Hour)
	old, _ := v.RecoveryCode(c, nil)
	next(MailInterval)
	if _, r := v.RecoveryCode(c, nil); r.Outcome != Accepted {
		t.Fatal(r.Message)
	}
	expectAt(t, v, old, c, WrongCode)
}

// TestRecoveryMailThrottledAndFailureChangesNothing: one e-mail per
// MailInterval, by the monotonic and the wall clock; a failed send leaves
// the state as it was.
func TestRecoveryMailThrottledAndFailureChangesNothing(t *testing.T) {
	v := newVerifier(t, "")
	m := inMemory(v)
	c := Clock{Now: t0, Mono: boot1}
	sent := 0
	send := func(string) error { sent++; return nil }
	if _, r := v.RecoveryCode(c, send); r.Outcome != Accepted || sent != 1 {
		t.Fatalf("%s %d", r.Outcome, sent)
	}
	for _, at := range []Clock{{Now: t0.Add(time.Hour), Mono: after(boot1, time.Minute)}, {Now: t0.Add(time.Minute), Mono: after(boot1, time.Hour)}} {
		if _, r := v.RecoveryCode(at, send); r.Outcome != Throttled || sent != 1 {
			t.Fatalf("second mail at %+v: %s, %d sent", at, r.Outcome, sent)
		}
	}
	before := m.st
	later := Clock{Now: t0.Add(time.Hour), Mono: after(boot1, time.Hour)}
	if code, r := v.RecoveryCode(later, func(string) error { return errors.New("SMTP server: connection refused") }); r.Outcome != MailFailed || code != "" {
		t.Fatalf("failed send: %q %s", code, r.Outcome)
	}
	if m.st != before {
		t.Fatalf("a failed send changed the state:\n%+v\n%+v", before, m.st)
	}
}

// TestPowerCutDuringTheMailLeavesTheOldState: the send runs before anything
// is written, so the state file on disk, read while the mail is being
// sent, is still the old one: a power cut then leaves no code recorded
// and no throttle used. The save comes only after the send succeeded.
func TestPowerCutDuringTheMailLeavesTheOldState(t *testing.T) {
	dir := t.TempDir()
	v := newVerifier(t, dir)
	c := Clock{Now: t0, Mono: boot1}
	if _, r := v.Request(c); r.Outcome != Accepted {
		t.Fatal(r.Message)
	}
	path := filepath.Join(dir, state.FileName)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var during []byte
	send := func(string) error {
		during, err = os.ReadFile(path)
		return err
	}
	if _, r := v.RecoveryCode(Clock{Now: t0.Add(time.Minute), Mono: after(boot1, time.Minute)}, send); r.Outcome != Accepted {
		t.Fatal(r.Message)
	}
	if !bytes.Equal(during, before) {
		t.Fatal("the state was written before the mail went out")
	}
	if saved, _ := os.ReadFile(path); bytes.Equal(saved, before) {
		t.Fatal("the state was not saved after the mail went out")
	}
}
