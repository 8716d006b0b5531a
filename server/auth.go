package server

import (
	"container/list"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dvrhotline/hotline/agent/grant"
)

// Staff tokens: the fixed claims every staff bearer token must carry. They
// differ from the grant's (agent/grant) so that a grant can never be used as
// a staff token, nor the reverse.
const (
	// StaffTokenIssuer is the "iss" of staff tokens.
	StaffTokenIssuer = "hotline-staff"
	// StaffTokenAudience is the "aud" of staff tokens: the gRPC API.
	StaffTokenAudience = "hotline-api"
	// StaffTokenMaxTTL bounds a development token's lifetime.
	StaffTokenMaxTTL = 31 * 24 * time.Hour
	// staffTokenLeeway is the clock-skew allowance for exp, nbf and iat.
	staffTokenLeeway = 30 * time.Second
	// maxStaffTokenLen bounds what Verify parses.
	maxStaffTokenLen = 8192
)

// StaffClaims are a staff token's claims: the registered ones plus the role.
type StaffClaims struct {
	jwt.RegisteredClaims
	// Role is the staff member's role ("role").
	Role Role `json:"role"`
}

// StaffVerifier verifies staff bearer tokens: EdDSA only (RFC 8725: the
// algorithm is pinned, never taken from the token), the key chosen only by
// "kid" from a configured set, issuer, audience and expiry required.
//
// A token that verified is remembered until its expiry, so that a client
// making many calls with one token pays for the signature check once, not
// on every RPC: by the SHA-256 of its exact text, in a least-recently-used
// cache of at most maxVerifiedTokens tokens.
type StaffVerifier struct {
	keys   map[string]ed25519.PublicKey
	parser *jwt.Parser
	now    func() time.Time

	mu       sync.Mutex
	verified tokenCache
}

// verifiedToken is a cache entry: the actor a token named and its expiry.
type verifiedToken struct {
	actor Actor
	exp   time.Time
}

// maxVerifiedTokens bounds the cache of verified tokens.
const maxVerifiedTokens = 4096

// tokenCache is a bounded LRU of verified tokens keyed by the SHA-256 of
// their text. Keying by the digest keeps the lookup's timing independent
// of the token's bytes: a map compares keys with an early-exit comparison,
// and a guesser can steer a raw token's prefix, never its digest's. Not
// safe for concurrent use (StaffVerifier.mu guards it).
type tokenCache struct {
	max     int
	entries map[[sha256.Size]byte]*list.Element
	order   list.List // of *tokenEntry, most recently used first
}

type tokenEntry struct {
	key [sha256.Size]byte
	tok verifiedToken
}

// get returns the entry of key, marking it recently used.
func (c *tokenCache) get(key [sha256.Size]byte) (verifiedToken, bool) {
	e, ok := c.entries[key]
	if !ok {
		return verifiedToken{}, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*tokenEntry).tok, true
}

// put remembers tok under key, evicting the least recently used entry
// when the cache is full.
func (c *tokenCache) put(key [sha256.Size]byte, tok verifiedToken) {
	if c.entries == nil {
		c.entries = make(map[[sha256.Size]byte]*list.Element)
	}
	if e, ok := c.entries[key]; ok {
		e.Value.(*tokenEntry).tok = tok
		c.order.MoveToFront(e)
		return
	}
	for c.order.Len() >= max(c.max, 1) {
		old := c.order.Back()
		delete(c.entries, old.Value.(*tokenEntry).key)
		c.order.Remove(old)
	}
	c.entries[key] = c.order.PushFront(&tokenEntry{key: key, tok: tok})
}

// remove forgets key.
func (c *tokenCache) remove(key [sha256.Size]byte) {
	if e, ok := c.entries[key]; ok {
		delete(c.entries, key)
		c.order.Remove(e)
	}
}

// len is how many tokens the cache holds.
func (c *tokenCache) len() int { return c.order.Len() }

// NewStaffVerifier returns a verifier trusting keys (kid -> public key).
func NewStaffVerifier(keys map[string]ed25519.PublicKey) (*StaffVerifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("staff verifier: no keys")
	}
	m := make(map[string]ed25519.PublicKey, len(keys))
	for kid, k := range keys {
		if kid == "" || len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("staff verifier: key %q: expected a kid and a %d-byte Ed25519 public key", kid, ed25519.PublicKeySize)
		}
		m[kid] = k
	}
	return &StaffVerifier{keys: m, parser: newStaffParser(time.Now), now: time.Now, verified: tokenCache{max: maxVerifiedTokens}}, nil
}

// NewStaffVerifierJWKS returns a verifier trusting the Ed25519 keys of a JWK
// set (RFC 7517, "kty":"OKP", "crv":"Ed25519"); any other key is refused.
func NewStaffVerifierJWKS(jwks []byte) (*StaffVerifier, error) {
	set, err := grant.ParseJWKS(jwks) // the one JWK set reader, strict on key types
	if err != nil {
		return nil, fmt.Errorf("staff verifier: %w", err)
	}
	return NewStaffVerifier(set.Keys())
}

func newStaffParser(now func() time.Time) *jwt.Parser {
	return jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithStrictDecoding(),
		jwt.WithIssuer(StaffTokenIssuer),
		jwt.WithAudience(StaffTokenAudience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(staffTokenLeeway),
		jwt.WithTimeFunc(now),
	)
}

// SetClock replaces the verifier's clock (tests).
func (v *StaffVerifier) SetClock(now func() time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.parser, v.now, v.verified = newStaffParser(now), now, tokenCache{max: maxVerifiedTokens}
}

// Verify checks a staff bearer token and returns the actor it names
// (without ClientAddr). Every failure is an EUnauthenticated *Error whose
// message says what to do; the cause is wrapped for the log.
func (v *StaffVerifier) Verify(token string) (Actor, error) {
	refuse := func(msg string, err error) (Actor, error) {
		return Actor{}, &Error{Code: EUnauthenticated, Message: msg, Err: err}
	}
	if token == "" {
		return refuse("no staff token: send \"authorization: Bearer <token>\"", nil)
	}
	if len(token) > maxStaffTokenLen {
		return refuse("staff token too long", nil)
	}
	key := sha256.Sum256([]byte(token))
	v.mu.Lock()
	hit, ok := v.verified.get(key)
	parser, now := v.parser, v.now
	if ok && !now().Before(hit.exp) {
		v.verified.remove(key)
		ok = false
	}
	v.mu.Unlock()
	if ok {
		return hit.actor, nil
	}
	var c StaffClaims
	_, err := parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := v.keys[kid]
		if !ok {
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
		return k, nil
	})
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return refuse("staff token expired: get a new one", err)
	default:
		return refuse("staff token refused", err)
	}
	if c.IssuedAt == nil || c.ExpiresAt.Sub(c.IssuedAt.Time) > StaffTokenMaxTTL {
		return refuse(fmt.Sprintf("staff token lives longer than %s or has no iat: ask for a shorter-lived token", StaffTokenMaxTTL), nil)
	}
	if c.Subject == "" || strings.TrimSpace(c.Subject) != c.Subject || len(c.Subject) > 128 || !OneLine(c.Subject) {
		return refuse("staff token has no valid subject", nil)
	}
	if !c.Role.Valid() {
		return refuse(fmt.Sprintf("staff token role %q: expected agent, supervisor, auditor or provisioner", c.Role), nil)
	}
	a := Actor{Subject: c.Subject, Role: c.Role}
	v.mu.Lock()
	v.verified.put(key, verifiedToken{actor: a, exp: c.ExpiresAt.Time})
	v.mu.Unlock()
	return a, nil
}

// StaffIssuer signs staff tokens; hotline-server uses it for development
// tokens ("hotline-server token --subject NAME --role ROLE").
type StaffIssuer struct {
	kid string
	key ed25519.PrivateKey
	now func() time.Time
}

// NewStaffIssuer returns an issuer signing with key under kid.
func NewStaffIssuer(kid string, key ed25519.PrivateKey) (*StaffIssuer, error) {
	if kid == "" || len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("staff issuer: expected a kid and a %d-byte Ed25519 private key", ed25519.PrivateKeySize)
	}
	return &StaffIssuer{kid: kid, key: key, now: time.Now}, nil
}

// SetClock replaces the issuer's clock (tests).
func (i *StaffIssuer) SetClock(now func() time.Time) { i.now = now }

// Issue returns a token for subject in role, valid for ttl.
func (i *StaffIssuer) Issue(subject string, role Role, ttl time.Duration) (string, error) {
	if subject == "" || strings.TrimSpace(subject) != subject || len(subject) > 128 || !OneLine(subject) {
		return "", Invalid("subject", "subject %q: expected a login name of 1 to 128 characters without surrounding spaces", subject)
	}
	if !role.Valid() {
		return "", Invalid("role", "role %q: expected agent, supervisor, auditor or provisioner", role)
	}
	if ttl <= 0 || ttl > StaffTokenMaxTTL {
		return "", Invalid("ttl", "ttl %s: expected more than 0 and at most %s", ttl, StaffTokenMaxTTL)
	}
	now := i.now().Truncate(time.Second)
	c := StaffClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    StaffTokenIssuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{StaffTokenAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Role: role,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = i.kid
	return t.SignedString(i.key)
}

// PublicKeys returns the issuer's key as a verifier key set.
func (i *StaffIssuer) PublicKeys() map[string]ed25519.PublicKey {
	return map[string]ed25519.PublicKey{i.kid: i.key.Public().(ed25519.PublicKey)}
}
