package voicecode

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"
)

func TestBoundCodeVerifiesOnlyForItsNonceSerialAndKey(t *testing.T) {
	k := testKey(t, 2, testSerial)
	const nonce = 0x123456789AB
	code, err := MintBound(k, testSerial, issued, 300, nonce)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Decode(code)
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.VerifyBound(k, testSerial, nonce)
	if err != nil || f.Slot != SlotOf(issued) || f.Seq8 != 300%256 || !f.IssuedAt.Equal(SlotStart(issued)) {
		t.Fatalf("VerifyBound = %+v, %v", f, err)
	}
	other := "AB12CD#2024-02-29#0#XVR0000000000001"
	for name, try := range map[string]func() error{
		"refused/other-nonce":      func() error { _, err := c.VerifyBound(k, testSerial, nonce+1); return err },
		"refused/other-serial":     func() error { _, err := c.VerifyBound(testKey(t, 2, other), other, nonce); return err },
		"refused/other-generation": func() error { _, err := c.VerifyBound(testKey(t, 3, testSerial), testSerial, nonce); return err },
	} {
		if err := try(); !errors.Is(err, ErrWrongCode) {
			t.Errorf("%s: %v, want ErrWrongCode", name, err)
		}
	}
	if _, err := c.Verify(k, testSerial, issued); !errors.Is(err, ErrBound) {
		t.Errorf("a bound code given to the time-based Verify: %v, want ErrBound", err)
	}
	tc, _ := Decode(mustMint(t, k, testSerial, issued, 300))
	if _, err := tc.VerifyBound(k, testSerial, nonce); !errors.Is(err, ErrMalformed) {
		t.Errorf("a time-based code given to VerifyBound: %v, want ErrMalformed", err)
	}
}

func TestBoundCodeRangeIsRefusedOutside2024To2103(t *testing.T) {
	k := testKey(t, 1, testSerial)
	if _, err := MintBound(k, testSerial, Epoch.Add(-time.Second), 1, 1); err == nil {
		t.Error("minted a bound code before the epoch")
	}
	last := time.Unix(int64(epochSlot+1<<BoundSlotBits-1)*SlotSeconds, 0)
	if _, err := MintBound(k, testSerial, last, 1, 1); err != nil {
		t.Errorf("last slot %s: %v", last, err)
	}
	if _, err := MintBound(k, testSerial, last.Add(SlotSeconds*time.Second), 1, 1); err == nil {
		t.Error("minted a bound code past the 22-bit slot range")
	}
	if _, err := MintBound(k, testSerial, issued, 1, 1<<RequestNonceBits); err == nil {
		t.Error("minted a bound code for a 44-bit nonce")
	}
}

func TestRequestAndRecoveryCodesRoundTripAndCatchTypos(t *testing.T) {
	for _, n := range []uint64{0, 1, 1<<RequestNonceBits - 1, 0x5A5A5A5A5A} {
		s := FormatRequestCode(n)
		if len(s) != RequestLength+1 || s[5] != '-' {
			t.Fatalf("request code %q: expected XXXXX-XXXXX", s)
		}
		if got, err := ParseRequestCode(" " + s + " "); err != nil || got != n {
			t.Fatalf("ParseRequestCode(%q) = %d, %v", s, got, err)
		}
		b := []byte(s)
		b[0], b[1] = b[1], b[0]
		if b[0] != b[1] {
			if _, err := ParseRequestCode(string(b)); !errors.Is(err, ErrTypo) {
				t.Errorf("swapped %q: %v, want a typo", b, err)
			}
		}
	}
	for _, v := range []uint64{0, 1<<RecoveryBits - 1, 0x1234567890ABC} {
		s := FormatRecoveryCode(v)
		if got, err := ParseRecoveryCode(s); err != nil || got != v {
			t.Fatalf("ParseRecoveryCode(%q) = %d, %v", s, got, err)
		}
		if Symbols(s) != RecoveryLength {
			t.Fatalf("Symbols(%q) = %d", s, Symbols(s))
		}
	}
	if _, err := ParseRecoveryCode(FormatRequestCode(5)); !errors.Is(err, ErrMalformed) {
		t.Errorf("a request code read as a recovery code: %v", err)
	}
}

// boundVector is one line of testdata/vectors-v2.json.
type boundVector struct {
	MasterHex   string `json:"master_key_hex"`
	Generation  int    `json:"generation"`
	Serial      string `json:"serial"`
	DeviceKey   string `json:"device_key_hex"`
	Nonce       uint64 `json:"nonce"`
	RequestCode string `json:"request_code"`
	IssuedAt    string `json:"issued_at"`
	Slot        uint64 `json:"slot"`
	Sequence    int64  `json:"sequence"`
	MACInput    string `json:"mac_input_hex"`
	Code        string `json:"code"`
	Recovery    uint64 `json:"recovery_value"`
	RecoveryCd  string `json:"recovery_code"`
	RecoveryTag string `json:"recovery_tag_hex"`
}

func makeBoundVectors(t *testing.T) []boundVector {
	masters := [][]byte{bytes.Repeat([]byte{0x00, 0x01}, 16), bytes.Repeat([]byte{0x42}, 32)}
	serials := []string{testSerial, "ZZZZZZ#2030-12-31#999#DVRZZZZZZZZZZZZZZZZZZZZZ"}
	times := []time.Time{Epoch, issued, time.Date(2103, 10, 1, 0, 0, 0, 0, time.UTC)}
	nonces := []uint64{0, 1<<RequestNonceBits - 1, 0x2B5630014A5}
	var out []boundVector
	i := 0
	for mi, m := range masters {
		for _, s := range serials {
			gen := 1 + mi*14
			at, nonce, seq := times[i%3], nonces[i%3], []int64{1, 255, 256, 1_000_003}[i]
			i++
			k, err := DeriveDeviceKey(m, gen, s)
			if err != nil {
				t.Fatal(err)
			}
			code, err := MintBound(k, s, at, seq, nonce)
			if err != nil {
				t.Fatal(err)
			}
			in := append([]byte(boundLabel), BoundVersion, byte(gen))
			in = binary.BigEndian.AppendUint64(in, SlotOf(at))
			in = append(in, byte(seq))
			in = binary.BigEndian.AppendUint64(in, nonce)
			in = append(in, s...)
			rv := nonce ^ 0x1F0F0F0F0F0F0F
			rv &= 1<<RecoveryBits - 1
			tag := k.RecoveryTag(s, rv)
			out = append(out, boundVector{hex.EncodeToString(m), gen, s, hex.EncodeToString(k.Bytes()), nonce, FormatRequestCode(nonce),
				at.Format(time.RFC3339), SlotOf(at), seq, hex.EncodeToString(in), code, rv, FormatRecoveryCode(rv), hex.EncodeToString(tag[:])})
		}
	}
	return out
}

// TestBoundVectorsDoNotDrift fails when the challenge-bound, request or
// recovery code format changes: the committed vectors are what firmware
// teams implement against.
func TestBoundVectorsDoNotDrift(t *testing.T) {
	got, err := json.MarshalIndent(makeBoundVectors(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	const path = "testdata/vectors-v2.json"
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
		t.Fatalf("the bound code format drifted from %s: a firmware built from the vectors would refuse these codes", path)
	}
	var vs []boundVector
	if err := json.Unmarshal(want, &vs); err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		m, _ := hex.DecodeString(v.MasterHex)
		k, _ := DeriveDeviceKey(m, v.Generation, v.Serial)
		nonce, err := ParseRequestCode(v.RequestCode)
		if err != nil || nonce != v.Nonce {
			t.Errorf("vector request code %s: %d, %v", v.RequestCode, nonce, err)
		}
		c, err := Decode(v.Code)
		if err != nil {
			t.Fatalf("vector %s: %v", v.Code, err)
		}
		if f, err := c.VerifyBound(k, v.Serial, nonce); err != nil || f.Slot != v.Slot {
			t.Errorf("vector %s: %+v, %v", v.Code, f, err)
		}
	}
}
