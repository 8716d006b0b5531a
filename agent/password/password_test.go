package password

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		pw   string
		rule Rule // "" = accepted
	}{
		{"accepted/lower-and-digits", "abc123", ""},
		{"accepted/upper-and-lower", "AbcDef", ""},
		{"accepted/special-and-digits", "12345!", ""},
		{"accepted/all-four-kinds", "Ab1!xyz", ""},
		{"accepted/every-special-counts", specials[1:] + "a", ""},
		{"accepted/exactly-6", "abcde1", ""},
		{"accepted/exactly-32", strings.Repeat("a", 31) + "1", ""},
		{"refused-length/empty", "", RuleLength},
		{"refused-length/5-characters", "abc12", RuleLength},
		{"refused-length/33-characters", strings.Repeat("a", 32) + "1", RuleLength},
		{"refused-kinds/digits-only", "123456", RuleKinds},
		{"refused-kinds/lower-only", "abcdefgh", RuleKinds},
		{"refused-kinds/upper-only", "ABCDEFGH", RuleKinds},
		{"refused-kinds/special-only", "!@#$%^&*", RuleKinds},
		{"refused-characters/space-is-invisible-on-masked-input", "abc 123", RuleCharacters},
		{"refused-characters/trailing-space", "abc123 ", RuleCharacters},
		{"refused-characters/tab", "abc\t123", RuleCharacters},
		{"refused-characters/newline-inside", "abc\n123", RuleCharacters},
		{"refused-characters/nul", "abc\x00123", RuleCharacters},
		{"refused-characters/del", "abc\x7f123", RuleCharacters},
		{"refused-characters/accented-letter", "pässwort1", RuleCharacters},
		{"refused-characters/emoji", "abc123🔑", RuleCharacters},
		{"refused-characters/invalid-utf8", "abc\xff123", RuleCharacters},
		{"refused-characters/before-length", "é", RuleCharacters},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.pw)
			if tt.rule == "" {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want accepted", tt.pw, err)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Check(%q) = %v, want *Error with rule %s", tt.pw, err, tt.rule)
			}
			if pe.Rule != tt.rule {
				t.Fatalf("Check(%q) rule = %s (%v), want %s", tt.pw, pe.Rule, err, tt.rule)
			}
			if pe.Message == "" {
				t.Fatal("empty message")
			}
		})
	}
}

func TestKindOfCoversPrintableASCII(t *testing.T) {
	for c := 0; c < 256; c++ {
		k := KindOf(byte(c))
		allowed := c > ' ' && c < 0x7f
		if (k != 0) != allowed {
			t.Errorf("KindOf(%#02x) = %v, allowed = %v", c, k, allowed)
		}
	}
	n := 0
	for c := 0; c < 128; c++ {
		if KindOf(byte(c)) == Special {
			n++
			if !strings.ContainsRune(specials, rune(c)) {
				t.Errorf("%q is special but not in the documented list", rune(c))
			}
		}
	}
	if n != len(specials) || len(specials) != 32 {
		t.Errorf("%d special characters, documented %d, want 32", n, len(specials))
	}
}

func TestKindsMessageNamesWhatIsMissing(t *testing.T) {
	err := Check("abcdefg")
	if err == nil || !strings.Contains(err.Error(), "only lower case") {
		t.Fatalf("got %v", err)
	}
}
