package envflag

import (
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	t.Setenv("HL_TEST_S", "x")
	t.Setenv("HL_TEST_I", "12")
	t.Setenv("HL_TEST_BAD_I", "twelve")
	t.Setenv("HL_TEST_D", "1m")
	t.Setenv("HL_TEST_BAD_D", "soon")
	t.Setenv("HL_TEST_EMPTY", "")
	tests := []struct {
		name      string
		got, want any
	}{
		{"set/string", String("HL_TEST_S", "d"), "x"},
		{"default/empty-string", String("HL_TEST_EMPTY", "d"), "d"},
		{"set/int", Int("HL_TEST_I", 3), 12},
		{"default/malformed-int", Int("HL_TEST_BAD_I", 3), 3},
		{"set/duration", Duration("HL_TEST_D", time.Second), time.Minute},
		{"default/malformed-duration", Duration("HL_TEST_BAD_D", time.Second), time.Second},
		{"default/unset", Int("HL_TEST_UNSET", 7), 7},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}
