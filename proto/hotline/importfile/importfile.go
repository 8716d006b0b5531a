// Package importfile reads the device registry's import files: the row
// type, the formats and the CSV / JSON-lines reader that hotlinectl (which
// streams the rows) and the server (which imports files in tests and
// benchmarks) share. It imports the standard library only, so that the
// client links no server code.
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
//	owner_contact    yes       the owner's e-mail or phone number; the column must be
//	                           there, a value may be empty: "no owner registered yet"
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
// strings) is one malformed row (Row.Malformed), reported with its line
// number; the rest of the file is still read. Only a file that cannot be
// read at all (no header, an unknown column, an I/O error) stops the
// reading, with an *Error.
//
// Validating a row (the serial, the model catalogue, the contact) is the
// server's: server.ValidateImportRow.
package importfile

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/dvrhotline/hotline/agent/clip"
)

// Row is one row of an import file, as read (not yet validated).
type Row struct {
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
	// Malformed is set by Parse when the line could not be read as a row;
	// the server's validation reports it as the row's reason.
	Malformed string
}

// The import file formats Parse reads. The values cross the wire
// (ImportOptions.format): append only.
const (
	// FormatCSV is CSV with a header line.
	FormatCSV = "csv"
	// FormatJSONLines is one JSON object per line.
	FormatJSONLines = "jsonl"
)

const columnsMsg = "serial, model, firmware, owner_contact and optionally production_date"

var (
	required = []string{"serial", "model", "firmware", "owner_contact"}
	known    = map[string]bool{"serial": true, "model": true, "firmware": true, "owner_contact": true, "production_date": true}
)

// Error is a file Parse cannot read as an import file: Field is "file" (the
// content) or "format" (the format argument), Message a sentence saying
// what was wrong and what was expected. The server turns it into an
// invalid-argument error naming Field.
type Error struct {
	// Field is what was at fault: "file" or "format".
	Field string
	// Message says what was wrong and what was expected.
	Message string
}

// Error implements error.
func (e *Error) Error() string { return e.Message }

func invalid(field, format string, args ...any) *Error {
	return &Error{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Parse reads an import file (see the package's "File formats") and calls
// fn with each row in file order, with exact line numbers. format is
// FormatCSV, FormatJSONLines, or "" to tell from the first non-blank byte
// ('{' is JSON lines). An fn error stops the reading and is returned as
// is; a file that cannot be read as an import is an *Error.
func Parse(r io.Reader, format string, fn func(Row) error) error {
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
	return invalid("format", "unknown import format %q; expected %q or %q", format, FormatCSV, FormatJSONLines)
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

func parseCSV(r io.Reader, fn func(Row) error) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err == io.EOF {
		return invalid("file", "the CSV file is empty; expected a header line naming the columns %s", columnsMsg)
	}
	if err != nil {
		return invalid("file", "reading the CSV header: %v", err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		if !known[h] {
			line, _ := cr.FieldPos(i)
			return invalid("file", "line %d: unknown column %q; expected the columns %s", line, clip.Clip(h, 40), columnsMsg)
		}
		if _, dup := col[h]; dup {
			return invalid("file", "line 1: column %q appears twice", h)
		}
		col[h] = i
	}
	for _, h := range required {
		if _, ok := col[h]; !ok {
			return invalid("file", "line 1: the header has no %q column; expected the columns %s (is the first line a header?)", h, columnsMsg)
		}
	}
	pd, hasPD := col["production_date"]
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		var row Row
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return invalid("file", "reading the CSV file: %v", err)
			}
			row = Row{Line: pe.StartLine, Malformed: "the line is not a CSV record: " + pe.Err.Error()}
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

func parseJSONLines(br *bufio.Reader, fn func(Row) error) error {
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
			return invalid("file", "reading line %d: %v", line, err)
		}
		if err == io.EOF && len(buf) == 0 && !long {
			return nil
		}
		row := Row{Line: line}
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
				row.Malformed = "the line is not a JSON object of the columns " + columnsMsg + ": " + derr.Error()
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
