package server

import (
	"context"
	"strconv"
)

// decideOwnerRoute adds the e-mail route's rules to DecideIssue's
// decision d for the facts f: a device with OwnerMisses at or over
// SupervisorAfter is issued by a supervisor only; the owner-email-code
// method needs the actor's verified, unspent code, which the issuance
// then spends; an e-mail delivery needs a registered address and queues
// the message. Refusals and replays pass through unchanged.
func decideOwnerRoute(l VerifyLimits, f IssueFacts, d IssueDecision) IssueDecision {
	if d.Refusal != nil || d.Replay {
		return d
	}
	l = l.WithDefaults()
	req := f.Request
	refuse := func(e *Error, detail string) IssueDecision {
		ev := d.Event
		ev.Outcome, ev.IssuanceID, ev.Detail = OutcomeRefused, "", detail
		return IssueDecision{Event: ev, Refusal: e}
	}
	if f.OwnerMisses >= l.SupervisorAfter {
		if f.Actor.Role != RoleSupervisor {
			return refuse(&Error{Code: EPermission, Reason: ReasonSupervisorRequired,
				Message: strconv.Itoa(f.OwnerMisses) + " wrong owner checks or code entries were made on this device since its last code: only a supervisor may issue its next one"},
				"supervisor_required misses="+strconv.Itoa(f.OwnerMisses))
		}
		d.Event.Detail = joinDetail(d.Event.Detail, "owner_misses="+strconv.Itoa(f.OwnerMisses))
	}
	if req.Method == VerifyOwnerEmailCode {
		if f.OwnerCodeID == "" || f.Now.Sub(f.OwnerCodeVerifiedAt) > l.CodeValidity {
			return refuse(&Error{Code: EPrecondition, Reason: ReasonOwnerCodeNotVerified, Field: "verification_method",
				Message: "no code you sent to this owner was verified in the last " + l.CodeValidity.String() + " (or it was spent on an issuance): send one and enter what the caller reads back"},
				"owner_code=none")
		}
		d.SpendOwnerCode = f.OwnerCodeID
		d.Event.Detail = joinDetail(d.Event.Detail, "owner_code="+f.OwnerCodeID)
	}
	if req.Delivery.Emails() {
		if !isEmail(f.OwnerContact) {
			return refuse(&Error{Code: EPrecondition, Reason: ReasonNoEmailRegistered, Field: "delivery",
				Message: "the device has no registered e-mail address: deliver the code by voice"}, "no_email_registered")
		}
		d.Mail = &OutboxMessage{ID: NewUUID(), Kind: MailIssuance, Serial: req.Serial, Recipient: NormaliseContact(f.OwnerContact),
			IssuanceID: d.Issuance.ID, VoiceShown: req.Delivery == DeliveryVoiceAndEmail, Language: "en", Actor: f.Actor.Subject}
		d.Event.Detail = joinDetail(d.Event.Detail, "mail="+d.Mail.ID)
	}
	return d
}

// checkDelivery validates a requested delivery, normalising the wire's
// explicit voice to the default.
func checkDelivery(d *Delivery) *Error {
	switch *d {
	case DeliveryVoice, DeliveryEmail, DeliveryVoiceAndEmail:
	case deliveryVoiceExplicit:
		*d = DeliveryVoice
	default:
		return Invalid("delivery", "delivery: expected VOICE, EMAIL or VOICE_AND_EMAIL")
	}
	return nil
}

// withMail completes an issuance's answer with its e-mail delivery: the
// stored delivery, never the request's, decides whether the code is shown
// (a retry asking for voice does not reveal a code that was mailed only).
func (s *Service) withMail(ctx context.Context, out Issued) (Issued, error) {
	m, ok, err := s.Store.IssuanceMail(ctx, out.ID)
	if err != nil {
		return Issued{}, err
	}
	if !ok {
		return out, nil
	}
	out.Mail = &m
	if !m.VoiceShown {
		out.VoiceCode, out.Phonetic, out.Grant = "", "", ""
	}
	s.Outbox.Kick()
	return out, nil
}

// MailStatuses lists a device's outbox messages, newest first, with their
// delivery states (roles agent, supervisor).
func (s *Service) MailStatuses(ctx context.Context, a Actor, query string, limit int) ([]MailStatus, error) {
	ev := AuditEvent{Action: ActionMailStatus, Serial: bestSerial(query)}
	if err := s.allow(ctx, a, ev); err != nil {
		return nil, err
	}
	size, e := pageSizeOf(limit, 20, 200)
	if e != nil {
		return nil, s.refuse(ctx, a, ev, e)
	}
	sn, err := s.resolve(ctx, a, "serial", query)
	if err != nil {
		return nil, s.refuseInvalid(ctx, a, ev, err)
	}
	return s.Store.MailStatuses(ctx, a, sn, size)
}
