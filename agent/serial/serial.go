// Package serial parses and canonicalises Hybrid DVR serial numbers such as
// "JZ6OES#2017-08-01#3#DVR1101134C08011", the text printed below the QR
// code on the device's label.
//
// A serial has four '#'-separated fields: a 6-character lot code, the
// production date, a small line number and the device id. The canonical form
// (String) is what every MAC and signature binds, on the server and on the
// device alike, so it must never change: upper case, no whitespace, the
// date as YYYY-MM-DD, the line number without leading zeros.
//
// The package imports only the standard library: the DVR agent links it.
package serial

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/dvrhotline/hotline/agent/clip"
)

// Serial is a parsed, canonical serial number.
type Serial struct {
	// Lot is the first field: 6 characters of A-Z and 0-9.
	Lot string
	// Date is the production date (the second field), at midnight UTC.
	Date time.Time
	// Line is the third field: a production line number, 0 to 999.
	Line int
	// DeviceID is the last field, e.g. "DVR1101134C08011": a letter, then
	// 7 to 23 letters or digits.
	DeviceID string
}

// ParseError says which field of a serial is wrong and what was expected.
type ParseError struct {
	// Field is "serial", "lot", "date", "line" or "device_id".
	Field string
	// Got is the offending input (truncated when long).
	Got string
	// Expected describes a valid value.
	Expected string
}

// Error implements error.
func (e *ParseError) Error() string {
	return fmt.Sprintf("serial: bad %s %q: expected %s", e.Field, e.Got, e.Expected)
}

// MaxLen bounds the input accepted by Parse, before normalisation.
const MaxLen = 128

// The earliest production date accepted; the product line started later.
var minDate = time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)

// normalise removes every whitespace character and upper-cases ASCII letters.
func normalise(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if unicode.IsSpace(r) {
			continue
		}
		if 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isUpperAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// Parse parses a serial leniently: surrounding and inner whitespace is
// dropped and letters are upper-cased. Anything else malformed is a
// *ParseError naming the field.
func Parse(s string) (Serial, error) {
	if len(s) > MaxLen {
		return Serial{}, &ParseError{Field: "serial", Got: clip.Quote(s, 40), Expected: fmt.Sprintf("at most %d characters", MaxLen)}
	}
	n := normalise(s)
	parts := strings.Split(n, "#")
	if len(parts) != 4 {
		return Serial{}, &ParseError{Field: "serial", Got: clip.Quote(s, 40), Expected: "four fields separated by '#', like JZ6OES#2017-08-01#3#DVR1101134C08011"}
	}
	var out Serial
	if len(parts[0]) != 6 || !isUpperAlnum(parts[0]) {
		return Serial{}, &ParseError{Field: "lot", Got: clip.Quote(parts[0], 40), Expected: "6 letters or digits, like JZ6OES"}
	}
	out.Lot = parts[0]
	d, err := time.Parse("2006-01-02", parts[1])
	if err != nil || len(parts[1]) != 10 {
		return Serial{}, &ParseError{Field: "date", Got: clip.Quote(parts[1], 40), Expected: "a date as YYYY-MM-DD, like 2017-08-01"}
	}
	if d.Before(minDate) {
		return Serial{}, &ParseError{Field: "date", Got: parts[1], Expected: "a production date in 2010 or later"}
	}
	out.Date = d
	line, err := strconv.Atoi(parts[2])
	if err != nil || line < 0 || line > 999 || len(parts[2]) > 3 || parts[2] == "" || strings.ContainsAny(parts[2], "+-") {
		return Serial{}, &ParseError{Field: "line", Got: clip.Quote(parts[2], 40), Expected: "a number from 0 to 999, like 3"}
	}
	out.Line = line
	id, err := ParseDeviceID(parts[3])
	if err != nil {
		return Serial{}, err
	}
	out.DeviceID = id
	return out, nil
}

// ParseDeviceID validates the device-id field alone, leniently like Parse.
func ParseDeviceID(s string) (string, error) {
	n := normalise(s)
	if len(n) < 8 || len(n) > 24 || !isUpperAlnum(n) || !('A' <= n[0] && n[0] <= 'Z') {
		return "", &ParseError{Field: "device_id", Got: clip.Quote(s, 40), Expected: "a letter then 7 to 23 letters or digits, like DVR1101134C08011"}
	}
	return n, nil
}

// String returns the canonical form, e.g. "JZ6OES#2017-08-01#3#DVR1101134C08011".
func (s Serial) String() string {
	return s.Lot + "#" + s.Date.Format("2006-01-02") + "#" + strconv.Itoa(s.Line) + "#" + s.DeviceID
}

// IsZero reports whether s is the zero Serial.
func (s Serial) IsZero() bool { return s.Lot == "" }

// Canonical parses s and returns its canonical form.
func Canonical(s string) (string, error) {
	p, err := Parse(s)
	if err != nil {
		return "", err
	}
	return p.String(), nil
}

// Query is what a support agent typed to find a device: a full serial, or
// only the device id. Exactly one of Serial and DeviceID is set.
type Query struct {
	// Serial is set when the input held a full serial.
	Serial *Serial
	// DeviceID is set when the input was a device id alone.
	DeviceID string
}

// ParseQuery decides whether s is a full serial, a QR payload holding one, or
// a device id alone, and parses it. QR payloads are the serial itself, a
// "SN:" prefix, or a URL with an "sn" or "serial" query parameter.
func ParseQuery(s string) (Query, error) {
	if len(s) > 4*MaxLen {
		return Query{}, &ParseError{Field: "query", Got: clip.Quote(s, 40), Expected: fmt.Sprintf("at most %d characters", 4*MaxLen)}
	}
	t := strings.TrimSpace(s)
	if p, ok := fromQR(t); ok {
		t = p
	}
	if strings.Contains(t, "#") {
		p, err := Parse(t)
		if err != nil {
			return Query{}, err
		}
		return Query{Serial: &p}, nil
	}
	id, err := ParseDeviceID(t)
	if err != nil {
		return Query{}, &ParseError{Field: "query", Got: clip.Quote(s, 40), Expected: "a serial like JZ6OES#2017-08-01#3#DVR1101134C08011, its device id like DVR1101134C08011, or the QR code's text"}
	}
	return Query{DeviceID: id}, nil
}

// fromQR extracts the serial from a QR payload form, if s is one.
func fromQR(s string) (string, bool) {
	if len(s) > 3 && strings.EqualFold(s[:3], "SN:") {
		return s[3:], true
	}
	if i := strings.Index(s, "://"); i > 0 {
		u, err := url.Parse(s)
		if err != nil {
			return "", false
		}
		for _, k := range []string{"sn", "serial", "SN"} {
			if v := u.Query().Get(k); v != "" {
				return v, true
			}
		}
	}
	return "", false
}
