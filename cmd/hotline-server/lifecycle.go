package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/serial"
	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/cmd/internal/wiring"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/postgres"
)

// batchLog is the file in the keyring folder that records every batch of
// device keys derived for the factory.
const batchLog = "device-key-batches.jsonl"

// keysLifecycle runs the key-lifecycle subcommands: device-keys,
// export-masters, rotate, retire, revoke, list.
func keysLifecycle(ctx context.Context, args []string, c *common, fs *flag.FlagSet, stdout, stderr io.Writer) error {
	switch args[0] {
	case "device-keys":
		serials := fs.String("serials", "", "file of serials, one per line (blank lines and # comments skipped)")
		out := fs.String("out", "", "output file (JSON lines, one device key file per line; must not exist)")
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		return deviceKeys(ctx, c, *serials, *out, stdout)
	case "rotate":
		purpose := fs.String("purpose", "", "master, grant, staff or audit")
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		k, err := c.openKeyring()
		if err != nil {
			return err
		}
		name, err := k.Rotate(*purpose)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "added %s; new issuances use it", name)
		if *purpose == "master" {
			fmt.Fprint(stdout, " for devices provisioned from now on (older devices keep their generation)")
		}
		fmt.Fprintln(stdout, "; running servers load it on SIGHUP or at their next keyring check (--keyring-poll, default "+wiring.DefaultKeyringPoll.String()+")")
		return nil
	case "retire":
		kid := fs.String("kid", "", "signing key to retire, e.g. grant-1")
		gen := fs.Int("generation", 0, "master-key generation to destroy")
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		return retire(ctx, c, *kid, *gen, stdout)
	case "export-masters":
		out := fs.String("out", "", "new folder for the factory: the master keys alone")
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		if *out == "" {
			return errors.New("usage: hotline-server keys export-masters --out DIR (a new folder for the flashing station)")
		}
		k, err := c.openKeyring()
		if err != nil {
			return err
		}
		if err := k.ExportMasters(*out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote master generations %v (no signing key) to %s: give the flashing station that folder, for keys device-keys --keyring %s\n", k.Generations(), *out, *out)
		return nil
	case "revoke":
		kid := fs.String("kid", "", "staff signing key to destroy at once, e.g. staff-1")
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		k, err := c.openKeyring()
		if err != nil {
			return err
		}
		if err := k.RevokeStaff(*kid); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s: tokens it signed are refused by every server started (or reloaded) from now on\n", *kid)
		return nil
	case "list":
		if err := parse(fs, args[1:], stderr); err != nil {
			return err
		}
		k, err := c.openKeyring()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "master generations: %v (current %d)\n", k.Generations(), k.CurrentGeneration())
		for _, s := range k.SigningKeys() {
			state := "active"
			if s.Retired != nil {
				state = "retired " + s.Retired.Format(time.RFC3339)
			}
			fmt.Fprintf(stdout, "%-10s %-8s created %s  %s\n", s.KID, s.Purpose, s.Created.Format(time.RFC3339), state)
		}
		return nil
	}
	fmt.Fprintf(stderr, "hotline-server keys: unknown command %q: expected init, list, device-key, device-keys, export-masters, jwks, staff-jwks, rotate, retire, revoke\n", args[0])
	return errUsage
}

func retire(ctx context.Context, c *common, kid string, gen int, stdout io.Writer) error {
	if (kid == "") == (gen == 0) {
		return errors.New("pass exactly one of --kid KID (a signing key) or --generation N (a master key)")
	}
	k, err := c.openKeyring()
	if err != nil {
		return err
	}
	if kid != "" {
		if err := k.CheckRetireSigning(kid); err != nil {
			return err
		}
	}
	needDB := gen != 0 || strings.HasPrefix(kid, keyring.PurposeGrant+"-")
	var db *postgres.DB
	if needDB {
		if err := c.needDatabase(); err != nil {
			return fmt.Errorf("%v: retiring needs the registry to check that nothing still depends on the key", err)
		}
		if db, err = postgres.Open(ctx, c.databaseURL); err != nil {
			return err
		}
		defer db.Close()
	}
	if gen != 0 {
		n, err := db.DevicesUnderGeneration(ctx, gen)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("refused: %d devices are provisioned under master generation %d; destroying it would strand them (their codes could no longer be issued)", n, gen)
		}
		if err := k.RetireMaster(gen); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "destroyed master generation %d; running servers refuse to reload a keyring without it and hold it until they restart\n", gen)
		return nil
	}
	if db != nil {
		n, last, err := db.LiveGrants(ctx, kid, time.Now())
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("refused: %d grants signed by %s are still live (the last expires %s); DVRs need its public key until then", n, kid, last.UTC().Format(time.RFC3339))
		}
	}
	if err := k.RetireSigning(kid); err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(kid, keyring.PurposeGrant+"-"):
		fmt.Fprintf(stdout, "retired %s: it signs no more grants and leaves the published JWK set within %s\n", kid, grant.MaxLifetime)
	case strings.HasPrefix(kid, keyring.PurposeAudit+"-"):
		fmt.Fprintf(stdout, "retired %s: it signs no more checkpoints once the servers restart (their sealers keep the audit key they started with) and stays trusted for verifying old ones\n", kid)
	default:
		fmt.Fprintf(stdout, "retired %s\n", kid)
	}
	return nil
}

// deviceKeys derives a batch of device keys offline for a factory flashing
// station. The whole batch is refused when any serial is bad, so a station
// never flashes half a list; the output file must not exist yet.
func deviceKeys(ctx context.Context, c *common, serialsPath, outPath string, stdout io.Writer) error {
	if serialsPath == "" || outPath == "" {
		return errors.New("usage: hotline-server keys device-keys --serials FILE --out FILE")
	}
	k, err := c.openMasterKeys()
	if err != nil {
		return err
	}
	in, err := os.ReadFile(serialsPath)
	if err != nil {
		return err
	}
	var (
		list []string
		bad  []string
		seen = map[string]int{}
	)
	sc := bufio.NewScanner(bytes.NewReader(in))
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		s, err := serial.Canonical(t)
		if err != nil {
			bad = append(bad, fmt.Sprintf("line %d: %v", line, err))
			continue
		}
		if prev, dup := seen[s]; dup {
			bad = append(bad, fmt.Sprintf("line %d: %s repeats line %d", line, s, prev))
			continue
		}
		seen[s] = line
		list = append(list, s)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("refused the whole batch: %d bad lines, no key written:\n  %s", len(bad), strings.Join(bad, "\n  "))
	}
	if len(list) == 0 {
		return fmt.Errorf("no serials in %s: expected one serial per line, like JZ6OES#2017-08-01#3#DVR1101134C08011", serialsPath)
	}
	gen := k.CurrentGeneration()
	var buf bytes.Buffer
	for _, s := range list {
		dk, err := k.DeviceKey(s, gen)
		if err != nil {
			return err
		}
		b, err := voicecode.MarshalKeyFile(s, dk)
		if err != nil {
			return err
		}
		if err := json.Compact(&buf, b); err != nil {
			return err
		}
		buf.WriteByte('\n')
	}
	f, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%v (refusing to overwrite an earlier batch)", err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	inSum, outSum := sha256.Sum256(in), sha256.Sum256(buf.Bytes())
	rec := map[string]any{
		"at": time.Now().UTC().Format(time.RFC3339), "count": len(list), "generation": gen,
		"serials_file": serialsPath, "serials_sha256": hex.EncodeToString(inSum[:]),
		"out_file": outPath, "out_sha256": hex.EncodeToString(outSum[:]),
		"operator": os.Getenv("USER"),
	}
	line, _ := json.Marshal(rec)
	lf, err := os.OpenFile(filepath.Join(k.Dir(), batchLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	_, werr := lf.Write(append(line, '\n'))
	if err := lf.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return werr
	}
	if c.databaseURL != "" {
		db, err := postgres.Open(ctx, c.databaseURL)
		if err != nil {
			return fmt.Errorf("keys written, but the batch could not be recorded in the audit log: %w", err)
		}
		defer db.Close()
		err = db.Audit(ctx, server.AuditEvent{
			Actor: "factory:" + os.Getenv("USER"), Role: server.RoleProvisioner, Action: server.ActionKeysDeviceKeys,
			Outcome: server.OutcomeSuccess,
			Detail:  fmt.Sprintf("count=%d generation=%d serials_sha256=%x out_sha256=%x", len(list), gen, inSum, outSum),
		})
		if err != nil {
			return fmt.Errorf("keys written, but the batch could not be recorded in the audit log: %w", err)
		}
	}
	fmt.Fprintf(stdout, "wrote %d device keys (generation %d) to %s; batch recorded in %s\n", len(list), gen, outPath, filepath.Join(k.Dir(), batchLog))
	return nil
}
