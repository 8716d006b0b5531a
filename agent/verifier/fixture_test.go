package verifier

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/state"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

const (
	testSerial  = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	otherSerial = "JZ6OES#2017-08-01#3#DVR1101134C08012"
	testKid     = "hotline-2026-1"
)

var (
	testMaster = bytes.Repeat([]byte{0x42}, 32)
	testSigner = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	// t0 is a plausible "now": after the default build date.
	t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
)

func deviceKey(tb testing.TB, serial string) voicecode.DeviceKey {
	tb.Helper()
	k, err := voicecode.DeriveDeviceKey(testMaster, 1, serial)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func trustSet() *grant.TrustSet {
	return grant.NewTrustSet(map[string]ed25519.PublicKey{testKid: testSigner.Public().(ed25519.PublicKey)})
}

// mintCode returns the voice code for serial issued at t with sequence seq.
func mintCode(tb testing.TB, serial string, t time.Time, seq int64) string {
	tb.Helper()
	c, err := voicecode.Mint(deviceKey(tb, serial), serial, t, seq)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// mintGrant returns the grant of the same issuance as mintCode.
func mintGrant(tb testing.TB, serial string, t time.Time, seq int64) string {
	tb.Helper()
	g, err := grant.Sign(testSigner, testKid, grant.NewClaims(serial, "iss-1", seq, t, voicecode.ExpiresAt(t)))
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// newVerifier returns a Verifier for testSerial on dir (a new temp dir if
// empty).
func newVerifier(tb testing.TB, dir string) *Verifier {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	v, err := New(Config{Serial: testSerial, Key: deviceKey(tb, testSerial), Trust: trustSet(), StateDir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// expect verifies input and fails the test unless the outcome is want.
func expect(tb testing.TB, v *Verifier, input string, now time.Time, want Outcome) Result {
	tb.Helper()
	r, err := v.Verify(input, now)
	if r.Outcome != want {
		tb.Fatalf("Verify(%.40q) at %s = %s (%s), want %s", input, now.Format(time.RFC3339), r.Outcome, r.Message, want)
	}
	if (err == nil) != (want == Accepted) {
		tb.Fatalf("Verify(%.40q): outcome %s but error %v", input, r.Outcome, err)
	}
	if r.Message == "" {
		tb.Fatalf("Verify(%.40q): empty message", input)
	}
	return r
}

// memSession is an in-memory state store for tests that must not touch the
// disk (fuzzing) or that inject failures.
type memSession struct {
	st       *state.State
	saves    int
	failSave bool
}

func (m *memSession) Load() (state.State, error) { return *m.st, nil }
func (m *memSession) Save(s state.State) error {
	if m.failSave {
		return errSaveInjected
	}
	m.saves++
	*m.st = s
	return nil
}
func (m *memSession) Close() error { return nil }

type injected string

func (e injected) Error() string { return string(e) }

const errSaveInjected = injected("injected save failure")

// inMemory makes v keep its state in memory and returns the session.
func inMemory(v *Verifier) *memSession {
	m := &memSession{st: new(state.State)}
	v.open = func() (session, error) { return m, nil }
	return m
}
