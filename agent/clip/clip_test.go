package clip

import (
	"testing"
	"unicode/utf8"
)

func TestClip(t *testing.T) {
	tests := []struct {
		name, in    string
		n           int
		clip, quote string
	}{
		{"kept/short", "abc", 5, "abc", "abc"},
		{"kept/exact", "abcde", 5, "abcde", "abcde"},
		{"cut/ascii", "abcdef", 3, "abc", "abc..."},
		{"cut/before-a-split-rune", "ab\u00e9cd", 3, "ab", "ab..."},
		{"cut/whole-rune-kept", "ab\u00e9cd", 4, "ab\u00e9", "ab\u00e9..."},
		{"cut/to-nothing", "\u00e9", 1, "", "..."},
		{"cut/negative-length", "abc", -1, "", "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Clip(tt.in, tt.n); got != tt.clip || !utf8.ValidString(got) {
				t.Errorf("Clip(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.clip)
			}
			if got := Quote(tt.in, tt.n); got != tt.quote {
				t.Errorf("Quote(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.quote)
			}
		})
	}
}

func FuzzClip(f *testing.F) {
	f.Add("ab\u00e9cd", 3)
	f.Add("\xff\xfe", 1) // invalid UTF-8 stays as valid as it was
	f.Fuzz(func(t *testing.T, s string, n int) {
		got := Clip(s, n)
		if len(got) > max(n, 0) || len(got) > len(s) || s[:len(got)] != got {
			t.Fatalf("Clip(%q, %d) = %q: not a prefix of at most n bytes", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Clip(%q, %d) = %q split a rune", s, n, got)
		}
	})
}
