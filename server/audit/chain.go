package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// Hash is a SHA-256 value of the chain: a leaf or a head h_n.
type Hash [32]byte

// String returns h in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// encodingVersion is the first byte of every event encoding. A new
// encoding gets a new number; old events keep the one they were sealed with.
const encodingVersion = 0x01

// The domain-separation prefixes of the two hashes.
const (
	leafPrefix  = 0x00
	chainPrefix = 0x01
)

// pgEpochMicros is 2000-01-01T00:00:00Z (PostgreSQL's timestamp epoch) in
// microseconds since the Unix epoch.
const pgEpochMicros = 946684800000000

// numColumns is the number of encoded columns; the column order is
// eventColumns' (and the FORMAT section's).
const numColumns = 14

// eventColumns selects the encoded columns of audit_events e in the
// canonical order. Every value travels in PostgreSQL's binary format, which
// for these types is the canonical encoding's value bytes, except at.
const eventColumns = `e.id, e.at, e.actor, e.role, e.client_addr, e.action, e.outcome, e.serial,
	e.ticket, e.method, e.reason, e.request_id, e.issuance_id, e.detail`

// The positions of the non-text columns in eventColumns.
const (
	colID     = 0
	colAt     = 1
	colMethod = 9
	colUUID   = 12
)

// Event is one audit_events row as the chain sees it. Pointer fields are
// the nullable columns: nil is SQL NULL, which the encoding tells apart
// from the empty string.
type Event struct {
	ID         int64
	At         time.Time // encoded at microsecond precision, in UTC
	Actor      string
	Role       string
	ClientAddr *string
	Action     string
	Outcome    string
	Serial     *string
	Ticket     *string
	Method     *int16
	Reason     *string
	RequestID  *string
	IssuanceID *[16]byte
	Detail     *string
}

// AppendEncoding appends e's canonical encoding (FORMAT) to b.
func (e *Event) AppendEncoding(b []byte) []byte {
	var id, at [8]byte
	binary.BigEndian.PutUint64(id[:], uint64(e.ID))
	binary.BigEndian.PutUint64(at[:], uint64(e.At.UnixMicro()-pgEpochMicros))
	str := func(s *string) []byte {
		if s == nil {
			return nil
		}
		return append([]byte{}, *s...) // non-nil even when empty
	}
	var raw [numColumns][]byte
	raw[colID], raw[colAt] = id[:], at[:]
	raw[2], raw[3] = []byte(e.Actor), []byte(e.Role)
	raw[4] = str(e.ClientAddr)
	raw[5], raw[6] = []byte(e.Action), []byte(e.Outcome)
	raw[7], raw[8] = str(e.Serial), str(e.Ticket)
	if e.Method != nil {
		raw[colMethod] = binary.BigEndian.AppendUint16(nil, uint16(*e.Method))
	}
	raw[10], raw[11] = str(e.Reason), str(e.RequestID)
	if e.IssuanceID != nil {
		raw[colUUID] = e.IssuanceID[:]
	}
	raw[13] = str(e.Detail)
	for i := range raw {
		if raw[i] == nil && (i == colID || i == colAt || i == 2 || i == 3 || i == 5 || i == 6) {
			raw[i] = []byte{} // NOT NULL columns are never NULL, even empty
		}
	}
	return appendRaw(b, raw[:])
}

// Leaf returns e's leaf hash, SHA-256(0x00 || encoding).
func (e *Event) Leaf() Hash {
	return sha256.Sum256(e.AppendEncoding([]byte{leafPrefix}))
}

// appendRaw appends the canonical encoding of one row whose columns (in
// eventColumns' order) are in PostgreSQL's binary format, nil for NULL.
// It is the one encoder: Event.AppendEncoding goes through it too.
func appendRaw(b []byte, vals [][]byte) []byte {
	b = append(b, encodingVersion)
	for i, v := range vals {
		if v == nil {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		if i == colAt && len(v) == 8 {
			// PostgreSQL counts from 2000; the encoding from 1970.
			b = binary.BigEndian.AppendUint64(b, uint64(int64(binary.BigEndian.Uint64(v))+pgEpochMicros))
			continue
		}
		b = append(b, v...)
	}
	return b
}

// Next returns h_n = SHA-256(0x01 || prev || leaf || n as 8 bytes).
func Next(prev, leaf Hash, n int64) Hash {
	var buf [1 + 32 + 32 + 8]byte
	buf[0] = chainPrefix
	copy(buf[1:], prev[:])
	copy(buf[33:], leaf[:])
	binary.BigEndian.PutUint64(buf[65:], uint64(n))
	return sha256.Sum256(buf[:])
}

// leafer computes leaves of raw rows on one reused buffer: no allocation
// per row once the buffer has grown to the largest event.
type leafer struct{ buf []byte }

func (l *leafer) leaf(vals [][]byte) Hash {
	l.buf = appendRaw(append(l.buf[:0], leafPrefix), vals)
	return sha256.Sum256(l.buf)
}
