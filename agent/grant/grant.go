// Package grant mints and verifies the signed form of a temporary password:
// a JWT (RFC 7519) signed with Ed25519 ("EdDSA", RFC 8037) that carries the
// same issuance as the voice code, for every delivery that is not a voice:
// pasted in the web UI, sent by e-mail, carried by a QR code.
//
// Verification follows RFC 8725: the algorithm is pinned to EdDSA, the key is
// chosen only by "kid" from a trusted JWK set the firmware ships, and issuer,
// audience, subject (the canonical serial), expiry and a lifetime of at most
// 24 hours are all required. It imports the standard library and jwt only:
// the DVR agent links it.
package grant

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dvrhotline/hotline/agent/voicecode"
)

// Fixed claims and limits. They cross the wire: change only with care.
const (
	// Issuer is the "iss" of every grant.
	Issuer = "hotline"
	// Audience is the "aud" of every grant: the DVR agent.
	Audience = "hotline-dvr"
	// MaxLifetime bounds exp - iat.
	MaxLifetime = 24 * time.Hour
	// Skew is the clock-skew allowance for iat and nbf (not for exp).
	Skew = 10 * time.Minute
	// MaxTokenLen bounds the input accepted by Verify.
	MaxTokenLen = 4096
)

// Errors returned by Verify; test with errors.Is.
var (
	// ErrMalformed: not a grant (syntax, claims missing or inconsistent).
	ErrMalformed = errors.New("grant: malformed")
	// ErrUnknownKey: the "kid" is not in the trusted key set.
	ErrUnknownKey = errors.New("grant: signed by an unknown key")
	// ErrBadSignature: the signature does not verify, or the algorithm is not EdDSA.
	ErrBadSignature = errors.New("grant: bad signature")
	// ErrWrongDevice: signed, but for another device.
	ErrWrongDevice = errors.New("grant: issued for another device")
	// ErrExpired: past its "exp".
	ErrExpired = errors.New("grant: expired")
	// ErrNotYetValid: "nbf" or "iat" is in the future beyond Skew.
	ErrNotYetValid = errors.New("grant: not yet valid")
)

// Claims are a grant's claims: the registered ones plus the per-device
// sequence number and the issue slot the voice code of the same issuance
// carries, so that both forms order the same way on the device.
type Claims struct {
	jwt.RegisteredClaims
	// Sequence is the per-device sequence number ("seq").
	Sequence int64 `json:"seq"`
	// Slot is the issue time in 10-minute slots since the Unix epoch ("slot").
	Slot uint64 `json:"slot"`
}

// NewClaims returns the claims of an issuance: sub is the canonical serial,
// jti the issuance id, iat and nbf the issue time, exp the expiry.
func NewClaims(serial, issuanceID string, sequence int64, issuedAt, expiresAt time.Time) Claims {
	iat := jwt.NewNumericDate(issuedAt.Truncate(time.Second))
	return Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Subject:   serial,
			Audience:  jwt.ClaimStrings{Audience},
			IssuedAt:  iat,
			NotBefore: iat,
			ExpiresAt: jwt.NewNumericDate(expiresAt.Truncate(time.Second)),
			ID:        issuanceID,
		},
		Sequence: sequence,
		Slot:     voicecode.SlotOf(issuedAt),
	}
}

// Sign returns the compact JWT for c, signed with key under kid. Ed25519 is
// deterministic, so the same claims give the same token.
func Sign(key ed25519.PrivateKey, kid string, c Claims) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("grant: signing key of %d bytes: expected %d", len(key), ed25519.PrivateKeySize)
	}
	if kid == "" {
		return "", errors.New("grant: empty kid")
	}
	if err := c.check(); err != nil {
		return "", err
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = kid
	return t.SignedString(key)
}

// check enforces the invariants every grant must hold.
func (c Claims) check() error {
	switch {
	case c.Issuer != Issuer:
		return fmt.Errorf("%w: iss %q: expected %q", ErrMalformed, c.Issuer, Issuer)
	case c.Subject == "":
		return fmt.Errorf("%w: sub (serial) missing", ErrMalformed)
	case c.ID == "":
		return fmt.Errorf("%w: jti missing", ErrMalformed)
	case c.IssuedAt == nil || c.ExpiresAt == nil || c.NotBefore == nil:
		return fmt.Errorf("%w: iat, nbf and exp are required", ErrMalformed)
	case c.Sequence < 1:
		return fmt.Errorf("%w: seq %d: expected 1 or more", ErrMalformed, c.Sequence)
	case !c.ExpiresAt.After(c.IssuedAt.Time):
		return fmt.Errorf("%w: exp is not after iat", ErrMalformed)
	case c.ExpiresAt.Sub(c.IssuedAt.Time) > MaxLifetime:
		return fmt.Errorf("%w: lifetime %s: expected at most %s", ErrMalformed, c.ExpiresAt.Sub(c.IssuedAt.Time), MaxLifetime)
	case c.Slot != voicecode.SlotOf(c.IssuedAt.Time):
		return fmt.Errorf("%w: slot %d does not match iat", ErrMalformed, c.Slot)
	}
	return nil
}

// TrustSet is the set of grant-verification public keys a device trusts,
// by kid. The firmware ships it as a JWK set (RFC 7517, OKP/Ed25519 keys).
type TrustSet struct {
	keys map[string]ed25519.PublicKey
}

// NewTrustSet returns a trust set of the given keys.
func NewTrustSet(keys map[string]ed25519.PublicKey) *TrustSet {
	t := &TrustSet{keys: make(map[string]ed25519.PublicKey, len(keys))}
	for kid, k := range keys {
		t.keys[kid] = append(ed25519.PublicKey(nil), k...)
	}
	return t
}

// Len returns the number of trusted keys.
func (t *TrustSet) Len() int { return len(t.keys) }

// Keys returns a copy of the trusted keys by kid.
func (t *TrustSet) Keys() map[string]ed25519.PublicKey {
	out := make(map[string]ed25519.PublicKey, len(t.keys))
	for kid, k := range t.keys {
		out[kid] = append(ed25519.PublicKey(nil), k...)
	}
	return out
}

// jwk is one JSON Web Key of type OKP, curve Ed25519.
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg,omitempty"`
	Use string `json:"use,omitempty"`
}

type jwkSet struct {
	Keys []jwk `json:"keys"`
}

// MarshalJWKS returns the JWK set of keys, sorted by kid.
func MarshalJWKS(keys map[string]ed25519.PublicKey) ([]byte, error) {
	kids := make([]string, 0, len(keys))
	for kid := range keys {
		kids = append(kids, kid)
	}
	sort.Strings(kids)
	set := jwkSet{Keys: []jwk{}}
	for _, kid := range kids {
		k := keys[kid]
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("grant: key %q is %d bytes: expected %d", kid, len(k), ed25519.PublicKeySize)
		}
		set.Keys = append(set.Keys, jwk{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k), Kid: kid, Alg: "EdDSA", Use: "sig"})
	}
	b, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseJWKS reads a JWK set. Every key must be an Ed25519 signing key with a
// unique kid; anything else is refused, not skipped, so a mistake in the
// firmware's trust file is found at build time.
func ParseJWKS(b []byte) (*TrustSet, error) {
	var set jwkSet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("trust file: not a JWK set: %v", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New(`trust file: no keys: expected {"keys": [...]} with at least one Ed25519 key`)
	}
	t := &TrustSet{keys: make(map[string]ed25519.PublicKey, len(set.Keys))}
	for i, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			return nil, fmt.Errorf("trust file: key %d: kty %q crv %q: expected OKP Ed25519", i, k.Kty, k.Crv)
		}
		if k.Alg != "" && k.Alg != "EdDSA" {
			return nil, fmt.Errorf("trust file: key %d: alg %q: expected EdDSA", i, k.Alg)
		}
		if k.Use != "" && k.Use != "sig" {
			return nil, fmt.Errorf("trust file: key %d: use %q: expected sig", i, k.Use)
		}
		if k.Kid == "" {
			return nil, fmt.Errorf("trust file: key %d has no kid", i)
		}
		if _, dup := t.keys[k.Kid]; dup {
			return nil, fmt.Errorf("trust file: kid %q appears twice", k.Kid)
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("trust file: key %q: x is not a base64url Ed25519 public key", k.Kid)
		}
		t.keys[k.Kid] = ed25519.PublicKey(x)
	}
	return t, nil
}

// Verify checks token for the device with the canonical serial at time now
// and returns its claims. The algorithm is pinned to EdDSA; the key comes
// only from the trust set by kid.
func (t *TrustSet) Verify(token, serial string, now time.Time) (Claims, error) {
	if len(token) > MaxTokenLen {
		return Claims{}, fmt.Errorf("%w: %d bytes: expected at most %d", ErrMalformed, len(token), MaxTokenLen)
	}
	var c Claims
	var kid string
	p := verifyParser
	_, err := p.ParseWithClaims(token, &c, func(tok *jwt.Token) (any, error) {
		kid, _ = tok.Header["kid"].(string)
		if kid == "" {
			return nil, fmt.Errorf("%w: no kid in the header", ErrUnknownKey)
		}
		k, ok := t.keys[kid]
		if !ok {
			return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
		}
		return k, nil
	})
	switch {
	case err == nil:
	case errors.Is(err, ErrUnknownKey):
		return Claims{}, fmt.Errorf("%w: kid %q is not in the trust file", ErrUnknownKey, kid)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return Claims{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
	default:
		return Claims{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// The claims are validated here rather than by jwt's validator: the
	// rules are exactly these, and the parser is built once.
	if err := c.check(); err != nil {
		return Claims{}, err
	}
	if !slices.Contains(c.Audience, Audience) {
		return Claims{}, fmt.Errorf("%w: aud %q: expected %q", ErrMalformed, []string(c.Audience), Audience)
	}
	if c.Subject != serial {
		return Claims{}, ErrWrongDevice
	}
	// Expiry gets no allowance; nbf and iat get Skew (a DVR clock behind).
	if !now.Before(c.ExpiresAt.Time) {
		return Claims{}, ErrExpired
	}
	if late := now.Add(Skew); c.NotBefore.After(late) || c.IssuedAt.After(late) {
		return Claims{}, ErrNotYetValid
	}
	return c, nil
}

// verifyParser pins the algorithm (RFC 8725) and base64 strictness; Verify
// validates the claims itself. A jwt.Parser is safe for concurrent use.
var verifyParser = jwt.NewParser(
	jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
	jwt.WithStrictDecoding(), // one token text per signature: no malleable padding bits
	jwt.WithoutClaimsValidation(),
)
