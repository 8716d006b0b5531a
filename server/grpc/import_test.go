package grpcserver_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/dvrhotline/hotline/proto/hotline/importfile"
	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
)

// importFile streams file through ImportDevices the way hotlinectl does:
// parsed with importfile.Parse, chunk rows per message, options first
// and the file's SHA-256 last.
func (e *env) importFile(ctx context.Context, file string, opts *hotlinev1.ImportOptions, chunk int) (*hotlinev1.ImportDevicesResponse, error) {
	stream, err := e.devices.ImportDevices(ctx)
	if err != nil {
		return nil, err
	}
	msg := &hotlinev1.ImportDevicesRequest{Options: opts}
	send := func() error {
		err := stream.Send(msg)
		msg = &hotlinev1.ImportDevicesRequest{}
		if errors.Is(err, io.EOF) { // the server ended the call: its status says why
			_, err = stream.CloseAndRecv()
		}
		return err
	}
	err = importfile.Parse(strings.NewReader(file), "", func(r importfile.Row) error {
		msg.Rows = append(msg.Rows, &hotlinev1.ImportRow{Line: int64(r.Line), Serial: r.Serial, Model: r.Model, Firmware: r.Firmware,
			OwnerContact: r.OwnerContact, ProductionDate: r.ProductionDate, Malformed: r.Malformed})
		if len(msg.Rows) == chunk {
			return send()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(file))
	msg.Sha256 = hex.EncodeToString(sum[:])
	if err := send(); err != nil {
		return nil, err
	}
	return stream.CloseAndRecv()
}

func sha(file string) string {
	sum := sha256.Sum256([]byte(file))
	return hex.EncodeToString(sum[:])
}

// counts is a report's counters, comparable.
type counts struct{ received, inserted, updated, unchanged, conflicts, duplicates, invalid, batches int64 }

func countsOf(r *hotlinev1.ImportDevicesResponse) counts {
	return counts{r.GetReceived(), r.GetInserted(), r.GetUpdated(), r.GetUnchanged(), r.GetConflicts(), r.GetDuplicates(), r.GetInvalid(), r.GetBatches()}
}

func TestImportDevices(t *testing.T) {
	e := start(t)
	registered := e.register(t, 0)  // WBXHD082S2T, V4.0.1, Jane.Doe@Example.com
	conflicting := e.register(t, 0) // the file gives another model
	a, b := newSerial(), newSerial()
	file := strings.Join([]string{
		"serial,model,firmware,owner_contact,production_date",
		a + ",WBXHD082S2T,V3.1.0,jane@example.com,2017-08-01",        // 2 inserted
		strings.ToLower(b) + ",wbxhd041s,V3.1.0,+44 7700 900789,",    // 3 inserted (sloppy case)
		"JZ6OES#2017-08-01#3#,WBXHD082S2T,V3.1.0,a@example.com,",     // 4 invalid serial
		newSerial() + ",WBX999,V3.1.0,a@example.com,",                // 5 invalid model
		a + ",WBXHD082S2T,V3.1.0,jane@example.com,",                  // 6 duplicate of line 2
		newSerial() + ",WBXHD082S2T,V3.1.0",                          // 7 malformed: 3 fields
		registered + ",WBXHD082S2T,V4.0.1,jane.doe@example.com,",     // 8 unchanged
		conflicting + ",WBXHD041S,V4.0.1,jane.doe@example.com,",      // 9 conflict: model
		newSerial() + ",WBXHD082S2T,V3.1.0,a@example.com,2017-08-02", // 10 invalid date
		newSerial() + ",WBXHD082S2T,V3.1.0,nobody,",                  // 11 invalid contact
	}, "\n") + "\n"
	want := []struct {
		line   int64
		kind   hotlinev1.RowErrorKind
		reason string
	}{
		{4, hotlinev1.RowErrorKind_ROW_ERROR_KIND_INVALID, "serial:"},
		{5, hotlinev1.RowErrorKind_ROW_ERROR_KIND_INVALID, "model: unknown model"},
		{6, hotlinev1.RowErrorKind_ROW_ERROR_KIND_DUPLICATE, "already on line 2"},
		{7, hotlinev1.RowErrorKind_ROW_ERROR_KIND_INVALID, "3 fields, the header 5"},
		{9, hotlinev1.RowErrorKind_ROW_ERROR_KIND_CONFLICT, "model WBXHD082S2T is registered, the file says WBXHD041S"},
		{10, hotlinev1.RowErrorKind_ROW_ERROR_KIND_INVALID, "production_date"},
		{11, hotlinev1.RowErrorKind_ROW_ERROR_KIND_INVALID, "owner_contact"},
	}
	prov := "provisioner-import-1"
	ctx := e.asSubject(t, prov, server.RoleProvisioner)
	checkErrors := func(t *testing.T, rep *hotlinev1.ImportDevicesResponse) {
		t.Helper()
		if len(rep.GetErrors()) != len(want) || rep.GetErrorsDropped() != 0 {
			t.Fatalf("errors %v (dropped %d), want %d", rep.GetErrors(), rep.GetErrorsDropped(), len(want))
		}
		for i, w := range want {
			g := rep.GetErrors()[i]
			if g.GetLine() != w.line || g.GetKind() != w.kind || !strings.Contains(g.GetReason(), w.reason) {
				t.Errorf("error %d: line %d %v %q, want line %d %v containing %q", i, g.GetLine(), g.GetKind(), g.GetReason(), w.line, w.kind, w.reason)
			}
		}
		if g := rep.GetErrors()[4]; g.GetSerial() != conflicting {
			t.Errorf("conflict serial %q, want %s", g.GetSerial(), conflicting)
		}
	}

	rep, err := e.importFile(ctx, file, &hotlinev1.ImportOptions{FileName: "/factory/batch-1.csv", Format: "csv"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := countsOf(rep), (counts{received: 10, inserted: 2, unchanged: 1, conflicts: 1, duplicates: 1, invalid: 5, batches: 1}); got != want {
		t.Fatalf("report %+v, want %+v", got, want)
	}
	if rep.GetSha256() != sha(file) || rep.GetImportId() == "" {
		t.Errorf("sha256 %q import id %q", rep.GetSha256(), rep.GetImportId())
	}
	checkErrors(t, rep)
	for _, sn := range []string{a, b} {
		look, err := e.devices.LookupDevice(e.as(t, server.RoleAgent), &hotlinev1.LookupDeviceRequest{Query: sn})
		if err != nil {
			t.Fatalf("imported %s: %v", sn, err)
		}
		if d := look.GetDevice(); d.GetFirmware() != "V3.1.0" || d.GetKeyGeneration() != 2 {
			t.Errorf("imported device %v: want firmware V3.1.0, the current key generation 2", d)
		}
	}

	t.Run("audited-once-with-the-clients-sha256", func(t *testing.T) {
		resp, err := e.audit.QueryEvents(e.as(t, server.RoleAuditor), &hotlinev1.QueryEventsRequest{
			Actor: prov, Action: string(server.ActionImport)})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(resp.GetEvents()); n != 1 {
			t.Fatalf("%d import events, want 1: %v", n, resp.GetEvents())
		}
		ev := resp.GetEvents()[0]
		if ev.GetRequestId() != rep.GetImportId() || ev.GetOutcome() != hotlinev1.Outcome_OUTCOME_SUCCESS ||
			!strings.Contains(ev.GetDetail(), "sha256="+sha(file)) || !strings.Contains(ev.GetDetail(), "inserted=2") {
			t.Errorf("import event %v", ev)
		}
	})

	t.Run("reimport/changes-nothing", func(t *testing.T) {
		again, err := e.importFile(ctx, file, nil, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := countsOf(again), (counts{received: 10, unchanged: 3, conflicts: 1, duplicates: 1, invalid: 5, batches: 1}); got != want {
			t.Fatalf("re-import %+v, want %+v", got, want)
		}
		checkErrors(t, again)
	})

	t.Run("reimport/clean-file-all-unchanged", func(t *testing.T) {
		clean := "serial,model,firmware,owner_contact\n" + a + ",WBXHD082S2T,V3.1.0,jane@example.com\n" + b + ",WBXHD041S,V3.1.0,+447700900789\n"
		again, err := e.importFile(ctx, clean, nil, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := countsOf(again), (counts{received: 2, unchanged: 2, batches: 1}); got != want || len(again.GetErrors()) != 0 {
			t.Fatalf("re-import %+v %v, want %+v", got, again.GetErrors(), want)
		}
	})

	t.Run("update/overwrites-the-conflict", func(t *testing.T) {
		up := "serial,model,firmware,owner_contact\n" + conflicting + ",WBXHD041S,V4.0.1,jane.doe@example.com\n"
		rep, err := e.importFile(ctx, up, &hotlinev1.ImportOptions{Update: true}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := countsOf(rep), (counts{received: 1, updated: 1, batches: 1}); got != want {
			t.Fatalf("update %+v, want %+v", got, want)
		}
	})
}

func TestImportDevicesRefused(t *testing.T) {
	e := start(t)
	file := "serial,model,firmware,owner_contact\n" + newSerial() + ",WBXHD082S2T,V3.1.0,\n"

	t.Run("refused/agent-permission-denied-and-audited", func(t *testing.T) {
		agent := fmt.Sprintf("agent-import-%d", subjects.Add(1))
		_, err := e.importFile(e.asSubject(t, agent, server.RoleAgent), file, nil, 1000)
		wantCode(t, err, codes.PermissionDenied)
		resp, err := e.audit.QueryEvents(e.as(t, server.RoleAuditor), &hotlinev1.QueryEventsRequest{
			Actor: agent, Action: string(server.ActionImport), Outcome: hotlinev1.Outcome_OUTCOME_REFUSED})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(resp.GetEvents()); n != 1 || !strings.HasPrefix(resp.GetEvents()[0].GetDetail(), "permission") {
			t.Fatalf("%d refused import events for %s: %v", n, agent, resp.GetEvents())
		}
	})
	for _, role := range []server.Role{server.RoleSupervisor, server.RoleAuditor} {
		t.Run("refused/"+string(role), func(t *testing.T) {
			_, err := e.importFile(e.as(t, role), file, nil, 1000)
			wantCode(t, err, codes.PermissionDenied)
		})
	}

	invalid := []struct {
		name  string
		opts  *hotlinev1.ImportOptions
		field string
	}{
		{"key-generation-negative", &hotlinev1.ImportOptions{KeyGeneration: -1}, "options.key_generation"},
		{"key-generation-beyond-current", &hotlinev1.ImportOptions{KeyGeneration: 3}, "options.key_generation"},
		{"batch-size-too-big", &hotlinev1.ImportOptions{BatchSize: server.MaxImportBatchSize + 1}, "options.batch_size"},
		{"unknown-format", &hotlinev1.ImportOptions{Format: "xlsx"}, "options.format"},
		{"file-name-with-newline", &hotlinev1.ImportOptions{FileName: "a.csv\nforged log line"}, "options.file_name"},
	}
	for _, tt := range invalid {
		t.Run("invalid/"+tt.name, func(t *testing.T) {
			_, err := e.importFile(e.as(t, server.RoleProvisioner), file, tt.opts, 1000)
			st := wantCode(t, err, codes.InvalidArgument)
			if f := badField(st.Details()); f != tt.field {
				t.Errorf("field %q, want %q (%s)", f, tt.field, st.Message())
			}
		})
	}

	t.Run("invalid/no-sha256", func(t *testing.T) {
		stream, err := e.devices.ImportDevices(e.as(t, server.RoleProvisioner))
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&hotlinev1.ImportDevicesRequest{Rows: []*hotlinev1.ImportRow{{Line: 2, Serial: newSerial(), Model: "WBXHD082S2T", Firmware: "V1"}}})
		_, err = stream.CloseAndRecv()
		st := wantCode(t, err, codes.InvalidArgument)
		if f := badField(st.Details()); f != "sha256" {
			t.Errorf("field %q, want sha256", f)
		}
	})
	t.Run("invalid/lines-not-increasing", func(t *testing.T) {
		stream, err := e.devices.ImportDevices(e.as(t, server.RoleProvisioner))
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&hotlinev1.ImportDevicesRequest{Rows: []*hotlinev1.ImportRow{{Line: 3}, {Line: 2}}, Sha256: sha("")})
		_, err = stream.CloseAndRecv()
		st := wantCode(t, err, codes.InvalidArgument)
		if f := badField(st.Details()); f != "rows.line" {
			t.Errorf("field %q, want rows.line", f)
		}
	})
}

func badField(details []any) string {
	for _, d := range details {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 {
			return br.FieldViolations[0].Field
		}
	}
	return ""
}
