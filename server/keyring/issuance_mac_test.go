package keyring

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// TestIssuanceMACVector: HMAC-SHA256 under HKDF-SHA256(master, info
// "hotline/issuance-mac/v1"), checked against a vector computed
// elsewhere (Python's hmac and an RFC 5869 HKDF) for master = 32 bytes of
// 0x01 and the message "hotline".
func TestIssuanceMACVector(t *testing.T) {
	k := &Keyring{masters: []MasterKey{{Generation: 1, Key: bytes.Repeat([]byte{1}, 32)}}}
	got, err := k.IssuanceMAC(1, []byte("hotline"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "8d75b3d804c1c69120b259d58f78c2b2e39940284813f1bf7b07ab751d2101a2"
	if hex.EncodeToString(got) != want {
		t.Fatalf("IssuanceMAC = %x, want %s", got, want)
	}
	if _, err := k.IssuanceMAC(2, []byte("hotline")); err == nil {
		t.Fatal("a generation the keyring does not hold gave a MAC")
	}
}
