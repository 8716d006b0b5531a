package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
)

// newApproval is a pending approval of an issue request for serial by a.
func newApproval(a server.Actor, serial string) (server.Approval, server.AuditEvent) {
	ap := server.Approval{ID: uuid(), Request: issueRequest(serial), Requester: a.Subject, RequesterRole: a.Role,
		Blocked: server.ReasonLimitPerDevice, Reason: "the shop is blind", State: server.ApprovalPending}
	return ap, server.AuditEvent{Actor: a.Subject, Role: a.Role, Action: server.ActionApprovalRequest, Outcome: server.OutcomeSuccess,
		Serial: serial, RequestID: ap.Request.RequestID, Detail: "approval=" + ap.ID}
}

// TestApprovalRound stores a request, refuses the requester's own answer,
// writes another supervisor's grant, links the issuance the grant made and
// hands it to the requester only: each step with its audit event.
func TestApprovalRound(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	s := registerDevice(t, db, "owner@example.com")
	asker := server.Actor{Subject: newName("sup-asks"), Role: server.RoleSupervisor}
	ap, ev := newApproval(asker, s)
	ap.Request.RequestCode = voicecode.FormatRequestCode(12345) // kept as its nonce, read back as the code
	got, first, err := db.CreateApproval(ctx, ap, server.ApprovalTTL, ev)
	if err != nil || !first || got.State != server.ApprovalPending || got.ExpiresAt.Sub(got.CreatedAt) != server.ApprovalTTL || got.Request != ap.Request {
		t.Fatalf("CreateApproval: %+v %v %v", got, first, err)
	}
	again := ap
	again.ID = uuid()
	if x, first, err := db.CreateApproval(ctx, again, server.ApprovalTTL, ev); err != nil || first || x.ID != ap.ID {
		t.Fatalf("the same form asked twice: %s first=%v %v", x.ID, first, err)
	}
	if n := len(eventsFor(t, db, s)); n != 2 { // the registration and the request
		t.Fatalf("%d events after asking twice, want 2", n)
	}
	q, err := db.PendingApprovals(ctx, 1000)
	if err != nil || !containsApproval(q, ap.ID) {
		t.Fatalf("pending: %v (%d)", err, len(q))
	}
	decide := func(a server.Actor, grant bool) func(server.Approval, time.Time) server.ApprovalDecision {
		return func(ap server.Approval, now time.Time) server.ApprovalDecision {
			return server.DecideApproval(server.ApprovalFacts{Actor: a, Grant: grant, Comment: "checked", Approval: ap, Now: now})
		}
	}
	x, d, err := db.DecideApproval(ctx, ap.ID, decide(asker, true))
	if err != nil || d.Refusal == nil || x.State != server.ApprovalPending {
		t.Fatalf("self-approval: %+v %v %v", x, d.Refusal, err)
	}
	if e := lastEvent(t, db, s); e.Action != server.ActionApprovalGrant || e.Outcome != server.OutcomeRefused || !strings.HasSuffix(e.Detail, "self_approval") {
		t.Fatalf("self-approval audited as %+v", e)
	}
	x, d, err = db.DecideApproval(ctx, ap.ID, decide(supervisor, true))
	if err != nil || d.Refusal != nil || !d.Issue || x.State != server.ApprovalGranted || x.DecidedBy != supervisor.Subject || x.Comment != "checked" || x.DecidedAt.IsZero() {
		t.Fatalf("grant: %+v %+v %v", x, d, err)
	}
	if _, err := db.ApprovedIssuance(ctx, ap.ID, func(f server.RevealFacts) (server.AuditEvent, *server.Error) {
		if f.Issuance != nil {
			t.Error("an issuance before the grant made one")
		}
		if f.Hold != nil || f.Now.IsZero() {
			t.Errorf("reveal facts: hold %v, database clock %v", f.Hold, f.Now)
		}
		return server.AuditEvent{Actor: asker.Subject, Role: asker.Role, Action: server.ActionApprovalReveal, Outcome: server.OutcomeRefused, Serial: s},
			&server.Error{Code: server.EPrecondition, Message: "not yet"}
	}); server.ErrorCode(err) != server.EPrecondition {
		t.Fatalf("reveal before the issuance: %v", err)
	}
	req := x.Request
	req.RequestID, req.OverrideReason = x.IssueRequestID(), "approved"
	iss, err := db.Issue(ctx, supervisor, req, server.Limits{}.WithDefaults(), policy)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.LinkApprovalIssuance(ctx, ap.ID, uuid()); err == nil {
		t.Fatal("linked to an issuance that does not exist")
	}
	if err := db.LinkApprovalIssuance(ctx, ap.ID, iss.ID); err != nil {
		t.Fatal(err)
	}
	other, _ := db.Issue(ctx, supervisor, issueRequest(s), server.Limits{}.WithDefaults(), policy)
	if err := db.LinkApprovalIssuance(ctx, ap.ID, other.ID); err == nil {
		t.Fatal("a linked approval was linked again to another issuance")
	}
	out, err := db.ApprovedIssuance(ctx, ap.ID, func(f server.RevealFacts) (server.AuditEvent, *server.Error) {
		ap, iss := f.Approval, f.Issuance
		return server.AuditEvent{Actor: asker.Subject, Role: asker.Role, Action: server.ActionApprovalReveal, Outcome: server.OutcomeSuccess,
			Serial: s, IssuanceID: iss.ID, Detail: "approval=" + ap.ID}, nil
	})
	if err != nil || out.ID != iss.ID || out.RequestID != "approval:"+ap.ID {
		t.Fatalf("the approved issuance: %+v %v; issued %s for approval %s", out, err, iss.ID, ap.ID)
	}
	if _, d, _ := db.DecideApproval(ctx, ap.ID, decide(server.Actor{Subject: "sam", Role: server.RoleSupervisor}, false)); d.Refusal == nil {
		t.Fatal("a granted request was denied afterwards")
	}
}

func containsApproval(q []server.Approval, id string) bool {
	for _, ap := range q {
		if ap.ID == id {
			return true
		}
	}
	return false
}

func TestApprovalExpiresOnTheDatabaseClock(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	s := registerDevice(t, db, "owner@example.com")
	ap, ev := newApproval(agent(newName("agent")), s)
	if _, _, err := db.CreateApproval(ctx, ap, time.Millisecond, ev); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := db.ExpireApprovals(ctx, server.ExpireApproval); err != nil {
		t.Fatal(err)
	}
	x, err := db.Approval(ctx, ap.ID)
	if err != nil || x.State != server.ApprovalExpired {
		t.Fatalf("after its time: %s %v", x.State, err)
	}
	if e := lastEvent(t, db, s); e.Action != server.ActionApprovalExpire || e.Actor != ap.Requester {
		t.Fatalf("expiry audited as %+v", e)
	}
	if q, _ := db.PendingApprovals(ctx, 1000); containsApproval(q, ap.ID) {
		t.Fatal("an expired request is still pending")
	}
}

// TestSelfApprovalRefusedByTheSchema: a login that writes approvals by
// hand still cannot record the requester as the one who granted.
func TestSelfApprovalRefusedByTheSchema(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	s := registerDevice(t, db, "owner@example.com")
	a := agent(newName("agent"))
	ap, ev := newApproval(a, s)
	if _, _, err := db.CreateApproval(ctx, ap, server.ApprovalTTL, ev); err != nil {
		t.Fatal(err)
	}
	c := ownerConn(t)
	for name, sql := range map[string]string{
		"self-approval":      `UPDATE approvals SET state = 'granted', decided_by = requester, decided_at = now(), comment = 'me' WHERE id = $1`,
		"grant-without-name": `UPDATE approvals SET state = 'granted' WHERE id = $1`,
	} {
		if _, err := c.Exec(ctx, sql, ap.ID); err == nil {
			t.Errorf("%s: written", name)
		}
	}
	if _, _, err := db.CreateApproval(ctx, server.Approval{ID: uuid(), Request: issueRequest(newSerial()), Requester: a.Subject, RequesterRole: a.Role,
		Blocked: server.ReasonLimitPerDevice, Reason: "x"}, server.ApprovalTTL, ev); server.ErrorCode(err) != server.ENotFound {
		t.Errorf("an approval for an unregistered device: %v", err)
	}
}
