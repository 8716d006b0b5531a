// Package voicecode mints and verifies the temporary password a support
// agent reads over the phone: 16 Crockford base32 symbols carrying a format
// version, the key generation, the issue time, a per-device sequence number
// and a 45-bit HMAC-SHA256 under a key unique to the device, plus one Damm
// check symbol that tells a typo apart from a wrong code.
//
// FORMAT.md beside this file is the normative description, with test
// vectors; a firmware team can implement the verifier from it alone.
//
// The package imports only the standard library: the server mints with it
// and the DVR agent verifies with it.
package voicecode

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Format constants. They are part of the wire format: changing any of them
// needs a new Version.
const (
	// Version is the format version minted by this package (2 bits; 0, 2
	// and 3 are reserved).
	Version = 1
	// Length is the number of symbols of a code, check symbol included.
	Length = 16
	// MACBits is the number of MAC bits a code carries.
	MACBits = 45
	// SlotSeconds is the resolution of the issue time.
	SlotSeconds = 600
	// Validity is how long a code is accepted after the start of its slot.
	Validity = 24 * time.Hour
	// Skew is how far ahead of the device's clock a code's slot may start
	// and still be accepted.
	Skew = 10 * time.Minute
	// MaxGeneration is the largest key generation a code can carry (4 bits).
	MaxGeneration = 15
	// MaxInputLen bounds what Decode reads, separators included.
	MaxInputLen = 64
)

// Epoch is the earliest time the format can represent; a device clock before
// it is unset.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// macLabel separates the voice code's MAC from every other use of the key.
const macLabel = "hotline/voice-code/v1\x00"

// Errors returned by Decode and Verify; test with errors.Is.
var (
	// ErrMalformed: not a code at all (length, alphabet, version).
	ErrMalformed = errors.New("voicecode: malformed code")
	// ErrTypo: the check symbol does not match: a symbol was mistyped or two
	// neighbours swapped. Not a failed attempt.
	ErrTypo = errors.New("voicecode: check symbol mismatch (typo)")
	// ErrWrongCode: well formed, but not a code for this device and key.
	ErrWrongCode = errors.New("voicecode: wrong code")
	// ErrExpired: genuine, but issued more than Validity ago.
	ErrExpired = errors.New("voicecode: code expired")
	// ErrNotYetValid: genuine, but issued later than the verifier's clock
	// plus Skew: the device's clock is behind.
	ErrNotYetValid = errors.New("voicecode: code not yet valid (device clock behind)")
	// ErrClockNotSet: the verifier's clock is before Epoch.
	ErrClockNotSet = errors.New("voicecode: device clock is not set")
	// ErrBound: a challenge-bound code given to Verify; use VerifyBound.
	ErrBound = errors.New("voicecode: challenge-bound code: verify it against the request code")
)

// DecodeError says what is wrong with a typed code; it wraps ErrMalformed or
// ErrTypo.
type DecodeError struct {
	// Reason is a human sentence naming what was wrong and what was expected.
	Reason string
	// Err is ErrMalformed or ErrTypo.
	Err error
}

// Error implements error.
func (e *DecodeError) Error() string { return "voicecode: " + e.Reason }

// Unwrap returns ErrMalformed or ErrTypo.
func (e *DecodeError) Unwrap() error { return e.Err }

// Code is a decoded, check-symbol-valid code whose MAC is not yet verified.
type Code struct {
	// Version is the format version: Version, or BoundVersion for a
	// challenge-bound code (whose Generation and Slot16 are zero).
	Version int
	// Generation is the key generation, 1 to MaxGeneration.
	Generation int
	// Slot16 is the issue slot (Unix time / SlotSeconds) modulo 2^16.
	Slot16 uint16
	// Seq8 is the per-device sequence number modulo 256.
	Seq8 uint8
	mac  uint64 // the low MACBits (BoundMACBits) bits
	slot uint64 // the full slot of a BoundVersion code
}

// Fields are what a verified code says.
type Fields struct {
	// Generation is the key generation.
	Generation int
	// Slot is the full issue slot, Unix time / SlotSeconds.
	Slot uint64
	// Seq8 is the per-device sequence number modulo 256.
	Seq8 uint8
	// IssuedAt is the start of the slot; ExpiresAt is IssuedAt + Validity.
	IssuedAt, ExpiresAt time.Time
}

// SlotOf returns the slot number of t.
func SlotOf(t time.Time) uint64 { return uint64(t.Unix()) / SlotSeconds }

// SlotStart returns the start of t's slot: the issue time a code carries.
func SlotStart(t time.Time) time.Time {
	return time.Unix(int64(SlotOf(t))*SlotSeconds, 0).UTC()
}

// ExpiresAt returns when a code issued at t stops being accepted.
func ExpiresAt(t time.Time) time.Time { return SlotStart(t).Add(Validity) }

// Mint returns the grouped code ("XXXX-XXXX-XXXX-XXXX") for the device whose
// canonical serial is serial, issued at issuedAt with the given per-device
// sequence number (1 or more; the code carries it modulo 256). Minting is
// deterministic: the same inputs give the same code.
func Mint(k DeviceKey, serial string, issuedAt time.Time, sequence int64) (string, error) {
	if !k.valid() {
		return "", errors.New("voicecode: mint with an empty device key")
	}
	if issuedAt.Before(Epoch) {
		return "", fmt.Errorf("voicecode: issue time %s is before the format's epoch %s", issuedAt.UTC().Format(time.RFC3339), Epoch.Format(time.RFC3339))
	}
	if sequence < 1 {
		return "", fmt.Errorf("voicecode: sequence %d: expected 1 or more", sequence)
	}
	slot := SlotOf(issuedAt)
	seq8 := uint8(sequence)
	mac := computeMAC(&k, Version, k.gen, slot, seq8, serial)
	// The 75 data bits as (top: bits 74..64, low: bits 63..0); layout:
	// version(2) generation(4) slot16(16) seq8(8) mac(45), most significant first.
	low := mac | uint64(seq8)<<45 | (uint64(uint16(slot))&(1<<11-1))<<53
	top := uint64(Version)<<9 | uint64(k.gen)<<5 | uint64(uint16(slot))>>11
	bits := [2]uint64{top, low}

	var sym [Length]byte
	for i := 0; i < Length-1; i++ {
		shift := uint(74 - 5*i - 4) // bit index of the symbol's lowest bit
		sym[i] = byte(extract5(bits, shift))
	}
	sym[Length-1] = checkSymbol(sym[:Length-1])
	return format(sym[:], 4), nil
}

// extract5 returns the 5 bits whose lowest bit is at index shift of the
// 75-bit value (top holds bits 74..64, low bits 63..0).
func extract5(b [2]uint64, shift uint) uint64 {
	top, low := b[0], b[1]
	switch {
	case shift >= 64:
		return (top >> (shift - 64)) & 31
	case shift+5 <= 64:
		return (low >> shift) & 31
	default: // straddles bit 64
		n := 64 - shift // bits taken from low
		return (low>>shift | top<<n) & 31
	}
}

// format groups the symbols by size with hyphens.
func format(sym []byte, size int) string {
	var b strings.Builder
	b.Grow(len(sym) + len(sym)/size)
	for i, s := range sym {
		if i > 0 && i%size == 0 {
			b.WriteByte('-')
		}
		b.WriteByte(alphabet[s])
	}
	return b.String()
}

// Decode parses a typed code leniently (case, spaces and hyphens ignored; O
// read as 0, I and L as 1) and checks its check symbol and version. A
// mistyped symbol or swapped neighbours give an error wrapping ErrTypo;
// anything else malformed wraps ErrMalformed. The MAC is not checked here.
func Decode(s string) (Code, error) {
	if len(s) > MaxInputLen {
		return Code{}, &DecodeError{Err: ErrMalformed, Reason: fmt.Sprintf("%d characters: expected %d symbols, with at most a few spaces or hyphens", len(s), Length)}
	}
	var sym [Length]byte
	if err := readSymbols(s, sym[:], "four groups of four"); err != nil {
		return Code{}, err
	}
	var top, low uint64
	for i := 0; i < Length-1; i++ {
		// shift the 75-bit value left by 5 and add the symbol
		top = top<<5 | low>>59
		low = low<<5 | uint64(sym[i])
	}
	top &= 1<<11 - 1
	if top>>9 == BoundVersion {
		return Code{Version: BoundVersion, Seq8: uint8(low >> 43), mac: low & (1<<BoundMACBits - 1),
			slot: epochSlot + ((top&(1<<9-1))<<13 | low>>51)}, nil
	}
	c := Code{
		Version:    int(top >> 9),
		Generation: int(top>>5) & 15,
		Slot16:     uint16((top&31)<<11 | low>>53),
		Seq8:       uint8(low >> 45),
		mac:        low & (1<<MACBits - 1),
	}
	if c.Version != Version {
		return Code{}, &DecodeError{Err: ErrMalformed, Reason: fmt.Sprintf("format version %d: this verifier knows versions %d and %d", c.Version, Version, BoundVersion)}
	}
	if c.Generation == 0 {
		return Code{}, &DecodeError{Err: ErrMalformed, Reason: "key generation 0 is reserved: expected 1 to 15"}
	}
	return c, nil
}

// readSymbols decodes s leniently into exactly len(sym) symbol values
// (what says how they are grouped, for the error) and checks the last one,
// Damm's check symbol.
func readSymbols(s string, sym []byte, what string) error {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' || c == '-' || c == '\t' {
			continue
		}
		v := decodeTable[c]
		if v == invalid {
			return &DecodeError{Err: ErrMalformed, Reason: fmt.Sprintf("character %q at position %d is not a code symbol: expected digits and letters other than U", printable(s, i), i+1)}
		}
		if n == len(sym) {
			return &DecodeError{Err: ErrMalformed, Reason: fmt.Sprintf("too many symbols: expected %d", len(sym))}
		}
		sym[n] = v
		n++
	}
	if n != len(sym) {
		return &DecodeError{Err: ErrMalformed, Reason: fmt.Sprintf("%d symbols: expected %d (%s)", n, len(sym), what)}
	}
	if checkInterim(sym) != 0 {
		return &DecodeError{Err: ErrTypo, Reason: "the check symbol does not match: a symbol was mistyped or two were swapped; read the code again"}
	}
	return nil
}

// Symbols returns how many code symbols s holds, separators (space, tab,
// hyphen) not counted, or -1 if s holds anything else or is longer than
// MaxInputLen: it tells a voice code from a recovery code.
func Symbols(s string) int {
	if len(s) > MaxInputLen {
		return -1
	}
	n := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ' || c == '-' || c == '\t':
		case decodeTable[c] == invalid:
			return -1
		default:
			n++
		}
	}
	return n
}

func printable(s string, i int) string {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return string(r)
}

// Verify checks the code's MAC under the device key k for the canonical
// serial, at time now, and returns its fields. The full slot is
// reconstructed as the slot nearest to now that matches Slot16 (within
// about 227 days either way); the MAC covers the full slot, so a code cannot
// be replayed 2^16 slots (455 days) later. A genuine code is then checked
// against the clock: ErrNotYetValid when it starts more than Skew after now,
// ErrExpired from Validity after its slot start. Fields are returned with
// both errors.
func (c Code) Verify(k DeviceKey, serial string, now time.Time) (Fields, error) {
	if c.Version == BoundVersion {
		return Fields{}, ErrBound
	}
	if now.Before(Epoch) {
		return Fields{}, ErrClockNotSet
	}
	if !k.valid() {
		return Fields{}, errors.New("voicecode: verify with an empty device key")
	}
	nowSlot := SlotOf(now)
	slot := uint64(int64(nowSlot) + int64(int16(c.Slot16-uint16(nowSlot))))
	want := computeMAC(&k, c.Version, c.Generation, slot, c.Seq8, serial)
	var a, b [8]byte
	binary.BigEndian.PutUint64(a[:], want&(1<<MACBits-1))
	binary.BigEndian.PutUint64(b[:], c.mac)
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 || c.Generation != k.gen {
		return Fields{}, ErrWrongCode
	}
	issued := time.Unix(int64(slot)*SlotSeconds, 0).UTC()
	f := Fields{Generation: c.Generation, Slot: slot, Seq8: c.Seq8, IssuedAt: issued, ExpiresAt: issued.Add(Validity)}
	if issued.After(now.Add(Skew)) {
		return f, ErrNotYetValid
	}
	if !now.Before(f.ExpiresAt) {
		return f, ErrExpired
	}
	return f, nil
}

// computeMAC returns the first MACBits bits of HMAC-SHA256(K_dev, label ||
// version || generation || slot (8 bytes, big endian) || seq8 || serial).
func computeMAC(k *DeviceKey, version, gen int, slot uint64, seq8 uint8, serial string) uint64 {
	var buf [len(macLabel) + 1 + 1 + 8 + 1 + 64]byte
	msg := append(buf[:0], macLabel...)
	msg = append(msg, byte(version), byte(gen))
	msg = binary.BigEndian.AppendUint64(msg, slot)
	msg = append(msg, seq8)
	msg = append(msg, serial...)
	m := hmac.New(sha256.New, k.key[:])
	m.Write(msg)
	var sum [sha256.Size]byte
	out := m.Sum(sum[:0])
	return binary.BigEndian.Uint64(out[:8]) >> (64 - MACBits)
}
