package server

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/clip"
)

// uuidRE is an approval id: a UUID as NewUUID writes it.
var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// maxPendingApprovals bounds the supervisors' queue as one page shows it.
const maxPendingApprovals = 200

func (s *Service) approvals() (ApprovalStore, *Error) {
	if s.Approvals == nil {
		return nil, &Error{Code: EPrecondition, Reason: ReasonFailedPrecondition, Message: "approvals are not configured on this server"}
	}
	return s.Approvals, nil
}

// RequestApproval asks a supervisor to issue req, which the issuing policy
// refused a with reason blocked (one that Approvable), giving reason. The
// request is validated as Issue validates it (without an override reason:
// the supervisor gives that); asking again for the same request id
// returns the first request.
func (s *Service) RequestApproval(ctx context.Context, a Actor, req IssueRequest, blocked Reason, reason string) (Approval, error) {
	ev := AuditEvent{Action: ActionApprovalRequest, Serial: bestSerial(req.Serial), Ticket: clip.Clip(req.Ticket, maxTicketLen),
		Reason: clip.Clip(reason, maxReasonLen), RequestID: clip.Clip(req.RequestID, maxRequestIDLen)}
	if err := s.allow(ctx, a, ev); err != nil {
		return Approval{}, err
	}
	st, e := s.approvals()
	if e != nil {
		return Approval{}, e
	}
	req.OverrideReason = ""
	if e := s.checkIssue(a, &req); e != nil {
		return Approval{}, s.refuse(ctx, a, ev, e)
	}
	// The grant issues as the supervisor, read out to the requester: an
	// owner code verified by the agent cannot be spent by the supervisor,
	// and an e-mailed code would never be shown to the requester.
	if req.Method == VerifyOwnerEmailCode {
		return Approval{}, s.refuse(ctx, a, ev, Invalid("verification_method",
			"verification_method OWNER_EMAIL_CODE cannot go to a supervisor's approval: record how the caller proved ownership another way, or ask a supervisor to issue"))
	}
	if req.Delivery != DeliveryVoice {
		return Approval{}, s.refuse(ctx, a, ev, Invalid("delivery",
			"delivery: an approved code is read out by the requester; e-mail delivery needs a supervisor to issue it directly"))
	}
	if !Approvable(blocked) {
		return Approval{}, s.refuse(ctx, a, ev, Invalid("blocked", "blocked %q: a supervisor's approval lifts only %s or %s", clip.Clip(string(blocked), 40), ReasonLimitPerDevice, ReasonLimitPerAgent))
	}
	reason = strings.TrimSpace(reason)
	if e := checkText("reason", reason, true, maxReasonLen); e != nil {
		if reason == "" {
			e.Message = "reason is required: tell the supervisor why the caller needs a code now"
		}
		return Approval{}, s.refuse(ctx, a, ev, e)
	}
	sn, err := s.resolve(ctx, a, "serial", req.Serial)
	if err != nil {
		return Approval{}, s.refuseInvalid(ctx, a, ev, err)
	}
	req.Serial = sn
	ap := Approval{ID: NewUUID(), Request: req, Requester: a.Subject, RequesterRole: a.Role, Blocked: blocked, Reason: reason, State: ApprovalPending}
	ev = approvalEvent(a, ActionApprovalRequest, OutcomeSuccess, ap, "blocked="+string(blocked))
	ev.Reason = reason
	out, first, err := st.CreateApproval(ctx, ap, ApprovalTTL, ev)
	var se *Error
	if errors.As(err, &se) && se.Code == ENotFound {
		return Approval{}, s.refuse(ctx, a, ev, se)
	}
	if err != nil {
		return Approval{}, err
	}
	if first {
		s.log().InfoContext(ctx, "approval requested", "approval", out.ID, "serial", out.Request.Serial, "actor", a.Subject)
	}
	return out, nil
}

// PendingApprovals is the supervisors' queue: the pending requests, oldest
// first, after expiring those left unanswered too long. Reading the queue
// is not audited (the console polls it); every act on it is.
func (s *Service) PendingApprovals(ctx context.Context, a Actor) ([]Approval, error) {
	if err := s.allow(ctx, a, AuditEvent{Action: ActionApprovalGrant}); err != nil {
		return nil, err
	}
	st, e := s.approvals()
	if e != nil {
		return nil, e
	}
	if _, err := st.ExpireApprovals(ctx, ExpireApproval); err != nil {
		return nil, err
	}
	return st.PendingApprovals(ctx, maxPendingApprovals)
}

// ApprovalStatus returns one approval to its requester or a supervisor
// (expiring it first when its time is up). Not audited: the requester's
// screen polls it.
func (s *Service) ApprovalStatus(ctx context.Context, a Actor, id string) (Approval, error) {
	if err := s.allow(ctx, a, AuditEvent{Action: ActionApprovalRequest}); err != nil {
		return Approval{}, err
	}
	st, e := s.approvals()
	if e != nil {
		return Approval{}, e
	}
	if !uuidRE.MatchString(id) {
		return Approval{}, Invalid("approval", "approval id %q: expected a UUID", clip.Clip(id, 40))
	}
	if _, err := st.ExpireApprovals(ctx, ExpireApproval); err != nil {
		return Approval{}, err
	}
	ap, err := st.Approval(ctx, id)
	if err != nil {
		return Approval{}, notFoundApproval(err)
	}
	if ap.Requester != a.Subject && a.Role != RoleSupervisor {
		return Approval{}, notFoundApproval(nil) // another agent's request: not theirs to see
	}
	return ap, nil
}

func notFoundApproval(err error) error {
	if err != nil && ErrorCode(err) != ENotFound {
		return err
	}
	return &Error{Code: ENotFound, Reason: ReasonNotFound, Field: "approval", Message: "no such request for approval", Err: err}
}

// AnswerApproval is a supervisor's answer to the request id: grant or deny,
// with a comment (DecideApproval says who may). On a grant the service
// issues the code as the supervisor's override on the request's behalf
// (see Approval) and links it; the supervisor is not shown the code, only
// the requester is (ApprovedCode).
func (s *Service) AnswerApproval(ctx context.Context, a Actor, id string, grant bool, comment string) (Approval, error) {
	act := ActionApprovalDeny
	if grant {
		act = ActionApprovalGrant
	}
	ev := AuditEvent{Action: act, Reason: clip.Clip(comment, maxReasonLen), Detail: "approval=" + clip.Clip(id, 40)}
	if err := s.allow(ctx, a, ev); err != nil {
		return Approval{}, err
	}
	st, e := s.approvals()
	if e != nil {
		return Approval{}, e
	}
	if !uuidRE.MatchString(id) {
		return Approval{}, s.refuse(ctx, a, ev, Invalid("approval", "approval id %q: expected a UUID", clip.Clip(id, 40)))
	}
	comment = strings.TrimSpace(comment)
	if e := checkText("comment", comment, true, maxReasonLen); e != nil {
		if comment == "" {
			e.Message = "comment is required: say why you approve or deny, for the audit log"
		}
		return Approval{}, s.refuse(ctx, a, ev, e)
	}
	ap, d, err := st.DecideApproval(ctx, id, func(ap Approval, now time.Time) ApprovalDecision {
		return DecideApproval(ApprovalFacts{Actor: a, Grant: grant, Comment: comment, Approval: ap, Now: now})
	})
	if err != nil {
		if ErrorCode(err) == ENotFound {
			return Approval{}, s.refuse(ctx, a, ev, notFoundApproval(nil).(*Error))
		}
		return Approval{}, err
	}
	if d.Refusal != nil {
		return ap, d.Refusal
	}
	if !d.Issue {
		return ap, nil
	}
	iss, err := s.issue(ctx, a, IssueRequest{RequestID: ap.IssueRequestID(), Serial: ap.Request.Serial, Ticket: ap.Request.Ticket,
		Method: ap.Request.Method, MethodNote: ap.Request.MethodNote, RequestCode: ap.Request.RequestCode,
		OverrideReason: approvalOverride(ap, comment)}, true)
	if err != nil {
		return ap, err
	}
	if err := st.LinkApprovalIssuance(ctx, ap.ID, iss.ID); err != nil {
		return ap, err
	}
	ap.IssuanceID = iss.ID
	return ap, nil
}

// approvalOverride is the override reason of the issuance a grant makes.
func approvalOverride(ap Approval, comment string) string {
	return clip.Clip("approved request of "+ap.Requester+" ("+string(ap.Blocked)+"): "+ap.Reason+" | "+comment, maxReasonLen)
}

// ApprovedCode hands the requester the code their granted request was
// issued: only to them, audited (ActionApprovalReveal). Showing it once is
// the console's part.
func (s *Service) ApprovedCode(ctx context.Context, a Actor, id string) (Issued, error) {
	ev := AuditEvent{Action: ActionApprovalReveal, Detail: "approval=" + clip.Clip(id, 40)}
	if err := s.allow(ctx, a, ev); err != nil {
		return Issued{}, err
	}
	st, e := s.approvals()
	if e != nil {
		return Issued{}, e
	}
	if !uuidRE.MatchString(id) {
		return Issued{}, s.refuse(ctx, a, ev, Invalid("approval", "approval id %q: expected a UUID", clip.Clip(id, 40)))
	}
	iss, err := st.ApprovedIssuance(ctx, id, func(f RevealFacts) (AuditEvent, *Error) {
		return decideReveal(a, f)
	})
	if err != nil {
		if ErrorCode(err) == ENotFound {
			return Issued{}, s.refuse(ctx, a, ev, notFoundApproval(nil).(*Error))
		}
		return Issued{}, err
	}
	out, err := s.mint(iss)
	if err != nil {
		return Issued{}, Internal(err, "minting an approved temporary password")
	}
	return out, nil
}

// decideReveal decides whether a may see the code of a granted approval:
// only its requester, only once it is granted and issued, and only an
// issuance the grant made (its request id, device and supervisor), never
// for a device put on hold since nor after the code expired: the rules a
// replay of the issuance itself follows.
func decideReveal(a Actor, f RevealFacts) (AuditEvent, *Error) {
	ap, iss := f.Approval, f.Issuance
	ev := approvalEvent(a, ActionApprovalReveal, OutcomeRefused, ap, "")
	switch {
	case ap.Requester != a.Subject:
		ev.Detail = joinDetail(ev.Detail, "not_requester")
		return ev, &Error{Code: EPermission, Reason: ReasonRoleNotAllowed, Message: "only the staff member who asked for this approval is shown its code"}
	case ap.State != ApprovalGranted || iss == nil:
		ev.Detail = joinDetail(ev.Detail, "state="+string(ap.State))
		return ev, &Error{Code: EPrecondition, Reason: ReasonFailedPrecondition, Message: "this request is " + string(ap.State) + ": there is no code to show"}
	case iss.RequestID != ap.IssueRequestID() || iss.Serial != ap.Request.Serial || iss.Actor != ap.DecidedBy:
		ev.Detail = joinDetail(ev.Detail, "issuance_mismatch")
		return ev, &Error{Code: EPrecondition, Reason: ReasonFailedPrecondition,
			Message: "the issuance linked to this request was not made by its grant: it was reported to the auditors; ask the supervisor to issue again"}
	case f.Hold != nil:
		ev.Detail = joinDetail(ev.Detail, "on_hold")
		return ev, onHold(f.Hold)
	case !f.Now.Before(iss.ExpiresAt):
		ev.Detail = joinDetail(ev.Detail, "expired")
		return ev, &Error{Code: EPrecondition, Reason: ReasonIssuanceExpired,
			Message: "the code of this request expired at " + iss.ExpiresAt.UTC().Format(time.DateTime) + " UTC: ask for a new one"}
	}
	ev.Outcome, ev.IssuanceID = OutcomeSuccess, iss.ID
	return ev, nil
}
