package server

import (
	"context"
	"crypto/subtle"
	"fmt"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/clip"
)

// VerifyLimits bound how often anyone may guess at a device's owner: the
// owner checks (a claimed contact) and the entries of a code sent to the
// registered e-mail address count together as guesses, and a miss is a
// guess that did not match. Sending codes is limited too, so that nobody
// can mail-bomb an owner through the hotline.
type VerifyLimits struct {
	// DeviceMisses is how many misses on one device within MissWindow
	// stop every further guess on it (owner checks and code entries are
	// refused unjudged, so the refusal tells nothing).
	DeviceMisses int
	// AgentMisses is how many misses by one staff member within
	// AgentMissWindow stop their further guesses on any device.
	AgentMisses int
	// SupervisorAfter is how many misses on a device since its last
	// issuance (within MissWindow) make its next issuance a supervisor's.
	SupervisorAfter int
	// CodeEntries is how many wrong entries one code survives.
	CodeEntries int
	// CodeTTL is how long a sent code may be entered; CodeValidity how
	// long a verified one may be spent on an issuance.
	CodeTTL, CodeValidity time.Duration
	// SendsPerDevice codes per device and SendsPerAgent codes per staff
	// member may be sent per SendWindow.
	SendsPerDevice, SendsPerAgent int
}

// The windows of the verification limits: a device's misses count for a
// day (its owner calls back tomorrow), a staff member's for an hour.
const (
	MissWindow      = 24 * time.Hour
	AgentMissWindow = time.Hour
	SendWindow      = time.Hour
)

// DefaultVerifyLimits stop a search within a handful of tries. A genuine
// caller misspells their contact once or twice; five misses on one device
// in a day is somebody guessing, and the third already means a supervisor
// should look before a code is issued. Ten misses an hour by one agent
// across devices is an agent guessing. A code of six digits survives three
// wrong entries (one in 333,333 chance of a lucky guess), lives fifteen
// minutes after it was sent and fifteen after it matched. Three codes per
// device an hour covers a lost mail and a retry; twenty per agent an hour
// is far above a support call's pace.
var DefaultVerifyLimits = VerifyLimits{
	DeviceMisses: 5, AgentMisses: 10, SupervisorAfter: 3, CodeEntries: 3,
	CodeTTL: 15 * time.Minute, CodeValidity: 15 * time.Minute,
	SendsPerDevice: 3, SendsPerAgent: 20,
}

// WithDefaults returns l with its zero (or negative) fields taken from
// DefaultVerifyLimits.
func (l VerifyLimits) WithDefaults() VerifyLimits {
	d := DefaultVerifyLimits
	for _, p := range []struct {
		v *int
		d int
	}{{&l.DeviceMisses, d.DeviceMisses}, {&l.AgentMisses, d.AgentMisses},
		{&l.SupervisorAfter, d.SupervisorAfter}, {&l.CodeEntries, d.CodeEntries},
		{&l.SendsPerDevice, d.SendsPerDevice}, {&l.SendsPerAgent, d.SendsPerAgent}} {
		if *p.v <= 0 {
			*p.v = p.d
		}
	}
	if l.CodeTTL <= 0 {
		l.CodeTTL = d.CodeTTL
	}
	if l.CodeValidity <= 0 {
		l.CodeValidity = d.CodeValidity
	}
	return l
}

// Misses are the owner-guess misses the store counted for a request,
// under the device's and the actor's locks.
type Misses struct {
	// Device counts misses on the device within MissWindow, Agent the
	// actor's misses within AgentMissWindow.
	Device, Agent int
}

// throttled is the refusal of a guess over a miss limit, nil under them.
// It is decided before the guess is judged, so it answers the same
// whether the guess was right or wrong.
func (l VerifyLimits) throttled(m Misses, what string) *Error {
	switch {
	case m.Device >= l.DeviceMisses:
		return &Error{Code: ELimit, Reason: ReasonGuessesPerDevice, Limit: "owner-guesses-per-device",
			Message: fmt.Sprintf("%s refused: this device had %d wrong owner checks or code entries in the last %s; "+
				"verify the caller another way (proof of purchase) and ask a supervisor to issue", what, m.Device, MissWindow)}
	case m.Agent >= l.AgentMisses:
		return &Error{Code: ELimit, Reason: ReasonGuessesPerAgent, Limit: "owner-guesses-per-agent",
			Message: fmt.Sprintf("%s refused: you had %d wrong owner checks or code entries in the last %s; "+
				"ask a supervisor", what, m.Agent, AgentMissWindow)}
	}
	return nil
}

// OwnerCheckFacts is what the store read for an owner check under the
// device's and the actor's locks.
type OwnerCheckFacts struct {
	// Registered is the device's registered owner contact; never shown.
	Registered string
	// Misses are the device's and the actor's recent misses.
	Misses Misses
}

// JudgeOwnerCheck decides an owner check of claimed: refused unjudged
// over a miss limit (OwnerVerdict.Refusal), else JudgeOwner.
func JudgeOwnerCheck(l VerifyLimits, f OwnerCheckFacts, claimed string) OwnerVerdict {
	if e := l.WithDefaults().throttled(f.Misses, "owner check"); e != nil {
		return OwnerVerdict{Refusal: e, Detail: fmt.Sprintf("throttled misses=%d/%d", f.Misses.Device, f.Misses.Agent)}
	}
	return JudgeOwner(f.Registered, claimed)
}

// OwnerCode is a one-time code sent to a device's registered e-mail
// address, as stored: never the code, which is re-derived from ID, Serial
// and KeyGeneration by Keyring.OwnerCode.
type OwnerCode struct {
	// ID is random (a UUID); the code is a MAC over it.
	ID string
	// Serial is the device; Actor the staff member who asked for it.
	Serial, Actor string
	// KeyGeneration is the master-key generation the code key comes from.
	KeyGeneration int
	// CreatedAt and ExpiresAt bound when it may be entered.
	CreatedAt, ExpiresAt time.Time
	// WrongEntries counts the entries that did not match.
	WrongEntries int
}

// OwnerCodeSendFacts is what the store read for a request to send a code,
// under the device's and the actor's locks.
type OwnerCodeSendFacts struct {
	Actor  Actor
	Serial string
	// Now is the database clock.
	Now time.Time
	// Registered is false when no device has the serial.
	Registered bool
	// Hold is the device's hold, nil when none.
	Hold *Hold
	// Contact is the registered owner contact.
	Contact string
	// DeviceSends and AgentSends count the codes sent within SendWindow.
	DeviceSends, AgentSends int
	// Misses are the recent misses.
	Misses Misses
}

// OwnerCodeSendDecision is what DecideOwnerCodeSend chose for the store to
// write: the event in every case, else (no Refusal) the code and its mail.
type OwnerCodeSendDecision struct {
	Event   AuditEvent
	Refusal *Error
	Code    OwnerCode
	Mail    OutboxMessage
}

// OwnerCodeSent is the answer to a request to send a code: what the agent
// may see, never the code or the full address.
type OwnerCodeSent struct {
	// CodeID identifies the code (for the audit log).
	CodeID string
	// ExpiresAt is when the code stops being accepted.
	ExpiresAt time.Time
	// To is the registered address, masked.
	To string
	// Mail is the message's delivery state.
	Mail MailStatus
}

// DecideOwnerCodeSend is the policy for sending a code: the device must be
// registered, not on hold, have an e-mail address registered, be under
// the miss limits (a device being guessed at gets no more codes either)
// and under the send limits; gen is the master-key generation to derive
// the code key from.
func DecideOwnerCodeSend(l VerifyLimits, f OwnerCodeSendFacts, gen int) OwnerCodeSendDecision {
	l = l.WithDefaults()
	a := f.Actor
	ev := AuditEvent{Actor: a.Subject, Role: a.Role, ClientAddr: a.ClientAddr, Action: ActionOwnerCodeSend,
		Outcome: OutcomeRefused, Serial: f.Serial}
	refuse := func(e *Error, detail string) OwnerCodeSendDecision {
		ev.Detail = detail
		return OwnerCodeSendDecision{Event: ev, Refusal: e}
	}
	switch {
	case !f.Registered:
		return refuse(&Error{Code: ENotFound, Reason: ReasonDeviceNotFound, Field: "serial",
			Message: "no device is registered under " + clip.Clip(f.Serial, 80)}, "not_found")
	case f.Hold != nil:
		return refuse(onHold(f.Hold), "on_hold")
	case !isEmail(f.Contact):
		return refuse(&Error{Code: EPrecondition, Reason: ReasonNoEmailRegistered,
			Message: "the device has no registered e-mail address: verify the caller another way"}, "no_email_registered")
	}
	if e := l.throttled(f.Misses, "sending a code"); e != nil {
		return refuse(e, fmt.Sprintf("throttled misses=%d/%d", f.Misses.Device, f.Misses.Agent))
	}
	switch {
	case f.DeviceSends >= l.SendsPerDevice:
		return refuse(&Error{Code: ELimit, Reason: ReasonSendsPerDevice, Limit: "codes-per-device",
			Message: fmt.Sprintf("%d codes were sent to this owner in the last %s: ask the caller to look for them (and in the spam folder)", f.DeviceSends, SendWindow)},
			fmt.Sprintf("limit=codes-per-device count=%d/%d", f.DeviceSends, l.SendsPerDevice))
	case f.AgentSends >= l.SendsPerAgent:
		return refuse(&Error{Code: ELimit, Reason: ReasonSendsPerAgent, Limit: "codes-per-agent",
			Message: fmt.Sprintf("you sent %d codes in the last %s: ask a supervisor", f.AgentSends, SendWindow)},
			fmt.Sprintf("limit=codes-per-agent count=%d/%d", f.AgentSends, l.SendsPerAgent))
	}
	c := OwnerCode{ID: NewUUID(), Serial: f.Serial, Actor: a.Subject, KeyGeneration: gen,
		CreatedAt: f.Now, ExpiresAt: f.Now.Add(l.CodeTTL)}
	m := OutboxMessage{ID: NewUUID(), Kind: MailOwnerCode, Serial: f.Serial, Recipient: NormaliseContact(f.Contact),
		OwnerCodeID: c.ID, Language: "en", Actor: a.Subject}
	ev.Outcome, ev.Detail = OutcomeSuccess, "code="+c.ID+" mail="+m.ID
	return OwnerCodeSendDecision{Event: ev, Code: c, Mail: m}
}

// isEmail reports whether a registered contact is an e-mail address.
func isEmail(c string) bool { return strings.Contains(c, "@") }

// OwnerCodeCheckFacts is what the store read for an entered code under
// the device's and the actor's locks.
type OwnerCodeCheckFacts struct {
	Actor  Actor
	Serial string
	Now    time.Time
	// Registered is false when no device has the serial.
	Registered bool
	// Code is the actor's newest code for the device that is neither
	// verified nor expired, nil when there is none.
	Code *OwnerCode
	// Misses are the recent misses.
	Misses Misses
}

// OwnerCodeVerdict is the judgement of an entered code for the store to
// write: the event, and whether the code matched (verified) or missed (a
// wrong entry), or a refusal that judged nothing.
type OwnerCodeVerdict struct {
	Event   AuditEvent
	Refusal *Error
	// Match marks the code verified; otherwise, without Refusal, the
	// entry is a miss counted on the code.
	Match bool
}

// JudgeOwnerCode decides an entered code: refused unjudged over a miss
// limit or without a live code, else compared in constant time with the
// code derive re-derives for Code.
func JudgeOwnerCode(l VerifyLimits, f OwnerCodeCheckFacts, entered string, derive func(OwnerCode) (string, error)) (OwnerCodeVerdict, error) {
	l = l.WithDefaults()
	a := f.Actor
	ev := AuditEvent{Actor: a.Subject, Role: a.Role, ClientAddr: a.ClientAddr, Action: ActionOwnerCodeCheck,
		Outcome: OutcomeRefused, Serial: f.Serial}
	refuse := func(e *Error, detail string) (OwnerCodeVerdict, error) {
		ev.Detail = detail
		return OwnerCodeVerdict{Event: ev, Refusal: e}, nil
	}
	if !f.Registered {
		return refuse(&Error{Code: ENotFound, Reason: ReasonDeviceNotFound, Field: "serial",
			Message: "no device is registered under " + clip.Clip(f.Serial, 80)}, "not_found")
	}
	if e := l.throttled(f.Misses, "code entry"); e != nil {
		return refuse(e, fmt.Sprintf("throttled misses=%d/%d", f.Misses.Device, f.Misses.Agent))
	}
	if f.Code == nil {
		return refuse(&Error{Code: EPrecondition, Reason: ReasonNoOwnerCode,
			Message: "no code you sent to this device's owner is waiting (none sent, expired, or already verified): send a new one"}, "no_code")
	}
	if f.Code.WrongEntries >= l.CodeEntries {
		return refuse(&Error{Code: EPrecondition, Reason: ReasonNoOwnerCode,
			Message: fmt.Sprintf("this code had %d wrong entries and is spent: send a new one", f.Code.WrongEntries)}, "code_spent code="+f.Code.ID)
	}
	want, err := derive(*f.Code)
	if err != nil {
		return OwnerCodeVerdict{}, err
	}
	got := normaliseDigits(entered)
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
		ev.Outcome, ev.Detail = OutcomeSuccess, "code="+f.Code.ID
		return OwnerCodeVerdict{Event: ev, Match: true}, nil
	}
	ev.Detail = fmt.Sprintf("code_mismatch code=%s entries=%d/%d", f.Code.ID, f.Code.WrongEntries+1, l.CodeEntries)
	left := l.CodeEntries - f.Code.WrongEntries - 1
	return OwnerCodeVerdict{Event: ev, Refusal: &Error{Code: EPrecondition, Reason: ReasonOwnerCodeMismatch,
		Message: fmt.Sprintf("the code does not match; %d entries left for this code", left)}}, nil
}

// normaliseDigits keeps the digits of an entered code (spaces and hyphens
// as read out are ignored).
func normaliseDigits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if '0' <= r && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// OwnerCodeDigits is the length of an owner code.
const OwnerCodeDigits = 6

// SendOwnerCode sends a one-time code to the device's registered e-mail
// address (roles agent, supervisor), through the outbox: the code is
// never shown to the agent, only the masked address and the delivery
// state.
func (s *Service) SendOwnerCode(ctx context.Context, a Actor, query string) (OwnerCodeSent, error) {
	ev := AuditEvent{Action: ActionOwnerCodeSend, Serial: bestSerial(query)}
	if err := s.allow(ctx, a, ev); err != nil {
		return OwnerCodeSent{}, err
	}
	sn, err := s.resolve(ctx, a, "serial", query)
	if err != nil {
		return OwnerCodeSent{}, s.refuseInvalid(ctx, a, ev, err)
	}
	gen := s.Keyring.CurrentGeneration()
	var to string
	c, m, err := s.Store.SendOwnerCode(ctx, a, sn, func(f OwnerCodeSendFacts) OwnerCodeSendDecision {
		to = MaskContact(f.Contact)
		return DecideOwnerCodeSend(s.Verify, f, gen)
	})
	if err != nil {
		return OwnerCodeSent{}, err
	}
	s.Outbox.Kick()
	return OwnerCodeSent{CodeID: c.ID, ExpiresAt: c.ExpiresAt, To: to, Mail: m}, nil
}

// VerifyOwnerCode checks the code the caller read back (roles agent,
// supervisor). A match lets the same agent issue one temporary password
// for the device with VerifyOwnerEmailCode within VerifyLimits.CodeValidity.
func (s *Service) VerifyOwnerCode(ctx context.Context, a Actor, query, entered string) error {
	ev := AuditEvent{Action: ActionOwnerCodeCheck, Serial: bestSerial(query)}
	if err := s.allow(ctx, a, ev); err != nil {
		return err
	}
	if d := normaliseDigits(entered); len(d) != OwnerCodeDigits || strings.ContainsFunc(entered, func(r rune) bool {
		return !('0' <= r && r <= '9') && r != ' ' && r != '-'
	}) {
		return s.refuse(ctx, a, ev, Invalid("code", "code: expected the %d digits the caller reads from the e-mail", OwnerCodeDigits))
	}
	sn, err := s.resolve(ctx, a, "serial", query)
	if err != nil {
		return s.refuseInvalid(ctx, a, ev, err)
	}
	return s.Store.CheckOwnerCode(ctx, a, sn, func(f OwnerCodeCheckFacts) (OwnerCodeVerdict, error) {
		return JudgeOwnerCode(s.Verify, f, entered, func(c OwnerCode) (string, error) {
			return s.Keyring.OwnerCode(c.KeyGeneration, c.ID, c.Serial)
		})
	})
}
