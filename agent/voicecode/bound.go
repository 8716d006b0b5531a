package voicecode

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Constants of the challenge-bound code (format version 2), the request
// code and the e-mail recovery code. Part of the wire format (FORMAT.md).
const (
	// BoundVersion is the format version of a challenge-bound code.
	BoundVersion = 2
	// BoundMACBits is the number of MAC bits a challenge-bound code carries.
	BoundMACBits = 43
	// BoundSlotBits is the width of its issue slot, counted from Epoch.
	BoundSlotBits = 22
	// RequestLength is the number of symbols of a request code.
	RequestLength = 10
	// RequestNonceBits is the number of random bits a request code carries.
	RequestNonceBits = 43
	// RequestVersion is the request code's format version (2 bits).
	RequestVersion = 1
	// RecoveryLength is the number of symbols of an e-mail recovery code.
	RecoveryLength = 12
	// RecoveryBits is the number of random bits a recovery code carries.
	RecoveryBits = 53
	// RecoveryVersion is the recovery code's format version (2 bits).
	RecoveryVersion = 1
)

// epochSlot is the slot of Epoch, slot 0 of a challenge-bound code.
var epochSlot = SlotOf(Epoch)

const (
	boundLabel    = "hotline/bound-code/v2\x00"
	recoveryLabel = "hotline/recovery-code/v1\x00"
)

// MintBound returns the challenge-bound code ("XXXX-XXXX-XXXX-XXXX", format
// version 2) for the device whose canonical serial is serial, issued at
// issuedAt with the given sequence number, for the request code whose
// nonce is nonce. The device accepts it without its clock, once, while it
// still shows that request code.
func MintBound(k DeviceKey, serial string, issuedAt time.Time, sequence int64, nonce uint64) (string, error) {
	if !k.valid() {
		return "", errors.New("voicecode: mint with an empty device key")
	}
	if issuedAt.Before(Epoch) || SlotOf(issuedAt)-epochSlot >= 1<<BoundSlotBits {
		return "", fmt.Errorf("voicecode: issue time %s is outside the bound code's range (2024 to 2103)", issuedAt.UTC().Format(time.RFC3339))
	}
	if sequence < 1 {
		return "", fmt.Errorf("voicecode: sequence %d: expected 1 or more", sequence)
	}
	if nonce >= 1<<RequestNonceBits {
		return "", fmt.Errorf("voicecode: request nonce %d wider than %d bits", nonce, RequestNonceBits)
	}
	slot, seq8 := SlotOf(issuedAt), uint8(sequence)
	e := slot - epochSlot
	// version(2) slot(22) seq8(8) mac(43), most significant first.
	top := uint64(BoundVersion)<<9 | e>>13
	low := (e&(1<<13-1))<<51 | uint64(seq8)<<43 | boundMAC(&k, slot, seq8, nonce, serial)
	var sym [Length]byte
	for i := 0; i < Length-1; i++ {
		sym[i] = byte(extract5([2]uint64{top, low}, uint(70-5*i)))
	}
	sym[Length-1] = checkSymbol(sym[:Length-1])
	return format(sym[:], 4), nil
}

// VerifyBound checks a challenge-bound code's MAC under k for the canonical
// serial and the nonce of the request code the device shows, and returns
// its fields. It does not look at any clock: freshness is the request
// code's (the caller enforces its lifetime and single use). A mismatch is
// ErrWrongCode; a time-based code is ErrMalformed.
func (c Code) VerifyBound(k DeviceKey, serial string, nonce uint64) (Fields, error) {
	if c.Version != BoundVersion {
		return Fields{}, ErrMalformed
	}
	if !k.valid() {
		return Fields{}, errors.New("voicecode: verify with an empty device key")
	}
	var a, b [8]byte
	binary.BigEndian.PutUint64(a[:], boundMAC(&k, c.slot, c.Seq8, nonce, serial))
	binary.BigEndian.PutUint64(b[:], c.mac)
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return Fields{}, ErrWrongCode
	}
	issued := time.Unix(int64(c.slot)*SlotSeconds, 0).UTC()
	return Fields{Generation: k.gen, Slot: c.slot, Seq8: c.Seq8, IssuedAt: issued, ExpiresAt: issued.Add(Validity)}, nil
}

// boundMAC returns the first BoundMACBits bits of HMAC-SHA256(K_dev, label
// || version || generation || slot (8 bytes) || seq8 || nonce (8 bytes) ||
// serial).
func boundMAC(k *DeviceKey, slot uint64, seq8 uint8, nonce uint64, serial string) uint64 {
	m := hmac.New(sha256.New, k.key[:])
	msg := append([]byte(boundLabel), BoundVersion, byte(k.gen))
	msg = binary.BigEndian.AppendUint64(msg, slot)
	msg = append(msg, seq8)
	msg = binary.BigEndian.AppendUint64(msg, nonce)
	m.Write(append(msg, serial...))
	return binary.BigEndian.Uint64(m.Sum(nil)[:8]) >> (64 - BoundMACBits)
}

// shortCode formats the data bits v (version in the top 2 of 5*(n-1)
// bits) as n symbols, check symbol last, in groups of size.
func shortCode(v uint64, n, size int) string {
	sym := make([]byte, n)
	for i := 0; i < n-1; i++ {
		sym[i] = byte(v>>(5*(n-2-i))) & 31
	}
	sym[n-1] = checkSymbol(sym[:n-1])
	return format(sym, size)
}

// parseShort decodes an n-symbol code leniently, checks its check symbol
// and version, and returns the bits below the version.
func parseShort(s string, n int, version uint64, what string) (uint64, error) {
	if len(s) > MaxInputLen {
		return 0, &DecodeError{Err: ErrMalformed, Reason: fmt.Sprintf("%d characters: expected %d symbols", len(s), n)}
	}
	sym := make([]byte, n)
	if err := readSymbols(s, sym, what); err != nil {
		return 0, err
	}
	var v uint64
	for _, x := range sym[:n-1] {
		v = v<<5 | uint64(x)
	}
	bits := uint(5*(n-1) - 2)
	if v>>bits != version {
		return 0, &DecodeError{Err: ErrMalformed, Reason: fmt.Sprintf("format version %d: expected %d", v>>bits, version)}
	}
	return v & (1<<bits - 1), nil
}

// NewNonce returns a fresh random value of the given width read from rnd
// (crypto/rand.Reader on the device).
func NewNonce(rnd io.Reader, bits uint) (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return 0, fmt.Errorf("voicecode: random source: %w", err)
	}
	return binary.BigEndian.Uint64(b[:]) >> (64 - bits), nil
}

// FormatRequestCode returns the request code ("XXXXX-XXXXX") of nonce, the
// low RequestNonceBits bits of which it carries.
func FormatRequestCode(nonce uint64) string {
	return shortCode(RequestVersion<<RequestNonceBits|nonce&(1<<RequestNonceBits-1), RequestLength, 5)
}

// ParseRequestCode decodes a request code as read over the phone (the
// voice code's lenient decoding) and returns its nonce.
func ParseRequestCode(s string) (uint64, error) {
	return parseShort(s, RequestLength, RequestVersion, "two groups of five")
}

// FormatRecoveryCode returns the e-mail recovery code ("XXXX-XXXX-XXXX")
// carrying the low RecoveryBits bits of v.
func FormatRecoveryCode(v uint64) string {
	return shortCode(RecoveryVersion<<RecoveryBits|v&(1<<RecoveryBits-1), RecoveryLength, 4)
}

// ParseRecoveryCode decodes a typed recovery code and returns its value.
func ParseRecoveryCode(s string) (uint64, error) {
	return parseShort(s, RecoveryLength, RecoveryVersion, "three groups of four")
}

// RecoveryTag returns HMAC-SHA256(K_dev, "hotline/recovery-code/v1" || 0x00
// || v (8 bytes, big endian) || serial): what the device stores instead of
// the recovery code it mailed.
func (k DeviceKey) RecoveryTag(serial string, v uint64) [32]byte {
	m := hmac.New(sha256.New, k.key[:])
	m.Write(binary.BigEndian.AppendUint64([]byte(recoveryLabel), v))
	m.Write([]byte(serial))
	var t [32]byte
	m.Sum(t[:0])
	return t
}
