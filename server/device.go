package server

import (
	"errors"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/clip"
	"github.com/dvrhotline/hotline/agent/serial"
)

// DeviceInput is a device as a provisioner gives it, field by field as
// typed: a RegisterDevice request or a row of an import file.
type DeviceInput struct {
	// Serial as printed below the QR code.
	Serial string
	// Model is a catalogue code, in any case.
	Model string
	// Firmware is the version the factory flashed.
	Firmware string
	// OwnerContact is the owner's e-mail or phone, or empty.
	OwnerContact string
	// ProductionDate is optional (YYYY-MM-DD); when given it must be the
	// serial's date.
	ProductionDate string
}

// ValidDevice is the one definition of a valid device, for register and
// import alike. It returns the registry entry (KeyGeneration and
// RegisteredAt left zero) or an EInvalid naming the first field at fault,
// whose message starts with the field's name. The rules, field by field:
//
//   - serial: required; agent/serial's rules, sloppy input canonicalised;
//   - model: required; trimmed and upper-cased, then one of models;
//   - production_date: optional; when given, YYYY-MM-DD and the serial's
//     own date (which is what is stored either way);
//   - firmware: required (the factory knows what it flashed, and the
//     support agent reads it); trimmed, 1 to 64 printable ASCII characters,
//     so that nothing shown on a staff screen can carry control or
//     look-alike characters;
//   - owner_contact: optional (a DVR leaves the factory before it has an
//     owner); normalised first (NormaliseContact), then an e-mail address
//     or a phone number (ValidContact).
//
// It is on the import's hot path (counted in the import benchmark): no
// regular expressions, one allocation for the canonical serial.
func ValidDevice(in DeviceInput, models map[string]bool) (Device, *Error) {
	if strings.TrimSpace(in.Serial) == "" {
		return Device{}, Invalid("serial", "serial: missing; expected a serial like JZ6OES#2017-08-01#3#DVR1101134C08011")
	}
	s, err := serial.Parse(in.Serial)
	if err != nil {
		var pe *serial.ParseError
		if errors.As(err, &pe) {
			return Device{}, Invalid("serial", "serial: bad %s %q: expected %s", pe.Field, pe.Got, pe.Expected)
		}
		return Device{}, Invalid("serial", "serial: %v", err)
	}
	d := Device{Serial: s.String(), DeviceID: s.DeviceID, ProductionDate: s.Date}
	switch m := in.Model; {
	case models[m]:
		d.Model = m
	case models[strings.ToUpper(strings.TrimSpace(m))]:
		d.Model = strings.ToUpper(strings.TrimSpace(m))
	case strings.TrimSpace(m) == "":
		return Device{}, Invalid("model", "model: missing; expected a model of the catalogue, like WBXHD082S2T")
	default:
		return Device{}, Invalid("model", "model: unknown model %q; expected a model of the catalogue, like WBXHD082S2T", clip.Clip(m, 40))
	}
	if pd := strings.TrimSpace(in.ProductionDate); pd != "" {
		t, err := time.Parse(time.DateOnly, pd)
		if err != nil {
			return Device{}, Invalid("production_date", "production_date: %q is not a date; expected YYYY-MM-DD, the serial's date %s", clip.Clip(pd, 40), s.Date.Format(time.DateOnly))
		}
		if !t.Equal(s.Date) {
			return Device{}, Invalid("production_date", "production_date: %s is not the serial's date %s", pd, s.Date.Format(time.DateOnly))
		}
	}
	fw := strings.TrimSpace(in.Firmware)
	if fw == "" {
		return Device{}, Invalid("firmware", "firmware: missing; expected a firmware version like V3.1.0")
	}
	if len(fw) > maxFirmwareLen {
		return Device{}, Invalid("firmware", "firmware: %d characters; expected at most %d", len(fw), maxFirmwareLen)
	}
	for i := 0; i < len(fw); i++ {
		if c := fw[i]; c < 0x20 || c > 0x7e {
			return Device{}, Invalid("firmware", "firmware: %q has a character that is not printable ASCII", clip.Clip(fw, 40))
		}
	}
	d.Firmware = fw
	if c := NormaliseContact(in.OwnerContact); c != "" {
		if ok, want := ValidContact(c); !ok {
			return Device{}, Invalid("owner_contact", "owner_contact: %q is not a contact; expected %s", clip.Clip(c, 40), want)
		}
		d.OwnerContact = c
	}
	return d, nil
}
