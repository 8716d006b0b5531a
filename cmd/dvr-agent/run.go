package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/password"
	"github.com/dvrhotline/hotline/agent/serial"
	"github.com/dvrhotline/hotline/agent/verifier"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

// version is set at link time: -ldflags "-X main.version=1.2.3".
var version = "dev"

// Exit statuses of check-password. Like verifier.Outcome, append-only.
const (
	exitPasswordLength     = 20
	exitPasswordKinds      = 21
	exitPasswordCharacters = 22
)

var passwordExit = map[password.Rule]int{
	password.RuleLength:     exitPasswordLength,
	password.RuleKinds:      exitPasswordKinds,
	password.RuleCharacters: exitPasswordCharacters,
}

const usage = `usage:
  dvr-agent verify --serial SERIAL --key-file FILE --trust JWKS_FILE --state DIR [--now RFC3339] [--json] CODE_OR_GRANT
      verify a temporary password; CODE_OR_GRANT "-" reads it from standard input
  dvr-agent request --serial SERIAL --key-file FILE --trust JWKS_FILE --state DIR [--json]
      show a new request code (for a DVR whose clock is not set); it replaces the last one
  dvr-agent recovery-code --serial SERIAL --key-file FILE --trust JWKS_FILE --state DIR --recipient ADDR --stdout [--json]
      make a one-time recovery code for the recovery e-mail and print it for the firmware's mailer
  dvr-agent recovery-code ... --recipient ADDR --smtp-server HOST:PORT --smtp-ssl tls|starttls|none
        [--smtp-user USER --smtp-password-file FILE|-] [--smtp-from ADDR] [--smtp-ca PEM_FILE] [--model MODEL]
      make it and e-mail it through the DVR's SMTP settings (the smtp build only)
  (all four: [--uptime SECONDS --boot-id UUID] instead of /proc/uptime and /proc/sys/kernel/random/boot_id)
  dvr-agent check-password [--json]
      check the new password on standard input against the policy
  dvr-agent version
`

// Run is the whole command: main passes it the process's arguments (without
// the program name) and streams, and exits with what it returns.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return verifier.Usage.ExitCode()
	}
	switch args[0] {
	case "verify", "request", "recovery-code":
		return runVerify(args[0], args[1:], stdin, stdout, stderr)
	case "check-password":
		return runCheckPassword(args[1:], stdin, stdout, stderr)
	case "version", "--version", "-version":
		mail := "recovery e-mail on stdout only"
		if mailBuilt {
			mail = "recovery e-mail by smtp or stdout"
		}
		fmt.Fprintf(stdout, "dvr-agent %s (build date %s, %s, %s/%s, %s)\n", version, verifier.BuildDate, runtime.Version(), runtime.GOOS, runtime.GOARCH, mail)
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "dvr-agent: unknown command %q\n%s", args[0], usage)
	return verifier.Usage.ExitCode()
}

// report is the --json form of an outcome. Absent values are null.
type report struct {
	Outcome    string  `json:"outcome"`
	ExitCode   int     `json:"exit_code"`
	Message    string  `json:"message"`
	Kind       *string `json:"kind"`
	RetryAfter *string `json:"retry_after"`
	IssuedAt   *string `json:"issued_at"`
	ExpiresAt  *string `json:"expires_at"`
	Sequence   *int64  `json:"sequence"`
	Failures   *uint32 `json:"failures"`
	Code       *string `json:"code"`
}

func timePtr(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339)
	return &s
}

// output prints one outcome: JSON on stdout, or a sentence on stdout
// (success) or stderr (refusal).
type output struct {
	json           bool
	stdout, stderr io.Writer
}

func (o output) print(name string, code int, msg string, r *verifier.Result) int {
	return o.printCode(name, code, msg, r, "")
}

// printCode is print with the request or recovery code made, if any.
func (o output) printCode(name string, code int, msg string, r *verifier.Result, made string) int {
	if o.json {
		rep := report{Outcome: name, ExitCode: code, Message: msg}
		if made != "" {
			rep.Code = &made
		}
		if r != nil {
			if r.Kind != "" {
				k := string(r.Kind)
				rep.Kind = &k
			}
			rep.RetryAfter = timePtr(r.RetryAfter)
			rep.IssuedAt = timePtr(r.IssuedAt)
			rep.ExpiresAt = timePtr(r.ExpiresAt)
			if !r.IssuedAt.IsZero() {
				rep.Sequence = &r.Sequence
			}
			switch r.Outcome {
			case verifier.Accepted, verifier.WrongCode, verifier.Expired, verifier.NotYetValid, verifier.AlreadyUsed, verifier.LockedOut:
				// The state was read: the count is known.
				rep.Failures = &r.Failures
			}
		}
		b, err := json.Marshal(rep)
		if err != nil {
			fmt.Fprintf(o.stderr, "dvr-agent: %v\n", err)
			return verifier.Internal.ExitCode()
		}
		o.stdout.Write(append(b, '\n'))
		return code
	}
	if made != "" {
		fmt.Fprintln(o.stdout, made)
		fmt.Fprintln(o.stderr, msg)
	} else if code == 0 {
		fmt.Fprintln(o.stdout, msg)
	} else {
		fmt.Fprintf(o.stderr, "dvr-agent: %s\n", msg)
	}
	return code
}

func (o output) fail(out verifier.Outcome, format string, a ...any) int {
	return o.print(out.String(), out.ExitCode(), fmt.Sprintf(format, a...), nil)
}

// parseInterspersed parses fs allowing flags after positional arguments
// (`verify CODE --json`), and returns the positional arguments. It is
// cmd/internal/cli.Parse, copied: dvr-agent links nothing of this module
// outside agent/ (deps_test.go).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
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

func wantsJSON(args []string) bool {
	for _, a := range args {
		if a == "--json" || a == "-json" || a == "--json=true" || a == "-json=true" {
			return true
		}
	}
	return false
}

func runVerify(cmd string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o := output{json: wantsJSON(args), stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("dvr-agent "+cmd, flag.ContinueOnError)
	uptime := fs.Float64("uptime", -1, "seconds since boot (default /proc/uptime)")
	bootID := fs.String("boot-id", "", "the boot's id (default /proc/sys/kernel/random/boot_id)")
	recipient := fs.String("recipient", "", "recovery-code: the recovery e-mail address (System setting > Network > SMTP)")
	toStdout := fs.Bool("stdout", false, "recovery-code: print the code for the firmware's own mailer")
	var mf mailFlags
	mf.register(fs)
	fs.SetOutput(io.Discard)
	serialFlag := fs.String("serial", "", "the DVR's serial number, e.g. JZ6OES#2017-08-01#3#DVR1101134C08011")
	keyFile := fs.String("key-file", "", "the device key file the factory flashed")
	trustFile := fs.String("trust", "", "the JWK set of trusted grant issuers")
	stateDir := fs.String("state", "", "the directory of the replay and lockout state (must exist)")
	nowFlag := fs.String("now", "", "the verification time as RFC 3339 (default: the clock)")
	fs.BoolVar(&o.json, "json", o.json, "print the outcome as one JSON object")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return o.fail(verifier.Usage, "%v; %s", err, strings.ReplaceAll(strings.TrimSpace(usage), "\n", " "))
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"--serial", *serialFlag}, {"--key-file", *keyFile}, {"--trust", *trustFile}, {"--state", *stateDir}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return o.fail(verifier.Usage, "missing %s: expected verify --serial SERIAL --key-file FILE --trust JWKS_FILE --state DIR CODE_OR_GRANT", strings.Join(missing, ", "))
	}
	switch {
	case cmd != "verify" && len(pos) > 0:
		return o.fail(verifier.Usage, "%s takes no arguments, got %q", cmd, strings.Join(pos, " "))
	case cmd == "verify" && len(pos) == 0:
		return o.fail(verifier.Usage, "no code or grant given: expected it as the last argument, or \"-\" to read it from standard input")
	case cmd == "recovery-code" && strings.TrimSpace(*recipient) == "":
		return o.fail(verifier.RecoveryNotSet, "set up the recovery e-mail first: System setting > Network > SMTP")
	case cmd == "recovery-code" && *toStdout && mf != (mailFlags{}):
		return o.fail(verifier.Usage, "--stdout hands the code to the firmware's mailer, the --smtp-* flags send it: give one or the other")
	case cmd != "recovery-code" && mf != (mailFlags{}):
		return o.fail(verifier.Usage, "the --smtp-* and --model flags belong to recovery-code, not %s", cmd)
	}
	mono := verifier.ReadMono
	if *uptime >= 0 || *bootID != "" {
		mono = func() (verifier.Mono, error) { return parseMono(*bootID, *uptime) }
	}
	input := strings.Join(pos, " ")
	if input == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, grant.MaxTokenLen+2))
		if err != nil {
			return o.fail(verifier.Usage, "reading the code from standard input: %v", err)
		}
		input = string(b)
	}
	now := time.Now()
	if *nowFlag != "" {
		if now, err = time.Parse(time.RFC3339, *nowFlag); err != nil {
			return o.fail(verifier.Usage, "--now %q: expected RFC 3339 time like 2026-05-01T12:00:00Z", *nowFlag)
		}
	}
	canon, err := serial.Canonical(*serialFlag)
	if err != nil {
		return o.fail(verifier.Usage, "--serial: %v", err)
	}
	var send func(code string) error
	if cmd == "recovery-code" && !*toStdout {
		mail, out, msg := newMailer(mf, *recipient, canon, stdin)
		if mail == nil {
			return o.fail(out, "%s", msg)
		}
		send = func(code string) error { return mail(code, now) }
	}

	kb, err := os.ReadFile(*keyFile)
	if err != nil {
		return o.fail(verifier.ConfigUnreadable, "device key file: %v", err)
	}
	keySerial, key, err := voicecode.ParseKeyFile(kb)
	if err != nil {
		return o.fail(verifier.ConfigUnreadable, "%s: %v", *keyFile, err)
	}
	if kc, err := serial.Canonical(keySerial); err != nil || kc != canon {
		return o.fail(verifier.ConfigUnreadable, "device key file %s is for serial %q, not %s: the factory flashed another device's key", *keyFile, keySerial, canon)
	}
	tb, err := os.ReadFile(*trustFile)
	if err != nil {
		return o.fail(verifier.ConfigUnreadable, "trust file: %v", err)
	}
	trust, err := grant.ParseJWKS(tb)
	if err != nil {
		return o.fail(verifier.ConfigUnreadable, "%s: %v", *trustFile, err)
	}

	v, err := verifier.New(verifier.Config{Serial: canon, Key: key, Trust: trust, StateDir: *stateDir, Mono: mono})
	if err != nil {
		return o.fail(verifier.Internal, "%v", err)
	}
	if cmd != "verify" {
		m, err := mono()
		if err != nil {
			return o.fail(verifier.Internal, "the DVR's monotonic clock: %v", err)
		}
		c := verifier.Clock{Now: now, Mono: m}
		var made string
		var r verifier.Result
		if cmd == "recovery-code" {
			made, r = v.RecoveryCode(c, send)
		} else {
			made, r = v.Request(c)
		}
		if r.Outcome != verifier.Accepted || send != nil {
			// A mailed code is never printed: only the mailbox has it.
			made = ""
		}
		return o.printCode(r.Outcome.String(), r.Outcome.ExitCode(), r.Message, &r, made)
	}
	r, _ := v.Verify(input, now)
	return o.print(r.Outcome.String(), r.Outcome.ExitCode(), r.Message, &r)
}

func runCheckPassword(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o := output{json: wantsJSON(args), stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("dvr-agent check-password", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&o.json, "json", o.json, "print the outcome as one JSON object")
	if err := fs.Parse(args); err != nil {
		return o.fail(verifier.Usage, "%v; expected: dvr-agent check-password [--json] < password", err)
	}
	if fs.NArg() > 0 {
		return o.fail(verifier.Usage, "the password is read from standard input, never from the command line (where other processes can see it)")
	}
	// Read a little more than the longest allowed password, so that an
	// over-long one is refused as too long rather than cut.
	b, err := io.ReadAll(io.LimitReader(bufio.NewReader(stdin), 4*password.MaxLen+2))
	if err != nil {
		return o.fail(verifier.Usage, "reading the password from standard input: %v", err)
	}
	pw := string(b)
	if len(b) == 4*password.MaxLen+2 {
		return o.print("password-"+string(password.RuleLength), exitPasswordLength,
			fmt.Sprintf("new password refused: longer than %d characters; use %d to %d", password.MaxLen, password.MinLen, password.MaxLen), nil)
	}
	if strings.HasSuffix(pw, "\n") {
		pw = strings.TrimSuffix(strings.TrimSuffix(pw, "\n"), "\r")
	}
	if err := password.Check(pw); err != nil {
		var pe *password.Error
		if errors.As(err, &pe) {
			return o.print("password-"+string(pe.Rule), passwordExit[pe.Rule], "new password refused: "+pe.Message, nil)
		}
		return o.fail(verifier.Internal, "%v", err)
	}
	return o.print("password-ok", 0, "the new password meets the policy", nil)
}

// parseMono is the monotonic reading given by --boot-id and --uptime.
func parseMono(id string, uptime float64) (verifier.Mono, error) {
	var m verifier.Mono
	b, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	if err != nil || len(b) != 16 || uptime < 0 {
		return m, fmt.Errorf("--boot-id %q --uptime %v: expected both, a UUID and seconds since boot", id, uptime)
	}
	copy(m.Boot[:], b)
	m.Uptime = time.Duration(uptime * float64(time.Second))
	return m, nil
}
