package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/server"
)

// TestTicketsThatForgeLinesAreRefusedAndNeverPrinted: an agent gives a
// ticket with an embedded newline followed by what looks like another
// staff member's issuance, or with a right-to-left override: the server
// refuses both. Text stored before that rule (put there by the database
// owner here) is printed escaped by `audit query` and `history`: one
// event, one line.
func TestTicketsThatForgeLinesAreRefusedAndNeverPrinted(t *testing.T) {
	addr, iss := serve(t)
	var r [5]byte
	rand.Read(r[:])
	sn := fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%X", r)
	prov, agent, auditor := token(t, iss, server.RoleProvisioner), token(t, iss, server.RoleAgent), token(t, iss, server.RoleAuditor)
	if code, _, errs := run(t, addr, prov, "devices", "add", sn, "--model", "WBXHD041S1T", "--owner", "jane@example.com", "--firmware", "V4.0.1"); code != 0 {
		t.Fatalf("devices add: %d %s", code, errs)
	}
	const forged = "T-1\n2026-12-01T10:00:00Z  bob  agent  recovery.issue  success  " // what the attacker wants to be read
	for name, ticket := range map[string]string{"newline": forged, "rtl-override": "T-\u202e1004", "nul": "T-\x001"} {
		code, _, errs := run(t, addr, agent, "issue", sn, "--ticket", ticket, "--verified-by", "proof-of-purchase")
		if code != exitFailed || !strings.Contains(errs, "ticket") || !strings.Contains(errs, "control characters") {
			t.Errorf("%s: issue exit %d %q, want a refusal naming the ticket", name, code, errs)
		}
	}

	if code, _, errs := run(t, addr, agent, "issue", sn, "--ticket", "T-2", "--verified-by", "proof-of-purchase"); code != 0 {
		t.Fatalf("issue: %d %s", code, errs)
	}
	owner, err := pgx.Connect(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(context.Background())
	if _, err := owner.Exec(context.Background(), `UPDATE issuances SET ticket = $2 WHERE serial = $1`, sn, forged+"\u202e"); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(context.Background(), `INSERT INTO audit_events (actor, role, action, outcome, serial, ticket)
		VALUES ('mallory', 'agent', 'device.lookup', 'success', $1, $2)`, sn, forged); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{{"audit", "query", "--serial", sn, "--since", "1h"}, {"history", sn}} {
		tok := auditor
		if args[0] == "history" {
			tok = agent
		}
		code, out, errs := run(t, addr, tok, args...)
		if code != 0 {
			t.Fatalf("%v: %d %s", args, code, errs)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "2026-12-01T10:00:00Z") || strings.ContainsRune(line, '\u202e') {
				t.Errorf("%v printed a forged or reordering line:\n%s", args, out)
			}
		}
		if !strings.Contains(out, `T-1\n2026-12-01T10:00:00Z`) {
			t.Errorf("%v does not show the stored ticket escaped:\n%s", args, out)
		}
	}
}

// TestPrintable: what escaping makes of each kind of character.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"T-1001":           "T-1001",
		"a\nb":             `a\nb`,
		"a\tb":             `a\tb`,
		"\x1b[2J":          `\x1b[2J`,
		"x\u202ey":         `x\u202ey`,
		"x\u2066y\u2069":   `x\u2066y\u2069`,
		"line\u2028sep":    `line\u2028sep`,
		`back\slash`:       `back\\slash`,
		"bad\xffutf8":      `bad\xffutf8`,
		"Müller, 東京":       "Müller, 東京",
		"\u200fRLM":        `\u200fRLM`,
		"nul\x00":          `nul\x00`,
		"del\x7f":          `del\x7f`,
		"c1\u009b31m":      `c1\u009b31m`,
		"\ufffdreplace_ok": `\ufffdreplace_ok`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzPrintable: whatever the server sends, what is printed is valid
// UTF-8 with no character a terminal acts on.
func FuzzPrintable(f *testing.F) {
	for _, s := range []string{"T-1\nbob", "\u202e", "\x1b]0;x\x07", "\xff\xfe", `\n`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := printable(s)
		if !strings.Contains(p, "\\") && p != s {
			t.Fatalf("printable(%q) = %q changed text without an escape", s, p)
		}
		for _, r := range p {
			if r != '\\' && unsafeRune(r) {
				t.Fatalf("printable(%q) = %q keeps %U", s, p, r)
			}
		}
	})
}
