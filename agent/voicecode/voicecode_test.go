package voicecode

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the current code")

const testSerial = "JZ6OES#2017-08-01#3#DVR1101134C08011"

var testMaster = bytes.Repeat([]byte{0x42}, 32)

func testKey(t testing.TB, gen int, serial string) DeviceKey {
	t.Helper()
	k, err := DeriveDeviceKey(testMaster, gen, serial)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var issued = time.Date(2026, 11, 28, 9, 17, 42, 0, time.UTC)

func mustMint(t testing.TB, k DeviceKey, serial string, at time.Time, seq int64) string {
	t.Helper()
	c, err := Mint(k, serial, at, seq)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verify(code string, k DeviceKey, serial string, now time.Time) (Fields, error) {
	c, err := Decode(code)
	if err != nil {
		return Fields{}, err
	}
	return c.Verify(k, serial, now)
}

func TestMintThenVerifyGivesBackTheFields(t *testing.T) {
	k := testKey(t, 3, testSerial)
	code := mustMint(t, k, testSerial, issued, 300)
	if len(code) != 19 || strings.Count(code, "-") != 3 {
		t.Fatalf("code %q: expected XXXX-XXXX-XXXX-XXXX", code)
	}
	f, err := verify(code, k, testSerial, issued.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if f.Generation != 3 || f.Seq8 != uint8(300%256) || !f.IssuedAt.Equal(SlotStart(issued)) || !f.ExpiresAt.Equal(SlotStart(issued).Add(24*time.Hour)) {
		t.Fatalf("fields %+v", f)
	}
}

func TestOutcomes(t *testing.T) {
	k := testKey(t, 1, testSerial)
	code := mustMint(t, k, testSerial, issued, 7)
	other := "JZ6OES#2017-08-01#3#DVR1101134C08012"
	tests := []struct {
		name   string
		code   string
		key    DeviceKey
		serial string
		now    time.Time
		want   error
	}{
		{"accepted/right-away", code, k, testSerial, issued, nil},
		{"accepted/lower-case-and-spaces", strings.ToLower(strings.ReplaceAll(code, "-", " ")), k, testSerial, issued, nil},
		{"accepted/device-clock-behind-within-skew", code, k, testSerial, SlotStart(issued).Add(-9 * time.Minute), nil},
		{"accepted/last-second", code, k, testSerial, ExpiresAt(issued).Add(-time.Second), nil},
		{"refused/expired-at-24h", code, k, testSerial, ExpiresAt(issued), ErrExpired},
		{"refused/expired-after-a-week", code, k, testSerial, issued.Add(7 * 24 * time.Hour), ErrExpired},
		{"refused/replayed-after-2^16-slots", code, k, testSerial, issued.Add(65536 * SlotSeconds * time.Second), ErrWrongCode},
		{"refused/device-clock-an-hour-behind", code, k, testSerial, issued.Add(-time.Hour), ErrNotYetValid},
		{"refused/device-clock-a-month-behind", code, k, testSerial, issued.Add(-30 * 24 * time.Hour), ErrNotYetValid},
		{"refused/oversized-input", code + strings.Repeat(" ", MaxInputLen), k, testSerial, issued, ErrMalformed},
		{"refused/code-for-another-serial", code, testKey(t, 1, other), other, issued, ErrWrongCode},
		{"refused/right-key-wrong-serial-bound", code, k, other, issued, ErrWrongCode},
		{"refused/another-generation-key", code, testKey(t, 2, testSerial), testSerial, issued, ErrWrongCode},
		{"refused/clock-not-set", code, k, testSerial, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), ErrClockNotSet},
		{"refused/too-short", code[:18], k, testSerial, issued, ErrMalformed},
		{"refused/too-long", code + "0", k, testSerial, issued, ErrMalformed},
		{"refused/letter-u", "U" + code[1:], k, testSerial, issued, ErrMalformed},
		{"refused/empty", "", k, testSerial, issued, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := verify(tt.code, tt.key, tt.serial, tt.now)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLenientDecodingReadsOAsZeroAndIAndLAsOne(t *testing.T) {
	k := testKey(t, 1, testSerial)
	for seq := int64(1); seq < 400; seq++ {
		code := mustMint(t, k, testSerial, issued, seq)
		if !strings.ContainsAny(code, "01") {
			continue
		}
		typed := strings.NewReplacer("0", "o", "1", "l").Replace(code)
		if _, err := verify(typed, k, testSerial, issued); err != nil {
			t.Fatalf("%q typed as %q: %v", code, typed, err)
		}
		typed = strings.NewReplacer("0", "O", "1", "I").Replace(code)
		if _, err := verify(typed, k, testSerial, issued); err != nil {
			t.Fatalf("%q typed as %q: %v", code, typed, err)
		}
		return
	}
	t.Fatal("no code with 0 or 1 found")
}

// TestRefusesEverySingleSymbolChange is the brute-force-by-typo attack and
// the honest typo alike: any one symbol changed is caught by the check
// symbol, so it is never accepted and never counted as a wrong code.
func TestRefusesEverySingleSymbolChange(t *testing.T) {
	k := testKey(t, 1, testSerial)
	for seq := int64(1); seq <= 20; seq++ {
		code := strings.ReplaceAll(mustMint(t, k, testSerial, issued, seq), "-", "")
		for i := 0; i < Length; i++ {
			for s := 0; s < 32; s++ {
				if alphabet[s] == code[i] {
					continue
				}
				b := []byte(code)
				b[i] = alphabet[s]
				if _, err := Decode(string(b)); !errors.Is(err, ErrTypo) {
					t.Fatalf("%s with symbol %d changed to %c: got %v, want ErrTypo", code, i, alphabet[s], err)
				}
			}
		}
	}
}

// TestRefusesEverySwapOfNeighbours: the commonest transcription error.
func TestRefusesEverySwapOfNeighbours(t *testing.T) {
	k := testKey(t, 1, testSerial)
	swaps := 0
	for seq := int64(1); seq <= 50; seq++ {
		code := strings.ReplaceAll(mustMint(t, k, testSerial, issued, seq), "-", "")
		for i := 0; i+1 < Length; i++ {
			if code[i] == code[i+1] {
				continue
			}
			b := []byte(code)
			b[i], b[i+1] = b[i+1], b[i]
			swaps++
			if _, err := Decode(string(b)); !errors.Is(err, ErrTypo) {
				t.Fatalf("%s with symbols %d,%d swapped: got %v, want ErrTypo", code, i, i+1, err)
			}
		}
	}
	if swaps < 500 {
		t.Fatalf("only %d swaps tried", swaps)
	}
}

// TestDammQuasigroupIsTotallyAntiSymmetric checks the algebra itself,
// exhaustively: x*y = 2x XOR y is a quasigroup and (c*x)*y = (c*y)*x
// implies x = y.
func TestDammQuasigroupIsTotallyAntiSymmetric(t *testing.T) {
	op := func(x, y byte) byte { return gfMul2(x) ^ y }
	for x := byte(0); x < 32; x++ {
		rows, cols := map[byte]bool{}, map[byte]bool{}
		for y := byte(0); y < 32; y++ {
			rows[op(x, y)] = true
			cols[op(y, x)] = true
		}
		if len(rows) != 32 || len(cols) != 32 {
			t.Fatalf("not a quasigroup at %d", x)
		}
	}
	for c := byte(0); c < 32; c++ {
		for x := byte(0); x < 32; x++ {
			for y := byte(0); y < 32; y++ {
				if x != y && op(op(c, x), y) == op(op(c, y), x) {
					t.Fatalf("not anti-symmetric: c=%d x=%d y=%d", c, x, y)
				}
			}
		}
	}
}

// TestForgedCodeWithValidCheckSymbolIsAWrongCode: an attacker can compute
// the check symbol (it is public), so every field change with a fixed-up
// check symbol must fail the MAC.
func TestForgedCodeWithValidCheckSymbolIsAWrongCode(t *testing.T) {
	k := testKey(t, 1, testSerial)
	code := strings.ReplaceAll(mustMint(t, k, testSerial, issued, 9), "-", "")
	for i := 0; i < Length-1; i++ {
		b := []byte(code)
		b[i] = alphabet[(decodeTable[b[i]]+1)%32]
		var sym [Length]byte
		for j := 0; j < Length-1; j++ {
			sym[j] = decodeTable[b[j]]
		}
		b[Length-1] = alphabet[checkSymbol(sym[:Length-1])]
		_, err := verify(string(b), k, testSerial, issued)
		if err == nil {
			t.Fatalf("forged %s accepted", b)
		}
		if !errors.Is(err, ErrWrongCode) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("forged %s: got %v", b, err)
		}
	}
}

func TestDeviceKeysDifferPerSerialAndGeneration(t *testing.T) {
	a := testKey(t, 1, testSerial)
	b := testKey(t, 1, "JZ6OES#2017-08-01#3#DVR1101134C08012")
	c := testKey(t, 2, testSerial)
	if a.Equal(b) || bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two serials share a device key")
	}
	// The same master bytes under another generation number derive the
	// same bytes: generations differ by their master keys, not by derivation.
	if !bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("derivation must depend on master and serial only")
	}
	if a.Equal(c) {
		t.Fatal("keys of different generations compare equal")
	}
}

func TestDeviceKeyNeverPrints(t *testing.T) {
	k := testKey(t, 1, testSerial)
	hexKey := hex.EncodeToString(k.Bytes())
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %x %s", k, k, k, k, k), fmt.Sprintf("%v", struct{ K DeviceKey }{k})} {
		if strings.Contains(s, hexKey) || strings.Contains(s, hexKey[:8]) {
			t.Fatalf("key leaked in %q", s)
		}
	}
}

func TestKeyFileRoundTripAndRefusals(t *testing.T) {
	k := testKey(t, 2, testSerial)
	b, err := MarshalKeyFile(testSerial, k)
	if err != nil {
		t.Fatal(err)
	}
	s, k2, err := ParseKeyFile(b)
	if err != nil || s != testSerial || !k.Equal(k2) {
		t.Fatalf("round trip: %v %q", err, s)
	}
	for name, mutate := range map[string]func(string) string{
		"refused/short-key":     func(s string) string { return strings.Replace(s, `"key": "`, `"key": "00`, 1)[:len(s)-20] + "\"\n}" },
		"refused/wrong-type":    func(s string) string { return strings.Replace(s, KeyFileType, "something-else", 1) },
		"refused/generation-0":  func(s string) string { return strings.Replace(s, `"generation": 2`, `"generation": 0`, 1) },
		"refused/unknown-field": func(s string) string { return strings.Replace(s, `"version"`, `"extra": 1, "version"`, 1) },
		"refused/not-json":      func(string) string { return "hello" },
	} {
		if _, _, err := ParseKeyFile([]byte(mutate(string(b)))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPhoneticReadout(t *testing.T) {
	got := Phonetic("7KQF-0X1Z")
	want := "7 K Q F - seven, Kilo, Quebec, Foxtrot / 0 X 1 Z - zero, X-ray, one, Zulu"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// phoneticBySplit is Phonetic as it was first written (split, join), the
// reference the allocation-free one must match byte for byte.
func phoneticBySplit(code string) string {
	groups := strings.Split(code, "-")
	out := make([]string, 0, len(groups))
	for _, g := range groups {
		var chars, words []string
		for i := 0; i < len(g); i++ {
			w := phoneticWords[g[i]]
			if w == "" {
				return code
			}
			chars = append(chars, g[i:i+1])
			words = append(words, w)
		}
		out = append(out, strings.Join(chars, " ")+" - "+strings.Join(words, ", "))
	}
	return strings.Join(out, " / ")
}

func TestPhoneticMatchesTheSplitAndJoinReadout(t *testing.T) {
	for _, code := range []string{"", "-", "--", "7KQF-0X1Z", "7KQF-0X1Z-ABCD-EFGH", "A", "A-", "-A", "A--B",
		"7kqf-0x1z", "7KQF-0X1I", "7KQF 0X1Z", "7KQF-0X1Z\n", "\xff"} {
		if got, want := Phonetic(code), phoneticBySplit(code); got != want {
			t.Errorf("Phonetic(%q) = %q, want %q", code, got, want)
		}
	}
	syms := alphabet + "-aIO# "
	for i := range 2000 {
		b := make([]byte, i%24)
		for j := range b {
			b[j] = syms[(i*7+j*13+j*j)%len(syms)]
		}
		if got, want := Phonetic(string(b)), phoneticBySplit(string(b)); got != want {
			t.Fatalf("Phonetic(%q) = %q, want %q", b, got, want)
		}
	}
}

// vector is one line of testdata/vectors.json, the test vectors FORMAT.md
// points firmware teams at.
type vector struct {
	MasterHex  string `json:"master_key_hex"`
	Generation int    `json:"generation"`
	Serial     string `json:"serial"`
	DeviceKey  string `json:"device_key_hex"`
	IssuedAt   string `json:"issued_at"`
	Slot       uint64 `json:"slot"`
	Sequence   int64  `json:"sequence"`
	MACInput   string `json:"mac_input_hex"`
	Code       string `json:"code"`
	Phonetic   string `json:"phonetic"`
}

func makeVectors(t *testing.T) []vector {
	masters := [][]byte{bytes.Repeat([]byte{0x00, 0x01}, 16), bytes.Repeat([]byte{0x42}, 32)}
	serials := []string{testSerial, "AB12CD#2024-02-29#0#XVR0000000000001", "ZZZZZZ#2030-12-31#999#DVRZZZZZZZZZZZZZZZZZZZZZ"}
	times := []time.Time{Epoch, issued, time.Date(2036, 6, 1, 23, 59, 59, 0, time.UTC)}
	seqs := []int64{1, 255, 256, 1_000_003}
	var out []vector
	i := 0
	for mi, m := range masters {
		for _, s := range serials {
			at := times[i%len(times)]
			seq := seqs[i%len(seqs)]
			gen := 1 + mi*14 // 1 and 15
			i++
			k, err := DeriveDeviceKey(m, gen, s)
			if err != nil {
				t.Fatal(err)
			}
			code := mustMint(t, k, s, at, seq)
			in := append([]byte(macLabel), byte(Version), byte(gen))
			in = append(in, make([]byte, 8)...)
			slot := SlotOf(at)
			for b := 0; b < 8; b++ {
				in[len(in)-1-b] = byte(slot >> (8 * b))
			}
			in = append(in, byte(seq))
			in = append(in, s...)
			out = append(out, vector{hex.EncodeToString(m), gen, s, hex.EncodeToString(k.Bytes()), at.Format(time.RFC3339), slot, seq, hex.EncodeToString(in), code, Phonetic(code)})
		}
	}
	return out
}

// TestVectorsDoNotDrift fails when the format changes: the committed vectors
// are what firmware teams implement against. Run with -update only for a
// deliberate new format version.
func TestVectorsDoNotDrift(t *testing.T) {
	got, err := json.MarshalIndent(makeVectors(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	const path = "testdata/vectors.json"
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the voice code format drifted from %s: a firmware built from the vectors would refuse these codes", path)
	}
	var vs []vector
	if err := json.Unmarshal(want, &vs); err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		m, _ := hex.DecodeString(v.MasterHex)
		k, _ := DeriveDeviceKey(m, v.Generation, v.Serial)
		at, _ := time.Parse(time.RFC3339, v.IssuedAt)
		if _, err := verify(v.Code, k, v.Serial, at); err != nil {
			t.Errorf("vector %s: %v", v.Code, err)
		}
	}
}
