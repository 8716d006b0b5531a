package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// checkpointHeader is the first line of a checkpoint's signed text.
const checkpointHeader = "hotline audit checkpoint v1"

// checkpointTime is the checkpoint's time format: UTC, microseconds, the
// precision PostgreSQL stores.
const checkpointTime = "2006-01-02T15:04:05.000000Z"

// Checkpoint is a signed statement that the audit chain had Size seals
// with head Head at Time. Keep the latest one outside the database:
// Verify given it detects a rewrite of the history before it.
type Checkpoint struct {
	Size      int64
	Head      Hash
	Time      time.Time
	KID       string
	Signature []byte
}

// SignCheckpoint returns the checkpoint (size, head, t) signed by key,
// whose kid is recorded. t is truncated to microseconds.
func SignCheckpoint(size int64, head Hash, t time.Time, kid string, key ed25519.PrivateKey) Checkpoint {
	c := Checkpoint{Size: size, Head: head, Time: t.UTC().Truncate(time.Microsecond), KID: kid}
	c.Signature = ed25519.Sign(key, c.signedText())
	return c
}

// signedText is the exact text the signature covers (FORMAT).
func (c *Checkpoint) signedText() []byte {
	b := make([]byte, 0, 192)
	b = append(b, checkpointHeader+"\nkid "...)
	b = append(b, c.KID...)
	b = append(b, "\nsize "...)
	b = strconv.AppendInt(b, c.Size, 10)
	b = append(b, "\nhead "...)
	b = hex.AppendEncode(b, c.Head[:])
	b = append(b, "\ntime "...)
	b = c.Time.UTC().AppendFormat(b, checkpointTime)
	return append(b, '\n')
}

// Errors of Checkpoint.Verify.
var (
	ErrUnknownKey   = errors.New("audit: checkpoint signed by a key that is not trusted")
	ErrBadSignature = errors.New("audit: checkpoint signature does not verify")
)

// Verify checks c's signature against the trusted audit public keys by kid.
func (c *Checkpoint) Verify(trusted map[string]ed25519.PublicKey) error {
	pub, ok := trusted[c.KID]
	if !ok || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w (kid %q)", ErrUnknownKey, c.KID)
	}
	if !ed25519.Verify(pub, c.signedText(), c.Signature) {
		return fmt.Errorf("%w (kid %q, size %d)", ErrBadSignature, c.KID, c.Size)
	}
	return nil
}

// String returns a one-line summary.
func (c Checkpoint) String() string {
	return fmt.Sprintf("checkpoint size %d head %s at %s (kid %s)", c.Size, c.Head, c.Time.UTC().Format(checkpointTime), c.KID)
}

// MarshalText returns the text form: the signed text and a signature line.
func (c Checkpoint) MarshalText() ([]byte, error) {
	b := c.signedText()
	b = append(b, "signature "...)
	b = append(b, base64.StdEncoding.EncodeToString(c.Signature)...)
	return append(b, '\n'), nil
}

// UnmarshalText reads the text form (ParseCheckpoint reads JSON too).
func (c *Checkpoint) UnmarshalText(b []byte) error {
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n"), "\n")
	if len(lines) != 6 || lines[0] != checkpointHeader {
		return fmt.Errorf("audit: a checkpoint is 6 lines starting %q", checkpointHeader)
	}
	var out Checkpoint
	for i, name := range []string{"kid", "size", "head", "time", "signature"} {
		v, ok := strings.CutPrefix(lines[i+1], name+" ")
		if !ok {
			return fmt.Errorf("audit: checkpoint line %d: want %q, got %q", i+2, name+" …", lines[i+1])
		}
		if err := out.set(name, v); err != nil {
			return err
		}
	}
	*c = out
	return nil
}

// set parses one field of the text or JSON form.
func (c *Checkpoint) set(name, v string) error {
	var err error
	switch name {
	case "kid":
		if v == "" {
			err = errors.New("empty")
		}
		c.KID = v
	case "size":
		c.Size, err = strconv.ParseInt(v, 10, 64)
		if err == nil && c.Size < 1 {
			err = errors.New("must be at least 1")
		}
	case "head":
		var h []byte
		h, err = hex.DecodeString(v)
		if err == nil && len(h) != len(c.Head) {
			err = fmt.Errorf("want %d hex bytes, got %d", len(c.Head), len(h))
		}
		copy(c.Head[:], h)
	case "time":
		c.Time, err = time.Parse(checkpointTime, v)
	case "signature":
		c.Signature, err = base64.StdEncoding.DecodeString(v)
		if err == nil && len(c.Signature) != ed25519.SignatureSize {
			err = fmt.Errorf("want %d bytes, got %d", ed25519.SignatureSize, len(c.Signature))
		}
	}
	if err != nil {
		return fmt.Errorf("audit: checkpoint %s %q: %v", name, v, err)
	}
	return nil
}

// checkpointJSON is the JSON form's shape.
type checkpointJSON struct {
	Size      int64  `json:"size"`
	Head      string `json:"head"`
	Time      string `json:"time"`
	KID       string `json:"kid"`
	Signature string `json:"signature"`
}

// MarshalJSON returns the JSON form.
func (c Checkpoint) MarshalJSON() ([]byte, error) {
	return json.Marshal(checkpointJSON{c.Size, c.Head.String(), c.Time.UTC().Format(checkpointTime), c.KID,
		base64.StdEncoding.EncodeToString(c.Signature)})
}

// UnmarshalJSON reads the JSON form.
func (c *Checkpoint) UnmarshalJSON(b []byte) error {
	var j checkpointJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("audit: checkpoint JSON: %w", err)
	}
	var out Checkpoint
	for _, f := range []struct{ name, v string }{
		{"kid", j.KID}, {"size", strconv.FormatInt(j.Size, 10)}, {"head", j.Head}, {"time", j.Time}, {"signature", j.Signature},
	} {
		if err := out.set(f.name, f.v); err != nil {
			return err
		}
	}
	*c = out
	return nil
}

// ParseCheckpoint reads a checkpoint in the text or the JSON form. It does
// not verify the signature: see Checkpoint.Verify.
func ParseCheckpoint(b []byte) (Checkpoint, error) {
	var c Checkpoint
	var err error
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		err = c.UnmarshalJSON(t)
	} else {
		err = c.UnmarshalText(b)
	}
	return c, err
}
