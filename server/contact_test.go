package server

import "testing"

func TestMaskContact(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"email/plain", "jane@example.com", "j***@example.com"},
		{"email/upper-case-and-spaces", "  Jane.Doe@Example.COM ", "j***@example.com"},
		{"email/one-letter-local", "j@example.com", "j***@example.com"},
		{"phone/e164", "+447700900789", "+**********89"},
		{"phone/spaced", "+44 7700 900789", "+**********89"},
		{"phone/00-prefix", "0044 7700 900789", "+**********89"},
		{"phone/short-shows-last-two", "12345", "***45"},
		{"other/first-letter-only", "installer-42", "i***"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MaskContact(tt.in); got != tt.want {
				t.Errorf("MaskContact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// The mask must never show most of the contact: at most the first
// character of an e-mail's local part, at most two digits of a phone.
func TestMaskContactHidesMost(t *testing.T) {
	for _, c := range []string{"+14155550123", "+4915112345678", "averylongname@example.org"} {
		m := MaskContact(c)
		stars := 0
		for _, r := range m {
			if r == '*' {
				stars++
			}
		}
		if stars < 3 {
			t.Errorf("MaskContact(%q) = %q: too little hidden", c, m)
		}
	}
}

func TestValidContact(t *testing.T) {
	for _, ok := range []string{"jane@example.com", "+447700900789", "07700900789"} {
		if v, _ := ValidContact(NormaliseContact(ok)); !v {
			t.Errorf("accepted/%s: refused", ok)
		}
	}
	for _, bad := range []string{"", "jane", "jane@", "@example.com", "jane@example", "a@b@c.com", "12345", "+1234567890123456"} {
		if v, _ := ValidContact(NormaliseContact(bad)); v {
			t.Errorf("refused/%q: accepted", bad)
		}
	}
}
