package voicecode

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// deviceKeyLabel separates device-key derivation from every other use of a
// master key.
const deviceKeyLabel = "hotline/device-key/v1\x00"

// KeySize is the size of a device key and the minimum size of a master key.
const KeySize = 32

// DeviceKey is K_dev, the key unique to one device that its voice codes are
// MACed under, with the master-key generation it was derived from. It is a
// secret: it cannot be compared with == and its String is redacted.
type DeviceKey struct {
	_   [0]func() // not comparable: use Equal
	gen int
	key [KeySize]byte
}

// DeriveDeviceKey returns K_dev = HKDF-SHA256(master, salt = none,
// info = "hotline/device-key/v1" || 0x00 || canonical serial, 32 bytes).
func DeriveDeviceKey(master []byte, generation int, serial string) (DeviceKey, error) {
	if len(master) < KeySize {
		return DeviceKey{}, fmt.Errorf("voicecode: master key of %d bytes: expected at least %d", len(master), KeySize)
	}
	if generation < 1 || generation > MaxGeneration {
		return DeviceKey{}, fmt.Errorf("voicecode: key generation %d: expected 1 to %d", generation, MaxGeneration)
	}
	if serial == "" {
		return DeviceKey{}, errors.New("voicecode: empty serial")
	}
	b, err := hkdf.Key(sha256.New, master, nil, deviceKeyLabel+serial, KeySize)
	if err != nil {
		return DeviceKey{}, err
	}
	return NewDeviceKey(generation, b)
}

// NewDeviceKey wraps raw key bytes (as flashed at the factory).
func NewDeviceKey(generation int, key []byte) (DeviceKey, error) {
	if generation < 1 || generation > MaxGeneration {
		return DeviceKey{}, fmt.Errorf("voicecode: key generation %d: expected 1 to %d", generation, MaxGeneration)
	}
	if len(key) != KeySize {
		return DeviceKey{}, fmt.Errorf("voicecode: device key of %d bytes: expected %d", len(key), KeySize)
	}
	k := DeviceKey{gen: generation}
	copy(k.key[:], key)
	if k.key == ([KeySize]byte{}) {
		return DeviceKey{}, errors.New("voicecode: device key is all zeros")
	}
	return k, nil
}

// Generation returns the master-key generation the key was derived under.
func (k DeviceKey) Generation() int { return k.gen }

// Bytes returns a copy of the raw key, for writing to the factory's files.
func (k DeviceKey) Bytes() []byte { return append([]byte(nil), k.key[:]...) }

// Equal compares two keys in constant time.
func (k DeviceKey) Equal(o DeviceKey) bool {
	return k.gen == o.gen && subtle.ConstantTimeCompare(k.key[:], o.key[:]) == 1
}

func (k *DeviceKey) valid() bool { return k.gen >= 1 && k.gen <= MaxGeneration }

// String redacts the key.
func (k DeviceKey) String() string { return fmt.Sprintf("devkey:gen%d:REDACTED", k.gen) }

// GoString redacts the key.
func (k DeviceKey) GoString() string { return k.String() }

// Format redacts the key for every verb, %x and %v included.
func (k DeviceKey) Format(f fmt.State, _ rune) { fmt.Fprint(f, k.String()) }

// KeyFileType is the "type" of a device key file.
const KeyFileType = "hotline-device-key"

// keyFile is the JSON form of a device key file, one per device, written by
// `hotline-server keys device-key` and read by `dvr-agent --key-file`.
type keyFile struct {
	Type       string `json:"type"`
	Version    int    `json:"version"`
	Serial     string `json:"serial"`
	Generation int    `json:"generation"`
	Key        string `json:"key"` // 64 lower-case hex digits
}

// MarshalKeyFile returns the device key file for the canonical serial.
func MarshalKeyFile(serial string, k DeviceKey) ([]byte, error) {
	if !k.valid() {
		return nil, errors.New("voicecode: marshal of an empty device key")
	}
	b, err := json.MarshalIndent(keyFile{Type: KeyFileType, Version: 1, Serial: serial, Generation: k.gen, Key: hex.EncodeToString(k.key[:])}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseKeyFile reads a device key file and returns the serial it is for and
// the key. Every defect is named.
func ParseKeyFile(b []byte) (serial string, k DeviceKey, err error) {
	var f keyFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return "", DeviceKey{}, fmt.Errorf("device key file: not the JSON written by `hotline-server keys device-key`: %v", err)
	}
	if dec.More() {
		return "", DeviceKey{}, errors.New("device key file: data after the key's JSON object: expected exactly one key")
	}
	if f.Type != KeyFileType || f.Version != 1 {
		return "", DeviceKey{}, fmt.Errorf("device key file: type %q version %d: expected %q version 1", f.Type, f.Version, KeyFileType)
	}
	raw, err := hex.DecodeString(f.Key)
	if err != nil {
		return "", DeviceKey{}, fmt.Errorf("device key file: key is not hex: %v", err)
	}
	k, err = NewDeviceKey(f.Generation, raw)
	if err != nil {
		return "", DeviceKey{}, fmt.Errorf("device key file: %v", err)
	}
	return f.Serial, k, nil
}
