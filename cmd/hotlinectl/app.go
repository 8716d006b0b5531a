package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/dvrhotline/hotline/cmd/internal/cli"
	"github.com/dvrhotline/hotline/proto/hotline/netaddr"
)

// Exit statuses. Scripts may rely on them: append only.
const (
	exitOK       = 0
	exitFailed   = 1 // the server refused or could not be reached
	exitUsage    = 2 // the command line is wrong
	exitNoMatch  = 3 // check-owner: the claimed contact does not match
	exitBadLog   = 4 // audit verify: the audit log failed verification
	exitPartial  = 5 // devices import: some rows were not imported (the others were)
	defaultAddr  = "127.0.0.1:7443"
	defaultLimit = 50
)

const usage = `usage: hotlinectl [flags] COMMAND ...

Commands:
  devices add SERIAL --model MODEL --firmware F [--owner CONTACT] [--key-generation N]
  devices import FILE [--format csv|jsonl] [--update] [--batch N] [--key-generation N]
                                     CSV or JSON lines (serial, model, firmware, owner_contact,
                                     production_date); progress on stderr; prints each row not
                                     imported as "line N: SERIAL: reason"; exit status 5 when
                                     some rows were not imported (every other row was); running
                                     the same file again completes a cut-off import
  lookup QUERY                       full serial, device id or QR text
  check-owner SERIAL CONTACT         exit status 3 when it does not match
  send-code SERIAL                   mail a one-time code to the registered e-mail (shown masked)
  verify-code SERIAL CODE            check the code the caller reads back (then --verified-by email-code)
  deliveries SERIAL                  what was mailed for the device: queued, sent, failed and why
  issue SERIAL --ticket T --verified-by METHOD [--note N] [--override-reason R] [--request-id ID]
                                     METHOD: owner-contact, proof-of-purchase, installer-account, other
  history SERIAL [--limit N] [--page-token P] [--all]
                                     newest first; prints the next page token on stderr
  hold SERIAL --reason R
  release SERIAL --reason R
  audit query [--serial S] [--actor A] [--action A] [--outcome success|refused]
              [--since T] [--until T] [--limit N] [--page-token P] [--all]
                                     T: RFC 3339 time or a duration ago, like 24h
  audit export [the filters of audit query] [--out FILE]
                                     JSON lines, oldest first; progress on stderr
  audit summary [--since T] [--until T]
                                     issuances per agent per day, repeated devices,
                                     refusals by reason (default: the last 7 days)
  audit checkpoint                   the latest signed checkpoint: keep a copy elsewhere
  audit verify [--checkpoint FILE]   exit status 4 when the log fails verification,
                                     naming the first bad event
  keys jwks                          the grant-verification keys (what dvr-agent --trust reads)

Flags (anywhere on the line):
  --addr ADDR      server address (HOTLINE_ADDR, default 127.0.0.1:7443)
  --token TOKEN    staff token (HOTLINE_TOKEN)
  --ca-file FILE   CA certificate(s) for TLS; TLS is always used off loopback
  -o FORMAT        text (default) or json
  --timeout D      per-call timeout (default 15s)
`

// App is hotlinectl: a command line in, output and an exit status out.
type App struct {
	// Getenv reads the environment (os.Getenv in main).
	Getenv func(string) string
	// DialOptions are added to the connection's (tests).
	DialOptions []grpc.DialOption
}

// common are the flags every command takes.
type common struct {
	addr, token, caFile, output string
	timeout                     time.Duration
}

func (a *App) getenv(k string) string {
	if a.Getenv == nil {
		return ""
	}
	return a.Getenv(k)
}

func (a *App) addCommon(fs *flag.FlagSet, c *common) {
	def := a.getenv("HOTLINE_ADDR")
	if def == "" {
		def = defaultAddr
	}
	fs.StringVar(&c.addr, "addr", def, "server address")
	fs.StringVar(&c.token, "token", a.getenv("HOTLINE_TOKEN"), "staff token")
	fs.StringVar(&c.caFile, "ca-file", "", "CA certificates for TLS")
	fs.StringVar(&c.output, "o", "text", "output: text or json")
	fs.StringVar(&c.output, "output", "text", "output: text or json")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Second, "per-call timeout")
}

// usageError is a command-line mistake: exit status 2 with a hint.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// cmd is one invocation: the parsed common flags, the connection, output.
type cmd struct {
	common
	name   string
	stdout io.Writer
	stderr io.Writer
	conn   *grpc.ClientConn
}

// Run runs hotlinectl with args (without the program name).
func (a *App) Run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	// Common flags may come before the command: move them after it (every
	// common flag takes a value).
	var lead []string
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" {
		n := 1
		if !strings.Contains(args[0], "=") && len(args) > 1 {
			n = 2
		}
		lead, args = append(lead, args[:n]...), args[n:]
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	if name == "devices" || name == "audit" || name == "keys" {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			fmt.Fprintf(stderr, "hotlinectl %s: missing subcommand\n\n%s", name, usage)
			return exitUsage
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	rest = append(lead, rest...)
	run, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "hotlinectl: unknown command %q\n\n%s", name, usage)
		return exitUsage
	}
	c := &cmd{name: name, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("hotlinectl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a.addCommon(fs, &c.common)
	bind := run(fs)
	pos, err := cli.Parse(fs, rest)
	if err == nil {
		if c.output != "text" && c.output != "json" {
			err = usagef("-o %q: expected text or json", c.output)
		}
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			return exitOK
		}
		printf(stderr, "hotlinectl %s: %v\n", name, err)
		return exitUsage
	}
	conn, err := a.dial(c.common)
	if err != nil {
		printf(stderr, "hotlinectl: %v\n", err)
		return exitUsage
	}
	defer conn.Close()
	c.conn = conn
	err = bind(c, pos)
	var ue *usageError
	var nm noMatch
	var vf verifyFailed
	var pi partialImport
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "hotlinectl %s: %s\n", name, ue.msg)
		return exitUsage
	case errors.As(err, &nm):
		return exitNoMatch
	case errors.As(err, &vf):
		fmt.Fprintf(stderr, "hotlinectl %s: %v\n", name, vf)
		return exitBadLog
	case errors.As(err, &pi):
		fmt.Fprintf(stderr, "hotlinectl %s: %v\n", name, pi)
		return exitPartial
	default:
		fmt.Fprintln(stderr, c.explain(err))
		return exitFailed
	}
}

// noMatch is check-owner's "checked, does not match".
type noMatch struct{}

func (noMatch) Error() string { return "no match" }

// dial connects: plaintext to loopback unless a CA file is given, TLS
// otherwise (system roots, or --ca-file).
func (a *App) dial(c common) (*grpc.ClientConn, error) {
	if _, _, err := net.SplitHostPort(c.addr); err != nil {
		return nil, fmt.Errorf("--addr %q: expected HOST:PORT, like %s", c.addr, defaultAddr)
	}
	var creds credentials.TransportCredentials
	switch {
	case c.caFile != "":
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificates in it", c.caFile)
		}
		creds = credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	case netaddr.IsLoopback(c.addr):
		creds = insecure.NewCredentials()
	default:
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, a.DialOptions...)
	return grpc.NewClient(c.addr, opts...)
}

// ctx returns a call context with the timeout and the bearer token.
func (c *cmd) ctx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	return ctx, cancel
}

// printJSON prints m in the API's field names, plus extra fields.
func (c *cmd) printJSON(m proto.Message, extra map[string]any) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	for k, x := range extra {
		v[k] = x
	}
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func need(pos []string, n int, what string) error {
	if len(pos) != n {
		return usagef("expected %s, got %d argument(s)", what, len(pos))
	}
	return nil
}
