package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
)

func TestIssue(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	owner := ownerConn(t)
	lim := server.Limits{PerDevice: 2, PerDeviceWindow: 24 * time.Hour, PerAgent: 3, PerAgentWindow: time.Hour}

	// issueN issues n times for serial as a, failing on refusals.
	issueN := func(t *testing.T, a server.Actor, serial string, n int) []server.Issuance {
		t.Helper()
		var out []server.Issuance
		for range n {
			iss, err := db.Issue(ctx, a, issueRequest(serial), lim, policy)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, iss)
		}
		return out
	}

	t.Run("success", func(t *testing.T) {
		s := registerDevice(t, db, "o@example.com")
		a := agent(newName("a"))
		req := issueRequest(s)
		req.Method, req.MethodNote = server.VerifyOther, "called back on the installer's landline"
		before := time.Now()
		iss, err := db.Issue(ctx, a, req, lim, policy)
		if err != nil {
			t.Fatal(err)
		}
		if iss.Sequence != 1 || iss.Serial != s || iss.RequestID != req.RequestID || iss.Actor != a.Subject ||
			iss.ActorRole != server.RoleAgent || iss.Ticket != req.Ticket || iss.Method != server.VerifyOther ||
			iss.MethodNote != req.MethodNote || iss.KeyGeneration != 1 || iss.SigningKeyID != "grant-1" || iss.ID == "" {
			t.Errorf("Issue = %+v", iss)
		}
		if d := iss.IssuedAt.Sub(before); d < -time.Second || d > 5*time.Second {
			t.Errorf("IssuedAt %v is %v from the test's clock", iss.IssuedAt, d)
		}
		if iss.IssuedAt.Nanosecond()%1000 != 0 || !iss.ExpiresAt.Equal(voicecode.ExpiresAt(iss.IssuedAt)) {
			t.Errorf("IssuedAt %v, ExpiresAt %v", iss.IssuedAt, iss.ExpiresAt)
		}
		list, err := db.Issuances(ctx, a, s, 0, 10)
		if err != nil || len(list) != 1 || list[0] != iss {
			t.Errorf("stored %+v, %v; returned %+v", list, err, iss)
		}
		evs := eventsFor(t, db, s)
		var ev server.AuditEvent
		for _, e := range evs {
			if e.Action == server.ActionIssue {
				ev = e
			}
		}
		if ev.Outcome != server.OutcomeSuccess || ev.IssuanceID != iss.ID || ev.Ticket != req.Ticket ||
			ev.Method != req.Method || ev.RequestID != req.RequestID || ev.Actor != a.Subject || ev.ClientAddr != a.ClientAddr {
			t.Errorf("event %+v for %+v", ev, iss)
		}
	})

	t.Run("success/retry-returns-first-issuance", func(t *testing.T) {
		s := registerDevice(t, db, "o@example.com")
		a := agent(newName("a"))
		req := issueRequest(s)
		first, err := db.Issue(ctx, a, req, lim, policy)
		if err != nil {
			t.Fatal(err)
		}
		again, err := db.Issue(ctx, a, req, lim, func(f server.IssueFacts) (server.IssueDecision, error) {
			if f.Existing == nil || *f.Existing != first {
				t.Errorf("a retry's facts carry %+v, want the first issuance %+v", f.Existing, first)
			}
			return policy(f)
		})
		if err != nil || again != first {
			t.Fatalf("retry = %+v, %v; want %+v", again, err, first)
		}
		n := 0
		for _, e := range eventsFor(t, db, s) {
			if e.Action == server.ActionIssue {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d issue events, want 1", n)
		}
	})

	t.Run("success/same-request-id-other-agent-is-another-request", func(t *testing.T) {
		s := registerDevice(t, db, "o@example.com")
		req := issueRequest(s)
		a, err := db.Issue(ctx, agent(newName("a")), req, lim, policy)
		if err != nil {
			t.Fatal(err)
		}
		b, err := db.Issue(ctx, agent(newName("b")), req, lim, policy)
		if err != nil || b.ID == a.ID || b.Sequence != 2 {
			t.Fatalf("second agent got %+v, %v", b, err)
		}
	})

	t.Run("refused/request-id-reused-for-another-device", func(t *testing.T) {
		s1, s2 := registerDevice(t, db, ""), registerDevice(t, db, "")
		a := agent(newName("a"))
		req := issueRequest(s1)
		if _, err := db.Issue(ctx, a, req, lim, policy); err != nil {
			t.Fatal(err)
		}
		req.Serial = s2
		_, err := db.Issue(ctx, a, req, lim, policy)
		if se := wantCode(t, err, server.EConflict); se.Field != "request_id" {
			t.Errorf("field %q", se.Field)
		}
		if ev := lastEvent(t, db, s2); ev.Outcome != server.OutcomeRefused || ev.Detail != "request_id_reused" {
			t.Errorf("event %+v", ev)
		}
	})

	t.Run("refused/retry-after-the-device-was-put-on-hold", func(t *testing.T) {
		s := registerDevice(t, db, "o@example.com")
		a := agent(newName("a"))
		req := issueRequest(s)
		first, err := db.Issue(ctx, a, req, lim, policy)
		if err != nil {
			t.Fatal(err)
		}
		again, err := db.Issue(ctx, a, req, lim, policy)
		if err != nil || again.ID != first.ID {
			t.Fatalf("retry: %+v, %v", again, err)
		}
		if ev := lastEvent(t, db, s); ev.Action != server.ActionIssueReplay || ev.IssuanceID != first.ID {
			t.Errorf("the replay was not audited: %+v", ev)
		}
		if err := db.SetHold(ctx, supervisor, s, &server.Hold{Reason: "reported stolen"}, ""); err != nil {
			t.Fatal(err)
		}
		_, err = db.Issue(ctx, a, req, lim, policy)
		wantCode(t, err, server.EPrecondition)
		if ev := lastEvent(t, db, s); ev.Action != server.ActionIssue || ev.Outcome != server.OutcomeRefused || ev.Detail != "on_hold replay" {
			t.Errorf("event %+v", ev)
		}
	})

	t.Run("refused/device-on-hold", func(t *testing.T) {
		s := registerDevice(t, db, "o@example.com")
		if err := db.SetHold(ctx, supervisor, s, &server.Hold{Reason: "reported stolen"}, ""); err != nil {
			t.Fatal(err)
		}
		for _, a := range []server.Actor{agent(newName("a")), supervisor} {
			req := issueRequest(s)
			req.OverrideReason = "customer insists"
			_, err := db.Issue(ctx, a, req, lim, policy)
			if se := wantCode(t, err, server.EPrecondition); !strings.Contains(se.Message, "reported stolen") {
				t.Errorf("message %q does not say why", se.Message)
			}
			if ev := lastEvent(t, db, s); ev.Action != server.ActionIssue || ev.Outcome != server.OutcomeRefused ||
				ev.Detail != "on_hold" || ev.Actor != a.Subject || ev.Ticket != req.Ticket || ev.IssuanceID != "" {
				t.Errorf("event %+v", ev)
			}
		}
		if list, _ := db.Issuances(ctx, supervisor, s, 0, 10); len(list) != 0 {
			t.Errorf("issuances on hold: %+v", list)
		}
	})

	t.Run("refused/unknown-device", func(t *testing.T) {
		u := "ZZZZZZ#2020-01-01#1#ISSUEISSUEISS"
		_, err := db.Issue(ctx, agent(newName("a")), issueRequest(u), lim, policy)
		wantCode(t, err, server.ENotFound)
		if ev := lastEvent(t, db, u); ev.Outcome != server.OutcomeRefused || ev.Detail != "not_found" {
			t.Errorf("event %+v", ev)
		}
	})

	t.Run("refused/per-device-limit", func(t *testing.T) {
		s := registerDevice(t, db, "")
		got := issueN(t, agent(newName("a")), s, 1)
		got = append(got, issueN(t, agent(newName("b")), s, 1)...)
		_, err := db.Issue(ctx, agent(newName("c")), issueRequest(s), lim, policy)
		se := wantCode(t, err, server.ELimit)
		if se.Limit != "per-device" || !se.RetryAfter.Equal(got[0].IssuedAt.Add(24*time.Hour)) {
			t.Errorf("Limit %q RetryAfter %v, want per-device at %v", se.Limit, se.RetryAfter, got[0].IssuedAt.Add(24*time.Hour))
		}
		if ev := lastEvent(t, db, s); ev.Outcome != server.OutcomeRefused || ev.Detail != "limit=per-device count=2/2" {
			t.Errorf("event %+v", ev)
		}
	})

	t.Run("refused/per-agent-limit", func(t *testing.T) {
		a := agent(newName("a"))
		var got []server.Issuance
		for range 3 {
			got = append(got, issueN(t, a, registerDevice(t, db, ""), 1)...)
		}
		s := registerDevice(t, db, "")
		_, err := db.Issue(ctx, a, issueRequest(s), lim, policy)
		se := wantCode(t, err, server.ELimit)
		if se.Limit != "per-agent" || !se.RetryAfter.Equal(got[0].IssuedAt.Add(time.Hour)) {
			t.Errorf("Limit %q RetryAfter %v, want per-agent at %v", se.Limit, se.RetryAfter, got[0].IssuedAt.Add(time.Hour))
		}
		if ev := lastEvent(t, db, s); ev.Outcome != server.OutcomeRefused || ev.Detail != "limit=per-agent count=3/3" {
			t.Errorf("event %+v", ev)
		}
	})

	t.Run("refused/over-limit-supervisor-without-reason", func(t *testing.T) {
		s := registerDevice(t, db, "")
		issueN(t, agent(newName("a")), s, 2)
		sup := server.Actor{Subject: newName("sup"), Role: server.RoleSupervisor}
		_, err := db.Issue(ctx, sup, issueRequest(s), lim, policy)
		if se := wantCode(t, err, server.ELimit); !strings.Contains(se.Message, "override reason") {
			t.Errorf("message %q does not say what a supervisor can do", se.Message)
		}
	})

	t.Run("refused/over-limit-agent-with-reason", func(t *testing.T) {
		s := registerDevice(t, db, "")
		issueN(t, agent(newName("a")), s, 2)
		req := issueRequest(s)
		req.OverrideReason = "I am sure"
		_, err := db.Issue(ctx, agent(newName("b")), req, lim, policy)
		wantCode(t, err, server.ELimit)
	})

	t.Run("success/over-limit-supervisor-with-reason", func(t *testing.T) {
		s := registerDevice(t, db, "")
		issueN(t, agent(newName("a")), s, 2)
		sup := server.Actor{Subject: newName("sup"), Role: server.RoleSupervisor}
		req := issueRequest(s)
		req.OverrideReason = "owner on site with invoice, third reset needed"
		iss, err := db.Issue(ctx, sup, req, lim, policy)
		if err != nil {
			t.Fatal(err)
		}
		if iss.Sequence != 3 || iss.OverrideReason != req.OverrideReason || iss.ActorRole != server.RoleSupervisor {
			t.Errorf("Issue = %+v", iss)
		}
		ev := lastEvent(t, db, s)
		if ev.Outcome != server.OutcomeSuccess || ev.Reason != req.OverrideReason || ev.Detail != "seq=3 override limit=per-device count=2/2 alert=device_burst" {
			t.Errorf("event %+v", ev)
		}
	})

	t.Run("flagged/owner-contact-claimed-without-an-owner-check", func(t *testing.T) {
		s := registerDevice(t, db, "owner@example.com")
		a := agent(newName("a"))
		req := issueRequest(s)
		req.Method = server.VerifyOwnerContact
		if _, err := db.Issue(ctx, a, req, lim, policy); err != nil {
			t.Fatal(err)
		}
		if ev := lastEvent(t, db, s); !strings.Contains(ev.Detail, "owner_check=none") {
			t.Errorf("an unchecked owner-contact claim was not flagged: %+v", ev)
		}
		if ok, err := db.CheckOwner(ctx, a, s, ownerIs("owner@example.com")); err != nil || !ok {
			t.Fatalf("CheckOwner = %v, %v", ok, err)
		}
		req.RequestID = uuid()
		if _, err := db.Issue(ctx, a, req, lim, policy); err != nil {
			t.Fatal(err)
		}
		if ev := lastEvent(t, db, s); strings.Contains(ev.Detail, "owner_check") {
			t.Errorf("a checked claim was flagged: %+v", ev)
		}
	})

	t.Run("unavailable/sequence-wrap-within-one-slot", func(t *testing.T) {
		s := registerDevice(t, db, "")
		a := agent(newName("a"))
		// As if 255 codes had been issued, the last one just now.
		if _, err := owner.Exec(ctx, `UPDATE devices SET last_sequence = 255, last_issued_at = clock_timestamp() WHERE serial = $1`, s); err != nil {
			t.Fatal(err)
		}
		// Keep the test away from a slot boundary.
		if sec := time.Now().Unix() % 600; sec > 590 {
			time.Sleep(time.Duration(601-sec) * time.Second)
			owner.Exec(ctx, `UPDATE devices SET last_issued_at = clock_timestamp() WHERE serial = $1`, s)
		}
		_, err := db.Issue(ctx, a, issueRequest(s), lim, policy)
		se := wantCode(t, err, server.EUnavailable)
		if se.RetryAfter.Unix()%600 != 0 || time.Until(se.RetryAfter) > 10*time.Minute || time.Until(se.RetryAfter) < -time.Minute {
			t.Errorf("RetryAfter %v, want the next 10-minute slot", se.RetryAfter)
		}
		if ev := lastEvent(t, db, s); ev.Outcome != server.OutcomeRefused || ev.Detail != "sequence_wrap seq=256" {
			t.Errorf("event %+v", ev)
		}
		// The refusal used no sequence number.
		var last int64
		owner.QueryRow(ctx, `SELECT last_sequence FROM devices WHERE serial = $1`, s).Scan(&last)
		if last != 255 {
			t.Errorf("last_sequence = %d after the refusal, want 255", last)
		}
	})

	t.Run("success/sequence-wrap-in-a-later-slot", func(t *testing.T) {
		s := registerDevice(t, db, "")
		if _, err := owner.Exec(ctx, `UPDATE devices SET last_sequence = 255, last_issued_at = clock_timestamp() - interval '10 minutes' WHERE serial = $1`, s); err != nil {
			t.Fatal(err)
		}
		iss, err := db.Issue(ctx, agent(newName("a")), issueRequest(s), lim, policy)
		if err != nil || iss.Sequence != 256 {
			t.Fatalf("Issue = %+v, %v; want sequence 256", iss, err)
		}
	})

	t.Run("success/issue-time-never-precedes-the-previous", func(t *testing.T) {
		s := registerDevice(t, db, "")
		// The previous issue time is in the future (a clock stepped back).
		future := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
		if _, err := owner.Exec(ctx, `UPDATE devices SET last_sequence = 7, last_issued_at = $2 WHERE serial = $1`, s, future); err != nil {
			t.Fatal(err)
		}
		iss, err := db.Issue(ctx, agent(newName("a")), issueRequest(s), lim, policy)
		if err != nil || iss.Sequence != 8 || iss.IssuedAt.Before(future) {
			t.Fatalf("Issue = %+v, %v; want sequence 8 issued at or after %v", iss, err, future)
		}
	})

	// Validation and roles are the service's (server/service_test.go); the
	// store checks only that a decision fits the facts it read.
	t.Run("internal/decision-that-does-not-fit-the-facts", func(t *testing.T) {
		s := registerDevice(t, db, "")
		_, err := db.Issue(ctx, agent(newName("a")), issueRequest(s), lim, func(f server.IssueFacts) (server.IssueDecision, error) {
			d, err := policy(f)
			d.Issuance.Sequence += 5 // skipping sequence numbers
			return d, err
		})
		wantCode(t, err, server.EInternal)
		// Nothing of the failed act was committed.
		list, _ := db.Issuances(ctx, supervisor, s, 0, 10)
		var last int64
		owner.QueryRow(ctx, `SELECT last_sequence FROM devices WHERE serial = $1`, s).Scan(&last)
		if len(list) != 0 || last != 0 {
			t.Errorf("after a failed issue: issuances %+v, last_sequence %d", list, last)
		}
	})

	t.Run("invalid/expiry-beyond-24-hours-is-refused-by-the-database", func(t *testing.T) {
		s := registerDevice(t, db, "")
		_, err := db.Issue(ctx, agent(newName("a")), issueRequest(s), lim, func(f server.IssueFacts) (server.IssueDecision, error) {
			d, err := policy(f)
			d.Issuance.ExpiresAt = d.Issuance.IssuedAt.Add(25 * time.Hour)
			return d, err
		})
		if se := wantCode(t, err, server.EInvalid); se.Field != "expires_at" {
			t.Errorf("field %q", se.Field)
		}
	})
}
