package postgres_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dvrhotline/hotline/server"
)

func TestAudit(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	s := "ZZZZZZ#2020-01-01#1#AUDITAUDITAUD"
	e := server.AuditEvent{Actor: newName("a"), Role: server.RoleAgent, ClientAddr: "10.1.1.1:1",
		Action: server.ActionIssue, Outcome: server.OutcomeRefused, Serial: s, Ticket: "T-9",
		Method: server.VerifyProofOfPurchase, Reason: "r", RequestID: "req-1", Detail: "permission_denied"}
	t.Run("success/standalone-refusal", func(t *testing.T) {
		if err := db.Audit(ctx, e); err != nil {
			t.Fatal(err)
		}
		got := lastEvent(t, db, s)
		if got.ID == 0 || got.Time.IsZero() {
			t.Errorf("event %+v has no id or time", got)
		}
		got.ID, got.Time = 0, time.Time{}
		if got != e {
			t.Errorf("stored %+v, read %+v", e, got)
		}
	})
	bad := []struct {
		name  string
		edit  func(*server.AuditEvent)
		field string
	}{
		{"invalid/no-action", func(e *server.AuditEvent) { e.Action = "" }, "action"},
		{"invalid/malformed-action", func(e *server.AuditEvent) { e.Action = "Drop Table" }, "action"},
		{"invalid/unknown-outcome", func(e *server.AuditEvent) { e.Outcome = "maybe" }, "outcome"},
		{"invalid/unknown-method", func(e *server.AuditEvent) { e.Method = 7 }, "method"},
		{"invalid/unknown-issuance", func(e *server.AuditEvent) { e.IssuanceID = uuid() }, "issuance_id"},
		{"invalid/issuance-success-without-issuance", func(e *server.AuditEvent) { e.Outcome = server.OutcomeSuccess }, "issuance_id"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			e := e
			tt.edit(&e)
			if se := wantCode(t, db.Audit(ctx, e), server.EInvalid); se.Field != tt.field {
				t.Errorf("field %q, want %q", se.Field, tt.field)
			}
		})
	}
}

func TestQueryAudit(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	actor := newName("q")
	serials := []string{"QQQQQQ#2020-01-01#1#QUERYQUERY01", "QQQQQQ#2020-01-01#1#QUERYQUERY02"}
	// 12 events: two serials, alternating outcomes, two actions.
	for i := range 12 {
		e := server.AuditEvent{Actor: actor, Role: server.RoleAgent, Action: server.ActionLookup,
			Outcome: server.OutcomeSuccess, Serial: serials[i%2], Detail: "n=" + string(rune('a'+i))}
		if i%3 == 0 {
			e.Outcome = server.OutcomeRefused
		}
		if i >= 8 {
			e.Action = server.ActionOwnerCheck
		}
		if err := db.Audit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	auditor := server.Actor{Subject: newName("auditor"), Role: server.RoleAuditor}
	all, err := db.QueryAudit(ctx, auditor, server.AuditFilter{Actor: actor})
	if err != nil || len(all) != 12 {
		t.Fatalf("QueryAudit(actor) = %d events, %v", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		p, c := all[i-1], all[i]
		if c.Time.After(p.Time) || (c.Time.Equal(p.Time) && c.ID > p.ID) {
			t.Fatalf("not newest first: %+v before %+v", p, c)
		}
	}

	t.Run("success/keyset-pages-cover-everything-once", func(t *testing.T) {
		f := server.AuditFilter{Actor: actor, Limit: 5}
		var got []server.AuditEvent
		for page := 0; ; page++ {
			evs, err := db.QueryAudit(ctx, auditor, f)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, evs...)
			if len(evs) < f.Limit {
				break
			}
			last := evs[len(evs)-1]
			f.AfterTime, f.AfterID = last.Time, last.ID
			if page > 5 {
				t.Fatal("too many pages")
			}
		}
		if len(got) != len(all) {
			t.Fatalf("paged %d events, want %d", len(got), len(all))
		}
		for i := range got {
			if got[i].ID != all[i].ID {
				t.Fatalf("page order differs at %d", i)
			}
		}
	})

	filters := []struct {
		name string
		f    server.AuditFilter
		want func(server.AuditEvent) bool
	}{
		{"success/by-serial-and-actor", server.AuditFilter{Actor: actor, Serial: serials[0]},
			func(e server.AuditEvent) bool { return e.Serial == serials[0] }},
		{"success/by-outcome", server.AuditFilter{Actor: actor, Outcome: server.OutcomeRefused},
			func(e server.AuditEvent) bool { return e.Outcome == server.OutcomeRefused }},
		{"success/by-action-serial-outcome", server.AuditFilter{Actor: actor, Serial: serials[1], Action: server.ActionOwnerCheck, Outcome: server.OutcomeRefused},
			func(e server.AuditEvent) bool {
				return e.Serial == serials[1] && e.Action == server.ActionOwnerCheck && e.Outcome == server.OutcomeRefused
			}},
		{"success/by-time-range", server.AuditFilter{Actor: actor, From: all[8].Time, To: all[2].Time},
			func(e server.AuditEvent) bool { return !e.Time.Before(all[8].Time) && e.Time.Before(all[2].Time) }},
		{"success/by-serial-only", server.AuditFilter{Serial: serials[1], Limit: 1000},
			func(e server.AuditEvent) bool { return e.Serial == serials[1] }},
	}
	for _, tt := range filters {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.QueryAudit(ctx, auditor, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var want []int64
			for _, e := range all {
				if tt.want(e) {
					want = append(want, e.ID)
				}
			}
			if len(got) != len(want) || len(want) == 0 {
				t.Fatalf("got %d events, want %d (non-zero)", len(got), len(want))
			}
			for i := range got {
				if got[i].ID != want[i] {
					t.Fatalf("event %d is %d, want %d", i, got[i].ID, want[i])
				}
			}
		})
	}

	t.Run("success/the-query-is-audited", func(t *testing.T) {
		evs, err := db.QueryAudit(ctx, auditor, server.AuditFilter{Actor: auditor.Subject, Action: server.ActionAuditQuery})
		if err != nil {
			t.Fatal(err)
		}
		// One per query above (the first, five pages, five filters), this one not yet.
		if len(evs) != 1+3+len(filters) || evs[0].Outcome != server.OutcomeSuccess ||
			evs[0].Detail != "serial="+serials[1]+" n=6" || evs[len(evs)-1].Detail != "actor="+actor+" n=12" {
			t.Fatalf("audit.query events = %+v", evs)
		}
	})
}

// TestAuditEventsAppendOnly checks the trigger: even the database owner
// cannot change, delete or truncate events; only the sealer's one-time
// setting of seal_seq and hash passes.
func TestAuditEventsAppendOnly(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	owner := ownerConn(t)
	s := "AAAAAA#2020-01-01#1#APPENDONLY01"
	if err := db.Audit(ctx, server.AuditEvent{Actor: "x", Role: server.RoleAgent, Action: server.ActionLookup,
		Outcome: server.OutcomeSuccess, Serial: s}); err != nil {
		t.Fatal(err)
	}
	id := lastEvent(t, db, s).ID

	steps := []struct {
		name, sql string
		rule      string // "" when it must pass
	}{
		{"refused/update-a-field", `UPDATE audit_events SET outcome = 'refused' WHERE id = $1`, "UPDATE"},
		{"refused/update-the-time", `UPDATE audit_events SET at = at - interval '1 day' WHERE id = $1`, "UPDATE"},
		{"refused/delete", `DELETE FROM audit_events WHERE id = $1`, "DELETE is forbidden"},
		{"refused/truncate", `TRUNCATE audit_events CASCADE`, "TRUNCATE is forbidden"},
	}
	// While the seal lives in audit_events (migration 1), the sealer's one
	// UPDATE passes and nothing else does; a later migration may move the
	// seal out and forbid every UPDATE.
	var inlineSeal bool
	owner.QueryRow(ctx, `SELECT EXISTS (SELECT FROM information_schema.columns
		WHERE table_name = 'audit_events' AND column_name = 'seal_seq')`).Scan(&inlineSeal)
	if inlineSeal {
		steps = append(steps, []struct{ name, sql, rule string }{
			{"refused/seal-and-change-a-field", `UPDATE audit_events SET seal_seq = 1000000, hash = '\x01', actor = 'y' WHERE id = $1`, "only seal_seq and hash"},
			{"refused/seal-half", `UPDATE audit_events SET seal_seq = 1000000 WHERE id = $1`, "may only seal"},
			{"success/seal-once", `UPDATE audit_events SET seal_seq = 1000000, hash = '\x01' WHERE id = $1`, ""},
			{"refused/seal-again", `UPDATE audit_events SET seal_seq = 1000001, hash = '\x02' WHERE id = $1`, "already sealed"},
			{"refused/delete-sealed", `DELETE FROM audit_events WHERE id = $1`, "DELETE is forbidden"},
		}...)
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var err error
			if strings.Contains(st.sql, "$1") {
				_, err = owner.Exec(ctx, st.sql, id)
			} else {
				_, err = owner.Exec(ctx, st.sql)
			}
			if st.rule == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			pe, ok := err.(*pgconn.PgError)
			if !ok || !strings.Contains(pe.Message, "append-only") || !strings.Contains(pe.Message, st.rule) {
				t.Fatalf("err = %v, want the append-only rule %q", err, st.rule)
			}
		})
	}
	if got := lastEvent(t, db, s); got.Outcome != server.OutcomeSuccess || got.Actor != "x" {
		t.Errorf("event changed: %+v", got)
	}
}

// TestNoColumnStoresACode: the server never stores a code. No column is
// named like one, and the only binary columns are the audit log's hashes
// and checkpoint signatures, the SHA-256 of console session ids, and an
// issuance's proof (an HMAC under a key of its own over the issuance's
// fields: it reveals no code).
func TestNoColumnStoresACode(t *testing.T) {
	ctx := context.Background()
	owner := ownerConn(t)
	rows, err := owner.Query(ctx, `SELECT table_name, column_name, data_type FROM information_schema.columns
		WHERE table_schema = 'public' AND table_name <> 'goose_db_version'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	codeLike := regexp.MustCompile(`code|passw|otp|pin$|secret|voice|grant|token|mac$|key$|jwt|credential`)
	n := 0
	for rows.Next() {
		var table, col, typ string
		if err := rows.Scan(&table, &col, &typ); err != nil {
			t.Fatal(err)
		}
		n++
		if codeLike.MatchString(col) {
			t.Errorf("%s.%s looks like it stores a code or a secret", table, col)
		}
		consoleHash := table == "console_sessions" && col == "id_hash"
		if typ == "bytea" && !consoleHash && !(strings.HasPrefix(table, "audit_") && (col == "hash" || col == "head" || col == "signature")) &&
			!(table == "issuances" && col == "proof") {
			t.Errorf("%s.%s is binary: what is in it?", table, col)
		}
	}
	if n < 30 {
		t.Fatalf("only %d columns seen", n)
	}
}

// TestExportAudit: oldest first, every match, the export recorded before
// it, and a callback's error stops it.
func TestExportAudit(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	actor := newName("x")
	for i := range 5 {
		if err := db.Audit(ctx, server.AuditEvent{Actor: actor, Role: server.RoleAgent, Action: server.ActionLookup,
			Outcome: server.OutcomeSuccess, Detail: "i=" + string(rune('0'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	exporter := server.Actor{Subject: newName("e"), Role: server.RoleAuditor}
	var got []string
	err := db.ExportAudit(ctx, exporter, server.AuditFilter{Actor: actor}, func(e server.AuditEvent) error {
		got = append(got, e.Detail)
		return nil
	})
	if err != nil || strings.Join(got, ",") != "i=0,i=1,i=2,i=3,i=4" {
		t.Fatalf("exported %v, %v; want the five events oldest first", got, err)
	}
	stop := errors.New("stop")
	n := 0
	err = db.ExportAudit(ctx, exporter, server.AuditFilter{Actor: actor}, func(server.AuditEvent) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("a callback error: %v after %d events", err, n)
	}
	evs, err := db.QueryAudit(ctx, server.Actor{Subject: newName("a"), Role: server.RoleAuditor},
		server.AuditFilter{Actor: exporter.Subject, Action: server.ActionAuditExport})
	if err != nil || len(evs) != 2 || evs[0].Detail != "actor="+actor || evs[0].Role != server.RoleAuditor {
		t.Fatalf("export events %+v, %v", evs, err)
	}
}
