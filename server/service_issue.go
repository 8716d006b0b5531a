package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/clip"
	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

// Issued is an issuance with its credentials, as returned to the caller
// once (and again, identically, to an idempotent retry).
type Issued struct {
	Issuance
	// VoiceCode is the grouped code the customer types. Never log it.
	VoiceCode string
	// Phonetic is VoiceCode spelt out for the phone.
	Phonetic string
	// Grant is the signed JWT of the same issuance.
	Grant string
	// Mail is the e-mail delivery, nil for voice only. When it does not
	// show the voice code, VoiceCode, Phonetic and Grant are empty.
	Mail *MailStatus
}

// Issue issues a temporary password (roles agent, supervisor). req.Serial
// may be any query form; it is canonicalised. The store runs the issuance
// transaction and hands its facts to DecideIssue, which applies the policy
// (idempotency, hold, limits, sequence wrap); the code and the grant are
// then minted from the stored issuance, so a retry with the same request id
// returns the identical credentials.
func (s *Service) Issue(ctx context.Context, a Actor, req IssueRequest) (Issued, error) {
	return s.issue(ctx, a, req, false)
}

// approvalRequestIDPrefix starts the request ids of the issuances that
// approval grants make (Approval.IssueRequestID): no caller may choose
// one, or a supervisor could issue under it, see the code, then grant.
const approvalRequestIDPrefix = "approval:"

// issue is Issue; byGrant is set for the issuance of an approval's grant,
// the only one whose request id carries approvalRequestIDPrefix.
func (s *Service) issue(ctx context.Context, a Actor, req IssueRequest, byGrant bool) (Issued, error) {
	query := parseQuery(req.Serial)
	ev := AuditEvent{Action: ActionIssue, Serial: query.canonical, Ticket: clip.Clip(req.Ticket, maxTicketLen), Reason: clip.Clip(req.OverrideReason, maxReasonLen), RequestID: clip.Clip(req.RequestID, maxRequestIDLen)}
	if req.Method >= VerifyOwnerContact && req.Method <= VerifyOwnerEmailCode {
		ev.Method = req.Method
	}
	if err := s.allow(ctx, a, ev); err != nil {
		return Issued{}, err
	}
	if e := s.checkIssue(a, &req); e != nil {
		return Issued{}, s.refuse(ctx, a, ev, e)
	}
	if strings.HasPrefix(req.RequestID, approvalRequestIDPrefix) != byGrant {
		return Issued{}, s.refuse(ctx, a, ev, Invalid("request_id", "request_id: %q is reserved for approved requests; send a fresh UUID", approvalRequestIDPrefix))
	}
	sn, err := s.resolveParsed(ctx, a, "serial", query)
	if err != nil {
		return Issued{}, s.refuseInvalid(ctx, a, ev, err)
	}
	req.Serial = sn

	lim := s.Limits.WithDefaults()
	kid, _ := s.Keyring.GrantSigner()
	var (
		decided AuditEvent
		// unmailed is the id of the new issuance the last decision made
		// without an outbox message: its answer needs no delivery read.
		unmailed string
	)
	iss, err := s.Store.Issue(ctx, a, req, lim, func(f IssueFacts) (IssueDecision, error) {
		if f.Existing != nil {
			if err := s.checkIssuanceMAC(*f.Existing); err != nil {
				return refuseUnproven(f, err), nil
			}
		}
		d, err := DecideIssue(f, kid)
		if err == nil {
			d = decideOwnerRoute(s.Verify, f, d)
		}
		if err == nil && d.Refusal == nil && !d.Replay {
			d.Issuance.MAC, err = s.issuanceMAC(d.Issuance)
		}
		decided, unmailed = d.Event, ""
		if err == nil && d.Refusal == nil && !d.Replay && d.Mail == nil {
			unmailed = d.Issuance.ID
		}
		return d, err
	})
	s.alert(ctx, decided, err)
	if err != nil {
		return Issued{}, err
	}
	out, err := s.mint(iss)
	if err != nil {
		s.log().ErrorContext(ctx, "minting a committed issuance failed", "issuance", iss.ID, "serial", iss.Serial, "err", err)
		return Issued{}, Internal(err, "minting the temporary password")
	}
	s.log().LogAttrs(ctx, slog.LevelInfo, "issued", slog.String("issuance", iss.ID), slog.String("serial", iss.Serial),
		slog.Int64("sequence", iss.Sequence), slog.String("actor", a.Subject))
	if unmailed != "" && iss.ID == unmailed {
		// Committed by this call with no outbox message (its id is new, so
		// no other message can name it): voice only, nothing to read back.
		return out, nil
	}
	return s.withMail(ctx, out)
}

// alert raises the alert marks of the committed issue event ev (err is
// the issue's outcome): a warning in the server log, for the operators'
// alerting, and an ActionIssueAlert event, for the auditors' queries.
func (s *Service) alert(ctx context.Context, ev AuditEvent, err error) {
	var mark string
	for _, m := range []string{AlertDeviceBurst, AlertDeviceCap} {
		if strings.Contains(ev.Detail, m) {
			mark = m
		}
	}
	var se *Error
	if mark == "" || (err != nil && (!errors.As(err, &se) || se.Reason != ReasonDeviceCap)) {
		return // nothing to raise, or the act was not committed
	}
	s.log().WarnContext(ctx, "issuance alert", "alert", strings.TrimPrefix(mark, "alert="), "serial", ev.Serial,
		"actor", ev.Actor, "role", ev.Role, "detail", ev.Detail)
	ev.Action = ActionIssueAlert
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if aerr := s.Store.Audit(actx, ev); aerr != nil {
		s.log().ErrorContext(ctx, "audit of an issuance alert failed", "serial", ev.Serial, "err", aerr)
	}
}

// DecideIssue is the issuing policy, applied to a valid request and the
// facts the store read for it under its locks; kid is the grant key new
// issuances are signed with:
//
//   - a request id a already used returns that issuance again, audited as
//     a replay, unless it was for another device (EConflict) or the device
//     has been put on hold since;
//   - a replay of an issuance that has expired is EPrecondition
//     (ReasonIssuanceExpired);
//   - an unknown device is ENotFound, a device on hold EPrecondition;
//   - at the absolute per-device cap nobody may issue (ReasonDeviceCap);
//   - within Limits.ContactHold of an owner contact change only a
//     supervisor giving an override reason may issue
//     (ReasonContactRecentlyChanged);
//   - over the per-device or per-agent limit only a supervisor giving an
//     override reason may issue; anyone else gets ELimit with the time the
//     limit frees up;
//   - a sequence number that would wrap within one slot is EUnavailable
//     until the next slot;
//   - otherwise the device's next sequence number is issued now, under the
//     device's own key generation and the grant key kid.
//
// The only error is a failure to read InWindow; a refusal is a decision.
func DecideIssue(f IssueFacts, kid string) (IssueDecision, error) {
	a, req, lim := f.Actor, f.Request, f.Limits.WithDefaults()
	ev := AuditEvent{Actor: a.Subject, Role: a.Role, ClientAddr: a.ClientAddr, Action: ActionIssue, Outcome: OutcomeRefused,
		Serial: req.Serial, Ticket: req.Ticket, Method: req.Method, Reason: req.OverrideReason, RequestID: req.RequestID}
	refuse := func(e *Error, detail string) (IssueDecision, error) {
		ev.Detail = detail
		return IssueDecision{Event: ev, Refusal: e}, nil
	}

	if f.Existing != nil {
		if f.Existing.Serial != req.Serial || f.Existing.RequestCode != req.RequestCode {
			return refuse(&Error{Code: EConflict, Reason: ReasonRequestIDReused, Field: "request_id",
				Message: "this request id was already used for another device or request code; use a new request id"}, "request_id_reused")
		}
		// A retry returns the first answer, but never for a device put on
		// hold since: a stolen DVR gets no code, not even a repeat.
		if f.Hold != nil {
			return refuse(onHold(f.Hold), "on_hold replay")
		}
		// An expired code is dead on the device; handing it out again
		// would only put it where it was not meant to be.
		if !f.Now.Before(f.Existing.ExpiresAt) {
			return refuse(&Error{Code: EPrecondition, Reason: ReasonIssuanceExpired, Field: "request_id",
				Message: "the issuance of this request id expired at " + f.Existing.ExpiresAt.UTC().Format(time.RFC3339) +
					"; issue a new one with a new request id"}, "expired replay")
		}
		// Handing the code out again is an act of its own: audited.
		ev.Action, ev.Outcome, ev.IssuanceID = ActionIssueReplay, OutcomeSuccess, f.Existing.ID
		ev.Detail = "replay seq=" + strconv.FormatInt(f.Existing.Sequence, 10)
		return IssueDecision{Event: ev, Replay: true}, nil
	}
	if !f.Registered {
		return refuse(&Error{Code: ENotFound, Reason: ReasonDeviceNotFound, Field: "serial",
			Message: "no device is registered under " + clip.Clip(req.Serial, 80)}, "not_found")
	}
	if f.Hold != nil {
		return refuse(onHold(f.Hold), "on_hold")
	}

	if f.DeviceCount >= lim.DeviceCap {
		// The absolute cap: no role and no reason passes it.
		hit := limitHit{LimitPerDevice, f.DeviceCount, lim.DeviceCap, lim.PerDeviceWindow}
		e := hit.refusal(a.Role)
		e.Reason = ReasonDeviceCap
		e.Message = fmt.Sprintf("the device has had %d issuances in %s, its absolute cap; nobody may issue more until the oldest leaves that window", hit.count, hit.window)
		oldest, err := f.InWindow(hit.scope, hit.count-hit.max)
		if err != nil {
			return IssueDecision{}, err
		}
		if !oldest.IsZero() {
			e.RetryAfter = oldest.Add(hit.window).UTC()
		}
		return refuse(e, fmt.Sprintf("device_cap count=%d/%d %s", hit.count, hit.max, AlertDeviceCap))
	}
	contactDetail := ""
	if ends := f.ContactChangedAt.Add(lim.ContactHold).UTC(); !f.ContactChangedAt.IsZero() && f.Now.Before(ends) {
		contactDetail = "contact_changed=" + f.ContactChangedAt.UTC().Format(time.RFC3339)
		if a.Role != RoleSupervisor || req.OverrideReason == "" {
			return refuse(&Error{Code: EPermission, Reason: ReasonContactRecentlyChanged, Roles: []Role{RoleSupervisor}, RetryAfter: ends,
				Message: "the device's owner contact was changed on " + f.ContactChangedAt.UTC().Format(time.DateOnly) +
					": until " + ends.Format(time.RFC3339) + " only a supervisor may issue for it, with an override reason"},
				contactDetail)
		}
		contactDetail = "override " + contactDetail
	}

	limitDetail := ""
	if hit, ok := overLimit(lim, f); ok {
		limitDetail = fmt.Sprintf("limit=%s count=%d/%d", hit.scope, hit.count, hit.max)
		if a.Role != RoleSupervisor || req.OverrideReason == "" {
			// The limit frees up when enough of the in-window issuances
			// have left the window to bring the count below the maximum.
			oldest, err := f.InWindow(hit.scope, hit.count-hit.max)
			if err != nil {
				return IssueDecision{}, err
			}
			e := hit.refusal(a.Role)
			if !oldest.IsZero() {
				e.RetryAfter = oldest.Add(hit.window).UTC()
			}
			return refuse(e, limitDetail)
		}
		limitDetail = "override " + limitDetail
		if hit.scope == LimitPerDevice {
			limitDetail += " " + AlertDeviceBurst
		}
	}
	limitDetail = joinDetail(limitDetail, contactDetail)

	seq := f.LastSequence + 1
	if next, wraps := sequenceWraps(seq, f.LastIssuedAt, f.Now); wraps {
		return refuse(&Error{Code: EUnavailable, Reason: ReasonSequenceWrap, RetryAfter: next,
			Message: "this device was issued many codes in the last minutes; retry after " + next.Format(time.TimeOnly) + " UTC"},
			"sequence_wrap seq="+strconv.FormatInt(seq, 10))
	}

	iss := Issuance{
		ID:             NewUUID(),
		RequestID:      req.RequestID,
		Serial:         req.Serial,
		Sequence:       seq,
		KeyGeneration:  f.KeyGeneration,
		SigningKeyID:   kid,
		IssuedAt:       f.Now,
		ExpiresAt:      voicecode.ExpiresAt(f.Now),
		Actor:          a.Subject,
		ActorRole:      a.Role,
		Ticket:         req.Ticket,
		Method:         req.Method,
		MethodNote:     req.MethodNote,
		OverrideReason: req.OverrideReason,
		RequestCode:    req.RequestCode,
	}
	ev.Outcome, ev.IssuanceID = OutcomeSuccess, iss.ID
	ev.Detail = joinDetail("seq="+strconv.FormatInt(seq, 10), limitDetail)
	if req.Method == VerifyOwnerContact && !f.OwnerChecked {
		// The agent says the owner contact matched, but no owner check of
		// this device by them succeeded within the hour: flagged for
		// auditors.
		ev.Detail = joinDetail(ev.Detail, "owner_check=none")
	}
	return IssueDecision{Event: ev, Issuance: iss}, nil
}

// The alert marks of an issue event's detail: an act a human should look
// at soon. Service.Issue logs a warning and records an ActionIssueAlert
// event for each. Stored: append only.
const (
	// AlertDeviceBurst: a device issued over its per-device limit.
	AlertDeviceBurst = "alert=device_burst"
	// AlertDeviceCap: a device's absolute cap refused an issuance.
	AlertDeviceCap = "alert=device_cap"
)

// onHold is the refusal of a device on hold h.
func onHold(h *Hold) *Error {
	return &Error{Code: EPrecondition, Reason: ReasonDeviceOnHold,
		Message: fmt.Sprintf("the device is on hold since %s (by %s): %s", h.Since.UTC().Format(time.DateOnly), h.By, h.Reason)}
}

// limitHit is a limit the request would exceed.
type limitHit struct {
	scope      LimitScope
	count, max int
	window     time.Duration
}

// overLimit returns the limit an issuance now would exceed, the per-device
// one first.
func overLimit(lim Limits, f IssueFacts) (limitHit, bool) {
	switch {
	case f.DeviceCount >= lim.PerDevice:
		return limitHit{LimitPerDevice, f.DeviceCount, lim.PerDevice, lim.PerDeviceWindow}, true
	case f.AgentCount >= lim.PerAgent:
		return limitHit{LimitPerAgent, f.AgentCount, lim.PerAgent, lim.PerAgentWindow}, true
	}
	return limitHit{}, false
}

// refusal is the ELimit error of h for a caller with role r.
func (h limitHit) refusal(r Role) *Error {
	reason := ReasonLimitPerDevice
	if h.scope == LimitPerAgent {
		reason = ReasonLimitPerAgent
	}
	msg := fmt.Sprintf("the %s limit of %d issuances per %s is reached", h.scope, h.max, h.window)
	if r == RoleSupervisor {
		msg += "; a supervisor may issue over it with an override reason"
	} else {
		msg += "; ask a supervisor to issue it with a reason"
	}
	return &Error{Code: ELimit, Reason: reason, Limit: string(h.scope), Count: h.count, Max: h.max, Window: h.window, Message: msg}
}

// sequenceWraps reports whether issuing sequence number seq at now, after
// an issuance at last, would wrap the voice code's sequence within one
// slot, and when the next slot starts. The code carries the issue time's
// slot and only the sequence number mod 256, and the device orders codes by
// (slot, sequence mod 256): within one slot a wrap from 255 to 0 would make
// the newer code look older, so the device would refuse it as superseded.
func sequenceWraps(seq int64, last, now time.Time) (time.Time, bool) {
	if last.IsZero() || seq%256 != 0 || voicecode.SlotOf(last) != voicecode.SlotOf(now) {
		return time.Time{}, false
	}
	return time.Unix(int64(voicecode.SlotOf(now)+1)*voicecode.SlotSeconds, 0).UTC(), true
}

// joinDetail joins two parts of an audit detail with a space, either of
// which may be empty.
func joinDetail(a, b string) string {
	if a == "" || b == "" {
		return a + b
	}
	return a + " " + b
}

// checkIssue validates an issue request, normalising it in place.
func (s *Service) checkIssue(a Actor, req *IssueRequest) *Error {
	req.RequestID = strings.TrimSpace(req.RequestID)
	if req.RequestID == "" {
		return Invalid("request_id", "request_id is required: send a fresh UUID, and the same one on a retry")
	}
	if !requestIDRE.MatchString(req.RequestID) {
		return Invalid("request_id", "request_id: expected 1 to %d letters, digits or . _ : - (a UUID)", maxRequestIDLen)
	}
	req.Ticket = strings.TrimSpace(req.Ticket)
	if e := checkText("ticket", req.Ticket, true, maxTicketLen); e != nil {
		if req.Ticket == "" {
			e.Message = "ticket is required: give the support ticket reference"
		}
		return e
	}
	switch req.Method {
	case VerifyOwnerContact, VerifyProofOfPurchase, VerifyInstallerAccount, VerifyOther, VerifyOwnerEmailCode:
	default:
		return Invalid("verification_method", "verification_method is required: expected OWNER_CONTACT_MATCHED, PROOF_OF_PURCHASE, INSTALLER_ACCOUNT, OWNER_EMAIL_CODE or OTHER (with a note)")
	}
	if e := checkDelivery(&req.Delivery); e != nil {
		return e
	}
	req.MethodNote = strings.TrimSpace(req.MethodNote)
	if e := checkNote("verification_note", req.MethodNote, req.Method == VerifyOther, maxNoteLen); e != nil {
		if req.MethodNote == "" {
			e.Message = "verification_note is required with verification method OTHER: say what was checked"
		}
		return e
	}
	if req.RequestCode = strings.TrimSpace(req.RequestCode); req.RequestCode != "" {
		n, err := voicecode.ParseRequestCode(req.RequestCode)
		if err != nil {
			return Invalid("request_code", "request_code %q: %v; expected the 10 symbols the DVR shows (XXXXX-XXXXX)", clip.Clip(req.RequestCode, 20), err)
		}
		req.RequestCode = voicecode.FormatRequestCode(n)
	}
	req.OverrideReason = strings.TrimSpace(req.OverrideReason)
	if e := checkText("override_reason", req.OverrideReason, false, maxReasonLen); e != nil {
		return e
	}
	if req.OverrideReason != "" && a.Role != RoleSupervisor {
		return &Error{Code: EPermission, Reason: ReasonOverrideNotAllowed, Field: "override_reason",
			Message: "only a supervisor may give an override_reason (to issue over a limit): leave it empty or ask a supervisor"}
	}
	return nil
}

// mint derives the voice code and the grant of a stored issuance. Both are
// deterministic in the issuance's fields.
func (s *Service) mint(iss Issuance) (Issued, error) {
	if err := s.checkIssuanceMAC(iss); err != nil {
		return Issued{}, err
	}
	k, err := s.Keyring.DeviceKey(iss.Serial, iss.KeyGeneration)
	if err != nil {
		return Issued{}, fmt.Errorf("device key of generation %d: %w", iss.KeyGeneration, err)
	}
	code, err := voicecode.Mint(k, iss.Serial, iss.IssuedAt, iss.Sequence)
	if iss.RequestCode != "" {
		// Bound to the DVR's request code, under the bound code's own label.
		var n uint64
		if n, err = voicecode.ParseRequestCode(iss.RequestCode); err == nil {
			code, err = voicecode.MintBound(k, iss.Serial, iss.IssuedAt, iss.Sequence, n)
		}
	}
	if err != nil {
		return Issued{}, err
	}
	// Sign with the key the issuance recorded, so that a retry returns the
	// identical grant even after a rotation (Ed25519 is deterministic).
	kid := iss.SigningKeyID
	sk, ok := s.Keyring.GrantKey(kid)
	if !ok {
		// That key was retired since: re-sign the same claims with the
		// current key, still verifiable through the published key set.
		kid, sk = s.Keyring.GrantSigner()
		s.log().Warn("grant re-signed under a newer key", "issuance", iss.ID, "stored_kid", iss.SigningKeyID, "kid", kid)
	}
	g, err := grant.Sign(sk, kid, grant.NewClaims(iss.Serial, iss.ID, iss.Sequence, iss.IssuedAt, iss.ExpiresAt))
	if err != nil {
		return Issued{}, err
	}
	return Issued{Issuance: iss, VoiceCode: code, Phonetic: voicecode.Phonetic(code), Grant: g}, nil
}
