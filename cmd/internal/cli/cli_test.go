package cli

import (
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParseTakesFlagsAnywhere(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		pos  []string
	}{
		{"flags/before", []string{"--keyring", "k", "SERIAL"}, []string{"SERIAL"}},
		{"flags/after", []string{"SERIAL", "--keyring", "k"}, []string{"SERIAL"}},
		{"flags/between", []string{"A", "--keyring", "k", "B"}, []string{"A", "B"}},
		{"positional/dash", []string{"-", "--keyring", "k"}, []string{"-"}},
		{"positional/after-double-dash", []string{"--keyring", "k", "--", "--not-a-flag"}, []string{"--not-a-flag"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			kr := fs.String("keyring", "", "")
			pos, err := Parse(fs, tt.args)
			if err != nil || *kr != "k" || !slices.Equal(pos, tt.pos) {
				t.Fatalf("Parse(%q) = %q, keyring %q, %v; want %q", tt.args, pos, *kr, err, tt.pos)
			}
		})
	}
}
