package state

import (
	"bytes"
	"testing"
)

// FuzzLoadState feeds arbitrary bytes to the state parser: it must never
// panic, and whatever it accepts must be exactly the canonical encoding of
// the state it returns (no two files mean the same state, no slack bytes an
// attacker could play with).
func FuzzLoadState(f *testing.F) {
	good := Marshal(sample)
	f.Add(good)                          // a valid file: the fuzzer mutates from here
	f.Add(Marshal(State{}))              // the zero state, as written after a first wrong attempt
	f.Add(good[:len(good)-1])            // truncated by one byte: a torn write
	f.Add(good[:10])                     // header only
	f.Add([]byte{})                      // empty file: created but never written
	f.Add(append(good, good...))         // two states back to back
	f.Add([]byte("HLAGENT\x00\x00\x02")) // a future version
	flipped := append([]byte(nil), good...)
	flipped[20] ^= 0x01 // a bit flip in the failure counter
	f.Add(flipped)
	f.Add(marshalV1(sample))          // a version 1 file
	f.Add(Marshal(State{Mail: true})) // one optional part
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := Unmarshal(b)
		if err != nil {
			return
		}
		enc := Marshal(st)
		if len(b) == SizeV1 {
			enc = marshalV1(st)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("accepted %x as %+v, whose encoding differs", b, st)
		}
	})
}
