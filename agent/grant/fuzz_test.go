package grant_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
)

// FuzzVerifyGrant: Verify never panics on arbitrary tokens, and accepts
// only the one issuance genuinely signed for this device (a mutation may
// at most re-encode the same signature), with every claim the format
// requires.
func FuzzVerifyGrant(f *testing.F) {
	const serial = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	trust := grant.NewTrustSet(map[string]ed25519.PublicKey{"k1": priv.Public().(ed25519.PublicKey)})
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	want := grant.NewClaims(serial, "iss-1", 5, at, at.Add(24*time.Hour))
	good, err := grant.Sign(priv, "k1", want)
	if err != nil {
		f.Fatal(err)
	}
	other, err := grant.Sign(priv, "k1", grant.NewClaims("JZ6OES#2017-08-01#3#DVR1101134C08012", "iss-2", 6, at, at.Add(time.Hour)))
	if err != nil {
		f.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	parts := strings.Split(good, ".")

	f.Add(good)                                                                              // genuine: the fuzzer mutates from an accepted token
	f.Add(other)                                                                             // genuine signature, another device
	f.Add(good[:len(good)-1])                                                                // signature cut short
	f.Add(good + ".")                                                                        // a fourth segment
	f.Add(parts[0] + "." + parts[1] + ".")                                                   // signature removed
	f.Add(b64([]byte(`{"alg":"none","kid":"k1"}`)) + "." + parts[1] + ".")                   // alg none
	f.Add(b64([]byte(`{"alg":"HS256","kid":"k1"}`)) + "." + parts[1] + "." + parts[2])       // algorithm confusion
	f.Add(b64([]byte(`{"alg":"EdDSA","kid":"nobody"}`)) + "." + parts[1] + "." + parts[2])   // unknown kid
	f.Add(b64([]byte(`{"alg":"EdDSA","kid":["k1"]}`)) + "." + parts[1] + "." + parts[2])     // kid of the wrong JSON type
	f.Add(parts[0] + "." + b64([]byte(`{"sub":"`+serial+`","exp":1e400}`)) + "." + parts[2]) // number overflow in a claim
	f.Add(strings.Repeat("a", grant.MaxTokenLen+1))                                          // over the length limit
	f.Add("")

	now := at.Add(time.Hour)
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := trust.Verify(tok, serial, now)
		if err != nil {
			return
		}
		if c.Subject != serial || c.Issuer != grant.Issuer || c.ID != want.ID || c.Sequence != want.Sequence || c.Slot != want.Slot ||
			!c.IssuedAt.Equal(want.IssuedAt.Time) || !c.ExpiresAt.Equal(want.ExpiresAt.Time) {
			t.Fatalf("Verify(%q) accepted claims %+v, not the one genuine issuance", tok, c)
		}
		if c.ExpiresAt.Sub(c.IssuedAt.Time) > grant.MaxLifetime {
			t.Fatalf("accepted a lifetime of %s", c.ExpiresAt.Sub(c.IssuedAt.Time))
		}
	})
}
