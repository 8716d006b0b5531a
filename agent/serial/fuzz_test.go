package serial_test

import (
	"strings"
	"testing"

	"github.com/dvrhotline/hotline/agent/serial"
)

// FuzzParseSerial: Parse never panics, and what it accepts has one
// canonical form that parses back to itself (the form every MAC and
// signature binds, so it must be a fixed point).
func FuzzParseSerial(f *testing.F) {
	f.Add("JZ6OES#2017-08-01#3#DVR1101134C08011")            // the label's own text
	f.Add("  jz6oes # 2017-08-01 # 3 # dvr1101134c08011 \n") // sloppy typing: case and spaces
	f.Add("JZ6OES#2017-08-01#003#DVR1101134C08011")          // leading zeros in the line number
	f.Add("JZ6OES#2017-8-1#3#DVR1101134C08011")              // date without zero padding
	f.Add("JZ6OES#2017-02-30#3#DVR1101134C08011")            // impossible date
	f.Add("JZ6OES#2009-12-31#3#DVR1101134C08011")            // before the product line
	f.Add("JZ6OES#2017-08-01#+3#DVR1101134C08011")           // signed line number
	f.Add("JZ6OES#2017-08-01#1000#DVR1101134C08011")         // line number out of range
	f.Add("JZ6OES#2017-08-01#3#DVR1")                        // device id too short
	f.Add("JZ6OES#2017-08-01#3#1VR1101134C08011")            // device id starting with a digit
	f.Add("JZ6OES#2017-08-01#3")                             // three fields
	f.Add("JZ6OES#2017-08-01#3#DVR1101134C08011#X")          // five fields
	f.Add("JZ6OÉS#2017-08-01#3#DVR1101134C08011")            // non-ASCII letter in the lot
	f.Add("JZ6OES\u00a0#2017-08-01#3#DVR1101134C08011")      // Unicode whitespace
	f.Add(strings.Repeat("#", serial.MaxLen+1))              // over the length limit
	f.Add("SN:JZ6OES#2017-08-01#3#DVR1101134C08011")         // QR payload (ParseQuery)
	f.Add("https://x.example/?sn=JZ6OES%232017-08-01%233%23DVR1101134C08011")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		serial.ParseQuery(s) // must not panic
		p, err := serial.Parse(s)
		if err != nil {
			if _, ok := err.(*serial.ParseError); !ok {
				t.Fatalf("Parse(%q) error %T, want *ParseError", s, err)
			}
			return
		}
		c := p.String()
		q, err := serial.Parse(c)
		if err != nil || q.String() != c {
			t.Fatalf("Parse(%q) = %q, which parses to %q, %v", s, c, q.String(), err)
		}
		if got, err := serial.Canonical(s); err != nil || got != c {
			t.Fatalf("Canonical(%q) = %q, %v; want %q", s, got, err, c)
		}
		if strings.Count(c, "#") != 3 || strings.ToUpper(c) != c || strings.ContainsAny(c, " \t\n") {
			t.Fatalf("canonical form %q is not canonical", c)
		}
	})
}
