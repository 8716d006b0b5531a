package server_test

// Tests of the approval policy: server.DecideApproval on facts built by
// hand (who may answer, four eyes, expiry, answered requests), and the
// whole round on the in-memory store: an agent over a limit asks, the
// queue shows it, a supervisor other than the requester grants, the
// issuance is the supervisor's override on the request's behalf, and only
// the requester is shown its code; every step audited.

import (
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
)

func TestDecideApproval(t *testing.T) {
	now := start
	supB := server.Actor{Subject: "sam", Role: server.RoleSupervisor}
	pending := server.Approval{ID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Request: issueRequest(serialA), Requester: agentA.Subject,
		RequesterRole: server.RoleAgent, Blocked: server.ReasonLimitPerDevice, Reason: "shop cameras down", State: server.ApprovalPending,
		CreatedAt: now.Add(-10 * time.Minute), ExpiresAt: now.Add(20 * time.Minute)}
	tests := []struct {
		name    string
		actor   server.Actor
		grant   bool
		mod     func(*server.Approval)
		code    server.Code
		state   server.ApprovalState
		issue   bool
		actions []server.Action
		detail  string // of the last event
	}{
		{name: "granted/by-another-supervisor", actor: supervisor, grant: true, state: server.ApprovalGranted, issue: true,
			actions: []server.Action{server.ActionApprovalGrant}, detail: "requester=alice"},
		{name: "denied/by-another-supervisor", actor: supervisor, state: server.ApprovalDenied,
			actions: []server.Action{server.ActionApprovalDeny}, detail: "requester=alice"},
		{name: "refused/self-approval", actor: supervisor, grant: true, mod: func(ap *server.Approval) {
			ap.Requester, ap.RequesterRole = supervisor.Subject, server.RoleSupervisor
		}, code: server.EPermission, actions: []server.Action{server.ActionApprovalGrant}, detail: "self_approval"},
		{name: "refused/self-denial", actor: supervisor, mod: func(ap *server.Approval) { ap.Requester = supervisor.Subject },
			code: server.EPermission, actions: []server.Action{server.ActionApprovalDeny}, detail: "self_approval"},
		{name: "refused/agent-answers", actor: agentB, grant: true, code: server.EPermission,
			actions: []server.Action{server.ActionApprovalGrant}, detail: "role"},
		{name: "expired/answered-after-the-deadline", actor: supervisor, grant: true, mod: func(ap *server.Approval) { ap.ExpiresAt = now },
			code: server.EPrecondition, state: server.ApprovalExpired,
			actions: []server.Action{server.ActionApprovalExpire, server.ActionApprovalGrant}, detail: "expired"},
		{name: "allowed/answered-just-before-the-deadline", actor: supervisor, grant: true, mod: func(ap *server.Approval) { ap.ExpiresAt = now.Add(time.Second) },
			state: server.ApprovalGranted, issue: true, actions: []server.Action{server.ActionApprovalGrant}, detail: "requester=alice"},
		{name: "refused/already-denied", actor: supervisor, grant: true, mod: func(ap *server.Approval) { ap.State, ap.DecidedBy = server.ApprovalDenied, supB.Subject },
			code: server.EConflict, actions: []server.Action{server.ActionApprovalGrant}, detail: "already_denied"},
		{name: "refused/already-granted-by-another", actor: supervisor, grant: true, mod: func(ap *server.Approval) { ap.State, ap.DecidedBy = server.ApprovalGranted, supB.Subject },
			code: server.EConflict, actions: []server.Action{server.ActionApprovalGrant}, detail: "already_granted"},
		{name: "retried/granting-supervisor-issues-what-was-not-issued", actor: supB, grant: true,
			mod:   func(ap *server.Approval) { ap.State, ap.DecidedBy = server.ApprovalGranted, supB.Subject },
			issue: true, actions: []server.Action{server.ActionApprovalGrant}, detail: "retry_issue"},
		{name: "refused/granted-and-issued-already", actor: supB, grant: true,
			mod: func(ap *server.Approval) {
				ap.State, ap.DecidedBy, ap.IssuanceID = server.ApprovalGranted, supB.Subject, "iss-1"
			},
			code: server.EConflict, actions: []server.Action{server.ActionApprovalGrant}, detail: "already_granted"},
		{name: "refused/already-expired", actor: supervisor, grant: true, mod: func(ap *server.Approval) { ap.State = server.ApprovalExpired },
			code: server.EConflict, actions: []server.Action{server.ActionApprovalGrant}, detail: "already_expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ap := pending
			if tc.mod != nil {
				tc.mod(&ap)
			}
			d := server.DecideApproval(server.ApprovalFacts{Actor: tc.actor, Grant: tc.grant, Comment: "ok by me", Approval: ap, Now: now})
			if tc.code == "" && d.Refusal != nil || tc.code != "" && (d.Refusal == nil || d.Refusal.Code != tc.code) {
				t.Fatalf("refusal %v, want code %q", d.Refusal, tc.code)
			}
			if d.State != tc.state || d.Issue != tc.issue {
				t.Errorf("state %q issue %v, want %q %v", d.State, d.Issue, tc.state, tc.issue)
			}
			if (d.State == server.ApprovalGranted || d.State == server.ApprovalDenied) && (d.DecidedBy != tc.actor.Subject || d.Comment != "ok by me") {
				t.Errorf("decided by %q with %q", d.DecidedBy, d.Comment)
			}
			if len(d.Events) != len(tc.actions) {
				t.Fatalf("%d events, want %v", len(d.Events), tc.actions)
			}
			for i, ev := range d.Events {
				if ev.Action != tc.actions[i] || !strings.HasPrefix(ev.Detail, "approval="+ap.ID) || ev.Serial != serialA {
					t.Errorf("event %d: %s %q serial %q, want %s with the approval", i, ev.Action, ev.Detail, ev.Serial, tc.actions[i])
				}
			}
			last := d.Events[len(d.Events)-1]
			if want := "approval=" + ap.ID + " " + tc.detail; last.Detail != want {
				t.Errorf("detail %q, want %q", last.Detail, want)
			}
			if (last.Outcome == server.OutcomeRefused) != (tc.code != "") || last.Actor != tc.actor.Subject || last.Reason != "ok by me" {
				t.Errorf("last event %+v", last)
			}
		})
	}
}

func TestExpireApproval(t *testing.T) {
	ap := server.Approval{ID: "x", Requester: "alice", RequesterRole: server.RoleAgent, State: server.ApprovalPending, ExpiresAt: start}
	if _, ok := server.ExpireApproval(ap, start.Add(-time.Nanosecond)); ok {
		t.Error("expired before its deadline")
	}
	d, ok := server.ExpireApproval(ap, start)
	if !ok || d.State != server.ApprovalExpired || len(d.Events) != 1 || d.Events[0].Action != server.ActionApprovalExpire || d.Events[0].Actor != "alice" {
		t.Errorf("at the deadline: %v %+v", ok, d)
	}
	ap.State = server.ApprovalGranted
	if _, ok := server.ExpireApproval(ap, start.Add(time.Hour)); ok {
		t.Error("a granted request expired")
	}
}

// overLimit registers serialA and uses up its per-device limit.
func overLimit(t *testing.T, e *env) server.IssueRequest {
	t.Helper()
	e.register(serialA, "owner@example.com")
	for range testLimits.PerDevice {
		if _, err := e.svc.Issue(e.ctx, agentB, issueRequest(serialA)); err != nil {
			t.Fatal(err)
		}
	}
	req := issueRequest(serialA)
	_, err := e.svc.Issue(e.ctx, agentA, req)
	if se := wantCode(t, err, server.ELimit); se.ReasonOf() != server.ReasonLimitPerDevice {
		t.Fatalf("reason %s", se.ReasonOf())
	}
	return req
}

func TestApprovalGrantedAndShownToTheRequesterOnly(t *testing.T) {
	e := newEnv(t)
	req := overLimit(t, e)
	ap, err := e.svc.RequestApproval(e.ctx, agentA, req, server.ReasonLimitPerDevice, "caller's shop is blind")
	if err != nil {
		t.Fatal(err)
	}
	wantEvent(t, e.store.LastEvent(), server.ActionApprovalRequest, server.OutcomeSuccess, "approval="+ap.ID+" blocked=LIMIT_PER_DEVICE")
	if again, err := e.svc.RequestApproval(e.ctx, agentA, req, server.ReasonLimitPerDevice, "twice"); err != nil || again.ID != ap.ID {
		t.Fatalf("asking twice for one form: %v, %s want %s", err, again.ID, ap.ID)
	}
	q, err := e.svc.PendingApprovals(e.ctx, supervisor)
	if err != nil || len(q) != 1 || q[0].ID != ap.ID || !q[0].ExpiresAt.Equal(start.Add(server.ApprovalTTL)) {
		t.Fatalf("queue %+v, %v", q, err)
	}
	if _, err := e.svc.PendingApprovals(e.ctx, agentA); err == nil {
		t.Fatal("an agent read the supervisors' queue")
	}
	if _, err := e.svc.ApprovedCode(e.ctx, agentA, ap.ID); err == nil {
		t.Fatal("a code was shown for a pending request")
	}
	if _, err := e.svc.AnswerApproval(e.ctx, supervisor, ap.ID, true, ""); err == nil {
		t.Fatal("granted without a comment")
	}
	e.clock.Advance(time.Minute)
	got, err := e.svc.AnswerApproval(e.ctx, supervisor, ap.ID, true, "known customer")
	if err != nil || got.State != server.ApprovalGranted || got.IssuanceID == "" || got.DecidedBy != supervisor.Subject {
		t.Fatalf("grant: %+v, %v", got, err)
	}
	if _, err := e.svc.AnswerApproval(e.ctx, server.Actor{Subject: "sam", Role: server.RoleSupervisor}, ap.ID, false, "no"); err == nil {
		t.Fatal("a granted request was denied afterwards")
	}
	if _, err := e.svc.ApprovedCode(e.ctx, agentB, ap.ID); wantCode(t, err, server.EPermission) == nil {
		t.Fatal("unreachable")
	}
	wantEvent(t, e.store.LastEvent(), server.ActionApprovalReveal, server.OutcomeRefused, "approval="+ap.ID+" not_requester")
	out, err := e.svc.ApprovedCode(e.ctx, agentA, ap.ID)
	if err != nil {
		t.Fatal(err)
	}
	iss := out.Issuance
	if iss.ID != got.IssuanceID || iss.Actor != supervisor.Subject || iss.Ticket != req.Ticket || iss.Method != req.Method ||
		iss.RequestID != "approval:"+ap.ID || !strings.Contains(iss.OverrideReason, "alice") || !strings.Contains(iss.OverrideReason, "known customer") {
		t.Fatalf("the approved issuance %+v", iss)
	}
	k, _ := e.keys.DeviceKey(serialA, iss.KeyGeneration)
	code, err := voicecode.Decode(out.VoiceCode)
	if err == nil {
		_, err = code.Verify(k, serialA, e.clock.Now())
	}
	if err != nil {
		t.Fatalf("the approved code does not verify: %v", err)
	}
	var acts []server.Action
	for _, ev := range e.store.Events() {
		if strings.Contains(ev.Detail, "approval="+ap.ID) || ev.RequestID == "approval:"+ap.ID {
			acts = append(acts, ev.Action)
		}
	}
	// Asked; shown while pending (refused); granted, issued (over the
	// per-device limit: an alert for the auditors); denied after the grant
	// (refused); shown to another agent (refused); shown.
	want := []server.Action{server.ActionApprovalRequest, server.ActionApprovalReveal, server.ActionApprovalGrant, server.ActionIssue,
		server.ActionIssueAlert, server.ActionApprovalDeny, server.ActionApprovalReveal, server.ActionApprovalReveal}
	if strings.Join(toStrings(acts), " ") != strings.Join(toStrings(want), " ") {
		t.Errorf("audit trail %v, want %v", acts, want)
	}
}

func toStrings(as []server.Action) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = string(a)
	}
	return out
}

func TestApprovalSelfApprovalRefused(t *testing.T) {
	e := newEnv(t)
	overLimit(t, e)
	req := issueRequest(serialA)
	ap, err := e.svc.RequestApproval(e.ctx, supervisor, req, server.ReasonLimitPerDevice, "second pair of eyes")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.AnswerApproval(e.ctx, supervisor, ap.ID, true, "fine")
	wantCode(t, err, server.EPermission)
	wantEvent(t, e.store.LastEvent(), server.ActionApprovalGrant, server.OutcomeRefused, "approval="+ap.ID+" self_approval")
	if st, _ := e.svc.ApprovalStatus(e.ctx, supervisor, ap.ID); st.State != server.ApprovalPending {
		t.Fatalf("after a refused self-approval the request is %s", st.State)
	}
}

func TestApprovalExpiresUnanswered(t *testing.T) {
	e := newEnv(t)
	req := overLimit(t, e)
	ap, err := e.svc.RequestApproval(e.ctx, agentA, req, server.ReasonLimitPerDevice, "please")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(server.ApprovalTTL)
	st, err := e.svc.ApprovalStatus(e.ctx, agentA, ap.ID)
	if err != nil || st.State != server.ApprovalExpired {
		t.Fatalf("after %s: %s, %v", server.ApprovalTTL, st.State, err)
	}
	wantEvent(t, e.store.LastEvent(), server.ActionApprovalExpire, server.OutcomeRefused, "approval="+ap.ID+" unanswered=30m0s")
	if q, _ := e.svc.PendingApprovals(e.ctx, supervisor); len(q) != 0 {
		t.Fatalf("an expired request is still queued: %+v", q)
	}
	_, err = e.svc.AnswerApproval(e.ctx, supervisor, ap.ID, true, "late")
	wantCode(t, err, server.EConflict)
}

func TestApprovalLateAnswerExpiresIt(t *testing.T) {
	e := newEnv(t)
	req := overLimit(t, e)
	ap, _ := e.svc.RequestApproval(e.ctx, agentA, req, server.ReasonLimitPerDevice, "please")
	e.clock.Advance(server.ApprovalTTL + time.Second)
	_, err := e.svc.AnswerApproval(e.ctx, supervisor, ap.ID, true, "late")
	wantCode(t, err, server.EPrecondition)
	evs := e.store.Events()
	wantEvent(t, evs[len(evs)-2], server.ActionApprovalExpire, server.OutcomeRefused, "approval="+ap.ID+" unanswered=30m0s")
	wantEvent(t, evs[len(evs)-1], server.ActionApprovalGrant, server.OutcomeRefused, "approval="+ap.ID+" expired")
}

func TestRequestApprovalRefused(t *testing.T) {
	e := newEnv(t)
	e.register(serialA, "owner@example.com")
	tests := []struct {
		name    string
		actor   server.Actor
		mod     func(*server.IssueRequest)
		blocked server.Reason
		reason  string
		code    server.Code
		field   string
	}{
		{name: "refused/auditor", actor: auditor, blocked: server.ReasonLimitPerDevice, reason: "x", code: server.EPermission},
		{name: "refused/not-an-approvable-refusal", actor: agentA, blocked: server.ReasonDeviceOnHold, reason: "x", code: server.EInvalid, field: "blocked"},
		{name: "refused/no-reason", actor: agentA, blocked: server.ReasonLimitPerAgent, reason: "  ", code: server.EInvalid, field: "reason"},
		{name: "refused/no-ticket", actor: agentA, mod: func(r *server.IssueRequest) { r.Ticket = "" }, blocked: server.ReasonLimitPerDevice, reason: "x", code: server.EInvalid, field: "ticket"},
		{name: "refused/malformed-request-code", actor: agentA, mod: func(r *server.IssueRequest) { r.RequestCode = "nope" }, blocked: server.ReasonLimitPerDevice, reason: "x", code: server.EInvalid, field: "request_code"},
		{name: "refused/owner-email-code-the-supervisor-cannot-spend", actor: agentA, mod: func(r *server.IssueRequest) { r.Method = server.VerifyOwnerEmailCode }, blocked: server.ReasonLimitPerDevice, reason: "x", code: server.EInvalid, field: "verification_method"},
		{name: "refused/e-mail-delivery-never-shown-to-the-requester", actor: agentA, mod: func(r *server.IssueRequest) { r.Delivery = server.DeliveryEmail }, blocked: server.ReasonLimitPerDevice, reason: "x", code: server.EInvalid, field: "delivery"},
		{name: "refused/unknown-device", actor: agentA, mod: func(r *server.IssueRequest) { r.Serial = unknownSerial }, blocked: server.ReasonLimitPerDevice, reason: "x", code: server.ENotFound, field: "serial"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := issueRequest(serialA)
			if tc.mod != nil {
				tc.mod(&req)
			}
			n := len(e.store.Events())
			_, err := e.svc.RequestApproval(e.ctx, tc.actor, req, tc.blocked, tc.reason)
			if se := wantCode(t, err, tc.code); se.Field != tc.field {
				t.Errorf("field %q, want %q", se.Field, tc.field)
			}
			if ev := e.store.LastEvent(); len(e.store.Events()) != n+1 || ev.Action != server.ActionApprovalRequest || ev.Outcome != server.OutcomeRefused {
				t.Errorf("refusal not audited: %+v", ev)
			}
		})
	}
}

// TestApprovedCodeIsNotShownForAStolenOrExpiredDevice: a device put on hold
// after the grant, or a code whose 24 hours have passed, is refused at the
// reveal as a replay of the issuance would be.
func TestApprovedCodeIsNotShownForAStolenOrExpiredDevice(t *testing.T) {
	grantOne := func(t *testing.T) (*env, server.Approval) {
		e := newEnv(t)
		ap, err := e.svc.RequestApproval(e.ctx, agentA, overLimit(t, e), server.ReasonLimitPerDevice, "caller's shop is blind")
		if err != nil {
			t.Fatal(err)
		}
		if ap, err = e.svc.AnswerApproval(e.ctx, supervisor, ap.ID, true, "known customer"); err != nil {
			t.Fatal(err)
		}
		return e, ap
	}
	t.Run("refused/device-put-on-hold-after-the-grant", func(t *testing.T) {
		e, ap := grantOne(t)
		if _, err := e.svc.HoldDevice(e.ctx, supervisor, serialA, "reported stolen"); err != nil {
			t.Fatal(err)
		}
		_, err := e.svc.ApprovedCode(e.ctx, agentA, ap.ID)
		if se := wantCode(t, err, server.EPrecondition); se.Reason != server.ReasonDeviceOnHold {
			t.Errorf("reason %s, want DEVICE_ON_HOLD", se.Reason)
		}
		wantEvent(t, e.store.LastEvent(), server.ActionApprovalReveal, server.OutcomeRefused, "approval="+ap.ID+" on_hold")
	})
	t.Run("refused/code-expired-before-the-reveal", func(t *testing.T) {
		e, ap := grantOne(t)
		e.clock.Advance(25 * time.Hour)
		_, err := e.svc.ApprovedCode(e.ctx, agentA, ap.ID)
		if se := wantCode(t, err, server.EPrecondition); se.Reason != server.ReasonIssuanceExpired {
			t.Errorf("reason %s, want ISSUANCE_EXPIRED", se.Reason)
		}
	})
	t.Run("refused/approval-linked-to-another-issuance", func(t *testing.T) {
		e, ap := grantOne(t)
		// As if the database's login relinked the approval to an issuance
		// the grant did not make.
		e.register(serialB, "")
		other, err := e.svc.Issue(e.ctx, supervisor, issueRequest(serialB))
		if err != nil {
			t.Fatal(err)
		}
		e.store.approval(ap.ID).IssuanceID = other.ID
		_, err = e.svc.ApprovedCode(e.ctx, agentA, ap.ID)
		wantCode(t, err, server.EPrecondition)
		wantEvent(t, e.store.LastEvent(), server.ActionApprovalReveal, server.OutcomeRefused, "approval="+ap.ID+" issuance_mismatch")
	})
}

// TestSupervisorCannotIssueUnderAnApprovalsRequestID: a supervisor issuing
// with the request id a grant will use, to see the code before granting
// it, is refused.
func TestSupervisorCannotIssueUnderAnApprovalsRequestID(t *testing.T) {
	e := newEnv(t)
	ap, err := e.svc.RequestApproval(e.ctx, agentA, overLimit(t, e), server.ReasonLimitPerDevice, "caller's shop is blind")
	if err != nil {
		t.Fatal(err)
	}
	req := issueRequest(serialA)
	req.RequestID, req.OverrideReason = ap.IssueRequestID(), "seeing it first"
	_, err = e.svc.Issue(e.ctx, supervisor, req)
	if se := wantCode(t, err, server.EInvalid); se.Field != "request_id" {
		t.Errorf("field %q, want request_id", se.Field)
	}
	if got, err := e.svc.AnswerApproval(e.ctx, supervisor, ap.ID, true, "known customer"); err != nil || got.IssuanceID == "" {
		t.Fatalf("the grant after the refused attempt: %+v, %v", got, err)
	}
}
