package server

// Bulk device import: the factory's lists into the registry.
//
// # File formats
//
// An import file is CSV or JSON lines, read by importfile.Parse; its
// package comment (proto/hotline/importfile) documents the columns, the
// line numbers and what makes a row malformed rather than the file
// unreadable. The client (hotlinectl) reads the file with the same code and
// streams the rows.
//
// # What an import does
//
// Every row is validated (ValidateImportRow): canonical serial, known
// model, production date consistent with the serial, contact syntax,
// firmware length. Valid rows go to the store in batches; each batch
// commits as a whole, so an import cut off midway leaves whole batches, and
// running the same file again completes it: rows already registered with
// the same model and firmware count as unchanged, rows registered with
// different ones are conflicts (reported, never overwritten unless
// ImportOptions.Update, which never erases a registered contact). The
// registered owner contact never shows in a report (JudgeImportRow): an
// import is no way to test a guess of it. The import is one summary audit
// event (ActionImport) with its counts and the file's SHA-256; each
// committed batch also writes ActionImportBatch in its own transaction,
// and each device an update overwrote ActionImportUpdate, so an import cut
// off before it finishes leaves no unaudited change.
//
// Within one file the first row of a serial (or of a device id) wins; a
// later one is a duplicate of the first's line, found without memory that
// grows with the file (ImportSession says how, and the one case where a
// repeat is not reported as a duplicate).

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/dvrhotline/hotline/agent/clip"
	"github.com/dvrhotline/hotline/proto/hotline/importfile"
)

// RowErrorKind says why a row was not imported. Stored in reports and
// shown by clients: append only.
type RowErrorKind string

// The row error kinds.
const (
	// RowInvalid: the row failed validation (or could not be read).
	RowInvalid RowErrorKind = "invalid"
	// RowDuplicate: an earlier row of the same file has the same serial or
	// device id, in the same batch, or it registered the device (or
	// updated it); the first one wins. A repeat, in another batch, of a
	// row that found the device registered already is judged again
	// instead: unchanged or a RowConflict (see ImportSession).
	RowDuplicate RowErrorKind = "duplicate"
	// RowConflict: the serial is registered with a different model,
	// firmware or owner contact (and was not updated), or the device id is
	// registered under another serial (not by an earlier row of this file:
	// that is a RowDuplicate).
	RowConflict RowErrorKind = "conflict"
)

// RowError is one row that was not imported as given.
type RowError struct {
	// Line is the row's line number in the file.
	Line int
	// Serial is the serial as given (canonical when it parsed).
	Serial string
	// Kind classifies the error.
	Kind RowErrorKind
	// Reason is a sentence a provisioner can act on: the field at fault and
	// what was expected, or what differs from the registry.
	Reason string
}

// String is the row error as a report line: "line 7: invalid: serial: ...".
func (e RowError) String() string {
	return fmt.Sprintf("line %d: %s: %s", e.Line, e.Kind, e.Reason)
}

// MaxReportErrors is how many row errors an ImportReport lists; the rest
// are only counted (ErrorsDropped).
const MaxReportErrors = 1000

// ImportReport is what an import (or one batch of it) did. Received is
// Inserted + Updated + Unchanged + Conflicts + Duplicates + Invalid.
type ImportReport struct {
	// ImportID names the import (the audit event's request id).
	ImportID string
	// Received counts the rows read.
	Received int
	// Inserted counts new devices.
	Inserted int
	// Updated counts conflicting devices overwritten (ImportOptions.Update).
	Updated int
	// Unchanged counts rows identical to the registry already (a row
	// repeating, in another batch, one that was unchanged counts again).
	Unchanged int
	// Conflicts counts rows that differ from the registry and were left
	// alone (a repeat of a conflicting row in another batch counts again).
	Conflicts int
	// Duplicates counts later rows of a serial or device id within the
	// file: of the same batch, or of a row that registered or updated the
	// device.
	Duplicates int
	// Invalid counts rows that failed validation.
	Invalid int
	// Errors lists the rows not imported as given, by line, at most
	// MaxReportErrors (AddError), so that a report's size is bounded
	// whatever the file; ErrorsDropped counts the rest.
	Errors        []RowError
	ErrorsDropped int
	// Batches counts the batches committed.
	Batches int
	// SHA256 is the import file's SHA-256, lower-case hex.
	SHA256 string
}

// AddError appends e to r.Errors, or counts it as dropped past the cap. It
// does not touch the counters.
func (r *ImportReport) AddError(e RowError) {
	if len(r.Errors) < MaxReportErrors {
		r.Errors = append(r.Errors, e)
	} else {
		r.ErrorsDropped++
	}
}

// add merges batch b's counts and errors into r.
func (r *ImportReport) add(b ImportReport) {
	r.Received += b.Received
	r.Inserted += b.Inserted
	r.Updated += b.Updated
	r.Unchanged += b.Unchanged
	r.Conflicts += b.Conflicts
	r.Duplicates += b.Duplicates
	r.Invalid += b.Invalid
	r.Batches += b.Batches
	for _, e := range b.Errors {
		r.AddError(e)
	}
	r.ErrorsDropped += b.ErrorsDropped
}

// Summary is the report's counts on one line (the audit event's detail).
func (r ImportReport) Summary() string {
	return fmt.Sprintf("received=%d inserted=%d updated=%d unchanged=%d conflicts=%d duplicates=%d invalid=%d batches=%d",
		r.Received, r.Inserted, r.Updated, r.Unchanged, r.Conflicts, r.Duplicates, r.Invalid, r.Batches)
}

// ImportOptions are an import's choices.
type ImportOptions struct {
	// Update overwrites the model, firmware and owner contact of devices
	// registered with different ones (never their holds, sequence numbers
	// or key generation; never a device on hold). Without it they are
	// reported as conflicts.
	Update bool
	// KeyGeneration is the master-key generation new devices were
	// provisioned under (the service passes the keyring's current
	// generation when the client gives 0). Existing devices keep theirs.
	KeyGeneration int
	// BatchSize is how many valid rows go to the store per transaction
	// (default DefaultImportBatchSize, at most MaxImportBatchSize).
	BatchSize int
	// MaxRows is how many valid rows one import takes (default and at most
	// MaxImportRows), counted as they arrive. Set by the service, never by
	// a client.
	MaxRows int
}

// MaxImportRows bounds the valid rows of one import. The server's memory
// no longer depends on it (duplicates are found per batch and through the
// store); it keeps one import, its one stream and its one summary event,
// to a size that a provisioner re-runs in minutes when it is cut off. A
// bigger list goes in as several files.
const MaxImportRows = 2_000_000

// The batch sizes. A batch is one transaction: bigger batches amortise the
// per-batch statements, smaller ones lose less work to a cut-off import.
const (
	DefaultImportBatchSize = 20000
	MaxImportBatchSize     = 100000
)

func (o *ImportOptions) defaults() *Error {
	if o.KeyGeneration < 1 {
		// Service.Import chooses it (keyGeneration): 0 is not for the
		// store to guess.
		return Invalid("key_generation", "the key generation must be at least 1, got %d", o.KeyGeneration)
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultImportBatchSize
	}
	if o.BatchSize > MaxImportBatchSize {
		o.BatchSize = MaxImportBatchSize
	}
	if o.MaxRows <= 0 || o.MaxRows > MaxImportRows {
		o.MaxRows = MaxImportRows
	}
	return nil
}

// ImportDevice is a validated row on its way to the store.
type ImportDevice struct {
	// Line is the row's line number in the file.
	Line int
	// Device has Serial (canonical), DeviceID, Model, ProductionDate,
	// Firmware and OwnerContact (normalised) set.
	Device
}

// ImportBatch is one transaction's worth of an import.
type ImportBatch struct {
	// Seq numbers the batches of one import from 1. A batch whose Seq is
	// already committed for the import is not applied again (a retry after
	// a lost commit acknowledgement): its stored counts are returned.
	Seq int
	// Rows are the valid, de-duplicated rows.
	Rows []ImportDevice
	// Invalid and Duplicates count the rows of this stretch of the file
	// refused before the store, so that the import's counts add up.
	Invalid, Duplicates int
}

// ImportStore is the persistence an import needs; server/postgres
// implements it. Each method is its own transaction.
type ImportStore interface {
	// BeginImport records a new import by a and returns its id.
	BeginImport(ctx context.Context, a Actor, opts ImportOptions) (importID string, err error)
	// ImportBatch applies one batch atomically (all of it or none of it) and
	// reports what it did, row errors included.
	// check decides, from the import's state read under its lock, whether
	// the batch may be applied (CheckImportState).
	ImportBatch(ctx context.Context, a Actor, importID string, b ImportBatch, check func(ImportState) *Error) (ImportReport, error)
	// FinishImport writes the import's summary audit event, with the counts of
	// its committed batches and the file's SHA-256, and returns those counts
	// (without row errors).
	// check decides whether the import may be finished, as for ImportBatch.
	FinishImport(ctx context.Context, a Actor, importID, sha256 string, check func(ImportState) *Error) (ImportReport, error)
}

// RegisteredRow is what the registry holds for a row's serial, for
// JudgeImportRow.
type RegisteredRow struct {
	Model, Firmware, OwnerContact string
	// Held is whether the device is on hold.
	Held bool
}

// ImportMatch is what the store found in the registry for a row it did
// not insert, for JudgeImportMatch: the device registered with the row's
// serial or, when there is none, the one its device id is registered
// under.
type ImportMatch struct {
	// Found says that the row's serial is registered, as Registered.
	Found      bool
	Registered RegisteredRow
	// OtherSerial, when not Found, is the serial the row's device id is
	// registered under.
	OtherSerial string
	// Line is the line of this import's file that wrote the device matched
	// (registered it, or overwrote it with ImportOptions.Update): 0 when
	// another import did, or none.
	Line int
}

// ImportVerdict is what an import does with a row whose serial (or device
// id) is registered.
//
// The registered owner contact is secret from provisioners, so nothing a
// provisioner sees depends on it: without ImportOptions.Update a row is
// unchanged or a conflict by its model and firmware alone; with it every
// row that differs in those or gives an owner contact is written (and
// counted updated), whether the contact was the same or not. What really
// happened to the contact goes to the audit log, masked.
type ImportVerdict struct {
	// Write: overwrite the model, the firmware and, when the row gives
	// one, the owner contact.
	Write bool
	// Duplicate, when not empty, is the reason of the row's RowDuplicate:
	// nothing is written or audited for the row.
	Duplicate string
	// Conflict, when not empty, is the reason of the row's RowConflict.
	Conflict string
	// ContactChange: writing replaces the registered contact with another
	// (an ActionContactChange event, ContactDetail its detail).
	ContactChange bool
	// Detail is the detail of the row's ActionImportUpdate event: written
	// (OutcomeSuccess) when Write, refused when not and still not empty
	// (a contact that differs, left alone).
	Detail string
	// ContactDetail is the ActionContactChange event's detail.
	ContactDetail string
}

// JudgeImportRow decides what the import of row (line, model, firmware,
// owner contact as validated) does to the registered device reg.
func JudgeImportRow(reg RegisteredRow, line int, model, firmware, contact string, update bool) ImportVerdict {
	var d []string
	if reg.Model != model {
		d = append(d, fmt.Sprintf("model %s is registered, the file says %s", reg.Model, model))
	}
	if reg.Firmware != firmware {
		d = append(d, fmt.Sprintf("firmware %q is registered, the file says %q", reg.Firmware, firmware))
	}
	public := strings.Join(d, "; ")
	given := contact != ""
	differs := given && ContactMatchKey(reg.OwnerContact) != ContactMatchKey(contact)
	contactNote := ""
	if differs {
		old := MaskContact(reg.OwnerContact)
		if old == "" {
			old = "none"
		}
		contactNote = fmt.Sprintf("owner_contact=changed old=%s new=%s", old, MaskContact(contact))
	} else if given {
		contactNote = "owner_contact=same"
	}
	detail := func(parts ...string) string {
		out := fmt.Sprintf("line %d:", line)
		for _, p := range parts {
			if p != "" {
				out += " " + p
			}
		}
		return clip.Clip(out, 900)
	}
	switch {
	case !update:
		v := ImportVerdict{}
		if public != "" {
			v.Conflict = public + "; not updated (import with update to overwrite)"
		}
		if differs {
			v.Detail = detail(contactNote, "not updated")
		}
		return v
	case public == "" && !given:
		return ImportVerdict{}
	case reg.Held:
		what := public
		if what == "" {
			what = "the file gives an owner contact"
		}
		v := ImportVerdict{Conflict: what + "; the device is on hold, so it was not updated (release it first)"}
		if differs {
			v.Detail = detail(contactNote, "on hold, not updated")
		}
		return v
	}
	v := ImportVerdict{Write: true, ContactChange: differs, Detail: detail(public, contactNote)}
	if differs {
		v.ContactDetail = contactNote + " via=import"
	}
	return v
}

// JudgeImportMatch decides what the import of row does when the store did
// not insert it because of m. A device an earlier line of the same import
// wrote makes the row a duplicate of that line, whatever the row says (the
// first row wins); a device registered otherwise is judged by
// JudgeImportRow, or, when it holds the row's device id under another
// serial, is a conflict. The store reports a row it finds neither for as
// raced, not here.
func JudgeImportMatch(m ImportMatch, row ImportDevice, update bool) ImportVerdict {
	switch {
	case m.Found && m.Line > 0:
		return ImportVerdict{Duplicate: duplicateSerial(m.Line)}
	case m.Found:
		return JudgeImportRow(m.Registered, row.Line, row.Model, row.Firmware, row.OwnerContact, update)
	case m.Line > 0:
		return ImportVerdict{Duplicate: duplicateDeviceID(row.DeviceID, m.Line)}
	}
	return ImportVerdict{Conflict: fmt.Sprintf("device id %s is registered under another serial, %s", row.DeviceID, m.OtherSerial)}
}

// duplicateSerial is a RowDuplicate's reason for a serial first on line
// first.
func duplicateSerial(first int) string {
	return fmt.Sprintf("serial already on line %d of this file; the first row wins", first)
}

// duplicateDeviceID is a RowDuplicate's reason for device id id, first on
// line first under another serial.
func duplicateDeviceID(id string, first int) string {
	return fmt.Sprintf("device id %s already on line %d of this file under another serial; the first row wins", id, first)
}

// ValidateImportRow checks r by ValidDevice and returns the device to
// register (KeyGeneration left zero), or a RowError of kind RowInvalid
// whose reason names the field.
func ValidateImportRow(r importfile.Row, models map[string]bool) (Device, *RowError) {
	if r.Malformed != "" {
		return Device{}, &RowError{Line: r.Line, Serial: clip.Clip(r.Serial, 80), Kind: RowInvalid, Reason: r.Malformed}
	}
	d, e := ValidDevice(DeviceInput{Serial: r.Serial, Model: r.Model, Firmware: r.Firmware,
		OwnerContact: r.OwnerContact, ProductionDate: r.ProductionDate}, models)
	if e != nil {
		return Device{}, &RowError{Line: r.Line, Serial: clip.Clip(r.Serial, 80), Kind: RowInvalid, Reason: e.Message}
	}
	return d, nil
}

// ImportSession runs one import: it validates rows, drops duplicates
// within the batch it builds, hands batches to the store (one batch in
// flight while the next is being validated), which reports the rows that
// repeat an earlier batch's, and finishes with the summary audit event.
// The gRPC handler makes one per client stream; the CLI's local tests and
// the benchmark feed it importfile.Parse's rows. Not safe for concurrent
// use.
//
// Its memory is bounded by the batch size, not by the file. The first row
// of a serial (or of a device id) wins: the session finds a repeat within
// the batch it is building (a map of at most BatchSize rows, emptied with
// each batch), and the store records which import and line wrote each
// device (ImportMatch.Line), so that a repeat of a row that an earlier
// batch of the same import inserted or updated is a duplicate too
// (JudgeImportMatch). The one consequence: a row that repeats, in a later
// batch, an earlier row this import did not write (that row was unchanged
// or a conflict: the device was registered before) is judged against the
// registry again, and reported unchanged or a conflict, not a duplicate.
// Either way nothing is written twice.
type ImportSession struct {
	ctx    context.Context
	store  ImportStore
	actor  Actor
	opts   ImportOptions
	id     string
	models map[string]bool

	// batchSerials and batchIDs map the serials and device ids of the
	// batch being built (cur) to their lines: the first row wins. Emptied
	// when the batch goes to the store, which finds repeats of earlier
	// batches' rows.
	batchSerials, batchIDs map[string]int32
	// valid counts the valid rows so far, duplicates included, against
	// opts.MaxRows.
	valid int

	cur      ImportBatch
	inflight chan batchResult
	report   ImportReport
	err      error
}

type batchResult struct {
	rep ImportReport
	err error
}

// ImportState is what the store knows of a begun import when a batch or
// the finish arrives.
type ImportState struct {
	// Actor is the staff member who began the import.
	Actor string
	// Finished is set once the import's summary event is written.
	Finished bool
}

// CheckImportState is the rule for carrying on with import importID: only
// the staff member who began it adds to it or finishes it, and a finished
// import takes nothing more.
func CheckImportState(a Actor, importID string, st ImportState) *Error {
	switch {
	case st.Actor != a.Subject:
		return &Error{Code: EPermission, Reason: ReasonImportNotYours,
			Message: fmt.Sprintf("import %s was begun by another staff member", importID)}
	case st.Finished:
		return &Error{Code: EPrecondition, Reason: ReasonImportFinished,
			Message: fmt.Sprintf("import %s is already finished; start a new one", importID)}
	}
	return nil
}

// checkState is CheckImportState for this session's import.
func (s *ImportSession) checkState(st ImportState) *Error { return CheckImportState(s.actor, s.id, st) }

// NewImportSession begins an import by a (store.BeginImport) against the
// model catalogue models.
func NewImportSession(ctx context.Context, store ImportStore, a Actor, models []Model, opts ImportOptions) (*ImportSession, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	id, err := store.BeginImport(ctx, a, opts)
	if err != nil {
		return nil, err
	}
	ms := make(map[string]bool, len(models))
	for _, m := range models {
		ms[m.Code] = true
	}
	s := &ImportSession{ctx: ctx, store: store, actor: a, opts: opts, id: id, models: ms,
		batchSerials: make(map[string]int32, opts.BatchSize), batchIDs: make(map[string]int32, opts.BatchSize)}
	s.report.ImportID = id
	s.cur = ImportBatch{Seq: 1, Rows: make([]ImportDevice, 0, opts.BatchSize)}
	return s, nil
}

// ID is the import's id.
func (s *ImportSession) ID() string { return s.id }

// Add validates r and queues it; a full batch goes to the store while the
// caller goes on. It returns the error of a batch that failed (the import
// must stop: the batches before it are committed, it and those after it
// are not).
func (s *ImportSession) Add(r importfile.Row) error {
	if s.err != nil {
		return s.err
	}
	d, rerr := ValidateImportRow(r, s.models)
	if rerr != nil {
		s.cur.Invalid++
		s.report.AddError(*rerr)
		return nil
	}
	if s.valid >= s.opts.MaxRows {
		s.err = &Error{Code: EInvalid, Field: "rows", Max: s.opts.MaxRows,
			Message: fmt.Sprintf("line %d: the file has more than %d valid rows, the most one import takes; split it and import the parts one after another", r.Line, s.opts.MaxRows)}
		s.wait()
		return s.err
	}
	s.valid++
	if first, dup := s.batchSerials[d.Serial]; dup {
		s.cur.Duplicates++
		s.report.AddError(RowError{Line: r.Line, Serial: d.Serial, Kind: RowDuplicate, Reason: duplicateSerial(int(first))})
		return nil
	}
	if first, dup := s.batchIDs[d.DeviceID]; dup {
		s.cur.Duplicates++
		s.report.AddError(RowError{Line: r.Line, Serial: d.Serial, Kind: RowDuplicate, Reason: duplicateDeviceID(d.DeviceID, int(first))})
		return nil
	}
	s.batchSerials[d.Serial] = int32(r.Line)
	s.batchIDs[d.DeviceID] = int32(r.Line)
	d.KeyGeneration = s.opts.KeyGeneration
	s.cur.Rows = append(s.cur.Rows, ImportDevice{Line: r.Line, Device: d})
	if len(s.cur.Rows) >= s.opts.BatchSize {
		return s.flush()
	}
	return nil
}

// wait collects the batch in flight, if any.
func (s *ImportSession) wait() error {
	if s.inflight == nil {
		return s.err
	}
	res := <-s.inflight
	s.inflight = nil
	if res.err != nil && s.err == nil {
		s.err = res.err
	}
	s.report.add(res.rep)
	return s.err
}

// flush sends the current batch (after the one in flight has committed, so
// batches commit in file order).
func (s *ImportSession) flush() error {
	if err := s.wait(); err != nil {
		return err
	}
	b := s.cur
	s.cur = ImportBatch{Seq: b.Seq + 1, Rows: make([]ImportDevice, 0, s.opts.BatchSize)}
	clear(s.batchSerials)
	clear(s.batchIDs)
	s.inflight = make(chan batchResult, 1)
	go func(ch chan<- batchResult) {
		rep, err := s.store.ImportBatch(s.ctx, s.actor, s.id, b, s.checkState)
		ch <- batchResult{rep, err}
	}(s.inflight)
	return nil
}

// Finish sends the last batch, writes the import's audit event with sha256
// (the file's SHA-256, hex) and returns the report: the counts as the store
// committed them, the row errors as found.
func (s *ImportSession) Finish(sha256 string) (ImportReport, error) {
	if s.err == nil && (len(s.cur.Rows) > 0 || s.cur.Invalid > 0 || s.cur.Duplicates > 0) {
		s.flush()
	}
	if err := s.wait(); err != nil {
		return s.report, err
	}
	sha256 = strings.ToLower(strings.TrimSpace(sha256))
	if !isSHA256Hex(sha256) {
		return s.report, Invalid("sha256", "sha256: expected the file's SHA-256 as 64 hex digits")
	}
	totals, err := s.store.FinishImport(s.ctx, s.actor, s.id, sha256, s.checkState)
	if err != nil {
		return s.report, err
	}
	out := totals
	out.Errors, out.ErrorsDropped = s.report.Errors, s.report.ErrorsDropped
	slices.SortStableFunc(out.Errors, func(a, b RowError) int { return cmp.Compare(a.Line, b.Line) })
	return out, nil
}

// ImportFile imports the file r (format as in importfile.Parse) into st as
// a, against the model catalogue models: the whole import of one file,
// hashing it as it is read. A file that cannot be read, or a batch that
// fails, stops it; the batches committed before stay, and running the same
// file again completes it.
func ImportFile(ctx context.Context, st ImportStore, a Actor, models []Model, r io.Reader, format string, opts ImportOptions) (ImportReport, error) {
	sess, err := NewImportSession(ctx, st, a, models, opts)
	if err != nil {
		return ImportReport{}, err
	}
	h := sha256.New()
	if err := importfile.Parse(io.TeeReader(r, h), format, sess.Add); err != nil {
		sess.wait()
		return sess.report, fileError(err)
	}
	return sess.Finish(hex.EncodeToString(h.Sum(nil)))
}

// fileError turns importfile.Parse's refusal of a file into EInvalid naming
// its field ("file", "format"); other errors (a failed batch) pass as is.
func fileError(err error) error {
	var fe *importfile.Error
	if errors.As(err, &fe) {
		return &Error{Code: EInvalid, Field: fe.Field, Message: fe.Message}
	}
	return err
}

// isSHA256Hex reports whether h is 64 lower-case hex digits.
func isSHA256Hex(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
