package server_test

// Tests of bulk import's logic on the in-memory store: Service.Import's
// roles and options, ImportSession's validation, de-duplication, batching
// and failures, ImportFile end to end, ValidateImportRow's rules and the
// report's bookkeeping. The file parsers are tested with their package.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/proto/hotline/importfile"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/importtest"
)

// row is a valid import row for serial on line.
func row(line int, serial string) importfile.Row {
	return importfile.Row{Line: line, Serial: serial, Model: "WBXHD082S2T", Firmware: "V3.1.0", OwnerContact: "jane@example.com"}
}

// storeOnly hides the ImportStore methods of a store.
type storeOnly struct{ server.Store }

func TestImport(t *testing.T) {
	tests := []struct {
		name   string
		actor  server.Actor
		opts   server.ImportOptions
		src    server.ImportSource
		setup  func(*env)
		code   server.Code
		field  string
		detail string // of the refusal's event; "" for none
	}{
		{name: "begun/defaults", src: server.ImportSource{FileName: "devices.csv", Format: importfile.FormatCSV}},
		{name: "begun/json-lines-from-a-windows-path", src: server.ImportSource{FileName: `C:\factory\lot 7.jsonl`, Format: importfile.FormatJSONLines}},
		{name: "refused/agent-may-not-import", actor: agentA, code: server.EPermission, detail: "permission_denied"},
		{name: "invalid/key-generation-beyond-current", opts: server.ImportOptions{KeyGeneration: 2},
			code: server.EInvalid, field: "options.key_generation", detail: "invalid:options.key_generation"},
		{name: "invalid/key-generation-negative", opts: server.ImportOptions{KeyGeneration: -1},
			code: server.EInvalid, field: "options.key_generation", detail: "invalid:options.key_generation"},
		{name: "invalid/batch-size-negative", opts: server.ImportOptions{KeyGeneration: 1, BatchSize: -1},
			code: server.EInvalid, field: "options.batch_size", detail: "invalid:options.batch_size"},
		{name: "invalid/batch-size-too-large", opts: server.ImportOptions{KeyGeneration: 1, BatchSize: server.MaxImportBatchSize + 1},
			code: server.EInvalid, field: "options.batch_size", detail: "invalid:options.batch_size"},
		{name: "invalid/format", src: server.ImportSource{Format: "xlsx"}, code: server.EInvalid, field: "options.format", detail: "invalid:options.format"},
		{name: "invalid/file-name-with-a-newline", src: server.ImportSource{FileName: "a.csv\nimport done"},
			code: server.EInvalid, field: "options.file_name", detail: "invalid:options.file_name"},
		{name: "invalid/file-name-too-long", src: server.ImportSource{FileName: strings.Repeat("a", 256)},
			code: server.EInvalid, field: "options.file_name", detail: "invalid:options.file_name"},
		{name: "internal/store-without-import", setup: func(e *env) { e.svc.Store = storeOnly{e.store} }, code: server.EInternal},
		{name: "internal/model-catalogue-unreadable", setup: func(e *env) {
			e.store.ModelsFn = func(context.Context) ([]server.Model, error) { return nil, errors.New("connection reset") }
		}, code: server.EInternal},
		{name: "invalid/store-refuses-the-options", setup: func(e *env) {
			e.store.BeginImportFn = func(context.Context, server.Actor, server.ImportOptions) (string, error) {
				return "", server.Invalid("key_generation", "no such generation")
			}
		}, code: server.EInvalid, field: "key_generation", detail: "invalid:key_generation"},
		{name: "unavailable/store-error-passes-through-unaudited", setup: func(e *env) {
			e.store.BeginImportFn = func(context.Context, server.Actor, server.ImportOptions) (string, error) {
				return "", server.Errorf(server.EUnavailable, "busy")
			}
		}, code: server.EUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var log bytes.Buffer
			e.svc.Logger = slog.New(slog.NewTextHandler(&log, nil))
			if tt.setup != nil {
				tt.setup(e)
			}
			a := provisioner
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			sess, err := e.svc.Import(e.ctx, a, tt.opts, tt.src)
			if tt.code != "" {
				if se := wantCode(t, err, tt.code); se.Field != tt.field {
					t.Errorf("field %q, want %q", se.Field, tt.field)
				}
				evs := e.store.Events()
				if tt.detail == "" {
					if len(evs) != 0 {
						t.Errorf("events %+v", evs)
					}
					return
				}
				if len(evs) != 1 {
					t.Fatalf("events %+v, want the refusal", evs)
				}
				wantEvent(t, evs[0], server.ActionImport, server.OutcomeRefused, tt.detail)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sess.ID() == "" || len(e.store.Events()) != 0 {
				t.Errorf("session %q, events %+v", sess.ID(), e.store.Events())
			}
			base := tt.src.FileName[strings.LastIndexAny(tt.src.FileName, `/\`)+1:]
			if !strings.Contains(log.String(), fmt.Sprintf("file=%q", base)) && !strings.Contains(log.String(), "file="+base) {
				t.Errorf("log %q does not name the file's base name %q", log.String(), base)
			}
		})
	}

	t.Run("imported/key-generation-0-is-the-current-one", func(t *testing.T) {
		e := newEnv(t)
		if _, err := e.keys.Rotate("master"); err != nil {
			t.Fatal(err)
		}
		sess, err := e.svc.Import(e.ctx, provisioner, server.ImportOptions{}, server.ImportSource{})
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.Add(row(2, serialA)); err != nil {
			t.Fatal(err)
		}
		rep, err := sess.Finish(strings.Repeat("ab", 32))
		if err != nil || rep.Inserted != 1 {
			t.Fatalf("Finish = %+v, %v", rep, err)
		}
		d, _ := e.store.LookupDevice(e.ctx, agentA, serialA)
		if d.KeyGeneration != 2 {
			t.Errorf("imported under generation %d, want the current 2", d.KeyGeneration)
		}
		// A service without a keyring imports under generation 1.
		e.svc.Keyring = nil
		if _, err := e.svc.Import(e.ctx, provisioner, server.ImportOptions{KeyGeneration: 2}, server.ImportSource{}); server.ErrorCode(err) != server.EInvalid {
			t.Errorf("generation 2 without a keyring: %v", err)
		}
	})
}

func TestImportSession(t *testing.T) {
	const serialD = "JZ6OES#2017-08-02#3#DVR1101134C08011" // serialA's device id under another serial
	sha := strings.Repeat("0f", 32)

	t.Run("imported/valid-invalid-and-duplicate-rows-in-batches", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialC, "jane@example.com") // registered as the file has it
		sess, err := server.NewImportSession(e.ctx, e.store, provisioner, testModels, server.ImportOptions{KeyGeneration: 1, BatchSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		rows := []importfile.Row{
			row(2, serialA),
			{Line: 3, Serial: "not a serial", Model: "WBXHD082S2T", Firmware: "V1"},
			row(4, " jz6oes#2017-08-01#3#dvr1101134c08011 "), // serialA again
			row(5, serialD),
			row(6, serialB),
			row(7, serialC),
			{Line: 8, Malformed: "line 8: wrong number of fields"},
		}
		for _, r := range rows {
			if err := sess.Add(r); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := sess.Finish(sha)
		if err != nil {
			t.Fatal(err)
		}
		if rep.ImportID != sess.ID() || rep.Received != 7 || rep.Inserted != 2 || rep.Unchanged != 1 || rep.Invalid != 2 ||
			rep.Duplicates != 2 || rep.Conflicts != 0 || rep.Batches != 2 || rep.SHA256 != sha {
			t.Errorf("report %s %+v", rep.Summary(), rep)
		}
		var lines []string
		for _, re := range rep.Errors {
			lines = append(lines, re.String())
		}
		want := []string{
			"line 3: invalid: serial: bad serial",
			"line 4: duplicate: serial already on line 2",
			"line 5: duplicate: device id DVR1101134C08011 already on line 2",
			"line 8: invalid: line 8: wrong number of fields",
		}
		if len(lines) != len(want) {
			t.Fatalf("errors %q, want %q", lines, want)
		}
		for i := range want {
			if !strings.HasPrefix(lines[i], want[i]) {
				t.Errorf("error %d = %q, want it to begin %q", i, lines[i], want[i])
			}
		}
		ev := e.store.LastEvent()
		wantEvent(t, ev, server.ActionImport, server.OutcomeSuccess, "sha256="+sha+" "+rep.Summary()+" update=false")
		if ev.RequestID != sess.ID() {
			t.Errorf("import event %+v", ev)
		}
		if d, err := e.store.LookupDevice(e.ctx, agentA, serialB); err != nil || d.KeyGeneration != 1 || d.OwnerContact != "jane@example.com" {
			t.Errorf("imported device %+v, %v", d, err)
		}
	})

	t.Run("conflicts/registered-differently-or-updated", func(t *testing.T) {
		for _, update := range []bool{false, true} {
			e := newEnv(t)
			e.register(serialA, "old@example.com")
			e.register(serialB, "")
			sess, err := server.NewImportSession(e.ctx, e.store, provisioner, testModels, server.ImportOptions{Update: update, KeyGeneration: 1})
			if err != nil {
				t.Fatal(err)
			}
			sess.Add(row(2, serialA))
			sess.Add(row(3, serialD[:len(serialD)-1]+"9"))
			r := row(4, serialB)
			r.Firmware = "V4.0.0"
			sess.Add(r)
			rep, err := sess.Finish(sha)
			if err != nil {
				t.Fatal(err)
			}
			// Without update, the registered contact is not compared: only
			// the firmware is a conflict.
			if update && (rep.Updated != 2 || rep.Conflicts != 0 || rep.Inserted != 1) ||
				!update && (rep.Updated != 0 || rep.Unchanged != 1 || rep.Conflicts != 1 || rep.Inserted != 1 || len(rep.Errors) != 1) {
				t.Errorf("update=%v: report %s %+v", update, rep.Summary(), rep.Errors)
			}
		}
	})

	t.Run("failed/a-batch-stops-the-import", func(t *testing.T) {
		e := newEnv(t)
		boom := server.Errorf(server.EUnavailable, "the database was busy")
		e.store.ImportBatchFn = func(_ context.Context, _ server.Actor, _ string, b server.ImportBatch, _ func(server.ImportState) *server.Error) (server.ImportReport, error) {
			if b.Seq == 2 {
				return server.ImportReport{}, boom
			}
			return server.ImportReport{Received: len(b.Rows), Inserted: len(b.Rows), Batches: 1}, nil
		}
		sess, err := server.NewImportSession(e.ctx, e.store, provisioner, testModels, server.ImportOptions{KeyGeneration: 1, BatchSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		var addErr error
		for i, s := range []string{serialA, serialB, serialC, "JZ6OES#2017-08-01#3#DVR3303356E20233"} {
			if addErr = sess.Add(row(i+2, s)); addErr != nil {
				break
			}
		}
		if !errors.Is(addErr, boom) {
			t.Errorf("Add after a failed batch = %v, want %v", addErr, boom)
		}
		if err := sess.Add(row(9, serialA)); !errors.Is(err, boom) {
			t.Errorf("Add after the failure = %v", err)
		}
		rep, err := sess.Finish(sha)
		if !errors.Is(err, boom) || rep.Inserted != 1 {
			t.Errorf("Finish = %+v, %v; want the batch's error after one committed batch", rep, err)
		}
		for _, ev := range e.store.Events() {
			if ev.Action == server.ActionImport {
				t.Errorf("a failed import was summarised: %+v", ev)
			}
		}
	})

	t.Run("failed/last-batch-fails-in-finish", func(t *testing.T) {
		e := newEnv(t)
		boom := errors.New("connection reset")
		e.store.ImportBatchFn = func(context.Context, server.Actor, string, server.ImportBatch, func(server.ImportState) *server.Error) (server.ImportReport, error) {
			return server.ImportReport{}, boom
		}
		sess, _ := server.NewImportSession(e.ctx, e.store, provisioner, testModels, server.ImportOptions{KeyGeneration: 1})
		sess.Add(importfile.Row{Line: 2, Serial: "x"}) // an invalid row alone still makes a batch
		if _, err := sess.Finish(sha); !errors.Is(err, boom) {
			t.Errorf("Finish = %v, want %v", err, boom)
		}
	})

	t.Run("failed/finishing-fails", func(t *testing.T) {
		e := newEnv(t)
		e.store.FinishImportFn = func(context.Context, server.Actor, string, string, func(server.ImportState) *server.Error) (server.ImportReport, error) {
			return server.ImportReport{}, server.Errorf(server.EPrecondition, "already finished")
		}
		sess, _ := server.NewImportSession(e.ctx, e.store, provisioner, testModels, server.ImportOptions{KeyGeneration: 1})
		sess.Add(row(2, serialA))
		if _, err := sess.Finish(sha); server.ErrorCode(err) != server.EPrecondition {
			t.Errorf("Finish = %v", err)
		}
	})

	t.Run("finished/empty-file-sends-no-batch", func(t *testing.T) {
		e := newEnv(t)
		n := 0
		e.store.ImportBatchFn = func(context.Context, server.Actor, string, server.ImportBatch, func(server.ImportState) *server.Error) (server.ImportReport, error) {
			n++
			return server.ImportReport{}, nil
		}
		sess, _ := server.NewImportSession(e.ctx, e.store, provisioner, testModels, server.ImportOptions{KeyGeneration: 1})
		if rep, err := sess.Finish(sha); err != nil || n != 0 || rep.Batches != 0 {
			t.Errorf("Finish = %+v, %v after %d batches", rep, err, n)
		}
	})

	t.Run("options/defaults-and-bounds", func(t *testing.T) {
		e := newEnv(t)
		var got server.ImportOptions
		e.store.BeginImportFn = func(_ context.Context, _ server.Actor, o server.ImportOptions) (string, error) {
			got = o
			return "imp-1", nil
		}
		if _, err := server.NewImportSession(e.ctx, e.store, provisioner, nil, server.ImportOptions{KeyGeneration: 1, BatchSize: 10 * server.MaxImportBatchSize}); err != nil {
			t.Fatal(err)
		}
		if got.KeyGeneration != 1 || got.BatchSize != server.MaxImportBatchSize {
			t.Errorf("options %+v", got)
		}
		if _, err := server.NewImportSession(e.ctx, e.store, provisioner, nil, server.ImportOptions{KeyGeneration: 1}); err != nil || got.BatchSize != server.DefaultImportBatchSize {
			t.Errorf("options %+v, %v", got, err)
		}
		_, err := server.NewImportSession(e.ctx, e.store, provisioner, nil, server.ImportOptions{KeyGeneration: -2})
		wantCode(t, err, server.EInvalid)
		e.store.BeginImportFn = func(context.Context, server.Actor, server.ImportOptions) (string, error) {
			return "", errors.New("connection reset")
		}
		if _, err := server.NewImportSession(e.ctx, e.store, provisioner, nil, server.ImportOptions{KeyGeneration: 1}); err == nil {
			t.Error("a failed BeginImport began an import")
		}
	})
}

func TestImportFile(t *testing.T) {
	const file = "serial,model,firmware,owner_contact\n" +
		"JZ6OES#2017-08-01#3#DVR1101134C08011,WBXHD082S2T,V3.1.0,jane@example.com\n" +
		"JZ6OES#2017-08-01#3#DVR1101134C08012,WBXHD041S,V3.1.0,\n" +
		"JZ6OES#2017-08-01#3#DVR1101134C08012,WBXHD041S,V3.1.0,\n"
	e := newEnv(t)
	rep, err := server.ImportFile(e.ctx, e.store, provisioner, testModels, strings.NewReader(file), "", server.ImportOptions{KeyGeneration: 1})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(file))
	if rep.Inserted != 2 || rep.Duplicates != 1 || rep.Received != 3 || rep.SHA256 != hex.EncodeToString(sum[:]) ||
		len(rep.Errors) != 1 || rep.Errors[0].Line != 4 {
		t.Errorf("ImportFile = %+v", rep)
	}

	t.Run("failed/unreadable-file-stops-the-import", func(t *testing.T) {
		e := newEnv(t)
		_, err := server.ImportFile(e.ctx, e.store, provisioner, testModels, strings.NewReader("serial,modle\n"), importfile.FormatCSV, server.ImportOptions{KeyGeneration: 1})
		wantCode(t, err, server.EInvalid)
		for _, ev := range e.store.Events() {
			if ev.Action == server.ActionImport {
				t.Errorf("an unread file was summarised: %+v", ev)
			}
		}
	})
	t.Run("failed/options", func(t *testing.T) {
		e := newEnv(t)
		_, err := server.ImportFile(e.ctx, e.store, provisioner, testModels, strings.NewReader(file), "", server.ImportOptions{KeyGeneration: -1})
		wantCode(t, err, server.EInvalid)
	})
}

func TestValidateImportRow(t *testing.T) {
	models := map[string]bool{"WBXHD082S2T": true, "WBXHD041S": true}
	tests := []struct {
		name   string
		mod    func(*importfile.Row)
		reason string // a part of the RowError's reason; "" for valid
		check  func(server.Device) bool
	}{
		{name: "valid/as-printed", check: func(d server.Device) bool {
			return d.Serial == serialA && d.DeviceID == "DVR1101134C08011" && d.Model == "WBXHD082S2T" && d.Firmware == "V3.1.0" &&
				d.OwnerContact == "jane@example.com" && d.ProductionDate.Equal(time.Date(2017, 8, 1, 0, 0, 0, 0, time.UTC)) && d.KeyGeneration == 0
		}},
		{name: "valid/sloppy-case-and-spaces", mod: func(r *importfile.Row) {
			r.Serial, r.Model, r.Firmware, r.OwnerContact = " jz6oes#2017-08-01#3#dvr1101134c08011", " wbxhd041s ", " V3.1.0 ", " +44 7700 900789 "
		}, check: func(d server.Device) bool {
			return d.Serial == serialA && d.Model == "WBXHD041S" && d.OwnerContact == "+447700900789"
		}},
		{name: "valid/no-owner-yet", mod: func(r *importfile.Row) { r.OwnerContact = " " }, check: func(d server.Device) bool { return d.OwnerContact == "" }},
		{name: "valid/production-date-of-the-serial", mod: func(r *importfile.Row) { r.ProductionDate = "2017-08-01" }},
		{name: "invalid/malformed-line", mod: func(r *importfile.Row) { r.Malformed = "bare quote in field" }, reason: "bare quote in field"},
		{name: "invalid/missing-serial", mod: func(r *importfile.Row) { r.Serial = "" }, reason: "serial: missing"},
		{name: "invalid/serial-lot", mod: func(r *importfile.Row) { r.Serial = "JZ6#2017-08-01#3#DVR1101134C08011" }, reason: `serial: bad lot "JZ6"`},
		{name: "invalid/missing-model", mod: func(r *importfile.Row) { r.Model = "" }, reason: "model: missing"},
		{name: "invalid/unknown-model", mod: func(r *importfile.Row) { r.Model = "WBX999" }, reason: `model: unknown model "WBX999"`},
		{name: "invalid/production-date-not-a-date", mod: func(r *importfile.Row) { r.ProductionDate = "01/08/2017" }, reason: "is not a date"},
		{name: "invalid/production-date-not-the-serials", mod: func(r *importfile.Row) { r.ProductionDate = "2017-08-02" }, reason: "is not the serial's date 2017-08-01"},
		{name: "invalid/missing-firmware", mod: func(r *importfile.Row) { r.Firmware = " " }, reason: "firmware: missing"},
		{name: "invalid/firmware-too-long", mod: func(r *importfile.Row) { r.Firmware = strings.Repeat("9", 65) }, reason: "65 characters"},
		{name: "invalid/firmware-not-printable-ascii", mod: func(r *importfile.Row) { r.Firmware = "V3.1.0é" }, reason: "not printable ASCII"},
		{name: "invalid/owner-contact", mod: func(r *importfile.Row) { r.OwnerContact = "jane at example" }, reason: "owner_contact:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := row(7, serialA)
			if tt.mod != nil {
				tt.mod(&r)
			}
			d, rerr := server.ValidateImportRow(r, models)
			if tt.reason != "" {
				if rerr == nil || rerr.Kind != server.RowInvalid || rerr.Line != 7 || !strings.Contains(rerr.Reason, tt.reason) {
					t.Fatalf("ValidateImportRow = %+v, %+v; want an invalid row saying %q", d, rerr, tt.reason)
				}
				return
			}
			if rerr != nil {
				t.Fatalf("refused: %v", rerr)
			}
			if tt.check != nil && !tt.check(d) {
				t.Errorf("device %+v", d)
			}
		})
	}
}

func TestImportReportErrorsCapped(t *testing.T) {
	var r server.ImportReport
	for i := range server.MaxReportErrors + 3 {
		r.AddError(server.RowError{Line: i})
	}
	if len(r.Errors) != server.MaxReportErrors || r.ErrorsDropped != 3 {
		t.Errorf("%d errors, %d dropped", len(r.Errors), r.ErrorsDropped)
	}
	if got := (server.ImportReport{Received: 3, Inserted: 1, Invalid: 2, Batches: 1}).Summary(); got !=
		"received=3 inserted=1 updated=0 unchanged=0 conflicts=0 duplicates=0 invalid=2 batches=1" {
		t.Errorf("Summary = %q", got)
	}
}

// TestJudgeImportRow: what an import does with a registered row. Nothing a
// provisioner sees depends on whether the row's contact is the registered
// one; the audit detail does.
func TestJudgeImportRow(t *testing.T) {
	reg := server.RegisteredRow{Model: "WBXHD082S2T", Firmware: "V3.1.0", OwnerContact: "jane@example.com"}
	held := reg
	held.Held = true
	tests := []struct {
		name            string
		reg             server.RegisteredRow
		model, contact  string
		update          bool
		write, change   bool
		conflict, audit string
	}{
		{name: "unchanged/right-contact", reg: reg, model: "WBXHD082S2T", contact: "Jane@Example.com"},
		{name: "unchanged/wrong-contact-audited", reg: reg, model: "WBXHD082S2T", contact: "john@example.com",
			audit: "owner_contact=changed old=j***@example.com new=j***@example.com not updated"},
		{name: "unchanged/no-contact-given", reg: reg, model: "WBXHD082S2T"},
		{name: "conflict/model-whatever-the-contact", reg: reg, model: "WBXHD162S", contact: "john@example.com",
			conflict: "model WBXHD082S2T is registered, the file says WBXHD162S; not updated", audit: "owner_contact=changed"},
		{name: "written/right-contact-with-update", reg: reg, model: "WBXHD082S2T", contact: "jane@example.com", update: true,
			write: true, audit: "owner_contact=same"},
		{name: "written/wrong-contact-with-update-is-a-change", reg: reg, model: "WBXHD082S2T", contact: "attacker@evil.example", update: true,
			write: true, change: true, audit: "owner_contact=changed old=j***@example.com new=a***@evil.example"},
		{name: "written/first-contact-is-a-change", reg: server.RegisteredRow{Model: "WBXHD082S2T", Firmware: "V3.1.0"}, model: "WBXHD082S2T",
			contact: "jane@example.com", update: true, write: true, change: true, audit: "old=none new=j***@example.com"},
		{name: "unchanged/update-without-contact-or-difference", reg: reg, model: "WBXHD082S2T", update: true},
		{name: "conflict/held-right-contact", reg: held, model: "WBXHD082S2T", contact: "jane@example.com", update: true,
			conflict: "the file gives an owner contact; the device is on hold"},
		{name: "conflict/held-wrong-contact", reg: held, model: "WBXHD082S2T", contact: "john@example.com", update: true,
			conflict: "the file gives an owner contact; the device is on hold", audit: "on hold, not updated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := server.JudgeImportRow(tt.reg, 7, tt.model, "V3.1.0", server.NormaliseContact(tt.contact), tt.update)
			if v.Write != tt.write || v.ContactChange != tt.change || !strings.HasPrefix(v.Conflict, tt.conflict) || (tt.conflict == "") != (v.Conflict == "") {
				t.Errorf("verdict %+v", v)
			}
			if tt.audit == "" && v.Detail != "" && !tt.write || !strings.Contains(v.Detail, tt.audit) {
				t.Errorf("audit detail %q, want it to hold %q", v.Detail, tt.audit)
			}
			if strings.Contains(v.Conflict, "***") {
				t.Errorf("the provisioner's conflict shows a masked contact: %q", v.Conflict)
			}
		})
	}
}

// TestImportDuplicates: the in-memory store reports repeated serials and
// device ids as server/postgres does (the shared table of importtest).
func TestImportDuplicates(t *testing.T) {
	importtest.Duplicates(t, func(t *testing.T) importtest.Store { return newEnv(t).store })
}
