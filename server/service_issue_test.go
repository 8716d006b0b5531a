package server_test

// Tests of the issuing policy: server.DecideIssue on facts built by hand
// (every outcome, its error and its audit event), Service.Issue end to end
// on the in-memory store (validation, roles, limits, replays, holds,
// sequence wraps, the owner-check flag), and that what mint hands out
// verifies as the DVR would verify it: the voice code under the device's
// own key generation, the grant against the published JWK set.

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
)

// issueRequest is a valid request for serial with a fresh request id.
func issueRequest(serial string) server.IssueRequest {
	return server.IssueRequest{RequestID: server.NewUUID(), Serial: serial, Ticket: "T-1001", Method: server.VerifyProofOfPurchase}
}

func TestDecideIssue(t *testing.T) {
	const kid = "grant-7"
	now := start // 10:02, two minutes into its slot
	t0 := now.Add(-20 * time.Hour)
	inWindow := []time.Time{t0, t0.Add(time.Hour), t0.Add(2 * time.Hour), t0.Add(3 * time.Hour)}
	existing := &server.Issuance{ID: "iss-1", RequestID: "req-1", Serial: serialA, Sequence: 4, KeyGeneration: 1,
		SigningKeyID: "grant-6", IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(20 * time.Hour), Actor: agentA.Subject}
	hold := &server.Hold{Reason: "reported stolen", By: "sue", Since: time.Date(2024, 4, 30, 8, 0, 0, 0, time.UTC)}

	base := func() server.IssueFacts {
		return server.IssueFacts{
			Actor: agentA,
			Request: server.IssueRequest{RequestID: "req-1", Serial: serialA, Ticket: "T-1001",
				Method: server.VerifyProofOfPurchase},
			Limits:        testLimits,
			Now:           now,
			Registered:    true,
			KeyGeneration: 1,
			InWindow: func(scope server.LimitScope, n int) (time.Time, error) {
				if n < 0 || n >= len(inWindow) {
					return time.Time{}, nil
				}
				return inWindow[n], nil
			},
		}
	}
	tests := []struct {
		name       string
		mod        func(*server.IssueFacts)
		code       server.Code // "" when allowed or replayed
		reason     server.Reason
		limit      string
		retryAfter time.Time
		message    string
		replay     bool
		action     server.Action
		detail     string
		sequence   int64
	}{
		{name: "allowed/first-issuance", detail: "seq=1", sequence: 1},
		{name: "allowed/next-sequence", mod: func(f *server.IssueFacts) { f.LastSequence, f.LastIssuedAt = 2, now.Add(-time.Hour) },
			detail: "seq=3", sequence: 3},
		{name: "allowed/under-both-limits", mod: func(f *server.IssueFacts) { f.DeviceCount, f.AgentCount = 1, 2 },
			detail: "seq=1", sequence: 1},
		{name: "allowed/device-key-generation-not-the-current-one", mod: func(f *server.IssueFacts) { f.KeyGeneration = 3 },
			detail: "seq=1", sequence: 1},
		{name: "replayed/same-request-id-returns-same-code", mod: func(f *server.IssueFacts) { f.Existing = existing },
			replay: true, action: server.ActionIssueReplay, detail: "replay seq=4"},
		{name: "replayed/even-over-a-limit", mod: func(f *server.IssueFacts) { f.Existing, f.DeviceCount = existing, 9 },
			replay: true, action: server.ActionIssueReplay, detail: "replay seq=4"},
		{name: "refused/request-id-reused-for-another-device", mod: func(f *server.IssueFacts) {
			x := *existing
			x.Serial = serialB
			f.Existing = &x
		}, code: server.EConflict, reason: server.ReasonRequestIDReused, detail: "request_id_reused"},
		{name: "refused/replay-after-the-issuance-expired", mod: func(f *server.IssueFacts) {
			x := *existing
			x.ExpiresAt = now
			f.Existing = &x
		}, code: server.EPrecondition, reason: server.ReasonIssuanceExpired, message: "expired", detail: "expired replay"},
		{name: "refused/absolute-device-cap-even-for-a-supervisor-override", mod: func(f *server.IssueFacts) {
			f.Actor, f.Request.OverrideReason, f.DeviceCount = supervisor, "customer insists", 10
		}, code: server.ELimit, reason: server.ReasonDeviceCap, limit: "per-device", retryAfter: inWindow[0].Add(24 * time.Hour),
			message: "absolute cap", detail: "device_cap count=10/10 alert=device_cap"},
		{name: "refused/agent-soon-after-a-contact-change", mod: func(f *server.IssueFacts) { f.ContactChangedAt = now.Add(-time.Hour) },
			code: server.EPermission, reason: server.ReasonContactRecentlyChanged, retryAfter: now.Add(71 * time.Hour),
			message: "only a supervisor", detail: "contact_changed=2024-05-01T09:02:00Z"},
		{name: "refused/supervisor-without-a-reason-soon-after-a-contact-change", mod: func(f *server.IssueFacts) {
			f.Actor, f.ContactChangedAt = supervisor, now.Add(-time.Hour)
		}, code: server.EPermission, reason: server.ReasonContactRecentlyChanged, retryAfter: now.Add(71 * time.Hour),
			detail: "contact_changed=2024-05-01T09:02:00Z"},
		{name: "allowed/supervisor-with-a-reason-soon-after-a-contact-change", mod: func(f *server.IssueFacts) {
			f.Actor, f.Request.OverrideReason, f.ContactChangedAt = supervisor, "owner called back on the old number", now.Add(-time.Hour)
		}, detail: "seq=1 override contact_changed=2024-05-01T09:02:00Z", sequence: 1},
		{name: "allowed/agent-once-the-contact-hold-is-over", mod: func(f *server.IssueFacts) { f.ContactChangedAt = now.Add(-72 * time.Hour) },
			detail: "seq=1", sequence: 1},
		{name: "refused/replay-on-hold", mod: func(f *server.IssueFacts) { f.Existing, f.Hold = existing, hold },
			code: server.EPrecondition, reason: server.ReasonDeviceOnHold, message: "reported stolen", detail: "on_hold replay"},
		{name: "refused/unknown-device", mod: func(f *server.IssueFacts) { f.Registered, f.KeyGeneration = false, 0 },
			code: server.ENotFound, reason: server.ReasonDeviceNotFound, detail: "not_found"},
		{name: "refused/device-on-hold", mod: func(f *server.IssueFacts) { f.Hold = hold },
			code: server.EPrecondition, reason: server.ReasonDeviceOnHold, message: "on hold since 2024-04-30 (by sue): reported stolen", detail: "on_hold"},
		{name: "refused/device-on-hold-even-for-a-supervisor-override", mod: func(f *server.IssueFacts) {
			f.Actor, f.Request.OverrideReason, f.Hold = supervisor, "customer insists", hold
		}, code: server.EPrecondition, reason: server.ReasonDeviceOnHold, detail: "on_hold"},
		{name: "refused/over-device-limit", mod: func(f *server.IssueFacts) { f.DeviceCount = 2 },
			code: server.ELimit, reason: server.ReasonLimitPerDevice, limit: "per-device", retryAfter: t0.Add(24 * time.Hour),
			message: "ask a supervisor", detail: "limit=per-device count=2/2"},
		{name: "refused/over-device-limit-by-two-frees-up-at-the-third-oldest", mod: func(f *server.IssueFacts) { f.DeviceCount = 4 },
			code: server.ELimit, reason: server.ReasonLimitPerDevice, limit: "per-device", retryAfter: inWindow[2].Add(24 * time.Hour),
			detail: "limit=per-device count=4/2"},
		{name: "refused/over-device-limit-before-the-agent-limit", mod: func(f *server.IssueFacts) { f.DeviceCount, f.AgentCount = 2, 3 },
			code: server.ELimit, reason: server.ReasonLimitPerDevice, limit: "per-device", retryAfter: t0.Add(24 * time.Hour),
			detail: "limit=per-device count=2/2"},
		{name: "refused/over-agent-limit", mod: func(f *server.IssueFacts) { f.AgentCount = 3 },
			code: server.ELimit, reason: server.ReasonLimitPerAgent, limit: "per-agent", retryAfter: t0.Add(time.Hour),
			detail: "limit=per-agent count=3/3"},
		{name: "refused/over-limit-with-no-issue-time-to-wait-for", mod: func(f *server.IssueFacts) {
			f.AgentCount = 3
			f.InWindow = func(server.LimitScope, int) (time.Time, error) { return time.Time{}, nil }
		}, code: server.ELimit, reason: server.ReasonLimitPerAgent, limit: "per-agent", detail: "limit=per-agent count=3/3"},
		{name: "refused/over-limit-supervisor-without-reason", mod: func(f *server.IssueFacts) { f.Actor, f.DeviceCount = supervisor, 2 },
			code: server.ELimit, reason: server.ReasonLimitPerDevice, limit: "per-device", retryAfter: t0.Add(24 * time.Hour),
			message: "a supervisor may issue over it with an override reason", detail: "limit=per-device count=2/2"},
		{name: "refused/over-limit-agent-with-reason", mod: func(f *server.IssueFacts) { f.Request.OverrideReason, f.DeviceCount = "I am sure", 2 },
			code: server.ELimit, reason: server.ReasonLimitPerDevice, limit: "per-device", retryAfter: t0.Add(24 * time.Hour),
			detail: "limit=per-device count=2/2"},
		{name: "allowed/supervisor-override", mod: func(f *server.IssueFacts) {
			f.Actor, f.Request.OverrideReason, f.DeviceCount, f.LastSequence = supervisor, "owner on site with invoice", 2, 2
		}, detail: "seq=3 override limit=per-device count=2/2 alert=device_burst", sequence: 3},
		{name: "allowed/supervisor-override-of-the-agent-limit", mod: func(f *server.IssueFacts) {
			f.Actor, f.Request.OverrideReason, f.AgentCount = supervisor, "storm night", 3
		}, detail: "seq=1 override limit=per-agent count=3/3", sequence: 1},
		{name: "refused/sequence-wrap-in-slot", mod: func(f *server.IssueFacts) { f.LastSequence, f.LastIssuedAt = 255, now.Add(-time.Minute) },
			code: server.EUnavailable, reason: server.ReasonSequenceWrap, retryAfter: time.Date(2024, 5, 1, 10, 10, 0, 0, time.UTC),
			message: "10:10:00", detail: "sequence_wrap seq=256"},
		{name: "refused/second-sequence-wrap-in-slot", mod: func(f *server.IssueFacts) { f.LastSequence, f.LastIssuedAt = 511, now },
			code: server.EUnavailable, reason: server.ReasonSequenceWrap, retryAfter: time.Date(2024, 5, 1, 10, 10, 0, 0, time.UTC),
			detail: "sequence_wrap seq=512"},
		{name: "allowed/sequence-wrap-in-next-slot", mod: func(f *server.IssueFacts) { f.LastSequence, f.LastIssuedAt = 255, now.Add(-3*time.Minute) },
			detail: "seq=256", sequence: 256},
		{name: "allowed/sequence-past-a-wrap-in-slot", mod: func(f *server.IssueFacts) { f.LastSequence, f.LastIssuedAt = 256, now },
			detail: "seq=257", sequence: 257},
		{name: "flagged/owner-contact-claimed-without-an-owner-check", mod: func(f *server.IssueFacts) { f.Request.Method = server.VerifyOwnerContact },
			detail: "seq=1 owner_check=none", sequence: 1},
		{name: "allowed/owner-contact-claimed-after-an-owner-check", mod: func(f *server.IssueFacts) {
			f.Request.Method, f.OwnerChecked = server.VerifyOwnerContact, true
		}, detail: "seq=1", sequence: 1},
		{name: "flagged/override-without-an-owner-check", mod: func(f *server.IssueFacts) {
			f.Actor, f.Request.OverrideReason, f.DeviceCount, f.LastSequence = supervisor, "owner on site", 2, 2
			f.Request.Method = server.VerifyOwnerContact
		}, detail: "seq=3 override limit=per-device count=2/2 alert=device_burst owner_check=none", sequence: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := base()
			if tt.mod != nil {
				tt.mod(&f)
			}
			d, err := server.DecideIssue(f, kid)
			if err != nil {
				t.Fatal(err)
			}
			ev := d.Event
			wantAct, wantOutcome := server.ActionIssue, server.OutcomeSuccess
			if tt.action != "" {
				wantAct = tt.action
			}
			if tt.code != "" {
				wantOutcome = server.OutcomeRefused
			}
			wantEvent(t, ev, wantAct, wantOutcome, tt.detail)
			if ev.Actor != f.Actor.Subject || ev.Role != f.Actor.Role || ev.ClientAddr != f.Actor.ClientAddr || ev.Serial != serialA ||
				ev.Ticket != "T-1001" || ev.Method != f.Request.Method || ev.Reason != f.Request.OverrideReason || ev.RequestID != "req-1" {
				t.Errorf("event %+v does not describe the request %+v", ev, f.Request)
			}
			switch {
			case tt.code != "":
				if d.Refusal == nil || d.Replay || d.Issuance.ID != "" || ev.IssuanceID != "" {
					t.Fatalf("decision %+v, want a refusal alone", d)
				}
				e := d.Refusal
				if e.Code != tt.code || e.ReasonOf() != tt.reason || e.Limit != tt.limit || !e.RetryAfter.Equal(tt.retryAfter) ||
					!strings.Contains(e.Message, tt.message) {
					t.Errorf("refusal %s %s limit %q retry %v %q; want %s %s limit %q retry %v containing %q",
						e.Code, e.ReasonOf(), e.Limit, e.RetryAfter, e.Message, tt.code, tt.reason, tt.limit, tt.retryAfter, tt.message)
				}
			case tt.replay:
				if !d.Replay || d.Refusal != nil || d.Issuance.ID != "" || ev.IssuanceID != existing.ID {
					t.Errorf("decision %+v, want a replay of %s", d, existing.ID)
				}
			default:
				iss := d.Issuance
				if d.Refusal != nil || d.Replay {
					t.Fatalf("decision %+v, want an issuance", d)
				}
				if iss.ID == "" || iss.ID != ev.IssuanceID || iss.RequestID != "req-1" || iss.Serial != serialA || iss.Sequence != tt.sequence ||
					iss.KeyGeneration != f.KeyGeneration || iss.SigningKeyID != kid || !iss.IssuedAt.Equal(now) ||
					!iss.ExpiresAt.Equal(voicecode.ExpiresAt(now)) || iss.Actor != f.Actor.Subject || iss.ActorRole != f.Actor.Role ||
					iss.Ticket != "T-1001" || iss.Method != f.Request.Method || iss.OverrideReason != f.Request.OverrideReason {
					t.Errorf("issuance %+v from facts %+v", iss, f)
				}
			}
		})
	}

	t.Run("error/reading-the-window-fails", func(t *testing.T) {
		f := base()
		f.DeviceCount = 2
		boom := errors.New("connection reset")
		f.InWindow = func(server.LimitScope, int) (time.Time, error) { return time.Time{}, boom }
		if _, err := server.DecideIssue(f, kid); !errors.Is(err, boom) {
			t.Fatalf("DecideIssue = %v, want %v", err, boom)
		}
	})
	t.Run("asks-the-window-of-the-limit-hit", func(t *testing.T) {
		f := base()
		f.AgentCount = 5
		var asked []string
		f.InWindow = func(s server.LimitScope, n int) (time.Time, error) {
			asked = append(asked, string(s)+"@"+string(rune('0'+n)))
			return t0, nil
		}
		server.DecideIssue(f, kid)
		if strings.Join(asked, ",") != "per-agent@2" {
			t.Errorf("InWindow asked %v, want per-agent@2", asked)
		}
	})
	t.Run("ids-are-fresh", func(t *testing.T) {
		a, _ := server.DecideIssue(base(), kid)
		b, _ := server.DecideIssue(base(), kid)
		if a.Issuance.ID == b.Issuance.ID {
			t.Errorf("two decisions share the issuance id %s", a.Issuance.ID)
		}
	})
}

func TestIssue(t *testing.T) {
	t.Run("allowed/first-code", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		req := issueRequest(serialA)
		got, err := e.svc.Issue(e.ctx, agentA, req)
		if err != nil {
			t.Fatal(err)
		}
		kid, _ := e.keys.GrantSigner()
		if got.Sequence != 1 || got.Serial != serialA || got.RequestID != req.RequestID || got.SigningKeyID != kid ||
			got.KeyGeneration != 1 || !got.IssuedAt.Equal(start) || got.VoiceCode == "" || got.Phonetic == "" || got.Grant == "" {
			t.Errorf("Issue = %+v", got)
		}
		ev := e.store.LastEvent()
		wantEvent(t, ev, server.ActionIssue, server.OutcomeSuccess, "seq=1")
		if ev.IssuanceID != got.ID || ev.ClientAddr != agentA.ClientAddr || ev.Ticket != req.Ticket {
			t.Errorf("event %+v", ev)
		}
	})

	t.Run("replayed/same-request-id-returns-same-code", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		req := issueRequest(serialA)
		first, err := e.svc.Issue(e.ctx, agentA, req)
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(11 * time.Minute) // another slot: a fresh mint would differ
		again, err := e.svc.Issue(e.ctx, agentA, req)
		if err != nil || again != first {
			t.Fatalf("retry = %+v, %v; want %+v", again, err, first)
		}
		ev := e.store.LastEvent()
		wantEvent(t, ev, server.ActionIssueReplay, server.OutcomeSuccess, "replay seq=1")
		if ev.IssuanceID != first.ID {
			t.Errorf("replay event %+v", ev)
		}
		if list, _ := e.store.Issuances(e.ctx, supervisor, serialA, 0, 10); len(list) != 1 {
			t.Errorf("%d issuances after a retry, want 1", len(list))
		}
	})

	t.Run("allowed/same-request-id-other-agent-is-another-request", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		req := issueRequest(serialA)
		a, err := e.svc.Issue(e.ctx, agentA, req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := e.svc.Issue(e.ctx, agentB, req)
		if err != nil || b.ID == a.ID || b.Sequence != 2 || b.VoiceCode == a.VoiceCode {
			t.Fatalf("second agent got %+v, %v", b, err)
		}
	})

	t.Run("refused/request-id-reused-for-another-device", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		e.register(serialB, "")
		req := issueRequest(serialA)
		if _, err := e.svc.Issue(e.ctx, agentA, req); err != nil {
			t.Fatal(err)
		}
		req.Serial = serialB
		_, err := e.svc.Issue(e.ctx, agentA, req)
		if se := wantCode(t, err, server.EConflict); se.Field != "request_id" || se.ReasonOf() != server.ReasonRequestIDReused {
			t.Errorf("refusal %+v", se)
		}
		ev := e.store.LastEvent()
		wantEvent(t, ev, server.ActionIssue, server.OutcomeRefused, "request_id_reused")
		if ev.Serial != serialB {
			t.Errorf("event serial %q", ev.Serial)
		}
	})

	t.Run("refused/replay-on-hold", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		req := issueRequest(serialA)
		if _, err := e.svc.Issue(e.ctx, agentA, req); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.HoldDevice(e.ctx, supervisor, serialA, "reported stolen"); err != nil {
			t.Fatal(err)
		}
		_, err := e.svc.Issue(e.ctx, agentA, req)
		if se := wantCode(t, err, server.EPrecondition); !strings.Contains(se.Message, "reported stolen") {
			t.Errorf("message %q does not say why", se.Message)
		}
		wantEvent(t, e.store.LastEvent(), server.ActionIssue, server.OutcomeRefused, "on_hold replay")
	})

	t.Run("refused/device-on-hold", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		e.store.setHoldDirect(serialA, &server.Hold{Reason: "reported stolen", By: "sue", Since: start})
		for _, a := range []server.Actor{agentA, supervisor} {
			req := issueRequest(serialA)
			if a.Role == server.RoleSupervisor {
				req.OverrideReason = "customer insists"
			}
			_, err := e.svc.Issue(e.ctx, a, req)
			wantCode(t, err, server.EPrecondition)
			ev := e.store.LastEvent()
			wantEvent(t, ev, server.ActionIssue, server.OutcomeRefused, "on_hold")
			if ev.Actor != a.Subject || ev.Reason != req.OverrideReason {
				t.Errorf("event %+v", ev)
			}
		}
	})

	t.Run("refused/unknown-device", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.svc.Issue(e.ctx, agentA, issueRequest(unknownSerial))
		wantCode(t, err, server.ENotFound)
		wantEvent(t, e.store.LastEvent(), server.ActionIssue, server.OutcomeRefused, "not_found")
	})

	t.Run("refused/unknown-device-id", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		_, err := e.svc.Issue(e.ctx, agentA, issueRequest("DVR1101134C08019"))
		if se := wantCode(t, err, server.ENotFound); len(se.NearMatches) != 1 || se.NearMatches[0] != serialA {
			t.Errorf("near matches %q", se.NearMatches)
		}
		wantEvent(t, e.store.LastEvent(), server.ActionIssue, server.OutcomeRefused, "not_found:serial")
	})

	t.Run("allowed/by-device-id", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		got, err := e.svc.Issue(e.ctx, agentA, issueRequest("SN:"+strings.ToLower(serialA)))
		if err != nil || got.Serial != serialA {
			t.Fatalf("Issue = %+v, %v", got, err)
		}
	})

	t.Run("refused/over-device-limit", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		first, err := e.svc.Issue(e.ctx, agentA, issueRequest(serialA))
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Minute)
		if _, err := e.svc.Issue(e.ctx, agentB, issueRequest(serialA)); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.Issue(e.ctx, agentC, issueRequest(serialA))
		se := wantCode(t, err, server.ELimit)
		if se.Limit != "per-device" || !se.RetryAfter.Equal(first.IssuedAt.Add(24*time.Hour)) {
			t.Errorf("Limit %q RetryAfter %v, want per-device at %v", se.Limit, se.RetryAfter, first.IssuedAt.Add(24*time.Hour))
		}
		wantEvent(t, e.store.LastEvent(), server.ActionIssue, server.OutcomeRefused, "limit=per-device count=2/2")

		e.clock.Set(se.RetryAfter.Add(time.Microsecond))
		if got, err := e.svc.Issue(e.ctx, agentC, issueRequest(serialA)); err != nil || got.Sequence != 3 {
			t.Errorf("after the limit freed up: %+v, %v", got, err)
		}
	})

	t.Run("refused/over-agent-limit", func(t *testing.T) {
		e := newEnv(t)
		var first server.Issued
		for i, s := range []string{serialA, serialB, serialC} {
			e.register(s, "")
			got, err := e.svc.Issue(e.ctx, agentA, issueRequest(s))
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = got
			}
			e.clock.Advance(time.Minute)
		}
		const serialD = "JZ6OES#2017-08-01#3#DVR3303356E20233"
		e.register(serialD, "")
		_, err := e.svc.Issue(e.ctx, agentA, issueRequest(serialD))
		se := wantCode(t, err, server.ELimit)
		if se.Limit != "per-agent" || se.ReasonOf() != server.ReasonLimitPerAgent || !se.RetryAfter.Equal(first.IssuedAt.Add(time.Hour)) {
			t.Errorf("refusal %+v, want per-agent at %v", se, first.IssuedAt.Add(time.Hour))
		}
		wantEvent(t, e.store.LastEvent(), server.ActionIssue, server.OutcomeRefused, "limit=per-agent count=3/3")
		if _, err := e.svc.Issue(e.ctx, agentB, issueRequest(serialD)); err != nil {
			t.Errorf("another agent was refused too: %v", err)
		}
	})

	t.Run("allowed/supervisor-override", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		for _, a := range []server.Actor{agentA, agentB} {
			if _, err := e.svc.Issue(e.ctx, a, issueRequest(serialA)); err != nil {
				t.Fatal(err)
			}
		}
		req := issueRequest(serialA)
		_, err := e.svc.Issue(e.ctx, supervisor, req)
		if se := wantCode(t, err, server.ELimit); !strings.Contains(se.Message, "override reason") {
			t.Errorf("message %q does not say what a supervisor can do", se.Message)
		}
		req.OverrideReason = "  owner on site with invoice, third reset needed "
		got, err := e.svc.Issue(e.ctx, supervisor, req)
		if err != nil {
			t.Fatal(err)
		}
		if got.Sequence != 3 || got.OverrideReason != "owner on site with invoice, third reset needed" || got.ActorRole != server.RoleSupervisor {
			t.Errorf("Issue = %+v", got)
		}
		evs := e.store.Events()
		ev := evs[len(evs)-2]
		wantEvent(t, ev, server.ActionIssue, server.OutcomeSuccess, "seq=3 override limit=per-device count=2/2 alert=device_burst")
		wantEvent(t, evs[len(evs)-1], server.ActionIssueAlert, server.OutcomeSuccess, "seq=3 override limit=per-device count=2/2 alert=device_burst")
		if ev.Reason != got.OverrideReason {
			t.Errorf("event reason %q", ev.Reason)
		}
	})

	t.Run("flagged/owner-contact-claimed-without-an-owner-check", func(t *testing.T) {
		e := newEnv(t)
		e.svc.Limits.PerDevice = 10
		e.register(serialA, "owner@example.com")
		issue := func() string {
			t.Helper()
			req := issueRequest(serialA)
			req.Method = server.VerifyOwnerContact
			if _, err := e.svc.Issue(e.ctx, agentA, req); err != nil {
				t.Fatal(err)
			}
			return e.store.LastEvent().Detail
		}
		if d := issue(); !strings.HasSuffix(d, " owner_check=none") {
			t.Errorf("an unchecked claim was not flagged: %q", d)
		}
		// Another agent's check, or a failed one, does not count.
		e.svc.CheckOwner(e.ctx, agentB, serialA, "owner@example.com")
		e.svc.CheckOwner(e.ctx, agentA, serialA, "thief@example.com")
		if d := issue(); !strings.HasSuffix(d, " owner_check=none") {
			t.Errorf("someone else's or a failed check counted: %q", d)
		}
		if ok, err := e.svc.CheckOwner(e.ctx, agentA, serialA, "Owner@Example.com"); err != nil || !ok {
			t.Fatalf("CheckOwner = %v, %v", ok, err)
		}
		e.clock.Advance(59 * time.Minute)
		if d := issue(); strings.Contains(d, "owner_check") {
			t.Errorf("a checked claim was flagged: %q", d)
		}
		e.clock.Advance(2 * time.Minute)
		if d := issue(); !strings.HasSuffix(d, " owner_check=none") {
			t.Errorf("a check more than an hour old counted: %q", d)
		}
	})

	t.Run("refused/sequence-wrap-in-slot", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		e.store.put(e.deviceA(), 255, start.Add(-time.Minute))
		_, err := e.svc.Issue(e.ctx, agentA, issueRequest(serialA))
		se := wantCode(t, err, server.EUnavailable)
		if se.ReasonOf() != server.ReasonSequenceWrap || !se.RetryAfter.Equal(time.Date(2024, 5, 1, 10, 10, 0, 0, time.UTC)) {
			t.Errorf("refusal %+v, want a retry at the next slot", se)
		}
		wantEvent(t, e.store.LastEvent(), server.ActionIssue, server.OutcomeRefused, "sequence_wrap seq=256")
		if list, _ := e.store.Issuances(e.ctx, supervisor, serialA, 0, 10); len(list) != 0 {
			t.Errorf("the refusal used a sequence number: %+v", list)
		}
		e.clock.Set(se.RetryAfter)
		if got, err := e.svc.Issue(e.ctx, agentA, issueRequest(serialA)); err != nil || got.Sequence != 256 {
			t.Errorf("in the next slot: %+v, %v", got, err)
		}
	})

	t.Run("allowed/sequence-wrap-in-next-slot", func(t *testing.T) {
		e := newEnv(t)
		e.store.put(e.deviceA(), 255, start.Add(-10*time.Minute))
		got, err := e.svc.Issue(e.ctx, agentA, issueRequest(serialA))
		if err != nil || got.Sequence != 256 {
			t.Fatalf("Issue = %+v, %v; want sequence 256", got, err)
		}
		c, err := voicecode.Decode(got.VoiceCode)
		if err != nil || c.Seq8 != 0 {
			t.Errorf("code %v carries seq8 %d, want 0", err, c.Seq8)
		}
	})

	t.Run("allowed/issue-time-never-precedes-the-previous", func(t *testing.T) {
		e := newEnv(t)
		future := start.Add(time.Minute)
		e.store.put(e.deviceA(), 7, future)
		got, err := e.svc.Issue(e.ctx, agentA, issueRequest(serialA))
		if err != nil || got.Sequence != 8 || !got.IssuedAt.Equal(future) {
			t.Fatalf("Issue = %+v, %v; want sequence 8 at %v", got, err, future)
		}
	})

	t.Run("internal/store-fails", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		e.store.IssueFn = func(context.Context, server.Actor, server.IssueRequest, server.Limits, func(server.IssueFacts) (server.IssueDecision, error)) (server.Issuance, error) {
			return server.Issuance{}, server.Errorf(server.EUnavailable, "the database was busy")
		}
		_, err := e.svc.Issue(e.ctx, agentA, issueRequest(serialA))
		wantCode(t, err, server.EUnavailable)
	})

	t.Run("internal/window-read-fails-rolls-back", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		e.store.IssueFn = func(ctx context.Context, a server.Actor, req server.IssueRequest, lim server.Limits, decide func(server.IssueFacts) (server.IssueDecision, error)) (server.Issuance, error) {
			_, err := decide(server.IssueFacts{Actor: a, Request: req, Limits: lim, Now: start, Registered: true, DeviceCount: 2,
				InWindow: func(server.LimitScope, int) (time.Time, error) { return time.Time{}, errors.New("connection reset") }})
			return server.Issuance{}, server.Internal(err, "issuing")
		}
		_, err := e.svc.Issue(e.ctx, agentA, issueRequest(serialA))
		wantCode(t, err, server.EInternal)
	})

	t.Run("internal/committed-issuance-under-a-key-generation-not-held", func(t *testing.T) {
		e := newEnv(t)
		e.registerGen(serialA, "", 5)
		_, err := e.svc.Issue(e.ctx, agentA, issueRequest(serialA))
		if se := wantCode(t, err, server.EInternal); strings.Contains(se.Message, "generation") {
			t.Errorf("the internal cause is shown: %q", se.Message)
		}
	})

	t.Run("allowed/grant-re-signed-after-its-key-was-retired", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		req := issueRequest(serialA)
		first, err := e.svc.Issue(e.ctx, agentA, req)
		if err != nil {
			t.Fatal(err)
		}
		newKID, err := e.keys.Rotate("grant")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.keys.RetireSigning(first.SigningKeyID); err != nil {
			t.Fatal(err)
		}
		again, err := e.svc.Issue(e.ctx, agentA, req)
		if err != nil || again.VoiceCode != first.VoiceCode || again.Grant == first.Grant || again.SigningKeyID != first.SigningKeyID {
			t.Fatalf("retry = %+v, %v", again, err)
		}
		jwks, _ := e.svc.GrantJWKS(e.ctx, agentA)
		set, err := grant.ParseJWKS(jwks)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := set.Verify(again.Grant, serialA, e.clock.Now()); err != nil {
			t.Errorf("re-signed grant does not verify: %v", err)
		}
		if !strings.Contains(grantHeader(t, again.Grant), newKID) {
			t.Errorf("re-signed grant not under %s", newKID)
		}
	})
}

// deviceA is serialA's registry entry under the current generation.
func (e *env) deviceA() server.Device {
	return server.Device{Serial: serialA, DeviceID: "DVR1101134C08011", Model: "WBXHD082S2T", Firmware: "V3.1.0",
		KeyGeneration: e.keys.CurrentGeneration()}
}

func TestIssueValidation(t *testing.T) {
	tests := []struct {
		name   string
		actor  server.Actor
		mod    func(*server.IssueRequest)
		code   server.Code
		field  string
		detail string
		msg    string
		method server.VerificationMethod // recorded in the event
	}{
		{name: "refused/auditor-may-not-issue", actor: auditor, code: server.EPermission, detail: "permission_denied", method: server.VerifyProofOfPurchase},
		{name: "refused/provisioner-may-not-issue", actor: provisioner, code: server.EPermission, detail: "permission_denied", method: server.VerifyProofOfPurchase},
		{name: "refused/agent-gives-override-reason", mod: func(r *server.IssueRequest) { r.OverrideReason = "customer is upset" },
			code: server.EPermission, field: "override_reason", detail: "permission_denied:override_reason", msg: "only a supervisor", method: server.VerifyProofOfPurchase},
		{name: "invalid/missing-request-id", mod: func(r *server.IssueRequest) { r.RequestID = "  " },
			code: server.EInvalid, field: "request_id", detail: "invalid:request_id", msg: "fresh UUID", method: server.VerifyProofOfPurchase},
		{name: "invalid/request-id-with-a-space", mod: func(r *server.IssueRequest) { r.RequestID = "req 1" },
			code: server.EInvalid, field: "request_id", detail: "invalid:request_id", method: server.VerifyProofOfPurchase},
		{name: "invalid/request-id-too-long", mod: func(r *server.IssueRequest) { r.RequestID = strings.Repeat("r", 129) },
			code: server.EInvalid, field: "request_id", detail: "invalid:request_id", method: server.VerifyProofOfPurchase},
		{name: "invalid/missing-ticket", mod: func(r *server.IssueRequest) { r.Ticket = "" },
			code: server.EInvalid, field: "ticket", detail: "invalid:ticket", msg: "ticket is required: give the support ticket reference", method: server.VerifyProofOfPurchase},
		{name: "invalid/ticket-too-long", mod: func(r *server.IssueRequest) { r.Ticket = strings.Repeat("T", 129) },
			code: server.EInvalid, field: "ticket", detail: "invalid:ticket", msg: "at most 128", method: server.VerifyProofOfPurchase},
		{name: "invalid/missing-method", mod: func(r *server.IssueRequest) { r.Method = server.VerifyUnspecified },
			code: server.EInvalid, field: "verification_method", detail: "invalid:verification_method"},
		{name: "invalid/unknown-method-not-recorded", mod: func(r *server.IssueRequest) { r.Method = 9 },
			code: server.EInvalid, field: "verification_method", detail: "invalid:verification_method"},
		{name: "invalid/other-without-note", mod: func(r *server.IssueRequest) { r.Method = server.VerifyOther },
			code: server.EInvalid, field: "verification_note", detail: "invalid:verification_note", msg: "say what was checked", method: server.VerifyOther},
		{name: "invalid/note-with-control-characters", mod: func(r *server.IssueRequest) { r.Method, r.MethodNote = server.VerifyOther, "called\x1b[2J" },
			code: server.EInvalid, field: "verification_note", detail: "invalid:verification_note", msg: "control characters", method: server.VerifyOther},
		{name: "invalid/override-reason-too-long", actor: supervisor, mod: func(r *server.IssueRequest) { r.OverrideReason = strings.Repeat("x", 501) },
			code: server.EInvalid, field: "override_reason", detail: "invalid:override_reason", method: server.VerifyProofOfPurchase},
		{name: "invalid/malformed-serial", mod: func(r *server.IssueRequest) { r.Serial = "JZ6OES#2017-08-01#3#D" },
			code: server.EInvalid, field: "serial", detail: "invalid:serial", msg: "the device id part", method: server.VerifyProofOfPurchase},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.register(serialA, "")
			req := issueRequest(serialA)
			if tt.mod != nil {
				tt.mod(&req)
			}
			a := agentA
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			_, err := e.svc.Issue(e.ctx, a, req)
			se := wantCode(t, err, tt.code)
			if se.Field != tt.field || !strings.Contains(se.Message, tt.msg) {
				t.Errorf("field %q message %q, want %q containing %q", se.Field, se.Message, tt.field, tt.msg)
			}
			evs := e.store.Events()
			if len(evs) != 1 {
				t.Fatalf("events %+v, want the refusal alone", evs)
			}
			ev := evs[0]
			wantEvent(t, ev, server.ActionIssue, server.OutcomeRefused, tt.detail)
			if ev.Actor != a.Subject || ev.Method != tt.method || len(ev.Ticket) > 128 || len(ev.Reason) > 500 || len(ev.RequestID) > 128 {
				t.Errorf("event %+v", ev)
			}
			if tt.field != "serial" && ev.Serial != serialA {
				t.Errorf("event serial %q", ev.Serial)
			}
			if list, _ := e.store.Issuances(e.ctx, supervisor, serialA, 0, 10); len(list) != 0 {
				t.Errorf("issued after a refusal: %+v", list)
			}
		})
	}
	t.Run("refused/unauthenticated-gets-no-event", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		_, err := e.svc.Issue(e.ctx, server.Actor{Subject: "mallory"}, issueRequest(serialA))
		wantCode(t, err, server.EPermission)
		if evs := e.store.Events(); len(evs) != 0 {
			t.Errorf("events %+v", evs)
		}
	})
}

// grantHeader returns the decoded JOSE header of a compact JWT.
func grantHeader(tb testing.TB, token string) string {
	tb.Helper()
	h, _, ok := strings.Cut(token, ".")
	if !ok {
		tb.Fatalf("not a JWT: %q", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// TestMintedCredentialsVerify checks what Issue hands out the way a DVR
// checks it: the voice code decodes, carries the device's own key
// generation and verifies under that generation's key only; the grant
// verifies against the published JWK set and names the issuance.
func TestMintedCredentialsVerify(t *testing.T) {
	e := newEnv(t)
	e.register(serialA, "") // generation 1
	if _, err := e.keys.Rotate("master"); err != nil {
		t.Fatal(err)
	}
	e.register(serialB, "") // generation 2
	for _, tc := range []struct {
		serial string
		gen    int
	}{{serialA, 1}, {serialB, 2}} {
		got, err := e.svc.Issue(e.ctx, agentA, issueRequest(tc.serial))
		if err != nil {
			t.Fatal(err)
		}
		if got.KeyGeneration != tc.gen {
			t.Errorf("%s: issued under generation %d, registered under %d", tc.serial, got.KeyGeneration, tc.gen)
		}
		code, err := voicecode.Decode(got.VoiceCode)
		if err != nil {
			t.Fatalf("%s: Decode(%q) = %v", tc.serial, got.VoiceCode, err)
		}
		if code.Generation != tc.gen {
			t.Errorf("%s: code carries generation %d, want %d", tc.serial, code.Generation, tc.gen)
		}
		k, err := e.keys.DeviceKey(tc.serial, tc.gen)
		if err != nil {
			t.Fatal(err)
		}
		f, err := code.Verify(k, tc.serial, e.clock.Now())
		if err != nil || f.Seq8 != uint8(got.Sequence) || !f.IssuedAt.Equal(voicecode.SlotStart(got.IssuedAt)) {
			t.Errorf("%s: Verify = %+v, %v", tc.serial, f, err)
		}
		other, _ := e.keys.DeviceKey(tc.serial, 3-tc.gen)
		if _, err := code.Verify(other, tc.serial, e.clock.Now()); !errors.Is(err, voicecode.ErrWrongCode) {
			t.Errorf("%s: the code verifies under generation %d too: %v", tc.serial, 3-tc.gen, err)
		}
		if _, err := code.Verify(k, serialC, e.clock.Now()); !errors.Is(err, voicecode.ErrWrongCode) {
			t.Errorf("%s: the code verifies for another device: %v", tc.serial, err)
		}
		if voicecode.Phonetic(got.VoiceCode) != got.Phonetic {
			t.Errorf("phonetic %q", got.Phonetic)
		}

		jwks, err := e.svc.GrantJWKS(e.ctx, agentA)
		if err != nil {
			t.Fatal(err)
		}
		set, err := grant.ParseJWKS(jwks)
		if err != nil {
			t.Fatal(err)
		}
		c, err := set.Verify(got.Grant, tc.serial, e.clock.Now())
		if err != nil {
			t.Fatalf("%s: grant does not verify: %v", tc.serial, err)
		}
		if c.ID != got.ID || c.Sequence != got.Sequence || c.Subject != tc.serial || !c.ExpiresAt.Time.Equal(got.ExpiresAt) {
			t.Errorf("%s: grant claims %+v for %+v", tc.serial, c, got.Issuance)
		}
		if _, err := set.Verify(got.Grant, serialC, e.clock.Now()); !errors.Is(err, grant.ErrWrongDevice) {
			t.Errorf("%s: grant accepted by another device: %v", tc.serial, err)
		}
	}
}
