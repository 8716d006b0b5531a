package server_test

// Tests of the audit log's readers on server.Service: QueryAudit,
// ExportAudit, SummarizeAudit, AuditCheckpoint and VerifyAudit, with and
// without an AuditLog: the roles, the filter's validation, what reaches the
// store, and the audit event each read or refusal writes.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/server"
)

func TestQueryAudit(t *testing.T) {
	tests := []struct {
		name   string
		actor  server.Actor
		filter server.AuditFilter
		want   server.AuditFilter // as the store gets it
		code   server.Code
		detail string
	}{
		// The store is asked for one more than the page, to know whether
		// another page follows.
		{name: "allowed/default-page-size", want: server.AuditFilter{Limit: server.DefaultAuditPage + 1}},
		{name: "allowed/supervisor-with-a-full-filter", actor: supervisor,
			filter: server.AuditFilter{Serial: " jz6oes#2017-08-01#3#dvr1101134c08011", Actor: "alice", Action: server.ActionIssue,
				Outcome: server.OutcomeRefused, From: start.Add(-time.Hour), To: start, Limit: server.MaxAuditPage, AfterID: 9},
			want: server.AuditFilter{Serial: serialA, Actor: "alice", Action: server.ActionIssue,
				Outcome: server.OutcomeRefused, From: start.Add(-time.Hour), To: start, Limit: server.MaxAuditPage + 1, AfterID: 9,
				HideAuditorReads: true}},
		{name: "refused/agent-may-not-read-the-log", actor: agentA, code: server.EPermission, detail: "permission_denied"},
		{name: "invalid/serial", filter: server.AuditFilter{Serial: "DVR1101134C08011"}, code: server.EInvalid, detail: "invalid:serial"},
		{name: "invalid/actor-too-long", filter: server.AuditFilter{Actor: strings.Repeat("a", 129)}, code: server.EInvalid, detail: "invalid:actor"},
		{name: "invalid/action", filter: server.AuditFilter{Action: "Issue"}, code: server.EInvalid, detail: "invalid:action"},
		{name: "invalid/outcome", filter: server.AuditFilter{Outcome: "maybe"}, code: server.EInvalid, detail: "invalid:outcome"},
		{name: "invalid/empty-range", filter: server.AuditFilter{From: start, To: start}, code: server.EInvalid, detail: "invalid:end_time"},
		{name: "clamped/page-size-too-large", filter: server.AuditFilter{Limit: server.MaxAuditPage + 1}, want: server.AuditFilter{Limit: server.MaxAuditPage + 1}},
		{name: "invalid/page-size-negative", filter: server.AuditFilter{Limit: -1}, code: server.EInvalid, detail: "invalid:page_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var got *server.AuditFilter
			e.store.QueryAuditFn = func(_ context.Context, _ server.Actor, f server.AuditFilter) ([]server.AuditEvent, error) {
				got = &f
				return nil, nil
			}
			a := auditor
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			_, _, err := e.svc.QueryAudit(e.ctx, a, tt.filter)
			if tt.code != "" {
				wantCode(t, err, tt.code)
				wantEvent(t, e.store.LastEvent(), server.ActionAuditQuery, server.OutcomeRefused, tt.detail)
				if got != nil {
					t.Errorf("the store was asked after a refusal")
				}
				return
			}
			if err != nil || got == nil || *got != tt.want {
				t.Errorf("QueryAudit: %v; the store got %+v, want %+v", err, got, tt.want)
			}
		})
	}
	t.Run("allowed/newest-first-and-recorded", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		e.svc.LookupDevice(e.ctx, agentA, serialA)
		e.clock.Advance(time.Second)
		e.svc.Authorize(e.ctx, agentA, server.ActionHold)
		evs, _, err := e.svc.QueryAudit(e.ctx, auditor, server.AuditFilter{Actor: "alice"})
		if err != nil || len(evs) != 2 || evs[0].Action != server.ActionHold || evs[1].Action != server.ActionLookup {
			t.Fatalf("QueryAudit = %+v, %v", evs, err)
		}
		wantEvent(t, e.store.LastEvent(), server.ActionAuditQuery, server.OutcomeSuccess, "limit=101")
	})
}

func TestExportAudit(t *testing.T) {
	t.Run("allowed/limit-and-cursor-ignored", func(t *testing.T) {
		e := newEnv(t)
		var got server.AuditFilter
		e.store.ExportAuditFn = func(_ context.Context, _ server.Actor, f server.AuditFilter, fn func(server.AuditEvent) error) error {
			got = f
			return fn(server.AuditEvent{ID: 1})
		}
		n := 0
		err := e.svc.ExportAudit(e.ctx, supervisor, server.AuditFilter{Serial: serialA, Limit: 5000, AfterTime: start, AfterID: 7},
			func(server.AuditEvent) error { n++; return nil })
		if err != nil || n != 1 || got != (server.AuditFilter{Serial: serialA, HideAuditorReads: true}) {
			t.Errorf("ExportAudit: %v, %d events; the store got %+v", err, n, got)
		}
	})
	t.Run("allowed/oldest-first-recorded-before-the-first-event", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		e.svc.LookupDevice(e.ctx, agentA, serialA)
		e.svc.LookupDevice(e.ctx, agentB, serialA)
		var acts []string
		err := e.svc.ExportAudit(e.ctx, auditor, server.AuditFilter{}, func(ev server.AuditEvent) error {
			acts = append(acts, ev.Actor+" "+string(ev.Action))
			return nil
		})
		if err != nil || strings.Join(acts, ",") != "alice device.lookup,bob device.lookup,audrey audit.export" {
			t.Errorf("ExportAudit: %v, %q", err, acts)
		}
	})
	t.Run("error/the-callback-stops-the-export", func(t *testing.T) {
		e := newEnv(t)
		e.svc.Authorize(e.ctx, agentA, server.ActionHold)
		stop := errors.New("client went away")
		if err := e.svc.ExportAudit(e.ctx, auditor, server.AuditFilter{}, func(server.AuditEvent) error { return stop }); !errors.Is(err, stop) {
			t.Errorf("ExportAudit = %v, want %v", err, stop)
		}
	})
	for _, tt := range []struct {
		name   string
		actor  server.Actor
		filter server.AuditFilter
		code   server.Code
		detail string
	}{
		{"refused/agent-may-not-export", agentA, server.AuditFilter{}, server.EPermission, "permission_denied"},
		{"invalid/outcome", auditor, server.AuditFilter{Outcome: "refusedd"}, server.EInvalid, "invalid:outcome"},
		{"invalid/reversed-range", auditor, server.AuditFilter{From: start, To: start.Add(-time.Hour)}, server.EInvalid, "invalid:end_time"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			err := e.svc.ExportAudit(e.ctx, tt.actor, tt.filter, func(server.AuditEvent) error {
				t.Error("an event was exported after a refusal")
				return nil
			})
			wantCode(t, err, tt.code)
			wantEvent(t, e.store.LastEvent(), server.ActionAuditExport, server.OutcomeRefused, tt.detail)
		})
	}
}

func TestSummarizeAudit(t *testing.T) {
	tests := []struct {
		name           string
		actor          server.Actor
		from, to       time.Time
		wantFrom, want time.Time
		code           server.Code
		field          string
	}{
		{name: "allowed/default-range-ends-now", wantFrom: start.Add(-server.DefaultSummaryRange), want: start},
		{name: "allowed/from-given", from: start.Add(-time.Hour), wantFrom: start.Add(-time.Hour), want: start},
		{name: "allowed/range-in-another-zone-is-utc", from: start.Add(-48 * time.Hour).In(time.FixedZone("X", 3600)), to: start.In(time.FixedZone("Y", -7200)),
			wantFrom: start.Add(-48 * time.Hour), want: start},
		{name: "allowed/longest-range", from: start.Add(-server.MaxSummaryRange), to: start, wantFrom: start.Add(-server.MaxSummaryRange), want: start},
		{name: "refused/agent-may-not-summarise", actor: agentA, code: server.EPermission},
		{name: "invalid/empty-range", from: start, to: start, code: server.EInvalid, field: "end_time"},
		{name: "invalid/range-too-long", from: start.Add(-server.MaxSummaryRange - time.Hour), to: start, code: server.EInvalid, field: "start_time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var gotFrom, gotTo time.Time
			e.store.SummarizeAuditFn = func(_ context.Context, _ server.Actor, from, to time.Time) (server.AuditSummary, error) {
				gotFrom, gotTo = from, to
				return server.AuditSummary{From: from, To: to}, nil
			}
			a := auditor
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			_, err := e.svc.SummarizeAudit(e.ctx, a, tt.from, tt.to)
			if tt.code != "" {
				se := wantCode(t, err, tt.code)
				if se.Field != tt.field {
					t.Errorf("field %q, want %q", se.Field, tt.field)
				}
				detail := string(tt.code)
				if tt.field != "" {
					detail += ":" + tt.field
				}
				wantEvent(t, e.store.LastEvent(), server.ActionAuditSummary, server.OutcomeRefused, detail)
				return
			}
			if err != nil || gotFrom != tt.wantFrom || gotTo != tt.want {
				t.Errorf("SummarizeAudit: %v; the store got [%v, %v), want [%v, %v)", err, gotFrom, gotTo, tt.wantFrom, tt.want)
			}
		})
	}
	t.Run("allowed/counts-from-the-log", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		e.svc.Issue(e.ctx, agentA, issueRequest(serialA))
		e.svc.Issue(e.ctx, auditor, issueRequest(serialA))
		e.clock.Advance(time.Minute)
		s, err := e.svc.SummarizeAudit(e.ctx, supervisor, time.Time{}, time.Time{})
		if err != nil || len(s.PerAgentDay) != 1 || s.PerAgentDay[0].Count != 1 || len(s.Refusals) != 1 ||
			s.Refusals[0].Reason != "permission_denied" {
			t.Fatalf("SummarizeAudit = %+v, %v", s, err)
		}
		wantEvent(t, e.store.LastEvent(), server.ActionAuditSummary, server.OutcomeSuccess, "")
	})
}

func TestAuditCheckpoint(t *testing.T) {
	cp := server.AuditCheckpoint{Text: "hotline audit checkpoint\n9\nab\n", Size: 9, Head: "ab", Time: start, KID: "audit-1"}
	tests := []struct {
		name    string
		actor   server.Actor
		noLog   bool
		latest  func(context.Context) (server.AuditCheckpoint, bool, error)
		auditFn func(context.Context, server.AuditEvent) error
		code    server.Code
		events  []string
	}{
		{name: "allowed/latest-checkpoint", events: []string{"audit.checkpoint success size=9 kid=audit-1"}},
		{name: "refused/agent-may-not-read-it", actor: agentA, code: server.EPermission, events: []string{"audit.checkpoint refused permission_denied"}},
		{name: "precondition/no-audit-log-configured", noLog: true, code: server.EPrecondition,
			events: []string{"audit.checkpoint refused failed_precondition"}},
		{name: "precondition/nothing-sealed-yet", latest: func(context.Context) (server.AuditCheckpoint, bool, error) {
			return server.AuditCheckpoint{}, false, nil
		}, code: server.EPrecondition, events: []string{"audit.checkpoint refused failed_precondition"}},
		{name: "internal/log-unreadable", latest: func(context.Context) (server.AuditCheckpoint, bool, error) {
			return server.AuditCheckpoint{}, false, errors.New("connection reset")
		}, code: server.EInternal},
		{name: "unavailable/log-error-passes-through", latest: func(context.Context) (server.AuditCheckpoint, bool, error) {
			return server.AuditCheckpoint{}, false, server.Errorf(server.EUnavailable, "busy")
		}, code: server.EUnavailable},
		{name: "internal/recording-the-read-fails", auditFn: func(context.Context, server.AuditEvent) error {
			return errors.New("disk full")
		}, code: server.EInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if !tt.noLog {
				e.svc.AuditLog = &fakeAuditLog{LatestCheckpointFn: func(context.Context) (server.AuditCheckpoint, bool, error) { return cp, true, nil }}
				if tt.latest != nil {
					e.svc.AuditLog = &fakeAuditLog{LatestCheckpointFn: tt.latest}
				}
			}
			e.store.AuditFn = tt.auditFn
			a := auditor
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			got, err := e.svc.AuditCheckpoint(e.ctx, a)
			var evs []string
			for _, ev := range e.store.Events() {
				evs = append(evs, fmt.Sprintf("%s %s %s", ev.Action, ev.Outcome, ev.Detail))
			}
			if strings.Join(evs, "\n") != strings.Join(tt.events, "\n") {
				t.Errorf("events %q, want %q", evs, tt.events)
			}
			if tt.code != "" {
				se := wantCode(t, err, tt.code)
				if tt.code == server.EInternal && strings.Contains(se.Message, "reset") {
					t.Errorf("cause shown: %q", se.Message)
				}
				return
			}
			if err != nil || got != cp {
				t.Errorf("AuditCheckpoint = %+v, %v", got, err)
			}
		})
	}
	t.Run("canceled/passes-through", func(t *testing.T) {
		e := newEnv(t)
		e.svc.AuditLog = &fakeAuditLog{LatestCheckpointFn: func(ctx context.Context) (server.AuditCheckpoint, bool, error) {
			return server.AuditCheckpoint{}, false, fmt.Errorf("reading: %w", context.Canceled)
		}}
		_, err := e.svc.AuditCheckpoint(e.ctx, auditor)
		if se := (*server.Error)(nil); !errors.Is(err, context.Canceled) || errors.As(err, &se) {
			t.Errorf("AuditCheckpoint = %v", err)
		}
	})
}

func TestVerifyAudit(t *testing.T) {
	ok := server.AuditReport{Events: 10, Sealed: 9, Unsealed: 1, Checkpoints: 2, Head: "ab"}
	tests := []struct {
		name     string
		actor    server.Actor
		noLog    bool
		external []byte
		verify   func(context.Context, []byte) (server.AuditReport, error)
		code     server.Code
		field    string
		detail   string
		problem  bool
	}{
		{name: "verified/chain-and-stored-checkpoints", detail: "ok=true events=10 sealed=9 checkpoints=2"},
		{name: "verified/external-checkpoint", external: []byte("checkpoint"), verify: func(_ context.Context, ext []byte) (server.AuditReport, error) {
			r := ok
			r.External = string(ext) == "checkpoint"
			return r, nil
		}, detail: "ok=true events=10 sealed=9 checkpoints=2 external=true"},
		{name: "failed/changed-event-is-a-report", verify: func(context.Context, []byte) (server.AuditReport, error) {
			r := ok
			r.Problem = &server.AuditProblem{Kind: "changed", Seq: 3, EventID: 7, Message: "event 7 was changed"}
			return r, nil
		}, detail: "ok=false events=10 sealed=9 checkpoints=2 problem=changed seq=3 event=7", problem: true},
		{name: "refused/provisioner-may-not-verify", actor: provisioner, code: server.EPermission, detail: "permission_denied"},
		{name: "precondition/no-audit-log-configured", noLog: true, code: server.EPrecondition, detail: "failed_precondition"},
		{name: "invalid/checkpoint-too-long", external: make([]byte, server.MaxCheckpointText+1), code: server.EInvalid, field: "checkpoint",
			detail: "invalid:checkpoint"},
		{name: "invalid/checkpoint-does-not-verify", external: []byte("forged"), verify: func(context.Context, []byte) (server.AuditReport, error) {
			return server.AuditReport{}, server.Invalid("checkpoint", "checkpoint: bad signature")
		}, code: server.EInvalid, field: "checkpoint", detail: "invalid:checkpoint"},
		{name: "internal/verification-fails", verify: func(context.Context, []byte) (server.AuditReport, error) {
			return server.AuditReport{}, errors.New("connection reset")
		}, code: server.EInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if !tt.noLog {
				e.svc.AuditLog = &fakeAuditLog{VerifyFn: tt.verify}
			}
			a := auditor
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			r, err := e.svc.VerifyAudit(e.ctx, a, tt.external)
			if tt.code != "" {
				if se := wantCode(t, err, tt.code); se.Field != tt.field {
					t.Errorf("field %q, want %q", se.Field, tt.field)
				}
				if tt.detail != "" {
					wantEvent(t, e.store.LastEvent(), server.ActionAuditVerify, server.OutcomeRefused, tt.detail)
				} else if n := len(e.store.Events()); n != 0 {
					t.Errorf("%d events after an internal error", n)
				}
				return
			}
			if err != nil || r.OK() == tt.problem {
				t.Fatalf("VerifyAudit = %+v, %v", r, err)
			}
			wantEvent(t, e.store.LastEvent(), server.ActionAuditVerify, server.OutcomeSuccess, tt.detail)
		})
	}
	t.Run("internal/recording-the-verification-fails", func(t *testing.T) {
		e := newEnv(t)
		e.svc.AuditLog = &fakeAuditLog{}
		e.store.AuditFn = func(context.Context, server.AuditEvent) error { return server.Errorf(server.EUnavailable, "busy") }
		if _, err := e.svc.VerifyAudit(e.ctx, supervisor, nil); server.ErrorCode(err) != server.EUnavailable {
			t.Errorf("VerifyAudit = %v, want the recording's error", err)
		}
	})
}
