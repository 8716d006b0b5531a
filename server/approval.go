package server

import (
	"context"
	"fmt"
	"time"
)

// ApprovalTTL is how long a request for a supervisor's approval waits:
// unanswered after that, it expires and the agent must ask again.
const ApprovalTTL = 30 * time.Minute

// ApprovalState is where a request for approval stands. Stored: append only.
type ApprovalState string

// The approval states. Pending is the only state that changes.
const (
	ApprovalPending ApprovalState = "pending"
	ApprovalGranted ApprovalState = "granted"
	ApprovalDenied  ApprovalState = "denied"
	ApprovalExpired ApprovalState = "expired"
)

// approvable are the refusals a supervisor's approval can lift: the limits,
// which a supervisor may pass with a reason. A device on hold needs its hold
// released, not an approval.
var approvable = map[Reason]bool{ReasonLimitPerDevice: true, ReasonLimitPerAgent: true}

// Approvable reports whether a refusal with reason r can be lifted by a
// supervisor's approval.
func Approvable(r Reason) bool { return approvable[r] }

// Approval is a staff member's request that a supervisor issue a code the
// issuing policy refused them, and what became of it.
//
// On a grant the service issues the code as the approving supervisor's
// override (their name on the issuance, the request's ticket, method, note
// and request code, the request's reason and the supervisor's comment as
// the override reason, request id "approval:" + ID), and only the requester
// is shown it. Every step is an audit event carrying "approval=" + ID.
type Approval struct {
	// ID is the approval's UUID.
	ID string
	// Request is the issue request as the requester made it (validated,
	// Serial canonical); RequestID is the requester's form's.
	Request IssueRequest
	// Requester and RequesterRole are who asked.
	Requester     string
	RequesterRole Role
	// Blocked is the reason of the refusal the approval would lift.
	Blocked Reason
	// Reason is the requester's reason for asking.
	Reason string
	// State is where the request stands.
	State ApprovalState
	// CreatedAt is when it was asked (database clock); ExpiresAt when it
	// expires unanswered.
	CreatedAt, ExpiresAt time.Time
	// DecidedBy, DecidedAt and Comment are the supervisor's answer.
	DecidedBy string
	DecidedAt time.Time
	Comment   string
	// IssuanceID is the issuance made on the grant, "" until it is made.
	IssuanceID string
}

// IssueRequestID is the request id of the issuance a grant of ap makes:
// one per approval, so that a retried grant returns the same issuance.
func (ap Approval) IssueRequestID() string { return approvalRequestIDPrefix + ap.ID }

// ApprovalFacts are what a supervisor's answer is decided on: the approval
// as the store read it under its lock, and the database's clock.
type ApprovalFacts struct {
	// Actor is the supervisor answering; Grant whether they approve.
	Actor Actor
	Grant bool
	// Comment is the supervisor's comment (validated).
	Comment string
	// Approval is the request, read under its row lock.
	Approval Approval
	// Now is the database's clock.
	Now time.Time
}

// ApprovalDecision is what DecideApproval chose, for the store to write in
// the transaction that read the facts.
type ApprovalDecision struct {
	// Events are the audit events to write, in every case.
	Events []AuditEvent
	// State, when set, is the approval's new state; DecidedBy and Comment
	// are set with a grant or a denial (DecidedAt is then Now).
	State              ApprovalState
	DecidedBy, Comment string
	// Refusal, when set, is the answer.
	Refusal *Error
	// Issue tells the service to make the approval's issuance now (a
	// grant, or a retry by the granting supervisor of a grant whose
	// issuance was not made).
	Issue bool
}

// approvalEvent is the audit event of act on ap by a.
func approvalEvent(a Actor, act Action, o Outcome, ap Approval, detail string) AuditEvent {
	return AuditEvent{Actor: a.Subject, Role: a.Role, ClientAddr: a.ClientAddr, Action: act, Outcome: o, Serial: ap.Request.Serial,
		Ticket: ap.Request.Ticket, Method: ap.Request.Method, RequestID: ap.Request.RequestID, IssuanceID: ap.IssuanceID,
		Detail: joinDetail("approval="+ap.ID, detail)}
}

// ExpireApproval decides the expiry of an approval at now: a pending one
// past its deadline expires, audited in the requester's name (it is their
// request that lapsed) with the service as the client.
func ExpireApproval(ap Approval, now time.Time) (ApprovalDecision, bool) {
	if ap.State != ApprovalPending || now.Before(ap.ExpiresAt) {
		return ApprovalDecision{}, false
	}
	req := Actor{Subject: ap.Requester, Role: ap.RequesterRole, ClientAddr: "service"}
	ev := approvalEvent(req, ActionApprovalExpire, OutcomeRefused, ap, fmt.Sprintf("unanswered=%s", ApprovalTTL))
	return ApprovalDecision{Events: []AuditEvent{ev}, State: ApprovalExpired}, true
}

// DecideApproval is the approval policy, applied to a supervisor's answer:
//
//   - only a supervisor answers (EPermission);
//   - a request past its deadline expires instead (EPrecondition), the
//     expiry audited as well as the late answer;
//   - a request already answered stays answered (EConflict), except that
//     the supervisor who granted it may grant again while its issuance is
//     not made, which makes it;
//   - nobody answers their own request (EPermission): four eyes;
//   - otherwise the request is granted (and the service issues) or denied.
func DecideApproval(f ApprovalFacts) ApprovalDecision {
	a, ap := f.Actor, f.Approval
	act := ActionApprovalDeny
	if f.Grant {
		act = ActionApprovalGrant
	}
	refuse := func(e *Error, detail string, more ...AuditEvent) ApprovalDecision {
		ev := approvalEvent(a, act, OutcomeRefused, ap, detail)
		ev.Reason = f.Comment
		return ApprovalDecision{Events: append(more, ev), Refusal: e}
	}
	if a.Role != RoleSupervisor {
		return refuse(&Error{Code: EPermission, Reason: ReasonRoleNotAllowed, Roles: []Role{RoleSupervisor},
			Message: "only a supervisor may answer a request for approval"}, "role")
	}
	if exp, ok := ExpireApproval(ap, f.Now); ok {
		d := refuse(&Error{Code: EPrecondition, Reason: ReasonFailedPrecondition,
			Message: fmt.Sprintf("this request expired at %s, unanswered for %s: the agent must ask again", ap.ExpiresAt.UTC().Format(time.TimeOnly+" UTC"), ApprovalTTL)},
			"expired", exp.Events...)
		d.State = ApprovalExpired
		return d
	}
	if ap.State != ApprovalPending {
		if f.Grant && ap.State == ApprovalGranted && ap.DecidedBy == a.Subject && ap.IssuanceID == "" {
			ev := approvalEvent(a, act, OutcomeSuccess, ap, "retry_issue")
			ev.Reason = f.Comment
			return ApprovalDecision{Events: []AuditEvent{ev}, Issue: true}
		}
		by := ""
		if ap.DecidedBy != "" {
			by = " by " + ap.DecidedBy
		}
		return refuse(&Error{Code: EConflict, Reason: ReasonConflict,
			Message: fmt.Sprintf("this request was already answered: %s%s", ap.State, by)}, "already_"+string(ap.State))
	}
	if ap.Requester == a.Subject {
		return refuse(&Error{Code: EPermission, Reason: ReasonRoleNotAllowed, Roles: []Role{RoleSupervisor},
			Message: "you asked for this approval yourself: another supervisor must answer it"}, "self_approval")
	}
	ev := approvalEvent(a, act, OutcomeSuccess, ap, "requester="+ap.Requester)
	ev.Reason = f.Comment
	d := ApprovalDecision{Events: []AuditEvent{ev}, State: ApprovalDenied, DecidedBy: a.Subject, Comment: f.Comment}
	if f.Grant {
		d.State, d.Issue = ApprovalGranted, true
	}
	return d
}

// ApprovalStore keeps the requests for approval; server/postgres
// implements it. Every write comes with its audit events, in one
// transaction.
type ApprovalStore interface {
	// CreateApproval stores ap (State pending) with CreatedAt the database
	// clock and ExpiresAt ttl later, and ev (its Detail completed with the
	// approval). When the requester already asked for the same request id
	// it returns that approval and first false, writing nothing.
	CreateApproval(ctx context.Context, ap Approval, ttl time.Duration, ev AuditEvent) (out Approval, first bool, err error)
	// Approval returns the approval with that id; ENotFound when none.
	Approval(ctx context.Context, id string) (Approval, error)
	// PendingApprovals lists up to limit pending approvals, oldest first.
	PendingApprovals(ctx context.Context, limit int) ([]Approval, error)
	// DecideApproval locks the approval id, calls decide with it and the
	// database clock, and writes the decision's state and events. It
	// returns the approval as written and the decision.
	DecideApproval(ctx context.Context, id string, decide func(Approval, time.Time) ApprovalDecision) (Approval, ApprovalDecision, error)
	// ExpireApprovals applies decide to every pending approval whose
	// ExpiresAt has passed on the database clock (skipping those another
	// transaction holds) and writes what it decided; it returns how many
	// expired.
	ExpireApprovals(ctx context.Context, decide func(Approval, time.Time) (ApprovalDecision, bool)) (int, error)
	// LinkApprovalIssuance records the issuance made on the grant of id.
	LinkApprovalIssuance(ctx context.Context, id, issuanceID string) error
	// ApprovedIssuance reads the approval id and its issuance (nil when
	// none), calls decide, and writes its event; it returns the issuance
	// unless decide refused.
	ApprovedIssuance(ctx context.Context, id string, decide func(RevealFacts) (AuditEvent, *Error)) (Issuance, error)
}

// RevealFacts is what the store reads for showing a granted approval's
// code: the approval, its issuance (nil when none is linked), the device's
// hold now and the database clock.
type RevealFacts struct {
	Approval Approval
	Issuance *Issuance
	Hold     *Hold
	Now      time.Time
}
