package postgres_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/postgres"
)

// ownerConn is a plain connection as the database owner, for setting up
// states the Store API cannot reach and for tampering.
func ownerConn(tb testing.TB) *pgx.Conn {
	tb.Helper()
	return ownerConnTo(tb, testURL)
}

func ownerConnTo(tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// eventsFor returns the device's audit events, oldest first.
func eventsFor(tb testing.TB, db *postgres.DB, serial string) []server.AuditEvent {
	tb.Helper()
	evs, err := db.QueryAudit(context.Background(), server.Actor{Subject: "auditor", Role: server.RoleAuditor},
		server.AuditFilter{Serial: serial, Limit: 1000})
	if err != nil {
		tb.Fatal(err)
	}
	slices.Reverse(evs)
	return evs
}

// lastEvent returns the device's newest audit event.
func lastEvent(tb testing.TB, db *postgres.DB, serial string) server.AuditEvent {
	tb.Helper()
	evs := eventsFor(tb, db, serial)
	if len(evs) == 0 {
		tb.Fatalf("no audit event for %s", serial)
	}
	return evs[len(evs)-1]
}

func TestModels(t *testing.T) {
	db := openDB(t)
	ms, err := db.Models(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]server.Model{
		"WBXHD041S1T": {Code: "WBXHD041S1T", Channels: 4, Drives: 1, ShipsWithDrive: true},
		"WBXHD041S":   {Code: "WBXHD041S", Channels: 4, Drives: 1},
		"WBXHD082S2T": {Code: "WBXHD082S2T", Channels: 8, Drives: 2, ShipsWithDrive: true},
		"WBXHD082S":   {Code: "WBXHD082S", Channels: 8, Drives: 2},
		"WBXHD162S4T": {Code: "WBXHD162S4T", Channels: 16, Drives: 2, ShipsWithDrive: true},
		"WBXHD162S":   {Code: "WBXHD162S", Channels: 16, Drives: 2},
	}
	if len(ms) != len(want) {
		t.Fatalf("got %d models, want %d: %+v", len(ms), len(want), ms)
	}
	for _, m := range ms {
		w, ok := want[m.Code]
		if !ok || m.Channels != w.Channels || m.Drives != w.Drives || m.ShipsWithDrive != w.ShipsWithDrive || m.Description == "" {
			t.Errorf("model %+v, want %+v and a description", m, w)
		}
	}
}

func TestRegisterDevice(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	taken := registerDevice(t, db, "owner@example.com")
	takenID := taken[strings.LastIndexByte(taken, '#')+1:]

	tests := []struct {
		name    string
		dev     func() server.Device
		code    server.Code // "" for success
		field   string
		audited bool
	}{
		{"success", func() server.Device {
			return server.Device{Serial: newSerial(), Model: "WBXHD162S", OwnerContact: "+44 20 7946 0000", Firmware: "V1"}
		}, "", "", true},
		{"refused/unknown-model", func() server.Device {
			return server.Device{Serial: newSerial(), Model: "WBXHD999S"}
		}, server.EInvalid, "model", true},
		{"refused/duplicate-serial", func() server.Device {
			return server.Device{Serial: taken, Model: "WBXHD041S"}
		}, server.EConflict, "serial", true},
		{"refused/duplicate-device-id", func() server.Device {
			return server.Device{Serial: "ABCDEF#2018-01-02#1#" + takenID, Model: "WBXHD041S"}
		}, server.EConflict, "serial", true},
		{"refused/production-date-differs-from-serial", func() server.Device {
			return server.Device{Serial: newSerial(), Model: "WBXHD041S", ProductionDate: time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)}
		}, server.EInvalid, "production_date", true},
		{"invalid/non-canonical-serial", func() server.Device {
			return server.Device{Serial: strings.ToLower(newSerial()), Model: "WBXHD041S"}
		}, server.EInvalid, "serial", false},
		{"invalid/key-generation-zero-or-less", func() server.Device {
			return server.Device{Serial: newSerial(), Model: "WBXHD041S", KeyGeneration: -1}
		}, server.EInvalid, "key_generation", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.dev()
			err := db.RegisterDevice(ctx, provisioner, d)
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				got, err := db.LookupDevice(ctx, agent("a-reg"), d.Serial)
				if err != nil {
					t.Fatal(err)
				}
				if got.Model != d.Model || got.OwnerContact != d.OwnerContact || got.Firmware != d.Firmware ||
					got.KeyGeneration != 1 || got.DeviceID != d.Serial[strings.LastIndexByte(d.Serial, '#')+1:] ||
					got.ProductionDate.Format(time.DateOnly) != "2017-08-01" || got.Hold != nil || got.RegisteredAt.IsZero() {
					t.Errorf("registered %+v, read back %+v", d, got)
				}
				ev := eventsFor(t, db, d.Serial)[0]
				if ev.Action != server.ActionRegister || ev.Outcome != server.OutcomeSuccess || ev.Actor != provisioner.Subject {
					t.Errorf("event %+v, want a successful register by %s", ev, provisioner.Subject)
				}
				return
			}
			se := wantCode(t, err, tt.code)
			if se.Field != tt.field {
				t.Errorf("field = %q, want %q (%v)", se.Field, tt.field, err)
			}
			if tt.code == server.EConflict {
				wantReason(t, se, server.ReasonDeviceExists)
			}
			if !tt.audited {
				return
			}
			ev := lastEvent(t, db, d.Serial)
			if ev.Action != server.ActionRegister || ev.Outcome != server.OutcomeRefused || !strings.HasPrefix(ev.Detail, string(tt.code)) {
				t.Errorf("event %+v, want a refused register with detail %q...", ev, tt.code)
			}
		})
	}
}

func TestLookupDevice(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	s := registerDevice(t, db, "owner@example.com")
	id := s[strings.LastIndexByte(s, '#')+1:]
	// One symbol wrong in the device id: a near match.
	typo := s[:len(s)-1] + "0"
	if s[len(s)-1] == '0' {
		typo = s[:len(s)-1] + "1"
	}
	a := agent(newName("a-lookup"))

	t.Run("success/by-serial", func(t *testing.T) {
		d, err := db.LookupDevice(ctx, a, s)
		if err != nil || d.Serial != s || d.DeviceID != id {
			t.Fatalf("LookupDevice = %+v, %v", d, err)
		}
		ev := lastEvent(t, db, s)
		if ev.Action != server.ActionLookup || ev.Outcome != server.OutcomeSuccess || ev.Actor != a.Subject ||
			ev.Role != a.Role || ev.ClientAddr != a.ClientAddr || ev.Detail != "by=serial" {
			t.Errorf("event %+v", ev)
		}
	})
	t.Run("success/by-device-id", func(t *testing.T) {
		d, err := db.LookupDeviceID(ctx, a, id)
		if err != nil || d.Serial != s {
			t.Fatalf("LookupDeviceID = %+v, %v", d, err)
		}
		if ev := lastEvent(t, db, s); ev.Outcome != server.OutcomeSuccess || !strings.HasPrefix(ev.Detail, "by=device_id") {
			t.Errorf("event %+v", ev)
		}
	})
	t.Run("not-found/unknown-serial-with-near-match", func(t *testing.T) {
		_, err := db.LookupDevice(ctx, a, typo)
		se := wantCode(t, err, server.ENotFound)
		wantReason(t, se, server.ReasonDeviceNotFound)
		if !slices.Contains(se.NearMatches, s) {
			t.Errorf("NearMatches = %v, want %s among them", se.NearMatches, s)
		}
		if len(se.NearMatches) > 5 {
			t.Errorf("%d near matches, want at most 5", len(se.NearMatches))
		}
		if ev := lastEvent(t, db, typo); ev.Outcome != server.OutcomeRefused || !strings.HasPrefix(ev.Detail, "not_found") {
			t.Errorf("event %+v, want refused not_found", ev)
		}
	})
	t.Run("not-found/unknown-device-id-with-near-match", func(t *testing.T) {
		_, err := db.LookupDeviceID(ctx, a, typo[strings.LastIndexByte(typo, '#')+1:])
		se := wantCode(t, err, server.ENotFound)
		if !slices.Contains(se.NearMatches, s) {
			t.Errorf("NearMatches = %v, want %s among them", se.NearMatches, s)
		}
	})
	t.Run("not-found/nothing-near", func(t *testing.T) {
		_, err := db.LookupDevice(ctx, a, "ZZZZZZ#2020-01-01#1#QQQQQQQQQQQQQQQQ")
		if se := wantCode(t, err, server.ENotFound); len(se.NearMatches) != 0 {
			t.Errorf("NearMatches = %v, want none", se.NearMatches)
		}
	})
}

func TestCheckOwner(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	byMail := registerDevice(t, db, "Jane.Doe@Example.com")
	byPhone := registerDevice(t, db, "+44 (20) 7946-0000")
	noContact := registerDevice(t, db, "")
	a := agent(newName("a-owner"))

	tests := []struct {
		name, serial, claimed string
		want                  bool
		code                  server.Code
		detail                string
	}{
		{"match/email-case-and-spaces", byMail, "  jane.doe@example.COM ", true, "", ""},
		{"match/phone-formatting", byPhone, "44 20 79460000", true, "", ""},
		{"refused/owner-mismatch-email", byMail, "john@example.com", false, "", "owner_mismatch"},
		{"refused/owner-mismatch-phone", byPhone, "+44 20 7946 0001", false, "", "owner_mismatch"},
		{"refused/phone-for-email", byMail, "+44 20 7946 0000", false, "", "owner_mismatch"},
		{"refused/empty-claim", byPhone, "  ", false, "", "owner_mismatch"},
		{"refused/no-contact-registered", noContact, "", false, "", "owner_mismatch no_contact_registered"},
		{"not-found/unknown-serial", "ZZZZZZ#2020-01-01#1#QQQQQQQQQQQQQQQQ", "x@example.com", false, server.ENotFound, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := db.CheckOwner(ctx, a, tt.serial, ownerIs(tt.claimed))
			if tt.code != "" {
				wantReason(t, wantCode(t, err, tt.code), server.ReasonDeviceNotFound)
			} else if err != nil {
				t.Fatal(err)
			}
			if ok != tt.want {
				t.Errorf("CheckOwner = %v, want %v", ok, tt.want)
			}
			ev := lastEvent(t, db, tt.serial)
			wantOutcome := server.OutcomeRefused
			if tt.want {
				wantOutcome = server.OutcomeSuccess
			}
			if ev.Action != server.ActionOwnerCheck || ev.Outcome != wantOutcome || ev.Detail != tt.detail {
				t.Errorf("event %+v, want outcome %s detail %q", ev, wantOutcome, tt.detail)
			}
			// The registered contact never reaches the log.
			if strings.Contains(strings.ToLower(ev.Detail+ev.Reason), "example.com") || strings.Contains(ev.Detail, "7946") {
				t.Errorf("event %+v reveals a contact", ev)
			}
		})
	}
}

func TestSetHold(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	s := registerDevice(t, db, "o@example.com")
	a := agent(newName("a-hold"))

	steps := []struct {
		name   string
		hold   *server.Hold
		code   server.Code
		action server.Action
		detail string
	}{
		{"success/place", &server.Hold{Reason: "reported stolen"}, "", server.ActionHold, ""},
		{"success/replace", &server.Hold{Reason: "disputed ownership", By: "sup2"}, "", server.ActionHold, "replaced"},
		{"success/release", nil, "", server.ActionRelease, ""},
		{"success/release-when-not-held", nil, "", server.ActionRelease, "not_on_hold"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := db.SetHold(ctx, supervisor, s, st.hold, ""); err != nil {
				t.Fatal(err)
			}
			d, err := db.LookupDevice(ctx, a, s)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case st.hold == nil && d.Hold != nil:
				t.Errorf("after release, Hold = %+v", d.Hold)
			case st.hold != nil && (d.Hold == nil || d.Hold.Reason != st.hold.Reason || d.Hold.Since.IsZero()):
				t.Errorf("Hold = %+v, want reason %q", d.Hold, st.hold.Reason)
			case st.hold != nil && st.hold.By == "" && d.Hold.By != supervisor.Subject:
				t.Errorf("Hold.By = %q, want the actor %q", d.Hold.By, supervisor.Subject)
			case st.hold != nil && st.hold.By != "" && d.Hold.By != st.hold.By:
				t.Errorf("Hold.By = %q, want %q", d.Hold.By, st.hold.By)
			}
			evs := eventsFor(t, db, s)
			ev := evs[len(evs)-2] // before the lookup's
			if ev.Action != st.action || ev.Outcome != server.OutcomeSuccess || ev.Detail != st.detail {
				t.Errorf("event %+v, want %s %q", ev, st.action, st.detail)
			}
		})
	}
	t.Run("invalid/hold-without-reason", func(t *testing.T) {
		se := wantCode(t, db.SetHold(ctx, supervisor, s, &server.Hold{Reason: " "}, ""), server.EInvalid)
		if se.Field != "reason" {
			t.Errorf("field %q", se.Field)
		}
	})
	t.Run("not-found/unknown-serial", func(t *testing.T) {
		u := "ZZZZZZ#2020-01-01#1#HOLDHOLDHOLD"
		wantReason(t, wantCode(t, db.SetHold(ctx, supervisor, u, &server.Hold{Reason: "x"}, ""), server.ENotFound), server.ReasonDeviceNotFound)
		if ev := lastEvent(t, db, u); ev.Outcome != server.OutcomeRefused || ev.Action != server.ActionHold {
			t.Errorf("event %+v", ev)
		}
	})
}

func TestIssuances(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	s := registerDevice(t, db, "o@example.com")
	a := agent(newName("a-list"))
	var ids []string
	for range 3 {
		iss, err := db.Issue(ctx, a, issueRequest(s), server.DefaultLimits, policy)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, iss.ID)
	}
	t.Run("success/newest-first", func(t *testing.T) {
		got, err := db.Issuances(ctx, a, s, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0].ID != ids[2] || got[2].ID != ids[0] || got[0].Sequence != 3 {
			t.Fatalf("Issuances = %+v, want %v reversed", got, ids)
		}
		if ev := lastEvent(t, db, s); ev.Action != server.ActionListIssuances || ev.Outcome != server.OutcomeSuccess {
			t.Errorf("event %+v", ev)
		}
	})
	t.Run("success/limited", func(t *testing.T) {
		got, err := db.Issuances(ctx, a, s, 0, 1)
		if err != nil || len(got) != 1 || got[0].ID != ids[2] {
			t.Fatalf("Issuances(limit 1) = %+v, %v", got, err)
		}
	})
	// The keyset cursor: the service's page token carries the last
	// sequence of a page, and the next page is the issuances below it.
	t.Run("pages/follow-keyset-to-the-end", func(t *testing.T) {
		var got []string
		before := int64(0)
		for range len(ids) + 1 {
			page, err := db.Issuances(ctx, a, s, before, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			got = append(got, page[0].ID)
			before = page[0].Sequence
		}
		if !slices.Equal(got, []string{ids[2], ids[1], ids[0]}) {
			t.Fatalf("pages = %v, want %v reversed", got, ids)
		}
	})
	t.Run("pages/before-a-sequence-lists-only-older", func(t *testing.T) {
		got, err := db.Issuances(ctx, a, s, 3, 10)
		if err != nil || len(got) != 2 || got[0].Sequence != 2 || got[1].Sequence != 1 {
			t.Fatalf("Issuances(before 3) = %+v, %v", got, err)
		}
	})
	t.Run("pages/before-the-first-is-empty", func(t *testing.T) {
		got, err := db.Issuances(ctx, a, s, 1, 10)
		if err != nil || len(got) != 0 {
			t.Fatalf("Issuances(before 1) = %+v, %v", got, err)
		}
		if ev := lastEvent(t, db, s); ev.Action != server.ActionListIssuances || ev.Outcome != server.OutcomeSuccess {
			t.Errorf("an empty page is not audited: event %+v", ev)
		}
	})
	t.Run("success/none-yet", func(t *testing.T) {
		got, err := db.Issuances(ctx, a, registerDevice(t, db, ""), 0, 10)
		if err != nil || len(got) != 0 {
			t.Fatalf("Issuances = %+v, %v", got, err)
		}
	})
	t.Run("not-found/unknown-serial", func(t *testing.T) {
		_, err := db.Issuances(ctx, a, "ZZZZZZ#2020-01-01#1#LISTLISTLIST", 0, 10)
		wantReason(t, wantCode(t, err, server.ENotFound), server.ReasonDeviceNotFound)
	})
}
