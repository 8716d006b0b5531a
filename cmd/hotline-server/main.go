// Command hotline-server is the central service of the DVR support hotline:
// it serves the gRPC API, migrates the database, manages the keyring and
// mints development staff tokens.
//
//	hotline-server keys init                  create a keyring
//	hotline-server keys device-key SERIAL     print a device's key file (factory)
//	hotline-server keys jwks                  print the grant-verification JWK set
//	hotline-server migrate                    apply the database migrations
//	hotline-server serve                      serve the gRPC API
//	hotline-server token --subject S --role R print a development staff token
//
// Every subcommand takes the keyring from --keyring or HOTLINE_KEYRING and the
// database from --database-url or DATABASE_URL; serve listens on --listen or
// HOTLINE_LISTEN (default 127.0.0.1:7443). A serving server reloads the
// keyring on SIGHUP and when the keyring file changes (--keyring-poll), so a
// rotation needs no restart.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Run runs one subcommand and returns the process exit status. End-to-end
// tests call it directly.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "keys":
		err = runKeys(ctx, args[1:], stdout, stderr)
	case "migrate":
		err = runMigrate(ctx, args[1:], stdout, stderr)
	case "serve":
		m := NewMain(stdout, stderr)
		if err = m.ParseFlags(args[1:]); err == nil {
			err = m.Run(ctx)
			if cerr := m.Close(); err == nil {
				err = cerr
			}
		}
	case "token":
		err = runToken(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "hotline-server: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	if err != nil {
		if err == errUsage {
			return 2
		}
		fmt.Fprintf(stderr, "hotline-server %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: hotline-server COMMAND [flags]

commands:
  serve                           serve the gRPC API (migrates first); loads a
                                  rotated keyring without a restart: on SIGHUP,
                                  and when the keyring file changes (checked
                                  every --keyring-poll, default 30s; 0: SIGHUP only)
  migrate                         apply the database migrations
  keys init                       create a keyring (HOTLINE_KEYRING / --keyring)
  keys device-key SERIAL          print a device's key file, for the factory
  keys device-keys --serials FILE --out FILE
                                  derive a batch of device keys, offline
  keys jwks                       print the grant-verification JWK set
  keys rotate --purpose P         add a key generation (master, grant, staff, audit)
  keys retire --kid KID           stop publishing an old grant key
  keys export-masters --out DIR   the master keys alone, for a factory's flashing station
  keys revoke --kid staff-N       stop trusting a staff-token key at once
  token --subject NAME --role R   print a development staff token

common flags (and environment):
  --keyring DIR        HOTLINE_KEYRING   keyring folder (mode 0700)
  --database-url URL   DATABASE_URL      PostgreSQL
  --listen ADDR        HOTLINE_LISTEN    gRPC address (default 127.0.0.1:7443)
run "hotline-server COMMAND -h" for a command's flags.
`)
}
