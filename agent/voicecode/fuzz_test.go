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
			if c.Version != voicecode.Version || c.Generation < 1 || c.Generation > voicecode.MaxGeneration {
				t.Fatalf("Decode(%q) = %+v", s, c)
			}
			c.Verify(key, serial, now) // must not panic
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
