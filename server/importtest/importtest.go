// Package importtest holds the import cases that every server.ImportStore
// must pass alike: the in-memory store of package server's tests and
// server/postgres run the same table, so that the two report a file's
// repeated serials and device ids the same way, within a batch (found by
// server.ImportSession) and across batches (found by the store, from the
// import and line that wrote each device).
package importtest

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/dvrhotline/hotline/server"
)

// Store is an import store under test, with the few other store methods
// the cases use.
type Store interface {
	server.ImportStore
	// RegisterDevice registers a device one by one, outside any import.
	RegisterDevice(ctx context.Context, a server.Actor, d server.Device) error
	// LookupDevice reads a device back (server.Store's).
	LookupDevice(ctx context.Context, a server.Actor, serial string) (server.Device, error)
	// Models is the model catalogue; it must hold WBXHD041S and
	// WBXHD082S2T.
	Models(ctx context.Context) ([]server.Model, error)
}

// Provisioner is the actor the cases import as.
var Provisioner = server.Actor{Subject: "importtest-provisioner", Role: server.RoleProvisioner}

// row is one line of a case's file, from line 2 (line 1 is the header).
type row struct {
	serial   string // a key of the case's serials
	model    string // "" for WBXHD082S2T
	firmware string // "" for V3.1.0
}

// wantErr is a row error the report must list, in line order.
type wantErr struct {
	line   int
	kind   server.RowErrorKind
	reason string // exact, or a prefix when it ends in "..."
}

// provenance is what a lookup of a device must say wrote it.
type provenance struct {
	serial string // a key of the case's serials
	line   int    // 0: no import wrote it
}

// Duplicates runs the table of repeated serials and device ids against the
// store open returns (called once per case; a store may be shared, the
// cases use fresh serials). Every case imports with batches of two rows,
// so that line 2 and 3 are one batch and line 4 the next.
func Duplicates(t *testing.T, open func(t *testing.T) Store) {
	t.Helper()
	// A case's serials: "A", "B" and "E" are distinct devices; "A2" is
	// A's device id under another serial. "E" is registered (one by one)
	// before the import, as the file has it unless registered says
	// otherwise.
	tests := []struct {
		name       string
		update     bool
		registered string // E's model when registered, "" when E is not
		rows       []row
		want       server.ImportReport
		errs       []wantErr
		wrote      []provenance
		firmware   map[string]string // what the registry must hold after
	}{
		{
			name:  "duplicate/serial-in-the-same-batch",
			rows:  []row{{serial: "A"}, {serial: "A"}, {serial: "B"}},
			want:  server.ImportReport{Received: 3, Inserted: 2, Duplicates: 1},
			errs:  []wantErr{{3, server.RowDuplicate, "serial already on line 2 of this file; the first row wins"}},
			wrote: []provenance{{"A", 2}, {"B", 4}},
		},
		{
			name:     "duplicate/serial-across-batches-first-row-wins",
			rows:     []row{{serial: "A"}, {serial: "B"}, {serial: "A", firmware: "V9.9.9"}},
			want:     server.ImportReport{Received: 3, Inserted: 2, Duplicates: 1},
			errs:     []wantErr{{4, server.RowDuplicate, "serial already on line 2 of this file; the first row wins"}},
			wrote:    []provenance{{"A", 2}, {"B", 3}},
			firmware: map[string]string{"A": "V3.1.0"},
		},
		{
			name:  "duplicate/identical-row-across-batches",
			rows:  []row{{serial: "A"}, {serial: "B"}, {serial: "A"}},
			want:  server.ImportReport{Received: 3, Inserted: 2, Duplicates: 1},
			errs:  []wantErr{{4, server.RowDuplicate, "serial already on line 2 of this file; the first row wins"}},
			wrote: []provenance{{"A", 2}},
		},
		{
			name: "duplicate/device-id-under-another-serial-in-the-same-batch",
			rows: []row{{serial: "A"}, {serial: "A2"}, {serial: "B"}},
			want: server.ImportReport{Received: 3, Inserted: 2, Duplicates: 1},
			errs: []wantErr{{3, server.RowDuplicate, "device id {A} already on line 2 of this file under another serial; the first row wins"}},
		},
		{
			name:  "duplicate/device-id-under-another-serial-across-batches",
			rows:  []row{{serial: "A"}, {serial: "B"}, {serial: "A2"}},
			want:  server.ImportReport{Received: 3, Inserted: 2, Duplicates: 1},
			errs:  []wantErr{{4, server.RowDuplicate, "device id {A} already on line 2 of this file under another serial; the first row wins"}},
			wrote: []provenance{{"A", 2}},
		},
		{
			name:       "duplicate/repeat-of-a-registered-device-in-the-same-batch",
			registered: "WBXHD082S2T",
			rows:       []row{{serial: "E"}, {serial: "E"}, {serial: "B"}},
			want:       server.ImportReport{Received: 3, Inserted: 1, Unchanged: 1, Duplicates: 1},
			errs:       []wantErr{{3, server.RowDuplicate, "serial already on line 2 of this file; the first row wins"}},
			wrote:      []provenance{{"E", 0}},
		},
		{
			// The accepted consequence of a session that does not remember
			// the file: the first row wrote nothing, so the repeat is judged
			// against the registry again.
			name:       "unchanged-twice/repeat-of-a-registered-device-across-batches",
			registered: "WBXHD082S2T",
			rows:       []row{{serial: "E"}, {serial: "B"}, {serial: "E"}},
			want:       server.ImportReport{Received: 3, Inserted: 1, Unchanged: 2},
			wrote:      []provenance{{"E", 0}, {"B", 3}},
		},
		{
			name:       "conflict-twice/repeat-of-a-conflicting-row-across-batches",
			registered: "WBXHD041S",
			rows:       []row{{serial: "E"}, {serial: "B"}, {serial: "E"}},
			want:       server.ImportReport{Received: 3, Inserted: 1, Conflicts: 2},
			errs: []wantErr{
				{2, server.RowConflict, "model WBXHD041S is registered, the file says WBXHD082S2T..."},
				{4, server.RowConflict, "model WBXHD041S is registered, the file says WBXHD082S2T..."},
			},
			wrote: []provenance{{"E", 0}},
		},
		{
			// An update writes the device, so the repeat is a duplicate of
			// the row that wrote it: the first row wins.
			name:       "duplicate/repeat-of-an-updated-device-across-batches",
			update:     true,
			registered: "WBXHD041S",
			rows:       []row{{serial: "E", firmware: "V4.0.0"}, {serial: "B"}, {serial: "E", firmware: "V5.0.0"}},
			want:       server.ImportReport{Received: 3, Inserted: 1, Updated: 1, Duplicates: 1},
			errs:       []wantErr{{4, server.RowDuplicate, "serial already on line 2 of this file; the first row wins"}},
			wrote:      []provenance{{"E", 2}, {"B", 3}},
			firmware:   map[string]string{"E": "V4.0.0"},
		},
		{
			name:       "conflict/device-id-registered-under-another-serial-before",
			registered: "WBXHD082S2T",
			rows:       []row{{serial: "A"}, {serial: "B"}, {serial: "E2"}},
			want:       server.ImportReport{Received: 3, Inserted: 2, Conflicts: 1},
			errs:       []wantErr{{4, server.RowConflict, "device id {E} is registered under another serial, {E-serial}"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t)
			sn := serials()
			if tt.registered != "" {
				if err := st.RegisterDevice(ctx, Provisioner, server.Device{Serial: sn["E"], Model: tt.registered,
					Firmware: "V3.1.0", OwnerContact: "jane@example.com"}); err != nil {
					t.Fatal(err)
				}
			}
			var file strings.Builder
			file.WriteString("serial,model,firmware,owner_contact\n")
			for _, r := range tt.rows {
				model, fw := cmp.Or(r.model, "WBXHD082S2T"), cmp.Or(r.firmware, "V3.1.0")
				fmt.Fprintf(&file, "%s,%s,%s,jane@example.com\n", sn[r.serial], model, fw)
			}
			ms, err := st.Models(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := server.ImportFile(ctx, st, Provisioner, ms, strings.NewReader(file.String()), "",
				server.ImportOptions{Update: tt.update, KeyGeneration: 1, BatchSize: 2})
			if err != nil {
				t.Fatal(err)
			}
			got := rep
			got.ImportID, got.SHA256, got.Batches, got.Errors, got.ErrorsDropped = "", "", 0, nil, 0
			if got.Summary() != tt.want.Summary() {
				t.Errorf("report\n got %s\nwant %s", got.Summary(), tt.want.Summary())
			}
			if len(rep.Errors) != len(tt.errs) {
				t.Errorf("row errors %v, want %d", rep.Errors, len(tt.errs))
			}
			for i, e := range rep.Errors {
				if i >= len(tt.errs) {
					break
				}
				w := tt.errs[i]
				reason := expand(w.reason, sn)
				ok := e.Reason == reason
				if p, prefix := strings.CutSuffix(reason, "..."); prefix {
					ok = strings.HasPrefix(e.Reason, p)
				}
				if e.Line != w.line || e.Kind != w.kind || !ok {
					t.Errorf("row error %d: %s\n want line %d: %s: %s", i, e, w.line, w.kind, reason)
				}
			}
			for _, p := range tt.wrote {
				d, err := st.LookupDevice(ctx, Provisioner, sn[p.serial])
				if err != nil {
					t.Fatal(err)
				}
				wantID := rep.ImportID
				if p.line == 0 {
					wantID = ""
				}
				if d.ImportID != wantID || d.ImportLine != p.line {
					t.Errorf("%s written by import %q line %d, want %q line %d", p.serial, d.ImportID, d.ImportLine, wantID, p.line)
				}
			}
			for k, fw := range tt.firmware {
				if d, err := st.LookupDevice(ctx, Provisioner, sn[k]); err != nil || d.Firmware != fw {
					t.Errorf("%s has firmware %q (%v), want %q", k, d.Firmware, err, fw)
				}
			}
		})
	}
}

// serials returns a case's fresh serials by key: "A", "B", "E", and "A2"
// and "E2", the device ids of A and E under other serials; "{A}" and "{E}"
// are the device ids, "{E-serial}" E's serial, for expand.
func serials() map[string]string {
	var b [4]byte
	rand.Read(b[:])
	tag := "D" + strings.ToUpper(hex.EncodeToString(b[:]))[:7]
	sn := map[string]string{}
	for i, k := range []string{"A", "B", "E"} {
		id := fmt.Sprintf("%s%s%d", tag, k, i)
		sn[k] = "IMPTST#2017-08-01#3#" + id
		sn[k+"2"] = "IMPTST#2017-08-02#3#" + id
		sn["{"+k+"}"] = id
	}
	sn["{E-serial}"] = sn["E"]
	return sn
}

// expand replaces the {X} placeholders of s with sn's values.
func expand(s string, sn map[string]string) string {
	for k, v := range sn {
		if strings.HasPrefix(k, "{") {
			s = strings.ReplaceAll(s, k, v)
		}
	}
	return s
}
