package voicecode_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/voicecode"
)

// FuzzDecodeVoiceCode has two halves. Arbitrary text: Decode never panics,
// every error wraps ErrMalformed or ErrTypo, and what it accepts has the
// current version and a real generation, and verifies without panicking.
// Minted codes (issue time and sequence fuzzed): they decode to their
// fields, verify, and any one symbol changed is a typo.
func FuzzDecodeVoiceCode(f *testing.F) {
	const serial = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	key, err := voicecode.DeriveDeviceKey(bytes.Repeat([]byte{0x42}, 32), 1, serial)
	if err != nil {
		f.Fatal(err)
	}
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	good, err := voicecode.Mint(key, serial, at, 5)
	if err != nil {
		f.Fatal(err)
	}
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

	f.Add(good, uint32(0), int64(5), uint8(0), uint8(1))                                                // a genuine code, as minted
	f.Add(strings.ToLower(strings.ReplaceAll(good, "-", " ")), uint32(1), int64(1), uint8(3), uint8(7)) // typed sloppily
	f.Add(good[:len(good)-1], uint32(70000), int64(256), uint8(15), uint8(31))                          // one symbol short
	f.Add(good+"7", uint32(1<<20), int64(1<<40), uint8(0), uint8(0))                                    // one symbol too many
	f.Add("0000-0000-0000-0000", uint32(2), int64(255), uint8(1), uint8(2))                             // version 0, reserved
	f.Add("ZZZZ-ZZZZ-ZZZZ-ZZZZ", uint32(3), int64(2), uint8(2), uint8(2))                               // version 3, reserved
	f.Add("UUUU-UUUU-UUUU-UUUU", uint32(4), int64(3), uint8(4), uint8(4))                               // U is not in Crockford's alphabet
	f.Add("OIL0-1111-1111-1111", uint32(5), int64(4), uint8(5), uint8(5))                               // O, I and L read as 0 and 1
	f.Add("\xff\xfe", uint32(6), int64(6), uint8(6), uint8(6))                                          // invalid UTF-8
	f.Add("", uint32(7), int64(7), uint8(7), uint8(7))                                                  // empty

	now := at.Add(time.Hour)
	f.Fuzz(func(t *testing.T, s string, slotOffset uint32, seq int64, pos, sym uint8) {
		c, err := voicecode.Decode(s)
		if err != nil {
			if !errors.Is(err, voicecode.ErrMalformed) && !errors.Is(err, voicecode.ErrTypo) {
				t.Fatalf("Decode(%q) = %v: neither malformed nor typo", s, err)
			}
		} else {
			switch {
			case c.Version == voicecode.BoundVersion:
				if c.Generation != 0 || c.Slot16 != 0 {
					t.Fatalf("Decode(%q) = %+v: a bound code carries no generation or slot16", s, c)
				}
				if _, err := c.Verify(key, serial, now); !errors.Is(err, voicecode.ErrBound) {
					t.Fatalf("Verify of bound code %q: %v, want ErrBound", s, err)
				}
				c.VerifyBound(key, serial, 12345) // must not panic
			case c.Version != voicecode.Version || c.Generation < 1 || c.Generation > voicecode.MaxGeneration:
				t.Fatalf("Decode(%q) = %+v", s, c)
			default:
				c.Verify(key, serial, now) // must not panic
			}
		}

		// Minting round trip at a fuzzed issue time and sequence.
		if seq < 1 {
			seq = seq&(1<<62-1) + 1
		}
		issued := voicecode.Epoch.Add(time.Duration(slotOffset%(1<<22)) * voicecode.SlotSeconds * time.Second)
		code, err := voicecode.Mint(key, serial, issued, seq)
		if err != nil {
			t.Fatalf("Mint(%s, %d): %v", issued, seq, err)
		}
		d, err := voicecode.Decode(code)
		if err != nil || d.Slot16 != uint16(voicecode.SlotOf(issued)) || d.Seq8 != uint8(seq) || d.Generation != 1 {
			t.Fatalf("Decode(Mint) = %+v, %v", d, err)
		}
		fl, err := d.Verify(key, serial, issued.Add(time.Minute))
		if err != nil || fl.Slot != voicecode.SlotOf(issued) || fl.Seq8 != uint8(seq) {
			t.Fatalf("Verify(Mint) = %+v, %v", fl, err)
		}
		// One symbol changed: a typo, never a valid code.
		bare := []byte(strings.ReplaceAll(code, "-", ""))
		i := int(pos) % len(bare)
		repl := alphabet[int(sym)%len(alphabet)]
		if repl == bare[i] {
			return
		}
		bare[i] = repl
		if _, err := voicecode.Decode(string(bare)); !errors.Is(err, voicecode.ErrTypo) {
			t.Fatalf("%s with symbol %d changed to %c: %v, want a typo", code, i+1, repl, err)
		}
	})
}

// FuzzBoundCode: arbitrary text decodes as a request code, a recovery code
// or a voice code without panicking and with only ErrMalformed or ErrTypo;
// minted bound codes (time, sequence and nonce fuzzed) decode, verify for
// their nonce only, and any one symbol changed is a typo.
func FuzzBoundCode(f *testing.F) {
	const serial = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	key, err := voicecode.DeriveDeviceKey(bytes.Repeat([]byte{0x42}, 32), 3, serial)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(voicecode.FormatRequestCode(1), uint32(0), int64(5), uint64(1), uint8(0))
	f.Add("abcde fghjk", uint32(1), int64(256), uint64(1<<43-1), uint8(9))
	f.Add("8NCC-01FT-YNRY-PP9Q", uint32(1<<22-1), int64(1), uint64(0), uint8(3))
	f.Add(voicecode.FormatRecoveryCode(7), uint32(99), int64(1<<40), uint64(77), uint8(15))
	f.Add("\xff\xfe-", uint32(5), int64(3), uint64(3), uint8(1))
	f.Fuzz(func(t *testing.T, s string, slotOffset uint32, seq int64, nonce uint64, pos uint8) {
		for _, parse := range []func(string) (uint64, error){voicecode.ParseRequestCode, voicecode.ParseRecoveryCode} {
			if _, err := parse(s); err != nil && !errors.Is(err, voicecode.ErrMalformed) && !errors.Is(err, voicecode.ErrTypo) {
				t.Fatalf("parse(%q) = %v", s, err)
			}
		}
		if n, err := voicecode.ParseRequestCode(s); err == nil {
			if voicecode.FormatRequestCode(n) == "" || n >= 1<<voicecode.RequestNonceBits {
				t.Fatalf("ParseRequestCode(%q) = %d", s, n)
			}
		}
		nonce &= 1<<voicecode.RequestNonceBits - 1
		if got, err := voicecode.ParseRequestCode(strings.ToLower(voicecode.FormatRequestCode(nonce))); err != nil || got != nonce {
			t.Fatalf("request code of %d: %d, %v", nonce, got, err)
		}
		if seq < 1 {
			seq = seq&(1<<62-1) + 1
		}
		issued := voicecode.Epoch.Add(time.Duration(slotOffset%(1<<22)) * voicecode.SlotSeconds * time.Second)
		code, err := voicecode.MintBound(key, serial, issued, seq, nonce)
		if err != nil {
			t.Fatal(err)
		}
		c, err := voicecode.Decode(code)
		if err != nil || c.Version != voicecode.BoundVersion || c.Seq8 != uint8(seq) {
			t.Fatalf("Decode(MintBound) = %+v, %v", c, err)
		}
		fl, err := c.VerifyBound(key, serial, nonce)
		if err != nil || fl.Slot != voicecode.SlotOf(issued) || fl.Seq8 != uint8(seq) {
			t.Fatalf("VerifyBound = %+v, %v", fl, err)
		}
		if _, err := c.VerifyBound(key, serial, nonce^1<<(pos%43)); !errors.Is(err, voicecode.ErrWrongCode) {
			t.Fatalf("bound code for nonce %d accepted for another nonce: %v", nonce, err)
		}
		bare := []byte(strings.ReplaceAll(code, "-", ""))
		i := int(pos) % len(bare)
		bare[i] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"[(strings.IndexByte("0123456789ABCDEFGHJKMNPQRSTVWXYZ", bare[i])+1)%32]
		if _, err := voicecode.Decode(string(bare)); !errors.Is(err, voicecode.ErrTypo) {
			t.Fatalf("%s with symbol %d changed: %v, want a typo", code, i+1, err)
		}
	})
}
