// Package cli holds what the server-side commands (hotline-server,
// hotlinectl) share about their command lines. dvr-agent keeps its own copy
// of Parse: it links nothing of this module outside agent/.
package cli

import (
	"flag"
	"strings"
)

// Parse parses fs allowing flags before, between and after the positional
// arguments ("keys device-key SERIAL --keyring DIR") and returns the
// positional arguments in order. "-" is positional; after "--" everything
// is.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "-" || !strings.HasPrefix(args[0], "-") {
			pos = append(pos, args[0])
			args = args[1:]
			continue
		}
		// fs stopped at "--": the rest is positional.
		return append(pos, args...), nil
	}
}
