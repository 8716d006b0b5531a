// Command hotlinectl is the support agent's and auditor's tool for the
// Hotline service: register devices one by one or import a factory's
// list (CSV or JSON lines), look them up, check owners, issue
// temporary passwords, hold and release devices, and query, export,
// summarise and verify the audit log.
//
// The server address comes from --addr or HOTLINE_ADDR (default
// 127.0.0.1:7443), the staff token from --token or HOTLINE_TOKEN. Plaintext
// is spoken only to loopback addresses; anything else needs TLS (--ca-file
// for a private CA). Output is for humans unless -o json.
package main

import "os"

func main() {
	app := &App{Getenv: os.Getenv}
	os.Exit(app.Run(os.Args[1:], os.Stdout, os.Stderr))
}
