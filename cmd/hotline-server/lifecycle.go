package main

import (
	"context"
	"flag"
	"fmt"
	"io"
)

// keysLifecycle runs the key-lifecycle subcommands: device-keys, rotate, retire.
func keysLifecycle(_ context.Context, args []string, c *common, fs *flag.FlagSet, stdout, stderr io.Writer) error {
	fmt.Fprintf(stderr, "hotline-server keys: unknown command %q: expected init, device-key, jwks\n", args[0])
	return errUsage
}
