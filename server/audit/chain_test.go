package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

// vectorEvent is the FORMAT test vector's event.
var vectorEvent = Event{
	ID: 42, At: now, Actor: "alice", Role: "agent", ClientAddr: ptr("10.0.0.7:4242"),
	Action: "recovery.issue", Outcome: "success", Serial: ptr("JZ6OES#2017-08-01#3#DVR1101134C08011"),
	Ticket: ptr("T-1001"), Method: ptr[int16](1), Reason: ptr(""), RequestID: nil,
	IssuanceID: &[16]byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x47, 0x08, 0x89, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10},
	Detail:     nil,
}

// TestEncodingMatchesFormat re-implements FORMAT byte by byte, separately
// from the encoder, and pins the leaf and the first chain hashes so that a
// change of the encoding cannot pass unnoticed (sealed logs would no longer
// verify).
func TestEncodingMatchesFormat(t *testing.T) {
	var want bytes.Buffer
	want.WriteByte(1) // version
	field := func(v []byte) {
		if v == nil {
			want.WriteByte(0)
			return
		}
		want.WriteByte(1)
		binary.Write(&want, binary.BigEndian, uint32(len(v)))
		want.Write(v)
	}
	be := func(v any) []byte { var b bytes.Buffer; binary.Write(&b, binary.BigEndian, v); return b.Bytes() }
	field(be(int64(42)))
	field(be(now.UnixMicro()))
	field([]byte("alice"))
	field([]byte("agent"))
	field([]byte("10.0.0.7:4242"))
	field([]byte("recovery.issue"))
	field([]byte("success"))
	field([]byte("JZ6OES#2017-08-01#3#DVR1101134C08011"))
	field([]byte("T-1001"))
	field(be(int16(1)))
	field([]byte{}) // reason: empty, not NULL
	field(nil)      // request_id: NULL
	field(vectorEvent.IssuanceID[:])
	field(nil) // detail: NULL
	if got := vectorEvent.AppendEncoding(nil); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("encoding\n got %x\nwant %x", got, want.Bytes())
	}
	leaf := vectorEvent.Leaf()
	h1 := Next(Hash{}, leaf, 1)
	h2 := Next(h1, leaf, 2)
	for _, c := range []struct{ name, got, want string }{
		{"leaf", leaf.String(), "9889dd7b479a7bea803696509a9668c3fbd72947eb3f3ced8e788913ddddfb7f"},
		{"h1", h1.String(), "3637642fc6b1d0973d5b3777f7092121688b5df291d5b77f7f1dfadbe436c1b3"},
		{"h2", h2.String(), "46476178d266c56b9acdf5163afe3dac3db3c167edfaec7219ea18a74b79a6d3"},
	} {
		t.Logf("%s = %s", c.name, c.got)
		if c.want != "" && c.got != c.want {
			t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
		}
	}
	if h1 == h2 {
		t.Error("the same leaf at two positions gave the same hash: n is not bound")
	}
}

// TestEncodingNullIsNotEmpty: NULL and "" are different events, so an
// attacker cannot blank a field to NULL (or back) unnoticed.
func TestEncodingNullIsNotEmpty(t *testing.T) {
	a, b := vectorEvent, vectorEvent
	b.Reason = nil
	if a.Leaf() == b.Leaf() {
		t.Fatal("reason \"\" and NULL encode alike")
	}
	// Length prefixes: moving a byte from one field to the next changes it.
	c, d := vectorEvent, vectorEvent
	c.Actor, c.Role = "alicea", "gent"
	if c.Leaf() == d.Leaf() {
		t.Fatal("field boundaries are not bound")
	}
}

// TestEncodingMatchesDatabase: the sealer encodes the binary values
// PostgreSQL sends; an auditor re-implementing FORMAT from the row's
// values must get the same leaf.
func TestEncodingMatchesDatabase(t *testing.T) {
	resetLog(t)
	ctx := context.Background()
	pool := openPool(t, false)
	insertEvents(t, pool, 12)
	rows, err := pool.Query(ctx, `SELECT `+eventColumns+` FROM audit_events e ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var lf leafer
	n := 0
	for rows.Next() {
		raw := lf.leaf(rows.RawValues())
		var (
			e    Event
			uuid *[16]byte
		)
		if err := rows.Scan(&e.ID, &e.At, &e.Actor, &e.Role, &e.ClientAddr, &e.Action, &e.Outcome, &e.Serial,
			&e.Ticket, &e.Method, &e.Reason, &e.RequestID, &uuid, &e.Detail); err != nil {
			t.Fatal(err)
		}
		e.IssuanceID = uuid
		if got := e.Leaf(); got != raw {
			t.Fatalf("event %d: leaf from values %s, from the wire %s", e.ID, got, raw)
		}
		n++
	}
	if err := rows.Err(); err != nil || n != 12 {
		t.Fatalf("read %d events: %v", n, err)
	}
}

func TestCheckpointForms(t *testing.T) {
	head := vectorEvent.Leaf()
	c := SignCheckpoint(1234, head, now, auditKID, auditKey)
	if err := c.Verify(trusted); err != nil {
		t.Fatal(err)
	}
	text, _ := c.MarshalText()
	js, _ := json.Marshal(c)
	t.Logf("text form:\n%s", text)
	t.Logf("JSON form: %s", js)
	for name, b := range map[string][]byte{"text": text, "json": js} {
		got, err := ParseCheckpoint(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Size != c.Size || got.Head != c.Head || !got.Time.Equal(c.Time) || got.KID != c.KID || !bytes.Equal(got.Signature, c.Signature) {
			t.Fatalf("%s: round trip %v, want %v", name, got, c)
		}
		if err := got.Verify(trusted); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if !strings.HasPrefix(string(text), checkpointHeader+"\nkid "+auditKID+"\nsize 1234\nhead "+hex.EncodeToString(head[:])+
		"\ntime 2026-01-02T03:04:05.123456Z\nsignature ") {
		t.Fatalf("text form:\n%s", text)
	}
}

func TestCheckpointVerifyRefuses(t *testing.T) {
	good := SignCheckpoint(10, vectorEvent.Leaf(), now, auditKID, auditKey)
	cases := []struct {
		name   string
		change func(*Checkpoint)
		want   error
	}{
		{"refused/size-changed", func(c *Checkpoint) { c.Size++ }, ErrBadSignature},
		{"refused/head-changed", func(c *Checkpoint) { c.Head[0] ^= 1 }, ErrBadSignature},
		{"refused/time-changed", func(c *Checkpoint) { c.Time = c.Time.Add(1000) }, ErrBadSignature},
		{"refused/attacker-key-same-kid", func(c *Checkpoint) { *c = SignCheckpoint(c.Size, c.Head, c.Time, auditKID, attackerKey) }, ErrBadSignature},
		{"refused/unknown-kid", func(c *Checkpoint) { *c = SignCheckpoint(c.Size, c.Head, c.Time, "attacker", attackerKey) }, ErrUnknownKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			c.Signature = bytes.Clone(good.Signature)
			tc.change(&c)
			if err := c.Verify(trusted); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzParseCheckpoint: whatever is read back either fails to parse or
// prints back to a form that parses to the same checkpoint.
func FuzzParseCheckpoint(f *testing.F) {
	good := SignCheckpoint(10, vectorEvent.Leaf(), now, auditKID, auditKey)
	text, _ := good.MarshalText()
	js, _ := json.Marshal(good)
	f.Add(text)                                                                                 // the text form
	f.Add(js)                                                                                   // the JSON form
	f.Add(bytes.ReplaceAll(text, []byte("\n"), []byte("\r\n")))                                 // written on Windows
	f.Add([]byte("hotline audit checkpoint v1\nkid a\nsize 0\nhead 00\ntime x\nsignature y\n")) // every field wrong
	f.Add([]byte(`{"size":-1}`))                                                                // JSON with missing members
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCheckpoint(b)
		if err != nil {
			return
		}
		out, _ := c.MarshalText()
		c2, err := ParseCheckpoint(out)
		if err != nil || c2.Size != c.Size || c2.Head != c.Head || !c2.Time.Equal(c.Time) || c2.KID != c.KID {
			t.Fatalf("%q parsed to %v, printed as %q, reparsed to %v, %v", b, c, out, c2, err)
		}
	})
}
