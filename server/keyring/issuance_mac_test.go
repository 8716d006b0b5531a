package keyring

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"
)

// TestIssuanceMACVector: HMAC-SHA256 under HKDF-SHA256(master, info
// "hotline/issuance-mac/v1"), checked against a vector computed
// elsewhere (Python's hmac and an RFC 5869 HKDF) for master = 32 bytes of
// 0x01 and the message "hotline".
func TestIssuanceMACVector(t *testing.T) {
	k := &Keyring{masters: []MasterKey{{Generation: 1, Key: bytes.Repeat([]byte{1}, 32)}}}
	got, err := k.IssuanceMAC(1, []byte("hotline")) // the key derived on the fly
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.masters[0].issuanceMACKey(); err != nil { // as Open caches it
		t.Fatal(err)
	}
	if cached, _ := k.IssuanceMAC(1, []byte("hotline")); !bytes.Equal(cached, got) {
		t.Fatalf("cached key gives %x, derived %x", cached, got)
	}
	const want = "8d75b3d804c1c69120b259d58f78c2b2e39940284813f1bf7b07ab751d2101a2"
	if hex.EncodeToString(got) != want {
		t.Fatalf("IssuanceMAC = %x, want %s", got, want)
	}
	if _, err := k.IssuanceMAC(2, []byte("hotline")); err == nil {
		t.Fatal("a generation the keyring does not hold gave a MAC")
	}
}

// BenchmarkIssuanceMAC: what the proof adds to an issuance (and to each
// retry's check), against one bare HMAC-SHA256 of the same 200-byte
// message under a ready key, interleaved in the same run (batches of 100).
func BenchmarkIssuanceMAC(b *testing.B) {
	k := &Keyring{masters: []MasterKey{{Generation: 1, Key: bytes.Repeat([]byte{1}, 32)}}}
	if _, err := k.masters[0].issuanceMACKey(); err != nil { // as Open does
		b.Fatal(err)
	}
	msg := bytes.Repeat([]byte{'m'}, 200)
	key := bytes.Repeat([]byte{2}, 32)
	var bare, ours time.Duration
	for b.Loop() {
		t0 := time.Now()
		for range 100 {
			h := hmac.New(sha256.New, key)
			h.Write(msg)
			h.Sum(nil)
		}
		t1 := time.Now()
		for range 100 {
			k.IssuanceMAC(1, msg)
		}
		bare, ours = bare+t1.Sub(t0), ours+time.Since(t1)
	}
	n := float64(100 * b.N)
	b.ReportMetric(float64(bare.Nanoseconds())/n, "bare-hmac-ns")
	b.ReportMetric(float64(ours.Nanoseconds())/n, "issuance-mac-ns")
	b.ReportMetric(float64(ours)/float64(bare), "ratio")
}
