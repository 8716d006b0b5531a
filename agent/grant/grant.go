// Package grant mints and verifies the signed form of a temporary password:
// a JWT (RFC 7519) signed with Ed25519 ("EdDSA", RFC 8037) that carries the
// same issuance as the voice code, for every delivery that is not a voice:
// pasted in the web UI, sent by e-mail, carried by a QR code.
//
// Verification follows RFC 8725: the algorithm is pinned to EdDSA, the key is
// chosen only by "kid" from a trusted JWK set the firmware ships, and issuer,
// audience, subject (the canonical serial), expiry and a lifetime of at most
// 24 hours are all required.
//
// It imports the standard library alone, on purpose: the DVR agent links
// it, and a JWT library registers every algorithm it knows (RSA, ECDSA,
// HMAC) at init, which the linker cannot drop and which would cost the DVR
// several hundred kilobytes of flash for one algorithm it uses. The compact
// form is three base64url parts; this package writes them as golang-jwt
// does (the header's keys sorted: alg, kid, typ; registered claims in the
// order iss, sub, aud, exp, nbf, iat, jti, then seq and slot), so a grant
// is the same text either way.
package grant

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

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

// NumericDate is a JWT time (RFC 7519 section 2): whole seconds since the
// Unix epoch in JSON.
type NumericDate struct{ time.Time }

// NewNumericDate returns t, truncated to the second, as a NumericDate.
func NewNumericDate(t time.Time) *NumericDate { return &NumericDate{t.Truncate(time.Second)} }

// MarshalJSON writes the date as an integer number of seconds.
func (d NumericDate) MarshalJSON() ([]byte, error) {
	return strconv.AppendInt(nil, d.Unix(), 10), nil
}

// UnmarshalJSON reads a JSON number of seconds (a fraction is kept, as
// RFC 7519 allows).
func (d *NumericDate) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || math.Abs(f) > 1<<53 {
		return fmt.Errorf("a date: expected a number of seconds since 1970, got %.40s", b)
	}
	sec, frac := math.Modf(f)
	d.Time = time.Unix(int64(sec), int64(frac*1e9)).UTC()
	return nil
}

// ClaimStrings is the "aud" claim: one string or an array of them in JSON,
// always written as an array.
type ClaimStrings []string

// UnmarshalJSON reads a string or an array of strings.
func (c *ClaimStrings) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*c = ClaimStrings{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud: expected a string or an array of strings")
	}
	*c = many
	return nil
}

// Claims are a grant's claims: the registered ones (RFC 7519 section 4.1)
// plus the per-device sequence number and the issue slot the voice code of
// the same issuance carries, so that both forms order the same way on the
// device.
type Claims struct {
	// Issuer, Subject, Audience, ExpiresAt, NotBefore, IssuedAt and ID are
	// "iss", "sub" (the canonical serial), "aud", "exp", "nbf", "iat" and
	// "jti" (the issuance id).
	Issuer    string       `json:"iss,omitempty"`
	Subject   string       `json:"sub,omitempty"`
	Audience  ClaimStrings `json:"aud,omitempty"`
	ExpiresAt *NumericDate `json:"exp,omitempty"`
	NotBefore *NumericDate `json:"nbf,omitempty"`
	IssuedAt  *NumericDate `json:"iat,omitempty"`
	ID        string       `json:"jti,omitempty"`
	// Sequence is the per-device sequence number ("seq").
	Sequence int64 `json:"seq"`
	// Slot is the issue time in 10-minute slots since the Unix epoch ("slot").
	Slot uint64 `json:"slot"`
}

// NewClaims returns the claims of an issuance: sub is the canonical serial,
// jti the issuance id, iat and nbf the issue time, exp the expiry.
func NewClaims(serial, issuanceID string, sequence int64, issuedAt, expiresAt time.Time) Claims {
	iat := NewNumericDate(issuedAt)
	return Claims{
		Issuer:    Issuer,
		Subject:   serial,
		Audience:  ClaimStrings{Audience},
		IssuedAt:  iat,
		NotBefore: iat,
		ExpiresAt: NewNumericDate(expiresAt),
		ID:        issuanceID,
		Sequence:  sequence,
		Slot:      voicecode.SlotOf(issuedAt),
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
	// The JSON is what json.Marshal makes of header and c (appendJSON);
	// written directly, with the token, in one buffer: the server signs a
	// grant on every issuance.
	var js [320]byte
	h := header{Alg: algEdDSA, Kid: kid, Typ: "JWT"}.appendJSON(js[:0])
	nh := len(h)
	b := c.appendJSON(h)
	n := b64.EncodedLen(nh) + 1 + b64.EncodedLen(len(b)-nh)
	tok := make([]byte, n, n+1+b64.EncodedLen(ed25519.SignatureSize))
	b64.Encode(tok, b[:nh])
	tok[b64.EncodedLen(nh)] = '.'
	b64.Encode(tok[b64.EncodedLen(nh)+1:], b[nh:])
	sig := ed25519.Sign(key, tok)
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, sig)
	return string(tok), nil
}

// appendJSON appends json.Marshal(h).
func (h header) appendJSON(b []byte) []byte {
	b = append(b, `{"alg":`...)
	b = appendJSONString(b, h.Alg)
	if h.Kid != "" {
		b = append(b, `,"kid":`...)
		b = appendJSONString(b, h.Kid)
	}
	if h.Typ != "" {
		b = append(b, `,"typ":`...)
		b = appendJSONString(b, h.Typ)
	}
	return append(b, '}')
}

// appendJSON appends json.Marshal(c): the fields in their order, the
// omitempty ones left out when empty, the dates as NumericDate writes them.
func (c Claims) appendJSON(b []byte) []byte {
	b = append(b, '{')
	comma := false
	key := func(k string) {
		if comma {
			b = append(b, ',')
		}
		comma = true
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':')
	}
	str := func(k, v string) {
		if v != "" {
			key(k)
			b = appendJSONString(b, v)
		}
	}
	date := func(k string, d *NumericDate) {
		if d != nil {
			key(k)
			b = strconv.AppendInt(b, d.Unix(), 10)
		}
	}
	str("iss", c.Issuer)
	str("sub", c.Subject)
	if len(c.Audience) > 0 {
		key("aud")
		b = append(b, '[')
		for i, a := range c.Audience {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, a)
		}
		b = append(b, ']')
	}
	date("exp", c.ExpiresAt)
	date("nbf", c.NotBefore)
	date("iat", c.IssuedAt)
	str("jti", c.ID)
	key("seq")
	b = strconv.AppendInt(b, c.Sequence, 10)
	key("slot")
	b = strconv.AppendUint(b, c.Slot, 10)
	return append(b, '}')
}

// appendJSONString appends s as json.Marshal writes a string: printable
// ASCII other than the quote, the backslash and json's HTML characters
// (< > &) as it is, anything else through json.Marshal itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// algEdDSA is the only "alg" a grant has (RFC 8037).
const algEdDSA = "EdDSA"

// header is a grant's JOSE header, its fields in the order golang-jwt
// writes them (sorted).
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid,omitempty"`
	Typ string `json:"typ,omitempty"`
}

// b64 is base64url without padding, strict (RFC 7515 section 2): one text
// per value, so a signature cannot be re-encoded into another token.
var b64 = base64.RawURLEncoding.Strict()

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
	c, err := t.verifySignature(token)
	if err != nil {
		return Claims{}, err
	}
	// The claims' rules are exactly these.
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

// verifySignature parses the compact token and checks its signature: the
// algorithm pinned to EdDSA before any key is looked up (RFC 8725), the key
// only from the trust set by kid, strict base64url everywhere. It returns
// the claims, not yet validated.
func (t *TrustSet) verifySignature(token string) (Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Claims{}, fmt.Errorf("%w: %d parts: expected header.claims.signature", ErrMalformed, len(parts))
	}
	hb, err := b64.DecodeString(parts[0])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: header: not base64url", ErrMalformed)
	}
	var h struct {
		Alg string `json:"alg"`
		Kid any    `json:"kid"`
	}
	if err := json.Unmarshal(hb, &h); err != nil {
		return Claims{}, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	cb, err := b64.DecodeString(parts[1])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: claims: not base64url", ErrMalformed)
	}
	var c Claims
	d := json.NewDecoder(bytes.NewReader(cb))
	if err := d.Decode(&c); err != nil || d.More() {
		return Claims{}, fmt.Errorf("%w: claims: not a JSON object of claims", ErrMalformed)
	}
	if h.Alg != algEdDSA {
		return Claims{}, fmt.Errorf("%w: alg %q: expected %s", ErrBadSignature, h.Alg, algEdDSA)
	}
	kid, _ := h.Kid.(string)
	if kid == "" {
		return Claims{}, fmt.Errorf("%w: no kid in the header", ErrUnknownKey)
	}
	k, ok := t.keys[kid]
	if !ok {
		return Claims{}, fmt.Errorf("%w: kid %q is not in the trust file", ErrUnknownKey, kid)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: signature: not base64url", ErrMalformed)
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(k, []byte(parts[0]+"."+parts[1]), sig) {
		return Claims{}, fmt.Errorf("%w: the signature does not verify under kid %q", ErrBadSignature, kid)
	}
	return c, nil
}
