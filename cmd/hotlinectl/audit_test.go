package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/audit"
)

// The test audit key, which serve's audit log trusts.
var (
	auditKID = "audit-ctl-1"
	auditKey = func() ed25519.PrivateKey {
		s := sha256.Sum256([]byte("hotlinectl audit key"))
		return ed25519.NewKeyFromSeed(s[:])
	}()
)

// sealNow runs the sealer once, as every server does every few seconds.
func sealNow(t *testing.T) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := audit.NewSealer(pool, auditKID, auditKey).SealOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestAuditCommands walks through what an auditor does: export, summary,
// checkpoint kept in a file, verify against it; then an owner changes an
// event and verify exits 4 naming it.
func TestAuditCommands(t *testing.T) {
	addr, iss := serve(t)
	var r [5]byte
	rand.Read(r[:])
	sn := fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%X", r)
	prov, agent, auditor := token(t, iss, server.RoleProvisioner), token(t, iss, server.RoleAgent), token(t, iss, server.RoleAuditor)
	if code, _, errs := run(t, addr, prov, "devices", "add", sn, "--model", "WBXHD041S1T", "--owner", "jane@example.com", "--firmware", "V4.0.1"); code != 0 {
		t.Fatalf("devices add: %d %s", code, errs)
	}
	for i := range 2 {
		if code, _, errs := run(t, addr, agent, "issue", sn, "--ticket", "T-"+strconv.Itoa(i), "--verified-by", "proof-of-purchase"); code != 0 {
			t.Fatalf("issue: %d %s", code, errs)
		}
	}

	t.Run("export", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "events.jsonl")
		code, stdout, errs := run(t, addr, auditor, "audit", "export", "--serial", sn, "--since", "1h", "--out", out)
		if code != exitOK || stdout != "" || !strings.Contains(errs, "exported 3 events to "+out) {
			t.Fatalf("audit export: %d %q %q", code, stdout, errs)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var actions []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			if ev["serial"] != sn {
				t.Errorf("event %v", ev)
			}
			actions = append(actions, ev["action"].(string))
		}
		if strings.Join(actions, " ") != "device.register recovery.issue recovery.issue" {
			t.Errorf("exported %v, want register then two issues, oldest first", actions)
		}
		if code, _, errs := run(t, addr, agent, "audit", "export"); code != exitFailed || !strings.Contains(errs, "permission denied") {
			t.Errorf("agent export: %d %s", code, errs)
		}
	})

	t.Run("summary", func(t *testing.T) {
		code, out, errs := run(t, addr, auditor, "audit", "summary", "--since", "1h")
		if code != exitOK || !strings.Contains(out, "DEVICES ISSUED TWO OR MORE CODES") || !strings.Contains(out, sn) {
			t.Fatalf("audit summary: %d %s\n%s", code, errs, out)
		}
		code, out, _ = run(t, addr, auditor, "audit", "summary", "--since", "1h", "-o", "json")
		var sum struct {
			Repeated []struct {
				Serial string `json:"serial"`
				Count  string `json:"count"` // int64 is a JSON string in protojson
			} `json:"repeated_devices"`
		}
		if err := json.Unmarshal([]byte(out), &sum); code != exitOK || err != nil {
			t.Fatalf("audit summary -o json: %d %v\n%s", code, err, out)
		}
		found := false
		for _, d := range sum.Repeated {
			found = found || d.Serial == sn && d.Count == "2"
		}
		if !found {
			t.Errorf("repeated devices %v lack %s with 2", sum.Repeated, sn)
		}
	})

	sealNow(t)
	cpFile := filepath.Join(t.TempDir(), "checkpoint.txt")
	t.Run("checkpoint-and-verify", func(t *testing.T) {
		code, out, errs := run(t, addr, auditor, "audit", "checkpoint")
		if code != exitOK || !strings.HasPrefix(out, "hotline audit checkpoint v1\n") {
			t.Fatalf("audit checkpoint: %d %s\n%s", code, errs, out)
		}
		if err := os.WriteFile(cpFile, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, errs = run(t, addr, auditor, "audit", "verify", "--checkpoint", cpFile)
		if code != exitOK || !strings.Contains(out, "OK: the audit log verified") || !strings.Contains(out, "matches the chain") {
			t.Fatalf("audit verify: %d %s\n%s", code, errs, out)
		}
		bad := filepath.Join(t.TempDir(), "bad.txt")
		os.WriteFile(bad, []byte(strings.Replace(out, "a", "b", 1)+"x"), 0o600)
		if code, _, errs := run(t, addr, auditor, "audit", "verify", "--checkpoint", bad); code != exitFailed || !strings.Contains(errs, "fix --checkpoint") {
			t.Errorf("verify with a malformed checkpoint: %d %s", code, errs)
		}
	})

	t.Run("verify-names-a-changed-event", func(t *testing.T) {
		ctx := context.Background()
		owner, err := pgx.Connect(ctx, testURL)
		if err != nil {
			t.Fatal(err)
		}
		defer owner.Close(ctx)
		var id int64
		if err := owner.QueryRow(ctx, `SELECT e.id FROM audit_events e JOIN audit_seals s ON s.event_id = e.id
			WHERE e.serial = $1 AND e.ticket = 'T-1'`, sn).Scan(&id); err != nil {
			t.Fatal(err)
		}
		set := func(ticket string) {
			for _, q := range []string{"ALTER TABLE audit_events DISABLE TRIGGER USER",
				fmt.Sprintf("UPDATE audit_events SET ticket = '%s' WHERE id = %d", ticket, id),
				"ALTER TABLE audit_events ENABLE TRIGGER USER"} {
				if _, err := owner.Exec(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
		}
		set("T-9")
		defer set("T-1")
		code, out, errs := run(t, addr, auditor, "audit", "verify", "--checkpoint", cpFile)
		ids := strconv.FormatInt(id, 10)
		if code != exitBadLog || !strings.Contains(out, "FAILED: changed") || !strings.Contains(errs, "the first bad event is "+ids) {
			t.Fatalf("audit verify after changing event %d: exit %d (want %d)\n%s\n%s", id, code, exitBadLog, out, errs)
		}
		code, out, _ = run(t, addr, token(t, iss, server.RoleSupervisor), "audit", "verify", "-o", "json")
		if code != exitBadLog || !strings.Contains(out, `"event_id": "`+ids+`"`) {
			t.Errorf("audit verify -o json: exit %d\n%s", code, out)
		}
	})
}
