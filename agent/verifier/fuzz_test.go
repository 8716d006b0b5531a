package verifier

import (
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/state"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

// FuzzVerifierInput feeds arbitrary input to a verifier with fresh
// in-memory state: it must never panic, always say something, and accept
// nothing but the genuine issuances it was seeded with (or a lenient
// spelling of them).
func FuzzVerifierInput(f *testing.F) {
	code := mintCode(f, testSerial, t0, 5)
	g := mintGrant(f, testSerial, t0, 5)
	genuine := map[[2]uint64]bool{{voicecode.SlotOf(t0), 5}: true}

	f.Add(code)                                                // genuine: the fuzzer mutates from an accepted code
	f.Add(strings.ToLower(strings.ReplaceAll(code, "-", " "))) // the same, typed sloppily
	f.Add(code[:len(code)-1])                                  // one symbol short
	f.Add(code + "0")                                          // one symbol too many
	f.Add(strings.Replace(code, code[:1], "U", 1))             // U is not in the alphabet
	f.Add(mintCode(f, otherSerial, t0, 5))                     // check-symbol valid, wrong MAC: a counted attempt
	f.Add(g)                                                   // genuine grant
	f.Add(g[:len(g)-2])                                        // grant with a damaged signature
	f.Add(mintGrant(f, otherSerial, t0, 5))                    // another device's grant
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")              // alg none
	f.Add("ey..")                                              // the shape of a grant and nothing else
	f.Add("")                                                  // empty input
	f.Add(strings.Repeat("A", 5000))                           // longer than any grant
	f.Add("0000-0000-0000-0000")                               // all zeros: version 0 is reserved

	v := newVerifier(f, "")
	now := t0.Add(time.Minute)
	f.Fuzz(func(t *testing.T, in string) {
		m := &memSession{st: &state.State{}}
		v.open = func() (session, error) { return m, nil }
		r, err := v.Verify(in, now)
		if r.Message == "" || r.Outcome.String() == "unknown" {
			t.Fatalf("Verify(%q) = %+v: no message or unknown outcome", in, r)
		}
		if (err == nil) != (r.Outcome == Accepted) {
			t.Fatalf("Verify(%q): outcome %s, error %v", in, r.Outcome, err)
		}
		if r.Outcome == Accepted && !genuine[[2]uint64{r.Slot, uint64(uint8(r.Sequence))}] {
			t.Fatalf("Verify(%q) accepted an issuance nobody made: %+v", in, r)
		}
		if r.Outcome == Accepted && (m.st.Slot != r.Slot || m.st.Failures != 0) {
			t.Fatalf("accepted without recording it: state %+v", *m.st)
		}
		if r.Outcome == Internal {
			t.Fatalf("Verify(%q): internal error %v", in, r.Err)
		}
	})
}
