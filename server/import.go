package server

// Bulk device import: the factory's lists into the registry.
//
// # File formats
//
// An import file is CSV or JSON lines, UTF-8 (a leading byte-order mark is
// ignored). Each row names one device:
//
//	column           required  meaning
//	serial           yes       the serial as printed, e.g. JZ6OES#2017-08-01#3#DVR1101134C08011
//	                           (sloppy case and spaces are canonicalised)
//	model            yes       a model of the catalogue, e.g. WBXHD082S2T
//	firmware         yes       the firmware version flashed, 1 to 64 printable characters, e.g. V3.1.0
//	owner_contact    yes       the owner's e-mail or phone number (ValidContact); the column
//	                           must be there, a value may be empty: "no owner registered yet"
//	production_date  no        YYYY-MM-DD; when given it must be the serial's own date
//
// CSV (RFC 4180, encoding/csv): the first record is a header naming the
// columns, in any order, case-insensitively. A column the import does not
// know is refused (a typo such as "owner_contcat" would otherwise drop
// data silently). Blank lines are skipped; there are no comment lines
// (serials contain '#'). A row's line number is the line its record starts
// on, counting the header as line 1.
//
//	serial,model,firmware,owner_contact,production_date
//	JZ6OES#2017-08-01#3#DVR1101134C08011,WBXHD082S2T,V3.1.0,jane@example.com,2017-08-01
//	JZ6OES#2017-08-01#3#DVR1101134C08012,WBXHD041S,V3.1.0,+44 7700 900789,
//
// JSON lines: one JSON object per line with the same keys (strings;
// production_date may be omitted or empty); an unknown key is refused for
// that line. Blank lines are skipped. A row's line number is its physical
// line.
//
//	{"serial":"JZ6OES#2017-08-01#3#DVR1101134C08011","model":"WBXHD082S2T","firmware":"V3.1.0","owner_contact":"jane@example.com"}
//
// A line that cannot be read as a row (a CSV record with the wrong number
// of fields or a broken quote, a JSON line that is not an object of
// strings) is one invalid row, reported with its line number; the rest of
// the file is still imported. Only a file that cannot be read at all (no
// header, an unknown column, an I/O error) stops the import.
//
// # What an import does
//
// Every row is validated (ValidateImportRow): canonical serial, known
// model, production date consistent with the serial, contact syntax,
// firmware length. Within one file the first row of a serial (or of a
// device id) wins; later ones are reported as duplicates with the line of
// the first. Valid rows go to the store in batches; each batch commits as
// a whole, so an import cut off midway leaves whole batches, and running
// the same file again completes it: rows already registered with the same
// model, firmware and owner contact count as unchanged, rows registered
// with different ones are conflicts (reported, never overwritten unless
// ImportOptions.Update, which never erases a registered contact). The
// import is one summary audit event (ActionImport) with its counts and the
// file's SHA-256; each committed batch also writes ActionImportBatch in its
// own transaction, and each device an update overwrote ActionImportUpdate,
// so an import cut off before it finishes leaves no unaudited change.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// ImportRow is one row of an import file, as read (not yet validated).
type ImportRow struct {
	// Line is the row's line number in the file (1-based).
	Line int
	// Serial, Model, Firmware and OwnerContact are the row's columns.
	Serial       string
	Model        string
	Firmware     string
	OwnerContact string
	// ProductionDate is the optional production_date column, YYYY-MM-DD or
	// empty.
	ProductionDate string
	// Malformed is set by ParseImportFile when the line could not be read
	// as a row; ValidateImportRow reports it as the row's reason.
	Malformed string
}

// RowErrorKind says why a row was not imported. Stored in reports and
// shown by clients: append only.
type RowErrorKind string

// The row error kinds.
const (
	// RowInvalid: the row failed validation (or could not be read).
	RowInvalid RowErrorKind = "invalid"
	// RowDuplicate: an earlier row of the same file has the same serial or
	// device id; the first one wins.
	RowDuplicate RowErrorKind = "duplicate"
	// RowConflict: the serial is registered with a different model,
	// firmware or owner contact (and was not updated), or the device id is
	// registered under another serial.
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
	// Unchanged counts rows identical to the registry already.
	Unchanged int
	// Conflicts counts rows that differ from the registry and were left alone.
	Conflicts int
	// Duplicates counts later rows of a serial or device id within the file.
	Duplicates int
	// Invalid counts rows that failed validation.
	Invalid int
	// Errors lists the rows not imported as given, by line, at most
	// MaxReportErrors; ErrorsDropped counts the rest.
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
}

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
	ImportBatch(ctx context.Context, a Actor, importID string, b ImportBatch) (ImportReport, error)
	// FinishImport writes the import's summary audit event, with the counts of
	// its committed batches and the file's SHA-256, and returns those counts
	// (without row errors).
	FinishImport(ctx context.Context, a Actor, importID, sha256 string) (ImportReport, error)
}

// ValidateImportRow checks r by ValidDevice and returns the device to
// register (KeyGeneration left zero), or a RowError of kind RowInvalid
// whose reason names the field.
func ValidateImportRow(r ImportRow, models map[string]bool) (Device, *RowError) {
	if r.Malformed != "" {
		return Device{}, &RowError{Line: r.Line, Serial: clip(r.Serial, 80), Kind: RowInvalid, Reason: r.Malformed}
	}
	d, e := ValidDevice(DeviceInput{Serial: r.Serial, Model: r.Model, Firmware: r.Firmware,
		OwnerContact: r.OwnerContact, ProductionDate: r.ProductionDate}, models)
	if e != nil {
		return Device{}, &RowError{Line: r.Line, Serial: clip(r.Serial, 80), Kind: RowInvalid, Reason: e.Message}
	}
	return d, nil
}

// The import file formats ParseImportFile reads.
const (
	FormatCSV        = "csv"
	FormatJSONLines  = "jsonl"
	importColumnsMsg = "serial, model, firmware, owner_contact and optionally production_date"
)

var (
	importRequired = []string{"serial", "model", "firmware", "owner_contact"}
	importKnown    = map[string]bool{"serial": true, "model": true, "firmware": true, "owner_contact": true, "production_date": true}
)

// ParseImportFile reads an import file (see the package's "File formats")
// and calls fn with each row in file order, with exact line numbers.
// format is FormatCSV, FormatJSONLines, or "" to tell from the first
// non-blank byte ('{' is JSON lines). An fn error stops the reading and is
// returned as is; a file that cannot be read as an import is EInvalid
// (field "file").
func ParseImportFile(r io.Reader, format string, fn func(ImportRow) error) error {
	br := bufio.NewReaderSize(r, 256<<10)
	if b, err := br.Peek(3); err == nil && bytes.Equal(b, []byte("\xef\xbb\xbf")) {
		br.Discard(3)
	}
	if format == "" {
		format = sniffFormat(br)
	}
	switch format {
	case FormatCSV:
		return parseCSV(br, fn)
	case FormatJSONLines, "json", "ndjson":
		return parseJSONLines(br, fn)
	}
	return Invalid("format", "unknown import format %q; expected %q or %q", format, FormatCSV, FormatJSONLines)
}

func sniffFormat(br *bufio.Reader) string {
	for n := 1; n <= 4096; n++ {
		b, _ := br.Peek(n)
		if len(b) < n {
			break
		}
		switch b[n-1] {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return FormatJSONLines
		}
		return FormatCSV
	}
	return FormatCSV
}

func parseCSV(r io.Reader, fn func(ImportRow) error) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err == io.EOF {
		return Invalid("file", "the CSV file is empty; expected a header line naming the columns %s", importColumnsMsg)
	}
	if err != nil {
		return Invalid("file", "reading the CSV header: %v", err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		if !importKnown[h] {
			line, _ := cr.FieldPos(i)
			return Invalid("file", "line %d: unknown column %q; expected the columns %s", line, clip(h, 40), importColumnsMsg)
		}
		if _, dup := col[h]; dup {
			return Invalid("file", "line 1: column %q appears twice", h)
		}
		col[h] = i
	}
	for _, h := range importRequired {
		if _, ok := col[h]; !ok {
			return Invalid("file", "line 1: the header has no %q column; expected the columns %s (is the first line a header?)", h, importColumnsMsg)
		}
	}
	pd, hasPD := col["production_date"]
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		var row ImportRow
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return Invalid("file", "reading the CSV file: %v", err)
			}
			row = ImportRow{Line: pe.StartLine, Malformed: "the line is not a CSV record: " + pe.Err.Error()}
		} else {
			row.Line, _ = cr.FieldPos(0)
			if len(rec) != len(header) {
				row.Malformed = fmt.Sprintf("the record has %d fields, the header %d", len(rec), len(header))
				if len(rec) > 0 {
					row.Serial = rec[0]
				}
			} else {
				row.Serial = rec[col["serial"]]
				row.Model = rec[col["model"]]
				row.Firmware = rec[col["firmware"]]
				row.OwnerContact = rec[col["owner_contact"]]
				if hasPD {
					row.ProductionDate = rec[pd]
				}
			}
		}
		if err := fn(row); err != nil {
			return err
		}
	}
}

// jsonRow is one JSON line; unknown keys are refused.
type jsonRow struct {
	Serial         *string `json:"serial"`
	Model          string  `json:"model"`
	Firmware       string  `json:"firmware"`
	OwnerContact   *string `json:"owner_contact"`
	ProductionDate string  `json:"production_date"`
}

// maxJSONLine bounds one JSON line; a longer one is a malformed row.
const maxJSONLine = 64 << 10

func parseJSONLines(br *bufio.Reader, fn func(ImportRow) error) error {
	var buf []byte
	for line := 1; ; line++ {
		buf = buf[:0]
		long := false
		var err error
		for {
			var chunk []byte
			chunk, err = br.ReadSlice('\n')
			if len(buf)+len(chunk) > maxJSONLine {
				long = true
			} else {
				buf = append(buf, chunk...)
			}
			if err != bufio.ErrBufferFull {
				break
			}
		}
		if err != nil && err != io.EOF {
			return Invalid("file", "reading line %d: %v", line, err)
		}
		if err == io.EOF && len(buf) == 0 && !long {
			return nil
		}
		row := ImportRow{Line: line}
		text := bytes.TrimSpace(buf)
		switch {
		case long:
			row.Malformed = fmt.Sprintf("the line is longer than %d bytes", maxJSONLine)
		case len(text) == 0:
			if err == io.EOF {
				return nil
			}
			continue
		case !utf8.Valid(text):
			row.Malformed = "the line is not UTF-8"
		default:
			var j jsonRow
			dec := json.NewDecoder(bytes.NewReader(text))
			dec.DisallowUnknownFields()
			if derr := dec.Decode(&j); derr != nil {
				row.Malformed = "the line is not a JSON object of the columns " + importColumnsMsg + ": " + derr.Error()
			} else if dec.More() {
				row.Malformed = "the line has more than one JSON value"
			} else if j.Serial == nil || j.OwnerContact == nil {
				row.Malformed = `the line lacks "serial" or "owner_contact" (owner_contact may be "")`
				if j.Serial != nil {
					row.Serial = *j.Serial
				}
			} else {
				row.Serial, row.Model, row.Firmware, row.OwnerContact, row.ProductionDate =
					*j.Serial, j.Model, j.Firmware, *j.OwnerContact, j.ProductionDate
			}
		}
		if ferr := fn(row); ferr != nil {
			return ferr
		}
		if err == io.EOF {
			return nil
		}
	}
}

// ImportSession runs one import: it validates rows, drops duplicates
// within the file, hands batches to the store (one batch in flight while
// the next is being validated) and finishes with the summary audit event. The
// gRPC handler makes one per client stream; the CLI's local tests and the
// benchmark feed it ParseImportFile's rows. Not safe for concurrent use.
type ImportSession struct {
	ctx    context.Context
	store  ImportStore
	actor  Actor
	opts   ImportOptions
	id     string
	models map[string]bool

	// seen maps serials and device ids to the line that registered them in
	// this file: the first row wins. About 100 bytes per row.
	seen, seenID map[string]int32

	cur      ImportBatch
	inflight chan batchResult
	report   ImportReport
	err      error
}

type batchResult struct {
	rep ImportReport
	err error
}

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
		seen: map[string]int32{}, seenID: map[string]int32{}}
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
func (s *ImportSession) Add(r ImportRow) error {
	if s.err != nil {
		return s.err
	}
	d, rerr := ValidateImportRow(r, s.models)
	if rerr != nil {
		s.cur.Invalid++
		s.report.AddError(*rerr)
		return nil
	}
	if first, dup := s.seen[d.Serial]; dup {
		s.cur.Duplicates++
		s.report.AddError(RowError{Line: r.Line, Serial: d.Serial, Kind: RowDuplicate,
			Reason: fmt.Sprintf("serial already on line %d of this file; the first row wins", first)})
		return nil
	}
	if first, dup := s.seenID[d.DeviceID]; dup {
		s.cur.Duplicates++
		s.report.AddError(RowError{Line: r.Line, Serial: d.Serial, Kind: RowDuplicate,
			Reason: fmt.Sprintf("device id %s already on line %d of this file under another serial; the first row wins", d.DeviceID, first)})
		return nil
	}
	s.seen[d.Serial] = int32(r.Line)
	s.seenID[d.DeviceID] = int32(r.Line)
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
	s.inflight = make(chan batchResult, 1)
	go func(ch chan<- batchResult) {
		rep, err := s.store.ImportBatch(s.ctx, s.actor, s.id, b)
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
	totals, err := s.store.FinishImport(s.ctx, s.actor, s.id, sha256)
	if err != nil {
		return s.report, err
	}
	out := totals
	out.Errors, out.ErrorsDropped = s.report.Errors, s.report.ErrorsDropped
	slices.SortStableFunc(out.Errors, func(a, b RowError) int { return cmp.Compare(a.Line, b.Line) })
	return out, nil
}

// ImportFile imports the file r (format as in ParseImportFile) into st as
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
	if err := ParseImportFile(io.TeeReader(r, h), format, sess.Add); err != nil {
		sess.wait()
		return sess.report, err
	}
	return sess.Finish(hex.EncodeToString(h.Sum(nil)))
}
