package postgres_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/importtest"
	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// runTag returns a fresh device-id prefix (a letter and five more), so
// that tests sharing the package database never collide.
func runTag() string {
	var b [3]byte
	rand.Read(b[:])
	return "I" + strings.ToUpper(hex.EncodeToString(b[:]))[:5]
}

// devicesDigest is a digest of every device's registry fields (not
// registered_at, which is when the row landed).
func devicesDigest(tb testing.TB, url string) (digest string, count int) {
	tb.Helper()
	c := ownerConnTo(tb, url)
	err := c.QueryRow(context.Background(), `SELECT COALESCE(md5(string_agg(concat_ws('|', serial, device_id, model, production_date,
			firmware, owner_contact, key_generation, hold_reason, last_sequence), E'\n' ORDER BY serial)), ''), count(*) FROM devices`).
		Scan(&digest, &count)
	if err != nil {
		tb.Fatal(err)
	}
	return digest, count
}

type deviceRow struct {
	Model, Firmware, Contact string
	KeyGen                   int
	LastSeq                  int64
	Held                     bool
}

func readDevice(tb testing.TB, s string) (deviceRow, bool) {
	tb.Helper()
	var d deviceRow
	err := ownerConnTo(tb, testURL).QueryRow(context.Background(), `SELECT model, firmware, owner_contact, key_generation, last_sequence, hold_reason IS NOT NULL
		FROM devices WHERE serial = $1`, s).Scan(&d.Model, &d.Firmware, &d.Contact, &d.KeyGen, &d.LastSeq, &d.Held)
	if err != nil {
		return d, false
	}
	return d, true
}

func importCSV(tb testing.TB, db *postgres.DB, file string, opts server.ImportOptions) (server.ImportReport, error) {
	tb.Helper()
	ctx := context.Background()
	ms, err := db.Models(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return server.ImportFile(ctx, db, provisioner, ms, strings.NewReader(file), "", opts)
}

type wantErr struct {
	line   int
	kind   server.RowErrorKind
	reason string // a substring
}

func checkReport(t *testing.T, rep server.ImportReport, want server.ImportReport, errs []wantErr) {
	t.Helper()
	got := rep
	got.Errors, got.ImportID, got.SHA256, got.Batches = nil, "", "", 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("report counts:\n got %s\nwant %s", got.Summary(), want.Summary())
	}
	if len(rep.Errors) != len(errs) {
		t.Errorf("%d row errors, want %d:", len(rep.Errors), len(errs))
	}
	for i, e := range rep.Errors {
		if i >= len(errs) || e.Line != errs[i].line || e.Kind != errs[i].kind || !strings.Contains(e.Reason, errs[i].reason) {
			w := wantErr{}
			if i < len(errs) {
				w = errs[i]
			}
			t.Errorf("error %d: got %s, want line %d: %s: ...%s...", i, e, w.line, w.kind, w.reason)
		}
	}
}

// TestImport imports a file mixing good rows, every kind of bad row,
// duplicates within the file and rows already registered; then the same
// file again (nothing changes), then with Update.
func TestImport(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	tag := runTag()
	ser := func(date string, n int) string { return fmt.Sprintf("IMPORT#%s#3#%s%08d", date, tag, n) }
	sSame, sDiff, sHeld, sOther := ser("2018-01-01", 90), ser("2018-01-01", 91), ser("2018-01-01", 92), ser("2018-01-01", 99)
	for _, d := range []server.Device{
		{Serial: sSame, Model: "WBXHD082S2T", Firmware: "V3.1.0", OwnerContact: "+44 7700 900789"},
		{Serial: sDiff, Model: "WBXHD082S2T", Firmware: "V3.1.0", OwnerContact: "bob@example.com"},
		{Serial: sHeld, Model: "WBXHD041S", Firmware: "V3.1.0", OwnerContact: "carol@example.com"},
		{Serial: sOther, Model: "WBXHD041S", Firmware: "V3.1.0"},
	} {
		if err := db.RegisterDevice(ctx, provisioner, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.SetHold(ctx, supervisor, sHeld, &server.Hold{Reason: "disputed ownership"}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Issue(ctx, agent("imp-agent"), issueRequest(sDiff), server.DefaultLimits, policy); err != nil {
		t.Fatal(err)
	}
	good1 := ser("2017-08-01", 2)
	lines := []string{
		/* 1 */ "serial,model,firmware,owner_contact,production_date",
		/* 2 */ good1 + ",WBXHD041S1T,V3.1.0,Ann@Example.com,2017-08-01",
		/* 3 */ "IMPORT#2017-08-01#3,WBXHD041S,V3.1.0,ann@example.com,",
		/* 4 */ ser("2017-08-01", 4) + ",WBXHD999S,V3.1.0,ann@example.com,",
		/* 5 */ ser("2017-08-01", 5) + ",WBXHD041S,V3.1.0,ann@example.com,2017-08-02",
		/* 6 */ ser("2017-08-01", 6) + ",WBXHD041S,V3.1.0,not a contact,",
		/* 7 */ strings.ToLower(" import # 2017-08-01 # 3 # "+tag) + "00000007,wbxhd082s,V3.1.0,+44 7700 900111,",
		/* 8 */ good1 + ",WBXHD041S1T,V3.1.9,ann@example.com,",
		/* 9 */ sSame + ",WBXHD082S2T,V3.1.0,+447700900789,",
		/* 10 */ sDiff + ",WBXHD162S,V3.1.0,bob@example.com,",
		/* 11 */ sHeld + ",WBXHD041S,V3.1.0,dave@example.com,",
		/* 12 */ fmt.Sprintf("IMPORT#2019-05-05#1#%s%08d,WBXHD041S,V3.1.0,,", tag, 99),
		/* 13 */ fmt.Sprintf("IMPORT#2019-05-05#2#%s%08d,WBXHD041S,V3.1.0,,", tag, 7),
		/* 14 */ "a,b",
		/* 15 */ ser("2017-08-01", 15) + ",WBXHD041S,,ann@example.com,",
	}
	file := strings.Join(lines, "\r\n") + "\r\n"
	sum := sha256.Sum256([]byte(file))
	invalid := []wantErr{
		{3, server.RowInvalid, "serial: bad serial"},
		{4, server.RowInvalid, `model: unknown model "WBXHD999S"`},
		{5, server.RowInvalid, "production_date: 2017-08-02 is not the serial's date 2017-08-01"},
		{6, server.RowInvalid, `owner_contact: "not a contact" is not a contact`},
		{8, server.RowDuplicate, "serial already on line 2"},
	}
	tail := []wantErr{
		{12, server.RowConflict, fmt.Sprintf("device id %s00000099 is registered under another serial, %s", tag, sOther)},
		{13, server.RowDuplicate, fmt.Sprintf("device id %s00000007 already on line 7", tag)},
		{14, server.RowInvalid, "the record has 2 fields, the header 5"},
		{15, server.RowInvalid, "firmware: missing"},
	}
	conflictDiff := wantErr{10, server.RowConflict, "model WBXHD082S2T is registered, the file says WBXHD162S; not updated"}
	// The registered contact is never compared in a report: line 11's
	// other contact is unchanged without update, and a conflict with it
	// only because the device is on hold.
	conflictHeld := wantErr{11, server.RowConflict, "the file gives an owner contact; the device is on hold"}
	all := func(mid ...wantErr) []wantErr {
		return append(append(append([]wantErr{}, invalid...), mid...), tail...)
	}

	var importID string
	t.Run("first/good-rows-land-bad-rows-reported", func(t *testing.T) {
		rep, err := importCSV(t, db, file, server.ImportOptions{KeyGeneration: 2, BatchSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		importID = rep.ImportID
		checkReport(t, rep, server.ImportReport{Received: 14, Inserted: 2, Unchanged: 2, Conflicts: 2, Duplicates: 2, Invalid: 6},
			all(conflictDiff))
		if rep.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("report SHA-256 %s, want the file's", rep.SHA256)
		}
		if d, ok := readDevice(t, good1); !ok || d != (deviceRow{"WBXHD041S1T", "V3.1.0", "ann@example.com", 2, 0, false}) {
			t.Errorf("line 2's device: %+v, %v", d, ok)
		}
		if d, ok := readDevice(t, ser("2017-08-01", 7)); !ok || d != (deviceRow{"WBXHD082S", "V3.1.0", "+447700900111", 2, 0, false}) {
			t.Errorf("line 7's device (canonicalised): %+v, %v", d, ok)
		}
		for _, s := range []string{ser("2017-08-01", 4), ser("2017-08-01", 5), ser("2017-08-01", 6), ser("2017-08-01", 15),
			fmt.Sprintf("IMPORT#2019-05-05#1#%s%08d", tag, 99), fmt.Sprintf("IMPORT#2019-05-05#2#%s%08d", tag, 7)} {
			if _, ok := readDevice(t, s); ok {
				t.Errorf("refused row %s was registered", s)
			}
		}
		if d, _ := readDevice(t, sDiff); d.Model != "WBXHD082S2T" {
			t.Errorf("a conflicting row overwrote the registry: %+v", d)
		}
	})

	t.Run("audit/one-import-event-with-counts-and-sha256-and-one-per-batch", func(t *testing.T) {
		var batches int
		if err := ownerConnTo(t, testURL).QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE request_id = $1 AND action = $2 AND outcome = 'success'`,
			importID, string(server.ActionImportBatch)).Scan(&batches); err != nil || batches != 2 {
			t.Errorf("%d batch events (%v), want one per committed batch (2)", batches, err)
		}
		rows, err := ownerConnTo(t, testURL).Query(ctx, `SELECT actor, action, outcome, detail FROM audit_events WHERE request_id = $1 AND action = $2`,
			importID, string(server.ActionImport))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for rows.Next() {
			var actor, action, outcome, detail string
			if err := rows.Scan(&actor, &action, &outcome, &detail); err != nil {
				t.Fatal(err)
			}
			n++
			want := "sha256=" + hex.EncodeToString(sum[:]) + " received=14 inserted=2 updated=0 unchanged=2 conflicts=2 duplicates=2 invalid=6 batches=2 update=false"
			if actor != provisioner.Subject || action != string(server.ActionImport) || outcome != "success" || detail != want {
				t.Errorf("event %s %s %s %q, want detail %q", actor, action, outcome, detail, want)
			}
		}
		if n != 1 {
			t.Errorf("%d audit events for import %s, want 1", n, importID)
		}
	})

	t.Run("again/changes-nothing-and-says-so", func(t *testing.T) {
		before, _ := devicesDigest(t, testURL)
		rep, err := importCSV(t, db, file, server.ImportOptions{KeyGeneration: 2})
		if err != nil {
			t.Fatal(err)
		}
		checkReport(t, rep, server.ImportReport{Received: 14, Unchanged: 4, Conflicts: 2, Duplicates: 2, Invalid: 6},
			all(conflictDiff))
		if after, _ := devicesDigest(t, testURL); after != before {
			t.Error("re-importing the same file changed the registry")
		}
	})

	t.Run("update/overwrites-conflicts-not-holds-sequences-or-generations", func(t *testing.T) {
		rep, err := importCSV(t, db, file, server.ImportOptions{Update: true, KeyGeneration: 2})
		if err != nil {
			t.Fatal(err)
		}
		// Every registered row that gives a contact is written, the same
		// contact or not: lines 2, 7, 9 and 10.
		checkReport(t, rep, server.ImportReport{Received: 14, Updated: 4, Conflicts: 2, Duplicates: 2, Invalid: 6},
			all(conflictHeld))
		if d, _ := readDevice(t, sDiff); d != (deviceRow{"WBXHD162S", "V3.1.0", "bob@example.com", 1, 1, false}) {
			t.Errorf("updated device: %+v; want the new model, key generation 1 and sequence 1 kept", d)
		}
		if d, _ := readDevice(t, sHeld); d.Contact != "carol@example.com" || !d.Held {
			t.Errorf("a device on hold was updated: %+v", d)
		}
	})
}

// TestImportDuplicates: repeated serials and device ids, within a batch
// and across batches (found from devices.import_id and import_line), as
// the in-memory store of package server's tests reports them.
func TestImportDuplicates(t *testing.T) {
	db := openDB(t)
	importtest.Duplicates(t, func(*testing.T) importtest.Store { return db })
}

// TestImportBatchRetry: a batch sent again under the same Seq (its commit
// acknowledgement lost) is not applied twice, and a finished import takes
// no more batches.
func TestImportBatchRetry(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	id, err := db.BeginImport(ctx, provisioner, server.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms := map[string]bool{"WBXHD041S": true}
	var rows []server.ImportDevice
	for i, r := range genRows(3, runTag()) {
		r.Model = "WBXHD041S"
		d, rerr := server.ValidateImportRow(r, ms)
		if rerr != nil {
			t.Fatal(rerr)
		}
		rows = append(rows, server.ImportDevice{Line: i + 2, Device: d})
	}
	b := server.ImportBatch{Seq: 1, Rows: rows, Invalid: 1}
	first, err := db.ImportBatch(ctx, provisioner, id, b, continues(provisioner, id))
	if err != nil || first.Inserted != 3 || first.Received != 4 {
		t.Fatalf("first: %s, %v", first.Summary(), err)
	}
	again, err := db.ImportBatch(ctx, provisioner, id, b, continues(provisioner, id))
	if err != nil || again.Summary() != first.Summary() {
		t.Fatalf("retried batch: %s, %v; want the first's counts %s", again.Summary(), err, first.Summary())
	}
	tot, err := db.FinishImport(ctx, provisioner, id, strings.Repeat("ab", 32), continues(provisioner, id))
	if err != nil || tot.Inserted != 3 || tot.Received != 4 || tot.Batches != 1 {
		t.Fatalf("finish: %s, %v", tot.Summary(), err)
	}
	_, err = db.ImportBatch(ctx, provisioner, id, server.ImportBatch{Seq: 2, Rows: rows}, continues(provisioner, id))
	wantReason(t, wantCode(t, err, server.EPrecondition), server.ReasonImportFinished)
	_, err = db.FinishImport(ctx, provisioner, id, strings.Repeat("ab", 32), continues(provisioner, id))
	wantReason(t, wantCode(t, err, server.EPrecondition), server.ReasonImportFinished)
}

func TestFinishImportOfAnothersImportIsRefused(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	id, err := db.BeginImport(ctx, provisioner, server.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other := server.Actor{Subject: provisioner.Subject + "-other", Role: server.RoleProvisioner}
	_, err = db.FinishImport(ctx, other, id, strings.Repeat("ab", 32), continues(other, id))
	wantReason(t, wantCode(t, err, server.EPermission), server.ReasonImportNotYours)
}

// The kill test's child: set, the test binary imports the file into the
// database and exits, before TestMain creates a database of its own (a
// killed child would leave it behind).
const (
	childURLEnv  = "HOTLINE_IMPORT_CHILD_URL"
	childFileEnv = "HOTLINE_IMPORT_CHILD_FILE"
	killBatch    = 500
)

func init() {
	url := os.Getenv(childURLEnv)
	if url == "" {
		return
	}
	if err := childImport(url, os.Getenv(childFileEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "child import:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func childImport(url, path string) error {
	ctx := context.Background()
	db, err := postgres.Open(ctx, url)
	if err != nil {
		return err
	}
	defer db.Close()
	ms, err := db.Models(ctx)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = server.ImportFile(ctx, db, provisioner, ms, f, "", server.ImportOptions{KeyGeneration: 1, BatchSize: killBatch})
	return err
}

// TestImportKilled kills an importing process with SIGKILL at random
// points, several times, checking each time that only whole batches
// landed, then runs the import to completion: the registry ends exactly as
// after one clean run.
func TestImportKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	ctx := context.Background()
	const n = 20000
	tag := runTag()
	var file bytes.Buffer
	file.WriteString("serial,model,firmware,owner_contact\n")
	for i, r := range genRows(n, tag) {
		switch {
		case i%997 == 5:
			r.Model = "NOPE"
		case i%1499 == 7:
			r.Serial = fmt.Sprintf("LOT000#2016-01-01#0#%s%010d", tag, 0) // a duplicate of row 0
		}
		fmt.Fprintf(&file, "%s,%s,%s,%s\n", r.Serial, r.Model, r.Firmware, r.OwnerContact)
	}
	path := filepath.Join(t.TempDir(), "devices.csv")
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// Registered before the import, in both databases: one identical row,
	// one conflicting.
	prereg := func(db *postgres.DB) {
		rows := genRows(2, tag)
		for i, r := range rows {
			if i == 1 {
				r.Model = "WBXHD162S"
			}
			d, rerr := server.ValidateImportRow(r, map[string]bool{r.Model: true})
			if rerr != nil {
				t.Fatal(rerr)
			}
			if err := db.RegisterDevice(ctx, provisioner, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	open := func(name string) (string, *postgres.DB) {
		url := pgtest.NewDatabase(t, name)
		if err := postgres.Migrate(ctx, url); err != nil {
			t.Fatal(err)
		}
		db, err := postgres.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		prereg(db)
		return url, db
	}

	cleanURL, cleanDB := open("import_clean")
	ms, _ := cleanDB.Models(ctx)
	start := time.Now()
	clean, err := server.ImportFile(ctx, cleanDB, provisioner, ms, bytes.NewReader(file.Bytes()), "", server.ImportOptions{KeyGeneration: 1, BatchSize: killBatch})
	cleanTime := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, wantCount := devicesDigest(t, cleanURL)
	t.Logf("clean run: %s in %v", clean.Summary(), cleanTime)

	url, _ := open("import_killed")
	owner := ownerConnTo(t, url)
	child := func(kill time.Duration) (exited bool) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childURLEnv+"="+url, childFileEnv+"="+path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("child: %v\n%s", err, stderr.String())
			}
			return true
		case <-time.After(kill):
			cmd.Process.Signal(syscall.SIGKILL)
			err := <-done
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			return err == nil
		}
	}
	// Child start-up (the test binary, a connection) comes on top of the
	// clean run's time; kill anywhere in there.
	window := cleanTime + 300*time.Millisecond
	for i := range 5 {
		at := time.Duration(mrand.Int64N(int64(window)))
		exited := child(at)
		var devices, landed, batches int
		err := owner.QueryRow(ctx, `SELECT (SELECT count(*) FROM devices),
			(SELECT COALESCE(sum(inserted), 0) FROM device_import_batches), (SELECT count(*) FROM device_import_batches)`).
			Scan(&devices, &landed, &batches)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kill %d after %v: exited on its own %v; %d batches committed so far, %d devices", i+1, at.Round(time.Millisecond), exited, batches, devices)
		if devices != 2+landed {
			t.Fatalf("after kill %d: %d devices, but the committed batches inserted %d (+2 registered before): a batch landed in part", i+1, devices, landed)
		}
	}
	if !child(time.Hour) {
		t.Fatal("the final run did not complete")
	}
	gotDigest, gotCount := devicesDigest(t, url)
	if gotDigest != wantDigest || gotCount != wantCount {
		t.Fatalf("after kills and a complete run: %d devices (digest %s); after one clean run: %d (digest %s)", gotCount, gotDigest, wantCount, wantDigest)
	}
	// The completing run's event says what it found.
	var detail string
	if err := owner.QueryRow(ctx, `SELECT detail FROM audit_events WHERE action = 'device.import' ORDER BY id DESC LIMIT 1`).Scan(&detail); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(file.Bytes())
	if !strings.Contains(detail, hex.EncodeToString(sum[:])) || !strings.Contains(detail, fmt.Sprintf("received=%d ", n)) ||
		!strings.Contains(detail, fmt.Sprintf("conflicts=%d duplicates=%d invalid=%d", clean.Conflicts, clean.Duplicates, clean.Invalid)) {
		t.Errorf("completing import's event %q; the clean run: %s", detail, clean.Summary())
	}
}

// TestImportUpdateNeverErasesAnOwnerContact: a factory list re-sent with
// blank contacts and --update changes the firmware but keeps every
// registered contact, and each overwritten device is audited on its own.
func TestImportUpdateNeverErasesAnOwnerContact(t *testing.T) {
	tag := runTag()
	serial := "UPD" + tag[:3] + "#2021-03-04#1#DVRU" + tag
	first := "serial,model,firmware,owner_contact\n" + serial + ",WBXHD041S,1.0,dave@example.com\n"
	db := openDB(t)
	if _, err := importCSV(t, db, first, server.ImportOptions{KeyGeneration: 1}); err != nil {
		t.Fatal(err)
	}
	again := "serial,model,firmware,owner_contact\n" + serial + ",WBXHD041S,2.0,\n"
	rep, err := importCSV(t, db, again, server.ImportOptions{Update: true, KeyGeneration: 1})
	if err != nil || rep.Updated != 1 {
		t.Fatalf("update: %s, %v", rep.Summary(), err)
	}
	d, ok := readDevice(t, serial)
	if !ok || d.Firmware != "2.0" || d.Contact != "dave@example.com" {
		t.Fatalf("after the update: %+v; want firmware 2.0 and the contact kept", d)
	}
	if ev := lastEvent(t, db, serial); ev.Action != server.ActionImportUpdate || ev.Actor != provisioner.Subject || !strings.Contains(ev.Detail, "firmware") {
		t.Fatalf("the overwrite was not audited for the device: %+v", ev)
	}
}
