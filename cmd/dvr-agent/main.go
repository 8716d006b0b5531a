// Command dvr-agent is what the DVR firmware calls to verify a temporary
// password (a voice code read over the phone, or a signed grant) offline,
// and to check the new admin password the owner then chooses.
//
//	dvr-agent verify --serial SERIAL --key-file FILE --trust JWKS_FILE --state DIR [--now RFC3339] [--json] CODE_OR_GRANT
//	dvr-agent request ... | recovery-code ... --recipient ADDR (--stdout | --smtp-server HOST:PORT ...)
//	dvr-agent check-password [--json] < candidate
//	dvr-agent version
//
// The exit status says what happened; agent/README.md has the table. It
// links the standard library and this module's agent packages only
// (deps_test.go enforces it): it runs on small ARM and MIPS boxes.
// Built with -tags smtp it also sends the recovery e-mail itself
// (agent/mailer); the default build hands the code over on standard
// output.
package main

import "os"

func main() {
	os.Exit(Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
