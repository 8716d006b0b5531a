package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dvrhotline/hotline/agent/serial"
	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/cmd/internal/cli"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/keyring"
)

// errUsage means the flag package already printed the problem.
var errUsage = errors.New("usage")

// common holds the flags every subcommand takes.
type common struct {
	keyring     string
	databaseURL string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.keyring, "keyring", os.Getenv("HOTLINE_KEYRING"), "keyring folder (env HOTLINE_KEYRING)")
	fs.StringVar(&c.databaseURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL (env DATABASE_URL)")
}

func (c *common) openKeyring() (*keyring.Keyring, error) {
	if c.keyring == "" {
		return nil, errors.New("no keyring: pass --keyring DIR or set HOTLINE_KEYRING (create one with `hotline-server keys init`)")
	}
	return keyring.Open(c.keyring)
}

// openMasterKeys opens the keyring for deriving device keys: a full one,
// or a factory's master-keys-only folder (keys export-masters).
func (c *common) openMasterKeys() (*keyring.Keyring, error) {
	if c.keyring == "" {
		return nil, errors.New("no keyring: pass --keyring DIR or set HOTLINE_KEYRING (a factory's folder from `hotline-server keys export-masters`)")
	}
	return keyring.OpenMasters(c.keyring)
}

func (c *common) needDatabase() error {
	if c.databaseURL == "" {
		return errors.New("no database: pass --database-url or set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/hotline)")
	}
	return nil
}

// parse parses flags anywhere on the line (before or after the positional
// arguments, as in "keys device-key SERIAL --keyring DIR"); fs.Args() then
// holds the positional arguments in order.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return errUsage
	}
	return fs.Parse(append([]string{"--"}, pos...)) // fs.Args() is pos from now on
}
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: hotline-server keys init|device-key|device-keys|export-masters|jwks|rotate|retire|revoke [flags]")
		return errUsage
	}
	var c common
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	c.register(fs)
	switch args[0] {
	case "init":
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		if c.keyring == "" {
			return errors.New("pass --keyring DIR or set HOTLINE_KEYRING: the folder to create")
		}
		k, err := keyring.Init(c.keyring)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created keyring %s: master key generation %d, grant, staff and audit signing keys\n", k.Dir(), k.CurrentGeneration())
		return nil
	case "device-key":
		gen := fs.Int("generation", 0, "master-key generation (default: the current one, for a new device)")
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: hotline-server keys device-key SERIAL")
		}
		s, err := serial.Canonical(fs.Arg(0))
		if err != nil {
			return err
		}
		k, err := c.openMasterKeys()
		if err != nil {
			return err
		}
		g := *gen
		if g == 0 {
			g = k.CurrentGeneration()
		}
		dk, err := k.DeviceKey(s, g)
		if err != nil {
			return err
		}
		b, err := voicecode.MarshalKeyFile(s, dk)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	case "jwks", "staff-jwks":
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		k, err := c.openKeyring()
		if err != nil {
			return err
		}
		set := k.GrantJWKS
		if args[0] == "staff-jwks" {
			set = k.StaffJWKS
		}
		b, err := set()
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	return keysLifecycle(ctx, args, &c, fs, stdout, stderr)
}

func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	c.register(fs)
	subject := fs.String("subject", "", "the staff member's login (sub claim)")
	role := fs.String("role", "", "agent, supervisor, auditor or provisioner")
	ttl := fs.Duration("ttl", 12*time.Hour, "token lifetime")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if *subject == "" {
		return errors.New("--subject is required: the staff member's login, e.g. --subject alice")
	}
	if !server.Role(*role).Valid() {
		return fmt.Errorf("--role %q: expected agent, supervisor, auditor or provisioner", *role)
	}
	k, err := c.openKeyring()
	if err != nil {
		return err
	}
	kid, key := k.StaffSigner()
	iss, err := server.NewStaffIssuer(kid, key)
	if err != nil {
		return err
	}
	tok, err := iss.Issue(*subject, server.Role(*role), *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
