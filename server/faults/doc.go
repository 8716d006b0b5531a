// Package faults holds the fault-injection tests of the central service
// (its _test files): concurrent issuing clients, retrying by request id,
// run against several `hotline-server serve` processes while the test
// restarts PostgreSQL, fails it over to a synchronous standby, kills a
// replica with SIGKILL, degrades the network through a TCP proxy or
// exhausts the connection pool; then the promise is checked against the
// database and the audit log. Every PostgreSQL it faults is a cluster the
// test creates itself (initdb as the postgres user, on free loopback
// ports) and removes afterwards.
//
// `make test` runs short versions; `make chaos` (HOTLINE_CHAOS=1) runs
// longer ones and prints the table of figures.
package faults
