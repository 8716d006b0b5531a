package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Witness keeps the checkpoints the sealer signs outside the database, so
// that a database owner who deletes events with their seals and
// checkpoints cannot have the chain re-sealed as if nothing had happened:
// the sealer refuses to extend a chain that does not continue the last
// published checkpoint, and Verify checks the chain against it.
type Witness interface {
	// Publish appends c; it returns only once c is durable.
	Publish(ctx context.Context, c Checkpoint) error
	// Last returns the newest published checkpoint that verifies against
	// trusted; ok is false when none was published yet.
	Last(ctx context.Context, trusted map[string]ed25519.PublicKey) (c Checkpoint, ok bool, err error)
}

// WitnessFileName is the file a DirWitness appends to.
const WitnessFileName = "audit-checkpoints.jsonl"

// DirWitness is a Witness in a folder: it appends every checkpoint as one
// JSON line (the checkpoint's JSON form) to WitnessFileName, opened
// O_APPEND and fsynced. Put the folder where the database's owner cannot
// write: another host's mount, a file system with chattr +a, a folder a
// log shipper copies away.
type DirWitness struct {
	Dir string
}

// tailBytes is how much of the file's end Last reads: many lines.
const tailBytes = 64 << 10

// Publish implements Witness.
func (w DirWitness) Publish(_ context.Context, c Checkpoint) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("audit witness: %w", err)
	}
	if err := os.MkdirAll(w.Dir, 0o700); err != nil {
		return fmt.Errorf("audit witness: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(w.Dir, WitnessFileName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit witness: %w", err)
	}
	// A line cut off by a crash is left alone: the next one starts on a
	// line of its own.
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if r, err := os.Open(f.Name()); err == nil {
			if _, err := r.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
				b = append([]byte{'\n'}, b...)
			}
			r.Close()
		}
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("audit witness: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("audit witness: %w", err)
	}
	return f.Close()
}

// Last implements Witness: the last line of the file that parses and
// verifies (a line cut off by a crash, or junk, is skipped).
func (w DirWitness) Last(_ context.Context, trusted map[string]ed25519.PublicKey) (Checkpoint, bool, error) {
	f, err := os.Open(filepath.Join(w.Dir, WitnessFileName))
	if errors.Is(err, os.ErrNotExist) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit witness: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit witness: %w", err)
	}
	off := max(st.Size()-tailBytes, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return Checkpoint{}, false, fmt.Errorf("audit witness: %w", err)
	}
	lines := bytes.Split(buf, []byte{'\n'})
	for i := len(lines) - 1; i >= 0; i-- {
		if off > 0 && i == 0 {
			break // perhaps the middle of a line
		}
		line := bytes.TrimSpace(lines[i])
		if len(line) == 0 {
			continue
		}
		c, err := ParseCheckpoint(line)
		if err != nil || c.Verify(trusted) != nil {
			continue
		}
		return c, true, nil
	}
	if st.Size() > 0 {
		return Checkpoint{}, false, fmt.Errorf("audit witness: %s holds no checkpoint signed by a trusted audit key in its last %d bytes",
			f.Name(), len(buf))
	}
	return Checkpoint{}, false, nil
}
