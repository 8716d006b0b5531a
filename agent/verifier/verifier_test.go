package verifier

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/state"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

func TestAcceptedVoiceCode(t *testing.T) {
	v := newVerifier(t, "")
	code := mintCode(t, testSerial, t0, 5)
	r := expect(t, v, strings.ToLower(strings.ReplaceAll(code, "-", " ")), t0.Add(time.Hour), Accepted)
	if r.Kind != VoiceCode || r.Sequence != 5 || !r.IssuedAt.Equal(voicecode.SlotStart(t0)) || r.Failures != 0 {
		t.Fatalf("result %+v", r)
	}
}

func TestAcceptedGrant(t *testing.T) {
	v := newVerifier(t, "")
	r := expect(t, v, mintGrant(t, testSerial, t0, 300), t0.Add(time.Hour), Accepted)
	if r.Kind != Grant || r.Sequence != 300 || r.Slot != voicecode.SlotOf(t0) {
		t.Fatalf("result %+v", r)
	}
}

func TestRefusedEverySingleSymbolChange(t *testing.T) {
	v := newVerifier(t, "")
	m := inMemory(v)
	code := strings.ReplaceAll(mintCode(t, testSerial, t0, 5), "-", "")
	now := t0.Add(time.Minute)
	for i := 0; i < len(code); i++ {
		for _, c := range alphabet {
			if byte(c) == code[i] {
				continue
			}
			typo := code[:i] + string(c) + code[i+1:]
			r := expect(t, v, typo, now, Malformed)
			if !errors.Is(r.Err, voicecode.ErrTypo) {
				t.Fatalf("%s: %v, want a typo", typo, r.Err)
			}
		}
	}
	for i := 0; i+1 < len(code); i++ {
		if code[i] == code[i+1] {
			continue
		}
		swap := code[:i] + code[i+1:i+2] + code[i:i+1] + code[i+2:]
		expect(t, v, swap, now, Malformed)
	}
	if m.saves != 0 || m.st.Failures != 0 {
		t.Fatalf("typos touched the state: %d saves, %d failures", m.saves, m.st.Failures)
	}
	expect(t, v, code, now, Accepted) // typos are not failed attempts: no lockout
}

func TestRefusedCodeForAnotherSerial(t *testing.T) {
	v := newVerifier(t, "")
	r := expect(t, v, mintCode(t, otherSerial, t0, 1), t0, WrongCode)
	if r.Failures != 1 {
		t.Fatalf("failures = %d, want 1", r.Failures)
	}
	// The other DVR's key used with this DVR's serial: still wrong.
	c, err := voicecode.Mint(deviceKey(t, otherSerial), testSerial, t0, 1)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, v, c, t0, WrongCode)
}

func TestRefusedReplayAfterAcceptance(t *testing.T) {
	dir := t.TempDir()
	code := mintCode(t, testSerial, t0, 5)
	expect(t, newVerifier(t, dir), code, t0, Accepted)
	expect(t, newVerifier(t, dir), code, t0.Add(time.Minute), AlreadyUsed)
	g := mintGrant(t, testSerial, t0.Add(time.Hour), 6)
	expect(t, newVerifier(t, dir), g, t0.Add(time.Hour), Accepted)
	expect(t, newVerifier(t, dir), g, t0.Add(time.Hour), AlreadyUsed)
}

func TestRefusedOlderCodeAfterNewer(t *testing.T) {
	v := newVerifier(t, "")
	older := mintCode(t, testSerial, t0, 5)
	sameSlotOlderSeq := mintCode(t, testSerial, t0.Add(time.Minute), 4)
	newer := mintCode(t, testSerial, t0.Add(20*time.Minute), 3) // later slot wins, whatever its seq8
	now := t0.Add(30 * time.Minute)
	expect(t, v, newer, now, Accepted)
	expect(t, v, older, now, AlreadyUsed)
	expect(t, v, sameSlotOlderSeq, now, AlreadyUsed)
	evenNewerSameSlot := mintCode(t, testSerial, t0.Add(20*time.Minute), 4)
	expect(t, v, evenNewerSameSlot, now, Accepted)
}

func TestRefusedVoiceCodeAfterItsGrantAndViceVersa(t *testing.T) {
	v := newVerifier(t, "")
	expect(t, v, mintGrant(t, testSerial, t0, 5), t0, Accepted)
	expect(t, v, mintCode(t, testSerial, t0, 5), t0, AlreadyUsed)

	later := t0.Add(time.Hour)
	expect(t, v, mintCode(t, testSerial, later, 6), later, Accepted)
	expect(t, v, mintGrant(t, testSerial, later, 6), later, AlreadyUsed)
	// seq 262 is 6 mod 256: the grant of a wrapped sequence is the same key.
	expect(t, v, mintGrant(t, testSerial, later, 262), later, AlreadyUsed)
}

func TestRefusedExpired(t *testing.T) {
	v := newVerifier(t, "")
	m := inMemory(v)
	code := mintCode(t, testSerial, t0, 5)
	start := voicecode.SlotStart(t0)
	expect(t, v, code, start.Add(voicecode.Validity), Expired)
	expect(t, v, mintGrant(t, testSerial, t0, 5), t0.Add(25*time.Hour), Expired)
	expect(t, v, code, start.Add(voicecode.Validity+30*24*time.Hour), Expired)
	if m.st.Failures != 0 {
		t.Fatalf("expired codes counted as failed attempts: %d", m.st.Failures)
	}
	// Set back after it was seen expired: refused, never revived.
	expect(t, v, code, start.Add(voicecode.Validity-time.Second), ClockMovedBack)
	expect(t, newVerifier(t, ""), code, start.Add(voicecode.Validity-time.Second), Accepted)
}

func TestRefusedClockNotSet(t *testing.T) {
	dir := t.TempDir()
	v := newVerifier(t, dir)
	code := mintCode(t, testSerial, t0, 5)
	for _, now := range []time.Time{time.Unix(0, 0), time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 12, 31, 23, 59, 59, 0, time.UTC)} {
		expect(t, v, code, now, ClockNotSet)
		expect(t, v, mintGrant(t, testSerial, t0, 5), now, ClockNotSet)
		expect(t, v, "garbage", now, ClockNotSet)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("clock-not-set touched the state directory: %v", ents)
	}
	expect(t, v, code, t0, Accepted)
}

func TestNotYetValidWhenTheClockIsBehind(t *testing.T) {
	v := newVerifier(t, "")
	m := inMemory(v)
	code := mintCode(t, testSerial, t0, 5)
	expect(t, v, code, t0.Add(-23*time.Hour), NotYetValid)
	expect(t, v, code, t0.Add(-time.Hour), NotYetValid)
	expect(t, v, mintGrant(t, testSerial, t0, 5), t0.Add(-time.Hour), NotYetValid)
	if m.st.Failures != 0 {
		t.Fatalf("genuine future codes counted as failed attempts: %d", m.st.Failures)
	}
	// Within the skew the code is fine.
	expect(t, v, code, voicecode.SlotStart(t0).Add(-5*time.Minute), Accepted)
}

// signRaw builds a compact JWS by hand, so that tests can forge what
// grant.Sign refuses to make.
func signRaw(t *testing.T, header, claims map[string]any, sign func(input []byte) []byte) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return input + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(input)))
}

func goodClaims(serial string, iat time.Time, lifetime time.Duration) map[string]any {
	return map[string]any{
		"iss": grant.Issuer, "sub": serial, "aud": []string{grant.Audience},
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": iat.Add(lifetime).Unix(),
		"jti": "iss-1", "seq": 5, "slot": voicecode.SlotOf(iat),
	}
}

func edSign(key ed25519.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte { return ed25519.Sign(key, in) }
}

func TestRefusedForgedGrants(t *testing.T) {
	pub := testSigner.Public().(ed25519.PublicKey)
	otherSigner := ed25519.NewKeyFromSeed(make([]byte, 32))
	tests := []struct {
		name  string
		token string
		want  Outcome
	}{
		{"refused/alg-none", signRaw(t, map[string]any{"alg": "none", "typ": "JWT", "kid": testKid}, goodClaims(testSerial, t0, time.Hour), func([]byte) []byte { return nil }), WrongCode},
		{"refused/HS256-with-the-public-key-as-secret", signRaw(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": testKid}, goodClaims(testSerial, t0, time.Hour), func(in []byte) []byte {
			m := hmac.New(sha256.New, pub)
			m.Write(in)
			return m.Sum(nil)
		}), WrongCode},
		{"refused/HS256-with-the-base64-public-key-as-secret", signRaw(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": testKid}, goodClaims(testSerial, t0, time.Hour), func(in []byte) []byte {
			m := hmac.New(sha256.New, []byte(base64.RawURLEncoding.EncodeToString(pub)))
			m.Write(in)
			return m.Sum(nil)
		}), WrongCode},
		{"refused/unknown-kid", signRaw(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": "attacker"}, goodClaims(testSerial, t0, time.Hour), edSign(otherSigner)), WrongCode},
		{"refused/no-kid", signRaw(t, map[string]any{"alg": "EdDSA", "typ": "JWT"}, goodClaims(testSerial, t0, time.Hour), edSign(testSigner)), WrongCode},
		{"refused/known-kid-signed-by-another-key", signRaw(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": testKid}, goodClaims(testSerial, t0, time.Hour), edSign(otherSigner)), WrongCode},
		{"refused/another-serials-grant", mintGrant(t, otherSerial, t0, 5), WrongCode},
		{"refused/wrong-audience", func() string {
			c := goodClaims(testSerial, t0, time.Hour)
			c["aud"] = []string{"hotline-staff"}
			return signRaw(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": testKid}, c, edSign(testSigner))
		}(), Malformed},
		{"refused/lifetime-over-24h", signRaw(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": testKid}, goodClaims(testSerial, t0, 25*time.Hour), edSign(testSigner)), Malformed},
		{"refused/no-exp", func() string {
			c := goodClaims(testSerial, t0, time.Hour)
			delete(c, "exp")
			return signRaw(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": testKid}, c, edSign(testSigner))
		}(), Malformed},
		{"refused/truncated-signature", func() string { g := mintGrant(t, testSerial, t0, 5); return g[:len(g)-6] }(), WrongCode}, // 80 symbols: valid base64 of a 60-byte signature,
		{"refused/not-base64", "eyJ!.eyJ!.AAAA", Malformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, "")
			m := inMemory(v)
			expect(t, v, tt.token, t0.Add(time.Minute), tt.want)
			if counted := tt.want == WrongCode; counted != (m.st.Failures == 1) {
				t.Fatalf("failures = %d after %s", m.st.Failures, tt.want)
			}
			// The genuine grant of the same issuance is still good.
			expect(t, v, mintGrant(t, testSerial, t0, 5), t0.Add(time.Minute), Accepted)
		})
	}
	// jwt itself also refuses the public key as an HMAC secret.
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(goodClaims(testSerial, t0, time.Hour)))
	tok.Header["kid"] = testKid
	s, err := tok.SignedString([]byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, newVerifier(t, ""), s, t0, WrongCode)
}

func TestLockoutAfterFiveWrongCodesSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	wrong := mintCode(t, otherSerial, t0, 1)
	good := mintCode(t, testSerial, t0, 2)
	now := t0
	for i := 1; i <= 4; i++ {
		r := expect(t, newVerifier(t, dir), wrong, now, WrongCode)
		if r.Failures != uint32(i) || !r.RetryAfter.IsZero() {
			t.Fatalf("attempt %d: %+v", i, r)
		}
	}
	r := expect(t, newVerifier(t, dir), wrong, now, WrongCode)
	if want := now.Add(5 * time.Minute); !r.RetryAfter.Equal(want) {
		t.Fatalf("5th wrong code: retry after %s, want %s", r.RetryAfter, want)
	}
	// A restart (new Verifier, same directory) keeps the lock, and the
	// genuine code is not even checked while locked.
	r = expect(t, newVerifier(t, dir), good, now.Add(4*time.Minute), LockedOut)
	if !strings.Contains(r.Message, "12:05 UTC") {
		t.Fatalf("message %q does not say when to retry", r.Message)
	}
	// After the lock, one more wrong code locks for twice as long.
	now = now.Add(5 * time.Minute)
	r = expect(t, newVerifier(t, dir), wrong, now, WrongCode)
	if want := now.Add(10 * time.Minute); !r.RetryAfter.Equal(want) {
		t.Fatalf("6th wrong code: retry after %s, want %s", r.RetryAfter, want)
	}
	expect(t, newVerifier(t, dir), good, now.Add(9*time.Minute), LockedOut)
	now = now.Add(10 * time.Minute)
	expect(t, newVerifier(t, dir), good, now, Accepted)
	// Acceptance resets the counter.
	r = expect(t, newVerifier(t, dir), wrong, now, WrongCode)
	if r.Failures != 1 || !r.RetryAfter.IsZero() {
		t.Fatalf("after acceptance: %+v", r)
	}
}

func TestLockoutDoublesUpTo24Hours(t *testing.T) {
	l := DefaultLockout
	for _, tt := range []struct {
		n    uint32
		want time.Duration
	}{{0, 0}, {4, 0}, {5, 5 * time.Minute}, {6, 10 * time.Minute}, {7, 20 * time.Minute}, {13, 1280 * time.Minute}, {14, 24 * time.Hour}, {1 << 31, 24 * time.Hour}, {^uint32(0), 24 * time.Hour}} {
		if got := l.Duration(tt.n); got != tt.want {
			t.Errorf("Duration(%d) = %s, want %s", tt.n, got, tt.want)
		}
	}
}

func TestPowerCutAfterTheCheckStillCostsAnAttempt(t *testing.T) {
	// The attempt is saved before the MAC is checked: if that save fails,
	// the MAC is not checked at all, so a genuine code is not accepted
	// and a guess learns nothing.
	v := newVerifier(t, "")
	m := inMemory(v)
	m.failSave = true
	expect(t, v, mintCode(t, testSerial, t0, 5), t0, StateUnwritable)
	expect(t, v, mintCode(t, otherSerial, t0, 5), t0, StateUnwritable)
	m.failSave = false
	expect(t, v, mintCode(t, testSerial, t0, 5), t0, Accepted)
}

func TestRefusedWhenAcceptanceCannotBeRecorded(t *testing.T) {
	v := newVerifier(t, "")
	m := &failSecondSave{memSession: memSession{st: new(state.State)}}
	v.open = func() (session, error) { m.n = 0; return m, nil }
	expect(t, v, mintCode(t, testSerial, t0, 5), t0, StateUnwritable)
	if m.st.Slot != 0 {
		t.Fatal("watermark moved")
	}
}

type failSecondSave struct {
	memSession
	n int
}

func (f *failSecondSave) Save(s state.State) error {
	if f.n++; f.n == 2 {
		return errSaveInjected
	}
	return f.memSession.Save(s)
}

func TestRefusedCorruptStateNeverReacceptsAUsedCode(t *testing.T) {
	dir := t.TempDir()
	used := mintCode(t, testSerial, t0, 5)
	fresh := mintCode(t, testSerial, t0, 6)
	expect(t, newVerifier(t, dir), used, t0, Accepted)
	path := filepath.Join(dir, state.FileName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, dir)
	try := func(what string, b []byte) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, code := range []string{used, fresh} {
			r, _ := v.Verify(code, t0)
			if r.Outcome != StateUnreadable {
				t.Fatalf("%s: %s (%s), want state-unreadable", what, r.Outcome, r.Message)
			}
		}
	}
	for n := 0; n < len(good); n++ {
		try("truncated to "+itoa(n)+" bytes", good[:n])
	}
	for i := range good {
		for bit := 0; bit < 8; bit++ {
			b := append([]byte(nil), good...)
			b[i] ^= 1 << bit
			try("byte "+itoa(i)+" bit "+itoa(bit)+" flipped", b)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	r, _ := v.Verify(used, t0)
	if r.Outcome != StateUnreadable || !errors.Is(r.Err, state.ErrLost) {
		t.Fatalf("deleted state: %s (%v)", r.Outcome, r.Err)
	}
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	expect(t, v, used, t0, AlreadyUsed)
	expect(t, v, fresh, t0, Accepted)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestOutcomeNamesAreStable(t *testing.T) {
	want := []string{"accepted", "internal-error", "usage", "malformed", "wrong-code", "expired", "not-yet-valid", "already-used", "locked-out", "clock-not-set", "state-unreadable", "config-unreadable", "state-unwritable", "state-busy",
		"clock-moved-back", "no-request", "recovery-email-not-set", "throttled", "mail-failed", "mail-not-built"}
	got := Outcomes()
	if len(got) != len(want) {
		t.Fatalf("%d outcomes, want %d: the list is append-only, update this test only when appending", len(got), len(want))
	}
	for i, o := range got {
		if o.String() != want[i] || o.ExitCode() != i {
			t.Errorf("outcome %d = %s (exit %d), want %s (exit %d)", i, o, o.ExitCode(), want[i], i)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	k := deviceKey(t, testSerial)
	dir := t.TempDir()
	for name, c := range map[string]Config{
		"bad serial":    {Serial: "nope", Key: k, Trust: trustSet(), StateDir: dir},
		"no key":        {Serial: testSerial, Trust: trustSet(), StateDir: dir},
		"no trust":      {Serial: testSerial, Key: k, StateDir: dir},
		"no state dir":  {Serial: testSerial, Key: k, Trust: trustSet()},
		"zero lockouts": {Serial: testSerial, Key: k, Trust: trustSet(), StateDir: dir, Lockout: Lockout{Threshold: 0, Base: time.Minute, Max: time.Hour}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestVerifierNeverPrintsItsKey(t *testing.T) {
	v := newVerifier(t, t.TempDir())
	for _, s := range []string{fmt.Sprintf("%v", v), fmt.Sprintf("%+v", v), fmt.Sprintf("%#v", v)} {
		if !strings.Contains(s, "REDACTED") || strings.Contains(s, "key:[") {
			t.Fatalf("a verifier printed as %q", s)
		}
	}
}
