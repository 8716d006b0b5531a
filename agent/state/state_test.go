package state

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var sample = State{Slot: 2_900_000, Seq8: 7, Failures: 3, LockedUntil: time.Date(2026, 5, 1, 12, 35, 0, 0, time.UTC),
	Learnt: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), Boot: [16]byte{1, 2, 3}, SavedAt: 90 * time.Second,
	LockStart: 80 * time.Second, LockLeft: 5 * time.Minute, Request: true, Nonce: 1<<43 - 1, RequestAt: 70 * time.Second,
	Recovery: true, RecoveryTag: [32]byte{9, 9}, RecoveryAt: time.Minute, Mail: true, MailAt: time.Minute,
	MailWall: time.Date(2026, 5, 1, 11, 59, 0, 0, time.UTC)}

// marshalV1 is the version 1 encoding (63 bytes) written by agents before
// version 2: the watermark, the failure count and the lock's wall-clock end.
func marshalV1(s State) []byte {
	b := append([]byte(magic), 0, 1)
	b = binary.BigEndian.AppendUint64(b, s.Slot)
	b = append(b, s.Seq8)
	b = binary.BigEndian.AppendUint32(b, s.Failures)
	b = binary.BigEndian.AppendUint64(b, unix(s.LockedUntil))
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// TestVersion1FilesStillLoad: a state written by the previous agent loads
// with its watermark, failures and lock; the first save writes version 2.
func TestVersion1FilesStillLoad(t *testing.T) {
	old := State{Slot: sample.Slot, Seq8: sample.Seq8, Failures: sample.Failures, LockedUntil: sample.LockedUntil}
	b := marshalV1(old)
	if len(b) != SizeV1 {
		t.Fatalf("version 1 file of %d bytes", len(b))
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir)
	got, err := s.Load()
	if err != nil || got != old {
		t.Fatalf("Load of a version 1 file = %+v, %v; want %+v", got, err, old)
	}
	if err := s.Save(got); err != nil {
		t.Fatal(err)
	}
	if nb, _ := os.ReadFile(filepath.Join(dir, FileName)); len(nb) != Size || nb[9] != Version {
		t.Fatalf("saved %d bytes of version %d, want %d of version %d", len(nb), nb[9], Size, Version)
	}
	b[20] ^= 1
	if _, err := Unmarshal(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a version 1 file with a flipped bit: %v, want ErrCorrupt", err)
	}
}

func open(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRoundTrip(t *testing.T) {
	for _, st := range []State{{}, sample, {Slot: ^uint64(0), Seq8: 255, Failures: ^uint32(0)}} {
		b := Marshal(st)
		if len(b) != Size {
			t.Fatalf("Marshal: %d bytes, want %d", len(b), Size)
		}
		got, err := Unmarshal(b)
		if err != nil || got != st {
			t.Fatalf("Unmarshal(Marshal(%+v)) = %+v, %v", st, got, err)
		}
	}
}

func TestFirstUseIsFreshState(t *testing.T) {
	s := open(t, t.TempDir())
	st, err := s.Load()
	if err != nil || st != (State{}) {
		t.Fatalf("Load in a new directory = %+v, %v; want zero state", st, err)
	}
}

func TestSaveLoadSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Save(sample); err != nil {
		t.Fatal(err)
	}
	s.Close()
	got, err := open(t, dir).Load()
	if err != nil || got != sample {
		t.Fatalf("Load = %+v, %v; want %+v", got, err, sample)
	}
}

func TestRefusedDeletedStateFileIsNotAFreshStart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Save(sample); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrLost) {
		t.Fatalf("Load after deletion = %v, want ErrLost", err)
	}
}

func TestRefusedMissingParentIsNotAFreshStart(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "unmounted", "state")); err == nil {
		t.Fatal("Open of a directory whose parent is missing succeeded")
	}
}

func TestMissingDirectoryIsCreatedForFirstUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory %v, %v: want 0700", fi, err)
	}
}

func TestStaleTempFileFromACrashIsIgnored(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Save(sample); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, TempName), []byte("half a state"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(); err != nil || got != sample {
		t.Fatalf("Load = %+v, %v", got, err)
	}
	next := sample
	next.Seq8++
	if err := s.Save(next); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(); err != nil || got != next {
		t.Fatalf("Load = %+v, %v", got, err)
	}
}

// writeRaw puts b as the state file of a directory that has held state.
func writeRaw(t *testing.T, dir string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, MarkerName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRefusedTruncatedAtEveryByte(t *testing.T) {
	good := Marshal(sample)
	dir := t.TempDir()
	s := open(t, dir)
	for n := 0; n < len(good); n++ {
		writeRaw(t, dir, good[:n])
		st, err := s.Load()
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: Load = %+v, %v; want ErrCorrupt", n, st, err)
		}
	}
	writeRaw(t, dir, append(good, 0))
	if _, err := s.Load(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("extended by a byte: %v", err)
	}
}

func TestRefusedBitFlippedAtEveryByte(t *testing.T) {
	good := Marshal(sample)
	dir := t.TempDir()
	s := open(t, dir)
	for i := range good {
		for bit := 0; bit < 8; bit++ {
			b := append([]byte(nil), good...)
			b[i] ^= 1 << bit
			writeRaw(t, dir, b)
			st, err := s.Load()
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("byte %d bit %d flipped: Load = %+v, %v; want an error", i, bit, st, err)
			}
		}
	}
}

func TestRefusedUnknownVersion(t *testing.T) {
	// A well-formed file of a later version (its own checksum valid).
	b := Marshal(sample)
	b[9] = 3
	sum := sha256.Sum256(b[:contentSize])
	copy(b[contentSize:], sum[:])
	if _, err := Unmarshal(b); !errors.Is(err, ErrVersion) {
		t.Fatalf("got %v", err)
	}
}

// TestFlippedVersionBitIsCorruptionNotANewerFormat: one flipped bit in the
// version field must send the service engineer to "corrupt", not to "this
// agent is too old".
func TestFlippedVersionBitIsCorruptionNotANewerFormat(t *testing.T) {
	b := Marshal(sample)
	b[9] ^= 2
	if _, err := Unmarshal(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

func TestSecondVerificationWaitsForTheLock(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	old := LockTimeout
	LockTimeout = 100 * time.Millisecond
	defer func() { LockTimeout = old }()
	if s, err := Open(dir); !errors.Is(err, ErrBusy) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("second Open = %v, want ErrBusy", err)
	}
}

func BenchmarkStateSave(b *testing.B) {
	s := open(b, b.TempDir())
	st := sample
	for b.Loop() {
		st.Slot++
		if err := s.Save(st); err != nil {
			b.Fatal(err)
		}
	}
}
