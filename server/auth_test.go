package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign makes a token with arbitrary header and claims, for the attacks.
func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStaffVerifier(t *testing.T) {
	key, other := newKey(t), newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	v, err := NewStaffVerifier(map[string]ed25519.PublicKey{"staff-1": pub})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := func(mod func(*StaffClaims)) StaffClaims {
		c := StaffClaims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer: StaffTokenIssuer, Subject: "alice", Audience: jwt.ClaimStrings{StaffTokenAudience},
				IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
			},
			Role: RoleAgent,
		}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"accepted/valid", sign(t, jwt.SigningMethodEdDSA, key, "staff-1", claims(nil)), true},
		{"refused/empty", "", false},
		{"refused/garbage", "not.a.token", false},
		{"refused/alg-none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "staff-1", claims(nil)), false},
		// The classic key-confusion attack: HMAC keyed with the public key.
		{"refused/hs256-with-public-key", sign(t, jwt.SigningMethodHS256, []byte(pub), "staff-1", claims(nil)), false},
		{"refused/forged-signature", sign(t, jwt.SigningMethodEdDSA, other, "staff-1", claims(nil)), false},
		{"refused/unknown-kid", sign(t, jwt.SigningMethodEdDSA, key, "staff-2", claims(nil)), false},
		{"refused/no-kid", sign(t, jwt.SigningMethodEdDSA, key, "", claims(nil)), false},
		{"refused/expired", sign(t, jwt.SigningMethodEdDSA, key, "staff-1", claims(func(c *StaffClaims) {
			c.IssuedAt, c.ExpiresAt = jwt.NewNumericDate(now.Add(-2*time.Hour)), jwt.NewNumericDate(now.Add(-time.Hour))
		})), false},
		{"refused/no-expiry", sign(t, jwt.SigningMethodEdDSA, key, "staff-1", claims(func(c *StaffClaims) { c.ExpiresAt = nil })), false},
		{"refused/issued-in-future", sign(t, jwt.SigningMethodEdDSA, key, "staff-1", claims(func(c *StaffClaims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour))
		})), false},
		{"refused/wrong-audience", sign(t, jwt.SigningMethodEdDSA, key, "staff-1", claims(func(c *StaffClaims) {
			c.Audience = jwt.ClaimStrings{"hotline-dvr"} // a grant's audience
		})), false},
		{"refused/no-audience", sign(t, jwt.SigningMethodEdDSA, key, "staff-1", claims(func(c *StaffClaims) { c.Audience = nil })), false},
		{"refused/wrong-issuer", sign(t, jwt.SigningMethodEdDSA, key, "staff-1", claims(func(c *StaffClaims) { c.Issuer = "hotline" })), false},
		{"refused/unknown-role", sign(t, jwt.SigningMethodEdDSA, key, "staff-1", claims(func(c *StaffClaims) { c.Role = "admin" })), false},
		{"refused/no-subject", sign(t, jwt.SigningMethodEdDSA, key, "staff-1", claims(func(c *StaffClaims) { c.Subject = "" })), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := v.Verify(tt.token)
			if tt.ok {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if a.Subject != "alice" || a.Role != RoleAgent {
					t.Fatalf("actor = %+v", a)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted a bad token: %+v", a)
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != EUnauthenticated {
				t.Fatalf("error %v: want an EUnauthenticated *Error", err)
			}
		})
	}
}

func TestStaffIssuerRoundTrip(t *testing.T) {
	key := newKey(t)
	iss, err := NewStaffIssuer("staff-1", key)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewStaffVerifier(iss.PublicKeys())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Role{RoleAgent, RoleSupervisor, RoleAuditor, RoleProvisioner} {
		tok, err := iss.Issue("bob", r, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		a, err := v.Verify(tok)
		if err != nil || a.Subject != "bob" || a.Role != r {
			t.Fatalf("role %s: actor %+v, err %v", r, a, err)
		}
	}
	t.Run("refused/expired-after-ttl", func(t *testing.T) {
		tok, err := iss.Issue("bob", RoleAgent, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		v.SetClock(func() time.Time { return time.Now().Add(2 * time.Minute) })
		defer v.SetClock(time.Now)
		if _, err := v.Verify(tok); ErrorCode(err) != EUnauthenticated {
			t.Fatalf("expired token: err %v", err)
		}
	})
	for _, bad := range []struct {
		name    string
		subject string
		role    Role
		ttl     time.Duration
	}{
		{"refused/empty-subject", "", RoleAgent, time.Hour},
		{"refused/unknown-role", "bob", "root", time.Hour},
		{"refused/zero-ttl", "bob", RoleAgent, 0},
		{"refused/ttl-too-long", "bob", RoleAgent, StaffTokenMaxTTL + time.Hour},
	} {
		t.Run(bad.name, func(t *testing.T) {
			if _, err := iss.Issue(bad.subject, bad.role, bad.ttl); ErrorCode(err) != EInvalid {
				t.Fatalf("err %v: want EInvalid", err)
			}
		})
	}
}

func TestStaffVerifierJWKS(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	iss, _ := NewStaffIssuer("k1", key)
	jwks := []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"k1","x":"` +
		jwtB64(pub) + `"}]}`)
	v, err := NewStaffVerifierJWKS(jwks)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := iss.Issue("carol", RoleAuditor, time.Hour)
	if a, err := v.Verify(tok); err != nil || a.Role != RoleAuditor {
		t.Fatalf("actor %+v err %v", a, err)
	}
	for name, bad := range map[string]string{
		"refused/rsa-key":  `{"keys":[{"kty":"RSA","kid":"k1","n":"AQAB","e":"AQAB"}]}`,
		"refused/no-keys":  `{"keys":[]}`,
		"refused/not-json": `nope`,
		"refused/short-x":  `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"AAAA"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewStaffVerifierJWKS([]byte(bad)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func jwtB64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// TestRememberedTokenStillExpires: the verified-token cache must not keep a
// token alive past its exp.
func TestRememberedTokenStillExpires(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	iss, err := NewStaffIssuer("staff-1", key)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Issue("alice", RoleAgent, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewStaffVerifier(iss.PublicKeys())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	v.SetClock(func() time.Time { return now })
	for range 2 { // the second call is answered from the cache
		if a, err := v.Verify(tok); err != nil || a.Subject != "alice" {
			t.Fatalf("fresh token: %v", err)
		}
	}
	now = now.Add(2 * time.Hour)
	if _, err := v.Verify(tok); ErrorCode(err) != EUnauthenticated {
		t.Fatalf("expired token accepted from the cache: %v", err)
	}
	if _, err := v.Verify(tok[:len(tok)-2] + "AA"); err == nil {
		t.Fatal("a token differing from a remembered one in its signature was accepted")
	}
}

// TestRefusedStaffTokenLivingTooLong: an identity provider (or a stolen
// signing key's holder) minting a token for a year is refused, as is a
// token without iat.
func TestRefusedStaffTokenLivingTooLong(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	v, err := NewStaffVerifier(map[string]ed25519.PublicKey{"s1": key.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for name, c := range map[string]StaffClaims{
		"refused/one-year-token": {RegisteredClaims: jwt.RegisteredClaims{Issuer: StaffTokenIssuer, Subject: "mallory",
			Audience: jwt.ClaimStrings{StaffTokenAudience}, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(365 * 24 * time.Hour))}, Role: RoleSupervisor},
		"refused/no-iat": {RegisteredClaims: jwt.RegisteredClaims{Issuer: StaffTokenIssuer, Subject: "mallory",
			Audience: jwt.ClaimStrings{StaffTokenAudience}, ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}, Role: RoleSupervisor},
	} {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		tok.Header["kid"] = "s1"
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(s); ErrorCode(err) != EUnauthenticated {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

// TestTokenFloodCannotGrowTheCache: a client sending ever new valid tokens
// (a leaked staff signing key's holder, a script minting one per call)
// keeps at most maxVerifiedTokens in memory, and evicts the least recently
// used: a token in steady use stays remembered through the flood.
func TestTokenFloodCannotGrowTheCache(t *testing.T) {
	c := tokenCache{max: 3}
	key := func(i int) [sha256.Size]byte { return sha256.Sum256([]byte{byte(i)}) }
	for i := range 3 {
		c.put(key(i), verifiedToken{actor: Actor{Subject: string(rune('a' + i))}})
	}
	if _, ok := c.get(key(0)); !ok { // 0 is now the most recently used
		t.Fatal("entry 0 missing")
	}
	for i := 3; i < 10; i++ {
		c.put(key(i), verifiedToken{})
		if _, ok := c.get(key(0)); !ok {
			t.Fatalf("after %d puts the entry in use was evicted", i)
		}
		if c.len() > 3 {
			t.Fatalf("cache holds %d entries, bound 3", c.len())
		}
	}
	if _, ok := c.get(key(1)); ok {
		t.Fatal("the least recently used entry survived the flood")
	}

	_, sk, _ := ed25519.GenerateKey(nil)
	iss, _ := NewStaffIssuer("staff-1", sk)
	v, _ := NewStaffVerifier(iss.PublicKeys())
	for i := range maxVerifiedTokens + 10 {
		tok, err := iss.Issue(fmt.Sprintf("agent-%d", i), RoleAgent, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.verified.len(); n != maxVerifiedTokens {
		t.Fatalf("verifier remembers %d tokens, want the bound %d", n, maxVerifiedTokens)
	}
}
