package serial

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	const canon = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	tests := []struct {
		name, in, want, field string
	}{
		{"canonical/as-printed", canon, canon, ""},
		{"canonical/lower-case", "jz6oes#2017-08-01#3#dvr1101134c08011", canon, ""},
		{"canonical/spaces-everywhere", "  JZ6OES # 2017-08-01 # 3 # DVR1101134C08011\n", canon, ""},
		{"canonical/leading-zero-line", "JZ6OES#2017-08-01#03#DVR1101134C08011", canon, ""},
		{"refused/three-fields", "JZ6OES#2017-08-01#DVR1101134C08011", "", "serial"},
		{"refused/five-fields", canon + "#X", "", "serial"},
		{"refused/short-lot", "JZ6OE#2017-08-01#3#DVR1101134C08011", "", "lot"},
		{"refused/lot-with-dash", "JZ6-ES#2017-08-01#3#DVR1101134C08011", "", "lot"},
		{"refused/impossible-date", "JZ6OES#2017-02-30#3#DVR1101134C08011", "", "date"},
		{"refused/date-format", "JZ6OES#01.08.2017#3#DVR1101134C08011", "", "date"},
		{"refused/date-before-2010", "JZ6OES#1999-08-01#3#DVR1101134C08011", "", "date"},
		{"refused/line-not-a-number", "JZ6OES#2017-08-01#x#DVR1101134C08011", "", "line"},
		{"refused/line-negative", "JZ6OES#2017-08-01#-3#DVR1101134C08011", "", "line"},
		{"refused/line-too-big", "JZ6OES#2017-08-01#1000#DVR1101134C08011", "", "line"},
		{"refused/device-id-short", "JZ6OES#2017-08-01#3#DVR11", "", "device_id"},
		{"refused/device-id-punctuation", "JZ6OES#2017-08-01#3#DVR1101134C0801!", "", "device_id"},
		{"refused/device-id-starts-with-digit", "JZ6OES#2017-08-01#3#1101134C08011", "", "device_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.in)
			if tt.field == "" {
				if err != nil || s.String() != tt.want {
					t.Fatalf("got %q, %v; want %q", s.String(), err, tt.want)
				}
				return
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Field != tt.field {
				t.Fatalf("got %v, want an error naming %q", err, tt.field)
			}
			if pe.Expected == "" {
				t.Fatal("error does not say what was expected")
			}
		})
	}
}

func TestParseQuery(t *testing.T) {
	const canon = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	tests := []struct{ name, in, serial, deviceID string }{
		{"serial/full", canon, canon, ""},
		{"serial/qr-sn-prefix", "SN:" + canon, canon, ""},
		{"serial/qr-url", "https://dvr.example/r?sn=JZ6OES%232017-08-01%233%23DVR1101134C08011", canon, ""},
		{"device-id/alone", " dvr1101134c08011 ", "", "DVR1101134C08011"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := ParseQuery(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if tt.serial != "" && (q.Serial == nil || q.Serial.String() != tt.serial) {
				t.Fatalf("got %+v", q)
			}
			if tt.deviceID != "" && q.DeviceID != tt.deviceID {
				t.Fatalf("got %+v", q)
			}
		})
	}
	if _, err := ParseQuery("hello"); err == nil {
		t.Fatal("accepted a query that is neither a serial nor a device id")
	}
}
