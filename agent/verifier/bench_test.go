package verifier

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

// The benchmarks measure the cryptographic check alone (no state I/O,
// which BenchmarkStateSave in agent/state measures) against the one primitive it cannot
// avoid. BenchmarkVerifyVoiceCode and BenchmarkVerifyGrant also time their
// baseline in the same run, interleaved in blocks so that both see the same
// machine load, and report the ratio as "x-baseline". Goals (DESIGN.md):
// voice code ≤ 2, grant ≤ 1.2.

// voiceMACInput is the voice code's MAC input, as computeMAC in
// agent/voicecode builds it: label || version || generation || slot (8
// bytes, big endian) || seq8 || canonical serial.
func voiceMACInput(slot uint64, seq8 uint8) []byte {
	msg := []byte("hotline/voice-code/v1\x00")
	msg = append(msg, voicecode.Version, 1)
	msg = binary.BigEndian.AppendUint64(msg, slot)
	msg = append(msg, seq8)
	return append(msg, testSerial...)
}

// TestBaselineHashesTheVoiceCodeMACInput keeps the baseline honest: its
// HMAC's first 45 bits are the MAC in the minted code.
func TestBaselineHashesTheVoiceCodeMACInput(t *testing.T) {
	code := strings.ReplaceAll(mintCode(t, testSerial, t0, 5), "-", "")
	var low uint64 // the code's low 64 data bits; the MAC is the low 45
	for i := 0; i < voicecode.Length-1; i++ {
		low = low<<5 | uint64(strings.IndexByte(alphabet, code[i]))
	}
	k := deviceKey(t, testSerial)
	m := hmac.New(sha256.New, k.Bytes())
	m.Write(voiceMACInput(voicecode.SlotOf(t0), 5))
	want := binary.BigEndian.Uint64(m.Sum(nil)) >> (64 - voicecode.MACBits)
	if got := low & (1<<voicecode.MACBits - 1); got != want {
		t.Fatalf("code MAC %#x, baseline HMAC %#x: the baseline hashes something else", got, want)
	}
}

// interleave runs op b.N times under the timer and base as often off it, in
// blocks, and reports op's cost relative to base.
func interleave(b *testing.B, block int, op, base func()) {
	b.ReportAllocs()
	var baseDur time.Duration
	baseN := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%block == 0 {
			b.StopTimer()
			start := time.Now()
			for j := 0; j < block; j++ {
				base()
			}
			baseDur += time.Since(start)
			baseN += block
			b.StartTimer()
		}
		op()
	}
	b.StopTimer()
	if baseN > 0 && b.N > 0 {
		opNs := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		baseNs := float64(baseDur.Nanoseconds()) / float64(baseN)
		b.ReportMetric(baseNs, "baseline-ns/op")
		b.ReportMetric(opNs/baseNs, "x-baseline")
	}
}

type voiceBench struct {
	code string
	key  voicecode.DeviceKey
	now  time.Time
	msg  []byte
	raw  []byte
}

func newVoiceBench(b *testing.B) *voiceBench {
	k := deviceKey(b, testSerial)
	return &voiceBench{code: mintCode(b, testSerial, t0, 5), key: k, now: t0.Add(time.Hour), msg: voiceMACInput(voicecode.SlotOf(t0), 5), raw: k.Bytes()}
}

func (vb *voiceBench) verify(b *testing.B) {
	c, err := voicecode.Decode(vb.code)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Verify(vb.key, testSerial, vb.now); err != nil {
		b.Fatal(err)
	}
}

var sink []byte

func (vb *voiceBench) hmac() {
	m := hmac.New(sha256.New, vb.raw)
	m.Write(vb.msg)
	var sum [sha256.Size]byte
	sink = m.Sum(sum[:0])
}

// BenchmarkVerifyVoiceCode: voicecode.Decode + Code.Verify of a genuine code.
func BenchmarkVerifyVoiceCode(b *testing.B) {
	vb := newVoiceBench(b)
	interleave(b, 512, func() { vb.verify(b) }, vb.hmac)
}

// BenchmarkHMACSHA256Baseline: one bare HMAC-SHA256 of the voice code's MAC
// input under the device key.
func BenchmarkHMACSHA256Baseline(b *testing.B) {
	vb := newVoiceBench(b)
	b.ReportAllocs()
	for b.Loop() {
		vb.hmac()
	}
}

type grantBench struct {
	token string
	trust *grant.TrustSet
	now   time.Time
	pub   ed25519.PublicKey
	input []byte
	sig   []byte
}

func newGrantBench(b *testing.B) *grantBench {
	tok := mintGrant(b, testSerial, t0, 5)
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	return &grantBench{token: tok, trust: trustSet(), now: t0.Add(time.Hour), pub: testSigner.Public().(ed25519.PublicKey), input: []byte(tok[:i]), sig: sig}
}

func (gb *grantBench) verify(b *testing.B) {
	if _, err := gb.trust.Verify(gb.token, testSerial, gb.now); err != nil {
		b.Fatal(err)
	}
}

func (gb *grantBench) ed25519(b *testing.B) {
	if !ed25519.Verify(gb.pub, gb.input, gb.sig) {
		b.Fatal("signature does not verify")
	}
}

// BenchmarkVerifyGrant: grant.TrustSet.Verify of a genuine grant.
func BenchmarkVerifyGrant(b *testing.B) {
	gb := newGrantBench(b)
	interleave(b, 32, func() { gb.verify(b) }, func() { gb.ed25519(b) })
}

// BenchmarkEd25519VerifyBaseline: one bare ed25519.Verify of the grant's
// signing input and signature.
func BenchmarkEd25519VerifyBaseline(b *testing.B) {
	gb := newGrantBench(b)
	b.ReportAllocs()
	for b.Loop() {
		gb.ed25519(b)
	}
}

// BenchmarkVerifierAccept: a whole acceptance through the Verifier,
// including its two state saves; what the person at the DVR waits for.
func BenchmarkVerifierAccept(b *testing.B) {
	v := newVerifier(b, "")
	var codes []string
	for i := 0; i < 250*100; i++ {
		codes = append(codes, mintCode(b, testSerial, t0.Add(time.Duration(i/250)*10*time.Minute), int64(i%250+1)))
		if len(codes) >= b.N {
			break
		}
	}
	now := t0.Add(17 * time.Hour)
	b.ResetTimer()
	for i := 0; i < b.N && i < len(codes); i++ {
		if r, _ := v.Verify(codes[i], now); r.Outcome != Accepted {
			b.Fatal(r.Message)
		}
	}
}
