// Package state keeps the DVR agent's replay and lockout state in a small
// file that survives a power cut at any instant.
//
// The state is the supersession watermark (the (slot, seq8) of the last
// accepted credential), the count of consecutive wrong attempts and the time
// a lockout ends. Losing it would re-open every used code that has not yet
// expired, so a file that is truncated, corrupt, of an unknown version or
// missing from a directory that once held it is an error, never a silent
// reset.
//
// # File format (version 1)
//
// The file DIR/agent.state is exactly 63 bytes, all integers big endian:
//
//	offset size field
//	0      8    magic "HLAGENT\x00"
//	8      2    format version, 1
//	10     8    watermark slot (10-minute slots since the Unix epoch; 0 = none)
//	18     1    watermark seq8 (sequence number modulo 256)
//	19     4    consecutive wrong attempts
//	23     8    locked until, Unix seconds (0 = not locked)
//	31     32   SHA-256 of bytes 0 to 30
//
// # Crash safety
//
// Save writes DIR/agent.state.tmp, fsyncs it, renames it over
// DIR/agent.state and fsyncs DIR. rename(2) replaces the name atomically, so
// after a power cut the file holds either the old or the new state, both
// complete. A stale agent.state.tmp left by a crash is overwritten by the
// next Save and never read.
//
// # First use and deletion
//
// A directory that holds neither agent.state nor agent.present is new: Load
// returns the zero State (no code accepted yet, no failures). After the
// first successful Save the agent creates DIR/agent.present, a marker that
// says "this directory has held state". If agent.state is then missing while
// the marker is there, the state was lost (a bad flash block, a careless
// factory reset script) and Load fails with ErrLost rather than starting
// afresh. Someone able to delete both files can reset the state; that person
// already controls the DVR's file system, so the marker guards against
// accidents, not against root.
//
// # Locking
//
// Open takes an exclusive flock(2) on DIR/agent.lock, so two verifications
// at once run one after the other; the kernel drops the lock when the
// process dies, so a crash never leaves the directory locked.
package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// File names inside the state directory, and the format.
const (
	FileName    = "agent.state"
	TempName    = "agent.state.tmp"
	LockName    = "agent.lock"
	MarkerName  = "agent.present"
	Version     = 2
	Size        = 184
	SizeV1      = 63
	magic       = "HLAGENT\x00"
	contentSize = Size - sha256.Size
)

// Flags of a version 2 file: which of the optional parts are present.
const (
	flagRequest  = 1 << iota // a request code is shown
	flagRecovery             // an e-mail recovery code is pending
	flagMail                 // a recovery e-mail was sent (throttle)
)

// State is what the agent remembers between verifications.
type State struct {
	// Slot and Seq8 are the watermark: the last accepted credential's issue
	// slot and sequence number modulo 256. A credential is accepted only if
	// its (slot, seq8) is greater, compared slot first.
	Slot uint64
	Seq8 uint8
	// Failures counts consecutive wrong attempts since the last acceptance.
	Failures uint32
	// LockedUntil is when the current lockout ends by the wall clock, for
	// messages; the lock itself runs on the monotonic clock (LockStart,
	// LockLeft). Zero when not locked.
	LockedUntil time.Time
	// Learnt is the latest time the agent knows has passed: the latest of
	// the clock readings of earlier verifications and the issue times of
	// accepted credentials (the server's clock). Zero: nothing learnt.
	Learnt time.Time
	// Boot is the boot id the monotonic fields refer to (the kernel's
	// /proc/sys/kernel/random/boot_id); zero when none was recorded.
	Boot [16]byte
	// SavedAt is the monotonic time (time since boot) of the save.
	SavedAt time.Duration
	// LockStart is the monotonic time on Boot from which LockLeft runs
	// down; the device is locked while LockLeft - (uptime - LockStart) > 0.
	LockStart, LockLeft time.Duration
	// Request is the request code on show: its nonce, made at monotonic
	// time RequestAt on Boot.
	Request   bool
	Nonce     uint64
	RequestAt time.Duration
	// Recovery is the pending e-mail recovery code: only its tag
	// (voicecode.DeviceKey.RecoveryTag), made at RecoveryAt on Boot.
	Recovery    bool
	RecoveryTag [32]byte
	RecoveryAt  time.Duration
	// Mail is the last recovery e-mail sent: at monotonic MailAt on Boot
	// and wall-clock MailWall.
	Mail     bool
	MailAt   time.Duration
	MailWall time.Time
}

// Errors; test with errors.Is. Every one of them means: do not verify.
var (
	// ErrCorrupt: the file is truncated, has the wrong magic or a checksum
	// that does not match.
	ErrCorrupt = errors.New("state file is corrupt")
	// ErrVersion: the file was written by an agent with a newer format.
	ErrVersion = errors.New("state file has an unknown format version")
	// ErrLost: the directory held state once and the file is gone.
	ErrLost = errors.New("state file is missing")
	// ErrBusy: another verification held the lock for too long.
	ErrBusy = errors.New("state is locked by another verification")
)

// Marshal returns the file form of s (always the current version).
func Marshal(s State) []byte {
	b := make([]byte, 0, Size)
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, Version)
	b = binary.BigEndian.AppendUint64(b, s.Slot)
	b = append(b, s.Seq8)
	b = binary.BigEndian.AppendUint32(b, s.Failures)
	b = binary.BigEndian.AppendUint64(b, unix(s.LockedUntil))
	b = binary.BigEndian.AppendUint64(b, unix(s.Learnt))
	b = append(b, s.Boot[:]...)
	var flags byte
	var nonce, reqAt, recAt, mailAt, mailWall uint64
	var tag [32]byte
	if s.Request {
		flags |= flagRequest
		nonce, reqAt = s.Nonce, ms(s.RequestAt)
	}
	if s.Recovery {
		flags |= flagRecovery
		tag, recAt = s.RecoveryTag, ms(s.RecoveryAt)
	}
	if s.Mail {
		flags |= flagMail
		mailAt, mailWall = ms(s.MailAt), unix(s.MailWall)
	}
	for _, v := range []uint64{ms(s.SavedAt), ms(s.LockStart), ms(s.LockLeft)} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, nonce)
	b = binary.BigEndian.AppendUint64(b, reqAt)
	b = append(b, tag[:]...)
	for _, v := range []uint64{recAt, mailAt, mailWall} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// unix is t in Unix seconds, 0 for the zero time; a time before 1970 is 1
// (a lock before 1970 is still a lock, and already over).
func unix(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(max(t.Unix(), 1))
}

// ms is d in whole milliseconds (negative is 0).
func ms(d time.Duration) uint64 { return uint64(max(d.Milliseconds(), 0)) }

// Unmarshal parses the file form, of version 2 or of version 1 (whose
// fields after the lock are zero). Any defect is an error wrapping
// ErrCorrupt or ErrVersion that says what was wrong.
func Unmarshal(b []byte) (State, error) {
	switch {
	case len(b) < len(magic)+2:
		return State{}, fmt.Errorf("%w: %d bytes, expected %d (truncated)", ErrCorrupt, len(b), Size)
	case string(b[:len(magic)]) != magic:
		return State{}, fmt.Errorf("%w: wrong magic: not a dvr-agent state file", ErrCorrupt)
	}
	// A file of a known format's size with a bad checksum is corrupt, even
	// if a flipped bit makes its version field read as another version.
	if (len(b) == Size || len(b) == SizeV1) && !checksum(b) {
		return State{}, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	v := binary.BigEndian.Uint16(b[8:])
	want := 0
	switch v {
	case 1:
		want = SizeV1
	case Version:
		want = Size
	default:
		return State{}, fmt.Errorf("%w: version %d, this agent reads versions 1 and %d", ErrVersion, v, Version)
	}
	if len(b) != want {
		return State{}, fmt.Errorf("%w: %d bytes, expected %d (truncated or extended)", ErrCorrupt, len(b), want)
	}
	if !checksum(b) {
		return State{}, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	u64 := func(off int) uint64 { return binary.BigEndian.Uint64(b[off:]) }
	s := State{Slot: u64(10), Seq8: b[18], Failures: binary.BigEndian.Uint32(b[19:])}
	if int64(u64(23)) < 0 || v == Version && (int64(u64(31)) < 0 || int64(u64(144)) < 0) {
		return State{}, fmt.Errorf("%w: negative time", ErrCorrupt)
	}
	s.LockedUntil = fromUnix(u64(23))
	if v == 1 {
		return s, nil
	}
	d := func(off int) time.Duration { return time.Duration(min(u64(off), 1<<52)) * time.Millisecond }
	s.Learnt = fromUnix(u64(31))
	copy(s.Boot[:], b[39:55])
	s.SavedAt, s.LockStart, s.LockLeft = d(55), d(63), d(71)
	flags := b[79]
	s.Request, s.Nonce, s.RequestAt = flags&flagRequest != 0, u64(80), d(88)
	s.Recovery, s.RecoveryAt = flags&flagRecovery != 0, d(128)
	copy(s.RecoveryTag[:], b[96:128])
	s.Mail, s.MailAt, s.MailWall = flags&flagMail != 0, d(136), fromUnix(u64(144))
	// One state, one encoding: unknown flags, fields of absent parts and
	// out-of-range durations are corruption, not something to carry along.
	if !bytes.Equal(Marshal(s), b) {
		return State{}, fmt.Errorf("%w: fields inconsistent with their flags", ErrCorrupt)
	}
	return s, nil
}

func checksum(b []byte) bool {
	sum := sha256.Sum256(b[:len(b)-sha256.Size])
	return bytes.Equal(sum[:], b[len(b)-sha256.Size:])
}

func fromUnix(u uint64) time.Time {
	if u == 0 {
		return time.Time{}
	}
	return time.Unix(int64(u), 0).UTC()
}

// Store is an open, locked state directory. It is not safe for concurrent
// use by goroutines; other processes wait in Open.
type Store struct {
	dir  string
	lock *os.File
}

// LockTimeout bounds how long Open waits for another verification.
var LockTimeout = 10 * time.Second

// Open locks the state directory dir. A missing dir whose parent exists is
// created (0700) for the first use; a missing parent is an error, not a
// fresh start. Creating it weakens nothing: whoever could remove the folder
// could as well empty it, marker included.
func Open(dir string) (*Store, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if merr := os.Mkdir(dir, 0o700); merr != nil {
			return nil, fmt.Errorf("state directory: %w", merr)
		}
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
		fi, err = os.Stat(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("state directory %s is not a directory", dir)
	}
	f, err := os.OpenFile(filepath.Join(dir, LockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	if err := lockFile(f, LockTimeout); err != nil {
		f.Close()
		return nil, err
	}
	return &Store{dir: dir, lock: f}, nil
}

// Close releases the lock.
func (s *Store) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close() // closing the last descriptor drops the flock
	s.lock = nil
	return err
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

// Load reads the state. See the package comment for first use.
func (s *Store) Load() (State, error) {
	path := filepath.Join(s.dir, FileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, merr := os.Stat(filepath.Join(s.dir, MarkerName)); merr == nil {
			return State{}, fmt.Errorf("%w: %s is gone but %s says this directory held state; restore the file (or, knowing that this re-opens every unexpired used code, delete %s)", ErrLost, path, MarkerName, MarkerName)
		} else if !errors.Is(merr, fs.ErrNotExist) {
			return State{}, fmt.Errorf("state marker: %w", merr)
		}
		return State{}, nil // first use
	}
	if err != nil {
		return State{}, fmt.Errorf("state file: %w", err)
	}
	st, err := Unmarshal(b)
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// Save replaces the state durably: when it returns nil the new state
// survives a power cut; when it fails, the file holds the old or the new
// state, never a mix.
func (s *Store) Save(st State) error {
	if s.lock == nil {
		return errors.New("state: Save on a closed Store")
	}
	tmp := filepath.Join(s.dir, TempName)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("state save: %w", err)
	}
	_, err = f.Write(Marshal(st))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state save: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, FileName)); err != nil {
		return fmt.Errorf("state save: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("state save: %w", err)
	}
	return s.mark()
}

// mark creates the marker after the state file is durable, so that a crash
// between the two leaves a state file without a marker (read fine, marker
// added at the next Save), never a marker without a state file.
func (s *Store) mark() error {
	path := filepath.Join(s.dir, MarkerName)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("state marker: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("state marker: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("state marker: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
