package grant

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const serial = "JZ6OES#2017-08-01#3#DVR1101134C08011"

var issued = time.Date(2026, 11, 28, 9, 17, 42, 0, time.UTC)

func newKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// mapOf is c as golang-jwt's map of claims, for forging tokens with that
// library: what an attacker (or another implementation) would send.
func mapOf(t testing.TB, c Claims) jwt.MapClaims {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	m := jwt.MapClaims{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func claims() Claims {
	return NewClaims(serial, "0b6f6c55-6ad7-4f0e-9a0e-1d7c1ed1a001", 5, issued, issued.Add(23*time.Hour))
}

func TestOutcomes(t *testing.T) {
	pub, priv := newKey(t)
	otherPub, otherPriv := newKey(t)
	_ = otherPub
	trust := NewTrustSet(map[string]ed25519.PublicKey{"grant-1": pub})

	good, err := Sign(priv, "grant-1", claims())
	if err != nil {
		t.Fatal(err)
	}
	// Forgeries an attacker can make without the private key, or with a key
	// the device does not trust.
	none := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, mapOf(t, claims()))
		tok.Header["kid"] = "grant-1"
		s, _ := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		return s
	}()
	hs256WithPublicKey := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, mapOf(t, claims()))
		tok.Header["kid"] = "grant-1"
		s, _ := tok.SignedString([]byte(pub))
		return s
	}()
	unknownKid, _ := Sign(otherPriv, "grant-9", claims())
	untrustedKeyKnownKid, _ := Sign(otherPriv, "grant-1", claims())
	signRaw := func(c Claims) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, mapOf(t, c))
		tok.Header["kid"] = "grant-1"
		s, err := tok.SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	wrongAud := claims()
	wrongAud.Audience = ClaimStrings{"hotline-staff"}
	wrongIss := claims()
	wrongIss.Issuer = "evil"
	tooLong := claims()
	tooLong.ExpiresAt = NewNumericDate(issued.Add(48 * time.Hour))
	noExp := claims()
	noExp.ExpiresAt = nil
	badSlot := claims()
	badSlot.Slot++
	otherSerial, _ := Sign(priv, "grant-1", NewClaims("JZ6OES#2017-08-01#3#DVR1101134C08012", "x", 5, issued, issued.Add(time.Hour)))
	// signature of one token spliced onto another's claims
	parts := strings.Split(good, ".")
	otherParts := strings.Split(otherSerial, ".")
	spliced := parts[0] + "." + otherParts[1] + "." + parts[2]
	noKid := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, mapOf(t, claims()))
		s, _ := tok.SignedString(priv)
		return s
	}()

	tests := []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"accepted/valid", good, issued.Add(time.Minute), nil},
		{"accepted/device-clock-behind-within-skew", good, issued.Add(-9 * time.Minute), nil},
		{"refused/alg-none", none, issued, ErrBadSignature},
		{"refused/hs256-with-the-public-key", hs256WithPublicKey, issued, ErrBadSignature},
		{"refused/unknown-kid", unknownKid, issued, ErrUnknownKey},
		{"refused/no-kid", noKid, issued, ErrUnknownKey},
		{"refused/untrusted-key-under-a-trusted-kid", untrustedKeyKnownKid, issued, ErrBadSignature},
		{"refused/spliced-claims", spliced, issued, ErrBadSignature},
		{"refused/wrong-audience", signRaw(wrongAud), issued, ErrMalformed},
		{"refused/wrong-issuer", signRaw(wrongIss), issued, ErrMalformed},
		{"refused/lifetime-over-24h", signRaw(tooLong), issued, ErrMalformed},
		{"refused/no-expiry", signRaw(noExp), issued, ErrMalformed},
		{"refused/slot-not-matching-iat", signRaw(badSlot), issued, ErrMalformed},
		{"refused/grant-for-another-serial", otherSerial, issued, ErrWrongDevice},
		{"refused/expired", good, issued.Add(23 * time.Hour), ErrExpired},
		{"refused/expired-no-skew-on-exp", good, issued.Add(23*time.Hour + 5*time.Minute), ErrExpired},
		{"refused/not-yet-valid", good, issued.Add(-time.Hour), ErrNotYetValid},
		{"refused/garbage", "ey.ey.ey", issued, ErrMalformed},
		{"refused/oversized", "ey" + strings.Repeat("A", MaxTokenLen), issued, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := trust.Verify(tt.token, serial, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.Sequence != 5 || c.Subject != serial {
					t.Fatalf("claims %+v", c)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSignIsDeterministic(t *testing.T) {
	_, priv := newKey(t)
	a, _ := Sign(priv, "k", claims())
	b, _ := Sign(priv, "k", claims())
	if a != b {
		t.Fatal("two signatures of the same claims differ: idempotent retries would return different grants")
	}
}

func TestJWKSRoundTripAndRefusals(t *testing.T) {
	pub, _ := newKey(t)
	b, err := MarshalJWKS(map[string]ed25519.PublicKey{"grant-1": pub})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := ParseJWKS(b)
	if err != nil || ts.Len() != 1 {
		t.Fatalf("round trip: %v", err)
	}
	x := base64.RawURLEncoding.EncodeToString(pub)
	for name, s := range map[string]string{
		"refused/empty-set":     `{"keys":[]}`,
		"refused/rsa-key":       `{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}`,
		"refused/hs-alg":        `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"HS256","x":"` + x + `"}]}`,
		"refused/duplicate-kid": `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"` + x + `"},{"kty":"OKP","crv":"Ed25519","kid":"a","x":"` + x + `"}]}`,
		"refused/short-x":       `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"AAAA"}]}`,
		"refused/no-kid":        `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `"}]}`,
		"refused/not-json":      `keys`,
	} {
		if _, err := ParseJWKS([]byte(s)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRefusesAMalleatedSignatureEncoding: the last base64url character of a
// 64-byte signature carries 4 unused bits; a second token text for the same
// signature must not verify.
func TestRefusesAMalleatedSignatureEncoding(t *testing.T) {
	pub, priv := newKey(t)
	trust := NewTrustSet(map[string]ed25519.PublicKey{"grant-1": pub})
	tok, _ := Sign(priv, "grant-1", claims())
	alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	for i := 1; i < 4; i++ {
		twin := tok[:len(tok)-1] + string(alphabet[last^i])
		if _, err := trust.Verify(twin, serial, issued); err == nil {
			t.Fatalf("a second encoding of the signature verified: %s", twin)
		}
	}
}

// jwtClaims is the claims type this package used with golang-jwt: a grant
// signed here must be the very text that library made, so that a retried
// issuance returns the grant it returned before.
type jwtClaims struct {
	jwt.RegisteredClaims
	Sequence int64  `json:"seq"`
	Slot     uint64 `json:"slot"`
}

func TestSignMakesTheTextGolangJWTMade(t *testing.T) {
	pub, priv := newKey(t)
	c := claims()
	ours, err := Sign(priv, "grant-1", c)
	if err != nil {
		t.Fatal(err)
	}
	iat := jwt.NewNumericDate(c.IssuedAt.Time)
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwtClaims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: c.Issuer, Subject: c.Subject, Audience: jwt.ClaimStrings(c.Audience),
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt.Time), NotBefore: iat, IssuedAt: iat, ID: c.ID},
		Sequence: c.Sequence, Slot: c.Slot,
	})
	tok.Header["kid"] = "grant-1"
	theirs, err := tok.SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	if ours != theirs {
		t.Fatalf("Sign = %s\ngolang-jwt = %s", ours, theirs)
	}
	var back jwtClaims
	if _, err := jwt.NewParser(jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithoutClaimsValidation()).ParseWithClaims(ours, &back,
		func(*jwt.Token) (any, error) { return pub, nil }); err != nil || back.Sequence != c.Sequence || back.Subject != serial {
		t.Fatalf("golang-jwt reads our grant as %+v, %v", back, err)
	}
}

// TestSignWritesTheJSONEncodingJSONWrites: the header and the claims Sign
// writes directly are json.Marshal's text, for every field empty or set
// and for strings json escapes (quotes, controls, HTML characters,
// non-ASCII, invalid UTF-8, U+2028).
func TestSignWritesTheJSONEncodingJSONWrites(t *testing.T) {
	odd := []string{"", "grant-1", serial, `a"b`, `back\slash`, "tab\there", "nl\n", "<script>&", "é", "\xff\xfe", "line\u2028sep", "\x00", "~"}
	iat := NewNumericDate(issued)
	for _, kid := range odd {
		h := header{Alg: algEdDSA, Kid: kid, Typ: "JWT"}
		want, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.appendJSON(nil); string(got) != string(want) {
			t.Errorf("header kid %q: %s, json.Marshal: %s", kid, got, want)
		}
	}
	var cases []Claims
	for _, v := range odd {
		cases = append(cases,
			Claims{Issuer: v, Subject: v, ID: v, Sequence: -3, Slot: 1 << 63},
			Claims{Subject: v, Audience: ClaimStrings{v, Audience}, IssuedAt: iat, NotBefore: iat, ExpiresAt: &NumericDate{issued.Add(-1500 * time.Millisecond)}},
			Claims{Audience: ClaimStrings{}, ExpiresAt: &NumericDate{time.Unix(-1, 5).UTC()}},
			NewClaims(serial+v, v+"id", 1<<40, issued, issued.Add(time.Hour)))
	}
	cases = append(cases, Claims{}, claims())
	for _, c := range cases {
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.appendJSON(nil); string(got) != string(want) {
			t.Errorf("claims %+v:\n%s\njson.Marshal:\n%s", c, got, want)
		}
	}
}

// FuzzSignJSON: for any strings in the header and the claims, Sign's
// JSON is json.Marshal's.
func FuzzSignJSON(f *testing.F) {
	f.Add("grant-1", serial, "0b6f6c55-6ad7-4f0e-9a0e-1d7c1ed1a001", int64(5), int64(1764321462))
	f.Add(`<"\`, "\xff\u2028", "", int64(-1), int64(-62135596800))
	f.Fuzz(func(t *testing.T, kid, sub, id string, seq, at int64) {
		h := header{Alg: algEdDSA, Kid: kid, Typ: "JWT"}
		if want, _ := json.Marshal(h); string(h.appendJSON(nil)) != string(want) {
			t.Fatalf("header %q: %s, want %s", kid, h.appendJSON(nil), want)
		}
		d := &NumericDate{time.Unix(at, 0)}
		c := Claims{Issuer: Issuer, Subject: sub, Audience: ClaimStrings{id}, ExpiresAt: d, NotBefore: d, IssuedAt: d, ID: id, Sequence: seq, Slot: uint64(at)}
		if want, _ := json.Marshal(c); string(c.appendJSON(nil)) != string(want) {
			t.Fatalf("claims %+v: %s, want %s", c, c.appendJSON(nil), want)
		}
	})
}
