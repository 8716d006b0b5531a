package keyring_test

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server/keyring"
)

// TestOwnerCodeVectors pins the owner-code derivation: a change to the
// label, the message or the reduction breaks every code in flight.
func TestOwnerCodeVectors(t *testing.T) {
	master := bytes.Repeat([]byte{1}, 32)
	const sn = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	for _, v := range []struct{ id, want string }{
		{"00000000-0000-4000-8000-000000000000", "199106"},
		{"00000000-0000-4000-8000-000000000001", "858190"},
	} {
		got, err := keyring.DeriveOwnerCode(master, v.id, sn)
		if err != nil || got != v.want {
			t.Errorf("DeriveOwnerCode(%s) = %q, %v; want %q", v.id, got, err, v.want)
		}
		// The same, spelt out from the standard library.
		k, _ := hkdf.Key(sha256.New, master, nil, "hotline/owner-code-key/v1", 32)
		m := hmac.New(sha256.New, k)
		m.Write([]byte("hotline/owner-code/v1\x00" + v.id + "\x00" + sn))
		if want := fmt.Sprintf("%06d", binary.BigEndian.Uint64(m.Sum(nil)[:8])%1e6); got != want {
			t.Errorf("spelt out: %s, derived %s", want, got)
		}
	}
}

// TestOwnerCodeKeyIsNotADeviceKey: the owner-code key is domain
// separated from every device key, so that a DVR's extracted key (which
// is HKDF of the same master) never yields an owner code, nor the reverse.
func TestOwnerCodeKeyIsNotADeviceKey(t *testing.T) {
	master := bytes.Repeat([]byte{7}, 32)
	ok, _ := hkdf.Key(sha256.New, master, nil, "hotline/owner-code-key/v1", 32)
	for _, sn := range []string{"", "JZ6OES#2017-08-01#3#DVR1101134C08011", "-key/v1"} {
		dk, err := voicecode.DeriveDeviceKey(master, 1, sn)
		if err != nil {
			continue // not a serial: no device key either
		}
		if bytes.Equal(dk.Bytes(), ok) {
			t.Fatalf("owner-code key equals the device key of %q", sn)
		}
	}
}

// TestOwnerCodeDependsOnSerialAndID: a code of one device or one request
// is not the code of another (over 200 ids, collisions among six digits
// stay rare).
func TestOwnerCodeDependsOnSerialAndID(t *testing.T) {
	master := bytes.Repeat([]byte{3}, 32)
	a, _ := keyring.DeriveOwnerCode(master, "id", "JZ6OES#2017-08-01#3#DVR1101134C08011")
	b, _ := keyring.DeriveOwnerCode(master, "id", "JZ6OES#2017-08-01#3#DVR1101134C08012")
	if a == b {
		t.Fatalf("two serials, one code %s", a)
	}
	seen := map[string]bool{}
	for i := range 200 {
		c, _ := keyring.DeriveOwnerCode(master, fmt.Sprint(i), "S")
		if len(c) != 6 {
			t.Fatalf("code %q is not six digits", c)
		}
		seen[c] = true
	}
	if len(seen) < 190 {
		t.Fatalf("only %d distinct codes of 200", len(seen))
	}
}
